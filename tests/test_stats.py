"""semipkd.stats: the paired t-test, its 95% CI and Holm's adjustment against hand computations
(closed-form t CDFs for 1 and 2 dof and tabulated quantiles), not against the scipy calls the
module makes."""

from __future__ import annotations

import math

import pytest

from semipkd.stats import DEGENERATE_TEST_NAME, TEST_NAME, holm, mean_ci, paired_test

#: t_{0.975, df} from a t table.
T975 = {1: 12.706204736174707, 2: 4.302652729911275, 3: 3.182446305284263}


def test_paired_test_on_three_pairs_by_hand():
    # d = .10, .11, .12: mean .11, std .01, se .01/sqrt 3, t = 19.0526;
    # 2 dof: two-sided p = 1 - |t| / sqrt(2 + t^2)
    got = paired_test([0.10, 0.11, 0.12])
    se = 0.01 / math.sqrt(3)
    t = 0.11 / se
    assert got["t"] == pytest.approx(t, rel=1e-9) and got["t"] == pytest.approx(19.0525588833, rel=1e-9)
    assert got["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert got["ci95"] == pytest.approx([0.11 - T975[2] * se, 0.11 + T975[2] * se], rel=1e-9)
    assert got["df"] == 2 and got["test"] == TEST_NAME


def test_paired_test_on_two_and_four_pairs_by_hand():
    # 2 pairs, 1 dof (Cauchy): d = .3, .5 -> mean .4, std .1414, t = 4, p = 1 - 2/pi atan 4
    got = paired_test([0.3, 0.5])
    assert got["t"] == pytest.approx(4.0) and got["p"] == pytest.approx(1 - 2 / math.pi * math.atan(4.0))
    half = T975[1] * math.sqrt(0.02) / math.sqrt(2)
    assert got["ci95"] == pytest.approx([0.4 - half, 0.4 + half])
    # 4 pairs, 3 dof: only the interval by table (mean 2.5, std sqrt(5/3))
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = T975[3] * math.sqrt(5 / 3) / 2
    assert ci == pytest.approx((2.5 - half, 2.5 + half))


def test_paired_test_edge_cases():
    assert paired_test([0.2]) == {"ci95": None, "t": None, "df": None, "p": None, "test": "none: fewer than 2 pairs"}
    assert paired_test([])["p"] is None
    same = paired_test([-0.3, -0.3, -0.3])
    assert same == {"ci95": [-0.3, -0.3], "t": None, "df": 2, "p": 0.0, "test": DEGENERATE_TEST_NAME}
    # equal up to float rounding of the subtraction counts as equal
    rounded = paired_test([0.84 - 0.80, 0.75 - 0.71, 0.44 - 0.40])
    assert rounded["test"] == DEGENERATE_TEST_NAME and rounded["p"] == 0.0
    assert paired_test([0.0, 0.0])["p"] == 1.0
    assert mean_ci([1.0]) is None


def test_holm_against_a_hand_computed_example():
    # sorted: .005 * 4 = .02, .01 * 3 = .03, .03 * 2 = .06, .04 * 1 = .04 -> max(.06, .04) = .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; one p-value is its own adjustment; none, none
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []
    # ties: both get the same adjusted value
    assert holm([0.02, 0.02, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
