"""Accuracy cost of ``--precision int8``: int8 against fp32, paired per image, on real val splits.

For each ``--model NAME=CHECKPOINT``: the fp32 graph (:func:`semipkd.export.export_onnx`,
checked to 1e-4 against PyTorch) and its int8 graph (:func:`semipkd.precision.quantize_int8`,
calibrated on a seeded sample of ``--calibration`` images, the way ``predict --precision int8``
makes it) both score each ``--benchmark NAME=ROOT`` val split through
:func:`semipkd.evaluate.evaluate_benchmark` (the ``benchmark`` protocol: maps resized to each
image's original size, the project's metrics). Per metric (CC, KLD, NSS, SIM, AUC-Judd) the
per-image difference int8 - fp32 is summarised by its mean and a 95% t confidence interval
(scipy.stats), with the fp32 and int8 means beside it; the map differences themselves (max and
99th percentile of |int8 - fp32| per image, maps in [0, 1] at the model's output size) bound
the tests. Target: |mean delta CC| <= 0.005 and mean delta KLD <= 0.01.

The calibration folder must not lie inside a scored benchmark's folder (calibrating on the
images that are then scored would flatter int8); that is an error.

Usage::

    python benchmarks/precision_accuracy.py --model osie_real=/tmp/prec-osie/models/student_no_pseudo.pt \\
        --model default=/tmp/prec-default/models/student.pt \\
        --calibration ../shared/datasets/scene-unlabeled \\
        --benchmark osie=../shared/datasets/osie --benchmark eyecrowd=../shared/datasets/eyecrowd

Writes reports/benchmarks/precision_accuracy.json (atomically).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semipkd.data import open_benchmark  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.evaluate import evaluate_benchmark  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.export import export_onnx  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.inference import OnnxRunner, model_input_size  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.io import atomic_write_json, sha256_file  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.models import load_model  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.precision import (  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_CALIBRATION_SEED,
    QUANT_FORMAT,
    CalibrationError,
    calibration_files,
    calibration_inputs,
    cpu_flags,
    fp32_nodes,
    quantize_int8,
)

log = logging.getLogger("benchmarks.precision_accuracy")

METRICS = ("cc", "kld", "nss", "sim", "auc_judd")
#: Target of the issue: |mean delta CC| <= 0.005 and mean delta KLD <= 0.01 (int8 - fp32).
TARGET = {"abs_mean_delta_cc": 0.005, "mean_delta_kld": 0.01}


class GraphModel(nn.Module):
    """An onnxruntime graph as an ``nn.Module`` for :func:`evaluate_benchmark`; keeps its maps.

    ``forward``: float32 (B, 3, H, W) in [0, 1] -> float32 (B, H_out, W_out) in [0, 1]. It has
    no ``output_size``, so evaluate resizes its maps the benchmark way, alike for both graphs.
    """

    def __init__(self, runner: OnnxRunner) -> None:
        super().__init__()
        self.runner = runner
        self.maps: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.runner(x)
        self.maps.append(out.clone())
        return out


def paired(delta: np.ndarray) -> dict:
    """Mean of per-image differences with its 95% t interval (scipy.stats)."""
    n = int(delta.size)
    mean = float(delta.mean())
    sem = float(stats.sem(delta)) if n > 1 else float("nan")
    lo, hi = stats.t.interval(0.95, n - 1, loc=mean, scale=sem) if n > 1 and sem > 0 else (mean, mean)
    return {"mean": mean, "ci95": [float(lo), float(hi)], "sd": float(delta.std(ddof=1)) if n > 1 else 0.0, "n": n}


def score_model(path: Path, benchmarks: dict[str, Path], calibration: Path, count: int, seed: int,
                threads: int, workdir: Path) -> dict:
    model = load_model(path, map_location="cpu").eval()
    size = model_input_size(model)
    files = calibration_files(calibration, count, seed)
    fp32 = workdir / f"{path.stem}.fp32.onnx"
    int8 = workdir / f"{path.stem}.int8.onnx"
    export_onnx(model, fp32, size)  # checked to 1e-4 against PyTorch
    import onnx

    t0 = time.perf_counter()
    quantize_int8(fp32, int8, calibration_inputs(files, size))
    quant_s = time.perf_counter() - t0
    row = {
        "checkpoint": str(path),
        "checkpoint_sha256": sha256_file(path),
        "backbone": (getattr(model, "config", None) or {}).get("backbone"),
        "input_size": list(size),
        "calibration": {"folder": str(calibration), "images": len(files), "seed": seed,
                        "first_files": [f.name for f in files[:5]]},
        "kept_fp32_convs": fp32_nodes(onnx.load(str(fp32))),
        "quantize_seconds": round(quant_s, 1),
        "benchmarks": {},
    }
    for name, root in benchmarks.items():
        samples = open_benchmark(name, root, "val")
        broot = Path(samples.root).resolve()
        if any(f.resolve().is_relative_to(broot) for f in files):
            raise CalibrationError(f"--calibration {calibration}: lies inside {name}'s folder {root}; calibrate on "
                                   "images that are not scored (e.g. the unlabeled scene pool)")
        g32 = GraphModel(OnnxRunner(fp32, threads=threads))
        g8 = GraphModel(OnnxRunner(int8, threads=threads))
        t0 = time.perf_counter()
        res = evaluate_benchmark({"fp32": g32, "int8": g8}, samples, input_size=size,
                                 output_size=tuple(model.output_size), device="cpu", seed=0,
                                 protocols=("benchmark",), batch_size=8, progress=False)
        m32, m8 = torch.cat(g32.maps).double(), torch.cat(g8.maps).double()
        per_image_max = (m8 - m32).abs().flatten(1).amax(1).numpy()
        per_image_p99 = torch.quantile((m8 - m32).abs().flatten(1).float(), 0.99, dim=1).numpy()
        out = {"split": "val", "images": len(res.names), "seconds": round(time.perf_counter() - t0, 1), "metrics": {},
               "map_abs_diff": {"max": float(per_image_max.max()), "median_of_per_image_max": float(np.median(per_image_max)),
                                "p99_of_per_image_p99": float(np.percentile(per_image_p99, 99)),
                                "mean": float((m8 - m32).abs().mean())}}
        for metric in METRICS:
            a = res.per_image["fp32"]["benchmark"][metric]
            b = res.per_image["int8"]["benchmark"][metric]
            out["metrics"][metric] = {"fp32_mean": float(a.mean()), "int8_mean": float(b.mean()),
                                      "delta_int8_minus_fp32": paired(b - a)}
        d_cc = out["metrics"]["cc"]["delta_int8_minus_fp32"]["mean"]
        d_kld = out["metrics"]["kld"]["delta_int8_minus_fp32"]["mean"]
        out["meets_target"] = bool(abs(d_cc) <= TARGET["abs_mean_delta_cc"] and d_kld <= TARGET["mean_delta_kld"])
        row["benchmarks"][name] = out
        log.info("%s on %s: dCC %+.4f, dKLD %+.4f, max |map diff| %.3g", path, name, d_cc, d_kld, out["map_abs_diff"]["max"])
    return row


def _pairs(values: list[str], what: str) -> dict[str, Path]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise SystemExit(f"{what}: expected NAME=PATH, got {v!r}")
        out[key] = Path(val)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (repeatable)")
    ap.add_argument("--benchmark", action="append", required=True,
                    help="NAME=ROOT of a benchmark scored on its val split (repeatable)")
    ap.add_argument("--calibration", type=Path, required=True, help="folder of real images to calibrate on (not a scored one)")
    ap.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES)
    ap.add_argument("--seed", type=int, default=DEFAULT_CALIBRATION_SEED, help="calibration sample seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path, default=Path("reports/benchmarks/precision_accuracy.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    models = _pairs(args.model, "--model")
    benchmarks = _pairs(args.benchmark, "--benchmark")
    started = time.time()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="semipkd-precision-") as tmp:
        for name, path in models.items():
            rows[name] = score_model(path, benchmarks, args.calibration, args.calibration_images, args.seed,
                                     args.threads, Path(tmp))
    import onnxruntime

    result = {
        "setting": {
            "compared": "int8 (onnxruntime static, per-channel weights, uint8 activations, min-max calibration, "
                        f"{QUANT_FORMAT}) minus fp32 (onnxruntime), paired per image",
            "protocol": "benchmark (maps at each image's original size)",
            "metrics": list(METRICS),
            "ci": "95% t interval of the mean per-image difference (scipy.stats.t, sem)",
            "target": TARGET,
            "calibration_images": args.calibration_images,
            "calibration_seed": args.seed,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_int8_flags": sorted(f for f in cpu_flags() if "vnni" in f or "amx" in f or f.startswith("avx512")),
            "wall_seconds": round(time.time() - started, 1),
            "command": "python benchmarks/precision_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        },
        "models": rows,
    }
    for name, r in rows.items():
        for b, o in r["benchmarks"].items():
            cells = ", ".join(f"{m} {o['metrics'][m]['delta_int8_minus_fp32']['mean']:+.4f} "
                              f"[{o['metrics'][m]['delta_int8_minus_fp32']['ci95'][0]:+.4f}, "
                              f"{o['metrics'][m]['delta_int8_minus_fp32']['ci95'][1]:+.4f}]" for m in METRICS)
            print(f"{name:<12}{b:<10}n={o['images']:<4} {cells}  target {'met' if o['meets_target'] else 'MISSED'}; "
                  f"max |map diff| {o['map_abs_diff']['max']:.3g}")
    atomic_write_json(args.output, result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
