"""Running a trained model on images: the one path shared by evaluate, predict and export.

* **Reading.** :func:`read_image` is :func:`semipkd.data.validate.read_image` (PIL, EXIF
  orientation applied, colour modes converted as documented there), so an image scored by
  ``evaluate`` and the same file given to ``predict`` reach the network as the same pixels.
* **Batching.** :func:`batches` cuts ``range(n)`` into consecutive ranges; the last may be short.
* **Input.** :func:`images_to_tensor` resizes uint8 RGB images to the model's input size
  (:func:`model_input_size`) and stacks them as float32 (B, 3, H, W) in [0, 1].
* **Forward.** Two interchangeable backends map that batch to float32 (B, H_out, W_out) maps in
  [0, 1] on the CPU: :class:`TorchRunner` (the PyTorch model in eval mode under
  ``inference_mode``; on the CPU optionally the fused, frozen, channels-last graph of
  :func:`semipkd.models.optimize_for_inference`) and :class:`OnnxRunner` (an onnxruntime session
  over the graph written by :mod:`semipkd.export`; CPU provider, CUDA provider when the session is
  asked for CUDA and onnxruntime has it). Both agree to 1e-4 (tests/test_inference.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from semipkd.data import resize_image
from semipkd.data.resize import check_size  # the one (H, W) check, re-exported for callers
from semipkd.data.validate import DataError
from semipkd.data.validate import read_image as _read_dataset_image
from semipkd.models import optimize_for_inference
from semipkd.runtime import autocast

__all__ = [
    "BACKENDS",
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "list_images",
    "read_image",
    "batches",
    "check_size",
    "eval_mode",
    "images_to_tensor",
    "model_input_size",
    "forward_maps",
    "TorchRunner",
    "OnnxRunner",
]

log = logging.getLogger(__name__)

#: File name endings read as images (case-insensitive), by predict and for int8 calibration.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: The concrete inference backends (``predict --backend`` adds ``auto``, which picks one of them).
BACKENDS = ("torch", "onnxruntime")


class ImageReadError(DataError):
    """An input file that is not a usable image; the message starts with the file."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to uint8 (H, W, 3) RGB, C-contiguous, EXIF orientation applied.

    Grayscale is replicated, CMYK converted, an opaque alpha channel dropped (the rules of
    :func:`semipkd.data.validate.read_image`, which this calls). Raises :class:`ImageReadError`
    naming the file when it is missing, empty, corrupt, or has transparent pixels.
    """
    try:
        image, _notes = _read_dataset_image(path)
    except DataError as e:
        raise ImageReadError(e.path, e.reason) from None
    return image


def list_images(path: str | Path, what: str = "--input") -> list[Path]:
    """The image files to predict: ``path`` itself, or every image under the folder, sorted.

    ``what`` starts the error messages (the option that named ``path``). Raises
    ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` if a folder holds no file
    ending in one of :data:`IMAGE_SUFFIXES`.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{what} {path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def batches(n: int, batch_size: int) -> Iterator[range]:
    """Consecutive ranges covering ``range(n)``, each ``batch_size`` long except maybe the last."""
    if batch_size <= 0:
        raise ValueError(f"batch_size: must be > 0, got {batch_size}")
    for start in range(0, n, batch_size):
        yield range(start, min(start + batch_size, n))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (the blur and batch norm behave as at test time), restore after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def images_to_tensor(images: Sequence[np.ndarray], input_size: tuple[int, int]) -> torch.Tensor:
    """Resize uint8 RGB images to ``input_size`` and stack them as the model's input.

    Args:
        images: each uint8 (H_i, W_i, 3) RGB; sizes may differ.
        input_size: (H, W) the network is fed at.

    Returns:
        float32 (B, 3, H, W) in [0, 1] on the CPU.
    """
    size = check_size(input_size, "input_size")
    batch = np.empty((len(images), size[0], size[1], 3), dtype=np.uint8)
    for i, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {i}: expected uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}")
        batch[i] = resize_image(img, size)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)


def model_input_size(model: nn.Module, override: Sequence[int] | None = None) -> tuple[int, int]:
    """The (H, W) to feed ``model``: ``override``, else its config's ``input_size``, else ``output_size``.

    Checkpoints record ``output_size`` for sure; ``input_size`` only when the training stage put
    it in the model config. In this project's configurations input and output sizes match for
    the benchmarks (384x384 in the paper), so the output size is the fallback, logged.
    """
    if override is not None:
        return check_size(override, "input size")
    config = getattr(model, "config", None) or {}
    size = config.get("input_size")
    if size is None:
        size = config.get("output_size") or getattr(model, "output_size", None)
        if size is None:
            raise ValueError("the model records neither input_size nor output_size; pass --input-size H W")
        log.info("checkpoint records no input_size; feeding images at its output size %s", tuple(size))
    return check_size(size, "input size")


def forward_maps(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One inference batch: float32 (B, 3, H, W) in [0, 1] -> float32 (B, H_out, W_out) in [0, 1].

    Runs under ``torch.inference_mode`` and, on CUDA, autocast; the result stays on ``device``.
    The caller puts ``model`` on ``device`` and in eval mode.
    """
    with torch.inference_mode(), autocast(device, enabled=True):
        out = model(x.to(device, non_blocking=True))
    if out.ndim != 3 or out.shape[0] != x.shape[0]:
        raise ValueError(f"model returned shape {tuple(out.shape)}; expected (B, H_out, W_out) with B={x.shape[0]}")
    return out.float()


class TorchRunner:
    """The PyTorch backend: ``runner(x)`` = float32 (B, 3, H, W) [0, 1] -> float32 (B, H_out, W_out) on the CPU.

    ``model`` is moved to ``device`` and put in eval mode. With ``optimize`` on a CPU device, the
    model is first turned into the fused, frozen, channels-last graph of
    :func:`semipkd.models.optimize_for_inference` for ``input_size`` (same maps to 1e-4, faster);
    every batch must then be of that size.
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: torch.device | str = "cpu",
        *,
        optimize: bool = False,
        input_size: Sequence[int] | None = None,
    ) -> None:
        self.device = torch.device(device)
        if optimize and self.device.type == "cpu":
            if input_size is None:
                raise ValueError("TorchRunner: optimize=True needs the input_size to trace at")
            model = optimize_for_inference(model, check_size(input_size, "input_size"))
        self.model = model.to(self.device).eval()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return forward_maps(self.model, x, self.device).cpu()


class OnnxRunner:
    """The onnxruntime backend over a graph written by :func:`semipkd.export.export_onnx`.

    ``runner(x)`` = float32 (B, 3, H, W) [0, 1] with (H, W) the graph's input size -> float32
    (B, H_out, W_out) on the CPU; any B (the batch axis is dynamic). The session uses all of
    onnxruntime's graph optimisations (``ORT_ENABLE_ALL``: constant folding, conv + BN/activation
    fusion, the NCHWc layout on x86), ``threads`` intra-op threads (default: torch's current
    setting, so both backends use the same cores) whose waiters sleep instead of spinning (as
    ``OMP_WAIT_POLICY=PASSIVE`` does for torch: spinning waiters cost many times their work on
    a machine whose cores are busy with other processes). ``device`` ``cuda`` puts
    onnxruntime's CUDA provider first when it has one; it falls back to the CPU provider, logged.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, device: torch.device | str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.info("onnxruntime has no CUDA provider here (onnxruntime-gpu not installed); running it on the CPU")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise ValueError(f"{self.path}: onnxruntime cannot load this graph ({e})") from None
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != ["image"] or len(inputs[0].shape) != 4:
            raise ValueError(f"{self.path}: expected one input 'image' (N, 3, H, W), got {[(i.name, i.shape) for i in inputs]}")
        h, w = inputs[0].shape[2:]
        if not (isinstance(h, int) and isinstance(w, int)):
            raise ValueError(f"{self.path}: the input's spatial size must be fixed, got {inputs[0].shape}")
        self.input_size = (h, w)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"{self.path}: graph takes (B, 3, {self.input_size[0]}, {self.input_size[1]}), got {tuple(x.shape)}")
        (out,) = self.session.run(["saliency"], {"image": np.ascontiguousarray(x.detach().cpu().float().numpy())})
        return torch.from_numpy(out)
