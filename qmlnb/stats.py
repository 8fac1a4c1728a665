"""Paired comparisons over seeds: is model A better than model B, or is the difference noise?

Two models scored on the same tasks with the same seeds give paired scores
``a[i]``, ``b[i]``.  :func:`paired_difference` summarises ``d = a - b``: its
mean, a confidence interval (Student's t on the paired differences, or a
percentile bootstrap), and how often A wins, loses or ties.  An interval
that contains 0 means the seeds do not separate the two models.

A report makes many such comparisons; :func:`holm` corrects them together
(Holm's step-down, family-wise error rate), and :func:`judge` says one in
words: "better"/"worse" only with at least :data:`MIN_PAIRS` paired seeds and
an interval that excludes 0 at its Holm-corrected level; the same difference
in every seed is said as such (a zero-width t interval is no evidence).

>>> paired_difference([0.91, 0.93, 0.90], [0.90, 0.94, 0.89])["mean_difference"]
0.00333...
"""
from __future__ import annotations

import math

import numpy as np

from ._util import Interval, Options

METHODS = ("t", "bootstrap")
# differences smaller than this count as ties (scores are fractions of a test set;
# a test set of 10^5 samples moves a score by 1e-5 per sample)
TIE_TOLERANCE = 1e-9
# fewer paired seeds than this never make a "better" or "worse": with 3 or 4 seeds one lucky split decides
MIN_PAIRS = 5
ALPHA = 0.05  # family-wise error rate of a report's comparisons (Holm)


def _scores(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per seed), got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def paired_difference(a, b, confidence: float = 0.95, *, method: str = "t", n_bootstrap: int = 10_000,
                      seed: int = 0) -> dict:
    """Mean of the paired differences ``a - b`` over seeds, with a confidence interval.

    Parameters
    ----------
    a, b : (n,) float scores of two models, paired: ``a[i]`` and ``b[i]`` come
        from the same seed, split and task.
    confidence : level of the two-sided interval, in (0, 1).
    method : "t" (Student's t interval of the mean difference, n - 1 degrees of
        freedom) or "bootstrap" (percentile interval of the mean over
        ``n_bootstrap`` resamples of the seeds, generator seeded by ``seed``).

    Returns
    -------
    dict with ``n``; ``mean_a``, ``mean_b``, ``std_a``, ``std_b`` (sample std,
    ddof=1; NaN for n = 1); ``mean_difference`` and ``std_difference``;
    ``ci_low``, ``ci_high`` (NaN for n = 1: one pair says nothing about the
    spread); ``confidence``, ``method``; ``wins``, ``losses``, ``ties`` (a
    better, worse, equal within ``TIE_TOLERANCE``); and ``within_noise``: True
    when the interval contains 0 (or is undefined), False when it excludes 0.
    """
    a, b = _scores(a, "a"), _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up seed by seed, got {a.size} and {b.size} scores")
    Interval(float, 0, 1, closed="neither")(confidence, "confidence")
    Options(METHODS)(method, "method")
    Interval(int, 1)(n_bootstrap, "n_bootstrap")

    d = a - b
    n = d.size
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else math.nan
    low = high = math.nan
    identical = bool(n > 1 and np.ptp(d) <= TIE_TOLERANCE)
    p_value = _p_value(d) if n > 1 else math.nan
    if n > 1:
        if method == "t":
            low, high = t_interval(mean, std, n, confidence)
        else:
            rng = np.random.default_rng(seed)
            means = d[rng.integers(0, n, size=(n_bootstrap, n))].mean(axis=1)
            alpha = (1 - confidence) / 2
            low, high = (float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
    within = not (math.isfinite(low) and (low > 0 or high < 0))
    return {
        "n": int(n),
        "mean_a": float(a.mean()), "mean_b": float(b.mean()),
        "std_a": float(a.std(ddof=1)) if n > 1 else math.nan,
        "std_b": float(b.std(ddof=1)) if n > 1 else math.nan,
        "mean_difference": mean, "std_difference": std,
        "ci_low": low, "ci_high": high, "confidence": float(confidence), "method": method,
        "wins": int((d > TIE_TOLERANCE).sum()), "losses": int((d < -TIE_TOLERANCE).sum()),
        "ties": int((np.abs(d) <= TIE_TOLERANCE).sum()),
        "within_noise": bool(within), "p_value": p_value, "identical": identical,
    }


def describe_difference(result: dict, name_a: str = "A", name_b: str = "B", digits: int = 3) -> str:
    """One sentence saying what a :func:`paired_difference` result means."""
    mean, low, high = result["mean_difference"], result["ci_low"], result["ci_high"]
    level = f"{round(result['confidence'] * 100):d}%"
    counts = f"{result['wins']} wins, {result['losses']} losses, {result['ties']} ties over {result['n']} seeds"
    if not math.isfinite(low):
        return f"{name_a} - {name_b} = {mean:+.{digits}f} from a single seed: no interval ({counts})"
    interval = f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] ({level}, {counts})"
    if result["within_noise"]:
        return f"{name_a} - {name_b} = {interval}: within noise"
    return f"{name_a} - {name_b} = {interval}: {name_a} {'better' if mean > 0 else 'worse'}"


