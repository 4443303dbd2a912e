"""Reduced-precision CPU inference, opt-in: an onnxruntime int8 graph calibrated on real images.

``predict --precision int8`` and ``export --precision int8`` use it; fp32 stays the default and
``--backend auto`` never picks int8, because int8 changes the maps (docs: README, "Reduced
precision"; the accuracy cost is measured by ``benchmarks/precision_accuracy.py``).

How the int8 graph is made (:func:`quantize_int8`), from the fp32 graph of
:func:`semipkd.export.export_onnx`:

* **Calibration** on real images (:func:`calibration_files`, :func:`calibration_inputs`): a
  seeded sample of ``count`` images from a folder the user names, read and resized exactly as
  ``evaluate`` and ``predict`` read them (:func:`semipkd.inference.read_image`,
  :func:`semipkd.inference.images_to_tensor`). Never a split that is reported: the accuracy
  script calibrates on the unlabeled scene pool and refuses an overlap with the scored images.
* **Quantisation**: onnxruntime's static quantiser after its ``quant_pre_process`` (shape
  inference, graph clean-up), weights int8 per output channel, activations uint8 with min-max
  ranges over the calibration images, QOperator format (``QLinearConv``: the fastest of the
  modes measured here, see :data:`QUANT_FORMAT`).
* **Kept in fp32** (:func:`fp32_nodes`): the first convolution (it sees the normalised image)
  and every convolution from the decoder's refinement on (refinement, head, blur: the map
  itself). Measured on the OSIE-trained mobilenet_v2 student, 50 OSIE val images, CC between
  int8 and fp32 maps: all convolutions int8 0.974 (worst image 0.909); first kept 0.994; first,
  refinement, head and blur kept 0.9944 (0.960), and this was also the fastest of the variants
  (the full-resolution convolutions pay most for the quantise/dequantise around them). Keeping
  the whole decoder or the last encoder blocks as well changed CC by < 0.0002: int8's remaining
  error is spread over the encoder.

Graphs are cached (:func:`int8_graph`) under the checkpoint's sha256, the input size, the
calibration set's content digest, count and seed, and the semipkd/onnxruntime versions, so a
changed checkpoint or setting builds a new graph and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import semipkd
from semipkd.inference import (
    ImageReadError,
    check_size,
    images_to_tensor,
    list_images,
    read_image,
)
from semipkd.io import atomic_path

__all__ = [
    "PRECISIONS",
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_CALIBRATION_SEED",
    "QUANT_FORMAT",
    "INT8_TOLERANCE",
    "INT8_MEAN_TOLERANCE",
    "CalibrationError",
    "cpu_flags",
    "fast_int8_instructions",
    "calibration_files",
    "calibration_inputs",
    "calibration_digest",
    "fp32_nodes",
    "quantize_int8",
    "int8_graph",
]

log = logging.getLogger(__name__)

#: ``--precision`` choices. fp32 is exact (within 1e-4 of PyTorch); int8 is not.
PRECISIONS = ("fp32", "int8")
#: Calibration images drawn from the folder by default.
DEFAULT_CALIBRATION_IMAGES = 64
DEFAULT_CALIBRATION_SEED = 0
#: "qoperator" (QLinearConv nodes) or "qdq" (QuantizeLinear/DequantizeLinear pairs that
#: onnxruntime fuses). QOperator ran faster on this project's CPU (eeea_c2, random weights, every
#: conv int8, 1 thread, 20 interleaved rounds: 0.55x of eager against 0.64x for QDQ).
QUANT_FORMAT = "qoperator"
#: Max |int8 - fp32| allowed on a map in [0, 1] by ``export --precision int8``'s check on its
#: calibration images and by the tests. int8's error is not uniform: over OSIE val and EyeCrowd
#: val (300 images) the worst pixel moved by 0.194 for the OSIE-trained student and 0.120 for
#: the default one, while the mean |difference| was 0.004-0.009
#: (reports/benchmarks/precision_accuracy.json); 0.25 is that worst pixel with a margin.
INT8_TOLERANCE = 0.25
#: Mean |int8 - fp32| over a map's pixels allowed by the tests: about twice the largest measured
#: (0.0087, default student on OSIE val).
INT8_MEAN_TOLERANCE = 0.02
#: CPU flags with int8 dot-product instructions (VNNI, AMX), where int8 convolutions are expected
#: to be cheaper than fp32. Without them onnxruntime's int8 kernels use AVX2 multiply-adds and were
#: within 0-4% of fp32 on this project's CPU (reports/benchmarks/models.json).
FAST_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class CalibrationError(ValueError):
    """A missing, empty or unreadable calibration folder; the message names it (or the file)."""


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo`` (empty where there is none)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_int8_instructions(flags: frozenset[str] | None = None) -> list[str]:
    """Which of :data:`FAST_INT8_FLAGS` this CPU has (empty: int8 runs, but is not faster)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in FAST_INT8_FLAGS if f in flags]


def calibration_files(folder: str | os.PathLike | None, count: int = DEFAULT_CALIBRATION_IMAGES,
                      seed: int = DEFAULT_CALIBRATION_SEED) -> list[Path]:
    """A seeded sample of ``count`` images under ``folder`` (all of them if it holds fewer), sorted.

    Raises :class:`CalibrationError` when ``folder`` is None, missing, not a folder or holds no image.
    """
    if folder is None:
        raise CalibrationError("--precision int8 needs --calibration DIR: a folder of real images like the ones "
                               "you will predict (never the split you report scores on)")
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"--calibration {folder}: no such folder")
    if count <= 0:
        raise CalibrationError(f"--calibration-images: must be > 0, got {count}")
    try:
        files = list_images(folder, "--calibration")
    except (FileNotFoundError, ValueError) as e:
        raise CalibrationError(str(e)) from None
    if len(files) > count:
        pick = np.random.default_rng(seed).choice(len(files), size=count, replace=False)
        files = [files[i] for i in sorted(pick)]
    elif len(files) < count:
        log.info("--calibration %s: %d images, fewer than %d; using all", folder, len(files), count)
    return files


