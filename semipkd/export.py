"""ONNX export of a trained model: ``python -m semipkd.export``.

::

    python -m semipkd.export --model models/student.pt --output student.onnx [--input-size H W]

The graph takes ``image``: float32 (N, 3, H, W) RGB in [0, 1] (normalisation is inside the
model, as in PyTorch) and returns ``saliency``: float32 (N, H_out, W_out) in [0, 1]; the batch
axis is dynamic, the spatial sizes are fixed at export. After writing, the CLI runs the graph
with onnxruntime on random inputs and compares it with PyTorch; a max absolute difference above
``--tolerance`` (default 1e-4) is an error (exit status 1) and leaves no file behind.

``--precision int8 --calibration DIR [--calibration-images N]`` writes the onnxruntime int8
graph of :mod:`semipkd.precision` instead (same input and output), quantised on a seeded sample
of real images from ``DIR``; it is checked on those images against PyTorch with the int8 bound
:data:`semipkd.precision.INT8_TOLERANCE` unless ``--tolerance`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from semipkd.inference import OnnxRunner, check_size, model_input_size
from semipkd.io import atomic_path
from semipkd.models import load_model
from semipkd.precision import (
    DEFAULT_CALIBRATION_IMAGES,
    INT8_TOLERANCE,
    PRECISIONS,
    calibration_files,
    calibration_inputs,
    quantize_int8,
)
from semipkd.runtime import setup_logging

__all__ = ["DEFAULT_OPSET", "export_onnx", "export_int8", "onnx_max_abs_diff", "main"]

log = logging.getLogger(__name__)

#: ONNX opset written by default: 17 is read by every onnxruntime of the last three years.
DEFAULT_OPSET = 17


def _export_to(model: nn.Module, path: Path, input_size: tuple[int, int], opset: int) -> None:
    x = torch.rand(1, 3, *input_size)
    # The TorchScript-based exporter: the torch.export-based one (the default since torch 2.9)
    # needs onnxscript, which is not among this project's dependencies. Silenced, by name, are
    # only warnings about this project's own code, known and harmless, that a user can do
    # nothing about: the exporter's announcement that it is the legacy path (and its own use of
    # a deprecated logging helper); the tracer's note on our forward's input-shape checks
    # (`if x.dim() != 4 ...`: the spatial size is fixed at export by design); and the exporter's
    # note that a strided Slice is not constant-folded. Every export is then checked against
    # PyTorch (onnx_max_abs_diff). Any other warning, such as one about a model's own layers,
    # still reaches the console.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning,
                                module=r"torch\.onnx\.")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"semipkd\.")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1 can be constant folded", category=UserWarning)
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=["saliency"],
            dynamic_axes={"image": {0: "batch"}, "saliency": {0: "batch"}},
            do_constant_folding=True,
        )


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int],
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float | None = 1e-4,
) -> float | None:
    """Export ``model`` (put on the CPU, in eval mode) to ONNX at ``path``, atomically.

    Args:
        input_size: (H, W) of the graph's input; the batch axis stays dynamic.
        tolerance: if not None, the exported graph is checked with :func:`onnx_max_abs_diff`
            before it replaces ``path``; a larger difference raises ``RuntimeError`` and
            ``path`` is left as it was.

    Returns:
        The max absolute difference measured (None when not checked).
    """
    size = check_size(input_size, "input_size")
    model = model.cpu().eval()
    diff = None
    with atomic_path(path) as tmp:
        _export_to(model, tmp, size, opset)
        import onnx

        onnx.checker.check_model(str(tmp))
        if tolerance is not None:
            diff = onnx_max_abs_diff(model, tmp, size)
            log.info("onnxruntime vs PyTorch: max abs diff %.3g (tolerance %.3g)", diff, tolerance)
            if not diff <= tolerance:
                raise RuntimeError(f"{path}: exported graph differs from PyTorch by {diff:.3g} > {tolerance:.3g}; not written")
    return diff


def export_int8(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int],
    inputs: Sequence[np.ndarray],
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float | None = INT8_TOLERANCE,
) -> float | None:
    """Export ``model``'s int8 graph (:func:`semipkd.precision.quantize_int8`) to ``path``, atomically.

    The fp32 graph is exported and checked to 1e-4 first (in a temporary folder), then quantised
    with the calibration ``inputs`` (each float32 (1, 3, H, W) in [0, 1], real images). With a
    ``tolerance``, the int8 graph's max |int8 - PyTorch| on those inputs must not exceed it, else
    ``RuntimeError`` and ``path`` is left as it was.

    Returns:
        The max absolute difference measured (None when not checked).
    """
    size = check_size(input_size, "input_size")
    model = model.cpu().eval()
    diff = None
    with tempfile.TemporaryDirectory(prefix="semipkd-export-") as tmp, atomic_path(path) as dest:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, size, opset=opset)
        quantize_int8(fp32, dest, inputs)
        if tolerance is not None:
            diff = onnx_max_abs_diff(model, dest, size, x=torch.from_numpy(np.concatenate(list(inputs))))
            log.info("int8 onnxruntime vs PyTorch on %d calibration images: max abs diff %.3g (tolerance %.3g)",
                     len(inputs), diff, tolerance)
            if not diff <= tolerance:
                raise RuntimeError(f"{path}: int8 graph differs from PyTorch by {diff:.3g} > {tolerance:.3g}; not written")
    return diff


def onnx_max_abs_diff(model: nn.Module, onnx_path: str | Path, input_size: tuple[int, int], *, batch: int = 2, seed: int = 0,
                      x: torch.Tensor | None = None) -> float:
    """Max |onnxruntime - PyTorch| over the outputs for ``batch`` seeded random images (or for ``x``).

    Uses a batch of 2 by default, so the dynamic batch axis is exercised (export traced batch 1).
    """
    if x is None:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch, 3, *input_size, generator=g)
    with torch.inference_mode():
        ref = model.cpu().eval()(x).float().numpy()
    got = OnnxRunner(onnx_path, device="cpu")(x).numpy()
    if got.shape != ref.shape:
        raise RuntimeError(f"{onnx_path}: onnxruntime output shape {got.shape} differs from PyTorch's {ref.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m semipkd.export",
                                 description="Export a checkpoint to ONNX and check it with onnxruntime.")
    ap.add_argument("--model", required=True, type=Path, help="checkpoint, e.g. models/student.pt")
    ap.add_argument("--output", required=True, type=Path, help="the .onnx file to write")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="graph input size (default: from the checkpoint)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    ap.add_argument("--tolerance", type=float, default=None,
                    help=f"max abs difference allowed against PyTorch (default 1e-4; int8: {INT8_TOLERANCE})")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32",
                    help="fp32 (default) or int8: quantised on --calibration images (README, 'Reduced precision')")
    ap.add_argument("--calibration", type=Path, default=None, help="int8 only: a folder of real images to calibrate on")
    ap.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                    help=f"int8 only: how many calibration images to sample (default {DEFAULT_CALIBRATION_IMAGES})")
    args = ap.parse_args(argv)
    if args.precision == "fp32" and args.calibration is not None:
        ap.error("--calibration is for --precision int8 only")
    if args.tolerance is None:
        args.tolerance = INT8_TOLERANCE if args.precision == "int8" else 1e-4
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 1 if the check fails, 2 on bad arguments."""
    args = _parse_args(argv)
    setup_logging("export")
    try:
        if not args.model.is_file():
            raise FileNotFoundError(f"--model {args.model}: no such file")
        if args.precision == "int8":
            files = calibration_files(args.calibration, args.calibration_images)  # a bad folder fails before any work
        model = load_model(args.model, map_location="cpu")
        size = model_input_size(model, args.input_size)
        if args.precision == "int8":
            inputs = calibration_inputs(files, size)
    except (FileNotFoundError, ValueError) as e:  # CalibrationError is a ValueError
        log.error("%s", e)
        return 2
    try:
        if args.precision == "int8":
            diff = export_int8(model, args.output, size, inputs, opset=args.opset, tolerance=args.tolerance)
        else:
            diff = export_onnx(model, args.output, size, opset=args.opset, tolerance=args.tolerance)
    except RuntimeError as e:
        log.error("%s", e)
        return 1
    log.info("wrote %s (%s, input 1x3x%dx%d, dynamic batch; max abs diff %.3g)", args.output, args.precision, size[0], size[1],
             diff)
    return 0


if __name__ == "__main__":
    sys.exit(main())
