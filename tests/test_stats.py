"""qmlnb.stats.paired_difference: means, intervals, counts, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from qmlnb.stats import describe_difference, paired_difference


def test_t_interval_matches_scipy_and_counts_wins():
    a = np.array([0.91, 0.93, 0.90, 0.95, 0.92])
    b = np.array([0.90, 0.94, 0.89, 0.93, 0.92])
    r = paired_difference(a, b)
    d = a - b
    assert r["n"] == 5 and r["mean_difference"] == pytest.approx(d.mean())
    low, high = sps.t.interval(0.95, 4, loc=d.mean(), scale=sps.sem(d))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((low, high))
    assert (r["wins"], r["losses"], r["ties"]) == (3, 1, 1)
    assert r["within_noise"] is True
    assert r["mean_a"] == pytest.approx(a.mean()) and r["std_b"] == pytest.approx(b.std(ddof=1))


def test_a_consistent_gain_is_not_noise():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.7, 0.8, 8)
    a = b + 0.05 + rng.normal(0, 0.005, 8)
    for method in ("t", "bootstrap"):
        r = paired_difference(a, b, method=method)
        assert r["ci_low"] > 0.03 and r["ci_high"] < 0.07, method
        assert r["within_noise"] is False and r["wins"] == 8
        assert "A better" in describe_difference(r)
    worse = paired_difference(b, a)
    assert worse["ci_high"] < 0 and "worse" in describe_difference(worse, "QSVM", "RBF")


def test_bootstrap_is_seeded_and_narrower_at_lower_confidence():
    a, b = [0.9, 0.8, 0.85, 0.7, 0.95, 0.6], [0.88, 0.82, 0.8, 0.72, 0.9, 0.61]
    r1 = paired_difference(a, b, method="bootstrap", seed=3)
    assert r1 == paired_difference(a, b, method="bootstrap", seed=3)
    r2 = paired_difference(a, b, method="bootstrap", confidence=0.5, seed=3)
    assert r2["ci_high"] - r2["ci_low"] < r1["ci_high"] - r1["ci_low"]
    assert r1["ci_low"] <= r1["mean_difference"] <= r1["ci_high"]


def test_single_seed_has_no_interval_and_identical_scores_tie():
    r = paired_difference([0.9], [0.8])
    assert math.isnan(r["ci_low"]) and r["within_noise"] is True and r["wins"] == 1
    assert "single seed" in describe_difference(r)
    same = paired_difference([0.5, 0.6], [0.5, 0.6])
    assert same["ties"] == 2 and same["ci_low"] == same["ci_high"] == 0.0 and same["within_noise"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(a=[0.1, 0.2], b=[0.1]), "pair up"),
    (dict(a=[], b=[]), "empty"),
    (dict(a=[0.1, np.nan], b=[0.1, 0.2]), "NaN"),
    (dict(a=[[0.1]], b=[[0.1]]), "1-D"),
    (dict(a=[0.1, 0.2], b=[0.1, 0.2], confidence=1.0), "confidence"),
    (dict(a=[0.1, 0.2], b=[0.1, 0.2], method="z"), "method"),
    (dict(a=[0.1, 0.2], b=[0.1, 0.2], n_bootstrap=0), "n_bootstrap"),
])
def test_bad_input_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(**kwargs)


def test_compare_to_reference_pairs_every_model_with_the_reference():
    from qmlnb.stats import compare_to_reference

    scores = {"quantum": [0.90, 0.92, 0.91], "linear": [0.89, 0.93, 0.91], "constant": [0.5, 0.5, 0.5]}
    out = compare_to_reference(scores, "quantum")
    assert "reference_minus_model" not in out["quantum"] and out["quantum"]["mean"] == pytest.approx(0.91)
    assert out["linear"]["reference_minus_model"]["within_noise"] is True
    assert out["constant"]["reference_minus_model"]["ci_low"] > 0.3
    with pytest.raises(ValueError, match="reference"):
        compare_to_reference(scores, "qsvm")
    with pytest.raises(ValueError, match="seeds"):
        compare_to_reference({"quantum": [0.9, 0.8], "linear": [0.9]}, "quantum")


def test_comparison_table_lines_up_and_says_what_is_noise():
    from qmlnb.bench.comparison import comparison_table
    from qmlnb.stats import compare_to_reference

    summary = compare_to_reference({"quantum": [0.9, 0.91, 0.92], "linear": [0.9, 0.92, 0.91],
                                    "constant": [0.5, 0.5, 0.5]}, "quantum")
    lines = comparison_table(summary, "quantum", degenerate={"constant": 3}).splitlines()
    assert len(lines) == 4 and "(reference)" in lines[1]
    assert "within noise" in lines[2] and "quantum better" in lines[3] and "3 degenerate" in lines[3]
    starts = {line.index("0.") for line in lines[1:]}
    assert len(starts) == 1  # the means start in one column
    assert lines[0].index("quantum - model") == lines[1].index("(reference)")


def test_holm_matches_the_step_down_by_hand_and_skips_missing():
    from qmlnb.stats import holm

    adjusted, level = holm([0.01, 0.04, float("nan"), 0.03])
    # sorted 0.01, 0.03, 0.04 with m = 3: 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert adjusted[[0, 3, 1]] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[2])
    assert level[[0, 3, 1]] == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 2, 0.95]) and math.isnan(level[2])
    with pytest.raises(ValueError, match="alpha"):
        holm([0.1], alpha=1.0)
    with pytest.raises(ValueError, match="p values"):
        holm([1.5])


def test_judge_needs_five_seeds_and_names_identical_differences():
    from qmlnb.stats import judge

    # three identical differences: a zero-width t interval, which is no evidence
    same = paired_difference([0.90, 0.91, 0.92], [0.894, 0.904, 0.914])
    assert same["identical"] and same["ci_low"] == pytest.approx(same["ci_high"])
    assert same["p_value"] == pytest.approx(0.25)  # the exact sign test: 2 * 0.5**3
    assert judge(same, same["p_value"]) == "identical"
    clear = paired_difference([0.9, 0.92, 0.91], [0.8, 0.81, 0.79])
    assert clear["p_value"] < 0.05 and judge(clear, clear["p_value"]) == "too few seeds"
    five = paired_difference([0.9, 0.92, 0.91, 0.93, 0.9], [0.8, 0.81, 0.79, 0.8, 0.82])
    assert judge(five, five["p_value"]) == "better" and judge(paired_difference(
        [0.8, 0.81, 0.79, 0.8, 0.82], [0.9, 0.92, 0.91, 0.93, 0.9]), five["p_value"]) == "worse"
    assert judge(five, 0.2) == "no measurable difference"  # after a correction that leaves it above alpha
    # the t test's p agrees with scipy's
    d = np.array([0.9, 0.92, 0.91, 0.93, 0.9]) - np.array([0.8, 0.81, 0.79, 0.8, 0.82])
    assert five["p_value"] == pytest.approx(sps.ttest_1samp(d, 0).pvalue)
