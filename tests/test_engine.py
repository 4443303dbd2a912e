"""The training engine: learning, EMA mix, resume (in-process crash and a real SIGKILL),
non-finite losses, determinism (repeat runs, 0 vs 2 loader workers), outputs.

Everything runs a mobilenet_v2 saliency model on 64x64 inputs and 32x32 maps written in the
prepared-cache format (docs/architecture.md) into tmp folders; a run is a few seconds on 2 CPUs.
The helpers at the top are also imported by test_pseudolabel.py and test_ddp.py.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from semipkd.config import ConfigError, LossWeights, PseudoLossWeights, TrainConfig
from semipkd.data import PreparedDataset
from semipkd.engine import (
    CheckpointError,
    GlobalBatchSampler,
    NonFiniteLossError,
    StepBudget,
    fit,
    mix_with_ema,
    paper_sum,
    semi_pkd_steps,
)
from semipkd.models import build_model

REPO = Path(__file__).resolve().parents[1]
INPUT = (64, 64)
OUTPUT = (32, 32)


# ----------------------------------------------------------------------------------------------
# Fixtures shared with the other engine-level tests


def write_prepared(folder: Path, n: int, *, seed: int, labelled: bool = True) -> Path:
    """Write a prepared split (format of docs/architecture.md) with a learnable toy task.

    Each image is dim noise with one bright 12x12 square; its density is a Gaussian centred on
    the square (at the 32x32 output grid) and its fixations are three pixels there.
    """
    rng = np.random.default_rng(seed)
    hi, wi = INPUT
    ho, wo = OUTPUT
    images = (rng.random((n, hi, wi, 3)) * 60).astype(np.uint8)
    density = np.zeros((n, ho, wo), np.uint8)
    fix = np.zeros((n, ho, wo), np.uint8)
    yy, xx = np.mgrid[0:ho, 0:wo]
    for i in range(n):
        cy, cx = rng.integers(8, hi - 8, size=2)
        images[i, cy - 6 : cy + 6, cx - 6 : cx + 6] = rng.integers(180, 255, size=3)
        oy, ox = cy * ho / hi, cx * wo / wi
        g = np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * 3.0**2))
        density[i] = np.rint(255 * g / g.max())
        for dy, dx in ((0, 0), (1, 0), (0, 1)):
            fix[i, min(ho - 1, int(oy) + dy), min(wo - 1, int(ox) + dx)] = 1
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    meta = {
        "version": 1,
        "name": "toy",
        "split": folder.name,
        "count": n,
        "input_size": list(INPUT),
        "output_size": list(OUTPUT) if labelled else None,
        "names": [f"img{i:03d}" for i in range(n)],
        "original_sizes": [list(INPUT)] * n,
    }
    if labelled:
        np.save(folder / "density.npy", density)
        np.save(folder / "fixations.npy", np.packbits(fix, axis=-1))
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def make_cfg(**overrides) -> TrainConfig:
    base = dict(
        epochs=2,
        batch_size=4,
        lr=2e-3,
        weight_decay=1e-4,
        ema_decay=0.9,
        ema_mix=0.5,
        ema_start_epoch=1,
        grad_clip=1.0,
        amp=False,
        channels_last=False,
        loss=LossWeights(kld=1.0, cc=1.0, nss=1.0),
        pseudo_loss=PseudoLossWeights(kld=1.0, cc=1.0, sim=1.0),
        nonfinite="raise",
        num_workers=0,
        holdout=0.1,
        select_on="holdout",
    )
    base.update(overrides)
    return TrainConfig(**base)


_MODELS: dict[int, torch.nn.Module] = {}


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """A fresh copy of the seeded toy network (built once: building takes seconds, copying not)."""
    if seed not in _MODELS:
        torch.manual_seed(seed)
        _MODELS[seed] = build_model("mobilenet_v2", output_size=OUTPUT, pretrained=False)
    return copy.deepcopy(_MODELS[seed])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread, here and in the subprocesses (OMP_NUM_THREADS=1): on a loaded 2-core
    machine two threads are ten times slower for these tiny convolutions, and a run and its
    resumed twin must use the same thread count to be bitwise equal."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def state_of(path: Path, key: str = "model") -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"tensor {k} differs (max |diff| {(a[k].float() - b[k].float()).abs().max()})"


class ToyPseudo(torch.utils.data.Dataset):
    """A pseudo-labelled pool: items ``{"image", "target", "index"}`` (targets = toy densities)."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.inner = PreparedDataset(folder, hflip=True, photometric=True, seed=seed)

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __getitem__(self, i):
        item = self.inner[i]
        return {"image": item["image"], "target": item["density"], "index": i}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_data(root)
    return root


