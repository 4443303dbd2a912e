"""The generated default dataset: real on-disk formats, determinism, and human-like statistics.

The format checks read the files the way the real datasets' own tools do (pysaliency's SALICON
and OSIE loaders: ``loadmat`` with default options, 1-based coordinates), and rebuild every
density map from the stored fixations with an independent implementation
(``scipy.ndimage.gaussian_filter``), so a generator that wrote maps inconsistent with its
fixations would fail.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from scipy import ndimage

from semipkd.data.synthetic import (
    BENCHMARKS,
    CAT2000_CATEGORIES,
    FLAVOURS,
    generate,
    image_rng,
    synthesize,
)
from semipkd.data.validate import density_from_fixations, points_to_fixation_map

REAL_OSIE = Path(__file__).resolve().parents[1] / "../shared/datasets/osie/eye/fixations.mat"
SMALL = dict(salicon=(3, 2), benchmark=6, unlabeled=3, image_size=(48, 64), observers=5)
SIGMA = 0.03  # generate()'s default density_sigma, fraction of the longer side


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _oracle_density(points0: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Benchmark rule, written independently: round to pixels, blur (zero border), max-normalise."""
    h, w = size
    binary = np.zeros(size, dtype=np.float64)
    pts = np.rint(points0).astype(int)
    binary[pts[:, 1], pts[:, 0]] = 1.0
    dens = ndimage.gaussian_filter(binary, SIGMA * max(h, w), mode="constant", cval=0.0, truncate=4.0)
    return dens / dens.max()


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    return float((a * b).mean())


def _gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    assert img.ndim == 2 and img.dtype == np.uint8, (path, img.shape, img.dtype)
    return img


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    summary = generate(root, seed=3, **SMALL)
    return root, summary


# ------------------------------------------------------------------------------------------------
# Determinism and atomic writes


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, data) -> None:
    root, _ = data
    again = tmp_path / "again"
    generate(again, seed=3, **SMALL)
    first = _tree_digest(root)
    assert first == _tree_digest(again)
    assert len(first) > 40

    other = tmp_path / "other"
    generate(other, seed=4, **SMALL)
    second = _tree_digest(other)
    assert second.keys() == first.keys()
    stimuli = [k for k in first if k.endswith(".jpg")]
    # Every image is redrawn, not just one.
    assert all(first[k] != second[k] for k in stimuli)


def test_an_image_does_not_depend_on_how_many_are_generated(tmp_path: Path, data) -> None:
    root, _ = data
    more = tmp_path / "more"
    generate(more, seed=3, **{**SMALL, "salicon": (5, 1), "unlabeled": 4})
    for rel in ["salicon/stimuli/train/synthetic_train_000002.jpg",
                "salicon/fixations/val/synthetic_val_000000.mat",
                "unlabeled/pool_000002.jpg"]:
        assert (more / rel).read_bytes() == (root / rel).read_bytes(), rel


def test_regeneration_replaces_folders_and_leaves_no_temporaries(tmp_path: Path) -> None:
    root = tmp_path / "d"
    stale = root / "salicon" / "stimuli" / "train" / "stale.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    generate(root, **{**SMALL, "benchmark": 1, "salicon": (1, 1), "unlabeled": 1})
    assert not stale.exists()
    assert sorted(p.name for p in root.iterdir()) == sorted(["salicon", "unlabeled", *BENCHMARKS])


# ------------------------------------------------------------------------------------------------
# Layouts


