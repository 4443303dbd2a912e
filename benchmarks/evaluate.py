"""Speed of evaluation and prediction on this machine's CPU (or GPU when present).

Measures, in images per second:

* ``evaluate``: one whole benchmark evaluation as the ``evaluate`` stage runs it -- reading the
  samples from disk, the teacher, the two students and the center bias, both protocols, all
  eight metrics -- and, side by side, the inference alone (``predict_maps`` of the three models)
  and the ``model_resolution`` protocol alone, to show where the time goes;
* ``predict``: ``semipkd.predict`` on a folder of 100 JPEGs (decode, network, resize to the
  original size, PNG encode and write), at batch size 1 and 8.

Two size settings: ``default`` (params.yaml's embedded default: 200 px originals, 96x96 model)
and ``paper`` (MIT1003-like 768x1024 originals, 384x384 model, as the paper's fine-tuning
benchmarks), with fewer images for the latter. On the CPU each is run with torch's default
intra-op thread count and with one thread, side by side: the metrics are many small tensor
operations, and on a loaded machine (other processes on the cores) the default threads' spinning
can cost several times more than it gains. The 1-minute load average before each run is recorded.
Models have random weights (speed does not depend on them). Writes
``reports/benchmarks/evaluate.json``.

    .venv/bin/python benchmarks/evaluate.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd import evaluate as ev  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd import predict as pr  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.data import open_benchmark  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.data.synthetic import generate  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.inference import TorchRunner  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.io import atomic_write_json  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.models import build_model  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.runtime import select_device  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)

TEACHER, STUDENT = "tf_efficientnet_lite2", "mobilenet_v2"  # params.yaml's backbones
SETTINGS = {
    # name: (benchmark images, original long side, model in/out size, predict image size)
    "default": (50, 200, (96, 96), (240, 320)),
    "paper": (8, 1024, (384, 384), (480, 640)),
}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_evaluate(tmp: Path, n: int, long_side: int, size: tuple[int, int], device) -> dict:
    generate(tmp / "data", seed=0, salicon=(0, 0), benchmark={"mit1003": n}, unlabeled=0, benchmark_long_side=long_side)
    samples = open_benchmark("mit1003", tmp / "data" / "mit1003", "all")
    assert len(samples) == n, len(samples)
    torch.manual_seed(0)
    models = {
        "teacher": build_model(TEACHER, output_size=size, pretrained=False),
        "student": build_model(STUDENT, output_size=size, pretrained=False),
        "student_no_pseudo": build_model(STUDENT, output_size=size, pretrained=False),
    }
    predictors = {**models, "center_bias": "center_bias"}
    kw = dict(input_size=size, output_size=size, device=device, seed=0, batch_size=16, progress=False)
    ev.evaluate_benchmark(predictors, [samples[i] for i in range(2)], **kw)  # warm-up (allocators, kernels)
    _, t_full = _timed(lambda: ev.evaluate_benchmark(predictors, samples, **kw))
    _, t_model_res = _timed(lambda: ev.evaluate_benchmark(predictors, samples, protocols=("model_resolution",), **kw))
    loaded = [samples[i] for i in range(n)]  # decoded once, so the next line times the networks only
    _, t_predict = _timed(lambda: [ev.predict_maps(m, loaded, size, device, 16, progress=False) for m in models.values()])
    sizes = sorted({tuple(s.density.shape) for s in loaded})
    return {
        "images": n,
        "original_sizes": [list(s) for s in sizes[:5]],
        "model_size": list(size),
        "predictors": list(predictors),
        "full_images_per_s": n / t_full,
        "model_resolution_only_images_per_s": n / t_model_res,
        "inference_only_images_per_s": n / t_predict,
        "full_s": t_full,
        "inference_share_of_full": t_predict / t_full,
    }


def bench_predict(tmp: Path, n: int, img_size: tuple[int, int], model_size: tuple[int, int], device) -> dict:
    rng = np.random.default_rng(0)
    folder = tmp / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = cv2.GaussianBlur((rng.random((*img_size, 3)) * 255).astype(np.uint8), (0, 0), 3)
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), img)
    torch.manual_seed(0)
    runner = TorchRunner(build_model(STUDENT, output_size=model_size, pretrained=False), device)  # eager
    paths = pr.list_images(folder)
    out = {}
    for bs in (1, 8):
        outs = pr.output_paths(paths, folder, tmp / f"maps_bs{bs}")
        pr.predict_paths(runner, paths[:2], outs[:2], input_size=model_size, batch_size=bs, progress=False)
        # Defaults bind this iteration's outs and bs (_timed calls the lambda at once anyway).
        _, t = _timed(lambda outs=outs, bs=bs: pr.predict_paths(runner, paths, outs, input_size=model_size, batch_size=bs,
                                                                progress=False))
        out[f"batch_{bs}_images_per_s"] = n / t
    out.update({"images": n, "image_size": list(img_size), "model_size": list(model_size)})
    out["batch_8_vs_1"] = out["batch_8_images_per_s"] / out["batch_1_images_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="default setting only")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--output", type=Path, default=ROOT / "reports" / "benchmarks" / "evaluate.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = select_device(args.device)
    results = {
        "machine": {
            "device": str(device),
            "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "python": platform.python_version(),
            "torch": torch.__version__,
        }
    }
    default_threads = torch.get_num_threads()
    thread_counts = [default_threads] + ([1] if device.type == "cpu" and default_threads > 1 else [])
    for name, (n, long_side, size, photo) in SETTINGS.items():
        if args.quick and name != "default":
            continue
        results[name] = {}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as tmp:
                e = bench_evaluate(Path(tmp), n, long_side, size, device)
                p = bench_predict(Path(tmp), 100, photo, size, device)
            results[name][f"threads_{threads}"] = {"evaluate": e, "predict": p, "load_average_1min": load}
            tag = f"[{name}, {threads} thread{'s' if threads > 1 else ''}, load {load:.1f}]"
            print(
                f"{tag} evaluate {e['images']} images ({len(e['predictors'])} predictors, 2 protocols, 8 metrics): "
                f"{e['full_images_per_s']:.2f} img/s; model_resolution only {e['model_resolution_only_images_per_s']:.2f} img/s "
                f"({e['model_resolution_only_images_per_s'] / e['full_images_per_s']:.2f}x); inference alone "
                f"{e['inference_only_images_per_s']:.2f} img/s ({e['inference_share_of_full']:.0%} of the full time)"
            )
            print(
                f"{tag} predict 100 images {p['image_size']} -> model {p['model_size']}: batch 1 "
                f"{p['batch_1_images_per_s']:.2f} img/s, batch 8 {p['batch_8_images_per_s']:.2f} img/s "
                f"({p['batch_8_vs_1']:.2f}x)"
            )
        if len(thread_counts) == 2:
            a, b = (results[name][f"threads_{t}"] for t in thread_counts)
            ratio = b["evaluate"]["full_images_per_s"] / a["evaluate"]["full_images_per_s"]
            results[name]["evaluate_1_thread_vs_default"] = ratio
            print(f"[{name}] evaluate with 1 thread vs {default_threads}: {ratio:.2f}x")
    torch.set_num_threads(default_threads)
    atomic_write_json(args.output, results)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
