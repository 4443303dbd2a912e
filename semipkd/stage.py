"""What every DVC stage entry point shares: argument parsing, logging, params, errors.

A stage script is ``def run(params, item): ...`` plus ``stage_main("name", run)``. The one
argument parser lives here, so no stage carries its own argparse block. A :class:`ConfigError`
or any :class:`StageError` ends the stage with a one-line message and exit status 2, before
heavy work where the check can be made early.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import ConfigError, Params, load_params

__all__ = ["StageError", "stage_main", "EpochSubset", "holdout_split", "require_file"]

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage cannot run: a missing input, a stale cache. The message says what to fix."""


def require_file(path: str | Path, hint: str) -> Path:
    """Return ``path`` if it exists, else raise :class:`StageError` naming it and ``hint``."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path} does not exist; {hint}")
    return path


class EpochSubset(Dataset):
    """A subset of a dataset that forwards ``set_epoch`` (per-epoch augmentation seeds)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = self.dataset[int(self.indices[i])]
        return item

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (train, holdout) indices, seeded; holdout has >= 1 sample.

    The best epoch is selected on the holdout part, so the val split that the tables report
    is never selected on.
    """
    if n < 2:
        raise StageError(f"need at least 2 training samples to hold some out, got {n}")
    order = np.random.RandomState(seed).permutation(n)
    k = min(n - 1, max(1, int(round(n * fraction))))
    return np.sort(order[k:]), np.sort(order[:k])


def preflight(params: Params, stage: str) -> None:
    """Checks every stage makes before heavy work: backbones exist, ImageNet weights that are
    asked for can be found, real dataset folders exist. Raises :class:`ConfigError` with a
    message that says what to fix."""
    from .models import get_backbone, list_backbones
    from .models.weights import find_weight_file

    for role in ("teacher", "student"):
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
    data = params.data
    if data.source == "real" and stage == "prepare":
        names = list(dict.fromkeys([data.labelled, *data.benchmarks, "unlabeled"]))
        missing = [f"{n} -> {data.folder(n)}" for n in names if not data.folder(n).is_dir()]
        if missing:
            raise ConfigError(
                "data.source is 'real' but these dataset folders do not exist: " + "; ".join(missing)
                + ". Put the datasets there (README: 'Real datasets') or set data.root / data.roots."
            )


def stage_main(name: str, run: Callable[[Params, str | None], None]) -> None:
    """Parse ``[ITEM] [--params FILE]``, set up logging, load params, call ``run``."""
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=(run.__doc__ or "").strip())
    parser.add_argument("item", nargs="?", default=None, help="foreach item (a benchmark id), if the stage has one")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    from .runtime import setup_logging

    setup_logging(name)
    start = time.perf_counter()
    from .data import DataError
    from .engine import CheckpointError, NonFiniteLossError
    from .io import WriteError
    from .pseudolabel import PseudoLabelCacheError

    # Faults a user can act on end in one line naming the file or setting to fix (exit 2);
    # anything else is a bug and keeps its traceback.
    known = (ConfigError, StageError, DataError, CheckpointError, NonFiniteLossError, WriteError,
             PseudoLabelCacheError)
    try:
        params = load_params(args.params)
        preflight(params, name)
        # Seeded before anything random happens in the stage (a new decoder's initial weights
        # are drawn when the model is built, before training seeds its own streams): two runs
        # with the same params are bit-identical.
        from .runtime import seed_everything

        seed_everything(params.seed)
        run(params, args.item)
    except known as exc:
        log.error("%s: %s", name, exc)
        print(f"error: {name}: {exc}", file=sys.stderr)
        sys.exit(2)
    log.info("%s finished in %.1f s", name, time.perf_counter() - start)


def train_labelled(
    model: torch.nn.Module,
    prepared: Path,
    cfg,
    *,
    seed: int,
    device: torch.device,
    out_path: Path,
    ckpt_dir: Path,
    live_dir: Path,
    photometric: bool,
    pseudo: Dataset | None = None,
) -> dict:
    """Train ``model`` on the prepared labelled set at ``prepared`` (``train``/``val`` folders).

    The best epoch is selected on a seeded holdout part of ``train`` (``cfg.holdout``) unless
    ``cfg.select_on`` is ``val`` (the paper's way: selection on the split that is reported).
    Images are flipped with their maps; ``photometric`` adds colour augmentation on the input.
    This is the one place the teacher, the distilled students and the fine-tuned students are
    trained from, so they differ only in their data and config.
    """
    from .data import PreparedDataset
    from .engine import fit
    from .models import checkpoint_payload
    from .io import atomic_torch_save

    train_dir = require_file(prepared / "train", "run the prepare stage first (dvc repro prepare)")
    train_aug = PreparedDataset(train_dir, hflip=True, photometric=photometric, seed=seed)
    if cfg.select_on == "val":
        train_set = train_aug
        val_set = PreparedDataset(require_file(prepared / "val", "run prepare"), seed=seed)
        log.info("selecting the best epoch on %s/val (select_on: val, the paper's protocol)", prepared)
    else:
        train_idx, hold_idx = holdout_split(len(train_aug), cfg.holdout, seed)
        train_set = EpochSubset(train_aug, train_idx)
        val_set = EpochSubset(PreparedDataset(train_dir, seed=seed), hold_idx)
        log.info("selecting the best epoch on a holdout of %d of %d training images", len(hold_idx), len(train_aug))
    if cfg.epochs == 0:
        # Nothing to train: the model is used as it is (e.g. fine-tuning switched off).
        log.info("epochs: 0, writing the model unchanged to %s", out_path)
        # The stage's other declared outputs exist too (empty), or DVC fails the stage.
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
        (Path(live_dir) / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        atomic_torch_save(out_path, {**checkpoint_payload(model), "epoch": 0})
        from .io import atomic_write_json

        atomic_write_json(Path(live_dir) / "metrics.json", {"epochs": 0})
        return {"epochs_run": 0}
    return fit(
        model,
        labelled=train_set,
        val=val_set,
        pseudo=pseudo,
        cfg=cfg,
        out_path=Path(out_path),
        ckpt_dir=Path(ckpt_dir),
        live_dir=Path(live_dir),
        device=device,
        seed=seed,
    )