def test_layouts_and_summary(data) -> None:
    root, summary = data
    n = SMALL["benchmark"]
    assert summary["counts"] == {"salicon": {"train": 3, "val": 2}, "mit1003": n, "cat2000": n,
                                 "pascal_s": n, "osie": n, "unlabeled": 3}
    for split, count in (("train", 3), ("val", 2)):
        stems = sorted(p.stem for p in (root / "salicon/stimuli" / split).glob("*.jpg"))
        assert len(stems) == count
        assert stems == sorted(p.stem for p in (root / "salicon/saliency" / split).glob("*.png"))
        assert stems == sorted(p.stem for p in (root / "salicon/fixations" / split).glob("*.mat"))

    for name in ("mit1003", "pascal_s", "cat2000"):
        stimuli = sorted(p.relative_to(root / name / "stimuli").with_suffix("")
                         for p in (root / name / "stimuli").rglob("*.jpg"))
        assert len(stimuli) == n, name
        for rel in stimuli:
            img = cv2.imread(str(root / name / "stimuli" / rel.with_suffix(".jpg")), cv2.IMREAD_COLOR)
            sal = _gray(root / name / "saliency" / rel.with_suffix(".png"))
            fix = _gray(root / name / "fixations" / rel.with_suffix(".png"))
            assert img.shape[:2] == sal.shape == fix.shape, (name, rel)
            assert set(np.unique(fix)) == {0, 255}
            assert sal.max() == 255
    cat_dirs = sorted(p.name for p in (root / "cat2000/stimuli").iterdir())
    assert cat_dirs == sorted(CAT2000_CATEGORIES)  # 6 images, 5 categories: all present
    assert (root / "cat2000/stimuli/Action/001.jpg").is_file()
    assert (root / "cat2000/stimuli/Action/002.jpg").is_file()  # the 6th image

    assert sorted(p.name for p in (root / "osie/stimuli").iterdir()) == [f"{1001 + i}.jpg" for i in range(n)]
    assert (root / "osie/eye/fixations.mat").is_file()
    assert len(list((root / "unlabeled").glob("*.jpg"))) == 3

    # Benchmark flavours: CAT2000 wide 16:9, OSIE 4:3, SALICON and pool at image_size.
    assert summary["image_sizes"]["cat2000"] == [[45, 80]]
    assert summary["image_sizes"]["osie"] == [[60, 80]]
    assert summary["image_sizes"]["salicon"] == [[48, 64]]
    img = cv2.imread(str(root / "unlabeled/pool_000000.jpg"))
    assert img.shape == (48, 64, 3)


def test_mit1003_sizes_vary_like_the_real_one(tmp_path: Path) -> None:
    summary = generate(tmp_path, **{**SMALL, "benchmark": {"mit1003": 24}, "salicon": (0, 0), "unlabeled": 0})
    sizes = {tuple(s) for s in summary["image_sizes"]["mit1003"]}
    assert len(sizes) >= 3
    assert any(h > w for h, w in sizes) and any(h < w for h, w in sizes)
    assert summary["counts"]["osie"] == 0 and not list((tmp_path / "osie/stimuli").glob("*"))


# ------------------------------------------------------------------------------------------------
# .mat formats, read the way the datasets' own loaders read them


def test_salicon_mat_gaze_struct(data) -> None:
    root, _ = data
    for path in sorted((root / "salicon/fixations").rglob("*.mat")):
        mat = scipy.io.loadmat(str(path))
        assert {"gaze", "resolution", "image"} <= mat.keys()
        assert str(mat["image"][0]) == path.stem
        h, w = (int(v) for v in mat["resolution"].ravel())
        split = path.parent.name
        img = cv2.imread(str(root / "salicon/stimuli" / split / f"{path.stem}.jpg"))
        assert img.shape[:2] == (h, w) == SMALL["image_size"]
        gaze = mat["gaze"]
        assert gaze.shape == (SMALL["observers"], 1)
        assert set(gaze.dtype.names) == {"location", "timestamp", "fixations"}
        points = []
        for subject in gaze.flatten():  # pysaliency's SALICON loop
            fx = subject["fixations"]
            assert fx.ndim == 2 and fx.shape[1] == 2 and fx.dtype == np.float64 and len(fx) >= 1
            assert fx[:, 0].min() >= 1 and fx[:, 0].max() <= w
            assert fx[:, 1].min() >= 1 and fx[:, 1].max() <= h
            loc, ts = subject["location"], subject["timestamp"]
            assert loc.shape == (4 * len(fx), 2) and ts.shape == (4 * len(fx), 1)
            assert np.all(np.diff(ts[:, 0]) >= 0)
            assert np.all((loc >= 1) & (loc <= [w, h]))
            points.append(fx - 1.0)
        sal = _gray(root / "salicon/saliency" / split / f"{path.stem}.png") / 255.0
        oracle = _oracle_density(np.concatenate(points), (h, w))
        assert np.abs(sal - oracle).max() <= 2.5 / 255


