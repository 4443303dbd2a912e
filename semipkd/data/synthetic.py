"""Generated default dataset: SALICON, four benchmarks and an unlabeled pool, in real formats.

On a machine without the real datasets, ``prepare`` calls :func:`generate` and the real readers
then read its output, so every file is written in the on-disk layout of the real dataset
(``docs/architecture.md``, "On-disk layouts"): JPEG stimuli, 8-bit PNG density maps, binary PNG
fixation maps, SALICON gaze ``.mat`` files and OSIE's ``eye/fixations.mat``.

Generative model (one image)
----------------------------
1. **Background**: two colours blended across a soft horizon, plus luminance noise at three
   scales (coarse shading, mid texture, fine grain) and up to 60 *clutter* shapes whose colour is the
   local background colour +-15 %: busy, but low in contrast, so clutter draws few fixations.
   CAT2000's ``Pattern`` category replaces this with a regular grid of identical shapes.
2. **Salient items**, placed center-biased (photographers center their subjects) without overlap:

   ``color``      a filled ellipse/rectangle/triangle whose hue differs from the local background
   ``luminance``  a grey shape much brighter or darker than the local background
   ``face``       a skin-coloured oval with dark eyes, nose and mouth (and often hair)
   ``text``       1-3 rows of small dark glyphs, each 2-3 strokes, often on a light sign

   Each item gets a Gaussian "attention" component. Its weight is
   ``color/luminance: 2.2 * clip(dE / 50, 0.1, 1.5) * s``, ``face: 3.5 * sqrt(s)``,
   ``text: 2.5 * sqrt(s)``, where ``dE`` is the CIE76 colour difference between the item and
   the mean background under it and ``s = clip(sqrt(area_fraction / 0.02), 0.4, 2)`` grows with
   size. So contrast and size raise saliency, and faces and text attract fixations whatever their
   contrast, as in human data. Components are centred on the item (a face's slightly above its
   centre, where the eyes are) with standard deviations proportional to its extent.
3. **Center bias**: a Gaussian at the image centre, std ``0.22 * (W, H)``, whose share of the
   Gaussian mass is the flavour's ``center_mass`` (0.2-0.4).
4. **Observers**: each of ``observers`` simulated observers makes ``1 + Poisson(f - 1)``
   fixations (``f = fixations_per_observer``). Each fixation picks the uniform "lapse" component
   with probability 0.04, else a Gaussian component with probability proportional to its weight,
   then a point from it; eye-tracker noise (std ``0.008 * max(H, W)``) is folded into every
   component's std. Points outside ``[0, W-1] x [0, H-1]`` are redrawn from scratch. The *known
   density* (:attr:`Sample.known_density`) is therefore exactly the weighted sum of those
   Gaussians plus the uniform term, evaluated on the pixel grid and normalised to sum 1.
   Durations are ``60 + Gamma(4, 60)`` ms (mean 300 ms).
5. **Maps**, by the same functions the readers use on real fixations
   (:func:`semipkd.data.validate.points_to_fixation_map` and ``density_from_fixations``): the
   binary fixation map marks every fixation rounded to the nearest pixel (half up); the density
   map is that binary map blurred with a Gaussian of std ``density_sigma * max(H, W)`` px
   (default 0.03: OSIE's authors use 24 px at 800x600), zero outside the image and truncated
   at 8.9 std, then max-normalised and stored as ``round(255 * d)``.

Files store 1-based fixation coordinates (``x0 + 1``), so they lie in ``[1, W] x [1, H]``.

Benchmark flavours
------------------
So that the five labelled sets are distinct benchmarks, each has its own image shapes and
mixture of items (:data:`FLAVOURS`): SALICON 4:3 at ``image_size``, everyday scenes; MIT1003
varying aspect ratios and orientations, many faces and text; CAT2000 16:9 in five categories
(Action: faces; Indoor: clutter and text; Object: one large object; Outdoor: sparse objects;
Pattern: one odd item in a regular pattern, strong center bias); PASCAL-S 1-3 large objects;
OSIE 4:3 with many objects, faces and text and a weaker center bias. The unlabeled pool uses
the SALICON flavour, so the teacher's knowledge transfers to it.

Determinism: each image draws from its own generator seeded by ``(seed, dataset code, index)``,
so an image does not depend on how many others are generated; JPEG/PNG are encoded by OpenCV
at fixed settings, and the ``.mat`` header's creation time is replaced by a fixed text. The same
arguments give byte-identical files.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

from ..io import atomic_dir
from ..names import BENCHMARKS
from .validate import density_from_fixations, points_to_fixation_map

__all__ = [
    "BENCHMARKS",
    "CAT2000_CATEGORIES",
    "FLAVOURS",
    "Flavour",
    "Sample",
    "generate",
    "image_rng",
    "synthesize",
]

log = logging.getLogger(__name__)

CAT2000_CATEGORIES = ("Action", "Indoor", "Object", "Outdoor", "Pattern")
ITEM_KINDS = ("color", "luminance", "face", "text")

# Seeds per (dataset, split): fixed forever, or every generated image changes.
_DATASET_CODES = MappingProxyType(
    {
        "salicon/train": 1,
        "salicon/val": 2,
        "mit1003": 3,
        "cat2000": 4,
        "pascal_s": 5,
        "osie": 6,
        "unlabeled": 7,
    }
)

_LAPSE = 0.04  # share of fixations drawn uniformly: looks that no image feature explains
_NOISE = 0.008  # eye-tracker noise std, fraction of the longer side
_CENTER_STD = 0.22  # center-bias Gaussian std, fraction of (W, H)
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by semipkd.data.synthetic"


@dataclass(frozen=True)
class Flavour:
    """What makes one benchmark's images its own.

    item_mix: (kind, probability) pairs over :data:`ITEM_KINDS`, probabilities summing to 1.
    n_items: inclusive range of salient items per image.
    item_scale: item half-extent as a fraction of min(H, W), (low, high).
    clutter: inclusive range of low-contrast distractor shapes.
    center_mass: share of the Gaussian mass given to the central Gaussian, in [0, 1).
    background: ``gradient`` or ``pattern``.
    aspects: H / W choices (landscape); ignored where the caller fixes the size.
    portrait: probability of swapping H and W.
    """

    item_mix: tuple[tuple[str, float], ...]
    n_items: tuple[int, int]
    item_scale: tuple[float, float]
    clutter: tuple[int, int]
    center_mass: float
    background: str = "gradient"
    aspects: tuple[float, ...] = (0.75,)
    portrait: float = 0.0


FLAVOURS: Mapping[str, Flavour] = MappingProxyType(
    {
        "salicon": Flavour(
            item_mix=(("color", 0.4), ("luminance", 0.25), ("face", 0.2), ("text", 0.15)),
            n_items=(2, 5),
            item_scale=(0.07, 0.18),
            clutter=(15, 40),
            center_mass=0.25,
        ),
        "mit1003": Flavour(
            item_mix=(("color", 0.3), ("luminance", 0.2), ("face", 0.3), ("text", 0.2)),
            n_items=(1, 4),
            item_scale=(0.06, 0.16),
            clutter=(20, 50),
            center_mass=0.3,
            aspects=(0.75, 0.667, 0.5625, 1.0),
            portrait=0.25,
        ),
        "pascal_s": Flavour(
            item_mix=(("color", 0.55), ("luminance", 0.25), ("face", 0.15), ("text", 0.05)),
            n_items=(1, 3),
            item_scale=(0.14, 0.28),
            clutter=(10, 25),
            center_mass=0.25,
            aspects=(0.75, 0.667, 0.8),
            portrait=0.2,
        ),
        "osie": Flavour(
            item_mix=(("color", 0.35), ("luminance", 0.2), ("face", 0.25), ("text", 0.2)),
            n_items=(3, 7),
            item_scale=(0.06, 0.14),
            clutter=(15, 35),
            center_mass=0.2,
        ),
        "cat2000/Action": Flavour(
            item_mix=(("color", 0.3), ("luminance", 0.2), ("face", 0.5)),
            n_items=(2, 4),
            item_scale=(0.08, 0.18),
            clutter=(15, 35),
            center_mass=0.3,
            aspects=(0.5625,),
        ),
        "cat2000/Indoor": Flavour(
            item_mix=(("color", 0.4), ("luminance", 0.3), ("face", 0.1), ("text", 0.2)),
            n_items=(2, 5),
            item_scale=(0.07, 0.16),
            clutter=(40, 60),
            center_mass=0.3,
            aspects=(0.5625,),
        ),
        "cat2000/Object": Flavour(
            item_mix=(("color", 0.6), ("luminance", 0.4)),
            n_items=(1, 1),
            item_scale=(0.22, 0.34),
            clutter=(10, 20),
            center_mass=0.3,
            aspects=(0.5625,),
        ),
        "cat2000/Outdoor": Flavour(
            item_mix=(("color", 0.5), ("luminance", 0.4), ("face", 0.1)),
            n_items=(1, 3),
            item_scale=(0.06, 0.14),
            clutter=(10, 25),
            center_mass=0.35,
            aspects=(0.5625,),
        ),
        "cat2000/Pattern": Flavour(
            item_mix=(("color", 1.0),),
            n_items=(1, 1),
            item_scale=(0.07, 0.12),
            clutter=(0, 0),
            center_mass=0.4,
            background="pattern",
            aspects=(0.5625,),
        ),
    }
)


@dataclass(frozen=True)
class Sample:
    """One generated image with its ground truth and simulated observers.

    image: uint8 (H, W, 3), RGB.
    known_density: float64 (H, W), >= 0, sums to 1: the distribution every fixation is drawn from.
    fixations: one float64 (n_i, 2) array per observer, 0-based (x, y) in [0, W-1] x [0, H-1].
    durations: one uint16 (n_i,) array of fixation durations (ms) per observer.
    fixation_map: bool (H, W), True where a fixation rounds to the pixel.
    saliency: uint8 (H, W), the blurred, max-normalised fixation map times 255.
    """

    image: np.ndarray
    known_density: np.ndarray
    fixations: tuple[np.ndarray, ...]
    durations: tuple[np.ndarray, ...]
    fixation_map: np.ndarray
    saliency: np.ndarray


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def image_rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` of ``dataset`` (``salicon/train``, ``osie``, ...)."""
    if dataset not in _DATASET_CODES:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(_DATASET_CODES)}")
    return np.random.default_rng([seed, _DATASET_CODES[dataset], index])


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """float32 (3,) RGB in [0, 1] from hue in degrees [0, 360) and s, v in [0, 1]."""
    px = np.array([[[h % 360.0, s, v]]], dtype=np.float32)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0]


