"""Readers of each layout, splits and the resize policy, on tiny datasets written into tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image
from test_data_fixtures import (
    write_cat2000_distribution,
    write_mit1003_distribution,
    write_osie,
    write_pool,
    write_repo,
    write_salicon,
)

from semipkd.data import (
    DENSITY_SIGMA_PX,
    PAPER_SPLITS,
    density_from_fixations,
    open_benchmark,
    open_unlabeled,
    points_to_fixation_map,
    rescale_fixations,
    resize_density,
    resize_image,
    split_indices,
)


def _pil_rgb(path):
    """The paper's loader: PIL decode + convert("RGB") (oracle for lossy JPEG stimuli)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _paper_shuffle(n):
    idx = np.arange(n)
    np.random.RandomState(42).shuffle(idx)
    return idx


# ---------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize("name", ["mit1003", "pascal_s", "osie"])
def test_paper_split_is_the_seeded_shuffle(name):
    n_train, n_val = PAPER_SPLITS[name]
    sp = split_indices(name, n_train + n_val)
    idx = _paper_shuffle(n_train + n_val)  # the paper: indices[:n_train] / indices[n_train:]
    assert len(sp["train"]) == n_train and len(sp["val"]) == n_val
    np.testing.assert_array_equal(sp["train"], idx[:n_train])
    np.testing.assert_array_equal(sp["val"], idx[n_train:])


def test_cat2000_split_reproduces_the_papers_per_category_tiling():
    # The paper's code, verbatim in spirit: one permutation of 100, tiled over 20 categories.
    indices = _paper_shuffle(100)
    train = np.tile(indices[:80], 20)
    val = np.tile(indices[-20:], 20)
    for k in range(len(train)):
        train[k] += k // 80 * 100
    for k in range(len(val)):
        val[k] += k // 20 * 100
    sp = split_indices("cat2000", 2000)
    assert (len(sp["train"]), len(sp["val"])) == (1600, 400)
    np.testing.assert_array_equal(sp["train"], train)
    np.testing.assert_array_equal(sp["val"], val)
    # Same result when the categories are given explicitly.
    sp2 = split_indices("cat2000", 2000, groups=[f"c{i // 100:02d}" for i in range(2000)])
    np.testing.assert_array_equal(sp2["val"], val)


def test_split_of_a_different_count_scales_the_val_fraction():
    # mit1003: val = round_half_up(n * 200 / 1003); clamped to 1..n-1.
    for n, expected_val in [(10, 2), (50, 10), (5, 1), (2, 1), (1003, 200), (1004, 200)]:
        sp = split_indices("mit1003", n)
        assert len(sp["val"]) == expected_val, n
        assert sorted(np.concatenate([sp["train"], sp["val"]]).tolist()) == list(range(n))
        np.testing.assert_array_equal(sp["val"], _paper_shuffle(n)[n - expected_val:])
    # osie 700 -> 200: n = 7 gives round(2.0) = 2; pascal_s 850 -> 200: n = 17 gives 4.
    assert len(split_indices("osie", 7)["val"]) == 2
    assert len(split_indices("pascal_s", 17)["val"]) == 4
    assert len(split_indices("osie", 1)["val"]) == 0
    # cat2000 categories of 10: 2 val each, category by category.
    sp = split_indices("cat2000", 30, groups=["a"] * 10 + ["b"] * 10 + ["c"] * 10)
    assert len(sp["val"]) == 6
    perm = _paper_shuffle(10)
    np.testing.assert_array_equal(sp["val"], np.concatenate([perm[8:], perm[8:] + 10, perm[8:] + 20]))
    # Small uneven categories share round(12 * 0.2) = 2 val images by largest remainder
    # (quotas 0.6, 0.6, 0.4, 0.4, 0.4), not one per category.
    sp = split_indices("cat2000", 12, groups=list("aaabbbccddee"))
    np.testing.assert_array_equal(sp["val"], [_paper_shuffle(3)[2], 3 + _paper_shuffle(3)[2]])
    assert len(sp["train"]) == 10


def test_split_indices_refuses_bad_arguments():
    with pytest.raises(ValueError, match="salicon"):
        split_indices("salicon", 10)
    with pytest.raises(ValueError, match="mit1003, cat2000, pascal_s, osie"):
        split_indices("mit300", 10)
    with pytest.raises(ValueError, match="cannot split 0"):
        split_indices("osie", 0)
    with pytest.raises(ValueError, match="groups applies to cat2000"):
        split_indices("osie", 4, groups=[0, 0, 1, 1])


