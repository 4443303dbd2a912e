"""Training-time augmentation: horizontal flip of image and maps together, photometric on the image.

Every random choice comes from a numpy Generator seeded by ``(seed, epoch, index)``
(:func:`augmentation_rng`), never from a global RNG or from the DataLoader worker's state, so a
sample's augmentation depends only on those three numbers: the same with 0 or 8 workers, and
reproducible after a resume.

Photometric augmentation is the paper's: ``ColorJitter(brightness=0.4, contrast=0.4,
saturation=0.4, hue=0.2)`` followed by ``TrivialAugmentWide(num_magnitude_bins=31)``, except that
TrivialAugment's geometric operations (shear, translate, rotate) are left out: they would move
the image away from its saliency maps. The remaining operations and their magnitudes are
torchvision's (see :data:`PHOTOMETRIC_OPS`).

Which augmentations a training run uses is a param (``augment``, ``pseudo_augment``: lists of
:data:`AUGMENTS`); the paper's code gives SALICON flip + ColorJitter, the benchmarks flip only
and the unlabeled pool flip + ColorJitter + TrivialAugmentWide.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from semipkd.names import AUGMENTS

__all__ = [
    "AUGMENTS",
    "PHOTOMETRIC_AUGMENTS",
    "PHOTOMETRIC_OPS",
    "photometric_ops",
    "NUM_MAGNITUDE_BINS",
    "COLOR_JITTER",
    "augmentation_rng",
    "color_jitter",
    "trivial_augment_photometric",
    "augment_pair",
]

#: TrivialAugmentWide's magnitude bins in the paper's configuration.
NUM_MAGNITUDE_BINS = 31
#: ColorJitter ranges of the paper: factors drawn from [1 - v, 1 + v] (hue: [-v, v]).
COLOR_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2}


def _magnitudes(num_bins: int) -> dict[str, tuple[np.ndarray, bool]]:
    """TrivialAugmentWide's photometric operations: name -> (magnitudes, signed)."""
    lin = np.linspace(0.0, 0.99, num_bins)
    return {
        "Identity": (np.zeros(0), False),
        "Brightness": (lin, True),
        "Color": (lin, True),
        "Contrast": (lin, True),
        "Sharpness": (lin, True),
        "Posterize": (8 - np.round(np.arange(num_bins) / ((num_bins - 1) / 6)).astype(int), False),
        "Solarize": (np.linspace(255.0, 0.0, num_bins), False),
        "AutoContrast": (np.zeros(0), False),
        "Equalize": (np.zeros(0), False),
    }


#: The photometric subset of TrivialAugmentWide, in torchvision's order.
PHOTOMETRIC_OPS = tuple(_magnitudes(NUM_MAGNITUDE_BINS))
_SPACE = _magnitudes(NUM_MAGNITUDE_BINS)


#: The photometric augmentations a params file may name, in the order they are applied.
PHOTOMETRIC_AUGMENTS = tuple(a for a in AUGMENTS if a != "hflip")


def photometric_ops(photometric: bool | Sequence[str] | None) -> tuple[str, ...]:
    """The photometric augmentations to apply, in :data:`PHOTOMETRIC_AUGMENTS` order.

    ``True`` means both (ColorJitter, then TrivialAugmentWide's photometric subset), ``False`` or
    ``None`` none; a sequence names them (``"hflip"`` is ignored here, it is not photometric).
    """
    if photometric is None or photometric is False:
        return ()
    if photometric is True:
        return PHOTOMETRIC_AUGMENTS
    names = tuple(photometric)
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(map(repr, unknown))}; known: {', '.join(AUGMENTS)}")
    return tuple(n for n in PHOTOMETRIC_AUGMENTS if n in names)