def compare_to_reference(scores: dict, reference: str, confidence: float = 0.95, *, method: str = "t") -> dict:
    """Each model's scores over seeds beside a reference model's, with paired differences.

    scores : {model name: (n,) scores}, every list in the same seed order
        (``scores[m][i]`` and ``scores[reference][i]`` come from the same seed).
    reference : the model the others are compared with (e.g. "quantum", "qsvm").

    Returns {model name: {"n", "mean", "std", "scores", and for every model but
    the reference "reference_minus_model": :func:`paired_difference`
    (reference - model: positive means the reference is better)}}.
    """
    if reference not in scores:
        raise ValueError(f"reference {reference!r} is not among the models {sorted(scores)}")
    ref = _scores(scores[reference], f"scores[{reference!r}]")
    out = {}
    for name, values in scores.items():
        values = _scores(values, f"scores[{name!r}]")
        row = {"n": int(values.size), "mean": float(values.mean()),
               "std": float(values.std(ddof=1)) if values.size > 1 else math.nan, "scores": values.tolist()}
        if name != reference:
            if values.size != ref.size:
                raise ValueError(f"scores[{name!r}] has {values.size} seeds but the reference has {ref.size}")
            row["reference_minus_model"] = paired_difference(ref, values, confidence, method=method)
        out[name] = row
    return out


def t_interval(mean: float, std: float, n: int, confidence: float) -> tuple[float, float]:
    """Student's t interval (n - 1 degrees of freedom) of a mean of ``n`` values with sample std ``std``;
    (NaN, NaN) for n < 2."""
    if n < 2 or not math.isfinite(std):
        return math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def _p_value(d: np.ndarray) -> float:
    """Two-sided p of "the mean paired difference is 0": Student's t; where every seed gives the same difference
    (std 0, where t is undefined) the exact sign test, which needs 6 seeds of one sign to reach 0.05."""
    from scipy import stats

    if np.ptp(d) <= TIE_TOLERANCE:
        if abs(float(d[0])) <= TIE_TOLERANCE:
            return 1.0
        return float(min(1.0, 2.0 * 0.5 ** d.size))
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def holm(p_values, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction of a family of two-sided tests.

    p_values : (m,) float, NaN for a comparison that makes no claim (left out of the family: it counts in
        neither m nor the order).

    Returns ``(adjusted, confidence)``, both (m,) float64: the Holm-adjusted p
    values (monotone; a comparison is rejected at family-wise level ``alpha``
    when its adjusted p <= alpha) and each comparison's corrected interval
    level ``1 - alpha / (m - k)`` for its rank k (0 = smallest p): its t
    interval at that level excludes 0 exactly when its own step rejects.
    NaN where the p value is NaN.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    Interval(float, 0, 1, closed="neither")(alpha, "alpha")
    if (p[np.isfinite(p)] < 0).any() or (p[np.isfinite(p)] > 1).any():
        raise ValueError("p values must lie in [0, 1]")
    adjusted = np.full(p.shape, math.nan)
    confidence = np.full(p.shape, math.nan)
    index = np.flatnonzero(np.isfinite(p))
    m = index.size
    running = 0.0
    for k, i in enumerate(index[np.argsort(p[index], kind="stable")]):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
        confidence[i] = 1.0 - alpha / (m - k)
    return adjusted, confidence


def judge(result: dict, adjusted_p: float, alpha: float = ALPHA, min_pairs: int = MIN_PAIRS) -> str:
    """A :func:`paired_difference` result (a - b) in words: "better" (a) or "worse" only with at least
    ``min_pairs`` seeds and ``adjusted_p`` (its p value after :func:`holm` across the family) <= ``alpha``;
    else "identical" when every seed gave the same difference (said as such, never as a zero-width
    interval), "too few seeds" under ``min_pairs``, or "no measurable difference"."""
    if result["n"] >= min_pairs and math.isfinite(adjusted_p) and adjusted_p <= alpha:
        return "better" if result["mean_difference"] > 0 else "worse"
    if result["identical"]:
        return "identical"
    return "too few seeds" if result["n"] < min_pairs else "no measurable difference"
