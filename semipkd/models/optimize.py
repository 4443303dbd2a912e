"""A faster CPU inference path with the same outputs as eager mode.

:func:`optimize_for_inference` traces the model in eval mode at a fixed input size, freezes the
graph (``torch.jit.freeze`` inlines the weights and folds every convolution's batch norm into the
convolution, timm's ``BatchNormAct2d`` included) and runs it on channels-last tensors, the memory
layout oneDNN's depthwise and pointwise convolution kernels are fastest with on CPU. The math is
unchanged up to float rounding (checked against eager mode to 1e-4 in the tests and the
benchmark).

The graph is specialised to the traced (H, W): timm's TF "same" padding and the decoder's resize
targets become constants. :class:`OptimizedModel` therefore refuses other input sizes instead of
returning silently wrong maps; the batch size may vary.
"""

from __future__ import annotations

import copy
import warnings
from typing import Sequence

import torch
from torch import nn

from .registry import _unwrap

__all__ = ["OptimizedModel", "optimize_for_inference"]


class OptimizedModel(nn.Module):
    """A frozen TorchScript graph of a :class:`SaliencyModel` for one input size.

    forward: float (B, 3, H, W) RGB in [0, 1] with (H, W) == ``input_size`` -> float
    (B, *output_size) in [0, 1], blurred as in eval mode. Inference only (no autograd, no train
    mode); ``config`` is the source model's.
    """

    def __init__(
        self,
        graph: torch.jit.ScriptModule,
        input_size: Sequence[int],
        output_size: Sequence[int],
        config: dict,
        channels_last: bool,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.input_size = tuple(int(s) for s in input_size)
        self.output_size = tuple(int(s) for s in output_size)
        self.config = dict(config)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"this optimized model was traced for (B, 3, {self.input_size[0]}, {self.input_size[1]}) inputs, "
                f"got {tuple(x.shape)}; call optimize_for_inference again for another size"
            )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.graph(x)

    def extra_repr(self) -> str:
        return f"backbone={self.config.get('backbone')!r}, input_size={self.input_size}, output_size={self.output_size}"


def optimize_for_inference(
    model: nn.Module,
    input_size: Sequence[int] = (288, 384),
    *,
    channels_last: bool = True,
) -> OptimizedModel:
    """Frozen, BN-folded, channels-last CPU version of ``model`` for ``input_size`` = (H, W) inputs.

    ``model`` is a :class:`SaliencyModel` (or a wrapper around one); it is copied, not changed.
    The current ``model.output_size`` is baked into the graph. Returns an :class:`OptimizedModel`
    on the CPU in float32.
    """
    src = _unwrap(model)
    h, w = (int(s) for s in input_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"input_size must be two positive ints, got {tuple(input_size)}")
    m = copy.deepcopy(src).cpu().float().eval()
    example = torch.rand(1, 3, h, w)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), warnings.catch_warnings():
        # Shapes turning into constants is exactly what we want here (one input size per graph),
        # so the tracer's warnings about it are expected; other warnings still show.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # TorchScript is deprecated in favour of torch.compile/torch.export, but on this CPU-only
        # setting inductor needs ~2 minutes of C++ compilation per model for ~10% more speed and
        # an exported program runs eagerly; trace + freeze stays the practical path.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|trace_method|freeze)` is deprecated")
        traced = torch.jit.trace(m, example, check_trace=False)
        frozen = torch.jit.freeze(traced)
    return OptimizedModel(frozen, (h, w), src.output_size, src.config, channels_last).eval()
