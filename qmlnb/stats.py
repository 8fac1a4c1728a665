"""Paired comparisons over seeds: is model A better than model B, or is the difference noise?

Two models scored on the same tasks with the same seeds give paired scores
``a[i]``, ``b[i]``.  :func:`paired_difference` summarises ``d = a - b``: its
mean, a confidence interval (Student's t on the paired differences, or a
percentile bootstrap), and how often A wins, loses or ties.  An interval
that contains 0 means the seeds do not separate the two models.

>>> paired_difference([0.91, 0.93, 0.90], [0.90, 0.94, 0.89])["mean_difference"]
0.00333...
"""
from __future__ import annotations

import math

import numpy as np

METHODS = ("t", "bootstrap")
# differences smaller than this count as ties (scores are fractions of a test set;
# a test set of 10^5 samples moves a score by 1e-5 per sample)
TIE_TOLERANCE = 1e-9


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
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive int, got {n_bootstrap!r}")

    d = a - b
    n = d.size
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else math.nan
    low = high = math.nan
    if n > 1:
        if method == "t":
            from scipy import stats

            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
            low, high = mean - half, mean + half
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
        "within_noise": bool(within),
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
