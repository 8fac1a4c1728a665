"""Feature-map states simulated on a torch device (a GPU, or the CPU in tests).

The same algorithm as ``FeatureMap.states`` (see ``feature_map.py``): per
repetition a Walsh-Hadamard layer and a diagonal phase layer whose phases are
one (B, n_gates) x (n_gates, 2**n) product of the map's own gate angles and
phase codes (``FeatureMap._angles`` / ``_codes``, reused here, not re-derived).
Only the array library changes, so the amplitudes agree with the NumPy path
to float32 rounding (1e-5 is tested) and the states can stay on the GPU for
``torch_cuda.gram_device``.
"""
from __future__ import annotations

import numpy as np

from .feature_map import FeatureMap, hadamard_matrix
from .validation import check_embeddings
from .._util import check_positive_int

# float64 phases dominate the work space: B * 2**n * 8 bytes per batch
DEFAULT_BATCH_BYTES = 256 << 20


def _walsh_hadamard(psi, n_qubits: int, h_left, h_right):
    """H on every wire of real rows psi (rows, 2**n), as two matrix products.

    Same factorisation as ``feature_map.walsh_hadamard_``:
    H^{(x)n} = H^{(x)h} (x) H^{(x)(n-h)} on a (rows, 2**h, 2**(n-h)) view.
    ``h_left`` / ``h_right`` are those two factors on psi's device.
    """
    rows = psi.shape[0]
    h = n_qubits // 2
    view = psi.reshape(rows, 2**h, 2 ** (n_qubits - h))
    if h:
        view = h_left @ view
    return (view.reshape(-1, 2 ** (n_qubits - h)) @ h_right).reshape(rows, -1)


def states_torch(fm: FeatureMap, X, device, *, batch_size: int | None = None):
    """Simulate U(x)|0> for every row of X on a torch device.

    Parameters
    ----------
    fm : FeatureMap
    X : array_like, shape (N, fm.n_qubits), real and finite
        Validated like ``FeatureMap.states`` (errors before any work), gate
        angles that overflow float64 included (ValueError).
    device : torch.device or str
        Where the states are simulated and returned ("cuda", "cuda:1", "cpu").
    batch_size : int, optional
        Rows simulated together (default: about 256 MiB of float64 phases).

    Returns
    -------
    S : torch.Tensor, shape (N, 2**n_qubits), complex64, on ``device``
        Unit-norm rows in PennyLane's amplitude order, equal to
        ``fm.states(X)`` to float32 rounding.
    """
    import torch

    if not isinstance(fm, FeatureMap):
        raise TypeError(f"fm must be a FeatureMap, got {type(fm).__name__}")
    X = check_embeddings(X, fm.n_qubits)
    fm._check_angles(X)  # the same refusal as FeatureMap.states: overflowing angles would give NaN states
    device = torch.device(device)
    n, d = X.shape[0], fm.dim
    batch_size = check_positive_int(max(1, DEFAULT_BATCH_BYTES // (8 * d)) if batch_size is None else batch_size,
                                    "batch_size")
    _check_device_memory(device, n * d * 8, f"states of {n} samples on {fm.n_qubits} qubits (complex64)")

    # gate angles are tiny (N, n_gates); computing them with the map's own
    # NumPy code keeps one definition of the circuit
    angles = torch.from_numpy(fm._angles(X)).to(device)
    codes = torch.from_numpy(fm._codes()).to(device)
    h = fm.n_qubits // 2
    h_left = torch.from_numpy(hadamard_matrix(h)).to(device)
    h_right = torch.from_numpy(hadamard_matrix(fm.n_qubits - h)).to(device)
    norm = 2.0 ** (-fm.n_qubits / 2)

    out = torch.empty((n, d), dtype=torch.complex64, device=device)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        # phases in float64, reduced mod 2 pi before the float32 cos/sin (as
        # the NumPy path does), so large angles keep ~1e-7 accuracy
        phase = torch.remainder(angles[start:stop] @ codes, 2.0 * np.pi).to(torch.float32)
        cos, sin = torch.cos(phase), torch.sin(phase)
        del phase
        # first block acts on |0..0>: H^{(x)n}|0> is the uniform superposition
        re, im = cos * norm, sin * norm
        for _ in range(fm.reps - 1):
            both = _walsh_hadamard(torch.cat([re, im]), fm.n_qubits, h_left, h_right)
            re, im = both[: stop - start], both[stop - start :]
            re, im = re * cos - im * sin, re * sin + im * cos
        out[start:stop] = torch.complex(re, im)
    return out


def _check_device_memory(device, nbytes: int, what: str, *, fraction: float = 0.8) -> None:
    """InsufficientMemoryError, with the numbers, if ``nbytes`` won't fit on ``device``."""
    from .validation import InsufficientMemoryError, check_fits_in_memory

    if device.type != "cuda":
        check_fits_in_memory(nbytes, what, fraction=fraction)
        return
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    if nbytes > fraction * free:
        raise InsufficientMemoryError(
            f"{what} needs {nbytes / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB is free on {device} "
            f"(limit {fraction:.0%} of it); use fewer samples or qubits, or keep the states on the host"
        )
