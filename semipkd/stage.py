"""What every DVC stage entry point shares: argument parsing, logging, params, preflight, errors.

A stage script is ``def run(params, item): ...`` plus ``stage_main("name", run)``. The one
argument parser lives here, so no stage carries its own argparse block. Any
:class:`semipkd.errors.SemipkdError` (a bad file, a missing input, a setting) ends the stage with
a one-line message and exit status 2, before heavy work where the check can be made early.
Training orchestration is in :mod:`semipkd.training`, not here.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from .config import ConfigError, Params, load_params
from .errors import SemipkdError
from .names import STUDENT, TEACHER
from .runtime import seed_everything, setup_logging

__all__ = ["CHECK_STAGE", "StageError", "stage_main", "preflight", "require_file"]

log = logging.getLogger(__name__)


class StageError(SemipkdError, RuntimeError):
    """A stage cannot run: a missing input, a stale cache. The message says what to fix."""


def require_file(path: str | Path, hint: str) -> Path:
    """Return ``path`` if it exists, else raise :class:`StageError` naming it and ``hint``."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path} does not exist; {hint}")
    return path


def _check_models(params: Params) -> None:
    """Backbones exist; ImageNet weights that are asked for can be found."""
    # Function-level: prepare checks models too (a bad backbone stops it before data is
    # generated) but builds none; dvc.yaml leaves the model code out of prepare's deps.
    from .models import get_backbone, list_backbones
    from .models.weights import find_weight_file

    for role in (TEACHER, STUDENT):
        m = getattr(params, role)
        if m.backbone not in list_backbones():
            raise ConfigError(f"{role}.backbone: unknown backbone {m.backbone!r}; known: {', '.join(list_backbones())}")
        if m.pretrained:
            try:
                find_weight_file(m.backbone, get_backbone(m.backbone).weights, m.weights)
            except FileNotFoundError as exc:
                raise ConfigError(f"{role}: {exc}") from None
        elif m.weights is not None:
            raise ConfigError(f"{role}.weights is set but {role}.pretrained is false; set pretrained: true or weights: null")


#: The stage that checks the whole params.yaml before any other stage runs (dvc.yaml: every
#: stage depends on its output, so DVC runs it first and stops there, before it deletes any other
#: stage's outputs, when a param is wrong).
CHECK_STAGE = "check_params"


def _check_data_roots(params: Params) -> None:
    """With ``data.source: real``, every dataset folder the pipeline will read exists."""
    data = params.data
    if data.source != "real":
        return
    names = list(dict.fromkeys([data.labelled, *data.benchmarks, "unlabeled"]))
    missing = [f"{n} -> {data.folder(n)}" for n in names if not data.folder(n).is_dir()]
    if missing:
        raise ConfigError(
            "data.source is 'real' but these dataset folders do not exist: " + "; ".join(missing)
            + ". Put the datasets there (README: 'Real datasets') or set data.root / data.roots."
        )


def preflight(params: Params, stage: str) -> None:
    """Checks a stage makes before heavy work: backbones exist, ImageNet weights that are asked
    for can be found, and (for the stages that read them first) real dataset folders exist.
    Raises :class:`ConfigError` with a message that says what to fix."""
    _check_models(params)
    if stage in (CHECK_STAGE, "prepare"):
        _check_data_roots(params)


def stage_main(name: str, run: Callable[[Params, str | None], None]) -> None:
    """Parse ``[ITEM] [--params FILE]``, set up logging, load params, call ``run``."""
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=(run.__doc__ or "").strip())
    parser.add_argument("item", nargs="?", default=None, help="foreach item (a benchmark id), if the stage has one")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    setup_logging(name)
    start = time.perf_counter()
    # Faults a user can act on end in one line naming the file or setting to fix (exit 2);
    # anything else is a bug and keeps its traceback.
    try:
        params = load_params(args.params)
        preflight(params, name)
        # Seeded before anything random happens in the stage (a new decoder's initial weights
        # are drawn when the model is built, before training seeds its own streams): two runs
        # with the same params are bit-identical.
        seed_everything(params.seed)
        run(params, args.item)
    except SemipkdError as exc:
        log.error("%s: %s", name, exc)
        print(f"error: {name}: {exc}", file=sys.stderr)
        sys.exit(2)
    log.info("%s finished in %.1f s", name, time.perf_counter() - start)