def _delta_e(rgb_a: np.ndarray, rgb_b: np.ndarray) -> float:
    """CIE76 colour difference of two float RGB colours in [0, 1] (sRGB-ish, as OpenCV converts)."""
    px = np.stack([rgb_a, rgb_b]).astype(np.float32).reshape(1, 2, 3)
    lab = cv2.cvtColor(px, cv2.COLOR_RGB2Lab)[0]
    return float(np.linalg.norm(lab[0] - lab[1]))


def _pick_size(flavour: Flavour, rng: np.random.Generator, long_side: int) -> tuple[int, int]:
    """(H, W) for one benchmark image: the flavour's aspect at ``long_side``, maybe portrait."""
    aspect = flavour.aspects[rng.integers(len(flavour.aspects))]
    size = (max(16, int(round(long_side * aspect))), long_side)
    return (size[1], size[0]) if rng.random() < flavour.portrait else size


def _mat_bytes(variables: dict) -> bytes:
    """MATLAB v5 (compressed) bytes of ``variables`` with a fixed header (no creation time)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=True, oned_as="row")
    data = bytearray(buf.getvalue())
    # The first 116 bytes are free text that scipy fills with time.asctime().
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def _png(gray: np.ndarray) -> bytes:
    ok, enc = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a PNG")
    return enc.tobytes()


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, enc = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return enc.tobytes()


# --------------------------------------------------------------------------------------------
# Scene rendering
# --------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, flavour: Flavour, h: int, w: int) -> np.ndarray:
    """float32 (H, W, 3) RGB in [0, 1]: smooth colours, multi-scale texture and clutter."""
    yy = np.arange(h, dtype=np.float32)[:, None, None]
    if flavour.background == "pattern":
        base = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.85))
        img = np.broadcast_to(base, (h, w, 3)).copy()
    elif flavour.background == "gradient":
        top = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, 0.45), rng.uniform(0.4, 0.9))
        bottom = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, 0.45), rng.uniform(0.3, 0.8))
        horizon = rng.uniform(0.3, 0.7) * h
        mix = 1.0 / (1.0 + np.exp(-(yy - horizon) / (0.08 * h)))
        img = top * (1.0 - mix) + bottom * mix
    else:
        raise ValueError(f"unknown background {flavour.background!r}; known: gradient, pattern")
    # Luminance texture at three scales, mostly achromatic so hue stays an item cue.
    tex = np.zeros((h, w), dtype=np.float32)
    for cells, amp in ((6, 0.08), (h // 4, 0.04), (h, 0.02)):
        ch, cw = max(2, cells), max(2, int(round(cells * w / h)))
        noise = rng.standard_normal((ch, cw)).astype(np.float32)
        tex += amp * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + tex[:, :, None], 0.0, 1.0).astype(np.float32)

    if flavour.background == "pattern":
        # A regular grid of identical shapes: busy but uniform, so nothing in it pops out.
        color = np.clip(img[h // 2, w // 2] + rng.uniform(-0.25, 0.25, 3), 0, 1)
        step = int(rng.integers(8, 14))
        rad = max(1, step // 4)
        square = rng.random() < 0.5
        for cy in range(step // 2, h, step):
            for cx in range(step // 2, w, step):
                if square:
                    cv2.rectangle(img, (cx - rad, cy - rad), (cx + rad, cy + rad), color.tolist(), -1)
                else:
                    cv2.circle(img, (cx, cy), rad, color.tolist(), -1)
    lo, hi = flavour.clutter
    for _ in range(int(rng.integers(lo, hi + 1))):
        cx, cy = int(rng.integers(w)), int(rng.integers(h))
        color = np.clip(img[cy, cx] * (1.0 + rng.uniform(-0.15, 0.15, 3)), 0, 1).tolist()
        size = int(rng.integers(2, max(3, min(h, w) // 12)))
        shape = rng.integers(3)
        if shape == 0:
            corner = (cx + size, cy + int(rng.integers(1, size + 1)))
            cv2.rectangle(img, (cx, cy), corner, color, -1)
        elif shape == 1:
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(img, (cx, cy), (size, max(1, size // 2)), angle, 0, 360, color, -1)
        else:
            dx, dy = int(rng.integers(-2 * size, 2 * size + 1)), int(rng.integers(-size, size + 1))
            cv2.line(img, (cx, cy), (cx + dx, cy + dy), color, 1)
    return img


@dataclass(frozen=True)
class _Item:
    """A drawn item's attention component: weight, mean (x, y), std (x, y), in pixels."""

    weight: float
    mean: tuple[float, float]
    std: tuple[float, float]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive), for overlap tests


