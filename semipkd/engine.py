"""The one training loop: teacher, distilled student and fine-tuning differ only in their data.

:func:`fit` runs ``cfg.epochs`` epochs. Each epoch is one pass over the labelled set (labelled
loss: KLD + (1 - CC) + (1 - sigmoid(NSS))) and, when ``pseudo`` is given, one pass over the
pseudo-labelled pool (pseudo loss: KLD + (1 - CC) + (1 - SIM)), then a validation pass. The
pieces, and why each is as it is:

* **EMA self-distillation.** An exponential moving average of the weights
  (``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(cfg.ema_decay)``,
  buffers averaged too, so its BatchNorm statistics follow the model's) starts as a copy of the
  model at the end of epoch ``cfg.ema_start_epoch - 1`` and is updated after every optimizer
  step from epoch ``cfg.ema_start_epoch`` on (0-based; 1 = the paper's "from the second
  epoch"), as the paper's code does. Averaging from the first step instead keeps a 0.999 EMA
  near the untrained network for hundreds of steps, and its flat maps, mixed into the targets,
  teach the student a background floor (OSIE, 384x384: KLD 0.687 against 0.44; docs/real_osie.md).
  From epoch ``cfg.ema_start_epoch`` on every target map is mixed with the EMA's prediction,
  ``target = ema + ema_mix * (target - ema)`` (:func:`mix_with_ema`). The EMA runs in eval mode
  under ``no_grad``: it is a teacher, not a second student.
* **Optimiser.** AdamW; the learning rate follows a cosine from ``cfg.lr`` to 0 over the total
  number of optimizer steps of the run (labelled + pseudo passes of all epochs), stepped per
  step so the schedule does not depend on how the steps fall into epochs.
* **Step budget** (``budget``, the step-matched labelled-only control): the run takes a given
  number of optimizer steps instead of ``cfg.epochs`` epochs: ``ceil(budget / steps per epoch)``
  epochs, the last one cut at the budget. The ``cfg.epochs`` epochs then name the budget's
  *nominal* epochs of ``budget / cfg.epochs`` steps each: the cosine runs over the budget, the
  EMA horizon is ``ema_horizon_epochs`` nominal epochs, and the EMA starts at the first epoch
  that begins at or after step ``ema_start_epoch * budget / cfg.epochs``. Selection is still
  per (run) epoch.
* **Mixed precision.** ``cfg.amp`` on CUDA: bf16 autocast where the GPU has it, else fp16 with a
  ``GradScaler``. Losses and metrics are always computed in float32. Off on the CPU.
* **Resume.** Every epoch ends with an atomic ``ckpt_dir/last.pt``: model, EMA, optimizer,
  scheduler, scaler, the best weights so far, the per-epoch history, and the RNG states of
  every process. A run that finds it (with a matching config) continues from it and ends with
  the same weights as a run that was never interrupted (bitwise on the CPU).
* **Determinism.** The data order of epoch ``e`` is a permutation drawn from a generator seeded
  by ``(seed, e, pass)`` (:class:`GlobalBatchSampler`), the datasets' augmentation is seeded per
  epoch through ``set_epoch(e)``, and the loaders are rebuilt each epoch, so the order depends on
  neither the number of loader workers nor on how many epochs ran in this process.
* **DDP.** Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in
  ``DistributedDataParallel`` and each of the N processes takes a contiguous 1/N slice of every
  global batch (per-process batch = ``cfg.batch_size // N``), so the N slices of step ``s`` are
  exactly the batch a single process would see at step ``s`` and the averaged gradient is the
  same up to float rounding. On CUDA BatchNorm becomes ``SyncBatchNorm`` so its batch
  statistics, too, are those of the global batch. Only rank 0 logs, writes checkpoints, dvclive
  files and the model.
* **Non-finite losses.** ``cfg.nonfinite == "raise"`` stops with an error naming the epoch, pass
  and step (the model file is not written); ``"skip"`` skips that optimizer step (the learning
  rate schedule still advances) and counts it in the summary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import types
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from semipkd import losses as losses_mod
from semipkd import metrics as metrics_mod
from semipkd import names
from semipkd.checkpoint import CKPT_VERSION, CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from semipkd.config import ConfigError, TrainConfig, as_plain
from semipkd.distributed import Distributed, GlobalBatchSampler, ShardSampler, unwrap_ddp
from semipkd.errors import SemipkdError
from semipkd.io import atomic_torch_save
from semipkd.models import checkpoint_payload
from semipkd.names import ON_ERROR
from semipkd.runtime import amp_dtype, autocast, init_distributed, seed_everything

__all__ = [
    "fit",
    "StepBudget",
    "semi_pkd_steps",
    "pool_images",
    "TrainPass",
    "LabelledPass",
    "PseudoPass",
    "mix_with_ema",
    "ema_decay_for",
    "paper_sum",
    "GlobalBatchSampler",
    "ShardSampler",
    "CheckpointError",
    "NonFiniteLossError",
    "SELECT_METRICS",
    "CKPT_VERSION",
]

log = logging.getLogger(__name__)

#: Validation metrics an epoch can be selected on, and whether larger is better (semipkd.names).
SELECT_METRICS: Mapping[str, bool] = types.MappingProxyType(dict(names.SELECT_METRICS))
# Config fields that do not change the result: a resume with a different value is still exact.
_RESULT_NEUTRAL_FIELDS = ("num_workers",)
# Config fields added after model files existed, left out of the recorded train_config (and the
# resume fingerprint) at their default, so a default run writes the bytes it always wrote.
_OMITTED_AT_DEFAULT: Mapping[str, Any] = types.MappingProxyType({"pool_draw": None, "nss_aggregation": "per_image"})
# Streams of the per-epoch seeds, so the labelled and pseudo passes draw independent orders.
_STREAM_LABELLED, _STREAM_PSEUDO, _STREAM_LOADER = 1, 2, 3
_EPS = 1e-12


class NonFiniteLossError(SemipkdError, FloatingPointError):
    """A training loss was NaN or infinite (``nonfinite: raise``); names epoch, pass and step."""


# --------------------------------------------------------------------------------------------
# Pieces that are tested on their own


def mix_with_ema(target: torch.Tensor, ema_pred: torch.Tensor, mix: float, mode: str = "raw") -> torch.Tensor:
    """The EMA self-distillation target, ``ema + mix * (target - ema)``.

    ``target``, ``ema_pred``: (B, H, W) non-negative maps (a max-normalised density or cached
    pseudo-label, and the EMA model's sigmoid output in [0, 1]).

    * ``mode="raw"`` (the paper's code): the maps are mixed as they are. A faint map (a low peak)
      then weighs less than a bright one: the mix is not a mixture of distributions.
    * ``mode="normalized"``: both maps are first normalised to sum 1 per image, i.e. treated as
      the fixation distributions that KLD, CC and SIM compare, so the mix is the mixture of the
      two distributions with weight ``mix`` on the target; the result is rescaled to max 1 per
      image to keep the ``[0, 1]`` map convention (every loss term is invariant to that scale).
      An all-zero pair gives zeros.

    Returns float32 (B, H, W) in [0, 1].
    """
    if target.shape != ema_pred.shape:
        raise ValueError(f"target {tuple(target.shape)} and EMA prediction {tuple(ema_pred.shape)} differ in shape")
    if mode not in names.EMA_MIX_MODES:
        raise ValueError(f"ema_mix_mode: {mode!r} is not one of {', '.join(names.EMA_MIX_MODES)}")
    t = target.float()
    e = ema_pred.float()
    if mode == "raw":
        return e + mix * (t - e)
    t = t / t.sum(dim=(-2, -1), keepdim=True).clamp_min(_EPS)
    e = e / e.sum(dim=(-2, -1), keepdim=True).clamp_min(_EPS)
    m = e + mix * (t - e)
    return m / m.amax(dim=(-2, -1), keepdim=True).clamp_min(_EPS)


def ema_decay_for(cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The EMA decay of a run: ``cfg.ema_decay``, or derived from ``cfg.ema_horizon_epochs``.

    An EMA with decay ``d`` averages over about ``1 / (1 - d)`` steps. The paper's 0.999 is about
    one epoch of its SALICON run; a horizon in epochs keeps that meaning at any dataset size and
    batch: ``d = 1 - 1 / (ema_horizon_epochs * steps_per_epoch)`` (0 when that is below one step).
    """
    if cfg.ema_horizon_epochs is None:
        return float(cfg.ema_decay)
    steps = cfg.ema_horizon_epochs * max(1, steps_per_epoch)
    return max(0.0, 1.0 - 1.0 / steps) if steps > 1 else 0.0


def semi_pkd_steps(epochs: int, n_labelled: int, pseudo_images: int, global_batch: int) -> int:
    """Optimizer steps of a run of ``epochs`` epochs, each a labelled pass over ``n_labelled``
    items and a pseudo pass over ``pseudo_images`` pool items (0: none), whole global batches only
    (every pass drops its incomplete last batch)."""
    return epochs * (n_labelled // global_batch + pseudo_images // global_batch)


def pool_images(pool_draw: int | None, pool_size: int) -> int:
    """Images of a pool of ``pool_size`` that one epoch's pseudo pass goes over: ``pool_draw``
    (``ConfigError`` naming the key when the pool is smaller), or all of them when None."""
    if pool_draw is None:
        return pool_size
    if pool_draw > pool_size:
        raise ConfigError(f"pool_draw: {pool_draw} images per epoch, but the pool holds {pool_size}; "
                          f"set at most {pool_size}, or null for the whole pool")
    return pool_draw


@dataclasses.dataclass(frozen=True)
class StepBudget:
    """A run's number of optimizer steps, set apart from its epochs.

    Exactly one of: ``steps``, a fixed count; ``pseudo_images``, the steps of a run of the same
    ``cfg.epochs``, labelled set and global batch whose epochs also hold a pseudo pass over that
    many pool images (:func:`semi_pkd_steps`): the Semi-PKD arm of the labelled-only control.
    ``name`` says which control it is in logs.
    """

    steps: int | None = None
    pseudo_images: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.pseudo_images is None):
            raise ValueError(f"StepBudget: give exactly one of steps and pseudo_images, got {self.steps}, {self.pseudo_images}")

    def total(self, epochs: int, n_labelled: int, global_batch: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return semi_pkd_steps(epochs, n_labelled, int(self.pseudo_images), global_batch)


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (seed, epoch, stream); distinct keys give unrelated seeds."""
    state = np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


# --------------------------------------------------------------------------------------------
# Helpers


def _weights(obj: Any, keys: tuple[str, ...], where: str) -> dict[str, float]:
    """Loss weights from a mapping or dataclass, as a plain dict with exactly ``keys``."""
    w = as_plain(obj)
    if not isinstance(w, dict) or set(w) != set(keys):
        raise ValueError(f"{where}: expected weights {{{', '.join(keys)}}}, got {w!r}")
    return {k: float(w[k]) for k in keys}


def _cuda_mem(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}GiB"


def _is_better(score: float, best: float | None, larger_is_better: bool) -> bool:
    if not math.isfinite(score):
        return False
    if best is None or not math.isfinite(best):
        return True
    return score > best if larger_is_better else score < best


def _set_epoch(dataset: Dataset | None, epoch: int) -> None:
    if dataset is not None and hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


# --------------------------------------------------------------------------------------------
# The passes of an epoch, and what every pass works on


@dataclasses.dataclass(frozen=True)
class TrainPass:
    """One pass of an epoch over one dataset: its items, its loss, where its mean loss is logged.

    ``name`` labels progress bars and errors; ``stream`` keys its per-epoch data order (so the
    passes draw independent orders); ``target_key`` is the item key of the map it learns.
    """

    dataset: Dataset
    weights: Mapping[str, float]
    name: str = ""
    stream: int = 0
    target_key: str = ""
    log_key: str = ""
    draw: int | None = None  # items drawn per epoch (seeded, without replacement); None: all

    def loss(self, pred: torch.Tensor, target: torch.Tensor, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class LabelledPass(TrainPass):
    """The labelled set: density targets, fixations for NSS, the labelled loss."""

    name: str = "labelled"
    stream: int = _STREAM_LABELLED
    target_key: str = "density"
    log_key: str = "train/loss"
    nss_aggregation: str = "per_image"  # see losses.labelled_loss

    def loss(self, pred, target, batch, device):
        fixations = batch["fixations"].to(device, non_blocking=True)
        return losses_mod.labelled_loss(pred, target, fixations, self.weights, self.nss_aggregation)


@dataclasses.dataclass(frozen=True)
class PseudoPass(TrainPass):
    """The pseudo-labelled pool: the teacher's cached maps as targets, the pseudo loss."""

    name: str = "pseudo"
    stream: int = _STREAM_PSEUDO
    target_key: str = "target"
    log_key: str = "train/pseudo_loss"

    def loss(self, pred, target, batch, device):
        return losses_mod.pseudo_loss(pred, target, self.weights)


@dataclasses.dataclass
class _Loop:
    """What every pass of a run works on: config, device, the model and its optimisation state."""

    cfg: TrainConfig
    device: torch.device
    seed: int
    per_rank_batch: int
    model: nn.Module
    train_model: nn.Module  # the model, or its DDP wrapper
    ema: AveragedModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    dist_: Distributed
    epochs: int  # epochs of this run (cfg.epochs, or as many as a step budget needs)
    ema_start_epoch: int  # cfg.ema_start_epoch, or its step-budget equivalent


# --------------------------------------------------------------------------------------------
# The loop


def fit(
    model: nn.Module,
    *,
    labelled: Dataset,
    val: Dataset,
    cfg: TrainConfig,
    out_path: str | os.PathLike,
    ckpt_dir: str | os.PathLike,
    live_dir: str | os.PathLike,
    device: torch.device | str,
    seed: int,
    pseudo: Dataset | None = None,
    record: Mapping[str, Any] | None = None,
    budget: StepBudget | None = None,
) -> dict[str, Any]:
    """Train ``model`` and write the best epoch's weights to ``out_path``.

    Args:
        model: a network mapping float32 (B, 3, H, W) images in [0, 1] to (B, h, w) maps in
            [0, 1] (a :func:`semipkd.models.build_model` model). Trained in place; it ends with
            the last epoch's weights (``out_path`` holds the best epoch's).
        labelled: items ``{"image": (3, H, W) float [0, 1], "density": (h, w) float [0, 1],
            "fixations": (h, w) {0, 1}, "index"}``; ``set_epoch(e)`` is called if present.
        val: the same kind of items, not augmented; the best epoch is selected on it.
        cfg: a :class:`semipkd.config.TrainConfig` (read by attribute).
        out_path: the model file, ``checkpoint_payload(model)`` of the best epoch plus
            ``{"epoch", "val", "train_config"}``; written once, when training is complete.
        ckpt_dir: holds ``last.pt``, the resume checkpoint.
        live_dir: dvclive folder (``metrics.json``, ``plots/metrics/**.tsv``).
        device: where to train.
        seed: seeds initial RNG states, data order and augmentation.
        pseudo: optional pool of items ``{"image", "target": (h, w) float [0, 1], "index"}``.
        record: JSON-able facts about how the run was set up (e.g. the head prior), written into
            the model file under their keys; None writes nothing more.
        budget: a :class:`StepBudget` (the run takes that many optimizer steps, see the module
            docstring); None: ``cfg.epochs`` epochs.

    The best epoch is chosen by ``cfg.select_metric``, one of :data:`SELECT_METRICS`.

    Returns:
        ``{"best_epoch", "val" (metrics of the best epoch), "epochs", "epochs_run" (in this
        call), "images_per_s" (training images per second over the passes run in this call,
        all processes together), "data_wait_share", "skipped_steps", "optimizer_steps" (of the
        whole run, skipped ones included), "device", "world_size"}``; "epochs" is the number of
        epochs run (``cfg.epochs`` unless there is a budget).
    """
    select_metric = cfg.select_metric
    if select_metric not in SELECT_METRICS:
        raise ValueError(f"select_metric: {select_metric!r} is not one of {', '.join(SELECT_METRICS)}")
    if cfg.nonfinite not in ON_ERROR:
        raise ValueError(f"nonfinite: {cfg.nonfinite!r} is not one of raise, skip")
    device = torch.device(device)
    out_path, ckpt_dir, live_dir = Path(out_path), Path(ckpt_dir), Path(live_dir)
    ckpt_path = ckpt_dir / "last.pt"

    rank, world_size = init_distributed(device)
    dist_ = Distributed(rank, world_size, device)
    per_rank_batch = cfg.batch_size // world_size
    if per_rank_batch < 1:
        raise ValueError(f"batch_size {cfg.batch_size} is smaller than the number of processes {world_size}")
    if per_rank_batch * world_size != cfg.batch_size and dist_.main:
        log.warning(
            "batch_size %d is not divisible by %d processes: the global batch is %d",
            cfg.batch_size,
            world_size,
            per_rank_batch * world_size,
        )
    global_batch = per_rank_batch * world_size
    for name, ds in (("labelled", labelled), ("pseudo", pseudo)):
        if ds is not None and len(ds) < global_batch:
            raise ValueError(f"{name} dataset has {len(ds)} items, fewer than one batch of {global_batch}")
    pseudo_images = 0 if pseudo is None else pool_images(cfg.pool_draw, len(pseudo))
    if pseudo is not None and pseudo_images < global_batch:
        raise ConfigError(f"pool_draw: {pseudo_images} images per epoch are fewer than one batch of {global_batch}")
    if len(val) == 0:
        raise ValueError("val dataset is empty: nothing to select the best epoch on")

    loss_w = _weights(cfg.loss, losses_mod.LABELLED_TERMS, "loss")
    if pseudo is not None and cfg.pseudo_loss is None:
        raise ConfigError("pseudo_loss: weights are needed to train on pseudo-labels, and none are set")
    pseudo_w = None if pseudo is None else _weights(cfg.pseudo_loss, losses_mod.PSEUDO_TERMS, "pseudo_loss")
    train_config = {k: v for k, v in as_plain(cfg).items() if k not in _OMITTED_AT_DEFAULT or v != _OMITTED_AT_DEFAULT[k]}
    fingerprint = {
        "train_config": {k: v for k, v in train_config.items() if k not in _RESULT_NEUTRAL_FIELDS},
        "seed": seed,
        "sizes": [len(labelled), 0 if pseudo is None else len(pseudo), len(val)],
        "model_config": as_plain(checkpoint_payload(model).get("model_config")),
        "global_batch": global_batch,
    }

    # Model, EMA, optimiser, schedule, scaler.
    seed_everything(seed + rank)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if world_size > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    steps_per_epoch = semi_pkd_steps(1, len(labelled), pseudo_images, global_batch)
    if budget is None:
        epochs, ema_start_epoch, total_steps = cfg.epochs, cfg.ema_start_epoch, cfg.epochs * steps_per_epoch
        ema_epoch_steps: float = steps_per_epoch
    else:
        total_steps = budget.total(cfg.epochs, len(labelled), global_batch)
        if cfg.epochs < 1 or total_steps < 1:
            raise ConfigError(f"a step budget needs epochs >= 1 and at least one step (epochs {cfg.epochs}, "
                              f"{total_steps} steps): its nominal epochs are budget / epochs steps")
        if steps_per_epoch < 1:
            raise ValueError("a step budget needs at least one step per epoch")
        epochs = -(-total_steps // steps_per_epoch)  # the last epoch cut at the budget
        ema_epoch_steps = total_steps / cfg.epochs  # a nominal epoch
        # The first epoch that starts at or after the nominal EMA start step.
        ema_start_epoch = -(-cfg.ema_start_epoch * total_steps // (cfg.epochs * steps_per_epoch))
        fingerprint["budget"] = total_steps
        if dist_.main:
            log.info("step budget (%s): %d optimizer steps = %d epochs of %d steps (the last %d), nominal epochs "
                     "of %.4g steps; EMA from epoch %d", budget.name or "steps", total_steps, epochs, steps_per_epoch,
                     total_steps - (epochs - 1) * steps_per_epoch, ema_epoch_steps, ema_start_epoch)
    if dist_.main:
        log.info("%d optimizer steps: %d epochs of up to %d steps (global batch %d)", total_steps, epochs, steps_per_epoch,
                 global_batch)
    ema_decay = ema_decay_for(cfg, ema_epoch_steps)
    if dist_.main and cfg.ema_horizon_epochs is not None:
        log.info("EMA decay %.6f: a horizon of %g epochs at %g steps per epoch", ema_decay, cfg.ema_horizon_epochs,
                 ema_epoch_steps)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    ema.module.eval()
    train_model: nn.Module = model
    if world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    cosine_steps = max(1, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, cosine_steps) / cosine_steps))
    )
    dtype = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if cfg.amp and device.type != "cuda" and dist_.main:
        log.info("amp: off on %s (mixed precision is used on CUDA only)", device.type)
    elif dtype is not None and dist_.main:
        log.info("amp: %s%s", str(dtype).removeprefix("torch."), " with GradScaler" if scaler.is_enabled() else "")

    # Resume.
    state = {"epoch": -1, "best": None, "history": [], "skipped_steps": 0}
    ckpt = load_checkpoint(ckpt_path, fingerprint, main=dist_.main)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state = {k: ckpt[k] for k in ("epoch", "best", "history", "skipped_steps")}
        rngs = ckpt["rng"]
        if rank < len(rngs) and len(rngs) == world_size:
            set_rng_state(rngs[rank])
        else:
            seed_everything(_derive_seed(seed, state["epoch"], rank) % 2**62)
            if dist_.main:
                log.warning("%s was written by %d processes, now %d: RNG states re-seeded", ckpt_path, len(rngs), world_size)
        if dist_.main:
            log.info("resuming from %s after epoch %d of %d", ckpt_path, state["epoch"] + 1, epochs)
        del ckpt

    live = None
    if dist_.main:
        from dvclive import Live

        # Rebuilt from the checkpoint's history on every start: the files then hold exactly one
        # row per finished epoch, however often the run was killed between a log and a save.
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=False)
        for row in state["history"]:
            _log_live(live, row)

    loop = _Loop(
        cfg=cfg, device=device, seed=seed, per_rank_batch=per_rank_batch, model=model, train_model=train_model,
        ema=ema, optimizer=optimizer, scheduler=scheduler, scaler=scaler, dist_=dist_, epochs=epochs,
        ema_start_epoch=ema_start_epoch,
    )
    passes: list[TrainPass] = [LabelledPass(labelled, loss_w, nss_aggregation=cfg.nss_aggregation)]
    if pseudo is not None:
        passes.append(PseudoPass(pseudo, pseudo_w, draw=cfg.pool_draw))
    first_epoch = state["epoch"] + 1
    train_images = 0
    train_seconds = 0.0
    wait_seconds = 0.0
    if epochs == 0 and state["best"] is None:
        # Nothing to train: the given weights are the result, scored once.
        metrics = _validate(model, val, cfg, device, per_rank_batch, loss_w, dist_)
        state["best"] = {"epoch": None, "score": metrics[select_metric], "val": metrics, "model": _cpu_state(model)}

    for epoch in range(first_epoch, epochs):
        epoch_start = time.perf_counter()
        lr0 = optimizer.param_groups[0]["lr"]
        row: dict[str, Any] = {"epoch": epoch, "lr": lr0}
        step = epoch * steps_per_epoch  # the run's optimizer steps before this pass
        for train_pass in passes:
            # Without a budget every pass runs whole (total_steps is the sum of all passes).
            out = _run_pass(loop, train_pass, epoch, max_steps=max(0, total_steps - step))
            step += out["steps"]
            row[train_pass.log_key] = out["loss"]
            state["skipped_steps"] += out["skipped"]
            train_images += out["images"]
            train_seconds += out["seconds"]
            wait_seconds += out["wait_seconds"]
        if epoch == ema_start_epoch - 1:
            # The paper's schedule: no EMA updates before the EMA is used; its first update, at
            # the end of the epoch before, copies the model (AveragedModel's first update does).
            ema.update_parameters(model)
        metrics = _validate(model, val, cfg, device, per_rank_batch, loss_w, dist_)
        row.update({f"val/{k}": v for k, v in metrics.items()})
        state["history"].append(row)
        best = state["best"]
        if _is_better(metrics[select_metric], None if best is None else best["score"], SELECT_METRICS[select_metric]):
            state["best"] = {"epoch": epoch, "score": metrics[select_metric], "val": metrics, "model": _cpu_state(model)}
        state["epoch"] = epoch
        rngs = dist_.gather(rng_state())
        if dist_.main:
            save_checkpoint(ckpt_path, fingerprint, state, model, ema, optimizer, scheduler, scaler, rngs)
            _log_live(live, row)
            log.info(
                "epoch %d/%d: %s | %.0f s%s",
                epoch + 1,
                epochs,
                ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"),
                time.perf_counter() - epoch_start,
                f" | max GPU memory {_cuda_mem(device)}" if device.type == "cuda" else "",
            )

    best = state["best"]
    if best is None:  # every validation was NaN: keep the last weights, say so
        if dist_.main:
            log.warning("no epoch had a finite val %s; writing the last epoch's weights", select_metric)
        last = state["history"][-1] if state["history"] else {}
        best = {"epoch": state["epoch"], "val": {k[4:]: v for k, v in last.items() if k.startswith("val/")},
                "model": _cpu_state(model)}
    if dist_.main:
        meta = {k: v for k, v in checkpoint_payload(model).items() if k != "model"}
        meta.update({"epoch": best["epoch"], "val": best["val"], "train_config": train_config})
        meta.update(record or {})
        # One JSON round trip: pickle memoises by object identity, so without it the file's bytes
        # would depend on where the strings came from (a resumed run reads them from last.pt)
        # and a resumed run would write other bytes than an uninterrupted one, same weights.
        atomic_torch_save(out_path, {"model": best["model"], **json.loads(json.dumps(meta))})
        if budget is not None:
            # Which control ran, for a reader of the metrics (only with a budget: the default
            # run's metrics file keeps its bytes).
            live.summary["optimizer_steps"] = int(scheduler.last_epoch)
        live.end()
        log.info(
            "best epoch %s of %d (val %s %.4f) -> %s",
            "-" if best["epoch"] is None else best["epoch"] + 1,
            epochs,
            select_metric,
            best["val"].get(select_metric, float("nan")),
            out_path,
        )
    dist_.barrier()
    return {
        "best_epoch": best["epoch"],
        "val": dict(best["val"]),
        "epochs": epochs,
        "epochs_run": max(0, epochs - first_epoch),
        "images_per_s": train_images / train_seconds if train_seconds > 0 else 0.0,
        "data_wait_share": wait_seconds / train_seconds if train_seconds > 0 else 0.0,
        "skipped_steps": state["skipped_steps"],
        "optimizer_steps": int(scheduler.last_epoch),
        "device": str(device),
        "world_size": world_size,
    }


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap_ddp(model).state_dict().items()}


