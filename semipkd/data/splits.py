"""The paper's seeded train/val splits.

The paper's loaders (Semi-PKD ``PKD/datasets/data.py``, after MSI-Net) list a benchmark's
stimuli, sort the paths, shuffle ``np.arange(n)`` with ``np.random.RandomState(42).shuffle`` and
take the first ``n_train`` shuffled indices as train and the rest as val:

=========  =====  =====  ====================================================
benchmark  train  val    how
=========  =====  =====  ====================================================
salicon    10000  5000   its own ``train/`` and ``val/`` folders (no shuffle)
mit1003    803    200    one shuffle of 1003
cat2000    1600   400    per category: one shuffle of ``arange(100)``, the same permutation
                         in each of the 20 categories; its first 80 train, last 20 val
pascal_s   650    200    one shuffle of 850
osie       500    200    one shuffle of 700
=========  =====  =====  ====================================================

When a folder holds a different number of images than the distribution (a generated set, a
partial copy), the same procedure runs with the val count scaled: ``n_val = round_half_up(n *
val / total)``, clamped to ``1 .. n - 1`` when ``n >= 2`` (so both splits exist), and the
change is logged. For CAT2000 that val count is shared among the categories in proportion to
their sizes (largest remainder, ties to the earlier category), and each category is split with
its own ``RandomState(42)`` shuffle; 20 categories of 100 give 20 val each, the paper's split,
and a small generated set keeps the 20 % val fraction overall instead of one val image per
category.
"""

from __future__ import annotations

import logging
from typing import Hashable, Sequence

import numpy as np

from ..names import DATASETS

__all__ = ["BENCHMARK_NAMES", "PAPER_SPLITS", "SPLIT_SEED", "labelled_subset", "split_indices", "val_count"]

log = logging.getLogger(__name__)

#: All benchmark ids, in the paper's order.
BENCHMARK_NAMES = DATASETS
#: (train, val) image counts of each distribution's split, as in the paper.
PAPER_SPLITS = {
    "salicon": (10000, 5000),
    "mit1003": (803, 200),
    "cat2000": (1600, 400),
    "pascal_s": (650, 200),
    "osie": (500, 200),
    # No official split: ours, by the same procedure (sorted list, RandomState(42) shuffle).
    "eyecrowd": (400, 100),
}
#: Seed of the paper's ``RandomState`` shuffle.
SPLIT_SEED = 42
#: CAT2000: images per category in the distribution (20 categories); the paper's code assumes it.
_CAT2000_CATEGORY = 100


def _check_name(name: str) -> None:
    if name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_NAMES)}")


def val_count(name: str, n: int) -> int:
    """Number of val images among ``n``; the paper's count when ``n`` is the distribution's size."""
    _check_name(name)
    if name == "salicon":
        raise ValueError("salicon is split by its own train/ and val/ folders")
    n_train, n_val = PAPER_SPLITS[name]
    total = n_train + n_val
    if n < 2:
        return 0
    k = (2 * n * n_val + total) // (2 * total)  # round half up of n * n_val / total, exactly
    return int(min(max(k, 1), n - 1))


def _shuffled(n: int) -> np.ndarray:
    indices = np.arange(n)
    np.random.RandomState(SPLIT_SEED).shuffle(indices)
    return indices


def split_indices(name: str, n: int, *, groups: Sequence[Hashable] | None = None) -> dict[str, np.ndarray]:
    """The paper's split of a benchmark's sorted stimulus list.

    Args:
        name: benchmark id (not ``salicon``, which has its own split folders).
        n: number of stimuli in the sorted file list.
        groups: ``cat2000`` only: the category of each of the ``n`` sorted files. Without it,
            2000 files are taken as 20 consecutive categories of 100 (the paper's assumption);
            any other count is split as a single category, with a warning.

    Returns:
        ``{"train": int64 array, "val": int64 array}`` of positions in the sorted list, in the
        paper's order (shuffled order; CAT2000 category by category). Disjoint; together they
        cover ``range(n)``.
    """
    _check_name(name)
    if name == "salicon":
        raise ValueError("salicon is split by its own train/ and val/ folders; split_indices does not apply")
    n = int(n)
    if n < 1:
        raise ValueError(f"{name}: cannot split {n} images")
    paper_train, paper_val = PAPER_SPLITS[name]
    if name != "cat2000":
        if groups is not None:
            raise ValueError(f"groups applies to cat2000 only, not {name}")
        n_val = val_count(name, n)
        if n != paper_train + paper_val:
            log.info("%s: %d images instead of the distribution's %d; val = round(%d * %d / %d) = %d",
                     name, n, paper_train + paper_val, n, paper_val, paper_train + paper_val, n_val)
        order = _shuffled(n)
        return {"train": order[: n - n_val].astype(np.int64), "val": order[n - n_val:].astype(np.int64)}

    if groups is None:
        if n == paper_train + paper_val:
            groups = [i // _CAT2000_CATEGORY for i in range(n)]
        else:
            log.warning("cat2000: %d images and no categories given; splitting them as one category", n)
            groups = [0] * n
    if len(groups) != n:
        raise ValueError(f"cat2000: {len(groups)} group labels for {n} images")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    sizes = [len(v) for v in members.values()]
    n_val = val_count("cat2000", n)
    # Largest-remainder apportionment of n_val over the categories, in exact integers.
    shares = [m * n_val // n for m in sizes]
    remainders = sorted(range(len(sizes)), key=lambda k: (-(sizes[k] * n_val % n), k))
    for k in remainders[: n_val - sum(shares)]:
        shares[k] += 1
    if n != paper_train + paper_val or any(m != _CAT2000_CATEGORY for m in sizes):
        log.info("cat2000: %d images in %d categories instead of 20 x 100; val = %d, per category %s",
                 n, len(sizes), n_val, dict(zip(members, shares, strict=True)))
    train, val = [], []
    for (_g, idx), k in zip(members.items(), shares, strict=True):  # categories in order of first appearance
        idx_arr = np.asarray(idx, dtype=np.int64)
        m = len(idx_arr)
        order = _shuffled(m)
        train.append(idx_arr[order[: m - k]])
        val.append(idx_arr[order[m - k:]])
    return {"train": np.concatenate(train), "val": np.concatenate(val)}


def labelled_subset(n: int, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subset of ``n`` labelled training images: ``(kept, withheld)`` sorted indices.

    ``size`` >= 1 is a count (a whole number), 0 < ``size`` < 1 a fraction (rounded half up,
    at least 1). The subset is the first ``k`` of ``np.random.RandomState(seed).permutation(n)``,
    so a larger subset with the same seed contains a smaller one. The two parts are disjoint and
    together are ``range(n)``.
    """
    if size >= 1:
        if size != int(size):
            raise ValueError(f"labelled_subset: a count must be a whole number, got {size}")
        k = int(size)
    elif size > 0:
        k = max(1, int(np.floor(n * size + 0.5)))
    else:
        raise ValueError(f"labelled_subset: must be > 0, got {size}")
    if k > n:
        raise ValueError(f"labelled_subset: {k} images asked for, the labelled train split holds {n}")
    order = np.random.RandomState(seed).permutation(n)
    return np.sort(order[:k]), np.sort(order[k:])
