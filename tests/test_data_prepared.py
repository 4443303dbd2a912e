"""The prepared cache (format, determinism, atomicity) and the datasets that serve it to training."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from test_data_fixtures import write_osie, write_pool, write_repo
from torch.utils.data import DataLoader

from semipkd.data import (
    PHOTOMETRIC_OPS,
    DataError,
    PreparedDataset,
    PreparedImages,
    augment_pair,
    augmentation_rng,
    open_benchmark,
    open_unlabeled,
    prepare_benchmark,
    prepare_unlabeled,
    rescale_fixations,
    resize_density,
    resize_image,
)
from semipkd.data.augment import trivial_augment_photometric

IN, OUT = (10, 12), (6, 9)  # odd output width: packbits pads the last byte


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def mit(tmp_path):
    root = tmp_path / "mit1003"
    write_repo(root, [f"m{i:02d}" for i in range(12)], size=(20, 30), stim_ext=".jpg")
    return root


def test_cache_format_matches_the_readers_and_resize_policy(mit, tmp_path):
    out = tmp_path / "prepared" / "mit1003"
    rows = prepare_benchmark("mit1003", mit, out, input_size=IN, output_size=OUT, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 12
    assert set(rows[0]) == {"name", "split", "height", "width", "n_fixations", "status", "reason"}
    for split in ("train", "val"):
        d = out / split
        assert sorted(p.name for p in d.iterdir()) == ["density.npy", "fixations.npy", "images.npy", "meta.json"]
        meta = json.loads((d / "meta.json").read_text())
        ds = open_benchmark("mit1003", mit, split)
        n = len(ds)
        assert meta == {"version": 1, "name": "mit1003", "split": split, "count": n, "input_size": list(IN),
                        "output_size": list(OUT), "names": ds.names, "original_sizes": [[20, 30]] * n}
        images = np.load(d / "images.npy", mmap_mode="r")
        density = np.load(d / "density.npy", mmap_mode="r")
        fixations = np.load(d / "fixations.npy", mmap_mode="r")
        assert isinstance(images, np.memmap)
        assert images.dtype == density.dtype == fixations.dtype == np.uint8
        assert images.shape == (n, *IN, 3) and density.shape == (n, *OUT) and fixations.shape == (n, OUT[0], 2)
        for i in range(n):
            s = ds[i]
            np.testing.assert_array_equal(images[i], resize_image(s.image, IN))
            np.testing.assert_array_equal(density[i], np.rint(resize_density(s.density, OUT) * 255).astype(np.uint8))
            unpacked = np.unpackbits(fixations[i], axis=-1, count=OUT[1]).astype(bool)
            np.testing.assert_array_equal(unpacked, rescale_fixations(s.fixations, OUT))
            assert density[i].max() == 255 and unpacked.any()
    # 12 images: val = round(12 * 200 / 1003) = 2.
    assert [r["split"] for r in rows].count("val") == 2


def test_prepare_is_deterministic_atomic_and_worker_independent(mit, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    prepare_benchmark("mit1003", mit, a, input_size=IN, output_size=OUT, progress=False)
    prepare_benchmark("mit1003", mit, b, input_size=IN, output_size=OUT, progress=False)
    prepare_benchmark("mit1003", mit, c, input_size=IN, output_size=OUT, num_workers=2, progress=False)
    first = _digest(a)
    assert first and first == _digest(b) == _digest(c)
    # Rerunning into the same folder rewrites identical bytes and leaves no temporary folders.
    prepare_benchmark("mit1003", mit, a, input_size=IN, output_size=OUT, progress=False)
    assert _digest(a) == first
    assert sorted(p.name for p in a.iterdir()) == ["train", "val"]
    # A failing prepare leaves the previous cache exactly as it was (both splits).
    bad = mit / "stimuli" / "m05.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DataError, match="m05.jpg"):
        prepare_benchmark("mit1003", mit, a, input_size=IN, output_size=OUT, progress=False)
    assert _digest(a) == first and sorted(p.name for p in a.iterdir()) == ["train", "val"]


def test_osie_points_prepare(tmp_path):
    write_osie(tmp_path / "osie", 5, size=(30, 40))
    rows = prepare_benchmark("osie", tmp_path / "osie", tmp_path / "out", input_size=(15, 20), output_size=(15, 20),
                             splits=("all",), progress=False)
    assert [r["n_fixations"] for r in rows] == [9] * 5  # 3 subjects x 3 points, all inside
    fix = np.unpackbits(np.load(tmp_path / "out" / "all" / "fixations.npy"), axis=-1, count=20)
    assert fix.shape == (5, 15, 20) and (fix.reshape(5, -1).sum(1) >= 1).all()


def test_prepared_dataset_items(mit, tmp_path):
    prepare_benchmark("mit1003", mit, tmp_path / "p", input_size=IN, output_size=OUT, progress=False)
    split = tmp_path / "p" / "train"
    ds = PreparedDataset(split)
    images = np.load(split / "images.npy")
    density = np.load(split / "density.npy")
    fix = np.unpackbits(np.load(split / "fixations.npy"), axis=-1, count=OUT[1])
    assert len(ds) == 10 and ds.names == json.loads((split / "meta.json").read_text())["names"]
    for i in (0, 9, -1):
        item = ds[i]
        j = i % len(ds)
        assert item["index"] == j
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, *IN)
        assert item["image"].is_contiguous()
        torch.testing.assert_close(item["image"], torch.from_numpy(images[j]).permute(2, 0, 1).float() / 255)
        torch.testing.assert_close(item["density"], torch.from_numpy(density[j] / np.float32(255)))
        torch.testing.assert_close(item["fixations"], torch.from_numpy(fix[j].astype(np.float32)))
        assert set(torch.unique(item["fixations"]).tolist()) <= {0.0, 1.0}
    with pytest.raises(IndexError):
        ds[10]
    # Pickled for a worker without the memory maps (which pickle would copy in full).
    _ = ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 4000 and pickle.loads(blob)[3]["index"] == 3


def test_hflip_moves_image_and_maps_together_and_depends_only_on_seed_epoch_index(mit, tmp_path):
    prepare_benchmark("mit1003", mit, tmp_path / "p", input_size=IN, output_size=OUT, progress=False)
    split = tmp_path / "p" / "train"
    plain = PreparedDataset(split)
    aug = PreparedDataset(split, hflip=True, seed=7)
    flips = []
    for epoch in range(4):
        aug.set_epoch(epoch)
        for i in range(len(aug)):
            a, p = aug[i], plain[i]
            flipped = not torch.equal(a["image"], p["image"])
            ref = {k: (p[k].flip(-1) if flipped else p[k]) for k in ("image", "density", "fixations")}
            for k in ref:
                assert torch.equal(a[k], ref[k]), (epoch, i, k)
            flips.append(flipped)
            rng = augmentation_rng(7, epoch, i)
            assert flipped == (rng.random() < 0.5)
    assert 10 < sum(flips) < 30  # both outcomes, about half
    aug.set_epoch(2)
    again = PreparedDataset(split, hflip=True, seed=7)
    again.set_epoch(2)
    assert all(torch.equal(aug[i]["image"], again[i]["image"]) for i in range(len(aug)))


def test_augmentation_does_not_depend_on_num_workers(mit, tmp_path):
    prepare_benchmark("mit1003", mit, tmp_path / "p", input_size=IN, output_size=OUT, progress=False)
    ds = PreparedDataset(tmp_path / "p" / "train", hflip=True, photometric=True, seed=3)
    ds.set_epoch(5)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers)
        batches[workers] = list(loader)
    for b0, b2 in zip(batches[0], batches[2], strict=True):
        for k in ("image", "density", "fixations", "index"):
            assert torch.equal(b0[k], b2[k])


def test_photometric_changes_the_image_only():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 256, (3, 16, 20), dtype=np.uint8))
    img[:, :, 10:] = torch.tensor([200, 40, 90], dtype=torch.uint8)[:, None, None]  # constant right half
    dens = torch.rand(8, 10)
    pseudo = torch.from_numpy(rng.integers(0, 256, (8, 10), dtype=np.uint8))
    changed = 0
    for k in range(40):
        out, (d, p) = augment_pair(img, (dens, pseudo), hflip=False, photometric=True, rng=augmentation_rng(0, 0, k))
        assert out.dtype == torch.float32 and out.shape == img.shape and 0 <= out.min() and out.max() <= 1
        assert torch.equal(d, dens) and torch.equal(p, pseudo) and p.dtype == torch.uint8
        # Photometric ops act per pixel (sharpness: per 3x3 neighbourhood): a constant region
        # stays constant away from its border; a shear, translation or rotation would not.
        right = out[:, 1:-1, 13:-1]
        assert torch.equal(right, right[:, :1, :1].expand_as(right)), k
        changed += not torch.equal(out, img.float() / 255)
    assert changed >= 35
    # With flipping on, a cached pseudo map flips exactly when the image does.
    for k in range(20):
        out, (p,) = augment_pair(img, (pseudo,), hflip=True, photometric=False, rng=augmentation_rng(1, 2, k))
        assert torch.equal(p, pseudo.flip(-1)) == torch.equal(out, img.flip(-1).float() / 255)


def test_photometric_ops_are_torchvisions_minus_the_geometric_ones():
    from torchvision.transforms import TrivialAugmentWide

    space = TrivialAugmentWide(num_magnitude_bins=31)._augmentation_space(31)
    geometric = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
    assert PHOTOMETRIC_OPS == tuple(k for k in space if k not in geometric)
    from semipkd.data.augment import _SPACE

    for name in PHOTOMETRIC_OPS:
        mags, signed = space[name]
        ours, our_signed = _SPACE[name]
        assert signed == our_signed
        if mags.ndim:
            np.testing.assert_allclose(ours, mags.numpy(), rtol=1e-6)
    # Each op gives torchvision's result for the same magnitude.
    from torchvision.transforms import functional as F

    img = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 8, 8), dtype=np.uint8))
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    out = trivial_augment_photometric(img, rng, op="Brightness")
    rng.bit_generator.state = state
    m = float(_SPACE["Brightness"][0][rng.integers(31)]) * (-1 if rng.integers(2) else 1)
    assert torch.equal(out, F.adjust_brightness(img, 1 + m))
    assert torch.equal(trivial_augment_photometric(img, rng, op="Equalize"), F.equalize(img))


def test_unlabeled_pool_prepare_and_dataset(tmp_path):
    truth = write_pool(tmp_path / "pool", ["x/1", "x/2", "y", "z/deep/3"], size=(9, 13))
    rows = prepare_unlabeled(tmp_path / "pool", tmp_path / "out", input_size=(6, 8), progress=False)
    assert [(r["name"], r["split"], r["height"], r["width"], r["status"]) for r in rows] == [
        (n, "all", 9, 13, "ok") for n in ["x/1", "x/2", "y", "z/deep/3"]]
    d = tmp_path / "out" / "all"
    assert sorted(p.name for p in d.iterdir()) == ["images.npy", "meta.json"]
    meta = json.loads((d / "meta.json").read_text())
    assert meta["output_size"] is None and meta["count"] == 4 and meta["name"] == "unlabeled"
    ds = PreparedImages(d, hflip=True, seed=1)
    pool = open_unlabeled(tmp_path / "pool")
    for i in range(4):
        expect = torch.from_numpy(resize_image(truth[pool.names[i]], (6, 8))).permute(2, 0, 1).float() / 255
        got = ds[i]["image"]
        assert torch.equal(got, expect) or torch.equal(got, expect.flip(-1))
        assert ds[i]["index"] == i
        assert torch.equal(ds.image_uint8(i), torch.from_numpy(resize_image(truth[pool.names[i]], (6, 8))).permute(2, 0, 1))
    with pytest.raises(DataError, match="not a labelled split"):
        PreparedDataset(d)
    digest = _digest(d)
    prepare_unlabeled(tmp_path / "pool", tmp_path / "out", input_size=(6, 8), num_workers=2, progress=False)
    assert _digest(d) == digest


def test_prepare_argument_errors(mit, tmp_path):
    with pytest.raises(ValueError, match="input_size"):
        prepare_benchmark("mit1003", mit, tmp_path / "o", input_size=(0, 4), output_size=OUT)
    with pytest.raises(ValueError, match="output_size"):
        prepare_benchmark("mit1003", mit, tmp_path / "o", input_size=IN, output_size=(4,))
    with pytest.raises(ValueError, match="unknown split 'test'"):
        prepare_benchmark("mit1003", mit, tmp_path / "o", input_size=IN, output_size=OUT, splits=("test",))
    with pytest.raises(ValueError, match="on_error"):
        prepare_unlabeled(mit, tmp_path / "o", input_size=IN, on_error="warn")
    with pytest.raises(ValueError, match="rng is required"):
        augment_pair(torch.zeros(3, 2, 2, dtype=torch.uint8), hflip=True, photometric=False, rng=None)
    with pytest.raises(ValueError, match="uint8"):
        augment_pair(torch.zeros(3, 2, 2), hflip=False, photometric=False, rng=None)


def test_named_augmentations_apply_exactly_the_ops_they_name():
    """``augment``/``pseudo_augment`` lists: color_jitter alone is ColorJitter's draw only,
    trivial_augment alone is one TrivialAugment op only, both (= ``True``) is ColorJitter then
    TrivialAugment from the same generator, and none leaves the image as it is."""
    from semipkd.data.augment import color_jitter, photometric_ops

    rng = np.random.default_rng(3)
    img = torch.from_numpy(rng.integers(0, 256, (3, 12, 14), dtype=np.uint8))
    for k in range(10):
        jitter_only, _ = augment_pair(img, (), hflip=False, photometric=["color_jitter"], rng=augmentation_rng(0, 1, k))
        assert torch.equal(jitter_only, color_jitter(img, augmentation_rng(0, 1, k)).float() / 255)
        ta_only, _ = augment_pair(img, (), hflip=False, photometric=("trivial_augment",), rng=augmentation_rng(0, 1, k))
        assert torch.equal(ta_only, trivial_augment_photometric(img, augmentation_rng(0, 1, k)).float() / 255)
        both, _ = augment_pair(img, (), hflip=False, photometric=("hflip", "trivial_augment", "color_jitter"),
                               rng=augmentation_rng(0, 1, k))
        g = augmentation_rng(0, 1, k)
        assert torch.equal(both, trivial_augment_photometric(color_jitter(img, g), g).float() / 255)
        legacy, _ = augment_pair(img, (), hflip=False, photometric=True, rng=augmentation_rng(0, 1, k))
        assert torch.equal(legacy, both)
        none, _ = augment_pair(img, (), hflip=False, photometric=(), rng=augmentation_rng(0, 1, k))
        assert torch.equal(none, img.float() / 255)
    assert photometric_ops(["trivial_augment", "color_jitter"]) == ("color_jitter", "trivial_augment")
    assert photometric_ops(["hflip"]) == () and photometric_ops(False) == ()
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        photometric_ops(["rotate"])


def test_labelled_subset_is_seeded_nested_and_disjoint_from_the_withheld_part():
    from semipkd.data.splits import labelled_subset

    kept, withheld = labelled_subset(500, 100, seed=3)
    assert len(kept) == 100 and len(withheld) == 400
    assert set(kept).isdisjoint(withheld) and sorted(set(kept) | set(withheld)) == list(range(500))
    assert np.array_equal(kept, np.sort(np.random.RandomState(3).permutation(500)[:100]))
    k2, _ = labelled_subset(500, 100, seed=3)
    assert np.array_equal(k2, kept)  # seeded
    assert not np.array_equal(labelled_subset(500, 100, seed=4)[0], kept)
    k250, _ = labelled_subset(500, 250, seed=3)
    assert set(kept) <= set(k250)  # a larger subset with the same seed contains the smaller
    assert np.array_equal(labelled_subset(500, 0.5, seed=3)[0], k250)  # a fraction: 250 of 500
    with pytest.raises(ValueError, match="501 images asked for"):
        labelled_subset(500, 501, seed=0)
    with pytest.raises(ValueError, match="whole number"):
        labelled_subset(500, 10.5, seed=0)


def test_withheld_labelled_images_join_the_pool_and_their_labels_are_never_read(mit, tmp_path):
    """The kept subset is written as the labelled train split; the withheld stimuli are appended to
    the pool. Their density and fixation files are overwritten with garbage first: were any of
    them read, prepare would raise (on_error: raise), as it does when a kept one is garbage."""
    from semipkd.data import open_labelled_train
    from semipkd.data.splits import labelled_subset
    from semipkd.data.validate import read_image

    full = open_benchmark("mit1003", mit, "train")
    kept_set, withheld = open_labelled_train("mit1003", mit, subset=(4, 7), on_error="raise")
    k, w = labelled_subset(len(full), 4, 7)
    assert kept_set.names == [full.names[i] for i in k]
    assert withheld.names == [f"mit1003/train/{full.names[i]}" for i in w]
    for i in w:
        for key in ("density", "fixations"):
            full.files(i)[key].write_bytes(b"not a label file")
    rows = prepare_benchmark("mit1003", mit, tmp_path / "p", input_size=IN, output_size=OUT, progress=False,
                             train=kept_set)
    meta = json.loads((tmp_path / "p" / "train" / "meta.json").read_text())
    assert meta["names"] == kept_set.names and meta["count"] == 4
    assert json.loads((tmp_path / "p" / "val" / "meta.json").read_text())["names"] == open_benchmark("mit1003", mit, "val").names
    assert {r["name"] for r in rows if r["split"] == "train"} == set(kept_set.names)
    write_pool(tmp_path / "pool", ["a", "b"], size=(9, 13))
    prepare_unlabeled(tmp_path / "pool", tmp_path / "u", input_size=IN, progress=False, extra=withheld)
    pool = PreparedImages(tmp_path / "u" / "all")
    assert pool.names == ["a", "b"] + withheld.names
    images = np.load(tmp_path / "u" / "all" / "images.npy")
    for j, i in enumerate(w):
        np.testing.assert_array_equal(images[2 + j], resize_image(read_image(full.files(i)["stimulus"])[0], IN))
    # control: a garbage label of a kept image is read, and refused
    full.files(int(k[0]))["density"].write_bytes(b"not a label file")
    with pytest.raises(DataError):
        prepare_benchmark("mit1003", mit, tmp_path / "p2", input_size=IN, output_size=OUT, progress=False,
                          train=kept_set)
    with pytest.raises(ValueError, match="train set was given"):
        prepare_benchmark("mit1003", mit, tmp_path / "p3", input_size=IN, output_size=OUT, progress=False,
                          splits=("val",), train=kept_set)
