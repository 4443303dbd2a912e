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
ends the run with exit status 2 (``raise``, the default).
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from semipkd import metrics
from semipkd.evaluate import forward_maps, images_to_tensor
from semipkd.io import atomic_write_bytes

__all__ = [
    "IMAGE_SUFFIXES",
    "ON_ERROR",
    "CUDA_BATCH",
    "CPU_BATCH",
    "ImageReadError",
    "PredictSummary",
    "list_images",
    "read_image",
    "map_to_uint8",
    "encode_png",
    "model_input_size",
    "output_paths",
    "predict_paths",
    "main",
]

log = logging.getLogger(__name__)

#: File name endings read as images (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Choices of ``on_error``.
ON_ERROR = ("raise", "skip")
#: Default batch sizes. On the CPU a batch buys nothing at the paper's 384x384 (per image, a
#: batch of 8 took 185 ms against 136 ms alone for the mobilenet_v2 student, one thread: the
#: larger activations fall out of cache), so images go one by one there; GPUs want batches.
CUDA_BATCH = 8
CPU_BATCH = 1


class ImageReadError(ValueError):
    """An input file that is not a decodable image; the message names the file."""


@dataclass
class PredictSummary:
    """``written``: output PNGs; ``failed``: (input, reason) of images skipped under ``skip``."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def list_images(path: str | Path) -> list[Path]:
    """The image files to predict: ``path`` itself, or every image under the folder, sorted.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` if a folder holds
    no file ending in one of :data:`IMAGE_SUFFIXES`.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--input {path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def read_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` to uint8 (H, W, 3) RGB (grayscale is replicated, alpha dropped).

    EXIF orientation is applied, as viewers and the benchmarks' own images do. Raises
    :class:`ImageReadError` naming the file when it cannot be read or decoded.
    """
    path = Path(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)  # not cv2.imread: that one fails silently on non-ASCII paths
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from e
    if buf.size == 0:
        raise ImageReadError(f"{path}: empty file")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageReadError(f"{path}: not a decodable image")
    return np.ascontiguousarray(img[:, :, ::-1])


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


def model_input_size(model: nn.Module, override: Sequence[int] | None = None) -> tuple[int, int]:
    """The (H, W) to feed ``model``: ``override``, else its config's ``input_size``, else ``output_size``.

    Checkpoints record ``output_size`` for sure; ``input_size`` only when the training stage put
    it in the model config. In this project's configurations input and output sizes match for
    the benchmarks (384x384 in the paper), so the output size is the fallback, logged.
    """
    if override is not None:
        size = tuple(int(v) for v in override)
    else:
        config = getattr(model, "config", None) or {}
        size = config.get("input_size")
        if size is None:
            size = config.get("output_size") or getattr(model, "output_size", None)
            if size is None:
                raise ValueError("the model records neither input_size nor output_size; pass --input-size H W")
            log.info("checkpoint records no input_size; feeding images at its output size %s", tuple(size))
        size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"input size: expected two positive ints H W, got {size}")
    return size


def output_paths(paths: Sequence[Path], input_root: Path, output_dir: Path) -> list[Path]:
    """``<output_dir>/<path relative to input_root>.png`` for each input; refuses collisions."""
    input_root = Path(input_root)
    out = []
    for p in paths:
        rel = Path(p.name) if input_root.is_file() or input_root == p else p.relative_to(input_root)
        out.append(Path(output_dir) / rel.with_suffix(".png"))
    seen: dict[Path, Path] = {}
    for src, dst in zip(paths, out):
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {src} would both be written to {dst}; rename one of them")
        seen[dst] = src
    return out


def predict_paths(
    model: nn.Module,
    paths: Sequence[Path],
    outputs: Sequence[Path],
    *,
    input_size: tuple[int, int],
    device: torch.device | str,
    batch_size: int = 8,
    on_error: str = "raise",
    progress: bool = True,
) -> PredictSummary:
    """Predict ``paths[i]`` and write its PNG to ``outputs[i]`` (atomically), in batches.

    Args:
        model: maps float (B, 3, H, W) RGB [0, 1] to (B, H_out, W_out) [0, 1]; moved to
            ``device`` and put in eval mode.
        input_size: (H, W) images are resized to before the network.
        on_error: ``"raise"`` (an unreadable image raises :class:`ImageReadError`) or ``"skip"``
            (it is logged by name, listed in the summary, and the rest go on).

    Returns:
        :class:`PredictSummary`.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error: {on_error!r} is not one of {', '.join(ON_ERROR)}")
    if len(paths) != len(outputs):
        raise ValueError(f"{len(paths)} inputs but {len(outputs)} output paths")
    if batch_size <= 0:
        raise ValueError(f"batch_size: must be > 0, got {batch_size}")
    device = torch.device(device)
    model.to(device).eval()
    summary = PredictSummary()
    chunks = [range(i, min(i + batch_size, len(paths))) for i in range(0, len(paths), batch_size)]

    def load(idx: range) -> list[tuple[int, np.ndarray | None, str]]:
        got = []
        for i in idx:
            try:
                got.append((i, read_image(paths[i]), ""))
            except ImageReadError as e:
                got.append((i, None, str(e)))
        return got

    # One reader thread decodes batch k+1 while batch k is in the network (cv2 releases the GIL);
    # one writer thread encodes and writes PNGs. At most two batches are held in memory.
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
                        raise ImageReadError(err)
                    log.warning("skipping %s", err)
                    summary.failed.append((paths[i], err))
                else:
                    good.append((i, img))
            if good:
                maps = forward_maps(model, images_to_tensor([img for _, img in good], input_size), device).cpu()
                for (i, img), m in zip(good, maps):
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
    ap.add_argument("--input", required=True, type=Path, help="an image, or a folder searched recursively")
    ap.add_argument("--output", required=True, type=Path, help="folder for the PNGs (created)")
    ap.add_argument(
        "--batch-size", type=int, default=None, help=f"images per forward pass (default: {CUDA_BATCH} on CUDA, {CPU_BATCH} on the CPU)"
    )
    ap.add_argument("--on-error", choices=ON_ERROR, default="raise", help="unreadable image: stop (raise) or skip it")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA when present")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None, help="network input size (default: from the checkpoint)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 bad input or an unreadable image under raise)."""
    from semipkd.models import load_model
    from semipkd.runtime import select_device, setup_logging

    args = _parse_args(argv)
    setup_logging("predict")
    try:
        if args.batch_size is not None and args.batch_size <= 0:
            raise ValueError(f"--batch-size: must be > 0, got {args.batch_size}")
        if not args.model.is_file():
            raise FileNotFoundError(f"--model {args.model}: no such file")
        paths = list_images(args.input)
        outputs = output_paths(paths, args.input, args.output)
        device = select_device(args.device)
        model = load_model(args.model, map_location="cpu")
        size = model_input_size(model, args.input_size)
        batch_size = args.batch_size or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH)
        summary = predict_paths(
            model, paths, outputs, input_size=size, device=device, batch_size=batch_size, on_error=args.on_error
        )
    except (ImageReadError, FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    log.info("wrote %d maps to %s", len(summary.written), args.output)
    if summary.failed:
        log.warning("skipped %d unreadable images: %s", len(summary.failed), ", ".join(str(p) for p, _ in summary.failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
