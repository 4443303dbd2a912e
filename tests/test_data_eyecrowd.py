"""EyeCrowd (Jiang et al., ECCV 2014) as a benchmark: the real copy in ../shared/datasets/eyecrowd,
read by OSIE's reader, plus its format's bad records on small files written here.

The integration tests skip cleanly when the shared folder is absent. They decode only a few
images: the counts, the split and the observers come from the file list and the .mat file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.ndimage
from PIL import Image

from semipkd import metrics
from semipkd.config import ConfigError, parse_params
from semipkd.data import DataError, open_benchmark, split_indices
from semipkd.data.benchmarks import DENSITY_SIGMA_PX, _points_mat
from semipkd.evaluate import center_bias_map

REPO = Path(__file__).resolve().parents[1]
EYECROWD = REPO.parent / "shared" / "datasets" / "eyecrowd"
needs_eyecrowd = pytest.mark.skipif(
    not (EYECROWD / "eye" / "fixations.mat").is_file(), reason=f"real EyeCrowd not at {EYECROWD}"
)


@needs_eyecrowd
def test_counts_and_the_seeded_400_100_split():
    train, val = open_benchmark("eyecrowd", EYECROWD, "train"), open_benchmark("eyecrowd", EYECROWD, "val")
    assert train.layout == val.layout == "EyeCrowd distribution"
    assert len(train) == 400 and len(val) == 100
    names = sorted(p.stem for p in (EYECROWD / "stimuli").glob("*.jpg"))
    assert names == [f"{i:03d}" for i in range(1, 501)]
    idx = np.arange(500)
    np.random.RandomState(42).shuffle(idx)  # sorted list, RandomState(42), first 400 train
    assert train.names == [names[i] for i in idx[:400]] and val.names == [names[i] for i in idx[400:]]
    np.testing.assert_array_equal(split_indices("eyecrowd", 500)["val"], idx[400:])


@needs_eyecrowd
def test_about_16_observers_per_image_and_the_empty_records(caplog):
    with caplog.at_level("INFO"):
        points = _points_mat(EYECROWD / "eye" / "fixations.mat")
    assert len(points) == 500
    assert sum(len(p) for p, _ in points.values()) == 126_348  # the README's count
    observers = np.array([len(np.unique(o)) for _, o in points.values()])
    assert observers.max() == 16 and (observers >= 15).all() and observers.mean() == pytest.approx(16, abs=0.01)
    assert "3 observer records without fixations" in caplog.text
    for p, _ in points.values():  # every point inside the 1024x768 image (0-based here)
        assert (p[:, 0] >= 0).all() and (p[:, 0] <= 1023).all() and (p[:, 1] >= 0).all() and (p[:, 1] <= 767).all()


@needs_eyecrowd
def test_decoded_samples_blur_with_the_authors_26_px_and_centre_bias_scores_nss_above_half():
    assert DENSITY_SIGMA_PX["eyecrowd"] == (26.0, 1024)
    val = open_benchmark("eyecrowd", EYECROWD, "val")
    s = val[0]
    assert s.image.shape == (768, 1024, 3) and s.fixations.shape == (768, 1024)
    ref = scipy.ndimage.gaussian_filter(s.fixations.astype(np.float64), 26.0, mode="constant", truncate=8.9)
    np.testing.assert_allclose(s.density, ref / ref.max(), atol=1e-5)
    # the centre Gaussian (evaluate's baseline) on every val image, scored on the fixation maps
    # rasterised from the points (no image decoding needed)
    from semipkd.data.validate import points_to_fixation_map

    centre = center_bias_map((768, 1024), 0.25).numpy()
    points = _points_mat(EYECROWD / "eye" / "fixations.mat")
    fix = np.stack([points_to_fixation_map(points[n][0], (768, 1024))[0] for n in val.names])
    nss = metrics.nss(np.broadcast_to(centre, fix.shape).astype(np.float64), fix).numpy()
    assert nss.mean() > 0.5, nss.mean()


def _write_eyecrowd(root: Path, subjects_per_image: dict[str, list[dict]]) -> None:
    """Stimuli and an eye/fixations.mat in the authors' form: a cell (n x 1) of structs with
    ``img`` and ``subjects`` (a cell of structs: fix_x, fix_y 1-based, fix_duration)."""
    (root / "eye").mkdir(parents=True)
    (root / "stimuli").mkdir()
    cells = np.empty((len(subjects_per_image), 1), dtype=object)
    for i, (name, subjects) in enumerate(subjects_per_image.items()):
        Image.fromarray(np.full((24, 32, 3), 120, np.uint8)).save(root / "stimuli" / name)
        subj = np.empty((len(subjects), 1), dtype=object)
        for k, sub in enumerate(subjects):
            subj[k, 0] = sub
        cells[i, 0] = {"img": name, "subjects": subj}
    scipy.io.savemat(root / "eye" / "fixations.mat", {"fixations": cells})


def _subject(xs, ys):
    n = len(xs)
    return {"fix_x": np.asarray(xs, float)[None, :], "fix_y": np.asarray(ys, float)[None, :],
            "fix_duration": np.full((1, n), 200, np.uint16)}


def test_an_empty_observer_record_adds_nothing_and_a_broken_one_is_named(tmp_path):
    good = tmp_path / "good"
    _write_eyecrowd(good, {
        "001.jpg": [_subject([5, 10], [4, 8]), _subject([], []), _subject([20], [12])],
        "002.jpg": [_subject([3], [3]), _subject([7], [9])],
    })
    points = _points_mat(good / "eye" / "fixations.mat")
    p, o = points["001"]
    np.testing.assert_array_equal(p, [[4, 3], [9, 7], [19, 11]])  # 1-based in the file
    np.testing.assert_array_equal(o, [0, 0, 2])  # the empty record is observer 1: no points
    s = open_benchmark("eyecrowd", good, "all")
    assert sorted(s.names) == ["001", "002"]

    bad = tmp_path / "bad"
    _write_eyecrowd(bad, {"001.jpg": [{"fix_x": np.asarray([[1.0, 2.0]]), "fix_duration": np.asarray([[1.0]])}]})
    with pytest.raises(DataError, match=r"fixations.mat.*image 001.jpg: subject 0 lacks fix_x / fix_y"):
        _points_mat(bad / "eye" / "fixations.mat")


def test_eyecrowd_needs_real_data():
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["benchmarks"] = ["osie", "eyecrowd"]
    with pytest.raises(ConfigError, match="eyecrowd exists only as real data"):
        parse_params(raw)
    raw["data"]["source"] = "real"
    assert parse_params(raw).data.benchmarks == ("osie", "eyecrowd")