def make_data(root: Path) -> Path:
    write_prepared(root / "train", 12, seed=1)
    write_prepared(root / "val", 4, seed=2)
    write_prepared(root / "pool", 4, seed=3)
    return root


def datasets(root: Path, *, augment: bool = True):
    train = PreparedDataset(root / "train", hflip=augment, photometric=augment, seed=7)
    val = PreparedDataset(root / "val", hflip=False, photometric=False, seed=7)
    return train, val


def run_fit(root: Path, out: Path, cfg: TrainConfig, *, train=None, pseudo="toy", seed: int = 3, model=None, **kw) -> dict:
    """``fit`` on the toy data: labelled pass over 12 images, pseudo pass over 4, val on 4."""
    tr, val = datasets(root)
    return fit(
        tiny_model() if model is None else model,
        labelled=train if train is not None else tr,
        val=val,
        cfg=cfg,
        out_path=out / "model.pt",
        ckpt_dir=out / "ckpt",
        live_dir=out / "live",
        device="cpu",
        seed=seed,
        pseudo=ToyPseudo(root / "pool", seed=8) if pseudo == "toy" else pseudo,
        **kw,
    )


def assert_same_live(a: Path, b: Path) -> None:
    """Identical dvclive output: metrics.json and every per-epoch .tsv, one row per epoch."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and Path("metrics.json") in files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted 2-epoch run (EMA mix on in epoch 2): the run every other one must equal."""
    out = tmp_path_factory.mktemp("reference")
    summary = run_fit(data, out, make_cfg())
    return out, summary


# ----------------------------------------------------------------------------------------------
# Pieces


def test_normalized_mix_with_ema_is_the_mixture_of_the_two_distributions():
    t = torch.zeros(1, 2, 2)
    t[0, 0, 0] = 1.0  # all mass on one pixel
    e = torch.full((1, 2, 2), 0.25)  # uniform
    m = mix_with_ema(t, e, 0.5, "normalized")
    # 0.5 * [1, 0, 0, 0] + 0.5 * [.25, .25, .25, .25] = [.625, .125, .125, .125], max-normalised
    expected = torch.tensor([[[1.0, 0.2], [0.2, 0.2]]])
    torch.testing.assert_close(m, expected)
    # mix = 1 keeps the target, mix = 0 is the EMA prediction (both max-normalised); scale-free
    torch.testing.assert_close(mix_with_ema(3 * t, e, 1.0, "normalized"), t)
    torch.testing.assert_close(mix_with_ema(t, 5 * e, 0.0, "normalized"), torch.ones(1, 2, 2))
    assert torch.equal(mix_with_ema(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), 0.5, "normalized"), torch.zeros(1, 2, 2))


def test_raw_mix_with_ema_is_the_paper_codes_value_by_value_mix():
    # the paper's code: gt = ema + (gt - ema) * 0.5 on the maps as they are
    t = torch.tensor([[[0.34, 0.0], [0.0, 0.0]]])  # a faint teacher map (peak 0.34)
    e = torch.tensor([[[0.2, 0.6], [0.6, 0.6]]])
    m = mix_with_ema(t, e, 0.5, "raw")
    torch.testing.assert_close(m, torch.tensor([[[0.27, 0.3], [0.3, 0.3]]]))
    assert torch.equal(mix_with_ema(t, e, 0.5), m)  # raw is the default
    # the teacher's share of the mixed map's mass: 0.5*0.34 / (0.27 + 0.9) = 14.5% raw, 50% normalized
    share_raw = float(0.5 * t.sum() / m.sum())
    assert share_raw == pytest.approx(0.17 / 1.17, abs=1e-6)
    n = mix_with_ema(t, e, 0.5, "normalized")
    tn, en = t / t.sum(), e / e.sum()
    torch.testing.assert_close(n, (0.5 * tn + 0.5 * en) / (0.5 * tn + 0.5 * en).max())
    with pytest.raises(ValueError, match="ema_mix_mode"):
        mix_with_ema(t, e, 0.5, "average")