def _place(rng, h, w, half_w, half_h, boxes):
    """Center-biased position for an item of half extents (half_w, half_h) avoiding ``boxes``."""
    for _ in range(30):
        if rng.random() < 0.6:
            cx = rng.normal(w / 2, 0.2 * w)
            cy = rng.normal(h / 2, 0.2 * h)
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        cx = float(np.clip(cx, half_w + 1, w - half_w - 2))
        cy = float(np.clip(cy, half_h + 1, h - half_h - 2))
        box = (int(cx - half_w) - 1, int(cy - half_h) - 1, int(cx + half_w) + 1, int(cy + half_h) + 1)
        if all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for b in boxes):
            return cx, cy, box
    return None


def _size_factor(area: float, h: int, w: int) -> float:
    return float(np.clip(math.sqrt(area / (h * w) / 0.02), 0.4, 2.0))


def _draw_shape(img, rng, cx, cy, rx, ry, color):
    """Filled ellipse, rotated rectangle or triangle in ``color`` (uint8 RGB tuple)."""
    shape = rng.integers(3)
    angle = float(rng.uniform(0, 180))
    if shape == 0:
        center = (int(round(cx)), int(round(cy)))
        cv2.ellipse(img, center, (int(rx), int(ry)), angle, 0, 360, color, -1, cv2.LINE_AA)
        return
    if shape == 1:
        corners = np.array([[-rx, -ry], [rx, -ry], [rx, ry], [-rx, ry]], dtype=np.float64) * 0.85
    else:
        corners = np.array([[0, -ry], [rx, ry], [-rx, ry]], dtype=np.float64)
    rot = math.radians(angle if shape == 1 else rng.uniform(-20, 20))
    rmat = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    pts = corners @ rmat.T + [cx, cy]
    cv2.fillPoly(img, [np.rint(pts).astype(np.int32)], color, cv2.LINE_AA)


