"""Training orchestration shared by the teacher, the distilled students and the fine-tuned
students: the labelled set with its holdout, and the call into :func:`semipkd.engine.fit`.

This is the one place those models are trained from, so they differ only in their data and config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import NoPseudoConfig, TrainConfig
from .data import PREPARED, PreparedDataset, read_meta
from .engine import StepBudget, fit, pool_images
from .io import sha256_file
from .pseudolabel import PseudoDataset, PseudoLabelCache
from .stage import StageError, require_file

__all__ = ["EpochSubset", "holdout_split", "labelled_target_mean", "no_pseudo_budget", "pseudo_pool", "train_labelled"]

log = logging.getLogger(__name__)


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


def labelled_target_mean(split: Path, indices: np.ndarray | None = None, chunk: int = 256) -> float:
    """Mean value of the training targets of a prepared labelled split, as the loop sees them.

    The targets are the max-normalised densities at the output size, ``density.npy / 255``
    (flips do not change a mean); ``indices`` picks the training rows (None: all). One pass over
    the memory-mapped array in chunks of ``chunk`` rows, summed in float64. Returns a float in
    [0, 1].
    """
    density = np.load(Path(split) / "density.npy", mmap_mode="r")
    rows = np.arange(len(density)) if indices is None else np.sort(np.asarray(indices, dtype=np.int64))
    if len(rows) == 0:
        raise StageError(f"{split}: no training targets to take a mean of")
    total = 0.0
    for start in range(0, len(rows), chunk):
        total += float(density[rows[start : start + chunk]].sum(dtype=np.float64))
    return total / (len(rows) * int(np.prod(density.shape[1:])) * 255.0)


def no_pseudo_budget(steps: NoPseudoConfig, distill: TrainConfig,
                     pool: Path = PREPARED / "unlabeled" / "all") -> StepBudget | None:
    """The labelled-only student's step budget (``distill_no_pseudo.steps``); None: epoch-matched.

    ``match_semi_pkd`` takes the Semi-PKD arm's steps from the same config: its epochs hold a
    pseudo pass over the prepared pool at ``pool`` (its image count from the prepared meta, the
    count the pseudo-label cache must match) or over ``distill.pool_draw`` of its images, the
    labelled set and batch being the same; the Semi-PKD stage's outputs are never read.
    """
    if not steps.budget:
        return None
    if steps.steps == "match_semi_pkd":
        count = int(read_meta(require_file(pool, "run the prepare stage first"))["count"])
        return StepBudget(pseudo_images=pool_images(distill.pool_draw, count), name="match_semi_pkd")
    return StepBudget(steps=int(steps.steps), name=f"steps {steps.steps}")


def pseudo_pool(output_size, augment, *, seed: int, bound_size=None, teacher: Path = Path("models/teacher.pt"),
                cache: Path = Path("data/pseudo"), images: Path = PREPARED / "unlabeled" / "all") -> PseudoDataset:
    """The unlabeled pool with the trained teacher's cached maps, for a pseudo-label pass.

    The cache is checked against ``teacher`` (its sha256): maps of another teacher are refused;
    with ``bound_size`` (the distilled student's output size) a cache made for another student
    size is refused too. Targets are resized to ``output_size`` (the labelled set's when
    distilling, the benchmark's when fine-tuning); images are augmented as ``augment`` says.
    """
    teacher = require_file(teacher, "run the train_teacher stage first")
    labels = PseudoLabelCache(require_file(cache, "run the pseudolabel stage first"), teacher_sha256=sha256_file(teacher),
                              target_size=bound_size)
    return PseudoDataset(
        require_file(images, "run the prepare stage first"),
        labels,
        output_size,
        hflip="hflip" in augment,
        photometric=augment,
        seed=seed,
    )


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
    pseudo: Dataset | None = None,
    head_prior: bool = False,
    budget: StepBudget | None = None,
) -> dict:
    """Train ``model`` on the prepared labelled set at ``prepared`` (``train``/``val`` folders).

    The best epoch is selected on a seeded holdout part of ``train`` (``cfg.holdout``) unless
    ``cfg.select_on`` is ``val`` (the paper's way: selection on the split that is reported).
    The training images are augmented as ``cfg.augment`` says (flip with their maps, colour).
    This is the one place the teacher, the distilled students and the fine-tuned students are
    trained from, so they differ only in their data and config.

    With ``head_prior`` (``teacher/student.head_bias``) the model's head bias is first set to
    logit(mean of the training targets), the rows it trains on (the holdout excluded), and that
    mean and bias are logged and written into the model file as ``head_prior``. Fine-tuning does
    not ask for it: a student with a head bias keeps its trained one.

    ``budget`` (:func:`no_pseudo_budget`) gives the run a number of optimizer steps instead of
    ``cfg.epochs`` epochs (:class:`semipkd.engine.StepBudget`).
    """
    train_dir = require_file(prepared / "train", "run the prepare stage first (dvc repro prepare)")
    train_aug = PreparedDataset(train_dir, hflip="hflip" in cfg.augment, photometric=cfg.augment, seed=seed)
    # The size it learns at goes into the model file, so predict and export feed that size.
    model.input_size = tuple(train_aug.meta["input_size"])
    if cfg.select_on == "val":
        train_set = train_aug
        val_set = PreparedDataset(require_file(prepared / "val", "run prepare"), seed=seed)
        log.info("selecting the best epoch on %s/val (select_on: val, the paper's protocol)", prepared)
    else:
        train_idx, hold_idx = holdout_split(len(train_aug), cfg.holdout, seed)
        train_set = EpochSubset(train_aug, train_idx)
        val_set = EpochSubset(PreparedDataset(train_dir, seed=seed), hold_idx)
        log.info("selecting the best epoch on a holdout of %d of %d training images", len(hold_idx), len(train_aug))
    record = None
    if head_prior:
        mean = labelled_target_mean(train_dir, None if cfg.select_on == "val" else train_idx)
        bias = model.decoder.set_head_prior(mean)
        record = {"head_prior": {"target_mean": mean, "bias": bias}}
        log.info("head prior: mean training target %.6f -> head bias logit %.6f", mean, bias)
    summary = fit(
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
        record=record,
        budget=budget,
    )
    if record is not None:
        summary.update(record)
    if cfg.epochs == 0:
        # fit scored the given weights and wrote them as the result (e.g. fine-tuning switched
        # off); the stage's other declared outputs must exist too, or DVC fails the stage.
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
        (Path(live_dir) / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
    return summary