def test_ema_horizon_in_epochs_gives_the_decay_of_that_many_steps():
    from semipkd.engine import ema_decay_for

    assert ema_decay_for(make_cfg(ema_decay=0.999), 20) == 0.999
    horizon = make_cfg(ema_decay=None, ema_horizon_epochs=1.0)
    assert ema_decay_for(horizon, 20) == pytest.approx(0.95)  # averages over ~20 steps = 1 epoch
    assert ema_decay_for(horizon, 1000) == pytest.approx(0.999)  # the paper's value at its epoch size
    assert ema_decay_for(make_cfg(ema_decay=None, ema_horizon_epochs=2.5), 40) == pytest.approx(0.99)
    assert ema_decay_for(make_cfg(ema_decay=None, ema_horizon_epochs=0.5), 1) == 0.0
    with pytest.raises(ConfigError, match="set exactly one"):
        make_cfg(ema_decay=0.9, ema_horizon_epochs=1.0)
    with pytest.raises(ConfigError, match="set exactly one"):
        make_cfg(ema_decay=None)


def test_paper_sum_is_the_paper_codes_selection_score():
    m = {"cc": 0.5, "kld": 1.0, "nss": 0.0, "sim": 0.5, "auc_judd": 0.75}
    assert paper_sum(m) == pytest.approx(0.5 + 1.0 + 0.5 + 0.5 + 0.25)
    m2 = dict(m, nss=2.0)
    assert paper_sum(m2) == pytest.approx(paper_sum(m) - 0.5 + (1 - 1 / (1 + np.exp(-2.0))))


def test_global_batch_sampler_splits_each_global_batch_into_rank_slices():
    single = list(GlobalBatchSampler(22, 6, rank=0, world_size=1, seed_key=5))
    ranks = [list(GlobalBatchSampler(22, 3, rank=r, world_size=2, seed_key=5)) for r in range(2)]
    assert len(single) == 18 and len(set(single)) == 18  # 3 full batches of 6, last 4 dropped
    for s in range(3):
        assert ranks[0][3 * s : 3 * s + 3] + ranks[1][3 * s : 3 * s + 3] == single[6 * s : 6 * s + 6]
    assert single == list(GlobalBatchSampler(22, 6, rank=0, world_size=1, seed_key=5))
    assert single != list(GlobalBatchSampler(22, 6, rank=0, world_size=1, seed_key=6))


# ----------------------------------------------------------------------------------------------
# Training