# ---------------------------------------------------------------------------------------------
# layouts


def _check_maps_sample(s, image, dens_u8, fix):
    np.testing.assert_array_equal(s.image, image)
    assert s.image.dtype == np.uint8 and s.image.shape == image.shape
    assert s.density.dtype == np.float32
    np.testing.assert_allclose(s.density, dens_u8 / 255.0, atol=1e-6)  # max is 255 -> max-normalised = /255
    assert s.density.max() == 1.0
    assert s.fixations.dtype == bool
    np.testing.assert_array_equal(s.fixations, fix)
    assert s.points is None


def test_repo_layout_reads_every_file_exactly(tmp_path):
    names = ["b", "a", "c10", "c2", "d"]
    truth = write_repo(tmp_path, names)
    ds = open_benchmark("pascal_s", tmp_path, "all")
    assert ds.names == sorted(names)  # sorted file list
    assert ds.layout == "repo layout" and ds.skipped == []
    for i, name in enumerate(ds.names):
        _check_maps_sample(ds[i], *truth[name])
    assert ds[-1].name == ds.names[-1]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_repo_layout_split_follows_the_sorted_list(tmp_path):
    names = [f"img{i:02d}" for i in range(10)]
    write_repo(tmp_path, names)
    tr = open_benchmark("mit1003", tmp_path, "train")
    va = open_benchmark("mit1003", tmp_path, "val")
    idx = _paper_shuffle(10)
    assert va.names == [sorted(names)[i] for i in idx[8:]]  # round(10 * 200 / 1003) = 2 val
    assert tr.names == [sorted(names)[i] for i in idx[:8]]


def test_mit1003_repo_layout_with_fixmap_fixpts_names(tmp_path):
    # MSI-Net's download (the paper's repo) keeps MIT1003's _fixMap / _fixPts file names.
    truth = write_repo(tmp_path, ["i1", "i2", "i3"], stim_ext=".jpeg", density_suffix="_fixMap", fix_suffix="_fixPts")
    ds = open_benchmark("mit1003", tmp_path, "all")
    assert ds.names == ["i1", "i2", "i3"]
    s = ds[1]
    np.testing.assert_array_equal(s.fixations, truth["i2"][2])
    np.testing.assert_allclose(s.density, truth["i2"][1] / 255.0, atol=1e-6)


def test_mit1003_distribution_layout(tmp_path):
    truth = write_mit1003_distribution(tmp_path, ["x1", "x2"])
    # The known duplicate file shipped with MIT1003 is skipped, not an error.
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(
        tmp_path / "ALLFIXATIONMAPS" / "i05june05_static_street_boston_p1010764fixPts.jpg")
    ds = open_benchmark("mit1003", tmp_path, "all")
    assert ds.layout == "MIT1003 distribution" and ds.names == ["x1", "x2"]
    s = ds[0]
    # JPEG maps: lossy, but a binary map survives thresholding at 127 and the density stays close.
    np.testing.assert_array_equal(s.fixations, truth["x1"][2])
    assert np.abs(s.density * 255 - truth["x1"][1] * 255.0 / truth["x1"][1].max()).mean() < 6
    np.testing.assert_array_equal(s.image, _pil_rgb(tmp_path / "ALLSTIMULI" / "x1.jpeg"))


def test_cat2000_layouts_use_category_folders(tmp_path):
    cats = ["Action", "Affective", "Art"]
    truth = write_cat2000_distribution(tmp_path / "dist", cats, 10)
    tr = open_benchmark("cat2000", tmp_path / "dist", "train")
    va = open_benchmark("cat2000", tmp_path / "dist", "val")
    perm = _paper_shuffle(10)
    expected_val = [f"{c}/{i + 1:03d}" for c in cats for i in perm[8:]]
    assert va.names == expected_val
    assert len(tr) == 24 and not set(tr.names) & set(va.names)
    s = va[0]
    np.testing.assert_array_equal(s.fixations, truth[s.name][2])  # fixLocs from the .mat
    # Repo layout (MSI-Net's renaming of the same folders), fixations as fixLocs .mat.
    names = [f"{c}/{i:03d}" for c in cats for i in range(1, 11)]
    truth2 = write_repo(tmp_path / "repo", names, fix_format="mat")
    va2 = open_benchmark("cat2000", tmp_path / "repo", "val")
    assert va2.names == expected_val and va2.layout == "repo layout"
    _check_maps_sample(va2[3], *truth2[va2.names[3]])