def _contrast_item(img, bg, rng, kind, cx, cy, rx, ry, box):
    """Draw a color/luminance item; its weight grows with contrast to the background under it."""
    h, w = bg.shape[:2]
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w - 1), min(box[3], h - 1)
    local = bg[y0 : y1 + 1, x0 : x1 + 1].reshape(-1, 3).mean(axis=0)
    hsv = cv2.cvtColor(local.reshape(1, 1, 3).astype(np.float32), cv2.COLOR_RGB2HSV)[0, 0]
    if kind == "color":
        offset = rng.uniform(25, 180) * (1 if rng.random() < 0.5 else -1)
        color = _hsv_to_rgb(hsv[0] + offset, rng.uniform(0.35, 1.0), rng.uniform(0.45, 1.0))
    else:
        delta = rng.uniform(0.1, 0.75)
        value = hsv[2] + delta if hsv[2] + delta <= 1.0 or hsv[2] - delta < 0 else hsv[2] - delta
        color = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.12), float(np.clip(value, 0, 1)))
    _draw_shape(img, rng, cx, cy, rx, ry, tuple(int(round(255 * c)) for c in color))
    contrast = float(np.clip(_delta_e(color, local) / 50.0, 0.1, 1.5))
    weight = 2.2 * contrast * _size_factor(math.pi * rx * ry, h, w)
    return _Item(weight, (cx, cy), (0.45 * rx, 0.45 * ry), box)


_SKIN = ((0.93, 0.76, 0.62), (0.87, 0.67, 0.52), (0.76, 0.56, 0.42), (0.6, 0.42, 0.3), (0.42, 0.29, 0.2))