def test_fit_learns_the_toy_task_and_writes_its_outputs(data, reference):
    out, summary = reference
    payload = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert set(payload) >= {"model", "model_config", "epoch", "val", "train_config"}
    assert payload["model_config"]["backbone"] == "mobilenet_v2"
    assert payload["train_config"]["epochs"] == 2 and payload["train_config"]["loss"] == {"kld": 1.0, "cc": 1.0, "nss": 1.0}
    assert summary["best_epoch"] == payload["epoch"] and summary["val"] == payload["val"]
    assert summary["epochs_run"] == 2 and summary["skipped_steps"] == 0 and summary["device"] == "cpu"
    assert summary["images_per_s"] > 0

    history = torch.load(out / "ckpt" / "last.pt", map_location="cpu", weights_only=True)["history"]
    assert [r["epoch"] for r in history] == [0, 1]
    assert all(math.isfinite(r["train/pseudo_loss"]) for r in history)
    # learnable: the labelled loss falls from the first epoch to the second, and the best
    # validation loss beats the untrained model's
    assert history[1]["train/loss"] < history[0]["train/loss"]
    from semipkd.distributed import Distributed
    from semipkd.engine import _validate

    _, val = datasets(data)
    untrained = _validate(tiny_model(), val, make_cfg(), torch.device("cpu"), 4, {"kld": 1.0, "cc": 1.0, "nss": 1.0},
                          Distributed(0, 1, torch.device("cpu")))
    assert payload["val"]["loss"] < untrained["loss"]
    # cosine schedule over the 2 x (3 labelled + 1 pseudo) steps: lr starts at cfg.lr and is
    # half-way down at the middle of the run
    assert history[0]["lr"] == pytest.approx(2e-3)
    assert history[1]["lr"] == pytest.approx(1e-3)

    # dvclive: one row per epoch, same numbers as the history
    metrics = json.loads((out / "live" / "metrics.json").read_text())
    assert metrics["step"] == 1
    assert metrics["val"]["cc"] == pytest.approx(history[1]["val/cc"])
    tsv = (out / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(tsv) == 3 and float(tsv[1].split("\t")[1]) == pytest.approx(history[0]["train/loss"])

    # the model file rebuilds the best epoch's network
    from semipkd.models import load_model

    model = load_model(out / "model.pt")
    assert_same_state(model.state_dict(), payload["model"])


def test_semi_pkd_steps_is_the_hand_count_of_both_arms():
    """11 labelled items, a pool of 9, batch 4, 3 epochs: each pass drops its incomplete batch, so
    the Semi-PKD arm takes 3 x (2 + 2) = 12 steps and the labelled-only arm 3 x 2 = 6."""
    assert semi_pkd_steps(3, 11, 9, 4) == 12
    assert semi_pkd_steps(3, 11, 0, 4) == 6
    assert StepBudget(pseudo_images=9).total(3, 11, 4) == 12
    assert StepBudget(pseudo_images=3).total(3, 11, 4) == 6  # a pool under one batch adds nothing
    assert StepBudget(steps=7).total(3, 11, 4) == 7
    for bad in ({}, {"steps": 7, "pseudo_images": 9}):
        with pytest.raises(ValueError, match="exactly one"):
            StepBudget(**bad)


def test_step_budget_gives_the_labelled_only_run_the_semi_pkd_arms_steps(data, reference, tmp_path, caplog):
    """The reference run (12 labelled, a pool of 4, batch 4, 2 epochs) takes 2 x (3 + 1) = 8 steps.
    The labelled-only run matched to it takes the same 8: epochs of 3 steps, the third cut at 2.
    Cosine and EMA follow the budget: lr at the start of epoch e is the cosine at step 3e of 8,
    the nominal epoch is 8 / 2 = 4 steps (a 1-epoch horizon: decay 1 - 1/4), and the EMA starts
    with the first epoch that begins at or after step 4 (epoch index 2)."""
    _, ref_summary = reference
    assert ref_summary["optimizer_steps"] == 8 and ref_summary["epochs"] == 2
    assert "optimizer_steps" not in json.loads((reference[0] / "live" / "metrics.json").read_text())
    cfg = make_cfg(ema_decay=None, ema_horizon_epochs=1.0)
    with caplog.at_level(logging.INFO, logger="semipkd.engine"):
        summary = run_fit(data, tmp_path, cfg, pseudo=None, budget=StepBudget(pseudo_images=4, name="match_semi_pkd"))
    assert summary["optimizer_steps"] == 8 and summary["epochs"] == 3
    history = torch.load(tmp_path / "ckpt" / "last.pt", map_location="cpu", weights_only=True)["history"]
    assert [r["epoch"] for r in history] == [0, 1, 2] and all("val/cc" in r for r in history)  # selection per epoch
    assert [r["lr"] for r in history] == pytest.approx([2e-3 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in (0, 3, 6)])
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["optimizer_steps"] == 8
    text = caplog.text
    assert "step budget (match_semi_pkd): 8 optimizer steps = 3 epochs of 3 steps (the last 2)" in text
    assert "EMA from epoch 2" in text and "EMA decay 0.750000" in text
    # a fixed number of steps: 5 = 3 + 2
    fixed = run_fit(data, tmp_path / "fixed", make_cfg(epochs=1), pseudo=None, budget=StepBudget(steps=5))
    assert fixed["optimizer_steps"] == 5 and fixed["epochs"] == 2
    # without a budget the labelled-only run is epoch-matched: 2 x 3 steps
    plain = run_fit(data, tmp_path / "plain", make_cfg(), pseudo=None)
    assert plain["optimizer_steps"] == 6 and plain["epochs"] == 2


def test_pool_draw_is_a_seeded_fixed_size_draw_per_epoch_that_covers_the_pool():
    """``GlobalBatchSampler(draw=k)``: the first k items of the epoch's seeded permutation, i.e. k
    distinct items (k // G steps), the same for the same (seed, epoch), another draw each epoch,
    the whole pool over enough epochs; the ranks of a DDP run split the same draw."""
    from semipkd.engine import _STREAM_PSEUDO, _derive_seed

    def draw(epoch, seed=3, k=4, **kw):
        key = _derive_seed(seed, epoch, _STREAM_PSEUDO)
        return list(GlobalBatchSampler(10, kw.pop("b", 2), rank=kw.pop("rank", 0), world_size=kw.pop("world", 1), seed_key=key,
                                       draw=k))

    epochs = [draw(e) for e in range(12)]
    assert all(len(d) == 4 and len(set(d)) == 4 for d in epochs)
    assert epochs == [draw(e) for e in range(12)]  # seeded: the same again
    assert len({tuple(d) for d in epochs}) == 12  # a new draw every epoch
    assert set().union(*epochs) == set(range(10))  # the whole pool, over 12 epochs here
    assert draw(0, seed=4) != epochs[0]
    assert len(draw(0, k=5)) == 4  # whole batches only: 5 // 2 = 2 steps
    assert draw(0, k=None) == draw(0, k=10)  # None: the whole pool, in the order it always had
    ranks = [draw(0, b=1, rank=r, world=2) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(epochs[0])
    with pytest.raises(ValueError, match="draw must be in"):
        draw(0, k=11)


class RecordingPseudo(ToyPseudo):
    """ToyPseudo that records the pool indices each epoch's pass reads (num_workers=0 only)."""

    def __init__(self, folder: Path, seed: int) -> None:
        super().__init__(folder, seed)
        self.seen: dict[int, list[int]] = {}
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.epoch = epoch

    def __getitem__(self, i):
        self.seen.setdefault(self.epoch, []).append(int(i))
        return super().__getitem__(i)


def test_fit_with_pool_draw_takes_the_drawn_images_each_epoch(data, tmp_path):
    """A pool of 8, batch 4, 12 labelled: with pool_draw 4 an epoch is 3 labelled + 1 pseudo steps
    (2 epochs: 8 steps; the whole pool: 3 + 2 per epoch, 10), and each epoch reads exactly the
    sampler's seeded draw of 4 distinct images. Too large a draw names the key and the pool."""
    from semipkd.engine import _STREAM_PSEUDO, _derive_seed

    write_prepared(tmp_path / "pool8", 8, seed=5)
    pool = RecordingPseudo(tmp_path / "pool8", seed=8)
    summary = run_fit(data, tmp_path / "draw", make_cfg(pool_draw=4), pseudo=pool)
    assert summary["optimizer_steps"] == 8
    for epoch in (0, 1):
        expect = list(GlobalBatchSampler(8, 4, rank=0, world_size=1, seed_key=_derive_seed(3, epoch, _STREAM_PSEUDO), draw=4))
        assert pool.seen[epoch] == expect and len(set(expect)) == 4
    assert pool.seen[0] != pool.seen[1]
    assert torch.load(tmp_path / "draw" / "model.pt", weights_only=True)["train_config"]["pool_draw"] == 4
    whole = run_fit(data, tmp_path / "whole", make_cfg(), pseudo=RecordingPseudo(tmp_path / "pool8", seed=8))
    assert whole["optimizer_steps"] == 10
    # the default keeps the model file's train_config as it was before the key
    assert "pool_draw" not in torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["train_config"]
    with pytest.raises(ConfigError, match="pool_draw: 9 images per epoch, but the pool holds 8"):
        run_fit(data, tmp_path / "big", make_cfg(pool_draw=9), pseudo=RecordingPseudo(tmp_path / "pool8", seed=8))
    with pytest.raises(ConfigError, match="pool_draw: 3 images per epoch are fewer than one batch of 4"):
        run_fit(data, tmp_path / "small", make_cfg(pool_draw=3), pseudo=RecordingPseudo(tmp_path / "pool8", seed=8))
    with pytest.raises(ConfigError, match="pool_draw: must be >= 1"):
        make_cfg(pool_draw=0)


def test_nss_aggregation_reaches_the_labelled_pass_and_is_recorded_only_when_set(data, reference, tmp_path):
    """``nss_aggregation: batch_mean`` (the paper's code): the labelled pass's loss is
    ``losses.labelled_loss(..., "batch_mean")``; the run records it in train_config, while a
    default run's train_config has no such key (its files keep their bytes)."""
    from semipkd.engine import LabelledPass
    from semipkd.losses import labelled_loss

    train, _ = datasets(data, augment=False)
    batch = torch.utils.data.default_collate([train[i] for i in range(4)])
    pred = torch.rand(4, *OUTPUT, dtype=torch.float64)
    w = {"kld": 1.0, "cc": 1.0, "nss": 1.0}
    for mode in ("per_image", "batch_mean"):
        got = LabelledPass(train, w, nss_aggregation=mode).loss(pred, batch["density"], batch, torch.device("cpu"))
        assert got.item() == labelled_loss(pred, batch["density"], batch["fixations"], w, mode).item()
    assert "nss_aggregation" not in torch.load(reference[0] / "model.pt", weights_only=True)["train_config"]
    run_fit(data, tmp_path, make_cfg(epochs=1, nss_aggregation="batch_mean"), pseudo=None)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["train_config"]["nss_aggregation"] == "batch_mean"
    with pytest.raises(ConfigError, match="nss_aggregation"):
        make_cfg(nss_aggregation="sum")


def test_resume_after_an_in_process_crash_equals_the_uninterrupted_run(data, reference, tmp_path):
    ref_out, _ = reference

    class CrashInEpoch2(PreparedDataset):
        def __getitem__(self, i):
            if self.epoch == 1:
                raise RuntimeError("simulated crash in epoch 2")
            return super().__getitem__(i)

    crashing = CrashInEpoch2(data / "train", hflip=True, photometric=True, seed=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_fit(data, tmp_path, make_cfg(), train=crashing)
    assert not (tmp_path / "model.pt").exists()
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["epoch"] == 0

    summary = run_fit(data, tmp_path, make_cfg())
    assert summary["epochs_run"] == 1
    assert_same_state(state_of(tmp_path / "model.pt"), state_of(ref_out / "model.pt"))
    for key in ("model", "ema", "best"):
        a, b = state_of(tmp_path / "ckpt" / "last.pt", key), state_of(ref_out / "ckpt" / "last.pt", key)
        assert_same_state(a["model"] if key == "best" else a, b["model"] if key == "best" else b)
    assert_same_live(tmp_path / "live", ref_out / "live")


def test_a_step_budget_run_resumed_in_its_cut_epoch_equals_the_uninterrupted_run(data, tmp_path):
    """The labelled-only run with the 8-step budget (epochs of 3, 3, 2; EMA from epoch 2) killed in
    its last, cut epoch resumes to the uninterrupted run's weights, EMA and dvclive files."""

    class CrashInEpoch3(PreparedDataset):
        def __getitem__(self, i):
            if self.epoch == 2:
                raise RuntimeError("simulated crash in epoch 3")
            return super().__getitem__(i)

    budget = StepBudget(pseudo_images=4, name="match_semi_pkd")
    run_fit(data, tmp_path / "ref", make_cfg(), pseudo=None, budget=budget)
    crashing = CrashInEpoch3(data / "train", hflip=True, photometric=True, seed=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_fit(data, tmp_path / "re", make_cfg(), train=crashing, pseudo=None, budget=budget)
    assert torch.load(tmp_path / "re" / "ckpt" / "last.pt", weights_only=True)["epoch"] == 1
    summary = run_fit(data, tmp_path / "re", make_cfg(), pseudo=None, budget=budget)
    assert summary["epochs_run"] == 1 and summary["optimizer_steps"] == 8
    assert_same_state(state_of(tmp_path / "re" / "model.pt"), state_of(tmp_path / "ref" / "model.pt"))
    assert_same_state(state_of(tmp_path / "re" / "ckpt" / "last.pt", "ema"),
                      state_of(tmp_path / "ref" / "ckpt" / "last.pt", "ema"))
    assert_same_live(tmp_path / "re" / "live", tmp_path / "ref" / "live")


def test_a_run_resumed_after_its_last_epoch_writes_the_same_bytes(data, reference, tmp_path):
    """Resuming a finished run (the best weights and metrics come from last.pt, not from memory)
    writes a model file byte-identical to the uninterrupted run's, so dvc.lock cannot tell them
    apart."""
    import shutil

    ref_out, _ = reference
    shutil.copytree(ref_out / "ckpt", tmp_path / "ckpt")
    summary = run_fit(data, tmp_path, make_cfg())
    assert summary["epochs_run"] == 0
    assert (tmp_path / "model.pt").read_bytes() == (ref_out / "model.pt").read_bytes()


_KILL_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_engine as t
from semipkd.data import PreparedDataset

root, out, marker = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

class SlowInEpoch2(PreparedDataset):
    def __getitem__(self, i):
        if self.epoch == 1:
            marker.touch()   # epoch 1's checkpoint is on disk by now
            time.sleep(0.5)
        return super().__getitem__(i)

train = SlowInEpoch2(root / "train", hflip=True, photometric=True, seed=7) if marker.name != "none" else None
t.run_fit(root, out, t.make_cfg(), train=train)
"""


def test_resume_after_sigkill_mid_epoch_equals_the_uninterrupted_run(data, reference, tmp_path):
    ref_out, _ = reference
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(tests=str(REPO / "tests")))
    marker = tmp_path / "in_epoch_2"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(data), str(tmp_path / "run"), str(marker)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"training exited early:\n{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("epoch 2 never started")
            time.sleep(0.05)
        time.sleep(0.3)  # well inside epoch 2 (each item now takes 0.5 s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "model.pt").exists()

    summary = run_fit(data, tmp_path / "run", make_cfg())  # the stage run again
    assert summary["epochs_run"] == 1
    assert_same_state(state_of(tmp_path / "run" / "model.pt"), state_of(ref_out / "model.pt"))
    assert_same_state(state_of(tmp_path / "run" / "ckpt" / "last.pt"), state_of(ref_out / "ckpt" / "last.pt"))
    assert_same_live(tmp_path / "run" / "live", ref_out / "live")


def test_finished_run_only_rewrites_its_outputs(data, reference, tmp_path):
    import shutil

    ref_out, _ = reference
    shutil.copytree(ref_out / "ckpt", tmp_path / "ckpt")
    summary = run_fit(data, tmp_path, make_cfg())
    assert summary["epochs_run"] == 0
    assert_same_state(state_of(tmp_path / "model.pt"), state_of(ref_out / "model.pt"))
    assert_same_live(tmp_path / "live", ref_out / "live")


def test_checkpoint_of_another_config_is_ignored_with_a_warning(data, reference, tmp_path, caplog):
    import shutil

    ref_out, _ = reference
    shutil.copytree(ref_out / "ckpt", tmp_path / "ckpt")
    with caplog.at_level(logging.WARNING, logger="semipkd.engine"):
        summary = run_fit(data, tmp_path, make_cfg(epochs=1, lr=1e-3))
    assert summary["epochs_run"] == 1
    assert "different run configuration" in caplog.text and "lr: 0.002 -> 0.001" in caplog.text


def test_corrupt_checkpoint_is_an_error_naming_it(data, tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match=r"ckpt/last\.pt.*cannot be read"):
        run_fit(data, tmp_path, make_cfg())


class _NaNAt(PreparedDataset):
    """Item ``bad`` has a NaN image: the loss of the batch holding it is NaN."""

    bad = 5

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if i == self.bad:
            item["image"] = torch.full_like(item["image"], float("nan"))
        return item


def test_nonfinite_loss_raises_naming_epoch_and_step(data, tmp_path):
    train = _NaNAt(data / "train", hflip=False, photometric=False, seed=7)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 .*labelled pass, step \d of 3"):
        run_fit(data, tmp_path, make_cfg(epochs=1), train=train)
    assert not (tmp_path / "model.pt").exists()


def test_nonfinite_loss_skip_skips_that_step_only(data, tmp_path):
    train = _NaNAt(data / "train", hflip=False, photometric=False, seed=7)
    summary = run_fit(data, tmp_path, make_cfg(epochs=2, nonfinite="skip"), train=train)
    assert summary["skipped_steps"] == 2  # the NaN item is in exactly one batch per epoch
    weights = state_of(tmp_path / "model.pt")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert all(math.isfinite(v) for v in summary["val"].values())


def test_same_seed_gives_identical_runs_with_0_or_2_loader_workers(data, reference, tmp_path):
    ref_out, _ = reference
    summary = run_fit(data, tmp_path, make_cfg(num_workers=2))
    assert summary["epochs_run"] == 2
    assert_same_state(state_of(tmp_path / "model.pt"), state_of(ref_out / "model.pt"))
    assert_same_live(tmp_path / "live", ref_out / "live")


def test_bad_arguments_are_refused(data, tmp_path):
    with pytest.raises(ConfigError, match="select_metric"):
        make_cfg(select_metric="auc")
    with pytest.raises(ValueError, match="fewer than one batch"):
        run_fit(data, tmp_path, make_cfg(batch_size=32))


def test_zero_epochs_writes_the_given_weights_with_their_val_scores(data, tmp_path):
    model = tiny_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    summary = run_fit(data, tmp_path, make_cfg(epochs=0), model=model)
    assert summary["epochs_run"] == 0 and summary["best_epoch"] is None
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert_same_state(payload["model"], initial)
    assert payload["val"] == summary["val"] and set(summary["val"]) == {
        "loss", "cc", "kld", "nss", "sim", "auc_judd", "paper_sum"}
    assert summary["val"]["paper_sum"] == pytest.approx(paper_sum(summary["val"]))


def test_runtime_device_and_distributed_environment(monkeypatch):
    from semipkd import runtime

    assert runtime.select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu' is not one of auto, cpu, cuda"):
        runtime.select_device("gpu")
    if not torch.cuda.is_available():
        assert runtime.select_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="'cuda' was requested but torch sees no CUDA GPU"):
            runtime.select_device("cuda")
    assert runtime.amp_dtype(torch.device("cpu"), True) is None  # no autocast on the CPU
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert runtime.dist_info() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert runtime.dist_info() == (2, 4, 0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(RuntimeError, match="RANK=4, WORLD_SIZE=4"):
        runtime.dist_info()
    # seeding: the same seed replays Python, NumPy and torch draws
    import random

    runtime.seed_everything(11)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    runtime.seed_everything(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_pseudo_loss_is_optional_where_there_is_no_pseudo_pass(data, tmp_path):
    """train_teacher never uses pseudo_loss: params may leave it out (finetune has it: the Semi-PKD
    student's pseudo passes); a run given pseudo-labels without its weights is refused."""
    import yaml

    from semipkd.config import ConfigError, parse_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert "pseudo_loss" not in raw["train_teacher"]
    params = parse_params(raw)
    assert params.train_teacher.pseudo_loss is None and params.finetune.pseudo_loss.sim == 1.0
    assert params.distill.pseudo_loss.sim == 1.0
    raw["distill"].pop("pseudo_loss")
    assert parse_params(raw).distill.pseudo_loss is None
    raw["distill"].pop("loss")  # a required key is still required
    with pytest.raises(ConfigError, match="missing key in section distill: loss"):
        parse_params(raw)

    with pytest.raises(ConfigError, match="pseudo_loss: weights are needed"):
        run_fit(data, tmp_path, make_cfg(pseudo_loss=None))
    assert not (tmp_path / "model.pt").exists()