@pytest.mark.parametrize("layout", ["repo", "distribution"])
def test_salicon_mat_points_and_own_split(tmp_path, layout):
    truth = write_salicon(tmp_path, 3, 2, layout=layout)
    for split in ("train", "val"):
        ds = open_benchmark("salicon", tmp_path, split)
        assert ds.names == sorted(truth[split])
        for i, name in enumerate(ds.names):
            image, dens, pts0, fix = truth[split][name]
            s = ds[i]
            np.testing.assert_array_equal(s.points, pts0)  # 1-based in the file, 0-based here
            np.testing.assert_array_equal(s.observers, np.repeat(np.arange(4), 3))
            np.testing.assert_array_equal(s.fixations, fix)
            np.testing.assert_allclose(s.density, dens / 255.0, atol=1e-6)
            np.testing.assert_array_equal(s.image, _pil_rgb(ds.files(i)["stimulus"]))  # JPEG stimuli
            assert ds.files(i)["stimulus"].name == f"{name}.jpg"
    assert len(open_benchmark("salicon", tmp_path, "all")) == 5


def test_osie_distribution_points_to_maps(tmp_path):
    truth = write_osie(tmp_path, 7, size=(12, 16))
    ds = open_benchmark("osie", tmp_path, "all")
    assert ds.layout == "OSIE distribution" and ds.sigma == DENSITY_SIGMA_PX["osie"] == (24.0, 800)
    for i, name in enumerate(ds.names):
        pts1, obs = truth[name]
        s = ds[i]
        np.testing.assert_allclose(s.points, pts1 - 1.0)
        np.testing.assert_array_equal(s.observers, obs)
        fix = np.zeros((12, 16), bool)
        fix[np.floor(pts1[:, 1] - 1 + 0.5).astype(int), np.floor(pts1[:, 0] - 1 + 0.5).astype(int)] = True
        np.testing.assert_array_equal(s.fixations, fix)
        # 24 px at OSIE's 800 px side, scaled to this 16 px wide fixture.
        ref = scipy.ndimage.gaussian_filter(fix.astype(np.float64), 24.0 * 16 / 800, mode="constant", truncate=12)
        np.testing.assert_allclose(s.density, ref / ref.max(), atol=1e-5)
    # 7 images: val = round(7 * 200 / 700) = 2 from the seeded shuffle of the sorted names.
    va = open_benchmark("osie", tmp_path, "val")
    assert va.names == [sorted(truth)[i] for i in _paper_shuffle(7)[5:]]


