"""Diagnostics of a Gram matrix that feeds a model: is it concentrated, a Gaussian in disguise, at its grid's edge?

A fidelity kernel can fail quietly in three ways, none of which shows in a
single accuracy figure:

- **Concentration.**  With many qubits and large feature scales the
  off-diagonal entries shrink towards 2**-n and vary less and less (Thanasilp
  et al. 2022): the SVM then sees an almost-identity Gram, every training point
  becomes a support vector, and predictions are close to chance.  Flagged when
  the off-diagonal standard deviation is below ``CONCENTRATION_STD`` (0.01:
  differences between pairs smaller than 1% of the kernel's range, where a
  float32 Gram's rounding, 1e-6, is still far below).
- **A Gaussian in disguise.**  At small feature scales a fidelity kernel is
  1 - O(b^2 |x - y|^2) and the best-fitting Gaussian exp(-gamma |x - y|^2) on
  the same inputs reproduces it; the quantum circuit then does what an RBF SVM
  does.  Flagged when the Pearson correlation of the off-diagonal entries
  with the best Gaussian's exceeds ``GAUSSIAN_CORRELATION`` (0.99).
- **A bandwidth at the edge of its grid.**  The selection would have gone
  further if it could: the grid does not bracket the optimum.

:func:`kernel_diagnostics` measures these (and the centred kernel-target
alignment when given, the effective rank and the support-vector fraction);
:func:`warn_diagnostics` turns the flags into :class:`KernelDiagnosticWarning`.
``QuantumKernelSVC.fit`` stores the result as ``diagnostics_``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

# documented thresholds (module docstring, docs/controls.md)
CONCENTRATION_STD = 0.01
GAUSSIAN_CORRELATION = 0.99
# the Gaussian's gamma is searched on this grid times 1 / (median squared distance)
GAUSSIAN_GAMMA_FACTORS = tuple(np.logspace(-3, 2, 51).tolist())
# larger Grams are diagnosed on a seeded random subset of this many samples:
# the statistics are means over pairs, and the eigenvalues of the effective rank cost N^3
MAX_SAMPLES = 1000


class KernelDiagnosticWarning(UserWarning):
    """A Gram matrix that feeds a model is concentrated, Gaussian-like, or selected at its grid's edge."""


def _subset(n: int, max_samples: int, seed: int) -> np.ndarray:
    if n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))


