"""An experiment and the way back, as the README's "Comparing experiments" section says
(docs/reliability.md): on a copy of the tiny pipeline with its results committed, run
`dvc exp run -S student.width=0.5`, show it with the README's `dvc exp show` command, return to the
baseline with `git checkout -- . && dvc checkout`, and bring the experiment back with
`dvc exp apply`. Resume state (models/ckpt) is not a DVC output, so neither way retrains anything.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline_copy import REPO, dvc, ran_stages

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

GIT = ["git", "-c", "user.name=semipkd-test", "-c", "user.email=test@semipkd.invalid"]
UP_TO_DATE = "Data and pipelines are up to date."


def _models(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "models").rglob("*.pt")) if "ckpt" not in p.parts}


def _readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix`` (its comment dropped)."""
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith(prefix):
            return shlex.split(line, comments=True)
    raise AssertionError(f"README.md has no line starting with {prefix!r}")


@pytest.mark.fault("back to the baseline after dvc exp run -S student.width=0.5 (git checkout -- . && dvc checkout), "
                   "then dvc exp apply: dvc status up to date, no retraining")
def test_an_experiment_then_back_to_the_baseline_and_forth_without_retraining(tiny_pipeline, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(tiny_pipeline.root, root, symlinks=True)
    env = {**tiny_pipeline.env, "PYTHONPATH": str(root)}
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "baseline results"], cwd=root, check=True)
    baseline = _models(root)
    assert dvc(root, "status", env=env).stdout.strip() == UP_TO_DATE

    proc = dvc(root, "exp", "run", "-n", "narrow", "-S", "student.width=0.5", env=env)
    ran = ran_stages(proc.stdout)
    assert "distill" in ran and "distill_no_pseudo" in ran and "report" in ran, ran
    assert not {"prepare", "train_teacher", "pseudolabel"} & set(ran), ran
    narrow = _models(root)
    assert narrow["models/student.pt"] != baseline["models/student.pt"]

    # The README's command shows the changed param beside the students' metrics.
    cmd = _readme_command("dvc exp show --only-changed")
    rows = list(csv.DictReader(io.StringIO(dvc(root, *cmd[1:], "--csv", env=env).stdout)))
    assert "student.width" in rows[0], list(rows[0])
    assert any(re.search(r"labelled/salicon\.json:student\.benchmark\.cc$", h) for h in rows[0]), list(rows[0])
    assert {r["Experiment"]: r["student.width"] for r in rows if r["Experiment"]} == {"narrow": "0.5"}, rows

    # Back to the baseline: nothing to rerun, every model as it was.
    subprocess.run(["git", "checkout", "--", "."], cwd=root, check=True)
    dvc(root, "checkout", env=env)
    assert dvc(root, "status", env=env).stdout.strip() == UP_TO_DATE
    assert _models(root) == baseline
    assert "Running stage" not in dvc(root, "repro", env=env).stdout

    # And forth: the experiment's results come back as they were.
    dvc(root, "exp", "apply", "narrow", env=env)
    assert "width: 0.5" in (root / "params.yaml").read_text()
    assert dvc(root, "status", env=env).stdout.strip() == UP_TO_DATE
    assert _models(root) == narrow