def _face_item(img, rng, cx, cy, rx, ry, box):
    """Skin oval with eyes, nose and mouth; faces attract fixations whatever their contrast."""
    h, w = img.shape[:2]
    skin = np.clip(np.array(_SKIN[rng.integers(len(_SKIN))]) + rng.uniform(-0.04, 0.04, 3), 0, 1)
    c = (int(round(cx)), int(round(cy)))
    if rng.random() < 0.7:
        hair = tuple(int(v) for v in rng.integers(10, 90, 3))
        top = (c[0], c[1] - int(0.15 * ry))
        cv2.ellipse(img, top, (int(rx * 1.1), int(ry * 0.95)), 0, 180, 360, hair, -1, cv2.LINE_AA)
    skin_rgb = tuple(int(255 * v) for v in skin)
    cv2.ellipse(img, c, (int(rx), int(ry)), 0, 0, 360, skin_rgb, -1, cv2.LINE_AA)
    eye_r = max(1, int(round(0.17 * rx)))
    eye_y = int(round(cy - 0.15 * ry))
    for side in (-1, 1):
        ex = int(round(cx + side * 0.4 * rx))
        if eye_r >= 2:
            cv2.circle(img, (ex, eye_y), eye_r + 1, (240, 240, 240), -1, cv2.LINE_AA)
        cv2.circle(img, (ex, eye_y), eye_r, (20, 15, 15), -1, cv2.LINE_AA)
    dark = tuple(int(v * 0.55 * 255) for v in skin)
    cv2.line(img, (c[0], eye_y + eye_r), (c[0], int(round(cy + 0.2 * ry))), dark, 1, cv2.LINE_AA)
    cv2.ellipse(
        img, (c[0], int(round(cy + 0.42 * ry))), (max(1, int(0.35 * rx)), max(1, int(0.12 * ry))),
        0, 0, 180, (120, 30, 35), 1 + int(rx > 10), cv2.LINE_AA,
    )
    weight = 3.5 * math.sqrt(_size_factor(math.pi * rx * ry, h, w))
    return _Item(weight, (cx, cy - 0.1 * ry), (0.55 * rx, 0.5 * ry), box)


# Glyph strokes in a unit cell: (x0, y0, x1, y1).
_STROKES = (
    (0, 0, 0, 1), (0.5, 0, 0.5, 1), (1, 0, 1, 1), (0, 0, 1, 0), (0, 0.5, 1, 0.5),
    (0, 1, 1, 1), (0, 1, 1, 0), (0, 0, 1, 1), (0, 0.5, 0.5, 0), (0.5, 1, 1, 0.5),
)


