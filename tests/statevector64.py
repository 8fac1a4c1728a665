"""A float64 reference simulation of FeatureMap's circuits for tests (one wire's Hadamard at a time)."""
from __future__ import annotations

import numpy as np


def states64(fm, X: np.ndarray) -> np.ndarray:
    """(N, 2**n) complex128 states of ``fm`` (ZZ or IQP) for the rows of X, in float64 throughout."""
    n = fm.n_qubits
    phase = fm._angles(np.asarray(X, dtype=np.float64)) @ fm._codes()
    diagonal = np.exp(1j * phase)
    psi = diagonal * 2.0 ** (-n / 2)
    for _ in range(fm.reps - 1):
        for k in range(n):
            view = psi.reshape(len(X), 2**k, 2, -1)
            a, b = view[:, :, 0].copy(), view[:, :, 1].copy()
            view[:, :, 0], view[:, :, 1] = (a + b) / np.sqrt(2.0), (a - b) / np.sqrt(2.0)
        psi = psi * diagonal
    return psi
