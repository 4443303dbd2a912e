"""Training speed: student and teacher steps against the paper's anchors, and a distillation
epoch with cached pseudo-labels against running the teacher on the fly.

A. Training step, batch 4, 3x384x384 in, 480x640 out, on this CPU: forward, labelled loss,
   backward, AdamW step and EMA update, exactly the engine's step (``semipkd.engine``). Anchors,
   measured with the paper's code on a 2-core machine of this kind: eeea_c2 (student) about 1.9
   images/s, efficientnet_b4 (teacher) about 0.65 images/s; target: at least 1.0x each. The
   two models' steps are interleaved, so both see the same load from other processes. Each is
   run in NCHW and in channels_last (NHWC, params ``channels_last``; oneDNN's depthwise
   convolutions are much faster in NHWC on the CPU too); the ratio uses the faster. The step
   with the EMA self-distillation mix (from the second epoch on: one more forward of the EMA
   model) is reported too.
B. One distillation pass over an unlabeled pool (student eeea_c2, teacher efficientnet_b4):
   cached maps (``PseudoDataset`` over a cache written by ``write_pseudo_labels``) against the
   paper's way, the teacher run on every batch. Target: cached at least 2x faster. The one-off
   cost of writing the cache is reported with the number of epochs after which it has paid
   for itself.
C. On CUDA (or with ``--engine``): the real engine (``fit``, one epoch over a synthetic prepared
   set) with AMP and channels_last: images/s and the share of step time spent waiting for data
   (target under 10%).

Weights are random (no ImageNet files needed). Random-init networks produce denormal numbers
that trained ones do not, and denormal arithmetic is many times slower on x86, so flush-to-zero
is on (``torch.set_flush_denormal``), as in benchmarks/models.py. The load average around the
run is recorded: on a shared 2-core machine other processes' load moves every figure.

Usage: python benchmarks/train.py [--steps N] [--warmup N] [--pool N] [--threads T] [--quick]
                                  [--engine] [--output PATH]
Writes reports/benchmarks/train.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semipkd import losses
from semipkd.engine import mix_with_ema
from semipkd.io import atomic_write_json
from semipkd.models import build_model
from semipkd.runtime import autocast

log = logging.getLogger("benchmarks.train")

STUDENT, TEACHER = "eeea_c2", "efficientnet_b4"
#: Paper code, this CPU, batch 4, 384x384 in, 480x640 out, training images/s.
ANCHORS_IMG_S = {STUDENT: 1.9, TEACHER: 0.65}
TARGET_RATIO = 1.0
TARGET_CACHED_SPEEDUP = 2.0
TARGET_DATA_WAIT = 0.10
BATCH = 4
INPUT = (384, 384)
OUTPUT = (480, 640)
WEIGHTS = {"kld": 1.0, "cc": 1.0, "nss": 1.0}
PSEUDO_WEIGHTS = {"kld": 1.0, "cc": 1.0, "sim": 1.0}


def toy_batch(device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (B, 3, 384, 384), a Gaussian density (B, 480, 640) and 20 fixations per image."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, 3, *INPUT, generator=g)
    yy, xx = torch.meshgrid(torch.arange(OUTPUT[0]), torch.arange(OUTPUT[1]), indexing="ij")
    density = torch.exp(-((yy - 240.0) ** 2 + (xx - 320.0) ** 2) / (2 * 40.0**2)).expand(BATCH, *OUTPUT).clone()
    fix = torch.zeros(BATCH, *OUTPUT)
    idx = torch.randint(0, OUTPUT[0] * OUTPUT[1], (BATCH, 20), generator=g)
    fix.view(BATCH, -1).scatter_(1, idx, 1.0)
    return x.to(device), density.to(device), fix.to(device)


class Trainer:
    """One model with its optimizer and EMA; ``step`` is the engine's training step."""

    def __init__(self, name: str, device: torch.device, amp: bool = False, channels_last: bool = False) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        torch.manual_seed(0)
        self.name, self.device, self.amp = name, device, amp
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build_model(name, output_size=OUTPUT).to(device, memory_format=self.memory_format).train()
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
        self.ema.module.eval()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=1e-4)

    def step(self, x: torch.Tensor, target: torch.Tensor, fix: torch.Tensor | None, *, ema_mix: bool) -> float:
        x = x.contiguous(memory_format=self.memory_format)
        if ema_mix:
            with torch.no_grad(), autocast(self.device, self.amp):
                e = self.ema.module(x)
            target = mix_with_ema(target, e.float(), 0.5)
        with autocast(self.device, self.amp):
            pred = self.model(x)
        pred = pred.float()
        if fix is None:
            loss = losses.pseudo_loss(pred, target, PSEUDO_WEIGHTS)
        else:
            loss = losses.labelled_loss(pred, target, fix, WEIGHTS)
        value = float(loss.detach())  # the engine's non-finite check syncs here too
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update_parameters(self.model)
        return value


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_steps(device: torch.device, steps: int, warmup: int, ema: bool) -> dict:
    """A: interleaved student and teacher steps, NCHW and channels_last; seconds per step.

    ``images_per_s`` (compared with the anchor) is the faster memory format's, the one to set in
    params (``channels_last``); both are reported.
    """
    x, density, fix = toy_batch(device)
    variants = [("nchw", False), ("channels_last", False)] + ([("channels_last", True)] if ema else [])
    trainers = {(name, fmt): Trainer(name, device, channels_last=fmt == "channels_last")
                 for name in (STUDENT, TEACHER) for fmt in ("nchw", "channels_last")}
    times: dict[tuple[str, str, bool], list[float]] = {(n, f, e): [] for n in (STUDENT, TEACHER) for f, e in variants}
    for i in range(warmup + steps):
        for name in (STUDENT, TEACHER):
            for fmt, ema_mix in variants:
                _sync(device)
                t0 = time.perf_counter()
                trainers[(name, fmt)].step(x, density, fix, ema_mix=ema_mix)
                _sync(device)
                if i >= warmup:
                    times[(name, fmt, ema_mix)].append(time.perf_counter() - t0)
    out = {}
    for name in (STUDENT, TEACHER):
        row: dict = {"anchor_images_per_s": ANCHORS_IMG_S[name]}
        for fmt in ("nchw", "channels_last"):
            t = times[(name, fmt, False)]
            row[fmt] = {"step_s_median": statistics.median(t), "step_s_min": min(t),
                        "images_per_s": BATCH / statistics.median(t), "images_per_s_best": BATCH / min(t)}
        best_fmt = max(("nchw", "channels_last"), key=lambda f: row[f]["images_per_s"])
        row["best_format"] = best_fmt
        row["images_per_s"] = row[best_fmt]["images_per_s"]
        row["ratio_to_anchor"] = row["images_per_s"] / ANCHORS_IMG_S[name]
        row["meets_target"] = row["ratio_to_anchor"] >= TARGET_RATIO
        if ema:
            row["channels_last"]["images_per_s_with_ema_mix"] = BATCH / statistics.median(times[(name, "channels_last", True)])
        out[name] = row
    return out


