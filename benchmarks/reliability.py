"""Run the fault suite (tests/faults, docs/reliability.md) and write what it tried and survived to
reports/reliability.json; docs/reliability.md lists each fault and what the pipeline does.

    python benchmarks/reliability.py          # about 12 minutes on 2 CPU cores

All of the fault suite runs here, including the whole-pipeline runs marked ``slow`` that the
default ``pytest -q`` leaves out to stay under 10 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "reliability.json"


def main() -> int:
    env = {**os.environ, "SEMIPKD_RELIABILITY_JSON": str(OUT)}
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "slow or not slow", "tests/faults"], cwd=REPO, env=env)
    if OUT.is_file():
        rep = json.loads(OUT.read_text())
        print(f"\nfaults tried {rep['faults_tried']}, survived {rep['faults_survived']}, skipped {rep['faults_skipped']}")
        for f in rep["faults"]:
            print(f"  {f['status']:9s} {f['fault']}")
        print(f"-> {OUT.relative_to(REPO)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
