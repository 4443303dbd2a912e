"""DVC stage `check_params`: the whole params.yaml checked before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a mistake that a stage
finds only once it runs (an unknown or misspelled key, a wrong type, ``data.source: real``
without the datasets, ImageNet weights that are not on this machine) would cost the outputs of
every stage it reruns. Every other stage depends on this stage's output, so DVC runs this one
first and stops at its one-line error with every other output untouched.

It reads all of params.yaml (dvc.yaml tracks the whole file for it), so it reruns whenever any
param changes; what it writes never changes, so its rerun makes no other stage rerun. Its output
is ``persist: true``: a failed check leaves it in place rather than deleted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import _checkout  # noqa: F401,I001  (this checkout's semipkd, also in a queued experiment's copy)
from semipkd.config import Params
from semipkd.io import atomic_write_text
from semipkd.stage import CHECK_STAGE, stage_main

log = logging.getLogger(CHECK_STAGE)

#: The stage's output. Its text is fixed, so that a rerun leaves every dependent stage unchanged.
OUT = Path("reports/check_params/passed.txt")
TEXT = (
    "params.yaml passed semipkd's checks: known keys and types (semipkd.config), registered\n"
    "backbones and findable ImageNet weights, and the dataset folders of data.source: real.\n"
)


def run(params: Params, item: str | None) -> None:
    """Everything is checked by ``stage_main`` (load_params, then preflight for this stage)."""
    del params, item
    atomic_write_text(OUT, TEXT)
    log.info("params.yaml is valid; wrote %s", OUT)


if __name__ == "__main__":
    stage_main(CHECK_STAGE, run)