def _log_live(live: Any, row: Mapping[str, Any]) -> None:
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(key, float(value))
    live.next_step()


def _make_loader(dataset: Dataset, sampler: Sampler, batch: int, cfg: TrainConfig, device: torch.device, key: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,  # the sampler already yields whole batches only
        # Seeds the workers' base seed; with a fresh generator per epoch and pass it does not
        # depend on the global RNG or on how many batches earlier loaders drew.
        generator=torch.Generator().manual_seed(key),
    )


def _run_pass(loop: _Loop, train_pass: TrainPass, epoch: int, max_steps: int) -> dict[str, float]:
    """One pass over ``train_pass.dataset``, cut after ``max_steps`` optimizer steps (a step
    budget's last epoch); returns mean loss, steps, images, seconds, data-wait seconds, skips."""
    cfg, device, dist_, per_rank_batch = loop.cfg, loop.device, loop.dist_, loop.per_rank_batch
    model, train_model, ema, optimizer, scheduler, scaler = (
        loop.model, loop.train_model, loop.ema, loop.optimizer, loop.scheduler, loop.scaler
    )
    dataset, stream, seed, kind = train_pass.dataset, train_pass.stream, loop.seed, train_pass.name
    _set_epoch(dataset, epoch)
    sampler = GlobalBatchSampler(
        len(dataset), per_rank_batch, rank=dist_.rank, world_size=dist_.world_size, seed_key=_derive_seed(seed, epoch, stream),
        draw=train_pass.draw,
    )
    loader = _make_loader(dataset, sampler, per_rank_batch, cfg, device, _derive_seed(seed, epoch, stream, _STREAM_LOADER))
    # ema_mix = 1 keeps the target as it is: no need to run the EMA model at all.
    use_ema = epoch >= loop.ema_start_epoch and cfg.ema_mix < 1.0
    n_steps = min(sampler.steps, max_steps)
    channels_last = torch.channels_last if cfg.channels_last else torch.contiguous_format
    global_batch = per_rank_batch * dist_.world_size
    train_model.train()
    bar = tqdm(
        total=n_steps * global_batch,
        desc=f"epoch {epoch + 1}/{loop.epochs} {kind}",
        unit="img",
        disable=None if dist_.main else True,
        leave=False,
        dynamic_ncols=True,
    )
    loss_sum = 0.0
    counted = 0
    skipped = 0
    wait = 0.0
    report_every = max(1, n_steps // 10)
    start = time.perf_counter()
    it = iter(loader)
    for step in range(n_steps):
        t0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t0
        x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=channels_last)
        target = batch[train_pass.target_key].to(device, non_blocking=True).float()
        if use_ema:
            with torch.no_grad(), autocast(device, cfg.amp):
                ema_pred = ema.module(x)
            target = mix_with_ema(target, ema_pred.float(), cfg.ema_mix, cfg.ema_mix_mode)
        # BatchNorm updates its running statistics in the forward pass: a batch whose loss turns
        # out non-finite would poison them, so with "skip" they are restored from this copy.
        saved_buffers = [b.detach().clone() for b in model.buffers()] if cfg.nonfinite == "skip" else None
        with autocast(device, cfg.amp):
            pred = train_model(x)
        pred = pred.float()
        # The metrics refuse NaN inputs, so a NaN prediction is caught before the loss is built.
        finite = bool(torch.isfinite(pred).all()) and bool(torch.isfinite(target).all())
        loss_value = float("nan")
        if finite:
            loss = train_pass.loss(pred, target, batch, device)
            loss_value = float(loss.detach())
            finite = math.isfinite(loss_value)
        if dist_.any_true(not finite):
            where = f"epoch {epoch + 1} (0-based {epoch}), {kind} pass, step {step + 1} of {n_steps}"
            if cfg.nonfinite == "raise":
                raise NonFiniteLossError(
                    f"non-finite training loss ({loss_value}) at {where}; "
                    "set nonfinite: skip to skip such steps, or check the data and learning rate"
                )
            log.warning("non-finite loss (%s) at %s: step skipped", loss_value, where)
            skipped += 1
            # A zero backward keeps DDP's gradient hooks in step on every process; no update follows.
            (pred.nan_to_num(0.0) * 0.0).sum().backward()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, saved in zip(model.buffers(), saved_buffers, strict=True):
                    b.copy_(saved)
            scheduler.step()  # the schedule counts steps, taken or not
            bar.update(global_batch)
            continue
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if epoch >= loop.ema_start_epoch:
            ema.update_parameters(model)
        loss_sum += loss_value
        counted += 1
        bar.update(global_batch)
        postfix = {"loss": f"{loss_sum / counted:.4f}", "lr": f"{optimizer.param_groups[0]['lr']:.2e}"}
        if device.type == "cuda":
            postfix["mem"] = _cuda_mem(device)
        bar.set_postfix(postfix, refresh=False)
        if bar.disable and dist_.main and n_steps >= 20 and (step + 1) % report_every == 0 and step + 1 < n_steps:
            # No terminal (a DVC run, a log file): a line every ~10% instead of the bar.
            done = time.perf_counter() - start
            rate = (step + 1) * global_batch / done
            log.info(
                "epoch %d %s: %d/%d steps, %.1f img/s, ETA %.0f s",
                epoch + 1,
                kind,
                step + 1,
                n_steps,
                rate,
                (n_steps - step - 1) * global_batch / rate,
            )
    seconds = time.perf_counter() - start
    bar.close()
    del it, loader
    loss_sum, counted = dist_.all_sum([loss_sum, float(counted)])
    return {
        "loss": loss_sum / counted if counted else float("nan"),
        "steps": n_steps,
        "images": n_steps * global_batch,
        "seconds": seconds,
        "wait_seconds": wait,
        "skipped": skipped,
    }