def _skeleton(obj):
    """The nesting of a loadmat value: container kinds, shapes (counts dropped), field names."""
    if isinstance(obj, np.ndarray) and obj.dtype.names:
        return ("struct", obj.shape, {f: _skeleton(obj[f][0, 0]) for f in obj.dtype.names})
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return ("cell", obj.shape[1:], _skeleton(obj.flat[0]))
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "U":
        return ("char", obj.shape)
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "fiu":
        return ("numeric", obj.shape[0])  # rows only: a 1 x n vector has any n
    raise AssertionError(f"unexpected {type(obj)} {getattr(obj, 'dtype', '')}")


def _read_osie(path: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """pysaliency's OSIE loop: {img: [(fix_x, fix_y, fix_duration) per subject]}, 1-based."""
    out = {}
    for stimulus in scipy.io.loadmat(str(path))["fixations"].flatten():
        stimulus = stimulus[0, 0]
        subjects = []
        for subject in stimulus["subjects"].flatten():
            s = subject[0, 0]
            subjects.append((s["fix_x"].flatten(), s["fix_y"].flatten(), s["fix_duration"].flatten()))
        out[str(stimulus["img"][0])] = subjects
    return out


def test_osie_mat_nesting_matches_the_real_file(data) -> None:
    root, _ = data
    ours = scipy.io.loadmat(str(root / "osie/eye/fixations.mat"))
    assert ours["fixations"].shape == (SMALL["benchmark"], 1)
    if not REAL_OSIE.is_file():
        pytest.skip(f"real OSIE file {REAL_OSIE} not present")
    real = scipy.io.loadmat(str(REAL_OSIE))
    assert _skeleton(ours["fixations"]) == _skeleton(real["fixations"])
    assert ours["fixations"][0, 0]["subjects"][0, 0].shape == (SMALL["observers"], 1)
    assert real["fixations"][0, 0]["subjects"][0, 0].shape == (15, 1)


def test_osie_fixations_within_images_and_consistent(data) -> None:
    root, _ = data
    records = _read_osie(root / "osie/eye/fixations.mat")
    assert sorted(records) == sorted(p.name for p in (root / "osie/stimuli").iterdir())
    for name, subjects in records.items():
        h, w = cv2.imread(str(root / "osie/stimuli" / name)).shape[:2]
        assert len(subjects) == SMALL["observers"]
        for fx, fy, dur in subjects:
            assert fx.dtype == np.float64 and len(fx) == len(fy) == len(dur) >= 1
            assert fx.min() >= 1 and fx.max() <= w and fy.min() >= 1 and fy.max() <= h
            assert dur.dtype == np.uint16 and dur.min() >= 60
    # Not every point sits on the grid: coordinates are real-valued, like the authors'.
    xs = np.concatenate([fx for subjects in records.values() for fx, _, _ in subjects])
    assert np.mean(xs != np.round(xs)) > 0.9


def test_benchmark_maps_are_the_blurred_fixations(data) -> None:
    root, _ = data
    for name in ("mit1003", "pascal_s", "cat2000"):
        for fix_path in sorted((root / name / "fixations").rglob("*.png"))[:3]:
            rel = fix_path.relative_to(root / name / "fixations")
            fix = _gray(fix_path) > 127
            ys, xs = np.nonzero(fix)
            oracle = _oracle_density(np.stack([xs, ys], 1).astype(float), fix.shape)
            sal = _gray(root / name / "saliency" / rel) / 255.0
            assert np.abs(sal - oracle).max() <= 2.5 / 255, (name, rel)


# ------------------------------------------------------------------------------------------------
# Helpers: known answers


def test_maps_are_built_by_the_readers_rasteriser_and_blur() -> None:
    """One rasteriser and one density builder: a generated sample's maps are exactly what
    semipkd.data.validate makes of its fixation points (round half up, blur to 8.9 std)."""
    sample = synthesize(image_rng(0, "osie", 3), "osie", (48, 64), observers=5)
    points = np.concatenate(sample.fixations)
    fix, inside = points_to_fixation_map(points, (48, 64))
    assert inside.all()
    np.testing.assert_array_equal(sample.fixation_map, fix)
    dens = density_from_fixations(fix, SIGMA * 64)
    np.testing.assert_array_equal(sample.saliency, np.clip(np.rint(dens * 255.0), 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------
# Human-like statistics, against the known density


def _center(h: int, w: int, sigma: float) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return np.exp(-0.5 * (((x - (w - 1) / 2) / (sigma * w)) ** 2 + ((y - (h - 1) / 2) / (sigma * h)) ** 2))


@pytest.fixture(scope="module")
def samples():
    out = []
    for k, flavour in enumerate(sorted(FLAVOURS)):
        size = (45, 80) if flavour.startswith("cat2000") else (60, 80)
        for i in range(6):
            out.append((flavour, synthesize(np.random.default_rng([7, k, i]), flavour, size)))
    return out


def test_fixations_are_dense_where_the_known_density_is_high(samples) -> None:
    noise = np.random.default_rng(0)
    for flavour in FLAVOURS:
        nss, rand_cc = [], []
        for name, s in samples:
            if name != flavour:
                continue
            pts = np.rint(np.concatenate(s.fixations)).astype(int)
            z = (s.known_density - s.known_density.mean()) / s.known_density.std()
            nss.append(z[pts[:, 1], pts[:, 0]].mean())
            rand_cc.append(_cc(noise.random(s.saliency.shape), s.saliency.astype(float)))
        assert np.mean(nss) > 1.0, flavour
        assert abs(np.mean(rand_cc)) < 0.05, flavour


def test_center_bias_alone_is_not_the_whole_story(samples) -> None:
    known_cc, center_cc, shuffled_cc = [], [], []
    for j, (_, s) in enumerate(samples):
        emp = s.saliency.astype(float)
        h, w = emp.shape
        known_cc.append(_cc(s.known_density, emp))
        center_cc.append(max(_cc(_center(h, w, sg), emp) for sg in (0.1, 0.15, 0.2, 0.25, 0.35)))
        other = samples[(j + 1) % len(samples)][1].known_density
        if other.shape == emp.shape:
            shuffled_cc.append(_cc(other, emp))
    assert np.mean(known_cc) > 0.7
    # Even the best-fitting center Gaussian explains much less than the image content does...
    assert np.mean(known_cc) > np.mean(center_cc) + 0.3
    # ... and another image's density explains this one's fixations no better than the center.
    assert np.mean(shuffled_cc) < np.mean(center_cc) + 0.05


def test_fixations_are_drawn_from_the_known_density() -> None:
    # Many observers: the fixations' histogram on a coarse grid converges to the known density.
    s = synthesize(image_rng(11, "osie", 0), "osie", (60, 80), observers=2000)
    pts = np.concatenate(s.fixations)
    assert pts.shape[0] > 12000
    ky, kx = 6, 8
    hist, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=(ky, kx), range=((-0.5, 59.5), (-0.5, 79.5)))
    cells = s.known_density.reshape(ky, 10, kx, 10).sum(axis=(1, 3))
    tv = 0.5 * np.abs(hist / hist.sum() - cells).sum()
    assert tv < 0.04
    # Finer: for x ~ p, E[log p(x)] = sum p log p. A density that left out a component the
    # observers use (the lapses, the noise) would score the fixations far lower.
    p = s.known_density
    rounded = np.rint(pts).astype(int)
    loglik = np.log(p[rounded[:, 1], rounded[:, 0]])
    assert abs(loglik.mean() - (p * np.log(p)).sum()) < 0.05  # standard error here ~0.012
    # 1 + Poisson(7) fixations per observer: mean 8.
    assert abs(np.mean([len(f) for f in s.fixations]) - 8.0) < 0.3


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"salicon": (1,)}, "salicon"),
        ({"salicon": (1, -1)}, r"salicon\[1\]"),
        ({"benchmark": {"mit1003": 1, "toronto": 2}}, "toronto"),
        ({"benchmark": 2.5}, "benchmark"),
        ({"image_size": (16, 16)}, "image_size"),
        ({"observers": 0}, "observers"),
        ({"density_sigma": 0.0}, "density_sigma"),
        ({"seed": -1}, "seed"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        generate(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_unknown_flavour_and_dataset_are_named() -> None:
    with pytest.raises(ValueError, match="'coco'.*known"):
        synthesize(np.random.default_rng(0), "coco", (40, 40))
    with pytest.raises(ValueError, match="'salicon'.*known"):
        image_rng(0, "salicon", 0)