def calibration_inputs(files: Sequence[Path], input_size: tuple[int, int]) -> list[np.ndarray]:
    """Each file as the network sees it: float32 (1, 3, H, W) in [0, 1] at ``input_size``.

    An unreadable file is a :class:`CalibrationError` naming it (a silently smaller calibration
    set would change the graph without a word).
    """
    size = check_size(input_size, "input_size")
    out = []
    for f in files:
        try:
            image = read_image(f)
        except ImageReadError as e:
            raise CalibrationError(f"calibration image unreadable: {e}") from None
        out.append(images_to_tensor([image], size).numpy())
    return out


def calibration_digest(files: Sequence[Path]) -> str:
    """sha256 over the calibration images' names and bytes, in order: the cache key's data part."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode() + b"\0")
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def fp32_nodes(graph) -> list[str]:
    """Names of the Conv nodes kept in fp32 in ``graph`` (an ``onnx.ModelProto``), see the module doc.

    The first Conv in graph order, and every Conv from the last ``refine`` convolution of the
    decoder on (the refinement at full resolution and the head). Graphs without a decoder
    refinement keep only the first and the last Conv.
    """
    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    if not convs:
        return []
    refine = [i for i, name in enumerate(convs) if "/refine/" in name]
    tail = convs[refine[0]:] if refine else convs[-1:]
    return list(dict.fromkeys([convs[0], *tail]))


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of (1, 3, H, W) inputs."""

    def __init__(self, inputs: Sequence[np.ndarray]) -> None:
        self._it = iter(inputs)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {"image": x}

    def rewind(self):  # pragma: no cover - called by some calibrators only
        raise NotImplementedError


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, inputs: Sequence[np.ndarray], *,
                  keep_fp32: Sequence[str] | None = None, quant_format: str = QUANT_FORMAT) -> Path:
    """Write the static int8 graph of ``fp32_path`` to ``out_path`` atomically.

    Args:
        inputs: calibration inputs, each float32 (1, 3, H, W) in [0, 1] (:func:`calibration_inputs`).
        keep_fp32: Conv node names left in fp32 (default :func:`fp32_nodes` of the graph).
        quant_format: ``qoperator`` or ``qdq``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not inputs:
        raise CalibrationError("no calibration images")
    formats = {"qoperator": QuantFormat.QOperator, "qdq": QuantFormat.QDQ}
    if quant_format not in formats:
        raise ValueError(f"quant_format: {quant_format!r} is not one of {', '.join(formats)}")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="semipkd-int8-") as tmp, atomic_path(out_path) as dest:
        pre = Path(tmp) / "pre.onnx"
        # the symbolic shape pass is for transformer graphs; onnx's own shape inference suffices here
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        keep = list(fp32_nodes(onnx.load(str(pre))) if keep_fp32 is None else keep_fp32)
        quantize_static(
            str(pre), str(dest), _Reader(inputs),
            quant_format=formats[quant_format],
            op_types_to_quantize=["Conv"],  # the arithmetic; elementwise ops in int8 only add (de)quantise pairs
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            # min-max: the calibrator keeps only per-tensor ReduceMin/ReduceMax outputs, so memory
            # stays small for any number of images
            calibrate_method=CalibrationMethod.MinMax,
        )
    log.info("wrote int8 graph %s (%d calibration images, %d convolutions kept in fp32)", out_path, len(inputs), len(keep))
    return out_path


def int8_graph(
    fp32_graph: Callable[[], Path],
    input_size: tuple[int, int],
    *,
    checkpoint_sha: str,
    cache_dir: str | os.PathLike,
    calibration: str | os.PathLike | None,
    count: int = DEFAULT_CALIBRATION_IMAGES,
    seed: int = DEFAULT_CALIBRATION_SEED,
) -> Path:
    """The cached int8 graph for this checkpoint and setting, built when missing.

    ``fp32_graph()`` returns the fp32 ONNX graph (exported on demand; called only to build).
    The file is ``<cache_dir>/int8/<sha>-<H>x<W>-cal<digest>-n<count>-seed<seed>-...onnx``: a
    new checkpoint, input size, calibration set (content), count or seed, or another semipkd or
    onnxruntime version, names another file, so a stale graph is never used.
    """
    import onnxruntime

    h, w = check_size(input_size, "input_size")
    files = calibration_files(calibration, count, seed)
    digest = calibration_digest(files)
    name = (f"{checkpoint_sha[:16]}-{h}x{w}-cal{digest[:12]}-n{count}-seed{seed}-{QUANT_FORMAT}"
            f"-semipkd{semipkd.__version__}-ort{onnxruntime.__version__}.onnx")
    path = Path(cache_dir) / "int8" / name
    if path.is_file():
        log.info("int8 graph from the cache: %s", path)
        return path
    log.info("quantising to int8 with %d calibration images from %s (once per checkpoint and setting)", len(files), calibration)
    path.parent.mkdir(parents=True, exist_ok=True)
    return quantize_int8(fp32_graph(), path, calibration_inputs(files, (h, w)))
