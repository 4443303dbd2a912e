"""Tests of semipkd.losses against the paper's definitions, recomputed here in plain numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semipkd.losses import labelled_loss, pseudo_loss

EPS = 2.0**-52  # MATLAB's eps, written out again: the reference below must not depend on semipkd


# --------------------------------------------------------------------------------------------
# The Semi-PKD training code's loss terms, per image, in numpy float64
# --------------------------------------------------------------------------------------------


def ref_kld(s, g):
    s = s / s.sum()
    g = g / g.sum()
    return float((g * np.log(EPS + g / (s + EPS))).sum())


def ref_cc(s, g):
    # per-image mean and unbiased std, then sum(ab) / sqrt(sum(aa) sum(bb))
    a = (s - s.mean()) / s.std(ddof=1)
    b = (g - g.mean()) / g.std(ddof=1)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def ref_nss(s, fix):
    z = (s - s.mean()) / (s.std(ddof=1) + EPS)
    return float((z * fix).sum() / fix.sum())


def ref_sim(s, g):
    s = (s - s.min()) / (s.max() - s.min())
    g = (g - g.min()) / (g.max() - g.min())
    return float(np.minimum(s / s.sum(), g / g.sum()).sum())


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def ref_labelled(pred, dens, fix, w):
    per = [
        w["kld"] * ref_kld(p, d) + w["cc"] * (1 - ref_cc(p, d)) + w["nss"] * (1 - sigmoid(ref_nss(p, f)))
        for p, d, f in zip(pred, dens, fix, strict=True)
    ]
    return float(np.mean(per))


def ref_pseudo(pred, target, w):
    per = [
        w["kld"] * ref_kld(p, t) + w["cc"] * (1 - ref_cc(p, t)) + w["sim"] * (1 - ref_sim(p, t))
        for p, t in zip(pred, target, strict=True)
    ]
    return float(np.mean(per))


def inputs(seed=0, b=3, h=12, w=10):
    rng = np.random.default_rng(seed)
    pred = 1 / (1 + np.exp(-rng.normal(size=(b, h, w))))  # sigmoid outputs in (0, 1)
    dens = rng.random((b, h, w)) ** 2
    dens = dens / dens.max(axis=(1, 2), keepdims=True)  # max-normalised, in [0, 1]
    target = rng.random((b, h, w))
    fix = (rng.random((b, h, w)) < 0.1).astype(np.float64)
    fix[:, 0, 0] = 1
    return pred, dens, target, fix


LABELLED_W = {"kld": 1.0, "cc": 2.0, "nss": 0.5}
PSEUDO_W = {"kld": 0.7, "cc": 1.0, "sim": 1.5}


# --------------------------------------------------------------------------------------------


def test_labelled_loss_by_hand():
    # pred = density = (1, 0, 0, 0), fixation at pixel 0: KLD 0, CC 1, NSS = 0.75 / 0.5 = 1.5
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    loss = labelled_loss(x, x, x, {"kld": 1, "cc": 1, "nss": 1})
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(1 - 1 / (1 + math.exp(-1.5)), abs=1e-12)
    assert loss.item() == pytest.approx(0.18242552380635635, abs=1e-12)


def test_labelled_loss_nss_aggregation_known_answers_on_two_images():
    """Both images predict (1, 0, 0, 0) = their density (KLD 0, CC 1): image A is fixated at pixel
    0 (NSS = 0.75 / 0.5 = 1.5), image B at pixel 3 (NSS = -0.25 / 0.5 = -0.5). Ours averages the
    per-image terms, (1 - sigmoid(1.5) + 1 - sigmoid(-0.5)) / 2; the paper's code takes
    1 - sigmoid of the batch-mean NSS 0.5."""
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]] * 2, dtype=torch.float64)
    fix = torch.zeros_like(x)
    fix[0, 0, 0] = 1.0
    fix[1, 1, 1] = 1.0
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731  (a one-line local helper; clearer here than a nested def)
    w = {"kld": 1, "cc": 1, "nss": 1}
    per_image = labelled_loss(x, x, fix, w)
    assert per_image.item() == pytest.approx((1 - sig(1.5) + 1 - sig(-0.5)) / 2, abs=1e-12)
    assert per_image.item() == pytest.approx(0.4024424275041055, abs=1e-12)
    assert labelled_loss(x, x, fix, w, "per_image").item() == per_image.item()
    batch = labelled_loss(x, x, fix, w, "batch_mean")
    assert batch.ndim == 0 and batch.item() == pytest.approx(1 - sig(0.5), abs=1e-12)
    assert batch.item() == pytest.approx(0.3775406687981454, abs=1e-12)
    # the weights still scale the term; one image: the two agree
    assert labelled_loss(x, x, fix, {"kld": 1, "cc": 1, "nss": 2}, "batch_mean").item() == pytest.approx(2 * (1 - sig(0.5)))
    assert labelled_loss(x[:1], x[:1], fix[:1], w, "batch_mean").item() == pytest.approx(
        labelled_loss(x[:1], x[:1], fix[:1], w).item())
    with pytest.raises(ValueError, match="nss_aggregation: 'sum' is not one of per_image, batch_mean"):
        labelled_loss(x, x, fix, w, "sum")


def test_pseudo_loss_perfect_prediction_is_zero():
    _, _, target, _ = inputs(1)
    t = torch.from_numpy(target)
    assert abs(pseudo_loss(t, t, PSEUDO_W).item()) < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_labelled_loss_matches_paper_definitions(seed):
    pred, dens, _, fix = inputs(seed)
    expected = ref_labelled(pred, dens, fix, LABELLED_W)
    ours = labelled_loss(torch.from_numpy(pred), torch.from_numpy(dens), torch.from_numpy(fix), LABELLED_W)
    assert ours.dtype == torch.float64
    assert ours.item() == pytest.approx(expected, abs=1e-10)
    ours32 = labelled_loss(
        torch.from_numpy(pred).float(), torch.from_numpy(dens).float(), torch.from_numpy(fix).bool(), LABELLED_W
    )
    assert ours32.dtype == torch.float32
    assert ours32.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_pseudo_loss_matches_paper_definitions(seed):
    pred, _, target, _ = inputs(seed)
    expected = ref_pseudo(pred, target, PSEUDO_W)
    ours = pseudo_loss(torch.from_numpy(pred), torch.from_numpy(target), PSEUDO_W)
    assert ours.item() == pytest.approx(expected, abs=1e-10)
    ours16 = pseudo_loss(torch.from_numpy(pred).half(), torch.from_numpy(target).half(), PSEUDO_W)
    assert ours16.dtype == torch.float32  # autocast outputs are lifted to float32
    assert ours16.item() == pytest.approx(expected, abs=5e-3)


def test_single_terms_follow_the_weights():
    pred, dens, target, fix = inputs(5)
    p, d, t, f = (torch.from_numpy(a) for a in (pred, dens, target, fix))
    kld_only = labelled_loss(p, d, f, {"kld": 1, "cc": 0, "nss": 0}).item()
    assert kld_only == pytest.approx(np.mean([ref_kld(a, b) for a, b in zip(pred, dens, strict=True)]), abs=1e-12)
    nss_only = labelled_loss(p, d, f, {"kld": 0, "cc": 0, "nss": 3}).item()
    assert nss_only == pytest.approx(3 * np.mean([1 - sigmoid(ref_nss(a, b)) for a, b in zip(pred, fix, strict=True)]), abs=1e-12)
    sim_only = pseudo_loss(p, t, {"kld": 0, "cc": 0, "sim": 1}).item()
    assert sim_only == pytest.approx(np.mean([1 - ref_sim(a, b) for a, b in zip(pred, target, strict=True)]), abs=1e-12)


def test_losses_are_differentiable():
    pred, dens, target, fix = inputs(6, b=2, h=5, w=4)
    p = torch.from_numpy(pred).requires_grad_(True)
    d, t, f = (torch.from_numpy(a) for a in (dens, target, fix))
    assert torch.autograd.gradcheck(lambda x: labelled_loss(x, d, f, LABELLED_W), (p,))
    assert torch.autograd.gradcheck(lambda x: pseudo_loss(x, t, PSEUDO_W), (p,))
    # gradient descent on the prediction lowers the loss
    x = torch.from_numpy(pred).clone().requires_grad_(True)
    before = pseudo_loss(x, t, PSEUDO_W)
    before.backward()
    with torch.no_grad():
        after = pseudo_loss(x - 0.01 * x.grad, t, PSEUDO_W)
    assert after.item() < before.item()


def test_constant_prediction_gives_finite_gradients():
    # the paper's code divides 0 by 0 here; ours scores CC = NSS = 0 and keeps gradients finite
    _, dens, target, fix = inputs(7)
    x = torch.full(dens.shape, 0.5, dtype=torch.float64, requires_grad=True)
    loss = labelled_loss(x, torch.from_numpy(dens), torch.from_numpy(fix), LABELLED_W)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    kld_const = np.mean([ref_kld(np.full_like(d, 0.5), d) for d in dens])
    assert loss.item() == pytest.approx(kld_const + 2.0 * 1 + 0.5 * 0.5, abs=1e-12)


def test_pseudo_loss_accepts_an_all_zero_target():
    pred, _, _, _ = inputs(8)
    x = torch.from_numpy(pred).requires_grad_(True)
    loss = pseudo_loss(x, torch.zeros_like(x), PSEUDO_W)
    loss.backward()
    assert loss.item() == pytest.approx(PSEUDO_W["cc"] + PSEUDO_W["sim"], abs=1e-12)
    assert torch.isfinite(x.grad).all()


def test_bad_weights_and_inputs_raise():
    pred, dens, target, fix = inputs(9)
    p, d, t, f = (torch.from_numpy(a) for a in (pred, dens, target, fix))
    with pytest.raises(ValueError, match=r"labelled_loss: unknown weight keys \['sim'\]"):
        labelled_loss(p, d, f, {"kld": 1, "cc": 1, "nss": 1, "sim": 1})
    with pytest.raises(ValueError, match=r"pseudo_loss: unknown weight keys \['nss'\]"):
        pseudo_loss(p, t, {"kld": 1, "cc": 1, "nss": 1})
    with pytest.raises(ValueError, match=r"pseudo_loss: missing weight keys \['sim'\]"):
        pseudo_loss(p, t, {"kld": 1, "cc": 1})
    with pytest.raises(ValueError, match="labelled_loss: weight 'cc' must be a finite number"):
        labelled_loss(p, d, f, {"kld": 1, "cc": float("nan"), "nss": 1})
    with pytest.raises(TypeError, match="pseudo_loss: weights must be a mapping"):
        pseudo_loss(p, t, [1, 1, 1])
    no_fix = f.clone()
    no_fix[2] = 0
    with pytest.raises(ValueError, match=r"nss: fixations has no fixated pixel in images \[2\]"):
        labelled_loss(p, d, no_fix, LABELLED_W)
    bad = p.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="kld: pred contains NaN or inf"):
        pseudo_loss(bad, t, PSEUDO_W)
    with pytest.raises(ValueError, match="kld: shape mismatch"):
        labelled_loss(p[:, :-1], d, f, LABELLED_W)
