"""The statistics of the seeded study (``benchmarks/claim.py``): a paired t-test with its 95%
confidence interval, and Holm's step-down adjustment of a family of p-values.

Pure functions on plain sequences of floats; scipy.stats does the t distribution.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as sps

__all__ = ["ALPHA", "TEST_NAME", "DEGENERATE_TEST_NAME", "REL_ZERO_STD", "paired_test", "mean_ci", "holm"]

#: Two-sided significance level of every verdict; the interval is the (1 - ALPHA) one.
ALPHA = 0.05
#: What claim.json's ``test`` says for a regular paired difference.
TEST_NAME = "paired t-test, two-sided (one-sample t on the per-seed differences, df = n - 1)"
#: What it says when every difference is the same number (sample std 0): no t distribution to use.
DEGENERATE_TEST_NAME = "none: all differences equal (std 0); the interval is the point mean"
#: A std this small relative to |mean| is float rounding of equal differences (0.84 - 0.80 and
#: 0.75 - 0.71 differ in the 17th digit), not spread: the case is the std-0 one.
REL_ZERO_STD = 1e-9


def mean_ci(values: Sequence[float], level: float = 1.0 - ALPHA) -> tuple[float, float] | None:
    """The t-based confidence interval of the mean of ``values``: ``mean ± t_{(1+level)/2, n-1}
    · std / sqrt(n)`` (std with ddof=1); None for n < 2. With std 0 it is the point ``(mean, mean)``."""
    arr = np.asarray(values, dtype=np.float64)
    n = arr.size
    if n < 2:
        return None
    mean, std = float(arr.mean()), float(arr.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2.0, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def paired_test(diffs: Sequence[float]) -> dict[str, object]:
    """The two-sided t-test of mean(``diffs``) = 0, where ``diffs`` are per-seed paired
    differences (first arm minus second): the same as ``scipy.stats.ttest_rel`` on the two arms.

    Returns ``{"ci95": [low, high], "t", "df", "p", "test"}``. Decided explicitly:

    * n < 2: no test; every field None, ``test`` says so.
    * every difference equal (sample std 0, or below :data:`REL_ZERO_STD` · |mean|, which is float
      rounding of equal differences): no t distribution applies. The interval is
      the point ``[mean, mean]``; ``t`` is None (it would be ±inf or 0/0); ``p`` is 0.0 when the
      mean is not 0 (the interval excludes 0) and 1.0 when it is 0. ``test`` names this case.
    """
    arr = np.asarray(diffs, dtype=np.float64)
    n = int(arr.size)
    if n < 2:
        return {"ci95": None, "t": None, "df": None, "p": None, "test": "none: fewer than 2 pairs"}
    mean, std = float(arr.mean()), float(arr.std(ddof=1))
    if std == 0.0 or std <= REL_ZERO_STD * abs(mean):
        return {"ci95": [mean, mean], "t": None, "df": n - 1, "p": 0.0 if mean != 0.0 else 1.0,
                "test": DEGENERATE_TEST_NAME}
    res = sps.ttest_1samp(arr, 0.0)
    low, high = mean_ci(arr)
    return {"ci95": [low, high], "t": float(res.statistic), "df": n - 1, "p": float(res.pvalue), "test": TEST_NAME}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order.

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the i-th
    is ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where the adjusted p < ALPHA keeps
    the family-wise error rate at ALPHA. Ties keep their input order (the result is the same).
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out
