"""Put the checkout this stage script belongs to first on ``sys.path``.

Every stage imports it before ``semipkd``. Without it, ``semipkd`` comes from wherever it was
installed: with the editable install of ``setup.sh`` that is the *workspace*, so an experiment
that DVC runs in a copy of the repository (``dvc exp run --queue``/``--temp``, under
``.dvc/tmp/exps/``) would run the workspace's package code, not the code it was queued with and
whose hashes its ``dvc.lock`` records (a change made in the workspace while the queue runs would
leak into it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