def write_pool(folder: Path, n: int) -> Path:
    """A prepared unlabeled pool (docs/architecture.md format) of ``n`` random 384x384 images."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", rng.integers(0, 256, size=(n, *INPUT, 3), dtype=np.uint8))
    meta = {"version": 1, "name": "unlabeled", "split": "all", "count": n, "input_size": list(INPUT),
            "output_size": None, "names": [f"u{i:05d}" for i in range(n)], "original_sizes": [list(INPUT)] * n}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def bench_distill_pass(device: torch.device, pool_size: int, store_size: tuple[int, int], work: Path) -> dict:
    """B: one pseudo-label pass of the student, cached maps vs the teacher on every batch."""
    from torch.utils.data import DataLoader

    from semipkd.data import PreparedImages
    from semipkd.pseudolabel import PseudoDataset, PseudoLabelCache, write_pseudo_labels

    pool = write_pool(work / "pool", pool_size)
    torch.manual_seed(1)
    # channels_last for both networks: the faster format on this CPU and on GPUs (part A)
    teacher = build_model(TEACHER, output_size=OUTPUT).to(device, memory_format=torch.channels_last).eval()
    student = Trainer(STUDENT, device, channels_last=True)

    t0 = time.perf_counter()
    summary = write_pseudo_labels(teacher, PreparedImages(pool), work / "pseudo", teacher_sha256="0" * 64,
                                  store_size=store_size, batch_size=BATCH, shard_size=max(BATCH, pool_size // 2),
                                  device=device)
    label_s = time.perf_counter() - t0
    cache = PseudoLabelCache(work / "pseudo", teacher_sha256="0" * 64)

    def cached_pass() -> float:
        ds = PseudoDataset(pool, cache, OUTPUT, hflip=True, photometric=True, seed=0)
        t = time.perf_counter()
        for b in DataLoader(ds, batch_size=BATCH, drop_last=True):
            student.step(b["image"].to(device), b["target"].to(device), None, ema_mix=False)
        _sync(device)
        return time.perf_counter() - t

    def on_the_fly_pass() -> float:
        ds = PreparedImages(pool, hflip=True, photometric=True, seed=0)
        t = time.perf_counter()
        for b in DataLoader(ds, batch_size=BATCH, drop_last=True):
            x = b["image"].to(device)
            with torch.inference_mode(), autocast(device, False):
                target = teacher(x.contiguous(memory_format=torch.channels_last)).float()
            student.step(x, target.clone(), None, ema_mix=False)
        _sync(device)
        return time.perf_counter() - t

    # interleaved, a warm-up pass of each first
    cached_pass(), on_the_fly_pass()
    cached_s, fly_s = cached_pass(), on_the_fly_pass()
    n = (pool_size // BATCH) * BATCH
    speedup = fly_s / cached_s
    return {
        "pool_images": n,
        "store_size": list(store_size),
        "bytes_per_image": summary["bytes_per_image"],
        "write_cache_s": label_s,
        "cached_epoch_s": cached_s,
        "on_the_fly_epoch_s": fly_s,
        "cached_images_per_s": n / cached_s,
        "on_the_fly_images_per_s": n / fly_s,
        "speedup": speedup,
        "meets_target": speedup >= TARGET_CACHED_SPEEDUP,
        # epochs after which writing the cache once has paid for itself
        "break_even_epochs": label_s / (fly_s - cached_s) if fly_s > cached_s else math.inf,
    }


def bench_engine(device: torch.device, images: int, work: Path, names: list[str]) -> dict:
    """C: ``fit`` for one epoch (labelled pass + validation) with AMP and channels_last."""
    from semipkd.config import LossWeights, PseudoLossWeights, TrainConfig
    from semipkd.data import PreparedDataset
    from semipkd.engine import fit

    root = work / "engine"
    for split, n in (("train", images), ("val", BATCH)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(1)
        np.save(folder / "images.npy", rng.integers(0, 256, size=(n, *INPUT, 3), dtype=np.uint8))
        dens = np.zeros((n, *OUTPUT), np.uint8)
        dens[:, 200:280, 280:360] = 255
        np.save(folder / "density.npy", dens)
        fix = np.zeros((n, *OUTPUT), np.uint8)
        fix[:, 240, 320] = 1
        np.save(folder / "fixations.npy", np.packbits(fix, axis=-1))
        meta = {"version": 1, "name": "bench", "split": split, "count": n, "input_size": list(INPUT),
                "output_size": list(OUTPUT), "names": [f"b{i}" for i in range(n)], "original_sizes": [list(INPUT)] * n}
        (folder / "meta.json").write_text(json.dumps(meta))
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-4, weight_decay=1e-4, ema_decay=0.999, ema_mix=0.5,
                      ema_start_epoch=1, grad_clip=0.0, amp=True, channels_last=True,
                      loss=LossWeights(1.0, 1.0, 1.0), pseudo_loss=PseudoLossWeights(1.0, 1.0, 1.0),
                      nonfinite="raise", num_workers=min(8, os.cpu_count() or 1), holdout=0.1, select_on="holdout")
    out = {}
    for name in names:
        torch.manual_seed(0)
        summary = fit(build_model(name, output_size=OUTPUT),
                      labelled=PreparedDataset(root / "train", hflip=True, photometric=True, seed=0),
                      val=PreparedDataset(root / "val", hflip=False, photometric=False, seed=0),
                      cfg=cfg, out_path=work / f"{name}.pt", ckpt_dir=work / f"ckpt_{name}", live_dir=work / f"live_{name}",
                      device=device, seed=0)
        out[name] = {
            "images_per_s": summary["images_per_s"],
            "data_wait_share": summary["data_wait_share"],
            "meets_data_wait_target": summary["data_wait_share"] < TARGET_DATA_WAIT,
            "num_workers": cfg.num_workers,
            "amp": True,
            "channels_last": True,
        }
        if device.type == "cuda":
            out[name]["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.reset_peak_memory_stats(device)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (A)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (A)")
    parser.add_argument("--pool", type=int, default=32, help="unlabeled images in the distillation pass (B)")
    parser.add_argument("--store-size", type=int, nargs=2, default=(120, 160), help="pseudo-label store size (B)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--quick", action="store_true", help="2 timed steps, 1 warm-up, a pool of 8, no EMA variant")
    parser.add_argument("--engine", action="store_true", help="run C on the CPU too (always on CUDA)")
    parser.add_argument("--engine-images", type=int, default=64, help="training images of the engine epoch (C)")
    parser.add_argument("--output", default="reports/benchmarks/train.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.quick:
        args.steps, args.warmup, args.pool = 2, 1, 8

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    result: dict = {
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({platform.processor() or platform.machine()})"),
        "threads": args.threads,
        "torch": torch.__version__,
        "batch": BATCH,
        "input_size": list(INPUT),
        "output_size": list(OUTPUT),
        "steps": args.steps,
        "warmup": args.warmup,
        "quick": args.quick,
    }
    log.info("A: training steps, %s vs %s, %d timed steps each", STUDENT, TEACHER, args.steps)
    result["steps_cpu" if device.type == "cpu" else "steps_cuda_fp32"] = bench_steps(device, args.steps, args.warmup,
                                                                                     ema=not args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        log.info("B: distillation pass over %d images, cached vs on the fly", args.pool)
        result["distill_pass"] = bench_distill_pass(device, args.pool, tuple(args.store_size), Path(tmp))
        if device.type == "cuda" or args.engine:
            log.info("C: engine epoch with AMP and channels_last")
            result["engine"] = bench_engine(device, args.engine_images, Path(tmp), [STUDENT, TEACHER])
    result["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    result["seconds"] = time.perf_counter() - t_start
    atomic_write_json(args.output, result)

    print(f"\ntraining step, batch {BATCH}, {INPUT[0]}x{INPUT[1]} -> {OUTPUT[0]}x{OUTPUT[1]}, {result['device']}, "
          f"{args.threads} threads")
    steps = result.get("steps_cpu") or result.get("steps_cuda_fp32")
    print(f"{'model':18s} {'NCHW img/s':>11s} {'NHWC img/s':>11s} {'anchor':>8s} {'ratio':>7s} {'NHWC w/ EMA mix':>16s}")
    for name, r in steps.items():
        ema = r["channels_last"].get("images_per_s_with_ema_mix")
        print(f"{name:18s} {r['nchw']['images_per_s']:11.2f} {r['channels_last']['images_per_s']:11.2f} "
              f"{r['anchor_images_per_s']:8.2f} {r['ratio_to_anchor']:6.2f}x {'-' if ema is None else f'{ema:.2f}':>16s}")
    d = result["distill_pass"]
    print(f"\ndistillation pass over {d['pool_images']} images: cached {d['cached_epoch_s']:.1f} s, teacher on the fly "
          f"{d['on_the_fly_epoch_s']:.1f} s -> {d['speedup']:.2f}x (target {TARGET_CACHED_SPEEDUP}x); writing the cache "
          f"{d['write_cache_s']:.1f} s, paid back after {d['break_even_epochs']:.2f} epochs; "
          f"{d['bytes_per_image']:.0f} bytes/image")
    for name, r in result.get("engine", {}).items():
        print(f"engine epoch {name}: {r['images_per_s']:.2f} img/s, data wait {100 * r['data_wait_share']:.1f}% "
              f"(target < {100 * TARGET_DATA_WAIT:.0f}%)")
    print(f"load average before/after: {load_before[0]:.2f} / {result['load_average']['after'][0]:.2f}; wrote {args.output}")


if __name__ == "__main__":
    main()
