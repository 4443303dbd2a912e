"""Integration test on the real OSIE copy and the real unlabeled pool in ../shared/datasets.

Skipped cleanly when the shared folder is absent (e.g. a checkout without it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage

from semipkd.data import open_benchmark, open_unlabeled, split_indices

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
OSIE = SHARED / "osie"
POOL = SHARED / "scene-unlabeled"

needs_osie = pytest.mark.skipif(not (OSIE / "eye" / "fixations.mat").is_file(), reason=f"real OSIE not at {OSIE}")
needs_pool = pytest.mark.skipif(not POOL.is_dir(), reason=f"real unlabeled pool not at {POOL}")


@pytest.fixture(scope="module")
def osie_stats():
    """One pass over all 700 samples (each decoded and checked), keeping per-sample numbers only."""
    yy, xx = np.mgrid[0:600, 0:800]
    center = np.exp(-0.5 * (((yy - 299.5) / 150.0) ** 2 + ((xx - 399.5) / 200.0) ** 2))  # sigma = 0.25 H, 0.25 W
    center = (center - center.mean()) / center.std()
    stats = {}
    for split in ("train", "val"):
        ds = open_benchmark("osie", OSIE, split)
        stats[split] = {"names": ds.names, "samples": []}
        for i in range(len(ds)):
            s = ds[i]  # raises DataError naming the file if anything is wrong
            stats[split]["samples"].append({
                "name": s.name, "shape": s.image.shape, "observers": len(np.unique(s.observers)),
                "points": len(s.points), "fixated": int(s.fixations.sum()),
                "nss_center": float(center[s.fixations].mean()) if s.fixations.shape == center.shape else None,
                "density_max": float(s.density.max()), "density_at_fix": float(s.density[s.fixations].mean()),
                "density_mean": float(s.density.mean()),
            })
            if i == 0:
                ref = scipy.ndimage.gaussian_filter(s.fixations.astype(np.float64), 24.0, mode="constant", truncate=12)
                np.testing.assert_allclose(s.density, ref / ref.max(), atol=1e-5)
    return stats


@needs_osie
def test_all_700_images_load_with_the_papers_split(osie_stats):
    train, val = osie_stats["train"], osie_stats["val"]
    assert len(train["names"]) == 500 and len(val["names"]) == 200
    all_names = sorted(p.stem for p in (OSIE / "stimuli").glob("*.jpg"))
    assert all_names == [str(i) for i in range(1001, 1701)]
    assert sorted(train["names"] + val["names"]) == all_names
    idx = np.arange(700)
    np.random.RandomState(42).shuffle(idx)  # the paper: sorted list, RandomState(42), first 500 train
    assert train["names"] == [all_names[i] for i in idx[:500]]
    assert val["names"] == [all_names[i] for i in idx[500:]]
    np.testing.assert_array_equal(split_indices("osie", 700)["val"], idx[500:])
    for split in ("train", "val"):
        assert all(s["shape"] == (600, 800, 3) for s in osie_stats[split]["samples"])


@needs_osie
def test_every_image_has_about_15_observers(osie_stats):
    samples = osie_stats["train"]["samples"] + osie_stats["val"]["samples"]
    observers = np.array([s["observers"] for s in samples])
    points = np.array([s["points"] for s in samples])
    assert observers.min() >= 13 and np.median(observers) == 15
    assert 100 < points.mean() < 200  # ~9 fixations per observer in 3 s of free viewing
    assert all(s["fixated"] >= 1 and s["density_max"] == 1.0 for s in samples)
    # The density is built from the same fixations: much higher at fixated pixels than on average.
    assert all(s["density_at_fix"] > 2 * s["density_mean"] for s in samples)


@needs_osie
def test_center_bias_scores_positive_nss_on_val(osie_stats):
    nss = np.array([s["nss_center"] for s in osie_stats["val"]["samples"]])
    assert nss.mean() > 0.5  # human fixations are center-biased on OSIE
    assert (nss > 0).mean() > 0.8


@needs_pool
def test_real_unlabeled_pool_opens():
    pool = open_unlabeled(POOL)  # README.md and LICENSE beside images/ are ignored
    assert len(pool) == 500 and pool.names[:2] == ["images/001", "images/002"]
    for i in (0, 250, 499):
        s = pool[i]
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