def test_unlabeled_pool_is_a_sorted_tree_of_images(tmp_path):
    truth = write_pool(tmp_path, ["b/2", "a", "b/10", "c/d/e"])
    (tmp_path / "README.md").write_text("docs are ignored")
    (tmp_path / ".hidden.png").write_bytes(b"not read")
    pool = open_unlabeled(tmp_path)
    assert pool.names == ["a", "b/10", "b/2", "c/d/e"]
    for i, name in enumerate(pool.names):
        np.testing.assert_array_equal(pool[i].image, truth[name])
    rows = pool.validate(progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 4 and rows[0]["height"] == 10 and rows[0]["width"] == 14


def test_unknown_benchmark_split_and_mode_are_refused(tmp_path):
    with pytest.raises(ValueError, match="salicon, mit1003, cat2000, pascal_s, osie"):
        open_benchmark("mit300", tmp_path, "train")
    with pytest.raises(ValueError, match="train, val, all"):
        open_benchmark("osie", tmp_path, "test")
    with pytest.raises(ValueError, match="'raise', 'skip'"):
        open_benchmark("osie", tmp_path, "train", on_error="ignore")


# ---------------------------------------------------------------------------------------------
# points -> maps, and the resize policy


def test_points_to_fixation_map_rounds_and_drops_outside():
    pts = np.array([[0.0, 0.0], [2.49, 1.5], [3.5, 0.2], [-0.6, 1.0], [4.4, 0.0], [1.0, 2.6], [np.nan, 1.0]])
    fix, inside = points_to_fixation_map(pts, (3, 4))
    assert inside.tolist() == [True, True, False, False, False, False, False]
    expected = np.zeros((3, 4), bool)
    expected[0, 0] = True  # (x=0, y=0)
    expected[2, 2] = True  # x 2.49 -> 2, y 1.5 -> 2 (half up)
    np.testing.assert_array_equal(fix, expected)
    # -0.4 rounds to 0 (inside), 3.49 to 3 (inside)
    fix, inside = points_to_fixation_map(np.array([[-0.4, 0.0], [3.49, 2.49]]), (3, 4))
    assert inside.all() and fix[0, 0] and fix[2, 3]


def test_density_from_fixations_matches_scipy():
    rng = np.random.default_rng(3)
    fix = np.zeros((40, 50), bool)
    fix.flat[rng.choice(2000, 9, replace=False)] = True
    for sigma in (1.5, 6.0):
        d = density_from_fixations(fix, sigma)
        ref = scipy.ndimage.gaussian_filter(fix.astype(np.float64), sigma, mode="constant", truncate=12)
        assert d.dtype == np.float32 and d.max() == 1.0
        np.testing.assert_allclose(d, ref / ref.max(), atol=1e-5)


def test_resize_image_is_antialiased_bilinear():
    # A 2x2 block checkerboard averaged by a 2x downscale becomes (nearly) uniform gray:
    # plain (non-antialiased) bilinear sampling would keep the pattern.
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    img = np.repeat(board[:, :, None], 3, axis=2)
    small = resize_image(img, (16, 16))
    assert small.dtype == np.uint8 and small.shape == (16, 16, 3)
    assert abs(small.astype(float).mean() - 127.5) < 2 and small.std() < 3
    const = np.full((7, 9, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_image(const, (20, 3)), np.full((20, 3, 3), 77, np.uint8))
    assert resize_image(img, (64, 64)) is not img and np.array_equal(resize_image(img, (64, 64)), img)
    with pytest.raises(ValueError, match="uint8"):
        resize_image(img.astype(np.float32), (8, 8))


def test_resize_density_keeps_unit_peak_and_location():
    yy, xx = np.mgrid[0:60, 0:80]
    d = np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / (2 * 5.0 ** 2)).astype(np.float32)
    r = resize_density(d, (15, 20))
    assert r.dtype == np.float32 and r.shape == (15, 20) and r.max() == 1.0 and r.min() >= 0
    assert np.unravel_index(r.argmax(), r.shape) in [(7, 5), (7, 4)]
    np.testing.assert_array_equal(resize_density(np.zeros((4, 4)), (2, 2)), np.zeros((2, 2), np.float32))


def test_rescale_fixations_maps_pixel_centres():
    fix = np.zeros((4, 6), bool)
    fix[0, 0] = fix[3, 5] = fix[1, 2] = True
    small = rescale_fixations(fix, (2, 3))
    expected = np.zeros((2, 3), bool)
    expected[0, 0] = True  # (0.5 * 2/4, 0.5 * 3/6) -> (0, 0)
    expected[1, 2] = True  # (3.5 * 0.5, 5.5 * 0.5) -> (1, 2)
    expected[0, 1] = True  # (1.5 * 0.5, 2.5 * 0.5) -> (0, 1)
    np.testing.assert_array_equal(small, expected)
    big = rescale_fixations(fix, (8, 12))  # upscaling is injective: every fixation kept, none smeared
    assert big.sum() == 3 and big[1, 1] and big[7, 11] and big[3, 5]
    # Random maps: matches the float formula, and never loses a map's last fixation.
    rng = np.random.default_rng(0)
    for _ in range(20):
        H, W, h, w = rng.integers(1, 40, 4)
        f = rng.random((H, W)) < 0.05
        f[rng.integers(H), rng.integers(W)] = True
        out = rescale_fixations(f, (h, w))
        r, c = np.nonzero(f)
        ref = np.zeros((h, w), bool)
        ref[np.minimum(np.floor((r + 0.5) * h / H), h - 1).astype(int),
            np.minimum(np.floor((c + 0.5) * w / W), w - 1).astype(int)] = True
        np.testing.assert_array_equal(out, ref)
        assert out.any()
