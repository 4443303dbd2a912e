"""The Semi-PKD decoder, input normalisation and the evaluation blur.

The decoder is the paper's (``PKD/models/head.py`` of the authors' code): five levels, each a
3x3 convolution without bias, an activation and a 2x nearest upsampling, with the encoder's skip
features *added* (not concatenated) after levels 0-3; then a 3x3 refinement convolution, a 3x3
convolution to one channel with a sigmoid, a bilinear resize to ``output_size`` and, in
evaluation mode only, an 11x11 Gaussian blur with sigma 10.5. There is no batch norm.

``width`` scales the decoder's channels. At ``width == 1`` the channels equal the encoder's skip
channels, so the skips add as they are and the parameter count is the paper's; at any other width
each skip goes through a 1x1 projection (no bias) to the decoder's channel count. The encoder is
never narrowed: that keeps its ImageNet weights usable at every width.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Decoder",
    "GaussianBlur",
    "Normalize",
    "scale_channels",
    "eval_blur",
    "BLUR_KERNEL_SIZE",
    "BLUR_SIGMA",
]

# The paper's evaluation-time smoothing (kornia.filters.GaussianBlur2d((11, 11), (10.5, 10.5))).
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 10.5

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU}


def scale_channels(channels: int, width: float) -> int:
    """Decoder channel count for ``width``: unchanged at 1.0, else rounded to a multiple of 8.

    The multiple of 8 (never below 8, never more than 10% under the exact product) is the usual
    MobileNet/EfficientNet rounding; width 1.0 is kept exact so the paper's counts hold even for
    channel numbers that are not multiples of 8.
    """
    if width <= 0 or not math.isfinite(width):
        raise ValueError(f"width must be a finite number > 0, got {width}")
    if width == 1.0:
        return int(channels)
    target = channels * width
    rounded = max(8, int(target + 4) // 8 * 8)
    if rounded < 0.9 * target:
        rounded += 8
    return rounded


class Normalize(nn.Module):
    """Map RGB in [0, 1] to the statistics the encoder's ImageNet weights were trained with.

    Input and output: float (B, 3, H, W). The constants are non-persistent buffers, so they move
    with ``.to(device)`` but stay out of checkpoints (they are a function of the backbone name).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"Normalize needs 3 means and 3 positive stds, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (float32, shape (size,)), centred like kornia's."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).to(torch.float32)


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of (B, 1, H, W) maps with reflect padding (kornia's default border).

    The 2-D kernel is the outer product of two normalised 1-D kernels, so it sums to one and all
    taps are positive: a map in [0, 1] stays in [0, 1]. Needs H, W > size // 2 (reflect padding).
    """

    def __init__(self, size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> None:
        super().__init__()
        if size % 2 != 1 or size < 1:
            raise ValueError(f"blur kernel size must be odd and positive, got {size}")
        self.size = size
        self.sigma = sigma
        self.enabled = True  # switched off for a model's blur-free predictions (see eval_blur)
        k = gaussian_kernel1d(size, sigma)
        self.register_buffer("kernel_h", k.view(1, 1, 1, size), persistent=False)
        self.register_buffer("kernel_v", k.view(1, 1, size, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        p = self.size // 2
        if x.shape[-2] <= p or x.shape[-1] <= p:
            raise ValueError(f"the {self.size}x{self.size} blur needs maps larger than {p}x{p}, got {tuple(x.shape[-2:])}")
        x = F.pad(x, (p, p, p, p), mode="reflect")
        x = F.conv2d(x, self.kernel_h.to(x.dtype))
        return F.conv2d(x, self.kernel_v.to(x.dtype))

    def extra_repr(self) -> str:
        return f"size={self.size}, sigma={self.sigma}"


@contextlib.contextmanager
def eval_blur(model: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """Within the block, ``model``'s eval-mode blur (every :class:`GaussianBlur` in it) is on or
    off as ``enabled`` says; restored afterwards, also on an error."""
    blurs = [m for m in model.modules() if isinstance(m, GaussianBlur)]
    before = [b.enabled for b in blurs]
    for b in blurs:
        b.enabled = bool(enabled)
    try:
        yield model
    finally:
        for b, e in zip(blurs, before, strict=True):
            b.enabled = e


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)


class Decoder(nn.Module):
    """Paper decoder over five encoder features.

    Args:
        encoder_channels: channels of the encoder features (out1, ..., out5) at strides
            2, 4, 8, 16, 32 (e.g. (16, 24, 40, 112, 960) for EEEA-Net-C2).
        act: ``"relu"`` or ``"swish"`` (the paper pairs Swish with EEEA-Net/OFA, ReLU otherwise).
        output_size: (H, W) of the returned maps.
        width: channel multiplier of the decoder (see :func:`scale_channels`).
        head_bias: give the head convolution a bias (the paper's has none, so a zero feature
            vector outputs exactly sigmoid(0) = 0.5). Set it to a prior with
            :meth:`set_head_prior`; until then it is 0 and the head behaves as the paper's.

    ``forward(features)`` takes the five features and returns float (B, H_out, W_out) in [0, 1].
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        act: str = "relu",
        output_size: Sequence[int] = (480, 640),
        width: float = 1.0,
        head_bias: bool = False,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != 5:
            raise ValueError(f"the decoder needs 5 encoder feature channels, got {list(encoder_channels)}")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown decoder activation {act!r}; known: {sorted(ACTIVATIONS)}")
        self.encoder_channels = tuple(int(c) for c in encoder_channels)
        self.act = act
        self.width = float(width)
        self.output_size = output_size
        c1, c2, c3, c4, c5 = self.encoder_channels
        # Level i maps to the channel count of the skip it is added to (paper: channels[1..5]).
        skip_chs = (c4, c3, c2, c1)
        dec = tuple(scale_channels(c, width) for c in (c4, c3, c2, c1, c1))
        act_cls = ACTIVATIONS[act]
        self.levels = nn.ModuleList()
        cin = c5
        for cout in dec:
            self.levels.append(nn.Sequential(_conv3x3(cin, cout), act_cls()))
            cin = cout
        # Skip projections exist only when the decoder is narrower/wider than the encoder.
        # strict=False: 4 skips for 5 levels; the last level (no skip) is left out on purpose.
        self.skips = nn.ModuleList(
            nn.Identity() if s == d else nn.Conv2d(s, d, kernel_size=1, bias=False)
            for s, d in zip(skip_chs, dec, strict=False)
        )
        self.refine = nn.Sequential(_conv3x3(dec[-1], dec[-1]), act_cls())
        self.head = _conv3x3(dec[-1], 1)
        if head_bias:
            # Added after the weight so the paper's head draws the same initial weights; zero until
            # set_head_prior: no random draw, so building the model consumes no extra RNG state.
            self.head.bias = nn.Parameter(torch.zeros(1))
        self.blur = GaussianBlur()
        self.channels = dec

    @property
    def head_bias(self) -> bool:
        """Whether the head convolution has a bias (False: the paper's bias-free head)."""
        return self.head.bias is not None

    @torch.no_grad()
    def set_head_prior(self, mean: float) -> float:
        """Set the head's bias to ``logit(mean)``, so a zero feature vector outputs ``mean``.

        The prior initialisation of sparse dense-prediction heads (RetinaNet's focal-loss prior):
        ``mean`` is the mean value of the training targets, in (0, 1). Returns the bias.
        """
        if self.head.bias is None:
            raise ValueError("the decoder's head has no bias (build it with head_bias=True)")
        if not 0.0 < mean < 1.0 or not math.isfinite(mean):
            raise ValueError(f"a head prior needs a mean target value in (0, 1), got {mean}")
        bias = math.log(mean / (1.0 - mean))
        self.head.bias.fill_(bias)
        return bias

    @property
    def output_size(self) -> tuple[int, int]:
        return self._output_size

    @output_size.setter
    def output_size(self, size: Sequence[int]) -> None:
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"output_size must be (H, W) of two positive ints, got {size}")
        self._output_size = size

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """features: 5 float tensors (B, C_i, H_i, W_i) at strides 2..32 -> (B, H_out, W_out) in [0, 1]."""
        out1, out2, out3, out4, out5 = features
        x = out5
        for i, skip in enumerate((out4, out3, out2, out1)):
            x = self.levels[i](x)
            # Upsampling to the skip's exact size equals 2x nearest when the input size is a
            # multiple of 32 and still lines the maps up when it is not.
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = x + self.skips[i](skip)
        x = self.levels[4](x)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.refine(x)
        x = torch.sigmoid(self.head(x))
        x = F.interpolate(x, size=self.output_size, mode="bilinear", align_corners=False)
        if not self.training:
            x = self.blur(x)
        return x.squeeze(1)
