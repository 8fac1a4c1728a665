"""The unitary matrices of the gates of :mod:`qmlnb.kernels.circuit`, batched over samples (PennyLane's conventions).

Shared by the state-vector simulation (``circuit_map``), the MPS (``circuit_mps``) and the tests' reference.
"""
from __future__ import annotations

import math

import numpy as np

_S2 = 1.0 / math.sqrt(2.0)
# constant one-qubit gates (PennyLane's matrices)
FIXED = {
    "h": np.array([[_S2, _S2], [_S2, -_S2]], dtype=np.complex128),
    "x": np.array([[0, 1], [1, 0]], dtype=np.complex128),
    "y": np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
    "z": np.diag([1, -1]).astype(np.complex128),
    "s": np.diag([1, 1j]).astype(np.complex128),
    "sdg": np.diag([1, -1j]).astype(np.complex128),
    "t": np.diag([1, np.exp(1j * np.pi / 4)]),
    "tdg": np.diag([1, np.exp(-1j * np.pi / 4)]),
    "sx": 0.5 * np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]]),
}
# constant phase of a fixed diagonal gate per basis state: P(angle) on the wire
FIXED_PHASE = {"z": math.pi, "s": math.pi / 2, "sdg": -math.pi / 2, "t": math.pi / 4, "tdg": -math.pi / 4}


def one_qubit_matrices(name: str, angles: list) -> np.ndarray:
    """(N, 2, 2) complex128 matrices of a one-qubit gate for angle arrays (N,) (PennyLane's conventions)."""
    if name in FIXED:
        return FIXED[name][None]
    if name == "u3":
        t, phi, lam = angles
        c, s = np.cos(t / 2), np.sin(t / 2)
        return np.stack([np.stack([c + 0j, -np.exp(1j * lam) * s], -1),
                         np.stack([np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c], -1)], -2)
    (t,) = angles
    if name == "gphase":
        return np.exp(-1j * t)[:, None, None] * np.eye(2)[None]
    c, s = np.cos(t / 2) + 0j, np.sin(t / 2) + 0j
    if name == "rx":
        return np.stack([np.stack([c, -1j * s], -1), np.stack([-1j * s, c], -1)], -2)
    if name == "ry":
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    zero = np.zeros_like(c)
    if name == "rz":
        return np.stack([np.stack([np.exp(-0.5j * t), zero], -1), np.stack([zero, np.exp(0.5j * t)], -1)], -2)
    if name == "p":
        return np.stack([np.stack([zero + 1, zero], -1), np.stack([zero, np.exp(1j * t)], -1)], -2)
    raise ValueError(f"{name} is not a one-qubit gate")  # pragma: no cover - compile only sends these


I2 = np.eye(2, dtype=np.complex128)
PAULI = {"x": np.array([[0, 1], [1, 0]], dtype=np.complex128),
          "y": np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
          "z": np.diag([1.0, -1.0]).astype(np.complex128)}
SWAP = np.eye(4, dtype=np.complex128)[[0, 2, 1, 3]]


def two_qubit_matrices(name: str, angles: list) -> np.ndarray:
    """(N or 1, 4, 4) complex128 matrix of a two-qubit gate on wires (a, b), a the more significant bit."""
    if name == "cx":
        return np.eye(4, dtype=np.complex128)[[0, 1, 3, 2]][None]
    if name == "cz":
        return np.diag([1, 1, 1, -1]).astype(np.complex128)[None]
    if name == "swap":
        return SWAP[None]
    (t,) = angles
    t = np.asarray(t, dtype=np.float64)[:, None]
    if name == "crz":
        diagonal = np.hstack([np.ones_like(t), np.ones_like(t), np.exp(-0.5j * t), np.exp(0.5j * t)])
    elif name == "cp":
        diagonal = np.hstack([np.ones_like(t), np.ones_like(t), np.ones_like(t), np.exp(1j * t)])
    elif name == "rzz":
        diagonal = np.exp(-0.5j * t * np.array([1.0, -1.0, -1.0, 1.0])[None])
    else:
        first, second = {"rxx": "xx", "ryy": "yy", "rzx": "zx"}[name]
        pauli = np.kron(PAULI[first], PAULI[second])
        # exp(-i t/2 P) = cos(t/2) I - i sin(t/2) P for a Pauli string P (P^2 = I)
        return np.cos(t / 2)[:, :, None] * np.eye(4)[None] - 1j * np.sin(t / 2)[:, :, None] * pauli[None]
    out = np.zeros((t.shape[0], 4, 4), dtype=np.complex128)
    out[:, np.arange(4), np.arange(4)] = diagonal
    return out
