"""The eight saliency benchmark metrics, batched in torch, plus the benchmark's resize helper.

Every metric takes maps of shape (B, H, W) (torch tensors on any device, or numpy arrays) and
returns a (B,) tensor of per-image scores on the input's device. The computation runs in
float64 when any input is float64 (what evaluation uses) and in float32 otherwise (float16,
bfloat16, integer and bool inputs are converted to float32 first). The definitions follow the
MIT/Tuebingen saliency benchmark's MATLAB code (``code_forMetrics`` of cvzoya/saliency;
Bylinskii et al., "What do different evaluation metrics tell us about saliency models?",
TPAMI 2019). Below, ``P`` is the prediction, ``Q`` the ground-truth density, ``F`` the binary
fixation map, ``N = H * W``, ``K`` the number of fixated pixels and ``EPS = 2**-52``
(MATLAB's ``eps``; MATLAB *displays* it as 2.2204e-16, the value pysaliency writes).

Definitions
-----------
``cc``
    Pearson's linear correlation of P and Q over all pixels (MATLAB ``CC.m``: z-score both maps,
    ``corr2``). Range [-1, 1].
``kld``
    ``sum(Q' * log(EPS + Q' / (P' + EPS)))`` with ``P' = P / sum(P)``, ``Q' = Q / sum(Q)``
    (MATLAB ``KLdiv.m``): the information lost when P approximates Q. Range [0, inf), lower
    is better.
``sim``
    Histogram intersection ``sum(min(P', Q'))`` where each map is min-max rescaled to [0, 1] and
    then normalised to sum 1 (MATLAB ``similarity.m``). Range [0, 1].
``nss``
    Mean over fixated pixels of ``(P - mean(P)) / std(P)`` with the *sample* standard deviation
    (divisor N - 1, MATLAB's ``std``) (MATLAB ``NSS.m``). Unbounded; 0 is chance.
``auc_judd``
    Area under the ROC curve whose thresholds are the saliency values at the fixated pixels:
    at threshold t, the true-positive rate is the fraction of fixated pixels with P >= t and the
    false-positive rate the fraction of the N - K unfixated pixels with P >= t; the curve runs
    from (0, 0) through these points to (1, 1) and is integrated with the trapezoid rule
    (MATLAB ``AUC_Judd.m``). Range [0, 1].
``auc_borji``
    P min-max rescaled to [0, 1]; for each of 100 splits, K negatives are drawn uniformly with
    replacement from all N pixels; thresholds 0, 0.1, ..., 1; TPR = fraction of fixated pixels
    >= t, FPR = fraction of the split's negatives >= t; trapezoid AUC per split, mean over splits
    (MATLAB ``AUC_Borji.m``). Range [0, 1].
``sauc``
    As ``auc_borji``, but each split draws ``min(K, M)`` negatives *without replacement* from
    the M pixels marked in ``other_fixations`` (the union of other images' fixations)
    (MATLAB ``AUC_shuffled.m``). Range [0, 1]; 0.5 is a pure center bias.
``info_gain``
    ``mean over fixated pixels of log2(EPS + P') - log2(EPS + B')`` where P and the baseline
    map B are each min-max rescaled to [0, 1] and then normalised to sum 1 (MATLAB
    ``InfoGain.m``). Bits per fixation; 0 means no better than the baseline.
``resize_to``
    Not a metric: brings a prediction to the fixation map's size as the benchmark does before
    scoring, MATLAB ``imresize(map, [H W])`` (bicubic, Keys a = -0.5, antialiased when
    shrinking, symmetric borders). The metrics themselves never resize.

Choices where the MATLAB code leaves room
------------------------------------------
* **Sampled AUCs** (``auc_borji``, ``sauc``): we sample, as the MATLAB code does (100 splits,
  threshold step 0.1; both are keyword arguments), rather than computing the exact expectation
  over splits. All splits of a batch are drawn together as tensors: AUC-Borji draws a padded
  (B, splits, max K) tensor of pixel indices; sAUC, whose negatives are drawn without
  replacement, draws them as urn draws over the threshold levels of the other-image locations
  (only the levels of the drawn locations enter the ROC, so this has exactly the distribution
  of MATLAB's ``randperm`` subset, with (B, splits, 12) memory whatever the number of
  locations). Randomness comes only from the ``generator`` argument (draws are made on its
  device and moved to the input's); ``generator=None`` means a fresh generator on the input's
  device seeded with ``DEFAULT_SEED``, so every call is reproducible. The values depend on the
  batch composition through the shapes of the draws; score one image per call with its own
  generator to make them batch-independent. Thresholds are the doubles nearest to
  ``k * step`` (MATLAB's colon operator may differ in the last bit, which matters only for a
  pixel exactly on a threshold). The MATLAB code stops the threshold sweep at the largest value
  present; thresholds above it give the point (0, 0) again and add no area, so always sweeping
  0..1 gives the same number.
* **Ties** are never broken at random. ``AUC_Judd.m`` adds uniform noise of size 1e-7 by
  default; we instead count every pixel tied with a threshold at that threshold, so each
  *distinct* fixated value gives one ROC point and a block of tied pixels becomes one straight
  segment. This equals pysaliency's ``AUC_Judd(jitter=False)``. A perfect binary map therefore
  scores exactly 1. The sampled AUCs compare against fixed thresholds and have no tie issue.
* AUC-Judd skips the MATLAB min-max rescale: it is monotone, so the ranking (and the AUC) is
  unchanged, and skipping it avoids creating ties by rounding.

Edge cases
----------
* **Shapes**: every map argument must be (B, H, W) with the same shape (``info_gain``'s
  baseline may also be (H, W), shared by the batch) and ``H * W >= 2``; metrics never resize.
  Bring predictions to the ground truth's size with ``resize_to`` first. Anything else raises
  ``ValueError`` naming the metric.
* **NaN or inf** in any input raises ``ValueError`` naming the metric, the argument and the
  images.
* **Fixation maps** must hold only 0 and 1 (or be bool). An image with no fixated pixel raises
  ``ValueError`` (every fixation metric is undefined there; MATLAB returns NaN). A density map
  that is all zero (an image without fixations) raises in ``cc``, ``kld`` and ``sim`` unless
  ``allow_empty_target=True`` (the pseudo-label loss uses that: there KLD = 0, CC = 0, SIM = 0).
  AUC-Judd also raises when every pixel is fixated (no negatives), ``sauc`` when
  ``other_fixations`` marks no pixel of an image.
* **One fixation** is fine everywhere; AUC-Judd then equals ``1 - a / (2 (N - 1))`` with ``a``
  the number of unfixated pixels at least as salient as the fixated one.
* **Constant prediction** (where MATLAB divides 0 by 0 and returns NaN, we decide): CC = 0;
  NSS = 0; AUC-Judd = 0.5 (one point, (1, 1)); AUC-Borji = sAUC = 0.5 (the rescaled map is all
  0); SIM and info gain treat it as the uniform distribution; KLD treats a non-zero constant map
  as uniform (as MATLAB does). A constant ground-truth density likewise gives CC = 0.
* **All-zero prediction**: as a constant map, except that KLD and SIM follow MATLAB's
  "a zero map stays a zero map": SIM = 0 and KLD = ``sum(Q' * log(EPS + Q' / EPS))`` (about
  36 nats, the worst score), because the prediction puts no mass anywhere.
* **Negative values**: CC, NSS and the AUCs are invariant to a shift; SIM and info gain
  min-max rescale; KLD (where MATLAB would take the log of negative numbers) first shifts a map
  with negative values so that its minimum is 0, as pysaliency does. A constant negative map
  therefore becomes a zero map in KLD.

Differences from pysaliency 0.2.22 (asserted in ``tests/test_metrics.py``)
---------------------------------------------------------------------------
pysaliency's ``NSS`` divides by the population std (ours = theirs * sqrt((N - 1) / N)); its
``SIM`` skips the min-max rescale (identical when both maps have minimum 0); its ``CC`` returns
NaN for a constant density (ours 0); its ``MIT_KLDiv`` and ``SIM`` turn an all-zero map into
the uniform one; its AUCs are exact rank statistics over all thresholds and negatives, whereas
ours sample negatives and use 0.1 thresholds, so ``auc_borji`` / ``sauc`` estimate the exact AUC
of the map quantised to the 0.1 grid (pysaliency's ``AUC_Judd(jitter=False)`` is identical to
ours). Its ``information_gain`` works on log densities; given the benchmark's conversion of
maps to densities (above) it equals ours.

Cost
----
Everything is vectorised over the batch; Python loops run only over image chunks (on CPU,
chunks of about 2^19 pixels keep temporaries in memory the allocator reuses) and, in ``sauc``,
over the drawn locations (one small step for all images and splits). AUC-Judd is one
``searchsorted`` of the pixels into the sorted fixated values per image (O(N log K), no sort
of the map). The other fixation metrics touch only the K fixated pixels beyond one pass for
min / max / sum. ``benchmarks/metrics.py`` measures speed and peak memory against pysaliency.

Differentiable variants for the losses
--------------------------------------
``cc``, ``kld``, ``sim`` and ``nss`` are differentiable (constant-map branches use safe
denominators, so no NaN gradients). The Semi-PKD paper's training code z-scores with the
per-image mean and *unbiased* std before the correlation (mathematically the same Pearson
correlation, so ``cc`` is used unchanged) and adds ``EPS`` to the std in NSS: ``nss(...,
std_eps=EPS)`` reproduces that; the benchmark's NSS is ``std_eps=0``.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from semipkd import names

__all__ = [
    "EPS",
    "METRIC_NAMES",
    "N_SPLITS",
    "STEP",
    "DEFAULT_SEED",
    "cc",
    "kld",
    "sim",
    "nss",
    "auc_judd",
    "auc_borji",
    "sauc",
    "info_gain",
    "resize_to",
]

log = logging.getLogger(__name__)

#: MATLAB's ``eps`` = 2^-52, the value the benchmark's MATLAB code computes with (not its
#: displayed rounding 2.2204e-16, which pysaliency hard-codes; KLD then differs by < 1e-5).
EPS = 2.220446049250313e-16
#: Metric names; equal to the keys of every metrics JSON the pipeline writes.
METRIC_NAMES = names.METRIC_NAMES
#: Number of random splits of the sampled AUCs (MATLAB default).
N_SPLITS = 100
#: Threshold step of the sampled AUCs (MATLAB default).
STEP = 0.1
#: Seed of the generator used when a sampled AUC gets ``generator=None``.
DEFAULT_SEED = 0

# Largest number of elements of one (chunk of a batch) intermediate tensor: batches are cut into
# image chunks below it, so memory stays bounded whatever the batch size (2^23 int64 = 64 MiB).
_CHUNK_ELEMENTS = 1 << 23
# The same on CPU, where small temporaries are much cheaper (see _pixel_limit): 2^19 = 4 MiB float64.
_CPU_CHUNK_ELEMENTS = 1 << 19


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


class _Map(NamedTuple):
    """A checked continuous map: values (B, N) in the compute dtype and per-image min / max."""

    x: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor


class _Fix(NamedTuple):
    """A checked binary map: (B,) int64 count of marked pixels and the (image, pixel) index
    pairs of the marked pixels in row-major order (from one ``nonzero``, which is cheaper than
    summing a bool tensor and is needed for gathering anyway)."""

    count: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor


def _as_tensor(metric: str, arg: str, x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{metric}: {arg} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"{metric}: {arg} must be real, got dtype {x.dtype}")
    return x


def _bad_images(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def _check_maps(metric: str, named: dict[str, object], binary: tuple[str, ...] = ()) -> list:
    """Check that all maps are finite (B, H, W) tensors of one shape and device.

    Returns, in ``named``'s order, a ``_Map`` for each continuous map (in the common compute
    dtype: float64 when any continuous input is float64, float32 otherwise) and a ``_Fix`` for
    each argument listed in ``binary`` (checked to hold only 0 and 1 and to mark at least one
    pixel per image).
    """
    tensors = {arg: _as_tensor(metric, arg, x) for arg, x in named.items()}
    first_arg, first = next(iter(tensors.items()))
    for arg, t in tensors.items():
        if t.ndim != 3:
            raise ValueError(f"{metric}: {arg} must have shape (B, H, W), got {tuple(t.shape)}")
    for arg, t in tensors.items():
        if t.shape != first.shape:
            raise ValueError(
                f"{metric}: shape mismatch, {first_arg} is {tuple(first.shape)} but {arg} is "
                f"{tuple(t.shape)}; metrics never resize, use semipkd.metrics.resize_to first"
            )
        if t.device != first.device:
            raise ValueError(f"{metric}: {first_arg} is on {first.device} but {arg} on {t.device}")
    b, h, w = first.shape
    if b < 1 or h * w < 2:
        raise ValueError(f"{metric}: maps need B >= 1 and at least 2 pixels, got {tuple(first.shape)}")
    # float64 when any input asks for it (evaluation), float32 otherwise: float16/bfloat16 sums
    # over 10^5 pixels are too coarse, and MATLAB's EPS underflows in float16.
    continuous = [t for arg, t in tensors.items() if arg not in binary]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in continuous) else torch.float32
    out = []
    for arg, t in tensors.items():
        t = t.flatten(1)
        if arg in binary:
            out.append(_binary(metric, arg, t))
            continue
        # one copy for strided inputs (a batch slice, a permuted map) instead of one per chunk op
        t = t.to(dtype).contiguous()
        # min and max are needed anyway (constant maps, rescaling); both propagate NaN, so a
        # finite min and max also prove the map finite, without a separate isfinite pass
        lo, hi = t.amin(1), t.amax(1)
        bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
        if bool(bad.any()):
            raise ValueError(f"{metric}: {arg} contains NaN or inf in images {_bad_images(bad)}")
        out.append(_Map(t, lo, hi))
    return out


def _binary(metric: str, arg: str, fix: torch.Tensor) -> _Fix:
    """(B, N) {0, 1} or bool map -> ``_Fix``; raise on other values or an empty image."""
    mask = fix if fix.dtype == torch.bool else fix != 0
    rows, cols = torch.nonzero(mask, as_tuple=True)
    count = torch.bincount(rows, minlength=mask.shape[0])
    if fix.dtype != torch.bool:
        # values in [0, 1] whose sum equals their nonzero count are exactly 0 or 1 (NaN fails
        # the range test); cheaper than an elementwise comparison on 10^7 pixels. Sums of 0/1
        # in float32 are exact below 2^24 pixels; narrower floats are summed in float64.
        wide = fix if fix.dtype in (torch.float32, torch.float64) or not fix.is_floating_point() else fix.double()
        ok = bool((fix.amin() >= 0) & (fix.amax() <= 1)) and bool((wide.sum(1) == count).all())
        if not ok:
            raise ValueError(f"{metric}: {arg} must hold only 0 and 1 (a binary fixation map)")
    empty = count == 0
    if bool(empty.any()):
        raise ValueError(
            f"{metric}: {arg} has no fixated pixel in images {_bad_images(empty)}; "
            "the metric is undefined there"
        )
    return _Fix(count, rows, cols)


def _check_density(metric: str, m: _Map, allow_empty: bool) -> None:
    if allow_empty:
        return
    empty = (m.lo == 0) & (m.hi == 0)
    if bool(empty.any()):
        raise ValueError(
            f"{metric}: density is all zero in images {_bad_images(empty)} (an image without "
            "fixations); the metric is undefined there"
        )


def _prep_pair(metric: str, pred, density, allow_empty_target: bool) -> tuple[_Map, _Map]:
    p, q = _check_maps(metric, {"pred": pred, "density": density})
    _check_density(metric, q, allow_empty_target)
    return p, q


def _slices(batch: int, per_image: int, limit: int | None = None) -> list[slice]:
    """Image chunks of at most ``limit`` (default ``_CHUNK_ELEMENTS``) elements, ``per_image``
    each; at least one image per chunk."""
    per = max(1, (_CHUNK_ELEMENTS if limit is None else limit) // per_image)
    return [slice(s, s + per) for s in range(0, batch, per)]


def _pixel_limit(device: torch.device) -> int:
    """Chunk size of the per-pixel work.

    On CPU each chunk's temporaries stay small enough (4 MiB of float64) for the allocator to
    reuse freed memory instead of mapping fresh pages for every temporary, which costs more than
    the arithmetic; on an accelerator chunks only bound memory.
    """
    return _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _CHUNK_ELEMENTS


def _chunked(fn, batch: int, n: int, device: torch.device, *args: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` to image chunks of the (B, ...) tensors ``args`` and concatenate."""
    parts = [fn(*(a[sl] for a in args)) for sl in _slices(batch, n, _pixel_limit(device))]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _scale(num: torch.Tensor, den: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """num / den where ``ok``, 0 elsewhere, with finite gradients everywhere."""
    den = torch.where(ok, den, torch.ones_like(den))
    return torch.where(ok, num / den, torch.zeros_like(num))


def _distribution_affine(m: _Map, minmax: bool, zero_stays_zero: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (shift, slope, offset), each (B, 1): ``(x - shift) * slope + offset`` is a map's
    distribution.

    ``minmax=True`` (SIM, InfoGain): rescale to [0, 1], then divide by the sum, i.e.
    ``(x - lo) / sum(x - lo)``; a constant map becomes uniform (MATLAB: NaN) and an all-zero map
    stays zero when ``zero_stays_zero``. ``minmax=False`` (KLD): shift a map with negative
    values to minimum 0, then divide by the sum; a map summing to 0 stays zero (MATLAB).
    Folding both steps into per-image scalars keeps the elementwise work to two cheap passes,
    and subtracting the shift first keeps the minimum pixel at exactly 0.
    """
    bsz, n = m.x.shape
    if minmax:
        shift = m.lo
        const = m.hi == m.lo
    else:
        shift = m.lo.clamp(max=0)
        const = torch.zeros_like(m.hi, dtype=torch.bool)
    # sum(x - shift) rather than sum(x) - n * shift, which cancels catastrophically in float32
    # for a map far from 0 (say values in [1000, 1001])
    mass = _chunked(lambda x, s: (x - s[:, None]).sum(1), bsz, n, m.x.device, m.x, shift)
    ok = ~const & (mass > 0)
    slope = _scale(torch.ones_like(mass), mass, ok)
    offset = torch.zeros_like(mass)
    if minmax:
        zero = (m.lo == 0) & (m.hi == 0)
        flat = torch.full_like(mass, 1.0 / n)
        if zero_stays_zero:
            flat = torch.where(zero, torch.zeros_like(flat), flat)
        offset = torch.where(const, flat, offset)
    return shift[:, None], slope[:, None], offset[:, None]


def _needs_grad(*tensors: torch.Tensor) -> bool:
    # in-place arithmetic saves temporaries but would break autograd (the losses need it)
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # a batched dot product: one BLAS pass, no (B, N) temporary. einsum lowers to bmm, which
    # autocast would run in float16 on a GPU; sums over 10^5 pixels need the input's precision.
    with torch.autocast(device_type=a.device.type, enabled=False):
        return torch.einsum("bn,bn->b", a, b)


# --------------------------------------------------------------------------------------------
# Distribution-based metrics
# --------------------------------------------------------------------------------------------


def cc(pred, density, *, allow_empty_target: bool = False) -> torch.Tensor:
    """Pearson linear correlation coefficient (MIT benchmark ``CC.m``).

    Args:
        pred: (B, H, W) prediction, any real values.
        density: (B, H, W) ground-truth density (continuous fixation map), any real values.
        allow_empty_target: accept an all-zero ``density`` (score 0) instead of raising.

    Returns:
        (B,) correlation in [-1, 1], float64 if an input is float64 else float32. A constant
        ``pred`` or ``density`` scores 0 (MATLAB: NaN). Differentiable.
    """
    p, q = _prep_pair("cc", pred, density, allow_empty_target)
    bsz, n = p.x.shape
    ok = (p.hi > p.lo) & (q.hi > q.lo)

    def core(x, y):
        # centre first: sum(x y) - n mean(x) mean(y) loses the digits that matter in float32
        a = x - x.mean(1, keepdim=True)
        b = y - y.mean(1, keepdim=True)
        return torch.stack([_dot(a, b), _dot(a, a), _dot(b, b)], 1)

    ab, aa, bb = _chunked(core, bsz, n, p.x.device, p.x, q.x).unbind(1)
    ok = ok & (aa > 0) & (bb > 0)
    # sqrt of each factor separately: the product of two sums of squares can overflow float32
    one = torch.ones_like(aa)
    den = torch.sqrt(torch.where(ok, aa, one)) * torch.sqrt(torch.where(ok, bb, one))
    return _scale(ab, den, ok)


def kld(pred, density, *, allow_empty_target: bool = False) -> torch.Tensor:
    """KL divergence KL(density || pred) after normalising both to sum 1 (``KLdiv.m``).

    ``sum(Q' * log(EPS + Q' / (P' + EPS)))`` in nats with ``EPS = 2**-52``.

    Args:
        pred: (B, H, W) prediction; a map with negative values is first shifted to minimum 0.
        density: (B, H, W) ground-truth density, treated the same way.
        allow_empty_target: accept an all-zero ``density`` (score 0) instead of raising.

    Returns:
        (B,) divergence >= 0 (lower is better). An all-zero ``pred`` stays zero, as in MATLAB,
        and scores about 36 + sum(Q' log Q'). Differentiable.
    """
    p, q = _prep_pair("kld", pred, density, allow_empty_target)
    bsz, n = p.x.shape
    pa = _distribution_affine(p, minmax=False, zero_stays_zero=True)
    qa = _distribution_affine(q, minmax=False, zero_stays_zero=True)
    inplace = not _needs_grad(p.x, q.x)

    def core(x, y, p_shift, p_slope, p_off, q_shift, q_slope, q_off):
        # P' + EPS in one pass by folding EPS into the offset
        pd = torch.addcmul(p_off + EPS, x - p_shift, p_slope)
        qd = torch.addcmul(q_off, y - q_shift, q_slope)
        if inplace:
            ratio = torch.div(qd, pd, out=pd).add_(EPS).log_()
        else:
            ratio = torch.log(EPS + qd / pd)
        return _dot(qd, ratio)

    return _chunked(core, bsz, n, p.x.device, p.x, q.x, *pa, *qa)


def sim(pred, density, *, allow_empty_target: bool = False) -> torch.Tensor:
    """Similarity (histogram intersection) of the two maps as distributions (``similarity.m``).

    Each map is min-max rescaled to [0, 1] and normalised to sum 1; the score is
    ``sum(min(P', Q'))``.

    Args:
        pred: (B, H, W) prediction, any real values.
        density: (B, H, W) ground-truth density, any real values.
        allow_empty_target: accept an all-zero ``density`` (score 0) instead of raising.

    Returns:
        (B,) similarity in [0, 1]. A constant non-zero map counts as uniform (MATLAB: NaN); an
        all-zero map stays zero and scores 0 (as in MATLAB). Differentiable (subgradient at
        ties of the minimum).
    """
    p, q = _prep_pair("sim", pred, density, allow_empty_target)
    bsz, n = p.x.shape
    pa = _distribution_affine(p, minmax=True, zero_stays_zero=True)
    qa = _distribution_affine(q, minmax=True, zero_stays_zero=True)
    inplace = not _needs_grad(p.x, q.x)

    def core(x, y, p_shift, p_slope, p_off, q_shift, q_slope, q_off):
        a = torch.addcmul(p_off, x - p_shift, p_slope)
        b = torch.addcmul(q_off, y - q_shift, q_slope)
        return (torch.minimum(a, b, out=a) if inplace else torch.minimum(a, b)).sum(1)

    return _chunked(core, bsz, n, p.x.device, p.x, q.x, *pa, *qa)


# --------------------------------------------------------------------------------------------
# Fixation-based metrics
# --------------------------------------------------------------------------------------------


def _gather_rows(values: torch.Tensor, fix: _Fix, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack the values at each image's marked pixels to the left of a (B, max count) tensor.

    Returns ``(packed, valid)``: ``packed[b, :count[b]]`` are ``values[b][mask[b]]`` in index
    order, the rest is ``fill``; ``valid`` marks the real entries. Differentiable in ``values``.
    """
    bsz = values.shape[0]
    width = max(int(fix.count.max()), 1)
    starts = torch.cumsum(fix.count, 0) - fix.count
    slot = torch.arange(fix.rows.numel(), device=values.device) - starts[fix.rows]
    packed = values.new_full((bsz, width), fill)
    packed = packed.index_put((fix.rows, slot), values[fix.rows, fix.cols])
    valid = torch.arange(width, device=values.device)[None, :] < fix.count[:, None]
    return packed, valid


def _row_hist(idx: torch.Tensor, bins: int) -> torch.Tensor:
    """(R, L) int64 bin indices in [0, bins) -> (R, bins) int64 counts per row."""
    if idx.shape[0] == 1:
        return torch.bincount(idx[0], minlength=bins)[None]
    ones = torch.ones((1, 1), dtype=torch.int64, device=idx.device).expand_as(idx)
    return torch.zeros((idx.shape[0], bins), dtype=torch.int64, device=idx.device).scatter_add_(1, idx, ones)


def nss(pred, fixations, *, std_eps: float = 0.0) -> torch.Tensor:
    """Normalized scanpath saliency (``NSS.m``).

    Mean over fixated pixels of ``(P - mean(P)) / (std(P) + std_eps)`` with the sample
    standard deviation (divisor N - 1).

    Args:
        pred: (B, H, W) prediction, any real values.
        fixations: (B, H, W) binary fixation map (bool or {0, 1}); each image needs at least one
            fixated pixel.
        std_eps: added to the std. 0 is the benchmark; the Semi-PKD training loss uses ``EPS``.

    Returns:
        (B,) NSS (0 = chance). A constant ``pred`` scores 0 (MATLAB: NaN). Differentiable.
    """
    p, f = _check_maps("nss", {"pred": pred, "fixations": fixations}, binary=("fixations",))
    bsz, n = p.x.shape
    const = p.hi == p.lo
    mean = p.x.sum(1) / n

    def core(x, m):
        a = x - m[:, None]
        return _dot(a, a)

    var = _chunked(core, bsz, n, p.x.device, p.x, mean) / (n - 1)
    # NSS only needs the map at the K fixated pixels: (mean over them - mean) / std
    at_fix, valid = _gather_rows(p.x, f, 0.0)
    fix_mean = at_fix.sum(1) / f.count.to(at_fix.dtype)
    # the where keeps sqrt's infinite derivative at 0 out of the graph for constant maps
    std = torch.sqrt(torch.where(const, torch.ones_like(var), var)) + std_eps
    return _scale(fix_mean - mean, std, ~const)


def info_gain(pred, fixations, baseline) -> torch.Tensor:
    """Information gain over a baseline map, in bits per fixation (``InfoGain.m``).

    ``mean over fixated pixels of log2(EPS + P') - log2(EPS + B')`` where prediction and
    baseline are each min-max rescaled to [0, 1] and normalised to sum 1.

    Args:
        pred: (B, H, W) prediction, any real values.
        fixations: (B, H, W) binary fixation map with at least one fixated pixel per image.
        baseline: (B, H, W) or (H, W) baseline saliency map (evaluation uses a center bias).

    Returns:
        (B,) information gain in bits (0 = as good as the baseline). A constant map (including
        an all-zero one) counts as uniform (MATLAB: NaN). Differentiable in ``pred``.
    """
    base = _as_tensor("info_gain", "baseline", baseline)
    p_shape = tuple(_as_tensor("info_gain", "pred", pred).shape)
    if base.ndim == 2 and len(p_shape) == 3:
        # a shared baseline (a center bias): check and normalise it once, as a batch of one,
        # then broadcast its two affine coefficients
        shared = True
        base = base.expand(1, *base.shape)
        if tuple(base.shape[1:]) != p_shape[1:]:
            raise ValueError(f"info_gain: shape mismatch, pred is {p_shape} but baseline is {tuple(base.shape[1:])}")
        p, f = _check_maps("info_gain", {"pred": pred, "fixations": fixations}, binary=("fixations",))
        (b,) = _check_maps("info_gain", {"baseline": base})
    else:
        shared = False
        p, f, b = _check_maps(
            "info_gain", {"pred": pred, "fixations": fixations, "baseline": base}, binary=("fixations",)
        )
    dtype = torch.promote_types(p.x.dtype, b.x.dtype)
    p_shift, p_slope, p_off = _distribution_affine(p, minmax=True, zero_stays_zero=False)
    b_shift, b_slope, b_off = _distribution_affine(b, minmax=True, zero_stays_zero=False)
    # only the K fixated pixels enter the mean: gather them instead of normalising whole maps
    pv, valid = _gather_rows(p.x, f, 0.0)
    bx = b.x.expand(p.x.shape[0], -1) if shared else b.x
    bv, _ = _gather_rows(bx, f, 0.0)
    p_dist = torch.addcmul(p_off, pv - p_shift, p_slope).to(dtype)
    b_dist = torch.addcmul(b_off, bv - b_shift, b_slope).to(dtype)
    gain = torch.log2(EPS + p_dist) - torch.log2(EPS + b_dist)
    gain = torch.where(valid, gain, torch.zeros_like(gain))
    return gain.sum(1) / f.count.to(dtype)


def _trapz(fp: torch.Tensor, tp: torch.Tensor) -> torch.Tensor:
    """Trapezoid area along the last dimension (MATLAB ``trapz(fp, tp)``)."""
    return ((fp[..., 1:] - fp[..., :-1]) * (tp[..., 1:] + tp[..., :-1])).sum(-1) / 2


@torch.no_grad()
def auc_judd(pred, fixations) -> torch.Tensor:
    """AUC-Judd: ROC area with thresholds at the fixated pixels' saliency values (``AUC_Judd.m``).

    For each distinct value t among the fixated pixels: TPR(t) = #{fixated, P >= t} / K,
    FPR(t) = #{unfixated, P >= t} / (N - K); the curve (0, 0) -> points by decreasing t ->
    (1, 1) is integrated with the trapezoid rule. Ties are not jittered (see module docs): a
    perfect binary map scores exactly 1, a constant map 0.5.

    Cost: one ``searchsorted`` of all N pixels into the K sorted fixated values per image
    (O(N log K), no sort of the map), vectorised over image chunks that bound memory.

    Args:
        pred: (B, H, W) prediction, any real values.
        fixations: (B, H, W) binary fixation map; each image needs at least one fixated and one
            unfixated pixel.

    Returns:
        (B,) AUC in [0, 1].
    """
    p, f = _check_maps("auc_judd", {"pred": pred, "fixations": fixations}, binary=("fixations",))
    bsz, n = p.x.shape
    full = f.count == n
    if bool(full.any()):
        raise ValueError(f"auc_judd: every pixel is fixated in images {_bad_images(full)}; no negatives")
    # thresholds: the fixated values sorted ascending, padded with +inf (which no pixel reaches)
    thr, _ = _gather_rows(p.x, f, math.inf)
    thr, _ = torch.sort(thr, dim=1)
    width = thr.shape[1]

    def count_ge(x, t):
        # bucket j of a pixel = number of thresholds <= its value, so pixel >= t[i] iff i < j
        bucket = torch.searchsorted(t, x, right=True)
        # pixels >= t[i] = pixels in buckets j > i
        return _row_hist(bucket, width + 1).flip(1).cumsum(1).flip(1)[:, 1:]

    all_ge = _chunked(count_ge, bsz, n, p.x.device, p.x, thr)
    # fixated pixels >= t[i]: K minus the index of the first threshold equal to t[i]
    fix_ge = f.count[:, None] - torch.searchsorted(thr, thr, right=False)
    tp = fix_ge.to(torch.float64) / f.count[:, None]
    fp = (all_ge - fix_ge).to(torch.float64) / (n - f.count)[:, None]
    # decreasing thresholds; the padded +inf ones come first and sit at (0, 0), adding no area
    zeros = tp.new_zeros(bsz, 1)
    ones = tp.new_ones(bsz, 1)
    auc = _trapz(torch.cat([zeros, fp.flip(1), ones], 1), torch.cat([zeros, tp.flip(1), ones], 1))
    return auc.to(p.x.dtype)


# --------------------------------------------------------------------------------------------
# Sampled AUCs
# --------------------------------------------------------------------------------------------


def _thresholds(metric: str, step: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1:
        raise ValueError(f"{metric}: step must be a number in (0, 1], got {step!r}")
    count = int(math.floor(1 / step + 1e-9)) + 1
    return torch.tensor([round(i * step, 12) for i in range(count)], dtype=dtype, device=device)


def _check_splits(metric: str, n_splits: int) -> None:
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"{metric}: n_splits must be a positive int, got {n_splits!r}")


def _generator(metric: str, generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    if generator is None:
        return torch.Generator(device=device).manual_seed(DEFAULT_SEED)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{metric}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _rescaled_levels(values: torch.Tensor, m: _Map, thr: torch.Tensor) -> torch.Tensor:
    """Level of each value = number of thresholds <= its min-max rescaled value.

    ``values`` is (B, ...) gathered from the map ``m``; rescaling only the gathered values gives
    the same numbers as rescaling the whole map first, at a fraction of the cost. A constant
    map rescales to all 0 (MATLAB: NaN).
    """
    shape = (-1,) + (1,) * (values.ndim - 1)
    lo, hi = m.lo.view(shape), m.hi.view(shape)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    v = torch.where(hi > lo, (values - lo) / span, torch.zeros_like(values))
    return torch.bucketize(v, thr, right=True)


def _level_counts(levels: torch.Tensor, valid: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Histogram of integer levels in [0, n_levels) along the last dim, ignoring invalid ones."""
    levels = torch.where(valid, levels, torch.full_like(levels, n_levels))
    hist = _row_hist(levels.reshape(-1, levels.shape[-1]), n_levels + 1)
    return hist.view(*levels.shape[:-1], n_levels + 1)[..., :n_levels]


def _sampled_roc(pos_hist: torch.Tensor, n_pos: torch.Tensor, neg_hist: torch.Tensor, n_neg: torch.Tensor) -> torch.Tensor:
    """Mean trapezoid AUC over splits from level histograms.

    Level L of a value = number of thresholds <= value (0..T). ``pos_hist`` is (B, T + 1),
    ``neg_hist`` (B, S, T + 1); ``n_pos``, ``n_neg`` are (B,) counts. Returns (B,) float64.
    """
    # values >= threshold i  =  values with level > i, for i = 0..T-1
    pos_ge = pos_hist.flip(-1).cumsum(-1).flip(-1)[..., 1:].to(torch.float64)
    neg_ge = neg_hist.flip(-1).cumsum(-1).flip(-1)[..., 1:].to(torch.float64)
    tp = (pos_ge / n_pos[:, None])[:, None, :].expand_as(neg_ge)
    fp = neg_ge / n_neg[:, None, None]
    zeros = tp.new_zeros(*tp.shape[:-1], 1)
    ones = tp.new_ones(*tp.shape[:-1], 1)
    tp = torch.cat([zeros, tp.flip(-1), ones], -1)
    fp = torch.cat([zeros, fp.flip(-1), ones], -1)
    return _trapz(fp, tp).mean(-1)


@torch.no_grad()
def auc_borji(pred, fixations, generator: torch.Generator | None = None, *, n_splits: int = N_SPLITS,
              step: float = STEP) -> torch.Tensor:
    """AUC-Borji: ROC area against negatives drawn uniformly from all pixels (``AUC_Borji.m``).

    The prediction is min-max rescaled to [0, 1]. Each of ``n_splits`` splits draws K pixel
    indices uniformly *with replacement* from all N pixels (K = number of fixated pixels);
    thresholds are 0, step, 2 step, ..., 1; TPR = fixated pixels >= t over K, FPR = drawn pixels
    >= t over K; the per-split trapezoid AUCs are averaged. Sampled like the MATLAB code (not
    the exact expectation); all splits are drawn at once as a (B, n_splits, max K) tensor.

    Args:
        pred: (B, H, W) prediction, any real values.
        fixations: (B, H, W) binary fixation map with at least one fixated pixel per image.
        generator: source of the draws (made on its own device, then moved to ``pred``'s).
            ``None``: a fresh generator on ``pred``'s device seeded with ``DEFAULT_SEED``, so
            the result is reproducible.
        n_splits: number of random splits (MATLAB: 100).
        step: threshold step (MATLAB: 0.1).

    Returns:
        (B,) AUC in [0, 1]; a constant map scores 0.5.
    """
    p, f = _check_maps("auc_borji", {"pred": pred, "fixations": fixations}, binary=("fixations",))
    _check_splits("auc_borji", n_splits)
    bsz, n = p.x.shape
    dev = p.x.device
    thr = _thresholds("auc_borji", step, p.x.dtype, dev)
    t = thr.numel()
    gen = _generator("auc_borji", generator, dev)
    pos, valid = _gather_rows(p.x, f, 0.0)
    width = pos.shape[1]
    pos_hist = _level_counts(_rescaled_levels(pos, p, thr), valid, t + 1)
    neg_hist = []
    # image chunks keep the (images, splits, K) draws under _CHUNK_ELEMENTS
    for sl in _slices(bsz, n_splits * width):
        c = p.x[sl].shape[0]
        idx = torch.randint(0, n, (c, n_splits, width), generator=gen, device=gen.device).to(dev)
        neg = torch.gather(p.x[sl], 1, idx.view(c, -1)).view(c, n_splits, width)
        levels = _rescaled_levels(neg, _Map(p.x[sl], p.lo[sl], p.hi[sl]), thr)
        neg_hist.append(_level_counts(levels, valid[sl, None, :].expand(c, n_splits, width), t + 1))
    return _sampled_roc(pos_hist, f.count, torch.cat(neg_hist), f.count).to(p.x.dtype)


@torch.no_grad()
def sauc(pred, fixations, other_fixations, generator: torch.Generator | None = None, *,
         n_splits: int = N_SPLITS, step: float = STEP) -> torch.Tensor:
    """Shuffled AUC: negatives are other images' fixation locations (``AUC_shuffled.m``).

    As :func:`auc_borji`, except that each split draws ``min(K, M)`` of the M pixels marked in
    ``other_fixations`` *without replacement* (a random permutation per split, as MATLAB's
    ``randperm``), and FPR divides by that count. A map that is only a center bias scores about
    0.5.

    Args:
        pred: (B, H, W) prediction, any real values.
        fixations: (B, H, W) binary fixation map with at least one fixated pixel per image.
        other_fixations: (B, H, W) binary map of the union of other images' fixations (as the
            benchmark builds it, e.g. from 10 random other images) with at least one marked
            pixel per image.
        generator: as in :func:`auc_borji`.
        n_splits: number of random splits (MATLAB: 100).
        step: threshold step (MATLAB: 0.1).

    Returns:
        (B,) AUC in [0, 1].
    """
    p, f, o = _check_maps(
        "sauc",
        {"pred": pred, "fixations": fixations, "other_fixations": other_fixations},
        binary=("fixations", "other_fixations"),
    )
    _check_splits("sauc", n_splits)
    bsz, n = p.x.shape
    dev = p.x.device
    thr = _thresholds("sauc", step, p.x.dtype, dev)
    t = thr.numel()
    gen = _generator("sauc", generator, dev)
    pos, valid = _gather_rows(p.x, f, 0.0)
    pos_hist = _level_counts(_rescaled_levels(pos, p, thr), valid, t + 1)
    pool, pool_valid = _gather_rows(p.x, o, 0.0)
    # only the threshold levels of the drawn locations enter the ROC, so a draw without
    # replacement is a sequence of urn draws over the (T + 1) level counts of the pool: memory
    # (B, S, T + 2) whatever M is, one small vectorised step per drawn location
    pool_hist = _level_counts(_rescaled_levels(pool, p, thr), pool_valid, t + 1).to(torch.float64)
    take = torch.minimum(f.count, o.count)
    neg_hist = []
    # image chunks keep the (draws, images, splits) uniforms under _CHUNK_ELEMENTS
    for sl in _slices(bsz, n_splits * int(take.max())):
        neg_hist.append(_urn_draws(pool_hist[sl], o.count[sl], take[sl], n_splits, gen))
    return _sampled_roc(pos_hist, f.count, torch.cat(neg_hist), take).to(p.x.dtype)


def _urn_draws(pool_hist: torch.Tensor, pool_size: torch.Tensor, take: torch.Tensor, n_splits: int,
               gen: torch.Generator) -> torch.Tensor:
    """Level histograms of ``take[b]`` draws without replacement from image b's pool, per split.

    ``pool_hist`` (B, L) float64 level counts summing to ``pool_size`` (B,). Returns
    (B, n_splits, L). Draw j picks the floor(u * (M - j))-th remaining location in level order,
    u uniform in [0, 1): a uniformly random remaining location, as a random permutation's j-th.
    """
    bsz, n_levels = pool_hist.shape
    dev = pool_hist.device
    steps = int(take.max())
    # the urn per (image, split) plus a bottomless sink column, so that a draw past an image's
    # last one (made for all images at once, then discarded) has somewhere to go
    sink = torch.full((bsz, 1), math.inf, dtype=torch.float64, device=dev)
    urn = torch.cat([pool_hist, sink], 1)[:, None, :].repeat(1, n_splits, 1)
    u = torch.rand((steps, bsz, n_splits, 1), generator=gen, device=gen.device, dtype=torch.float64).to(dev)
    j = torch.arange(steps, device=dev, dtype=torch.float64)
    u = u * (pool_size.to(torch.float64)[None, :] - j[:, None])[:, :, None, None]
    minus = (-(j[:, None] < take[None, :]).to(torch.float64))[:, :, None, None].expand(steps, bsz, n_splits, 1)
    for k in range(steps):
        # level of the drawn location = number of cumulative counts <= u (u < what remains)
        level = torch.searchsorted(urn.cumsum(-1), u[k], right=True)
        urn.scatter_add_(-1, level, minus[k])
    return pool_hist[:, None, :] - urn[..., :n_levels]


# --------------------------------------------------------------------------------------------
# Resizing as the benchmark does (MATLAB imresize, bicubic, antialiased when shrinking)
# --------------------------------------------------------------------------------------------


def _cubic(x: np.ndarray) -> np.ndarray:
    # MATLAB imresize's cubic kernel (Keys, a = -0.5)
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


@functools.lru_cache(maxsize=64)
def _imresize_matrix(in_len: int, out_len: int) -> np.ndarray:
    """(out_len, in_len) float64 matrix of MATLAB imresize's ``contributions`` along one axis."""
    scale = out_len / in_len
    width = 4.0
    if scale < 1:
        # antialiasing: stretch the kernel by 1/scale so it low-pass filters before sampling
        def kernel(x):
            return scale * _cubic(scale * x)
        width = width / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(taps)[None, :]
    w = kernel(u[:, None] - ind)
    w = w / w.sum(1, keepdims=True)
    # out-of-range taps reflect symmetrically (MATLAB: aux = [1:in, in:-1:1])
    aux = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
    ind = aux[np.mod(ind.astype(np.int64) - 1, aux.size)] - 1
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), ind.ravel()), w.ravel())
    mat.setflags(write=False)
    return mat


def resize_to(x, size: Sequence[int]):
    """Resize saliency maps to ``size`` = (H, W) as the benchmark does (MATLAB ``imresize``).

    Bicubic (Keys kernel, a = -0.5), with MATLAB's antialiasing when shrinking (the kernel is
    widened by 1/scale along that axis), half-pixel-centred coordinates and symmetric border
    reflection; each axis is resized by its own scale (aspect ratio is not preserved). It is
    computed as two matrix products with MATLAB's per-axis weight matrices, so it matches
    ``imresize(map, [H W])`` on double input up to rounding. No output clamping (bicubic can
    overshoot, e.g. slightly below 0 next to sharp edges; the metrics accept that).

    Args:
        x: (B, H, W) or (H, W) torch tensor or numpy array, any real dtype.
        size: target (H, W), positive ints.

    Returns:
        Same kind (tensor on the same device, or ndarray) and rank as ``x``, float64 for float64
        input and float32 otherwise. A same-size call returns the values unchanged.
    """
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"resize_to: size must be (H, W) positive ints, got {size!r}")
    is_numpy = isinstance(x, np.ndarray)
    t = _as_tensor("resize_to", "x", x)
    if t.ndim not in (2, 3):
        raise ValueError(f"resize_to: x must have shape (B, H, W) or (H, W), got {tuple(t.shape)}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    t = t.to(dtype)
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = t.shape[-2:]
    if (in_h, in_w) != (out_h, out_w):
        # torch.tensor copies: the cached matrices are read-only and shared between calls
        rows = torch.tensor(_imresize_matrix(in_h, out_h), dtype=dtype, device=t.device)
        cols = torch.tensor(_imresize_matrix(in_w, out_w), dtype=dtype, device=t.device)
        t = rows @ t @ cols.T
    return t.cpu().numpy() if is_numpy else t
