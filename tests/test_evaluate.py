"""Tests of semipkd.evaluate: center bias, batched prediction, the two protocols, side outputs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from semipkd import evaluate as ev
from semipkd import metrics
from semipkd.data import rescale_fixations, resize_density
from semipkd.io import atomic_write_json


@dataclass
class _Sample:
    """The fields of semipkd.data.Sample that evaluation reads."""

    name: str
    image: np.ndarray
    density: np.ndarray
    fixations: np.ndarray
    points: np.ndarray


def _make_sample(rng: np.random.Generator, name: str, size: tuple[int, int], n_fix: int = 12) -> _Sample:
    """A sample whose image IS its density (grey levels q, density q/255) and whose fixations
    lie on the density's bright blob, so an oracle model can read the ground truth off the
    image exactly."""
    h, w = size
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    sy, sx = 0.15 * h, 0.15 * w
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
    q = np.round(d / d.max() * 255).astype(np.uint8)
    ys = np.clip(np.round(rng.normal(cy, sy / 2, n_fix)), 0, h - 1).astype(int)
    xs = np.clip(np.round(rng.normal(cx, sx / 2, n_fix)), 0, w - 1).astype(int)
    fix = np.zeros((h, w), dtype=bool)
    fix[ys, xs] = True
    return _Sample(
        name=name,
        image=np.repeat(q[:, :, None], 3, axis=2),
        density=q.astype(np.float32) / 255.0,
        fixations=fix,
        points=np.stack([xs, ys], axis=1).astype(np.float64),
    )


class _Oracle(nn.Module):
    """Returns the image's red channel (= the density) at ``output_size``: a perfect predictor."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = tuple(output_size)
        self.anchor = nn.Parameter(torch.zeros(()))  # so .to(device) has something to move

    def forward(self, x):
        y = x[:, 0] + 0 * self.anchor
        if tuple(y.shape[-2:]) != self.output_size:
            y = torch.nn.functional.interpolate(y[:, None], size=self.output_size, mode="bilinear", align_corners=False)[:, 0]
        return y


