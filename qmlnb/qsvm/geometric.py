"""The geometric difference between a classical and a quantum kernel, and the labels that make it count.

Huang et al. 2021 ("Power of data in quantum machine learning", Nat. Commun.
12, 2631; eq. 5 and their Appendix F) bound how much better a model on the
quantum Gram K_Q can predict than one on a classical Gram K_C, for *any*
labels of the same inputs, by the geometric difference

    g(K_C || K_Q) = sqrt(|| sqrt(K_Q) sqrt(K_C) (K_C + lambda I)^-2 sqrt(K_C) sqrt(K_Q) ||_inf)

with both Grams normalised to trace N and ``||.||_inf`` the spectral norm
(their regularised form; at lambda = 0 it is sqrt(|| sqrt(K_Q) K_C^-1
sqrt(K_Q) ||_inf), eq. 5).  Reading it:

- g close to 1: the classical kernel does at least about as well as the
  quantum one for every labelling of these inputs; no advantage is possible.
- g of order sqrt(N): there are labellings the quantum kernel learns and the
  classical one cannot from N samples; an advantage is possible (not shown).

The labelling that realises it (their engineered data sets): with ``v`` the
top eigenvector of the matrix above (eigenvalue g^2), ``y = sqrt(K_Q) v`` has
a small norm in the quantum kernel's feature space and a large one (g^2 times
larger) in the classical one; thresholding ``y`` at its median gives binary
labels on which a quantum-kernel classifier must beat the classical one.
:func:`engineered_labels` builds them; a control that does not then find the
quantum kernel better is broken.

>>> g = geometric_difference(K_rbf, K_quantum)                # float >= 0
>>> y, info = engineered_labels(K_rbf, K_quantum)             # (N,) int64 labels 0/1, info["g"]
"""
from __future__ import annotations

import math

import numpy as np

from .._util import check_real

# lambda of the regularised geometric difference, in the units of trace-normalised Grams (their eigenvalues sum
# to N): it caps how much a classical eigen-direction with eigenvalue c << lambda can be amplified (by c / lambda^2)
DEFAULT_LAMBDA = 1e-3


def check_gram(K, name: str, n: int | None = None) -> np.ndarray:
    """K as a finite, symmetric (N, N) float64 Gram with a positive trace, else a ValueError naming it."""
    K = np.asarray(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 2:
        raise ValueError(f"{name} must be a square Gram matrix of at least 2 samples, got shape {K.shape}")
    if n is not None and K.shape[0] != n:
        raise ValueError(f"{name} has {K.shape[0]} samples but the other Gram has {n}; both must be on the same inputs")
    if not np.issubdtype(K.dtype, np.number) or np.iscomplexobj(K):
        raise ValueError(f"{name} must hold real numbers, got dtype {K.dtype}")
    K = K.astype(np.float64, copy=False)
    if not np.isfinite(K).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if not np.allclose(K, K.T, rtol=0, atol=1e-8):
        raise ValueError(f"{name} is not symmetric (largest |K - K^T| = {np.abs(K - K.T).max():.3g})")
    if not np.trace(K) > 0:
        raise ValueError(f"{name} has a trace <= 0; a Gram matrix of a kernel has a positive diagonal")
    return K


def check_lambda(lam) -> float:
    return check_real(lam, "lam", 0, math.inf, closed="left")


def trace_normalised(K: np.ndarray) -> np.ndarray:
    """K * N / tr(K): the normalisation of Huang et al. (for unit-diagonal kernels, K itself)."""
    return K * (len(K) / np.trace(K))


def _eigh_psd(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at 0: rounding leaves a Gram's smallest ones slightly negative) and eigenvectors."""
    w, V = np.linalg.eigh((K + K.T) / 2)
    return np.maximum(w, 0.0), V


def geometric_matrix(K_C, K_Q, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """(N, N) sqrt(K_Q) sqrt(K_C) (K_C + lam I)^-2 sqrt(K_C) sqrt(K_Q) of the trace-normalised Grams.

    sqrt(K_C) (K_C + lam I)^-2 sqrt(K_C) shares K_C's eigenvectors with
    eigenvalues c / (c + lam)^2; at ``lam`` = 0 that is the pseudo-inverse of
    K_C (1 / c for c above 1e-12 of the largest, 0 below), so a singular K_C
    gives a finite answer.  Symmetric positive semi-definite by construction.
    """
    K_C = check_gram(K_C, "K_C")
    K_Q = check_gram(K_Q, "K_Q", len(K_C))
    lam = check_lambda(lam)
    c, U = _eigh_psd(trace_normalised(K_C))
    if lam > 0:
        middle = c / (c + lam) ** 2
    else:
        middle = np.where(c > 1e-12 * c.max(), 1.0 / np.where(c > 0, c, 1.0), 0.0)
    q, V = _eigh_psd(trace_normalised(K_Q))
    root_q = (V * np.sqrt(q)) @ V.T
    half = root_q @ U  # sqrt(K_Q) U
    M = (half * middle) @ half.T
    return (M + M.T) / 2


def geometric_difference(K_C, K_Q, lam: float = DEFAULT_LAMBDA) -> float:
    """g(K_C || K_Q) of Huang et al. 2021 (regularised, Appendix F): a float >= 0.

    K_C : (N, N) classical Gram (e.g. the RBF control's);  K_Q : (N, N) quantum
    Gram on the same inputs in the same order (fidelity or projected).  Both
    are normalised to trace N here.  lam >= 0 (default ``DEFAULT_LAMBDA``).
    Asymmetric: g(K_C || K_Q) asks whether K_Q can express what K_C cannot.
    """
    top = np.linalg.eigvalsh(geometric_matrix(K_C, K_Q, lam))[-1]
    return float(math.sqrt(max(top, 0.0)))


def engineered_labels(K_C, K_Q, lam: float = DEFAULT_LAMBDA) -> tuple[np.ndarray, dict]:
    """Binary labels on which the quantum kernel K_Q must beat the classical K_C (Huang et al.'s engineered data).

    v = top eigenvector of :func:`geometric_matrix` (eigenvalue g^2);
    y = sqrt(K_Q) v (trace-normalised K_Q); labels = 1 where y is above its
    median, else 0 (balanced classes).  The eigenvector's sign is fixed (its
    largest-magnitude entry positive) so equal Grams give equal labels.

    Returns (labels (N,) int64, {"g": g(K_C || K_Q), "lam": lam, "y": (N,) float64 scores,
    "threshold": the median}).
    """
    M = geometric_matrix(K_C, K_Q, lam)
    w, V = np.linalg.eigh(M)
    v = V[:, -1]
    v = v * np.sign(v[np.argmax(np.abs(v))])
    q, W = _eigh_psd(trace_normalised(check_gram(K_Q, "K_Q")))
    y = (W * np.sqrt(q)) @ (W.T @ v)
    threshold = float(np.median(y))
    labels = (y > threshold).astype(np.int64)
    if labels.min() == labels.max():
        raise ValueError("the engineered scores are constant: K_Q has no direction K_C lacks on these inputs")
    return labels, {"g": float(math.sqrt(max(w[-1], 0.0))), "lam": check_lambda(lam), "y": y,
                    "threshold": threshold}
