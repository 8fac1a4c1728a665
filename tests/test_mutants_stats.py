"""qmlnb.stats at its edges: the cases mutation testing (make mutate) showed no other test pins.

Boundaries of the tie tolerance, one and two seeds, the documented keys and defaults, the
bootstrap's resampling, Holm's clipping and tie order, and the exact sentences of describe_difference.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from qmlnb.stats import TIE_TOLERANCE, compare_to_reference, describe_difference, holm, judge, paired_difference

KEYS = {"n", "mean_a", "mean_b", "std_a", "std_b", "mean_difference", "std_difference", "ci_low", "ci_high",
        "confidence", "method", "wins", "losses", "ties", "within_noise", "p_value", "identical"}


def test_every_documented_key_with_its_value_for_two_seeds():
    a, b = np.array([0.9, 0.7]), np.array([0.8, 0.75])
    r = paired_difference(a, b)
    assert set(r) == KEYS and r["method"] == "t" and r["n"] == 2
    assert r["mean_b"] == pytest.approx(0.775)
    assert r["std_a"] == pytest.approx(a.std(ddof=1)) and r["std_b"] == pytest.approx(b.std(ddof=1))
    assert r["std_difference"] == pytest.approx((a - b).std(ddof=1))
    assert math.isfinite(r["p_value"]) and math.isfinite(r["ci_low"])
    assert r["method"] == "t" and paired_difference(a, b, method="bootstrap")["method"] == "bootstrap"


def test_one_seed_gives_nan_spreads_without_warnings_and_is_not_identical():
    for method in ("t", "bootstrap"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "degrees of freedom <= 0" from a std of one value
            r = paired_difference([0.9], [0.8], method=method)
        assert math.isnan(r["std_a"]) and math.isnan(r["std_b"]) and math.isnan(r["std_difference"])
        assert math.isnan(r["ci_low"]) and math.isnan(r["ci_high"]) and r["within_noise"]
        assert math.isnan(r["p_value"]) and not r["identical"]


def test_two_equal_differences_are_identical():
    r = paired_difference([0.9, 0.8], [0.8, 0.7])
    assert r["identical"] and r["p_value"] == pytest.approx(0.5)  # the sign test: 2 * 0.5**2


def test_the_tie_tolerance_is_inclusive():
    # differences of exactly +-TIE_TOLERANCE are ties, not wins or losses
    r = paired_difference([TIE_TOLERANCE, 0.0, 0.0], [0.0, 0.0, TIE_TOLERANCE])
    assert (r["wins"], r["losses"], r["ties"]) == (0, 0, 3)
    # differences spread by exactly the tolerance are identical; all within it of 0: p = 1 (no claim)
    same = paired_difference([TIE_TOLERANCE, 0.0], [0.0, 0.0])
    assert same["identical"] and same["p_value"] == 1.0
    assert paired_difference([TIE_TOLERANCE] * 2, [0.0] * 2)["p_value"] == 1.0
    # the sign test decides from the first difference when all are within the tolerance of each other
    assert paired_difference([1e-9, 1.5e-9], [0.0, 0.0])["p_value"] == 1.0


def test_a_zero_difference_everywhere_has_p_one():
    r = paired_difference([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert r["p_value"] == 1.0 and judge(r, r["p_value"]) == "identical"


def test_bootstrap_defaults_to_seed_zero_and_resamples_every_seed():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.8, 0.05, 12), rng.normal(0.78, 0.05, 12)
    default = paired_difference(a, b, method="bootstrap", n_bootstrap=500)
    assert default == paired_difference(a, b, method="bootstrap", n_bootstrap=500, seed=0)
    assert default != paired_difference(a, b, method="bootstrap", n_bootstrap=500, seed=1)
    # only the first seed differs: resamples that draw it move the mean, so the interval reaches above 0
    r = paired_difference([10.0, 0, 0, 0, 0], [0.0] * 5, method="bootstrap", confidence=0.99)
    assert r["ci_low"] == 0.0 and r["ci_high"] > 0
    # one seed resampled is that seed: no interval
    assert math.isnan(paired_difference([1.0], [0.0], method="bootstrap")["ci_high"])


def test_bootstrap_interval_holds_the_central_share_of_the_resampled_means():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.8, 0.05, 12), rng.normal(0.78, 0.05, 12)
    d = a - b
    # the documented resampling: n_bootstrap draws of n seeds with replacement, generator seeded by seed
    means = d[np.random.default_rng(7).integers(0, 12, size=(4000, 12))].mean(axis=1)
    for confidence in (0.5, 0.95):
        r = paired_difference(a, b, confidence, method="bootstrap", n_bootstrap=4000, seed=7)
        assert r["ci_low"] <= r["mean_difference"] <= r["ci_high"]
        inside = np.mean((means >= r["ci_low"]) & (means <= r["ci_high"]))
        assert inside == pytest.approx(confidence, abs=0.003)


def test_one_bootstrap_resample_is_allowed():
    r = paired_difference([0.9, 0.8], [0.8, 0.7], method="bootstrap", n_bootstrap=1)
    assert r["ci_low"] == r["ci_high"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(a=[0.1, np.nan], b=[0.1, 0.2]), "^a contains NaN"),
    (dict(a=[0.1, 0.2], b=[0.1, np.inf]), "^b contains NaN"),
    (dict(a=["x"], b=["y"]), "could not convert"),
    (dict(a=[0.1, 0.2], b=[0.1, 0.2], confidence="0.9"), "confidence"),
    (dict(a=[0.1, 0.2], b=[0.1, 0.2], confidence=0), "confidence"),
    (dict(a=[0.1, 0.2], b=[0.1, 0.2], n_bootstrap=True), "n_bootstrap"),
    (dict(a=[0.1, 0.2], b=[0.1, 0.2], n_bootstrap="5"), "n_bootstrap"),
])
def test_bad_input_is_a_value_error_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(**kwargs)


def test_describe_difference_sentences_word_for_word():
    r = {"mean_difference": -0.0125, "ci_low": -0.02, "ci_high": -0.005, "confidence": 0.95, "wins": 1,
         "losses": 4, "ties": 0, "n": 5, "within_noise": False}
    assert describe_difference(r) == ("A - B = -0.013 [-0.020, -0.005] (95%, 1 wins, 4 losses, 0 ties over 5 seeds): "
                                      "A worse")
    noise = dict(r, ci_high=0.01, within_noise=True, confidence=0.9)
    assert describe_difference(noise, "q", "rbf", digits=2) == \
        "q - rbf = -0.01 [-0.02, +0.01] (90%, 1 wins, 4 losses, 0 ties over 5 seeds): within noise"
    single = dict(r, ci_low=math.nan, ci_high=math.nan, n=1, wins=0, losses=1)
    assert describe_difference(single) == \
        "A - B = -0.013 from a single seed: no interval (0 wins, 1 losses, 0 ties over 1 seeds)"


def test_compare_to_reference_passes_its_level_and_method_and_names_a_bad_model():
    scores = {"quantum": [0.90, 0.92, 0.91], "linear": [0.89, 0.93, 0.91], "one": [0.5]}
    with pytest.raises(ValueError, match=r"scores\['one'\] has 1 seeds"):
        compare_to_reference(scores, "quantum")
    out = compare_to_reference({"quantum": scores["quantum"], "linear": scores["linear"]}, "quantum", 0.8,
                               method="bootstrap")
    diff = out["linear"]["reference_minus_model"]
    assert diff["confidence"] == 0.8 and diff["method"] == "bootstrap"
    assert out["linear"]["scores"] == scores["linear"]
    assert out["linear"]["std"] == pytest.approx(np.std(scores["linear"], ddof=1))
    with pytest.raises(ValueError, match=r"^scores\['linear'\] contains NaN"):
        compare_to_reference({"quantum": [0.9, 0.8], "linear": [0.9, np.nan]}, "quantum")
    with pytest.raises(ValueError, match=r"^scores\['quantum'\] contains NaN"):
        compare_to_reference({"quantum": [0.9, np.nan], "linear": [0.9, 0.8]}, "quantum")
    # two seeds have a spread; one seed has none, and says so without a warning
    assert math.isfinite(compare_to_reference({"q": [0.9, 0.8]}, "q")["q"]["std"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(compare_to_reference({"q": [0.9]}, "q")["q"]["std"])


def test_holm_clips_at_one_accepts_the_ends_and_refuses_bad_alpha():
    adjusted, _ = holm([0.6, 0.7])
    assert adjusted.tolist() == [1.0, 1.0]
    adjusted, _ = holm([0.0, 1.0])
    assert adjusted.tolist() == [0.0, 1.0]
    # any shape of p values is read as one family
    assert holm([[0.01], [0.04]])[0].tolist() == pytest.approx([0.02, 0.04])
    for alpha in ("0.05", 0, True):
        with pytest.raises(ValueError, match="alpha"):
            holm([0.1], alpha=alpha)
    with pytest.raises(ValueError, match=r"^p values must lie in \[0, 1\]$"):
        holm([-0.1])


def test_holm_ranks_tied_p_values_in_their_given_order():
    # 20 comparisons with ties: a tie keeps its input order, so every run assigns the same levels
    p = np.round(np.random.default_rng(1).uniform(0, 1, 20), 1)
    _, level = holm(p)
    order = np.argsort(p, kind="stable")
    assert level[order].tolist() == pytest.approx([1 - 0.05 / (20 - k) for k in range(20)])


def test_judge_rejects_at_exactly_alpha():
    five = paired_difference([0.9, 0.92, 0.91, 0.93, 0.9], [0.8, 0.81, 0.79, 0.8, 0.82])
    assert judge(five, 0.05) == "better"
