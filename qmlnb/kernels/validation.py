"""Input checks shared by the feature maps and the Gram backends.

Every check raises before anything is allocated or computed, so a bad call
never leaves half-done work behind.
"""
from __future__ import annotations

import os

import numpy as np

from .._util import check_positive_int

# Threads one call may ask for.  More only oversubscribe the cores, and an
# OpenMP runtime asked for tens of thousands of threads crashes the process
# (SIGSEGV in libgomp) instead of raising.
MAX_THREADS = 1024
# |norm - 1| allowed for a state row: complex64 states of 2**30 amplitudes
# stay within 1e-5 of unit norm; 1e-3 refuses unnormalised data (2 S, raw features).
UNIT_NORM_TOLERANCE = 1e-3


class InsufficientMemoryError(MemoryError):
    """An array would not fit in the memory available on this machine."""


def available_memory_bytes() -> int:
    """Bytes of RAM available to a new allocation right now."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits_in_memory(nbytes: int, what: str, *, fraction: float = 0.8) -> None:
    """Refuse, with the numbers, an allocation of more than ``fraction`` of free RAM."""
    free = available_memory_bytes()
    if nbytes > fraction * free:
        raise InsufficientMemoryError(
            f"{what} needs {nbytes / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB "
            f"of memory is available (limit {fraction:.0%} of it); use fewer samples, "
            "fewer qubits, or gram(..., out=path) to write the matrix to disk"
        )


def check_threads(value, name: str = "n_threads") -> int:
    """A thread count in [1, MAX_THREADS] (bools refused), else a ValueError naming the parameter."""
    value = check_positive_int(value, name)
    if value > MAX_THREADS:
        raise ValueError(f"{name}={value} is more than the {MAX_THREADS} threads a call may use "
                         f"(this machine has {os.cpu_count()} cores); use at most the cores available")
    return value


def check_embeddings(X, n_features: int) -> np.ndarray:
    """X as a (N, n_features) float64 array of finite values."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, {n_features}), got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features per sample but the feature map expects {n_features}")
    if X.shape[0] == 0:
        raise ValueError("X has no samples")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ValueError(f"X must be real numbers, got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    return X


def check_states(S, name: str) -> np.ndarray:
    """S as a C-contiguous (N, d) complex64 array of finite amplitudes."""
    S = np.asarray(S)
    if S.ndim != 2:
        raise ValueError(f"{name} must be a 2-D state matrix (n_samples, 2**n_qubits), got shape {S.shape}")
    if S.shape[0] == 0 or S.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {S.shape})")
    if not np.issubdtype(S.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {S.dtype}")
    S = np.ascontiguousarray(S, dtype=np.complex64)
    if not np.isfinite(S.view(np.float32)).all():
        raise ValueError(f"{name} contains NaN or infinite amplitudes")
    return S


def row_norms(S: np.ndarray) -> np.ndarray:
    """(N,) float64 Euclidean norms of the rows of a (N, d) complex64 C-contiguous S.

    O(N d): the rows are read in blocks of about 64 MiB of float64 work space.
    """
    norms = np.empty(S.shape[0])
    rows = max(1, (8 << 20) // (2 * S.shape[1]))
    for start in range(0, S.shape[0], rows):
        parts = S[start:start + rows].view(np.float32).astype(np.float64)  # re, im interleaved
        norms[start:start + rows] = np.sqrt(np.einsum("ij,ij->i", parts, parts))
    return norms


def check_unit_norms(norms: np.ndarray, name: str) -> None:
    """Refuse if any of the row ``norms`` of states ``name`` differs from 1 by more than ``UNIT_NORM_TOLERANCE``.

    The fidelity |<a|b>|^2 is a kernel value in [0, 1] only for unit
    vectors; rows scaled by 2 would give values up to 16 without any error.
    """
    wrong = np.flatnonzero(~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE))  # NaN counts as wrong
    if wrong.size:
        row = int(wrong[0])
        raise ValueError(f"{name} has {wrong.size} of {norms.size} rows that are not unit vectors (row {row} has "
                         f"norm {norms[row]:.6g}, allowed 1 +- {UNIT_NORM_TOLERANCE:g}); the fidelity kernel needs "
                         "normalised states such as FeatureMap.states gives "
                         "(S / np.linalg.norm(S, axis=1, keepdims=True))")


def check_unit_rows(S: np.ndarray, name: str) -> None:
    """``check_unit_norms`` of the rows of a validated (N, d) complex64 state matrix (``check_states``)."""
    check_unit_norms(row_norms(S), name)
