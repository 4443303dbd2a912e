"""Training losses of Semi-PKD: weighted sums of the benchmark metrics in ``semipkd.metrics``.

Both losses are differentiable, per-image terms averaged over the batch, with the weights
taken from ``params.yaml`` (``loss`` and ``pseudo_loss`` of a training stage). Lower is better;
each term is 0 for a perfect prediction (up to ``EPS``-sized rounding in KLD).

* labelled loss (teacher and student on labelled data):
  ``w_kld * KLD(pred, density) + w_cc * (1 - CC(pred, density))
  + w_nss * (1 - sigmoid(NSS(pred, fixations)))``; with ``nss_aggregation="batch_mean"`` (the
  paper's code) the NSS term is ``w_nss * (1 - sigmoid(mean over the batch of NSS))`` instead of
  the batch mean of the per-image term (``per_image``, the default)
* pseudo-label loss (student on teacher maps):
  ``w_kld * KLD(pred, target) + w_cc * (1 - CC(pred, target)) + w_sim * (1 - SIM(pred, target))``

The terms follow the paper's training code, which differs from the benchmark metrics only
where noted (see ``semipkd.metrics``'s module docs): its CC z-scores with the per-image mean
and unbiased std before correlating, which is the same Pearson correlation as ``metrics.cc``;
its NSS adds ``EPS`` to the unbiased std (``metrics.nss(..., std_eps=EPS)``); its KLD and SIM
are the benchmark's. Where the paper's code produces NaN (a constant prediction divides 0 by 0
in CC), ours uses the metrics' decisions (CC = 0, NSS = 0), with finite gradients.

Inputs are computed in float32 (float64 stays float64), so the losses are safe to call on
float16 / bfloat16 outputs under autocast.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

import torch

from semipkd import metrics
from semipkd.names import NSS_AGGREGATIONS

__all__ = ["LABELLED_TERMS", "PSEUDO_TERMS", "labelled_loss", "pseudo_loss"]

log = logging.getLogger(__name__)

#: Weight keys of :func:`labelled_loss`.
LABELLED_TERMS = ("kld", "cc", "nss")
#: Weight keys of :func:`pseudo_loss`.
PSEUDO_TERMS = ("kld", "cc", "sim")


def _check_weights(loss: str, weights: Mapping[str, float], terms: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise TypeError(f"{loss}: weights must be a mapping with keys {list(terms)}, got {type(weights).__name__}")
    unknown = sorted(set(weights) - set(terms))
    if unknown:
        raise ValueError(f"{loss}: unknown weight keys {unknown}; known: {list(terms)}")
    missing = [t for t in terms if t not in weights]
    if missing:
        raise ValueError(f"{loss}: missing weight keys {missing} (use 0 to switch a term off)")
    out = {}
    for term in terms:
        w = weights[term]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"{loss}: weight {term!r} must be a finite number, got {w!r}")
        out[term] = float(w)
    return out


def _float(x):
    # autocast outputs may be float16/bfloat16: MATLAB's EPS underflows there and the sums over
    # 10^5 pixels lose too many digits, so the loss is computed in float32 (float64 kept)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64:
        return x.float()
    return x


def labelled_loss(pred: torch.Tensor, density: torch.Tensor, fixations: torch.Tensor,
                  weights: Mapping[str, float], nss_aggregation: str = "per_image") -> torch.Tensor:
    """Loss on labelled data: mean over the batch of KLD + (1 - CC) + (1 - sigmoid(NSS)), weighted.

    Args:
        pred: (B, H, W) model output in [0, 1] (sigmoid), any float dtype, requires grad.
        density: (B, H, W) ground-truth density in [0, 1].
        fixations: (B, H, W) binary fixation map (bool or {0, 1} float), at least one fixated
            pixel per image.
        weights: mapping with exactly the keys ``"kld"``, ``"cc"``, ``"nss"``; finite numbers
            (0 switches a term off).
        nss_aggregation: ``"per_image"``: the NSS term is the batch mean of
            ``1 - sigmoid(NSS_i)``; ``"batch_mean"`` (the paper's code): ``1 - sigmoid(mean_i NSS_i)``.
            KLD and CC are per-image terms averaged over the batch either way.

    Returns:
        0-dim tensor (float32, or float64 for float64 inputs), differentiable in ``pred``.

    Raises:
        ValueError: unknown or missing weight keys, mismatched shapes, NaN/inf inputs, an image
            without fixations or with an all-zero density (messages name the metric).
    """
    w = _check_weights("labelled_loss", weights, LABELLED_TERMS)
    if nss_aggregation not in NSS_AGGREGATIONS:
        raise ValueError(f"nss_aggregation: {nss_aggregation!r} is not one of {', '.join(NSS_AGGREGATIONS)}")
    pred, density = _float(pred), _float(density)
    total = w["kld"] * metrics.kld(pred, density)
    total = total + w["cc"] * (1 - metrics.cc(pred, density))
    # the paper's NSS: unbiased std plus EPS; sigmoid maps the unbounded score into (0, 1)
    nss = metrics.nss(pred, fixations, std_eps=metrics.EPS)
    if nss_aggregation == "batch_mean":
        return total.mean() + w["nss"] * (1 - torch.sigmoid(nss.mean()))
    total = total + w["nss"] * (1 - torch.sigmoid(nss))
    return total.mean()


def pseudo_loss(pred: torch.Tensor, target: torch.Tensor, weights: Mapping[str, float]) -> torch.Tensor:
    """Loss on pseudo-labels: mean over the batch of KLD + (1 - CC) + (1 - SIM), weighted.

    Args:
        pred: (B, H, W) student output in [0, 1], any float dtype, requires grad.
        target: (B, H, W) teacher map in [0, 1] (a cached pseudo-label or the EMA teacher's
            output). An all-zero target is accepted (a teacher may see nothing salient): its
            terms are KLD 0, CC 0 and SIM 0, so it adds the constant ``w_cc + w_sim``.
        weights: mapping with exactly the keys ``"kld"``, ``"cc"``, ``"sim"``.

    Returns:
        0-dim tensor (float32, or float64 for float64 inputs), differentiable in ``pred``.

    Raises:
        ValueError: unknown or missing weight keys, mismatched shapes, NaN/inf inputs.
    """
    w = _check_weights("pseudo_loss", weights, PSEUDO_TERMS)
    pred, target = _float(pred), _float(target)
    total = w["kld"] * metrics.kld(pred, target, allow_empty_target=True)
    total = total + w["cc"] * (1 - metrics.cc(pred, target, allow_empty_target=True))
    total = total + w["sim"] * (1 - metrics.sim(pred, target, allow_empty_target=True))
    return total.mean()