@torch.no_grad()
def _validate(
    model: nn.Module,
    val: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    batch: int,
    loss_w: dict[str, float],
    dist_: Distributed,
) -> dict[str, float]:
    """Mean labelled loss and CC, KLD, NSS, SIM, AUC-Judd over ``val`` (all processes together),
    and ``paper_sum``, the paper code's selection score from those means:
    ``(1 - CC) + KLD + (1 - sigmoid(NSS)) + (1 - SIM) + (1 - AUC-Judd)`` (lower is better).

    Metrics are per-image means; the loss, a batch mean, is weighted by batch size.
    """
    _set_epoch(val, 0)
    was_training = model.training
    model.eval()
    sampler = ShardSampler(len(val), rank=dist_.rank, world_size=dist_.world_size)
    loader = DataLoader(val, batch_size=batch, sampler=sampler, num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    channels_last = torch.channels_last if cfg.channels_last else torch.contiguous_format
    sums = {"loss": 0.0, "cc": 0.0, "kld": 0.0, "nss": 0.0, "sim": 0.0, "auc_judd": 0.0}
    n = 0
    for b in tqdm(loader, desc="val", unit="batch", disable=None if dist_.main else True, leave=False):
        x = b["image"].to(device, non_blocking=True).contiguous(memory_format=channels_last)
        density = b["density"].to(device, non_blocking=True).float()
        fixations = b["fixations"].to(device, non_blocking=True)
        with autocast(device, cfg.amp):
            pred = model(x)
        pred = pred.float()
        k = pred.shape[0]
        sums["loss"] += float(losses_mod.labelled_loss(pred, density, fixations, loss_w, cfg.nss_aggregation)) * k
        sums["cc"] += float(metrics_mod.cc(pred, density).sum())
        sums["kld"] += float(metrics_mod.kld(pred, density).sum())
        sums["nss"] += float(metrics_mod.nss(pred, fixations).sum())
        sums["sim"] += float(metrics_mod.sim(pred, density).sum())
        sums["auc_judd"] += float(metrics_mod.auc_judd(pred, fixations).sum())
        n += k
    keys = list(sums)
    totals = dist_.all_sum([sums[k] for k in keys] + [float(n)])
    model.train(was_training)
    out = {k: totals[i] / totals[-1] for i, k in enumerate(keys)}
    out["paper_sum"] = paper_sum(out)
    return out


def paper_sum(m: Mapping[str, float]) -> float:
    """The paper code's selection score from mean val metrics (lower is better):
    ``(1 - CC) + KLD + (1 - sigmoid(NSS)) + (1 - SIM) + (1 - AUC-Judd)``."""
    return (1 - m["cc"]) + m["kld"] + (1 - 1 / (1 + math.exp(-m["nss"]))) + (1 - m["sim"]) + (1 - m["auc_judd"])
