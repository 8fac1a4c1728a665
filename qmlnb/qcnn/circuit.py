"""The QCNN circuit of the hybrid model: its wires, levels and gate matrices (gate algebra).

Circuit (Cong, Choi and Lukin, Nature Physics 2019), on ``n`` wires, ``n`` a
power of two:

1. angle encoding: ``RY(angle_i)`` on wire ``i`` (the state is a product state);
2. ``log2(n)`` levels; a level acts on its active wires ``a_0 < a_1 < ...``:

   * convolution: one parametrised two-qubit block ``U(conv[l])`` on the
     neighbouring pairs ``(a_0, a_1), (a_2, a_3), ...`` and then, with four or
     more active wires, on ``(a_1, a_2), (a_3, a_4), ...``.  All pairs of a level
     share the block's 6 angles (translation invariance, as in the paper);
   * pooling: for each pair ``(a_2k, a_2k+1)`` a controlled rotation from the
     discarded wire ``a_2k`` to the kept wire ``a_2k+1``:
     ``RY(pool[l, 0])`` when the discarded wire is 1 (``CRY``) and
     ``RX(pool[l, 1])`` when it is 0 (``X, CRX, X``).  The active wires halve.
     (Not CRZ: before the final <Z> readout an RZ would be a no-op whose
     angle gets no gradient.)

   The convolution block on ``(a, b)`` is ``RZ(w0) RY(w2)`` on ``a``,
   ``RZ(w1) RY(w3)`` on ``b`` (RZ first), ``CNOT(a, b)``, ``RY(w4)`` on ``a``,
   ``RY(w5)`` on ``b``, ``CNOT(b, a)``;
3. readout: ``<Z>`` of the one wire left (wire ``n - 1``).

Parameters: ``conv`` of shape ``(log2 n, 6)`` and ``pool`` of shape
``(log2 n, 2)``.  This module builds the circuit's structure (:func:`levels`)
and its matrices from those angles: the (4, 4) convolution and pooling blocks
of all levels at once (:func:`conv_matrices`, :func:`pool_matrices`) and the
unitary of a whole level (:func:`level_unitary`).  The simulators that run
the circuit on batches of angles are in :mod:`qmlnb.qcnn.simulators`.
"""
from __future__ import annotations

import math

import torch

from .._util import is_int

N_CONV = 6  # angles of one convolution block
N_POOL = 2  # angles of one pooling block


def check_n_qubits(n_qubits) -> int:
    """``n_qubits`` as an int; a power of two >= 2, else ValueError."""
    if not is_int(n_qubits, minimum=2) or n_qubits & (n_qubits - 1):
        raise ValueError(
            f"n_qubits must be a power of two >= 2 (the QCNN halves the active qubits "
            f"at each of log2(n) levels), got {n_qubits!r}"
        )
    return int(n_qubits)


def n_levels(n_qubits: int) -> int:
    """Number of convolution + pooling levels: log2(n_qubits)."""
    return int(math.log2(check_n_qubits(n_qubits)))


def levels(n_qubits: int) -> list[tuple[list[tuple[int, int]], list[tuple[int, int]]]]:
    """Per level: (convolution pairs, pooling pairs (discarded, kept)) in circuit order."""
    active = list(range(check_n_qubits(n_qubits)))
    out = []
    while len(active) > 1:
        conv = [(active[i], active[i + 1]) for i in range(0, len(active) - 1, 2)]
        if len(active) > 2:
            conv += [(active[i], active[i + 1]) for i in range(1, len(active) - 1, 2)]
        pool = [(active[i], active[i + 1]) for i in range(0, len(active), 2)]
        out.append((conv, pool))
        active = [kept for _, kept in pool]
    return out


def readout_wire(n_qubits: int) -> int:
    """The wire whose <Z> is the circuit's output."""
    return levels(n_qubits)[-1][1][0][1]