def augmentation_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` in ``epoch`` of a run seeded with ``seed`` (all >= 0)."""
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {seed}, {epoch}, {index}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def color_jitter(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """torchvision's ColorJitter with the paper's ranges, random draws from ``rng``.

    Args:
        image: uint8 (3, H, W).

    Returns:
        uint8 (3, H, W).
    """
    from torchvision.transforms import functional as F

    b = rng.uniform(1 - COLOR_JITTER["brightness"], 1 + COLOR_JITTER["brightness"])
    c = rng.uniform(1 - COLOR_JITTER["contrast"], 1 + COLOR_JITTER["contrast"])
    s = rng.uniform(1 - COLOR_JITTER["saturation"], 1 + COLOR_JITTER["saturation"])
    h = rng.uniform(-COLOR_JITTER["hue"], COLOR_JITTER["hue"])
    for op in rng.permutation(4):  # ColorJitter applies the four in a random order
        if op == 0:
            image = F.adjust_brightness(image, float(b))
        elif op == 1:
            image = F.adjust_contrast(image, float(c))
        elif op == 2:
            image = F.adjust_saturation(image, float(s))
        else:
            image = F.adjust_hue(image, float(h))
    return image


def trivial_augment_photometric(image: torch.Tensor, rng: np.random.Generator, *, op: str | None = None) -> torch.Tensor:
    """One TrivialAugmentWide operation from :data:`PHOTOMETRIC_OPS` (uniform op, bin and sign).

    Args:
        image: uint8 (3, H, W).
        rng: source of the random choices.
        op: force this operation (tests); its magnitude and sign are still drawn.

    Returns:
        uint8 (3, H, W).
    """
    from torchvision.transforms import functional as F

    name = PHOTOMETRIC_OPS[int(rng.integers(len(PHOTOMETRIC_OPS)))] if op is None else op
    mags, signed = _SPACE[name]
    m = float(mags[int(rng.integers(len(mags)))]) if len(mags) else 0.0
    if signed and rng.integers(2):
        m = -m
    if name == "Brightness":
        return F.adjust_brightness(image, 1.0 + m)
    if name == "Color":
        return F.adjust_saturation(image, 1.0 + m)
    if name == "Contrast":
        return F.adjust_contrast(image, 1.0 + m)
    if name == "Sharpness":
        return F.adjust_sharpness(image, 1.0 + m)
    if name == "Posterize":
        return F.posterize(image, int(m))
    if name == "Solarize":
        return F.solarize(image, m)
    if name == "AutoContrast":
        return F.autocontrast(image)
    if name == "Equalize":
        return F.equalize(image)
    if name == "Identity":
        return image
    raise ValueError(f"unknown photometric op {name!r}; known: {', '.join(PHOTOMETRIC_OPS)}")


def augment_pair(image: torch.Tensor, maps: Sequence[torch.Tensor] = (), *, hflip: bool,
                 photometric: bool | Sequence[str],
                 rng: np.random.Generator | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Augment an input image and the maps that go with it, consistently.

    The draw order is fixed (flip coin first, then the photometric draws), so a given ``rng``
    state always gives the same result.

    Args:
        image: uint8 (3, H, W) RGB.
        maps: tensors whose last two dims are a map of the image (any size and dtype): density,
            fixations, a cached pseudo-label. Flipped with the image; never changed otherwise.
        hflip: flip image and maps left-right with probability 1/2.
        photometric: the photometric augmentations of the image (:func:`photometric_ops`):
            ``True`` = ColorJitter then one TrivialAugmentWide op.
        rng: e.g. ``augmentation_rng(seed, epoch, index)``; may be None when both are off.

    Returns:
        ``(image float32 (3, H, W) in [0, 1], maps)`` with maps in their input dtypes.
    """
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"augment_pair expects a uint8 (3, H, W) image, got {image.dtype} {tuple(image.shape)}")
    maps = tuple(maps)
    ops = photometric_ops(photometric)
    if (hflip or ops) and rng is None:
        raise ValueError("augment_pair: rng is required when hflip or photometric is on")
    if hflip and rng.random() < 0.5:
        image = _flip(image)
        maps = tuple(_flip(m) for m in maps)
    if "color_jitter" in ops:
        image = color_jitter(image.contiguous(), rng)
    if "trivial_augment" in ops:
        image = trivial_augment_photometric(image.contiguous(), rng)
    return _unit_float(image), maps


# Flip and conversion go through numpy for CPU tensors: single-threaded and predictable. torch's
# intra-op threads spin on these tiny ops, which costs 100x when the cores are busy elsewhere
# (a DataLoader with num_workers=0 runs them in the training process).


def _flip(t: torch.Tensor) -> torch.Tensor:
    """Left-right flip of the last dim, as a new contiguous tensor."""
    if t.device.type != "cpu" or t.requires_grad:
        return t.flip(-1)
    return torch.from_numpy(np.ascontiguousarray(t.numpy()[..., ::-1]))


def _unit_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 value / 255, C-contiguous."""
    if image.device.type != "cpu":
        return image.float().div_(255.0).contiguous()
    return torch.from_numpy(np.divide(image.numpy(), np.float32(255.0), dtype=np.float32, order="C"))
