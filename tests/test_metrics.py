"""Tests of semipkd.metrics: analytic values, edge cases, pysaliency 0.2.22 as a reference.

Known answers are computed by hand or with plain numpy here; pysaliency is the independent
reference implementation. Where pysaliency departs from the MIT benchmark's MATLAB code, the
documented relation between the two is asserted instead of equality.
"""

from __future__ import annotations

import math

import numpy as np
import pysaliency  # a test dependency (requirements-dev.txt): fail, never skip, without it
import pytest
import torch
import torch.nn.functional as F
from pysaliency import metrics as PM
from pysaliency.roc import general_roc

from semipkd import metrics as M
from semipkd.metrics import EPS

# pysaliency's own warnings on our inputs (log of the zero regions, numpy's trapz rename)
pytestmark = [
    pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:`trapz` is deprecated:DeprecationWarning"),
]

SHAPES = [(7, 9), (12, 16), (20, 15), (5, 5), (24, 32)]


def t64(*arrays):
    out = [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in arrays]
    return out[0] if len(out) == 1 else out


def random_case(seed: int):
    """One image: prediction with ties and a zero region, density with a zero region, fixations.

    Returns numpy float64 arrays (pred, density, fixations, other_fixations, baseline).
    """
    rng = np.random.default_rng(seed)
    h, w = SHAPES[seed % len(SHAPES)]
    pred = rng.random((h, w))
    if seed % 3 == 0:
        pred = np.round(pred * 6) / 6  # heavy ties
    if seed % 2 == 0:
        pred[: h // 3] = 0.0  # a zero region
    if seed % 5 == 4:
        pred = pred + 0.25  # minimum above 0 (where pysaliency's SIM departs)
    density = rng.random((h, w)) ** 3
    if seed % 4 != 3:
        density[:, : w // 4] = 0.0
    n_fix = 1 if seed % 7 == 0 else int(rng.integers(2, max(3, h * w // 6)))
    fix = np.zeros(h * w)
    fix[rng.choice(h * w, n_fix, replace=False)] = 1
    other = np.zeros(h * w)
    other[rng.choice(h * w, int(rng.integers(1, h * w // 3)), replace=False)] = 1
    yy, xx = np.mgrid[:h, :w]
    baseline = np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 3) ** 2))
    return pred, density, fix.reshape(h, w), other.reshape(h, w), baseline


CASES = [random_case(seed) for seed in range(36)]


def batch(arr):
    return torch.from_numpy(arr)[None]


def minmax(x):
    x = np.asarray(x, dtype=np.float64)
    return (x - x.min()) / (x.max() - x.min())


# --------------------------------------------------------------------------------------------
# Analytic values
# --------------------------------------------------------------------------------------------


def test_cc_analytic():
    x = torch.rand(3, 10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(M.cc(x, x), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(M.cc(x, -x), -torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(M.cc(3 * x + 2, x), torch.ones(3, dtype=torch.float64), atol=1e-12)
    # hand value: x = (0, 1, 2), y = (0, 2, 1): cov 0.5, var 1 each -> 0.5
    assert M.cc(t64([[[0, 1, 2]]]), t64([[[0, 2, 1]]])).item() == pytest.approx(0.5, abs=1e-15)


def test_kld_analytic():
    p = torch.rand(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.01
    assert torch.all(M.kld(p, p).abs() < 1e-12)
    q = torch.rand(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    # scale invariance: both maps are normalised to sum 1
    assert torch.allclose(M.kld(7 * p, q), M.kld(p, 0.5 * q), atol=1e-12)
    # hand value: P' = (1/4, 3/4), Q' = (1/2, 1/2) -> 0.5 log(2) + 0.5 log(2/3) = 0.5 log(4/3)
    assert M.kld(t64([[[1, 3]]]), t64([[[1, 1]]])).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-12)


def test_sim_analytic():
    p = torch.rand(2, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(M.sim(p, p), torch.ones(2, dtype=torch.float64), atol=1e-12)
    # disjoint supports -> 0
    assert M.sim(t64([[[1, 0, 0, 0]]]), t64([[[0, 0, 0, 1]]])).item() == 0.0
    # hand value: (0,1,2,3) -> (0,1/6,1/3,1/2); (3,2,1,0) -> (1/2,1/3,1/6,0); min sums to 1/3
    assert M.sim(t64([[[0, 1, 2, 3]]]), t64([[[3, 2, 1, 0]]])).item() == pytest.approx(1 / 3, abs=1e-15)


def test_nss_analytic():
    # x = (1, 0, 0, 0): mean 1/4, sample std sqrt(0.75 / 3) = 1/2, NSS at pixel 0 = 0.75 / 0.5
    x, f = t64([[[1, 0], [0, 0]]], [[[1, 0], [0, 0]]])
    assert M.nss(x, f).item() == pytest.approx(1.5, abs=1e-15)
    assert M.nss(x, f, std_eps=0.5).item() == pytest.approx(0.75, abs=1e-15)
    # fixations at the 3 zeros: -0.25 / 0.5
    assert M.nss(x, 1 - f).item() == pytest.approx(-0.5, abs=1e-15)
    # NSS of a constant map is 0 (decided; MATLAB: NaN), with or without eps
    c = torch.full((2, 4, 5), 0.1, dtype=torch.float64)
    fix = torch.zeros(2, 4, 5)
    fix[:, 1, 2] = 1
    assert torch.equal(M.nss(c, fix), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(M.nss(c, fix, std_eps=EPS), torch.zeros(2, dtype=torch.float64))


def test_auc_judd_analytic():
    rng = np.random.default_rng(5)
    fix = (rng.random((3, 9, 11)) < 0.2).astype(np.float64)
    fix[:, 0, 0] = 1
    fix[:, 0, 1] = 0
    perfect = fix.copy()
    assert torch.equal(M.auc_judd(t64(perfect), t64(fix)), torch.ones(3, dtype=torch.float64))
    const = np.full_like(fix, 0.3)
    assert torch.equal(M.auc_judd(t64(const), t64(fix)), torch.full((3,), 0.5, dtype=torch.float64))
    # hand example with ties: values (3, 2, 2, 1, 0), fixated at 3 and at one of the 2s.
    # thresholds 3: TP 1/2, FP 0/3; 2: TP 2/2, FP 1/3 (the tied unfixated 2); curve
    # (0,0) (0,.5) (1/3,1) (1,1): area = 1/3 * 0.75 + 2/3 = 11/12
    x, f = t64([[[3, 2, 2, 1, 0]]], [[[1, 1, 0, 0, 0]]])
    assert M.auc_judd(x, f).item() == pytest.approx(11 / 12, abs=1e-15)


def test_auc_judd_one_fixation():
    rng = np.random.default_rng(6)
    x = rng.random((1, 10, 10))
    f = np.zeros_like(x)
    f[0, 3, 4] = 1
    a = int((x[f == 0] >= x[0, 3, 4]).sum())
    expected = 1 - a / (2 * 99)
    assert M.auc_judd(t64(x), t64(f)).item() == pytest.approx(expected, abs=1e-14)


def test_auc_borji_analytic():
    # perfect binary map: the fixated pixels are also among the negatives drawn from all
    # pixels, so the expected AUC is 1 - rho / 2 with rho = K / N = 40 / 400
    f = torch.zeros(2, 20, 20, dtype=torch.float64)
    f.view(2, -1)[:, ::10] = 1
    auc = M.auc_borji(f.clone(), f, torch.Generator().manual_seed(0))
    assert torch.all((auc - 0.95).abs() < 0.01), auc
    assert torch.all(auc < 1)
    # a constant map rescales to all 0: every point lies on the diagonal
    const = torch.full((2, 20, 20), 4.0, dtype=torch.float64)
    assert torch.equal(M.auc_borji(const, f), torch.full((2,), 0.5, dtype=torch.float64))


def test_sauc_analytic():
    f = torch.zeros(1, 10, 10, dtype=torch.float64)
    f[0, 2, 2:8] = 1
    other = torch.zeros_like(f)
    other[0, 7, :] = 1
    pred = f.clone()  # fixations at 1, the other images' locations at 0
    assert M.sauc(pred, f, other).item() == 1.0
    # the same locations as positives and negatives, all drawn (M = K): exactly the diagonal
    pred = torch.rand(1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert M.sauc(pred, f, f).item() == pytest.approx(0.5, abs=1e-15)


def test_info_gain_analytic():
    p = torch.rand(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    f = torch.zeros(2, 6, 6)
    f[:, 1, 1] = 1
    f[:, 4, 2] = 1
    assert torch.equal(M.info_gain(p, f, p), torch.zeros(2, dtype=torch.float64))
    # pred (0, 1) -> P' = (0, 1); uniform baseline (1/2, 1/2); fixation on pixel 1: 1 bit
    x, fx, b = t64([[[0, 1]]], [[[0, 1]]], [[[5, 5]]])
    assert M.info_gain(x, fx, b).item() == pytest.approx(1.0, abs=1e-12)
    # a (H, W) baseline is shared by the batch
    base = torch.rand(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    assert torch.equal(M.info_gain(p, f, base), M.info_gain(p, f, base.expand(2, 6, 6)))


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------


def _maps(b=2, h=6, w=7, seed=10):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(b, h, w, dtype=torch.float64, generator=g)
    dens = torch.rand(b, h, w, dtype=torch.float64, generator=g)
    fix = (torch.rand(b, h, w, generator=g) < 0.3).double()
    fix[:, 0, 0] = 1
    fix[:, 0, 1] = 0
    other = (torch.rand(b, h, w, generator=g) < 0.3).double()
    other[:, 1, 1] = 1
    return pred, dens, fix, other


def _call(name, pred, dens, fix, other):
    return {
        "cc": lambda: M.cc(pred, dens),
        "kld": lambda: M.kld(pred, dens),
        "sim": lambda: M.sim(pred, dens),
        "nss": lambda: M.nss(pred, fix),
        "auc_judd": lambda: M.auc_judd(pred, fix),
        "auc_borji": lambda: M.auc_borji(pred, fix),
        "sauc": lambda: M.sauc(pred, fix, other),
        "info_gain": lambda: M.info_gain(pred, fix, dens),
    }[name]()


@pytest.mark.parametrize("name", M.METRIC_NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_prediction_raises(name, bad):
    pred, dens, fix, other = _maps()
    pred[1, 2, 3] = bad
    with pytest.raises(ValueError, match=rf"^{name}: pred contains NaN or inf in images \[1\]"):
        _call(name, pred, dens, fix, other)


@pytest.mark.parametrize("name", ["cc", "kld", "sim", "info_gain"])
def test_nonfinite_second_map_raises(name):
    pred, dens, fix, other = _maps()
    dens[0, 0, 0] = math.nan
    arg = "baseline" if name == "info_gain" else "density"
    with pytest.raises(ValueError, match=rf"^{name}: {arg} contains NaN or inf"):
        _call(name, pred, dens, fix, other)


@pytest.mark.parametrize("name", ["nss", "auc_judd", "auc_borji", "sauc", "info_gain"])
def test_no_fixations_raises(name):
    pred, dens, fix, other = _maps()
    fix[1] = 0
    with pytest.raises(ValueError, match=rf"^{name}: fixations has no fixated pixel in images \[1\]"):
        _call(name, pred, dens, fix, other)


@pytest.mark.parametrize("name", ["nss", "auc_judd", "sauc"])
@pytest.mark.parametrize("value", [0.5, 2.0, math.nan])
def test_non_binary_fixations_raise(name, value):
    pred, dens, fix, other = _maps()
    fix[0, 2, 2] = value
    with pytest.raises(ValueError, match=rf"^{name}: fixations"):
        _call(name, pred, dens, fix, other)


@pytest.mark.parametrize("name", ["cc", "kld", "sim"])
def test_empty_density_raises_unless_allowed(name):
    pred, dens, fix, other = _maps()
    dens[0] = 0
    with pytest.raises(ValueError, match=rf"^{name}: density is all zero in images \[0\]"):
        _call(name, pred, dens, fix, other)
    fn = getattr(M, name)
    value = fn(pred, dens, allow_empty_target=True)
    assert value[0].item() == 0.0
    assert value[1].item() == fn(pred[1:], dens[1:]).item()


@pytest.mark.parametrize("name", M.METRIC_NAMES)
def test_shape_mismatch_raises(name):
    pred, dens, fix, other = _maps()
    with pytest.raises(ValueError, match=rf"^{name}: shape mismatch.*resize_to"):
        _call(name, pred[:, :, :-1], dens, fix, other)


@pytest.mark.parametrize("name", M.METRIC_NAMES)
def test_unbatched_input_raises(name):
    pred, dens, fix, other = _maps()
    with pytest.raises(ValueError, match=rf"^{name}: pred must have shape \(B, H, W\)"):
        _call(name, pred[0], dens, fix, other)


def test_other_errors():
    pred, dens, fix, other = _maps()
    with pytest.raises(ValueError, match="auc_judd: every pixel is fixated"):
        M.auc_judd(pred, torch.ones_like(fix))
    with pytest.raises(ValueError, match="sauc: other_fixations has no fixated pixel"):
        M.sauc(pred, fix, torch.zeros_like(other))
    with pytest.raises(ValueError, match="auc_borji: n_splits"):
        M.auc_borji(pred, fix, n_splits=0)
    with pytest.raises(ValueError, match="sauc: step"):
        M.sauc(pred, fix, other, step=0.0)
    with pytest.raises(TypeError, match="auc_borji: generator"):
        M.auc_borji(pred, fix, generator=123)
    with pytest.raises(TypeError, match="cc: pred must be a torch.Tensor"):
        M.cc([[[1.0, 2.0]]], dens)
    with pytest.raises(ValueError, match="at least 2 pixels"):
        M.cc(torch.ones(1, 1, 1), torch.ones(1, 1, 1))


def test_all_zero_prediction():
    pred, dens, fix, other = _maps()
    zero = torch.zeros_like(pred)
    assert torch.equal(M.cc(zero, dens), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(M.nss(zero, fix), torch.zeros(2, dtype=torch.float64))
    half = torch.full((2,), 0.5, dtype=torch.float64)
    assert torch.equal(M.auc_judd(zero, fix), half)
    assert torch.equal(M.auc_borji(zero, fix), half)
    assert torch.equal(M.sauc(zero, fix, other), half)
    # MATLAB's "zero map stays a zero map": SIM 0 and KLD = sum Q' log(EPS + Q' / EPS)
    assert torch.equal(M.sim(zero, dens), torch.zeros(2, dtype=torch.float64))
    q = dens.numpy().reshape(2, -1)
    q = q / q.sum(1, keepdims=True)
    expected = (q * np.log(EPS + q / EPS)).sum(1)
    np.testing.assert_allclose(M.kld(zero, dens).numpy(), expected, rtol=1e-12)
    assert np.all(expected > 30)
    # information gain counts a zero map as uniform (MATLAB: NaN)
    uniform = torch.full_like(pred, 0.7)
    assert torch.allclose(M.info_gain(zero, fix, dens), M.info_gain(uniform, fix, dens), atol=1e-12)


def test_constant_prediction():
    pred, dens, fix, other = _maps()
    const = torch.full_like(pred, 0.3)
    n = pred[0].numel()
    assert torch.equal(M.cc(const, dens), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(M.cc(pred, torch.full_like(dens, 2.0)), torch.zeros(2, dtype=torch.float64))
    half = torch.full((2,), 0.5, dtype=torch.float64)
    assert torch.equal(M.auc_judd(const, fix), half)
    assert torch.equal(M.sauc(const, fix, other), half)
    # SIM, KLD and info gain see the uniform distribution 1 / N
    qm = dens.numpy().reshape(2, -1)
    qm = qm - qm.min(1, keepdims=True)  # SIM min-max rescales the density
    qm = qm / qm.sum(1, keepdims=True)
    np.testing.assert_allclose(M.sim(const, dens).numpy(), np.minimum(qm, 1 / n).sum(1), rtol=1e-12)
    q = dens.numpy().reshape(2, -1)
    q = q / q.sum(1, keepdims=True)
    kld_expected = (q * np.log(EPS + q / (1 / n + EPS))).sum(1)
    np.testing.assert_allclose(M.kld(const, dens).numpy(), kld_expected, rtol=1e-12)


def test_negative_values():
    pred, dens, fix, other = _maps()
    neg = pred - 5.0
    for fn in (M.cc, M.sim):
        assert torch.allclose(fn(neg, dens), fn(pred, dens), atol=1e-12)
    assert torch.allclose(M.nss(neg, fix), M.nss(pred, fix), atol=1e-12)
    assert torch.equal(M.auc_judd(neg, fix), M.auc_judd(pred, fix))
    assert torch.allclose(M.info_gain(neg, fix, dens), M.info_gain(pred, fix, dens), atol=1e-12)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731  (a fresh, equally seeded generator per call)
    assert torch.allclose(M.auc_borji(neg, fix, g()), M.auc_borji(pred, fix, g()), atol=1e-12)
    assert torch.allclose(M.sauc(neg, fix, other, g()), M.sauc(pred, fix, other, g()), atol=1e-12)
    # KLD shifts a map with negative values to minimum 0 (pysaliency's convention)
    shifted = neg - neg.amin((1, 2), keepdim=True)
    assert torch.allclose(M.kld(neg, dens), M.kld(shifted, dens), atol=1e-12)
    assert not torch.allclose(M.kld(neg, dens), M.kld(pred, dens))


def test_dtypes_devices_and_inputs():
    pred, dens, fix, other = _maps(b=3, h=16, w=20)
    for name in M.METRIC_NAMES:
        v64 = _call(name, pred, dens, fix, other)
        v32 = _call(name, pred.float(), dens.float(), fix.float(), other.float())
        assert v64.dtype == torch.float64 and v64.shape == (3,)
        assert v32.dtype == torch.float32 and v32.shape == (3,)
        if name in ("auc_borji", "sauc"):
            continue  # level thresholds may flip for values within float32 rounding of k/10
        np.testing.assert_allclose(v32.numpy(), v64.numpy(), rtol=2e-5, atol=2e-5, err_msg=name)
        # bool fixations and numpy inputs are accepted and give the same values
        vb = _call(name, pred.numpy(), dens.numpy(), fix.bool(), other.bool())
        np.testing.assert_array_equal(vb.numpy(), v64.numpy(), err_msg=name)
    # float16 is computed in float32
    assert M.cc(pred.half(), dens.half()).dtype == torch.float32


def test_batch_equals_single_images():
    """Padding to the batch's largest K must not leak between images."""
    rng = np.random.default_rng(11)
    pred = rng.random((4, 9, 8))
    pred[1] = np.round(pred[1] * 3)
    dens = rng.random((4, 9, 8))
    fix = np.zeros((4, 72))
    for i, k in enumerate([1, 5, 30, 2]):
        fix[i, rng.choice(72, k, replace=False)] = 1
    fix = fix.reshape(4, 9, 8)
    base = rng.random((9, 8))
    pred, dens, fix = t64(pred, dens, fix)
    for fn, args in [
        (M.cc, (pred, dens)), (M.kld, (pred, dens)), (M.sim, (pred, dens)),
        (M.nss, (pred, fix)), (M.auc_judd, (pred, fix)), (M.info_gain, (pred, fix, base)),
    ]:
        whole = fn(*args)
        single = torch.cat([fn(*(a[i:i + 1] if a.ndim == 3 else a for a in args)) for i in range(4)])
        assert torch.allclose(whole, single, atol=1e-14), fn.__name__


def test_chunking_does_not_change_values(monkeypatch):
    """Tiny chunk limits force one image per chunk (and the single-row histogram path)."""
    pred, dens, fix, other = _maps(b=5, h=11, w=13)
    before = {name: _call(name, pred, dens, fix, other) for name in M.METRIC_NAMES}
    monkeypatch.setattr(M, "_CPU_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(M, "_CHUNK_ELEMENTS", 1)
    for name in M.METRIC_NAMES:
        after = _call(name, pred, dens, fix, other)
        if name in ("auc_borji", "sauc"):
            # the draws come in another order, so only the estimate is the same
            assert torch.allclose(after, before[name], atol=0.05), name
        else:
            assert torch.allclose(after, before[name], atol=1e-14, rtol=0), name


def test_sampled_aucs_reproducible():
    pred, dens, fix, other = _maps(b=3, h=12, w=12)
    a = M.auc_borji(pred, fix, torch.Generator().manual_seed(5))
    b = M.auc_borji(pred, fix, torch.Generator().manual_seed(5))
    c = M.auc_borji(pred, fix, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(M.auc_borji(pred, fix), M.auc_borji(pred, fix, torch.Generator().manual_seed(M.DEFAULT_SEED)))
    # more other locations than fixations, so the draw matters
    many = torch.ones_like(other)
    a = M.sauc(pred, fix, many, torch.Generator().manual_seed(5))
    b = M.sauc(pred, fix, many, torch.Generator().manual_seed(5))
    c = M.sauc(pred, fix, many, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------------------------
# pysaliency 0.2.22 as the reference
# --------------------------------------------------------------------------------------------


def _fixation_xy(fix):
    ys, xs = np.nonzero(fix)
    return xs, ys


@pytest.mark.parametrize("case", range(len(CASES)))
def test_against_pysaliency_distribution_metrics(case):
    pred, dens, fix, other, base = CASES[case]
    p, q = batch(pred), batch(dens)
    # CC: identical wherever neither map is constant (all our cases)
    assert M.cc(p, q).item() == pytest.approx(PM.CC(pred, dens), abs=1e-6)
    # KLD: pysaliency's MIT_KLDiv follows the benchmark for non-zero maps
    assert M.kld(p, q).item() == pytest.approx(PM.MIT_KLDiv(pred, dens), abs=1e-5)
    # SIM: pysaliency skips the min-max rescale; equal when both minima are 0, and equal to
    # pysaliency on min-max rescaled maps always
    ours = M.sim(p, q).item()
    assert ours == pytest.approx(PM.SIM(minmax(pred), minmax(dens)), abs=1e-6)
    if pred.min() == 0 and dens.min() == 0:  # 16 of the 36 cases
        assert ours == pytest.approx(PM.SIM(pred, dens), abs=1e-6)
    if pred.min() > 0.2:
        assert abs(ours - PM.SIM(pred, dens)) > 1e-3  # the documented difference is real


def test_eps_is_matlab_eps_and_the_pysaliency_shift_is_tiny():
    """EPS is MATLAB's eps (2^-52), not its displayed 2.2204e-16 that pysaliency hard-codes.

    On maps with zeros the two constants move KLD measurably but by less than 1e-5; our KLD
    equals an independent numpy KLdiv.m with 2^-52 to 1e-12.
    """
    assert EPS == 2.0**-52 == np.finfo(np.float64).eps
    shifts = []
    for pred, dens, *_ in CASES:
        if pred.min() < 0:
            continue  # KLD shifts negative maps first; covered elsewhere
        pn, qn = pred / pred.sum(), dens / dens.sum()
        reference = float((qn * np.log(2.0**-52 + qn / (pn + 2.0**-52))).sum())
        ours = M.kld(batch(pred), batch(dens)).item()
        assert ours == pytest.approx(reference, abs=1e-12)
        shifts.append(abs(ours - PM.MIT_KLDiv(pred, dens)))
    assert max(shifts) < 1e-5
    assert max(shifts) > 1e-9  # the constants do differ where a map has zeros


@pytest.mark.parametrize("case", range(len(CASES)))
def test_against_pysaliency_nss(case):
    pred, dens, fix, other, base = CASES[case]
    n = pred.size
    theirs = PM.NSS(pred, *_fixation_xy(fix)).mean()
    ours = M.nss(batch(pred), batch(fix)).item()
    # pysaliency divides by the population std, the benchmark by the sample std
    assert ours == pytest.approx(theirs * math.sqrt((n - 1) / n), abs=1e-6)
    if abs(theirs) > 0.05:
        assert abs(ours - theirs) > 1e-6  # the documented difference is real at this tolerance


class _MapModel(pysaliency.SaliencyMapModel):
    """A pysaliency model whose saliency map is the stimulus itself."""

    def __init__(self):
        super().__init__(caching=False)

    def _saliency_map(self, stimulus):
        return np.asarray(stimulus, dtype=np.float64)


class _DensityModel(pysaliency.Model):
    """A pysaliency probabilistic model with the benchmark's map-to-distribution conversion.

    log(EPS + P') with P' the min-max rescaled map divided by its sum (uniform when constant),
    computed here in numpy, independently of semipkd.
    """

    def __init__(self, fixed=None):
        super().__init__(caching=False)
        self.fixed = fixed

    def _log_density(self, stimulus):
        x = np.asarray(stimulus if self.fixed is None else self.fixed, dtype=np.float64)
        if x.max() == x.min():
            d = np.full_like(x, 1 / x.size)
        else:
            d = minmax(x)
            d = d / d.sum()
        return np.log(EPS + d)


def _pysaliency_data(preds, fixes):
    stimuli = pysaliency.Stimuli(list(preds))
    xs, ys, ns = [], [], []
    for n, fix in enumerate(fixes):
        x, y = _fixation_xy(fix)
        xs.append(x)
        ys.append(y)
        ns.append(np.full(len(x), n))
    fixations = pysaliency.Fixations.create_without_history(
        np.concatenate(xs).astype(float), np.concatenate(ys).astype(float), np.concatenate(ns)
    )
    return stimuli, fixations


def test_against_pysaliency_auc_judd():
    """pysaliency's AUC_Judd(jitter=False) through its model API, per image, on all cases."""
    by_shape: dict[tuple, list[int]] = {}
    for i, case in enumerate(CASES):
        by_shape.setdefault(case[0].shape, []).append(i)
    checked = 0
    for _shape, idx in by_shape.items():
        preds = [CASES[i][0] for i in idx]
        fixes = [CASES[i][2] for i in idx]
        stimuli, fixations = _pysaliency_data(preds, fixes)
        theirs = _MapModel().AUC_per_image(stimuli, fixations, nonfixations="unfixated", thresholds="fixations")
        ours = M.auc_judd(t64(np.stack(preds)), t64(np.stack(fixes)))
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-12)
        # and the public AUC_Judd(jitter=False) is their mean over images
        mean = _MapModel().AUC_Judd(stimuli, fixations, jitter=False)
        assert ours.mean().item() == pytest.approx(mean, abs=1e-12)
        checked += len(idx)
    assert checked == len(CASES)


def test_against_pysaliency_information_gain():
    """pysaliency's information_gains with the benchmark's map-to-density conversion."""
    by_shape: dict[tuple, list[int]] = {}
    for i, case in enumerate(CASES):
        by_shape.setdefault(case[0].shape, []).append(i)
    for _shape, idx in by_shape.items():
        preds = [CASES[i][0] for i in idx]
        fixes = [CASES[i][2] for i in idx]
        base = CASES[idx[0]][4]
        stimuli, fixations = _pysaliency_data(preds, fixes)
        per_fix = _DensityModel().information_gains(stimuli, fixations, baseline_model=_DensityModel(base))
        theirs = [per_fix[fixations.n == n].mean() for n in range(len(idx))]
        ours = M.info_gain(t64(np.stack(preds)), t64(np.stack(fixes)), t64(base))
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6)


def _quantised_exact_auc(pred, positives_mask, negatives):
    """pysaliency's exact rank AUC of the map quantised to the 0.1 threshold levels."""
    levels = (minmax(pred)[..., None] >= np.round(np.arange(11) * 0.1, 12)).sum(-1).astype(np.float64)
    return general_roc(levels[positives_mask > 0], negatives(levels))[0]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_sauc_equals_exact_when_all_other_locations_are_drawn(case):
    """With M <= K every split draws all other locations: sAUC is then deterministic and equals
    pysaliency's exact AUC on the 0.1-quantised map."""
    pred, dens, fix, other, base = CASES[case]
    other = other.copy()
    marked = np.flatnonzero(other)
    k = int(fix.sum())
    other.flat[marked[k:]] = 0  # keep at most K locations
    expected = _quantised_exact_auc(pred, fix, lambda lv: lv[other > 0])
    ours = M.sauc(batch(pred), batch(fix), batch(other)).item()
    assert ours == pytest.approx(expected, abs=1e-12)


def test_sampled_aucs_estimate_the_quantised_exact_auc():
    """auc_borji / sauc are Monte Carlo estimates (100 splits) of pysaliency's exact AUC of the
    0.1-quantised map (uniform / shuffled negatives); more splits bring them closer."""
    diffs_borji, diffs_sauc = [], []
    for pred, _dens, fix, other, _base in CASES:
        if fix.sum() < 5:
            continue
        gen = torch.Generator().manual_seed(0)
        exact = _quantised_exact_auc(pred, fix, lambda lv: lv.ravel())
        diffs_borji.append(M.auc_borji(batch(pred), batch(fix), gen).item() - exact)
        exact = _quantised_exact_auc(pred, fix, lambda lv, other=other: lv[other > 0])
        diffs_sauc.append(M.sauc(batch(pred), batch(fix), batch(other), gen).item() - exact)
    for diffs in (np.array(diffs_borji), np.array(diffs_sauc)):
        assert len(diffs) >= 20
        assert np.abs(diffs).max() < 0.05
        assert abs(diffs.mean()) < 0.01  # no bias
    pred, dens, fix, other, base = CASES[12]
    assert other.sum() > fix.sum() >= 5  # sAUC draws a random subset here
    exact = _quantised_exact_auc(pred, fix, lambda lv: lv.ravel())
    many = M.auc_borji(batch(pred), batch(fix), torch.Generator().manual_seed(1), n_splits=4000).item()
    assert many == pytest.approx(exact, abs=0.005)
    exact = _quantised_exact_auc(pred, fix, lambda lv: lv[other > 0])
    many = M.sauc(batch(pred), batch(fix), batch(other), torch.Generator().manual_seed(1), n_splits=4000).item()
    assert many == pytest.approx(exact, abs=0.005)


def test_sampled_aucs_differ_from_exact_rank_auc_by_quantisation():
    """pysaliency's AUCs are exact rank statistics over all values; ours use 0.1 thresholds."""
    rng = np.random.default_rng(12)
    pred = rng.random((20, 20)) * 0.09  # everything in the lowest level ...
    pred[0, 0] = 1.0  # ... except one pixel
    fix = np.zeros((20, 20))
    order = np.argsort(pred.ravel())[::-1]
    fix.flat[order[1:40]] = 1  # fixate the next-most salient pixels: exact rank AUC ~ 0.95
    exact_rank = general_roc(pred[fix > 0], pred.ravel())[0]
    ours = M.auc_borji(batch(pred), batch(fix), torch.Generator().manual_seed(0)).item()
    assert exact_rank > 0.9
    assert ours == pytest.approx(0.5, abs=0.01)


# --------------------------------------------------------------------------------------------
# resize_to
# --------------------------------------------------------------------------------------------


def test_resize_identity_constant_and_kinds():
    x = torch.rand(2, 9, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    assert torch.equal(M.resize_to(x, (9, 13)), x)
    for size in [(4, 6), (20, 7), (31, 40)]:
        c = M.resize_to(torch.full((1, 9, 13), 0.25, dtype=torch.float64), size)
        assert c.shape == (1, *size)
        assert torch.allclose(c, torch.full_like(c, 0.25), atol=1e-15)
    out = M.resize_to(x[0].numpy(), (5, 6))
    assert isinstance(out, np.ndarray) and out.shape == (5, 6) and out.dtype == np.float64
    assert M.resize_to(x.float(), (5, 6)).dtype == torch.float32
    np.testing.assert_allclose(out, M.resize_to(x, (5, 6))[0].numpy(), atol=1e-15)
    with pytest.raises(ValueError, match="resize_to: size"):
        M.resize_to(x, (0, 3))
    with pytest.raises(ValueError, match="resize_to: x must have shape"):
        M.resize_to(x[None], (3, 3))


@pytest.mark.parametrize("size", [(30, 40), (20, 26), (120, 160), (45, 100)])
def test_resize_matches_antialiased_bicubic_in_the_interior(size):
    """Away from the borders MATLAB's imresize equals PIL-style antialiased bicubic (a = -0.5),
    which torch implements independently; at the borders MATLAB reflects, torch truncates."""
    x = torch.rand(2, 60, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    ours = M.resize_to(x, size)
    ref = F.interpolate(x[:, None], size=size, mode="bicubic", antialias=True, align_corners=False)[:, 0]
    np.testing.assert_allclose(ours[:, 4:-4, 4:-4].numpy(), ref[:, 4:-4, 4:-4].numpy(), atol=1e-12)


def _keys(d):
    d = abs(d)
    return (1.5 * d**3 - 2.5 * d**2 + 1) * (d <= 1) + (-0.5 * d**3 + 2.5 * d**2 - 4 * d + 2) * ((d > 1) & (d <= 2))


def test_resize_border_pixel_by_hand():
    """First output of a 2x shrink of 1..8 along one axis, from MATLAB's formulas by hand:
    centre u = 1.5 (1-based), kernel 0.5 * keys(0.5 d), taps -3..6 reflected as
    -3->4, -2->3, -1->2, 0->1."""
    row = np.arange(1, 9, dtype=np.float64)
    taps = np.arange(-3, 7)
    w = 0.5 * _keys(0.5 * (1.5 - taps))
    w = w / w.sum()
    src = {-3: 4, -2: 3, -1: 2, 0: 1}
    values = np.array([row[src.get(t, t) - 1] for t in taps])
    expected = float((w * values).sum())
    out = M.resize_to(np.tile(row, (3, 1)), (3, 4))
    assert out[1, 0] == pytest.approx(expected, abs=1e-12)
    # and a 2x enlargement of the same ramp reproduces it linearly except at the borders
    up = M.resize_to(np.tile(row, (3, 1)), (3, 16))
    np.testing.assert_allclose(up[1, 3:13], 0.75 + 0.5 * np.arange(3, 13), atol=1e-12)
    assert abs(up[1, 0] - 0.75) > 0.01  # the border reflects instead of extrapolating


def test_autocast_does_not_lower_precision():
    """Under autocast the batched dot products would run in bfloat16 (float16 on a GPU)."""
    pred, dens, fix, other = _maps(b=2, h=40, w=50)
    p, q = pred.float(), dens.float()
    plain = {name: _call(name, p, q, fix, other) for name in ("cc", "kld", "nss", "sim")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, value in plain.items():
            assert torch.allclose(_call(name, p, q, fix, other), value, atol=1e-6, rtol=0), name



def test_strided_inputs():
    pred, dens, fix, other = _maps(b=4, h=9, w=10)
    for name in M.METRIC_NAMES:
        dense = _call(name, pred[::2].contiguous(), dens[::2].contiguous(), fix[::2].contiguous(),
                      other[::2].contiguous())
        strided = _call(name, pred[::2], dens[::2], fix[::2], other[::2])
        assert torch.equal(dense, strided), name
    t = pred.transpose(1, 2)
    assert torch.equal(M.nss(t, fix.transpose(1, 2)), M.nss(t.contiguous(), fix.transpose(1, 2).contiguous()))
