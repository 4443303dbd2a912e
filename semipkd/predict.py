"""Saliency maps for your own images: ``python -m semipkd.predict``.

::

    python -m semipkd.predict --model models/student.pt --input photos/ --output maps/

writes one 8-bit grayscale PNG per image, at the image's ORIGINAL size, the form benchmark
submissions take (MIT/Tuebingen, CAT2000). A folder is searched recursively and its layout is
kept under ``--output`` (``photos/a/b.jpg`` -> ``maps/a/b.png``). Images are decoded on a
background thread while the previous batch runs through the network (GPU when present).

Map to PNG: the model's (H_out, W_out) map in [0, 1] is resized to the original size the
benchmark way (:func:`semipkd.metrics.resize_to`), divided by its maximum so the brightest pixel
is 255 (uses the whole 8-bit range; every saliency metric is invariant to this scaling, or
normalises anyway), and rounded to uint8. An all-zero map stays all zero.

A file that cannot be decoded is reported by name and, per ``--on-error``, skipped (``skip``) or
ends the run with exit status 2 (``raise``, the default). Images are read by
:func:`semipkd.inference.read_image`, the reader ``evaluate`` uses (EXIF orientation applied).

Backends (``--backend``): ``torch`` runs the PyTorch model (on the CPU the fused, frozen,
channels-last graph of :func:`semipkd.models.optimize_for_inference`); ``onnxruntime`` runs the
graph :func:`semipkd.export.export_onnx` writes (to ``--onnx PATH``, or once per checkpoint into
``<cache>/onnx/``), on onnxruntime's CPU provider, or its CUDA provider when the device is CUDA
and onnxruntime has one. Both give the same maps to 1e-4. ``auto`` (the default) uses whichever
was faster in a measurement on this machine: :func:`measure_backends` times a few interleaved
batches of each at the model's input size and batch size, and the result is cached in
``<cache>/backends.json`` under the checkpoint's sha256, input size, batch size, device and
thread count, so it is measured once per setting. ``--calibrate`` measures again (and prints
the times); ``python -m semipkd.predict --calibrate --model M`` does only that. ``<cache>`` is
``--cache-dir``, default ``$XDG_CACHE_HOME/semipkd`` (``~/.cache/semipkd``).

Reduced precision (``--precision int8 --calibration DIR``), opt-in: an onnxruntime int8 graph
quantised on a seeded sample of real images from ``DIR`` (:mod:`semipkd.precision`), cached in
``<cache>/int8/`` per checkpoint and setting. It changes the maps (by the amounts in the README's
"Reduced precision" table), so ``auto`` never picks it and ``--calibrate`` does not measure it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import semipkd
from semipkd import metrics
from semipkd.export import DEFAULT_OPSET, export_onnx
from semipkd.inference import (
    BACKENDS,
    IMAGE_SUFFIXES,
    ImageReadError,
    OnnxRunner,
    TorchRunner,
    batches,
    images_to_tensor,
    list_images,
    model_input_size,
    read_image,
)
from semipkd.io import atomic_write_bytes, atomic_write_json, sha256_file
from semipkd.models import load_model
from semipkd.names import ON_ERROR
from semipkd.precision import (
    DEFAULT_CALIBRATION_IMAGES,
    PRECISIONS,
    fast_int8_instructions,
    int8_graph,
)
from semipkd.runtime import select_device, setup_logging

__all__ = [
    "IMAGE_SUFFIXES",
    "BACKEND_CHOICES",
    "CUDA_BATCH",
    "CPU_BATCH",
    "PredictSummary",
    "Runner",
    "list_images",
    "map_to_uint8",
    "encode_png",
    "output_paths",
    "default_cache_dir",
    "onnx_graph",
    "make_runner",
    "measure_backends",
    "choose_backend",
    "predict_paths",
    "main",
]

log = logging.getLogger(__name__)

#: Choices of ``--backend``.
BACKEND_CHOICES = ("auto",) + BACKENDS
#: Default batch sizes. On the CPU a batch buys nothing at the paper's 384x384 (per image, a
#: batch of 8 took 185 ms against 136 ms alone for the mobilenet_v2 student, one thread: the
#: larger activations fall out of cache), so images go one by one there; GPUs want batches.
CUDA_BATCH = 8
CPU_BATCH = 1
#: Batches of each backend timed by :func:`measure_backends` (after one warm-up batch each).
CALIBRATION_ROUNDS = 5

#: An inference backend: float32 (B, 3, H, W) RGB in [0, 1] -> float32 (B, H_out, W_out) in
#: [0, 1] on the CPU (:class:`semipkd.inference.TorchRunner`, :class:`~semipkd.inference.OnnxRunner`).
Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PredictSummary:
    """``written``: output PNGs; ``failed``: (input, reason) of images skipped under ``skip``."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def map_to_uint8(saliency: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(H_out, W_out) map in [0, 1] -> uint8 (H, W) at ``size``: resized, max-normalised, rounded."""
    m = metrics.resize_to(saliency[None].float(), tuple(size))[0].clamp_(min=0.0)
    peak = float(m.max())
    if peak > 0:
        m = m / peak
    return (m * 255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def encode_png(gray: np.ndarray) -> bytes:
    """uint8 (H, W) -> bytes of an 8-bit single-channel PNG."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"encode_png: expected uint8 (H, W), got {gray.dtype} {gray.shape}")
    ok, data = cv2.imencode(".png", gray)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for a {gray.shape} map")
    return data.tobytes()


def output_paths(paths: Sequence[Path], input_root: Path, output_dir: Path) -> list[Path]:
    """``<output_dir>/<path relative to input_root>.png`` for each input; refuses collisions."""
    input_root = Path(input_root)
    out = []
    for p in paths:
        rel = Path(p.name) if input_root.is_file() or input_root == p else p.relative_to(input_root)
        out.append(Path(output_dir) / rel.with_suffix(".png"))
    seen: dict[Path, Path] = {}
    for src, dst in zip(paths, out, strict=True):
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {src} would both be written to {dst}; rename one of them")
        seen[dst] = src
    return out


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/semipkd``, or ``~/.cache/semipkd``: exported graphs and backend timings."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "semipkd"


def onnx_graph(
    model: nn.Module,
    input_size: tuple[int, int],
    *,
    checkpoint_sha: str,
    cache_dir: str | Path,
    path: str | Path | None = None,
) -> Path:
    """The ONNX graph of ``model`` at ``input_size``, exported (and checked to 1e-4) when missing.

    ``path`` given: that file, exported there if it does not exist yet (an existing file is
    used as it is; :class:`~semipkd.inference.OnnxRunner` refuses it if its input size differs).
    Otherwise ``<cache_dir>/onnx/<sha>-<H>x<W>-...onnx``, keyed by the checkpoint's sha256 and the
    semipkd, torch and opset versions that wrote it, so a cached graph is never a stale one.
    """
    h, w = input_size
    if path is None:
        torch_version = torch.__version__.split("+")[0]
        name = f"{checkpoint_sha[:16]}-{h}x{w}-semipkd{semipkd.__version__}-torch{torch_version}-opset{DEFAULT_OPSET}.onnx"
        path = Path(cache_dir) / "onnx" / name
    path = Path(path)
    if not path.is_file():
        log.info("exporting the model to %s (once for this checkpoint and input size)", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, path, input_size)
    return path


def make_runner(
    backend: str,
    model: nn.Module,
    input_size: tuple[int, int],
    device: torch.device,
    *,
    onnx_path: Callable[[], Path],
    threads: int | None = None,
) -> Runner:
    """The :data:`Runner` of ``backend`` (``torch`` or ``onnxruntime``) for ``model`` on ``device``.

    ``onnx_path`` is called only for ``onnxruntime`` (exporting costs seconds).
    """
    if backend == "torch":
        return TorchRunner(model, device, optimize=True, input_size=input_size)
    if backend == "onnxruntime":
        runner = OnnxRunner(onnx_path(), device=device, threads=threads)
        if runner.input_size != tuple(input_size):
            raise ValueError(f"{runner.path}: graph input is {runner.input_size[0]}x{runner.input_size[1]}, the model is fed "
                             f"{input_size[0]}x{input_size[1]}; pass --input-size or another --onnx")
        return runner
    raise ValueError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")


def measure_backends(
    runners: Mapping[str, Runner],
    input_size: tuple[int, int],
    batch_size: int,
    *,
    rounds: int = CALIBRATION_ROUNDS,
    seed: int = 0,
) -> dict[str, float]:
    """Median wall time (ms) of one batch through each runner, interleaved (A, B, A, B, ...).

    The batch is seeded random float32 (``batch_size``, 3, H, W) at ``input_size``. Each runner
    first runs one unmeasured warm-up batch (allocation, oneDNN kernel selection), then
    ``rounds`` measured ones; interleaving gives both the same share of whatever else the
    machine is doing.
    """
    x = torch.rand(batch_size, 3, *input_size, generator=torch.Generator().manual_seed(seed))
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(rounds + 1):
        for k, run in runners.items():
            t0 = time.perf_counter()
            run(x)
            if r:
                times[k].append(1000.0 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def _calibration_key(checkpoint_sha: str, input_size, batch_size: int, device: torch.device, threads: int) -> str:
    return f"{checkpoint_sha}|{input_size[0]}x{input_size[1]}|batch{batch_size}|{device.type}|threads{threads}"


def choose_backend(
    make: Callable[[str], Runner],
    *,
    checkpoint_sha: str,
    input_size: tuple[int, int],
    batch_size: int,
    device: torch.device,
    cache_dir: str | Path,
    remeasure: bool = False,
) -> tuple[str, dict[str, float], Runner | None]:
    """Pick the faster backend for this checkpoint and setting, from the cache or by measuring.

    ``make(name)`` builds a backend's runner. The measurement (:func:`measure_backends`) is
    stored in ``<cache_dir>/backends.json`` under the checkpoint's sha256, input size, batch
    size, device type and torch's thread count; ``remeasure`` ignores a stored one.

    Returns:
        (backend name, {backend: median ms per batch}, the chosen runner when it was built
        during the measurement, else None).
    """
    path = Path(cache_dir) / "backends.json"
    key = _calibration_key(checkpoint_sha, input_size, batch_size, device, torch.get_num_threads())
    stored: dict = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable (%s); measuring again", path, e)
    entry = stored.get(key)
    if entry and not remeasure and entry.get("choice") in BACKENDS:
        log.info("backend %s (measured %s: %s ms per batch; --calibrate to measure again)",
                 entry["choice"], entry.get("measured", "?"), entry.get("ms"))
        return entry["choice"], dict(entry.get("ms", {})), None
    runners = {name: make(name) for name in BACKENDS}
    ms = measure_backends(runners, input_size, batch_size)
    choice = min(ms, key=ms.get)
    stored[key] = {"choice": choice, "ms": {k: round(v, 3) for k, v in ms.items()}, "rounds": CALIBRATION_ROUNDS,
                   "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(path, stored)
    log.info("measured per batch of %d: %s -> backend %s (stored in %s)",
             batch_size, ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()), choice, path)
    return choice, ms, runners[choice]


def predict_paths(
    runner: Runner,
    paths: Sequence[Path],
    outputs: Sequence[Path],
    *,
    input_size: tuple[int, int],
    batch_size: int = 8,
    on_error: str = "raise",
    progress: bool = True,
) -> PredictSummary:
    """Predict ``paths[i]`` and write its PNG to ``outputs[i]`` (atomically), in batches.

    Args:
        runner: a :data:`Runner` (either backend) taking (B, 3, H, W) at ``input_size``.
        input_size: (H, W) images are resized to before the network.
        batch_size: images per batch; the last batch may be shorter.
        on_error: ``"raise"`` (an unreadable image raises
            :class:`~semipkd.inference.ImageReadError`) or ``"skip"`` (it is logged by name,
            listed in the summary, and the rest go on).

    Returns:
        :class:`PredictSummary`.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error: {on_error!r} is not one of {', '.join(ON_ERROR)}")
    if len(paths) != len(outputs):
        raise ValueError(f"{len(paths)} inputs but {len(outputs)} output paths")
    chunks = list(batches(len(paths), batch_size))
    summary = PredictSummary()

    def load(idx: range) -> list[tuple[int, np.ndarray | None, str]]:
        got = []
        for i in idx:
            try:
                got.append((i, read_image(paths[i]), ""))
            except ImageReadError as e:
                got.append((i, None, str(e)))
        return got

    # One reader thread decodes batch k+1 while batch k is in the network (the decoders release
    # the GIL); one writer thread encodes and writes PNGs. At most two batches are held in memory.
    with ThreadPoolExecutor(1, thread_name_prefix="predict-read") as reader, ThreadPoolExecutor(
        1, thread_name_prefix="predict-write"
    ) as writer, tqdm(total=len(paths), desc="predict", unit="img", disable=None if progress else True) as bar:
        pending: Future | None = reader.submit(load, chunks[0]) if chunks else None
        writes: list[Future] = []
        for k in range(len(chunks)):
            loaded = pending.result()
            pending = reader.submit(load, chunks[k + 1]) if k + 1 < len(chunks) else None
            good = []
            for i, img, err in loaded:
                if img is None:
                    if on_error == "raise":
                        if pending is not None:
                            pending.cancel()
                        raise ImageReadError(None, err)
                    log.warning("skipping %s", err)
                    summary.failed.append((paths[i], err))
                else:
                    good.append((i, img))
            if good:
                maps = runner(images_to_tensor([img for _, img in good], input_size))
                for (i, img), m in zip(good, maps, strict=True):
                    writes.append(writer.submit(_write_png, outputs[i], m, img.shape[:2]))
                    summary.written.append(outputs[i])
            bar.update(len(loaded))
        for w in writes:
            w.result()  # surfaces a write error (disk full, permissions) here
    return summary


def _write_png(path: Path, saliency: torch.Tensor, size: tuple[int, int]) -> None:
    atomic_write_bytes(path, encode_png(map_to_uint8(saliency, size)))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m semipkd.predict",
        description="Write one 8-bit grayscale saliency PNG per image, at the image's original size.",
    )
    ap.add_argument("--model", required=True, type=Path, help="checkpoint, e.g. models/student.pt")
    ap.add_argument("--input", type=Path, help="an image, or a folder searched recursively")
    ap.add_argument("--output", type=Path, help="folder for the PNGs (created)")
    ap.add_argument(
        "--batch-size", type=int, default=None,
        help=f"images per forward pass (default: {CUDA_BATCH} on CUDA, {CPU_BATCH} on the CPU)",
    )
    ap.add_argument("--on-error", choices=ON_ERROR, default="raise", help="unreadable image: stop (raise) or skip it")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA when present")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="network input size (default: from the checkpoint)")
    ap.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                    help="inference backend (default auto: the faster one measured on this machine)")
    ap.add_argument("--onnx", type=Path, default=None, help="ONNX graph for onnxruntime: used if it exists, else exported there")
    ap.add_argument("--calibrate", action="store_true",
                    help="measure both backends again and store the choice auto uses; alone (no --input) it only measures")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for either backend (default: torch's)")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32",
                    help="fp32 (default, exact) or int8: an onnxruntime graph quantised on --calibration images; "
                         "changes the maps (README, 'Reduced precision'), never chosen by auto")
    ap.add_argument("--calibration", type=Path, default=None,
                    help="int8 only: a folder of real images to calibrate on (a seeded sample is used; never a "
                         "split whose scores you report)")
    ap.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                    help=f"int8 only: how many calibration images to sample (default {DEFAULT_CALIBRATION_IMAGES})")
    ap.add_argument("--cache-dir", type=Path, default=None, help=f"exported graphs and timings (default {default_cache_dir()})")
    args = ap.parse_args(argv)
    if (args.input is None) != (args.output is None) or (args.input is None and not args.calibrate):
        ap.error("--input and --output are required (unless --calibrate is given alone)")
    if args.precision == "int8" and args.backend == "torch":
        ap.error("--precision int8 runs on onnxruntime: use --backend onnxruntime (or auto)")
    if args.precision == "int8" and args.calibrate:
        ap.error("--calibrate measures the exact fp32 backends that auto chooses among; drop --precision int8")
    if args.precision == "fp32" and args.calibration is not None:
        ap.error("--calibration is for --precision int8 only")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 bad input or an unreadable image under raise)."""
    args = _parse_args(argv)
    setup_logging("predict")
    try:
        for name in ("batch_size", "threads"):
            value = getattr(args, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')}: must be > 0, got {value}")
        if not args.model.is_file():
            raise FileNotFoundError(f"--model {args.model}: no such file")
        if args.input is not None:
            paths = list_images(args.input)
            outputs = output_paths(paths, args.input, args.output)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        device = select_device(args.device)
        model = load_model(args.model, map_location="cpu")
        size = model_input_size(model, args.input_size)
        batch_size = args.batch_size or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH)
        cache_dir = args.cache_dir or default_cache_dir()
        sha = sha256_file(args.model)

        def make(backend: str) -> Runner:
            graph = lambda: onnx_graph(model, size, checkpoint_sha=sha, cache_dir=cache_dir, path=args.onnx)  # noqa: E731  (a thunk: exported only if a runner asks)
            return make_runner(backend, model, size, device, onnx_path=graph, threads=args.threads)

        backend, runner = args.backend, None
        if args.precision == "int8":
            # Opt-in and never measured against the exact backends: int8 changes the maps.
            if not fast_int8_instructions():
                log.warning("this CPU has no VNNI or AMX int8 instructions: int8 runs, but no faster than fp32 "
                            "onnxruntime here (README, 'Reduced precision')")
            graph8 = int8_graph(lambda: onnx_graph(model, size, checkpoint_sha=sha, cache_dir=cache_dir, path=args.onnx),
                                size, checkpoint_sha=sha, cache_dir=cache_dir, calibration=args.calibration,
                                count=args.calibration_images)
            if device.type == "cuda":
                log.info("int8 runs on the CPU (onnxruntime's int8 kernels are CPU kernels)")
            runner = make_runner("onnxruntime", model, size, torch.device("cpu"), onnx_path=lambda: graph8, threads=args.threads)
            backend = "onnxruntime int8"
        elif backend == "auto" or args.calibrate:
            chosen, ms, runner = choose_backend(make, checkpoint_sha=sha, input_size=size, batch_size=batch_size,
                                                device=device, cache_dir=cache_dir, remeasure=args.calibrate)
            if args.calibrate:
                print(f"{args.model} at {size[0]}x{size[1]}, batch {batch_size}, {device.type}, "
                      f"{torch.get_num_threads()} threads: "
                      + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()) + f" per batch -> auto uses {chosen}")
            if backend == "auto":
                backend = chosen
            elif backend != chosen:
                runner = None
        if args.input is None:
            return 0
        runner = runner or make(backend)
        log.info("backend: %s", backend)
        summary = predict_paths(runner, paths, outputs, input_size=size, batch_size=batch_size, on_error=args.on_error)
    except (ImageReadError, FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    log.info("wrote %d maps to %s", len(summary.written), args.output)
    if summary.failed:
        log.warning("skipped %d unreadable images: %s", len(summary.failed), ", ".join(str(p) for p, _ in summary.failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
