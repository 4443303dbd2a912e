"""The one resize policy, shared by prepare, evaluation and prediction.

* Images and density maps: PIL bilinear resampling, which is antialiased when shrinking (its
  filter support grows with the scale factor). It is what the paper's loaders apply through
  ``torchvision.transforms.Resize`` on PIL images, so the cached inputs match theirs.
* Density maps are max-normalised again after resizing (antialiasing lowers the peaks), so
  they stay in [0, 1] with maximum 1 as the architecture requires.
* Binary fixation maps are never interpolated (that drops or smears fixations): each fixated
  pixel's centre is mapped to the new grid, ``r' = floor((r + 0.5) * h / H)``, in exact integer
  arithmetic. Several fixations may land on one output pixel; none is lost.

Sizes are (H, W) throughout.
"""

from __future__ import annotations

import numpy as np

__all__ = ["resize_image", "resize_density", "rescale_fixations", "check_size"]


def check_size(size, what: str = "size") -> tuple[int, int]:
    """Return ``size`` as ``(H, W)`` ints, or raise ValueError naming ``what``."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return h, w


def resize_image(image: np.ndarray, size) -> np.ndarray:
    """Resize an RGB image.

    Args:
        image: uint8 (H, W, 3).
        size: (h, w).

    Returns:
        uint8 (h, w, 3), a new array (a copy when the size is unchanged).
    """
    from PIL import Image

    h, w = check_size(size)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"resize_image expects uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[:2] == (h, w):
        return image.copy()
    out = Image.fromarray(np.ascontiguousarray(image), "RGB").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8).copy()


def resize_density(density: np.ndarray, size) -> np.ndarray:
    """Resize a density map and max-normalise it again.

    Args:
        density: float (H, W), non-negative.
        size: (h, w).

    Returns:
        float32 (h, w) in [0, 1] with maximum 1 (all zero if the input is all zero).
    """
    from PIL import Image

    h, w = check_size(size)
    d = np.asarray(density, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"resize_density expects a 2-D map, got shape {d.shape}")
    if d.shape != (h, w):
        d = np.asarray(Image.fromarray(np.ascontiguousarray(d), "F").resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    d = np.clip(d, 0.0, None)
    peak = float(d.max())
    return (d / peak).astype(np.float32) if peak > 0 else np.zeros((h, w), np.float32)


def rescale_fixations(fixations: np.ndarray, size) -> np.ndarray:
    """Map a binary fixation map to another grid by scaling pixel coordinates.

    Args:
        fixations: bool (or {0, 1}) (H, W).
        size: (h, w).

    Returns:
        bool (h, w): True at ``(floor((r + 0.5) * h / H), floor((c + 0.5) * w / W))`` for every
        fixated ``(r, c)``. Identity when the size is unchanged.
    """
    h, w = check_size(size)
    fix = np.asarray(fixations)
    if fix.ndim != 2:
        raise ValueError(f"rescale_fixations expects a 2-D map, got shape {fix.shape}")
    H, W = fix.shape
    rows, cols = np.nonzero(fix)
    out = np.zeros((h, w), dtype=bool)
    # (2r + 1) * h // (2H) == floor((r + 0.5) * h / H) exactly, and is always < h.
    out[(2 * rows + 1) * h // (2 * H), (2 * cols + 1) * w // (2 * W)] = True
    return out