def best_gaussian(K, X, gamma_factors=GAUSSIAN_GAMMA_FACTORS) -> tuple[float, float]:
    """The Gaussian exp(-gamma |x - y|^2) that best correlates with K's off-diagonal entries.

    K : (N, N) real symmetric Gram;  X : (N, F) the inputs K was computed on.
    Returns (gamma, Pearson correlation); (nan, nan) when N < 3 or K's or
    the distances' off-diagonal entries are constant.
    """
    K = np.asarray(K, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    n = len(K)
    if n < 3:
        return math.nan, math.nan
    iu = np.triu_indices(n, 1)
    sq = np.sum(X * X, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0)[iu]
    k = K[iu]
    median = float(np.median(d2))
    if k.std() == 0 or d2.std() == 0 or median <= 0:
        return math.nan, math.nan
    best = (math.nan, -math.inf)
    kc = (k - k.mean()) / k.std()
    for factor in gamma_factors:
        g = np.exp(-(factor / median) * d2)
        if g.std() == 0:
            continue
        corr = float(np.mean(kc * (g - g.mean())) / g.std())
        if corr > best[1]:
            best = (factor / median, corr)
    return (best[0], best[1]) if math.isfinite(best[1]) else (math.nan, math.nan)


def effective_rank(K) -> float:
    """exp(entropy) of K's normalised non-negative eigenvalues (Roy and Vetterli 2007): 1 .. N."""
    w = np.clip(np.linalg.eigvalsh(np.asarray(K, dtype=np.float64)), 0.0, None)
    if w.sum() <= 0:
        return math.nan
    p = w[w > 0] / w.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def at_grid_edge(value, grid) -> bool | None:
    """True when ``value`` is the smallest or largest of ``grid`` (None: no grid of 2+ values)."""
    if grid is None:
        return None
    grid = sorted(float(g) for g in grid)
    if len(grid) < 2:
        return None
    return bool(math.isclose(float(value), grid[0]) or math.isclose(float(value), grid[-1]))


def kernel_diagnostics(K, X=None, *, alignment: float | None = None, bandwidth: float | None = None,
                       grid=None, n_support: int | None = None, max_samples: int = MAX_SAMPLES,
                       seed: int = 0) -> dict:
    """What a Gram matrix looks like to the model it feeds.

    Parameters
    ----------
    K : (N, N) real symmetric training Gram (float32 or float64).
    X : (N, F) the inputs (e.g. embeddings) K was computed on; needed for the
        Gaussian comparison.
    alignment : the centred kernel-target alignment, if computed (recorded as is).
    bandwidth, grid : the chosen bandwidth (or gamma) and the candidates it
        was chosen from (None: fixed, no edge check).
    n_support : support vectors of the SVM fitted on K.
    max_samples, seed : larger Grams are diagnosed on a seeded random subset.

    Returns
    -------
    dict with floats ``off_diagonal_mean``, ``off_diagonal_std``,
    ``effective_rank``, ``gaussian_gamma``, ``gaussian_correlation`` (NaN
    without X), ``alignment``, ``bandwidth``, list ``bandwidth_grid``,
    ``bandwidth_at_grid_edge`` (bool or None), ``support_fraction``,
    ``n_samples_diagnosed``, the thresholds, bool flags ``concentrated``,
    ``gaussian_like``, and ``warnings`` (one sentence per raised flag).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 2:
        raise ValueError(f"K must be a square Gram matrix of at least 2 samples, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise ValueError("K contains NaN or infinite values")
    n = len(K)
    if X is not None:
        X = np.asarray(X, dtype=np.float64)
        X = X[:, None] if X.ndim == 1 else X
        if X.ndim != 2 or len(X) != n:
            raise ValueError(f"X must be (N, F) with N = {n} rows (the samples of K), got shape {np.shape(X)}")
    if n_support is not None and not 0 <= n_support <= n:
        raise ValueError(f"n_support must be in 0..{n}, got {n_support!r}")
    keep = _subset(n, max_samples, seed)
    Ks = K[np.ix_(keep, keep)]
    off = Ks[~np.eye(len(keep), dtype=bool)]
    gamma, corr = best_gaussian(Ks, X[keep]) if X is not None else (math.nan, math.nan)
    edge = at_grid_edge(bandwidth, grid) if bandwidth is not None else None
    out = {
        "n_samples": n, "n_samples_diagnosed": int(len(keep)),
        "off_diagonal_mean": float(off.mean()), "off_diagonal_std": float(off.std()),
        "effective_rank": effective_rank(Ks),
        "gaussian_gamma": gamma, "gaussian_correlation": corr,
        "alignment": None if alignment is None else float(alignment),
        "bandwidth": None if bandwidth is None else float(bandwidth),
        "bandwidth_grid": None if grid is None else [float(g) for g in grid],
        "bandwidth_at_grid_edge": edge,
        "support_fraction": None if n_support is None else n_support / n,
        "thresholds": {"concentration_std": CONCENTRATION_STD, "gaussian_correlation": GAUSSIAN_CORRELATION},
    }
    out["concentrated"] = bool(out["off_diagonal_std"] < CONCENTRATION_STD)
    out["gaussian_like"] = bool(math.isfinite(corr) and corr > GAUSSIAN_CORRELATION)
    messages = []
    if out["concentrated"]:
        messages.append(f"the kernel is concentrated: off-diagonal std {out['off_diagonal_std']:.2g} < "
                        f"{CONCENTRATION_STD} (mean {out['off_diagonal_mean']:.3g}); the SVM sees an almost "
                        "constant Gram")
    if out["gaussian_like"]:
        messages.append(f"the kernel is a Gaussian in disguise: correlation {corr:.4f} > {GAUSSIAN_CORRELATION} "
                        f"with exp(-{gamma:.3g} |x - y|^2) on the same inputs; compare with an RBF SVM")
    if edge:
        messages.append(f"the selected bandwidth {bandwidth:g} is at the edge of its grid "
                        f"[{min(grid):g} .. {max(grid):g}]: the grid does not bracket the optimum")
    out["warnings"] = messages
    return out


def warn_diagnostics(diagnostics: dict, stacklevel: int = 2) -> None:
    """Issue one :class:`KernelDiagnosticWarning` per message in ``diagnostics["warnings"]``."""
    for message in diagnostics.get("warnings", []):
        warnings.warn(message, KernelDiagnosticWarning, stacklevel=stacklevel + 1)