class _Flat(nn.Module):
    """A constant map: carries no information at all."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = tuple(output_size)

    def forward(self, x):
        return torch.full((x.shape[0], *self.output_size), 0.5)


def _same_size_samples(n=5, size=(24, 32), seed=0):
    rng = np.random.default_rng(seed)
    return [_make_sample(rng, f"img{i}", size) for i in range(n)]


def _mixed_size_samples(seed=1):
    rng = np.random.default_rng(seed)
    sizes = [(24, 32), (30, 20), (24, 32), (36, 36), (20, 28), (30, 20)]
    return [_make_sample(rng, f"mix{i}", s) for i, s in enumerate(sizes)]


CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------
# center bias


def test_center_bias_map_is_the_documented_gaussian():
    h, w, frac = 41, 61, 0.25
    m = ev.center_bias_map((h, w), frac, dtype=torch.float64)
    assert m.shape == (h, w)
    assert m.max().item() == pytest.approx(1.0)
    assert m[20, 30].item() == pytest.approx(1.0)  # the center pixel of an odd-sized map
    # one sigma away along each axis: exp(-1/2); both: exp(-1)
    assert m[20, 30 + 15].item() == pytest.approx(math.exp(-0.5 * (15 / (frac * w)) ** 2), rel=1e-12)
    assert m[20 + 10, 30].item() == pytest.approx(math.exp(-0.5 * (10 / (frac * h)) ** 2), rel=1e-12)
    assert m[0, 0].item() == pytest.approx(math.exp(-0.5 * ((20 / (frac * h)) ** 2 + (30 / (frac * w)) ** 2)), rel=1e-12)
    assert torch.equal(m, m.flip(0)) and torch.equal(m, m.flip(1))
    # scale-invariant shape: the even-size map's center is between pixels, symmetric too
    m2 = ev.center_bias_map((20, 30), frac)
    assert torch.allclose(m2, m2.flip(0)) and torch.allclose(m2, m2.flip(1))
    assert m2.dtype == torch.float32 and 0 < m2.min() and m2.max() < 1.0 + 1e-6


@pytest.mark.parametrize("size,frac", [((0, 4), 0.25), ((4,), 0.25), ((4, 4), 0.0), ((4, 4), -1.0)])
def test_center_bias_map_rejects_bad_arguments(size, frac):
    with pytest.raises(ValueError):
        ev.center_bias_map(size, frac)


# --------------------------------------------------------------------------------------------
# predict_maps


def test_predict_maps_is_batch_independent_and_restores_mode():
    samples = _mixed_size_samples()
    model = _Oracle((16, 16)).train()
    a = ev.predict_maps(model, samples, (16, 16), CPU, batch_size=1, progress=False)
    b = ev.predict_maps(model, samples, (16, 16), CPU, batch_size=4, progress=False)
    assert a.shape == (len(samples), 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert model.training  # mode restored
    # the oracle reads back the image resized to the input size
    from semipkd.data import resize_image

    ref = resize_image(samples[1].image, (16, 16))[:, :, 0].astype(np.float32) / 255.0
    assert np.allclose(a[1].numpy(), ref, atol=1e-6)


# --------------------------------------------------------------------------------------------
# evaluate_benchmark


def test_perfect_predictor_scores_cc_1_and_beats_center_bias():
    samples = _same_size_samples()
    size = samples[0].density.shape
    res = ev.evaluate_benchmark(
        {"oracle": _Oracle(size), "center_bias": "center_bias", "flat": _Flat(size)},
        samples,
        input_size=size,
        output_size=size,
        device=CPU,
        seed=0,
        batch_size=2,
        progress=False,
    )
    for proto in ev.PROTOCOLS:
        o, c = res.scores["oracle"][proto], res.scores["center_bias"][proto]
        assert o["cc"] == pytest.approx(1.0, abs=1e-9)
        assert o["sim"] == pytest.approx(1.0, abs=1e-9)
        assert o["kld"] == pytest.approx(0.0, abs=1e-6)
        for m in ("cc", "sim", "nss", "auc_judd", "auc_borji", "info_gain"):
            assert o[m] > c[m], (proto, m)
        assert o["kld"] < c["kld"]
        # info gain is measured against the center bias: the baseline itself gains exactly 0
        assert c["info_gain"] == pytest.approx(0.0, abs=1e-9)
        # a constant map is at chance for every AUC
        for m in ("auc_judd", "auc_borji", "sauc"):
            assert res.scores["flat"][proto][m] == pytest.approx(0.5, abs=1e-9), (proto, m)


def test_json_nesting_is_model_protocol_metric_with_one_number_each(tmp_path):
    samples = _same_size_samples(n=3)
    size = samples[0].density.shape
    res = ev.evaluate_benchmark(
        {"teacher": _Oracle(size), "student": _Flat(size), "center_bias": "center_bias"},
        samples,
        input_size=size,
        output_size=(12, 16),
        device=CPU,
        seed=3,
        progress=False,
    )
    assert list(res.scores) == ["teacher", "student", "center_bias"]
    for per_model in res.scores.values():
        assert list(per_model) == ["benchmark", "model_resolution"]
        for per_proto in per_model.values():
            assert tuple(per_proto) == metrics.METRIC_NAMES
            assert all(type(v) is float and math.isfinite(v) for v in per_proto.values())
    path = tmp_path / "mit1003.json"
    atomic_write_json(path, res.scores)
    assert json.loads(path.read_text()) == res.scores
    # one protocol only
    res1 = ev.evaluate_benchmark(
        {"teacher": _Oracle(size)}, samples, input_size=size, output_size=size, device=CPU, seed=3,
        protocols=("model_resolution",), progress=False,
    )
    assert list(res1.scores["teacher"]) == ["model_resolution"]


def test_scores_are_means_of_independently_computed_per_image_values():
    """model_resolution: GT via resize_density / rescale_fixations at the output size; the
    summary is the plain mean over images of the float64 metrics."""
    samples = _mixed_size_samples()
    out_size = (16, 20)
    model = _Oracle(out_size)
    res = ev.evaluate_benchmark(
        {"m": model}, samples, input_size=(16, 16), output_size=out_size, device=CPU, seed=0,
        protocols=("model_resolution",), progress=False,
    )
    pred = ev.predict_maps(model, samples, (16, 16), CPU, progress=False).double()
    dens = torch.from_numpy(np.stack([resize_density(s.density, out_size) for s in samples])).double()
    fix = torch.from_numpy(np.stack([np.asarray(rescale_fixations(s.fixations, out_size), dtype=bool) for s in samples]))
    expect = {"cc": metrics.cc(pred, dens), "kld": metrics.kld(pred, dens), "nss": metrics.nss(pred, fix),
              "sim": metrics.sim(pred, dens)}
    for m, v in expect.items():
        got = res.per_image["m"]["model_resolution"][m]
        assert got.dtype == np.float64 and got.shape == (len(samples),)
        np.testing.assert_allclose(got, v.numpy(), rtol=1e-12, atol=1e-12)
        assert res.scores["m"]["model_resolution"][m] == pytest.approx(float(np.mean(v.numpy())), rel=1e-12)


def test_benchmark_protocol_scores_original_size_and_never_interpolates_fixations(monkeypatch):
    samples = _mixed_size_samples()
    seen = []
    real_nss = metrics.nss

    def spy(pred, fix):
        seen.append((tuple(pred.shape), pred.dtype, fix.detach().cpu().numpy().copy()))
        return real_nss(pred, fix)

    monkeypatch.setattr(metrics, "nss", spy)
    ev.evaluate_benchmark(
        {"m": _Oracle((16, 16))}, samples, input_size=(16, 16), output_size=(16, 16), device=CPU, seed=0,
        protocols=("benchmark",), batch_size=4, progress=False,
    )
    assert len(seen) == len(samples)  # one call per image: sizes differ
    for (shape, dtype, fix), s in zip(seen, samples, strict=True):
        assert shape == (1, *s.density.shape)
        assert dtype == torch.float64
        assert np.array_equal(fix[0].astype(bool), s.fixations)  # the recorded map, untouched


@pytest.mark.parametrize("protocol", ["benchmark", "model_resolution"])
def test_sauc_negatives_are_the_union_of_the_other_images_fixations(monkeypatch, protocol):
    samples = _mixed_size_samples()
    out_size = (16, 20)
    seen = []
    real_sauc = metrics.sauc

    def spy(pred, fix, other, generator=None):
        seen.append(other.detach().cpu().numpy()[0].astype(bool))
        return real_sauc(pred, fix, other, generator=generator)

    monkeypatch.setattr(metrics, "sauc", spy)
    ev.evaluate_benchmark(
        {"m": _Oracle(out_size)}, samples, input_size=(16, 16), output_size=out_size, device=CPU, seed=0,
        protocols=(protocol,), batch_size=4, progress=False,
    )
    assert len(seen) == len(samples)
    for i, s in enumerate(samples):
        size = s.fixations.shape if protocol == "benchmark" else out_size
        expect = np.zeros(size, dtype=bool)
        for j, o in enumerate(samples):
            if j != i:
                expect |= np.asarray(rescale_fixations(o.fixations, size), dtype=bool)
        assert np.array_equal(seen[i], expect), s.name


def test_results_do_not_depend_on_batch_size_or_on_other_predictors():
    samples = _mixed_size_samples()
    kw = dict(input_size=(16, 16), output_size=(16, 16), device=CPU, seed=11, progress=False)
    a = ev.evaluate_benchmark({"m": _Oracle((16, 16))}, samples, batch_size=1, **kw)
    b = ev.evaluate_benchmark({"c": "center_bias", "m": _Oracle((16, 16))}, samples, batch_size=4, **kw)
    for proto in ev.PROTOCOLS:
        for m in metrics.METRIC_NAMES:
            x, y = a.per_image["m"][proto][m], b.per_image["m"][proto][m]
            if m in ("auc_borji", "sauc"):
                np.testing.assert_array_equal(x, y, err_msg=f"{proto}/{m}")  # the same draws
            else:
                # batched reductions may round differently in the last bit, nothing more
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15, err_msg=f"{proto}/{m}")
    c = ev.evaluate_benchmark({"m": _Oracle((16, 16))}, samples, batch_size=1, **{**kw, "seed": 12})
    assert not np.array_equal(c.per_image["m"]["benchmark"]["sauc"], a.per_image["m"]["benchmark"]["sauc"])


def test_models_output_size_is_set_for_the_evaluation_and_restored():
    samples = _same_size_samples(n=2)
    model = _Oracle((8, 8))
    res = ev.evaluate_benchmark(
        {"m": model}, samples, input_size=(24, 32), output_size=(12, 16), device=CPU, seed=0,
        num_examples=1, progress=False,
    )
    assert model.output_size == (8, 8)
    assert res.scores["m"]["model_resolution"]["cc"] > 0.99


def test_examples_and_per_image_csv(tmp_path):
    rng = np.random.default_rng(5)
    samples = [_make_sample(rng, f"s{i}", (30, 20) if i % 2 else (40, 800)) for i in range(5)]
    res = ev.evaluate_benchmark(
        {"teacher": _Oracle((16, 16)), "center_bias": "center_bias"}, samples, input_size=(16, 16),
        output_size=(16, 16), device=CPU, seed=0, num_examples=3, progress=False,
    )
    assert [e.name for e in res.examples] == ["s0", "s2", "s4"]  # evenly spaced
    big = res.examples[0]
    assert big.image.shape == (16, 320, 3) and big.image.dtype == np.uint8  # longer side capped at 320
    assert big.density.shape == big.fixations.shape == (16, 320)
    assert set(big.predictions) == {"teacher", "center_bias"}
    assert big.predictions["teacher"].shape == (16, 320)
    assert big.fixations.any()

    csv_text = ev.per_image_csv(res)
    lines = csv_text.strip().split("\n")
    assert lines[0].split(",") == ["name", "predictor", "protocol", *metrics.METRIC_NAMES]
    assert len(lines) == 1 + 2 * 2 * len(samples)
    row = lines[1].split(",")
    assert float(row[3]) == res.per_image[row[1]][row[2]]["cc"][0]


def test_an_image_where_metrics_are_undefined_is_an_error_naming_it():
    size = (24, 32)
    samples = _same_size_samples(n=3)
    samples[1].fixations[:] = False  # NSS, AUCs, IG undefined on an image without fixations
    kw = dict(input_size=size, output_size=size, device=CPU, seed=0, progress=False)
    with pytest.raises(ValueError, match="'img1': no fixations"):
        ev.evaluate_benchmark({"m": _Oracle(size)}, samples, **kw)
    samples = _same_size_samples(n=3)
    samples[2].density[:] = 0.0  # CC, KLD, SIM undefined
    with pytest.raises(ValueError, match="'img2': all-zero density"):
        ev.evaluate_benchmark({"m": _Oracle(size)}, samples, **kw)
    with pytest.raises(ValueError, match="at least 2 images"):
        ev.evaluate_benchmark({"m": _Oracle(size)}, _same_size_samples(n=1), **kw)


@pytest.mark.parametrize(
    "predictors,protocols,err",
    [
        ({"m": "gaussian"}, ("benchmark",), ValueError),
        ({"m": 3}, ("benchmark",), TypeError),
        ({}, ("benchmark",), ValueError),
        ({"m": "center_bias"}, ("paper",), ValueError),
        ({"m": "center_bias"}, (), ValueError),
    ],
)
def test_bad_arguments_raise(predictors, protocols, err):
    with pytest.raises(err):
        ev.evaluate_benchmark(predictors, _same_size_samples(n=2), input_size=(8, 8), output_size=(8, 8), device=CPU, seed=0,
                              protocols=protocols)


def test_empty_split_raises():
    with pytest.raises(ValueError, match="empty"):
        ev.evaluate_benchmark({"c": "center_bias"}, [], input_size=(8, 8), output_size=(8, 8), device=CPU, seed=0)


def test_runs_on_a_benchmark_read_from_disk(tmp_path):
    """The real reader's samples (generated MIT1003 layout): scores exist, are finite, and the
    center bias is at chance on sAUC (its negatives share its center bias) while above chance
    on AUC-Borji (uniform negatives)."""
    from semipkd.data import open_benchmark
    from semipkd.data.synthetic import generate

    generate(tmp_path, seed=0, salicon=(0, 0), benchmark={"mit1003": 8}, unlabeled=0, benchmark_long_side=64)
    samples = open_benchmark("mit1003", tmp_path / "mit1003", "all")
    res = ev.evaluate_benchmark(
        {"center_bias": "center_bias", "m": _Flat((24, 24))}, samples, input_size=(24, 24), output_size=(24, 24),
        device=CPU, seed=0, progress=False,
    )
    assert res.names == list(samples.names)
    for proto in ev.PROTOCOLS:
        c = res.scores["center_bias"][proto]
        assert all(math.isfinite(v) for v in c.values())
        assert c["info_gain"] == pytest.approx(0.0, abs=1e-9)
        assert c["auc_borji"] > c["sauc"]
        assert abs(c["sauc"] - 0.5) < 0.1
