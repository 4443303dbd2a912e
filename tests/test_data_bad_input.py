"""Bad input (docs/data.md): each case raises a DataError naming the file and what is wrong,
or, with on_error="skip", is skipped, listed and counted in the manifest."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image
from test_data_fixtures import osie_mat, salicon_mat, save_gray, save_rgb, write_osie, write_pool, write_repo, write_salicon

from semipkd.data import (
    DataError,
    PreparedDataset,
    PreparedImages,
    open_benchmark,
    open_unlabeled,
    prepare_benchmark,
    prepare_unlabeled,
    summarize_rows,
)

NAMES = [f"s{i}" for i in range(8)]  # pascal_s, 8 images: val = round(8 * 200 / 850) = 2


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "pascal_s"
    truth = write_repo(root, NAMES, stim_ext=".jpg")
    return root, truth


def _stim(root, name):
    return root / "stimuli" / f"{name}.jpg"


def _prepare(root, tmp_path, on_error, splits=("all",)):
    return prepare_benchmark("pascal_s", root, tmp_path / "out", input_size=(8, 8), output_size=(6, 6),
                             splits=splits, on_error=on_error, progress=False)


def _assert_skipped_once(rows, name, *text):
    bad = [r for r in rows if r["status"] == "skipped"]
    assert len(bad) == 1, bad
    assert bad[0]["name"] == name
    for t in text:
        assert t in bad[0]["reason"], bad[0]["reason"]
    return bad[0]


def _check_decode_error(root, tmp_path, name, path, *text):
    """raise: DataError names ``path``; skip: one skipped row, the rest prepared, split unchanged."""
    ds = open_benchmark("pascal_s", root, "all")  # structure is fine: found when decoding
    with pytest.raises(DataError) as exc:
        ds.validate(progress=False)
    assert exc.value.path == path and str(path) in str(exc.value)
    for t in text:
        assert t in str(exc.value)
    with pytest.raises(DataError, match=text[0]):
        _prepare(root, tmp_path, "raise")
    assert not (tmp_path / "out" / "all").exists()  # nothing half-written
    rows = _prepare(root, tmp_path, "skip")
    _assert_skipped_once(rows, name, str(path), *text)
    meta = json.loads((tmp_path / "out" / "all" / "meta.json").read_text())
    assert meta["count"] == len(NAMES) - 1 and name not in meta["names"]
    assert summarize_rows(rows) == {"all": {"ok": len(NAMES) - 1, "skipped": 1}}


def test_truncated_jpeg(repo, tmp_path):
    root, _ = repo
    p = _stim(root, "s3")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _check_decode_error(root, tmp_path, "s3", p, "truncated")


def test_corrupt_jpeg(repo, tmp_path):
    root, _ = repo
    p = _stim(root, "s5")
    p.write_bytes(b"\x00garbage, not a JPEG at all" * 10)
    _check_decode_error(root, tmp_path, "s5", p, "not a decodable image")


def test_corrupt_map(repo, tmp_path):
    root, _ = repo
    p = root / "saliency" / "s2.png"
    p.write_bytes(p.read_bytes()[:40])
    _check_decode_error(root, tmp_path, "s2", p, "image")


def test_empty_fixation_map(repo, tmp_path):
    root, _ = repo
    p = save_gray(root / "fixations" / "s1.png", np.zeros((12, 16), np.uint8))
    _check_decode_error(root, tmp_path, "s1", p, "empty fixation map")


def test_empty_density_map(repo, tmp_path):
    root, _ = repo
    p = save_gray(root / "saliency" / "s6.png", np.zeros((12, 16), np.uint8))
    _check_decode_error(root, tmp_path, "s6", p, "density map is empty")


def test_map_of_the_wrong_size(repo, tmp_path):
    root, _ = repo
    p = save_gray(root / "saliency" / "s4.png", np.full((12, 15), 200, np.uint8))
    _check_decode_error(root, tmp_path, "s4", p, "size 12x15", "differs from its stimulus s4.jpg (12x16)")


def test_transparent_rgba_stimulus(repo, tmp_path):
    root, _ = repo
    _stim(root, "s0").unlink()
    rgba = np.full((12, 16, 4), 255, np.uint8)
    rgba[0, 0, 3] = 10
    p = root / "stimuli" / "s0.png"
    Image.fromarray(rgba, "RGBA").save(p)
    _check_decode_error(root, tmp_path, "s0", p, "transparent")


@pytest.mark.parametrize("which", ["saliency", "fixations"])
def test_missing_map_file(repo, tmp_path, which):
    root, _ = repo
    (root / which / "s2.png").unlink()
    kind = "missing density map" if which == "saliency" else "missing fixation file"
    with pytest.raises(DataError, match=kind) as exc:
        open_benchmark("pascal_s", root, "all")
    assert exc.value.path == _stim(root, "s2")
    ds = open_benchmark("pascal_s", root, "all", on_error="skip")
    assert len(ds) == 7 and "s2" not in ds.names
    assert ds.skipped[0][0] == str(_stim(root, "s2")) and kind in ds.skipped[0][1]
    # The split is computed on the full sorted list: the other samples keep their split.
    va = open_benchmark("pascal_s", root, "val", on_error="skip")
    idx = np.arange(8)
    np.random.RandomState(42).shuffle(idx)
    assert va.names == [NAMES[i] for i in idx[6:] if NAMES[i] != "s2"]
    rows = _prepare(root, tmp_path, "skip")
    _assert_skipped_once(rows, "s2", kind)


def test_names_that_do_not_pair(repo, tmp_path):
    root, _ = repo
    (root / "saliency" / "s7.png").rename(root / "saliency" / "s7_typo.png")
    with pytest.raises(DataError) as exc:
        open_benchmark("pascal_s", root, "all")
    msg = str(exc.value)
    assert "missing density map" in msg and "s7.png" in msg
    assert "s7_typo.png" in msg and "pairs with no stimulus" in msg
    files = {f for f, _ in exc.value.problems}
    assert files == {str(_stim(root, "s7")), str(root / "saliency" / "s7_typo.png")}
    rows = _prepare(root, tmp_path, "skip")
    skipped = {r["name"] for r in rows if r["status"] == "skipped"}
    assert skipped == {"s7", "saliency/s7_typo.png"}


def test_duplicate_stimulus_names(repo, tmp_path):
    root, truth = repo
    save_rgb(root / "stimuli" / "s1.png", truth["s1"][0])
    with pytest.raises(DataError, match="two stimuli named 's1'"):
        open_benchmark("pascal_s", root, "all")


def test_stray_non_image_files(repo, tmp_path):
    root, _ = repo
    (root / "stimuli" / "README.txt").write_text("documentation is ignored")
    (root / "stimuli" / ".DS_Store").write_bytes(b"\0")
    assert len(open_benchmark("pascal_s", root, "all")) == 8
    stray = root / "stimuli" / "notes.csv"
    stray.write_text("a,b")
    with pytest.raises(DataError, match="stray file in the stimuli folder: not an image") as exc:
        open_benchmark("pascal_s", root, "all")
    assert exc.value.path == stray
    (root / "saliency" / "s1.bmp").write_bytes(b"BM")
    ds = open_benchmark("pascal_s", root, "all", on_error="skip")
    assert len(ds) == 8 and {f for f, _ in ds.skipped} == {str(stray), str(root / "saliency" / "s1.bmp")}
    rows = _prepare(root, tmp_path, "skip", splits=("train", "val"))
    # Files of no stimulus are reported once, not once per split.
    assert sorted(r["name"] for r in rows if r["status"] == "skipped") == ["saliency/s1.bmp", "stimuli/notes.csv"]
    assert summarize_rows(rows)["train"]["ok"] == 6 and summarize_rows(rows)["val"]["ok"] == 2


def test_empty_folder(tmp_path):
    for sub in ("stimuli", "saliency", "fixations"):
        (tmp_path / sub).mkdir()
    with pytest.raises(DataError, match="no images") as exc:
        open_benchmark("mit1003", tmp_path, "train")
    assert exc.value.path == tmp_path / "stimuli"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a mit1003 dataset folder.*found nothing"):
        open_benchmark("mit1003", tmp_path / "empty", "train")
    with pytest.raises(DataError, match="no images"):
        open_unlabeled(tmp_path / "empty")


def test_wrong_root(tmp_path, repo):
    root, _ = repo
    with pytest.raises(DataError, match="does not exist") as exc:
        open_benchmark("pascal_s", tmp_path / "nowhere", "train")
    assert exc.value.path == tmp_path / "nowhere"
    with pytest.raises(DataError, match="not a folder"):
        open_benchmark("pascal_s", _stim(root, "s0"), "train")
    with pytest.raises(DataError, match="does not exist"):
        open_unlabeled(tmp_path / "nowhere")
    # A pascal_s folder given as SALICON: says what was expected and what is there.
    with pytest.raises(DataError) as exc:
        open_benchmark("salicon", root, "train")
    msg = str(exc.value)
    assert "not a salicon dataset folder" in msg and "stimuli/train/" in msg and "images/train/" in msg
    assert "stimuli/" in msg.split("found")[1]
    # The parent of the benchmark's folder: the message points at the folder meant.
    with pytest.raises(DataError, match=f"did you mean {root}"):
        open_benchmark("pascal_s", root.parent, "train")
    # OSIE's distribution without its fixation file.
    write_osie(tmp_path / "osie", 3)
    (tmp_path / "osie" / "eye" / "fixations.mat").unlink()
    with pytest.raises(DataError, match=r"OSIE distribution \(missing eye/fixations.mat\)"):
        open_benchmark("osie", tmp_path / "osie", "all")


def test_grayscale_cmyk_rgba_16bit_stimuli_are_converted(tmp_path):
    root = tmp_path / "pascal_s"
    write_repo(root, ["g", "c", "a", "w", "r"])
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    save_gray(root / "stimuli" / "g.png", gray)
    cmyk = Image.fromarray(rng.integers(0, 256, (12, 16, 4), dtype=np.uint8), "CMYK")
    (root / "stimuli" / "c.png").unlink()
    cmyk.save(root / "stimuli" / "c.jpg", quality=95)
    rgba = rng.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(root / "stimuli" / "a.png")
    w16 = rng.integers(0, 65536, (12, 16)).astype(np.uint16)
    Image.fromarray(w16).save(root / "stimuli" / "w.png")  # 16-bit grayscale PNG
    rgb16 = rng.integers(0, 65536, (12, 16, 3)).astype(np.uint16)
    cv2.imwrite(str(root / "stimuli" / "r.png"), rgb16[:, :, ::-1])  # 16-bit RGB PNG (cv2 writes BGR)
    with Image.open(root / "stimuli" / "w.png") as im:
        assert im.mode.startswith("I")  # really 16-bit on disk

    ds = open_benchmark("pascal_s", root, "all")
    by = {n: ds[i] for i, n in enumerate(ds.names)}
    np.testing.assert_array_equal(by["g"].image, np.repeat(gray[:, :, None], 3, 2))
    assert by["g"].notes == ("grayscale converted to RGB",)
    with Image.open(root / "stimuli" / "c.jpg") as im:
        assert im.mode == "CMYK"
        np.testing.assert_array_equal(by["c"].image, np.asarray(im.convert("RGB")))
    assert by["c"].notes == ("CMYK converted to RGB",)
    np.testing.assert_array_equal(by["a"].image, rgba[..., :3])
    expected16 = np.floor(w16 / 257.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(by["w"].image, np.repeat(expected16[:, :, None], 3, 2))
    assert "16-bit" in by["w"].notes[0]
    np.testing.assert_array_equal(by["r"].image, (rgb16 >> 8).astype(np.uint8))  # PIL keeps the high byte
    rows = ds.validate(progress=False)
    assert {r["name"]: r["reason"] for r in rows}["g"] == "grayscale converted to RGB"
    assert all(r["status"] == "ok" for r in rows)


def test_16bit_maps_are_scaled(tmp_path):
    root = tmp_path / "pascal_s"
    truth = write_repo(root, ["m"])
    d16 = (truth["m"][1].astype(np.uint16) * 257)
    Image.fromarray(d16).save(root / "saliency" / "m.png")
    s = open_benchmark("pascal_s", root, "all")[0]
    np.testing.assert_allclose(s.density, truth["m"][1] / 255.0, atol=1e-6)


def test_salicon_fixations_outside_the_image(tmp_path):
    write_salicon(tmp_path, 2, 1)
    mat = tmp_path / "fixations" / "train" / "COCO_train2014_000000000000.mat"
    # 16 wide, 12 high: x = 17 (1-based) and y = 0 are outside; (1, 1) and (16, 12) inside.
    salicon_mat(mat, [np.array([[1, 1], [17, 5], [16, 12]]), np.array([[4, 0]])], (12, 16))
    ds = open_benchmark("salicon", tmp_path, "train")
    s = ds[0]
    np.testing.assert_array_equal(s.points, [[0, 0], [15, 11]])
    assert s.fixations.sum() == 2 and s.fixations[0, 0] and s.fixations[11, 15]
    assert s.notes == ("dropped 2 of 4 fixations outside the image",)
    rows = ds.validate(progress=False)
    assert rows[0]["reason"] == "dropped 2 of 4 fixations outside the image" and rows[0]["n_fixations"] == 2
    # All outside: an error naming the .mat file.
    salicon_mat(mat, [np.array([[30, 1], [0, 0]])], (12, 16))
    with pytest.raises(DataError, match="all 2 fixations fall outside the image") as exc:
        open_benchmark("salicon", tmp_path, "train")[0]
    assert exc.value.path == mat
    salicon_mat(mat, [np.array([[3, 3]])], (480, 640))
    with pytest.raises(DataError, match="resolution 480x640 differs"):
        open_benchmark("salicon", tmp_path, "train")[0]


def test_bad_mat_files(tmp_path):
    write_salicon(tmp_path, 2, 1)
    mat = tmp_path / "fixations" / "train" / "COCO_train2014_000000000001.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file, broken" + b"\0" * 20)
    ds = open_benchmark("salicon", tmp_path, "train")
    with pytest.raises(DataError, match="cannot read .mat file") as exc:
        ds[1]
    assert exc.value.path == mat
    scipy.io.savemat(mat, {"something": np.zeros(3)})
    with pytest.raises(DataError, match="neither 'gaze' \\(SALICON\\) nor 'fixLocs'"):
        ds[1]


def test_osie_points_outside_and_unpaired(tmp_path):
    write_osie(tmp_path, 4, size=(12, 16))
    mat = tmp_path / "eye" / "fixations.mat"
    m = scipy.io.loadmat(mat, simplify_cells=True)["fixations"]
    # Image 1002: every point outside the 16x12 image -> error naming fixations.mat and the image.
    records = []
    for rec in m:
        subs = [(np.atleast_1d(s["fix_x"]), np.atleast_1d(s["fix_y"])) for s in rec["subjects"]]
        if rec["img"] == "1002.jpg":
            subs = [(np.array([40.0, 0.2]), np.array([3.0, 3.0]))]
        records.append((rec["img"], subs))
    records.append(("1999.jpg", [(np.array([2.0]), np.array([2.0]))]))  # no such stimulus
    osie_mat(mat, records)
    with pytest.raises(DataError, match="fixations for '1999' but no stimulus"):
        open_benchmark("osie", tmp_path, "all")
    ds = open_benchmark("osie", tmp_path, "all", on_error="skip")
    assert len(ds) == 4
    with pytest.raises(DataError, match=r"all 2 fixations fall outside the image \(stimulus 1002.jpg") as exc:
        ds[1]
    assert exc.value.path == mat
    rows = ds.validate(on_error="skip", progress=False)
    assert summarize_rows(rows) == {"all": {"ok": 3, "skipped": 2}}
    assert ds.names == ["1001", "1003", "1004"]


def test_unlabeled_pool_bad_files(tmp_path):
    write_pool(tmp_path / "pool", ["a", "sub/b", "sub/c", "d"])
    (tmp_path / "pool" / "LICENSE").write_text("ignored")
    stray = tmp_path / "pool" / "sub" / "labels.json"
    stray.write_text("{}")
    broken = tmp_path / "pool" / "sub" / "c.png"
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(DataError, match="stray file in the unlabeled pool") as exc:
        open_unlabeled(tmp_path / "pool")
    assert exc.value.path == stray
    with pytest.raises(DataError) as exc:
        prepare_unlabeled(tmp_path / "pool", tmp_path / "out", input_size=(8, 8), on_error="raise", progress=False)
    assert exc.value.path == stray
    rows = prepare_unlabeled(tmp_path / "pool", tmp_path / "out", input_size=(8, 8), on_error="skip", progress=False)
    assert sorted((r["name"], r["status"]) for r in rows) == [
        ("a", "ok"), ("d", "ok"), ("sub/b", "ok"), ("sub/c", "skipped"), ("sub/labels.json", "skipped")]
    assert str(broken) in {r["name"]: r["reason"] for r in rows}["sub/c"]
    assert len(PreparedImages(tmp_path / "out" / "all")) == 3


def test_all_samples_bad_is_an_error_even_when_skipping(repo, tmp_path):
    root, _ = repo
    for n in NAMES:
        save_gray(root / "fixations" / f"{n}.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DataError, match="no usable samples"):
        _prepare(root, tmp_path, "skip")


def test_damaged_cache_fails_when_the_dataset_is_built(repo, tmp_path):
    root, _ = repo
    _prepare(root, tmp_path, "raise", splits=("train",))
    split = tmp_path / "out" / "train"
    PreparedDataset(split)  # intact
    with pytest.raises(DataError, match="prepared split folder does not exist"):
        PreparedDataset(tmp_path / "out" / "val")
    data = (split / "density.npy").read_bytes()
    (split / "density.npy").write_bytes(data[:-7])
    with pytest.raises(DataError, match="truncated") as exc:
        PreparedDataset(split)
    assert exc.value.path == split / "density.npy"
    (split / "density.npy").write_bytes(data)
    meta = json.loads((split / "meta.json").read_text())
    (split / "meta.json").write_text(json.dumps({**meta, "version": 0}))
    with pytest.raises(DataError, match="cache version 0"):
        PreparedDataset(split)
    (split / "meta.json").write_text(json.dumps({**meta, "count": meta["count"] + 1}))
    with pytest.raises(DataError, match="do not match count"):
        PreparedDataset(split)
    (split / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json: missing"):
        PreparedImages(split)