def _text_item(img, rng, cx, cy, gh, gw, rows, cols, box):
    """Rows of glyphs (2-3 strokes each), on a light sign or straight on the background."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    local = img[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1].reshape(-1, 3).mean(axis=0) / 255.0
    if rng.random() < 0.6:
        sign = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.2), rng.uniform(0.85, 1.0))
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(int(255 * v) for v in sign), -1)
        ink = (int(rng.integers(0, 50)),) * 3
    else:
        lum = float(local.mean())
        ink = (int(rng.integers(0, 40)),) * 3 if lum > 0.45 else (int(rng.integers(215, 256)),) * 3
    gap = max(1, gw // 3)
    for r in range(rows):
        top = y0 + 2 + r * int(round(gh * 1.6))
        col = 0
        for _ in range(cols):
            left = x0 + 2 + col * (gw + gap)
            if rng.random() < 0.15 and col > 0:  # word break
                col += 1
                continue
            for k in rng.choice(len(_STROKES), size=int(rng.integers(2, 4)), replace=False):
                sx0, sy0, sx1, sy1 = _STROKES[k]
                p0 = (int(round(left + sx0 * (gw - 1))), int(round(top + sy0 * (gh - 1))))
                p1 = (int(round(left + sx1 * (gw - 1))), int(round(top + sy1 * (gh - 1))))
                cv2.line(img, p0, p1, ink, 1)
            col += 1
    weight = 2.5 * math.sqrt(_size_factor(bw * bh, h, w))
    return _Item(weight, (cx, cy), (0.35 * bw, 0.5 * bh + 1.0), box)


def _render(rng: np.random.Generator, flavour: Flavour, h: int, w: int) -> tuple[np.ndarray, list[_Item]]:
    """uint8 (H, W, 3) RGB image and its salient items' attention components."""
    bg = _background(rng, flavour, h, w)
    img = np.clip(np.rint(bg * 255.0), 0, 255).astype(np.uint8)
    kinds, probs = zip(*flavour.item_mix, strict=True)
    for kind in kinds:
        if kind not in ITEM_KINDS:
            raise ValueError(f"unknown item kind {kind!r}; known: {ITEM_KINDS}")
    probs = np.asarray(probs, dtype=np.float64)
    short = min(h, w)
    items: list[_Item] = []
    n_items = int(rng.integers(flavour.n_items[0], flavour.n_items[1] + 1))
    for _ in range(n_items):
        kind = kinds[rng.choice(len(kinds), p=probs / probs.sum())]
        scale = rng.uniform(*flavour.item_scale) * short
        if kind == "face":
            rx = max(5.0, 0.7 * scale)
            ry = 1.3 * rx
            spot = _place(rng, h, w, rx * 1.1, ry, [it.box for it in items])
            if spot is not None:
                items.append(_face_item(img, rng, spot[0], spot[1], rx, ry, spot[2]))
        elif kind == "text":
            gh = max(4, int(round(rng.uniform(0.035, 0.06) * short)))
            gw = max(3, int(round(0.65 * gh)))
            rows = int(rng.integers(1, 4))
            cols = int(rng.integers(4, 11))
            cols = min(cols, max(2, (w - 8) // (gw + max(1, gw // 3))))
            half_w = (cols * (gw + max(1, gw // 3)) + 3) / 2
            half_h = (rows * gh * 1.6 + 3) / 2
            spot = _place(rng, h, w, half_w, half_h, [it.box for it in items])
            if spot is not None:
                cx, cy, _ = spot
                box = (int(cx - half_w), int(cy - half_h), int(cx + half_w), int(cy + half_h))
                items.append(_text_item(img, rng, cx, cy, gh, gw, rows, cols, box))
        else:
            rx = scale * rng.uniform(0.7, 1.3)
            ry = scale * rng.uniform(0.7, 1.3)
            spot = _place(rng, h, w, rx, ry, [it.box for it in items])
            if spot is not None:
                items.append(_contrast_item(img, bg, rng, kind, spot[0], spot[1], rx, ry, spot[2]))
    if not items:
        raise RuntimeError(f"could not place any item in a {h}x{w} image; item_scale is too large")
    return img, items


# --------------------------------------------------------------------------------------------
# Observers
# --------------------------------------------------------------------------------------------


def _components(items: Sequence[_Item], flavour: Flavour, h: int, w: int):
    """Mixture weights (K+1,) -- the last is the uniform lapse -- means (K, 2) and stds (K, 2)."""
    noise = _NOISE * max(h, w)
    item_w = np.array([it.weight for it in items], dtype=np.float64)
    center_w = flavour.center_mass / (1.0 - flavour.center_mass) * item_w.sum()
    weights = np.append(item_w, center_w)
    weights = np.append((1.0 - _LAPSE) * weights / weights.sum(), _LAPSE)
    means = np.array([it.mean for it in items] + [((w - 1) / 2, (h - 1) / 2)], dtype=np.float64)
    stds = np.array([it.std for it in items] + [(_CENTER_STD * w, _CENTER_STD * h)], dtype=np.float64)
    stds = np.sqrt(np.maximum(stds, 0.5) ** 2 + noise**2)
    return weights, means, stds


def _known_density(weights, means, stds, h: int, w: int) -> np.ndarray:
    """float64 (H, W) summing to 1: the mixture evaluated at pixel centres, truncated to the image.

    Rejection sampling (redraw the component too) makes the truncated density exactly
    proportional to the untruncated mixture inside the box, so no per-component renormalisation.
    """
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    dens = np.full((h, w), weights[-1] / (h * w))
    for wk, (mx, my), (sx, sy) in zip(weights[:-1], means, stds, strict=True):
        gx = np.exp(-0.5 * ((xs - mx) / sx) ** 2) / (math.sqrt(2 * math.pi) * sx)
        gy = np.exp(-0.5 * ((ys - my) / sy) ** 2) / (math.sqrt(2 * math.pi) * sy)
        dens += wk * np.outer(gy, gx)
    return dens / dens.sum()


def _sample_points(rng, weights, means, stds, n: int, h: int, w: int) -> np.ndarray:
    """float64 (n, 2) 0-based (x, y) points from the mixture, all inside [0, W-1] x [0, H-1]."""
    out = np.empty((n, 2), dtype=np.float64)
    todo = np.arange(n)
    lapse = len(weights) - 1
    while todo.size:
        comp = rng.choice(len(weights), size=todo.size, p=weights)
        pts = np.empty((todo.size, 2))
        uni = comp == lapse
        pts[uni] = rng.uniform((0, 0), (w - 1, h - 1), size=(int(uni.sum()), 2))
        g = ~uni
        pts[g] = means[comp[g]] + stds[comp[g]] * rng.standard_normal((int(g.sum()), 2))
        ok = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        out[todo[ok]] = pts[ok]
        todo = todo[~ok]
    return out


def synthesize(
    rng: np.random.Generator,
    flavour: str,
    size: tuple[int, int],
    *,
    observers: int = 15,
    fixations_per_observer: float = 8.0,
    density_sigma: float = 0.03,
) -> Sample:
    """Render one image of ``flavour`` (a key of :data:`FLAVOURS`) at ``size`` (H, W) and simulate
    ``observers`` viewing it (see the module docstring for the model)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; known: {sorted(FLAVOURS)}")
    fl = FLAVOURS[flavour]
    h, w = size
    img, items = _render(rng, fl, h, w)
    weights, means, stds = _components(items, fl, h, w)
    known = _known_density(weights, means, stds, h, w)
    counts = 1 + rng.poisson(max(fixations_per_observer - 1.0, 0.0), size=observers)
    counts = np.minimum(counts, int(math.ceil(3 * fixations_per_observer)))
    points = _sample_points(rng, weights, means, stds, int(counts.sum()), h, w)
    durations = np.clip(60.0 + rng.gamma(4.0, 60.0, size=points.shape[0]), 60, 2000)
    splits = np.cumsum(counts)[:-1]
    # The maps are built as the readers build them from real fixations (one rasteriser, one blur).
    fix, _inside = points_to_fixation_map(points, (h, w))
    dens = density_from_fixations(fix, density_sigma * max(h, w)) if fix.any() else np.zeros((h, w), np.float32)
    return Sample(
        image=img,
        known_density=known,
        fixations=tuple(np.split(points, splits)),
        durations=tuple(np.split(np.rint(durations).astype(np.uint16), splits)),
        fixation_map=fix,
        saliency=np.clip(np.rint(dens * 255.0), 0, 255).astype(np.uint8),
    )


# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------


def _salicon_mat(sample: Sample, stem: str, rng: np.random.Generator) -> bytes:
    """SALICON gaze struct: ``gaze`` (observers x 1) with location, timestamp, fixations.

    ``location`` holds raw gaze samples (4 per fixation, 1-based integer pixels, +-0.5 px
    jitter) and ``timestamp`` their times in ms from stimulus onset, as in the real files.
    """
    h, w = sample.fixation_map.shape
    fields = [("location", "O"), ("timestamp", "O"), ("fixations", "O")]
    gaze = np.zeros((len(sample.fixations), 1), dtype=fields)
    for i, (pts, dur) in enumerate(zip(sample.fixations, sample.durations, strict=True)):
        starts = np.concatenate([[0.0], np.cumsum(dur[:-1].astype(np.float64) + 40.0)])
        times = (starts[:, None] + dur[:, None] * np.arange(4)[None, :] / 4.0).reshape(-1, 1)
        raw = np.repeat(pts, 4, axis=0) + rng.uniform(-0.5, 0.5, size=(pts.shape[0] * 4, 2))
        raw = np.clip(np.rint(raw) + 1.0, 1.0, [w, h])
        gaze["location"][i, 0] = raw
        gaze["timestamp"][i, 0] = np.rint(times)
        gaze["fixations"][i, 0] = pts + 1.0
    return _mat_bytes({"gaze": gaze, "resolution": np.array([[h, w]], dtype=np.float64), "image": stem})


def _osie_mat(entries: Sequence[tuple[str, Sample]]) -> bytes:
    """OSIE ``fixations``: a (N, 1) cell of 1x1 structs (img, subjects), ``subjects`` a
    (observers, 1) cell of 1x1 structs (fix_x, fix_y: 1 x n double, fix_duration: 1 x n uint16),
    the nesting of the authors' ``eye/fixations.mat``."""
    cells = np.empty((len(entries), 1), dtype=object)
    for i, (name, sample) in enumerate(entries):
        subjects = np.empty((len(sample.fixations), 1), dtype=object)
        for j, (pts, dur) in enumerate(zip(sample.fixations, sample.durations, strict=True)):
            rec = np.zeros((1, 1), dtype=[("fix_x", "O"), ("fix_y", "O"), ("fix_duration", "O")])
            rec["fix_x"][0, 0] = (pts[:, 0] + 1.0).reshape(1, -1)
            rec["fix_y"][0, 0] = (pts[:, 1] + 1.0).reshape(1, -1)
            rec["fix_duration"][0, 0] = dur.reshape(1, -1)
            subjects[j, 0] = rec
        entry = np.zeros((1, 1), dtype=[("img", "O"), ("subjects", "O")])
        entry["img"][0, 0] = name
        entry["subjects"][0, 0] = subjects
        cells[i, 0] = entry
    return _mat_bytes({"fixations": cells})


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def generate(
    root: str | Path,
    *,
    seed: int = 0,
    salicon: tuple[int, int] = (240, 60),
    benchmark: int | Mapping[str, int] = 60,
    unlabeled: int = 300,
    image_size: tuple[int, int] = (120, 160),
    benchmark_long_side: int | None = None,
    observers: int = 15,
    fixations_per_observer: float = 8.0,
    density_sigma: float = 0.03,
    jpeg_quality: int = 90,
) -> dict:
    """Write the generated datasets under ``root`` and return a JSON-able summary.

    Writes ``root/salicon`` (``salicon`` = (train, val) images at ``image_size``), ``root/mit1003``,
    ``root/cat2000``, ``root/pascal_s``, ``root/osie`` (``benchmark`` images each, or a mapping
    from benchmark id to count; longer side ``benchmark_long_side`` px, default 1.25 times
    ``image_size``'s longer side, so 200 for 120x160) and ``root/unlabeled``
    (``unlabeled`` JPEGs at ``image_size``). Each folder is built in a temporary folder beside it
    and renamed into place, replacing an older one.

    ``density_sigma`` is the density maps' blur std as a fraction of the image's longer side.
    """
    root = Path(root)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if len(salicon) != 2:
        raise ValueError(f"salicon must be (train, val) counts, got {salicon!r}")
    n_train = _check_count(salicon[0], "salicon[0] (train)")
    n_val = _check_count(salicon[1], "salicon[1] (val)")
    if isinstance(benchmark, Mapping):
        unknown = sorted(set(benchmark) - set(BENCHMARKS))
        if unknown:
            raise ValueError(f"benchmark has unknown ids {unknown}; known: {list(BENCHMARKS)}")
        counts = {b: _check_count(benchmark.get(b, 0), f"benchmark[{b!r}]") for b in BENCHMARKS}
    else:
        counts = {b: _check_count(benchmark, "benchmark") for b in BENCHMARKS}
    n_pool = _check_count(unlabeled, "unlabeled")
    if len(image_size) != 2 or min(image_size) < 32:
        raise ValueError(f"image_size must be (H, W) with both >= 32, got {image_size!r}")
    image_size = (int(image_size[0]), int(image_size[1]))
    if benchmark_long_side is None:
        benchmark_long_side = int(round(1.25 * max(image_size)))
    if benchmark_long_side < 48:
        raise ValueError(f"benchmark_long_side must be >= 48, got {benchmark_long_side!r}")
    if observers < 1:
        raise ValueError(f"observers must be >= 1, got {observers!r}")
    if fixations_per_observer < 1:
        raise ValueError(f"fixations_per_observer must be >= 1, got {fixations_per_observer!r}")
    if not 0 < density_sigma < 0.5:
        raise ValueError(f"density_sigma must be in (0, 0.5), got {density_sigma!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality!r}")

    observe = dict(
        observers=observers, fixations_per_observer=fixations_per_observer, density_sigma=density_sigma
    )
    total = n_train + n_val + sum(counts.values()) + n_pool
    bar = tqdm(total=total, desc="synthetic data", unit="img", disable=None)
    n_fix = 0

    def make(dataset: str, index: int, flavour: str, size: tuple[int, int] | None):
        """Draw image ``index`` of ``dataset``; also return its generator for the file writers."""
        nonlocal n_fix
        rng = image_rng(seed, dataset, index)
        if size is None:
            size = _pick_size(FLAVOURS[flavour], rng, benchmark_long_side)
        sample = synthesize(rng, flavour, size, **observe)
        n_fix += sum(len(f) for f in sample.fixations)
        bar.update()
        return sample, rng

    def write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    root.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, list[list[int]]] = {}
    try:
        with atomic_dir(root / "salicon") as tmp:
            for split, n in (("train", n_train), ("val", n_val)):
                for i in range(n):
                    stem = f"synthetic_{split}_{i:06d}"
                    sample, rng = make(f"salicon/{split}", i, "salicon", image_size)
                    write(tmp / "stimuli" / split / f"{stem}.jpg", _jpeg(sample.image, jpeg_quality))
                    write(tmp / "saliency" / split / f"{stem}.png", _png(sample.saliency))
                    write(tmp / "fixations" / split / f"{stem}.mat", _salicon_mat(sample, stem, rng))
        sizes["salicon"] = [list(image_size)]

        for name in ("mit1003", "pascal_s", "cat2000"):
            seen: set[tuple[int, int]] = set()
            with atomic_dir(root / name) as tmp:
                for i in range(counts[name]):
                    if name == "cat2000":
                        category = CAT2000_CATEGORIES[i % len(CAT2000_CATEGORIES)]
                        rel = Path(category) / f"{i // len(CAT2000_CATEGORIES) + 1:03d}"
                        flavour = f"cat2000/{category}"
                    else:
                        rel = Path(f"i{i + 1:04d}" if name == "mit1003" else f"{i + 1}")
                        flavour = name
                    sample, _ = make(name, i, flavour, None)
                    seen.add(sample.fixation_map.shape)
                    write(tmp / "stimuli" / rel.with_suffix(".jpg"), _jpeg(sample.image, jpeg_quality))
                    write(tmp / "saliency" / rel.with_suffix(".png"), _png(sample.saliency))
                    fix = sample.fixation_map.astype(np.uint8) * 255
                    write(tmp / "fixations" / rel.with_suffix(".png"), _png(fix))
            sizes[name] = sorted([list(s) for s in seen])

        with atomic_dir(root / "osie") as tmp:
            entries = []
            for i in range(counts["osie"]):
                name = f"{1001 + i}.jpg"
                sample, _ = make("osie", i, "osie", None)
                write(tmp / "stimuli" / name, _jpeg(sample.image, jpeg_quality))
                entries.append((name, sample))
            write(tmp / "eye" / "fixations.mat", _osie_mat(entries))
            sizes["osie"] = sorted({tuple(s.fixation_map.shape) for _, s in entries})
            sizes["osie"] = [list(s) for s in sizes["osie"]]

        with atomic_dir(root / "unlabeled") as tmp:
            for i in range(n_pool):
                sample, _ = make("unlabeled", i, "salicon", image_size)
                write(tmp / f"pool_{i:06d}.jpg", _jpeg(sample.image, jpeg_quality))
        sizes["unlabeled"] = [list(image_size)]
    finally:
        bar.close()

    summary = {
        "version": 1,
        "seed": int(seed),
        "counts": {"salicon": {"train": n_train, "val": n_val}, **counts, "unlabeled": n_pool},
        "image_sizes": sizes,
        "observers": int(observers),
        "fixations_per_observer": float(fixations_per_observer),
        "fixations_total": int(n_fix),
        "benchmark_long_side": int(benchmark_long_side),
        "density_sigma": float(density_sigma),
        "jpeg_quality": int(jpeg_quality),
    }
    log.info("generated %d images (%d fixations) under %s", total, n_fix, root)
    return summary
