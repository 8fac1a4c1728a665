"""Input checks shared by the feature maps and the Gram backends.

Every check raises before anything is allocated or computed, so a bad call
never leaves half-done work behind.
"""
from __future__ import annotations

import numbers

import numpy as np


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


def check_positive_int(value, name: str) -> int:
    """An int > 0 (bools refused), else a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


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