def init_weights(n_qubits: int, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Initial ``conv`` (L, 6) and ``pool`` (L, 2) angles, uniform in [0, 2 pi)."""
    n_lev = n_levels(n_qubits)
    conv = torch.rand(n_lev, N_CONV, generator=generator, dtype=dtype) * (2 * math.pi)
    pool = torch.rand(n_lev, N_POOL, generator=generator, dtype=dtype) * (2 * math.pi)
    return {"conv": conv, "pool": pool}


# ---------------------------------------------------------------- gate matrices
# The model is small: a forward pass costs what its number of torch ops costs,
# not flops.  Gate matrices are therefore built for all levels at once from
# (L, k) angle tensors in a handful of vectorised ops, and every constant they
# need (generators, index tensors, bases) is built once per dtype and cached.
def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """complex128 for float64 angles, else complex64."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


_CONSTANTS: dict = {}


def cached(key, build):
    """``build()`` the first time ``key`` is asked for, the same tensor afterwards (constants only)."""
    if key not in _CONSTANTS:
        _CONSTANTS[key] = build()
    return _CONSTANTS[key]


# A rotation R(theta) = exp(-i theta G / 2) with G a Pauli matrix is
# cos(theta/2) I + sin(theta/2) (-i G).
MINUS_I_PAULI = {
    "X": [[0, -1j], [-1j, 0]],
    "Y": [[0, -1], [1, 0]],
    "Z": [[-1j, 0], [0, 1j]],
}
CONV_ROTATIONS = "ZZYYYY"  # w0..w5: RZ, RZ, RY, RY, RY, RY
POOL_ROTATIONS = "YX"  # p0: RY (discarded wire 1), p1: RX (discarded wire 0)


def batched_kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(L, 2, 2) x (L, 2, 2) -> (L, 4, 4) Kronecker products, a on the more significant bit."""
    return (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(a.shape[0], 4, 4)


# CNOT on a pair (a, b), a the more significant bit, as a row permutation:
# CNOT @ M == M[perm]
CNOT_FIRST_CONTROLS = [0, 1, 3, 2]
CNOT_SECOND_CONTROLS = [0, 3, 2, 1]


def conv_from_rotations(rot: torch.Tensor) -> torch.Tensor:
    """(L, 6, 2, 2) rotations of w0..w5 -> (L, 4, 4) convolution blocks on (a, b).

    U = CNOT(b, a) [RY(w4) x RY(w5)] CNOT(a, b) [RY(w2) RZ(w0) x RY(w3) RZ(w1)].
    """
    first = rot[:, 2:4] @ rot[:, 0:2]  # RY(w2) RZ(w0), RY(w3) RZ(w1)
    k1 = batched_kron(first[:, 0], first[:, 1])[:, CNOT_FIRST_CONTROLS]
    k2 = batched_kron(rot[:, 4], rot[:, 5])
    return (k2 @ k1)[:, CNOT_SECOND_CONTROLS]


def pool_from_rotations(rot: torch.Tensor) -> torch.Tensor:
    """(L, 2, 2, 2) rotations RY(p0), RX(p1) -> (L, 4, 4) pooling blocks on (discarded, kept).

    Block diagonal in the discarded wire's value: RX(p1) on the kept wire when
    it is 0 (the X, CRX, X of the circuit), RY(p0) when it is 1 (CRY).
    """
    projectors = torch.eye(2, dtype=rot.dtype)[:, :, None] * torch.eye(2, dtype=rot.dtype)[:, None, :]
    # |0><0| (x) RX(p1) + |1><1| (x) RY(p0)
    blocks = projectors[None, :, :, None, :, None] * rot[:, [1, 0], None, :, None, :]
    return blocks.sum(dim=1).reshape(rot.shape[0], 4, 4)


# The blocks are polynomials in c_j = cos(w_j/2), s_j = sin(w_j/2), with
# constant matrix coefficients, so all blocks of all levels are one real
# (L, terms) x (terms, 32) matrix product with a constant basis: a few ops
# forward and backward, instead of a few per gate.
# * conv: every term is a product of all k rotations (multilinear): the terms
#   are the 2**k monomials prod_j t_j, t_j in {c_j, s_j}, and the coefficient
#   of one is the block built with R_j = I (c_j) or -i P_j (s_j);
# * pool: a sum of blocks each linear in one rotation: the terms are the 2k
#   values c_j, s_j, and the coefficient of one is the block built with
#   R_j = I or -i P_j and every other rotation 0.
BLOCKS = {"conv": (CONV_ROTATIONS, conv_from_rotations, "product"),
          "pool": (POOL_ROTATIONS, pool_from_rotations, "sum")}


def monomial_bits(k: int) -> torch.Tensor:
    """(k, 2**k) int64: bit j of monomial m (0: cos, 1: sin), j = 0 the most significant."""
    m = torch.arange(2**k)
    return torch.stack([(m >> (k - 1 - j)) & 1 for j in range(k)])


def block_basis(kind: str, dtype: torch.dtype) -> torch.Tensor:
    """(terms, 32) real basis of the ``kind`` ("conv" or "pool") blocks: row t is C_t as (re, im) pairs."""
    def build():
        paulis, from_rotations, form = BLOCKS[kind]
        k = len(paulis)
        gens = torch.tensor([MINUS_I_PAULI[p] for p in paulis], dtype=torch.complex128)  # (k, 2, 2)
        eye = torch.eye(2, dtype=torch.complex128).expand(k, 2, 2)
        if form == "product":
            bits = monomial_bits(k).T  # (2**k, k)
            rot = torch.where(bits[:, :, None, None].bool(), gens, eye)  # (2**k, k, 2, 2)
        else:
            rot = torch.zeros(k, 2, k, 2, 2, dtype=torch.complex128)  # term (j, cos|sin), rotation j'
            for j in range(k):
                rot[j, 0, j], rot[j, 1, j] = eye[j], gens[j]
            rot = rot.reshape(2 * k, k, 2, 2)
        return torch.view_as_real(from_rotations(rot)).reshape(len(rot), 32).to(dtype)
    return cached(("basis", kind, dtype), build)


def half_angle_cos_sin(theta: torch.Tensor) -> torch.Tensor:
    """(..., k) angles -> (..., k, 2): cos(theta/2), sin(theta/2) in one cos (cos(t - pi/2) = sin t)."""
    shift = cached(("half-angle shift", theta.dtype), lambda: torch.tensor([0.0, math.pi / 2], dtype=theta.dtype))
    return torch.cos(theta[..., None] * 0.5 - shift)


def block_matrices(theta: torch.Tensor, kind: str) -> torch.Tensor:
    """(L, k) angles -> (L, 4, 4) complex ``kind`` blocks ("conv": (L, 6), "pool": (L, 2))."""
    k = theta.shape[-1]
    cos_sin = half_angle_cos_sin(theta)  # (L, k, 2)
    if BLOCKS[kind][2] == "product":
        rows = cached(("rows", k), lambda: torch.arange(k)[:, None])
        bits = cached(("bits", k), lambda: monomial_bits(k))
        terms = cos_sin[:, rows, bits].prod(dim=1)  # (L, 2**k) monomials
    else:
        terms = cos_sin.reshape(-1, 2 * k)
    flat = terms @ block_basis(kind, theta.dtype)  # (L, 32): (re, im) of the 16 entries
    return torch.view_as_complex(flat.reshape(-1, 4, 4, 2))


def conv_matrices(conv: torch.Tensor) -> torch.Tensor:
    """(L, 6) angles -> (L, 4, 4) complex unitaries of the convolution block on (a, b).

    U = CNOT(b, a) [RY(w4) x RY(w5)] CNOT(a, b) [RY(w2) RZ(w0) x RY(w3) RZ(w1)].
    """
    return block_matrices(conv, "conv")


def pool_matrices(pool: torch.Tensor) -> torch.Tensor:
    """(L, 2) angles -> (L, 4, 4) complex unitaries of the pooling block on (discarded, kept).

    Block diagonal in the discarded wire's value: RX(w1) on the kept wire when
    it is 0 (the X, CRX, X of the circuit), RY(w0) when it is 1 (CRY).
    """
    return block_matrices(pool, "pool")


# ---------------------------------------------------------------- level unitaries
# The fast simulator folds the levels after the first into one observable
# (Heisenberg picture); these build the unitaries it needs from the blocks.
def discarded_first(m: int) -> list[int]:
    """Basis permutation that lists the bits of positions 0, 2, ... (discarded) before 1, 3, ... (kept).

    ``W[discarded_first(m)]`` is the unitary W with its output basis in the bit
    order (p0, p2, ..., p1, p3, ...), so the pooled wires' partial trace is a
    plain block diagonal sum.
    """
    order = list(range(0, m, 2)) + list(range(1, m, 2))
    return [sum(((i >> (m - 1 - t)) & 1) << (m - 1 - pos) for t, pos in enumerate(order)) for i in range(2**m)]


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kronecker product of two matrices as one broadcast product (torch.kron costs several ops)."""
    (ra, ca), (rb, cb) = a.shape, b.shape
    return (a.reshape(ra, 1, ca, 1) * b.reshape(1, rb, 1, cb)).reshape(ra * rb, ca * cb)


def block_kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(k, ra, ca) x (k, rb, cb) -> (k, ra rb, ca cb): Kronecker products level by level."""
    (k, ra, ca), (rb, cb) = a.shape, b.shape[1:]
    return (a.reshape(k, ra, 1, ca, 1) * b.reshape(k, 1, rb, 1, cb)).reshape(k, ra * rb, ca * cb)


def identity_around(u: torch.Tensor) -> torch.Tensor:
    """(k, 4, 4) -> (k, 16, 16): I x U x I on 4 wires (U on the middle two), in one broadcast product."""
    deltas = cached(("identity around", u.dtype),  # [a, c, a', c'] = delta(a, a') delta(c, c')
                    lambda: (torch.eye(2)[:, None, :, None] * torch.eye(2)[None, :, None, :]).to(u.dtype))
    # axes (level, a, b, c, a', b', c')
    return (u.reshape(-1, 1, 4, 1, 1, 4, 1) * deltas.reshape(1, 2, 1, 2, 2, 1, 2)).reshape(-1, 16, 16)


def kron_all(mats: list[torch.Tensor]) -> torch.Tensor:
    """Kronecker product of square matrices, the first on the most significant bits."""
    out = mats[0]
    for mat in mats[1:]:
        out = kron(out, mat)
    return out


def level_unitary(u_conv: torch.Tensor, u_pool: torch.Tensor, m: int) -> torch.Tensor:
    """(2**m, 2**m) unitary of one convolution + pooling level on m active wires (positions 0..m-1).

    Pooling x odd convolution pairs x even convolution pairs, each a Kronecker
    product of the shared 4x4 blocks (identity on the odd layer's end wires).
    """
    even = kron_all([u_conv] * (m // 2))
    pool = kron_all([u_pool] * (m // 2))
    if m == 2:
        return pool @ even
    eye2 = cached(("eye2", u_conv.dtype), lambda: torch.eye(2, dtype=u_conv.dtype))
    odd = kron_all([eye2] + [u_conv] * (m // 2 - 1) + [eye2])
    return pool @ odd @ even
