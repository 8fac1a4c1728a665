"""The QCNN circuit of the hybrid model and its two simulators.

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
``(log2 n, 2)``.  Both simulators register exactly these two parameters under
these names, so a ``state_dict`` of one loads into the other:

* :class:`TorchQCNN` -- a batched simulator in plain torch: the first level
  on ``(B, 2**n)`` complex state vectors (the ``(4, 4)`` blocks of all levels
  built from the parameters once per forward pass, as one real matrix product
  of cos/sin monomials with a constant basis, and applied to all samples by
  a few matrix products on pair states and 4-wire blocks); the later
  levels and the readout folded into one observable on the wires the first
  level keeps (Heisenberg picture).  Full autograd (nothing is detached or
  converted to NumPy).
* :func:`pennylane_qcnn` -- the same circuit as a PennyLane QNode on
  ``default.qubit`` with ``diff_method="backprop"``, wrapped in
  ``qml.qnn.TorchLayer``: the reference the fast simulator is tested against.
"""
from __future__ import annotations

import math

import torch
from torch import nn

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


def rotation_matrices(theta: torch.Tensor, paulis: str) -> torch.Tensor:
    """(L, k) angles -> (L, k, 2, 2) complex rotations exp(-i theta_j P_j / 2), P_j = paulis[j]."""
    cdt = complex_dtype(theta.dtype)
    gens = torch.tensor([MINUS_I_PAULI[p] for p in paulis], dtype=cdt)
    half = theta[..., None, None] / 2
    return torch.cos(half) * torch.eye(2, dtype=cdt) + torch.sin(half) * gens


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


def block_matrices(theta: torch.Tensor, kind: str) -> torch.Tensor:
    """(L, k) angles -> (L, 4, 4) complex ``kind`` blocks ("conv": (L, 6), "pool": (L, 2))."""
    k = theta.shape[-1]
    shift = cached(("half-angle shift", theta.dtype),
                   lambda: torch.tensor([0.0, math.pi / 2], dtype=theta.dtype))
    # cos(t - pi/2) = sin(t): (L, k, 2) = cos(theta/2), sin(theta/2) in one cos
    cos_sin = torch.cos(theta[..., None] * 0.5 - shift)
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


# ---------------------------------------------------------------- fast simulator
def encode(angles: torch.Tensor) -> torch.Tensor:
    """(B, n) real angles -> (B, 2**n) complex product state of RY(angle_i)|0> per wire.

    Wire 0 is the most significant bit (PennyLane's order).
    """
    amp = torch.stack([torch.cos(angles / 2), torch.sin(angles / 2)], dim=-1)  # (B, n, 2)
    state = amp[:, 0]
    for wire in range(1, angles.shape[1]):
        state = (state[:, :, None] * amp[:, wire, None, :]).reshape(angles.shape[0], -1)
    return state.to(complex_dtype(angles.dtype))


def apply_two_qubit(state: torch.Tensor, gate: torch.Tensor, a: int, b: int, n_qubits: int) -> torch.Tensor:
    """Apply a (4, 4) gate on wires (a, b), a < b its more significant bit, to (B, 2**n) states.

    The state is viewed as (B * 2**a, 2, 2**(b-a-1), 2, 2**(n-b-1)) and
    contracted with the gate as a (2, 2, 2, 2) tensor: one einsum, no Python
    loop over samples.
    """
    psi = state.reshape(-1, 2, 2 ** (b - a - 1), 2, 2 ** (n_qubits - b - 1))
    out = torch.einsum("ijkl,xkylz->xiyjz", gate.reshape(2, 2, 2, 2), psi)
    return out.reshape(state.shape)


def expval_z(state: torch.Tensor, wire: int, n_qubits: int) -> torch.Tensor:
    """(B, 2**n) complex states -> (B,) real <Z> of ``wire``."""
    probs = (state.real**2 + state.imag**2).reshape(state.shape[0], 2**wire, 2, -1)
    per_value = probs.sum(dim=(1, 3))  # (B, 2): P(wire = 0), P(wire = 1)
    return per_value[:, 0] - per_value[:, 1]


def half_angle_cos_sin(theta: torch.Tensor) -> torch.Tensor:
    """(..., k) angles -> (..., k, 2): cos(theta/2), sin(theta/2) in one cos (cos(t - pi/2) = sin t)."""
    shift = cached(("half-angle shift", theta.dtype), lambda: torch.tensor([0.0, math.pi / 2], dtype=theta.dtype))
    return torch.cos(theta[..., None] * 0.5 - shift)


def encode_and_convolve_pairs(angles: torch.Tensor, u_conv: torch.Tensor) -> torch.Tensor:
    """RY encoding and the first convolution's even pairs, as one (B, 2**n) state.

    On a product state the gates on the disjoint pairs (0, 1), (2, 3), ... act
    on (B, n/2, 4) pair states separately (one batched matmul); the pair states
    are then multiplied out into the full state vector.
    """
    batch, n = angles.shape
    amp = half_angle_cos_sin(angles)  # (B, n, 2) real
    pairs = (amp[:, 0::2, :, None] * amp[:, 1::2, None, :]).reshape(batch, n // 2, 4)
    pairs = pairs.to(u_conv.dtype) @ u_conv.T
    state = pairs[:, 0]
    for k in range(1, n // 2):
        state = (state[:, :, None] * pairs[:, k, None, :]).reshape(batch, -1)
    return state


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


class TorchQCNN(nn.Module):
    """The QCNN circuit simulated in batches with torch, full autograd.

    forward: (B, n_qubits) angles, float32 or float64 -> (B,) <Z> of the last
    wire, same dtype.  Parameters ``conv`` (L, 6) and ``pool`` (L, 2), L = log2(n).

    The first level runs on (B, 2**n) complex state vectors.  After its pooling
    the discarded wires are never touched again, so the later levels and the
    readout act on the kept wires only: they are folded, in the Heisenberg
    picture, into one observable O on those n/2 wires (built from the gate
    matrices, independent of the batch), and <Z> = <psi| I (x) O |psi>.  The
    result is exact; :meth:`forward_statevector` is the plain gate-by-gate
    state-vector simulation it is tested against.
    """

    def __init__(self, n_qubits: int, weights: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.n_qubits = check_n_qubits(n_qubits)
        self.levels = levels(n_qubits)
        self.wire = readout_wire(n_qubits)
        weights = weights if weights is not None else init_weights(n_qubits)
        self.conv = nn.Parameter(weights["conv"].clone())
        self.pool = nn.Parameter(weights["pool"].clone())
        self.reorder = {m: torch.tensor(discarded_first(m)) for m in (2 ** k for k in range(1, n_levels(n_qubits)))}
        # level 0's state as (B, wire 0, ..., wire n-1) -> (B, discarded wires 0, 2, ..., kept wires 1, 3, ...)
        self.discarded_first_axes = [0] + list(range(1, n_qubits + 1, 2)) + list(range(2, n_qubits + 1, 2))

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        n, batch = self.n_qubits, angles.shape[0]
        conv, pool = conv_matrices(self.conv.to(angles.dtype)), pool_matrices(self.pool.to(angles.dtype))
        # unbind, not indexing level by level: one autograd node instead of one per level
        u_conv, u_pool = conv.unbind(0), pool.unbind(0)
        u0, p0 = u_conv[0], u_pool[0]
        blocks = None
        if n >= 4:
            # levels 0 .. L-2 act on >= 4 wires: their 4-wire blocks
            # I x U x I (odd pairs) and kron(P, P) (I x U x I) all at once
            k = len(self.levels) - 1
            odd_blocks = identity_around(conv[:k])
            blocks = (block_kron(pool[:k], pool[:k]) @ odd_blocks).unbind(0)
        # level 0.  RY encoding and the even convolution pairs (0, 1), (2, 3), ...
        # on (B, n/2, 4) pair states (a product state: one batched matmul)
        amp = half_angle_cos_sin(angles)  # (B, n, 2) real
        pairs = (amp[:, 0::2, :, None] * amp[:, 1::2, None, :]).reshape(batch, n // 2, 4)
        pairs = pairs.to(u0.dtype) @ u0.T
        if n == 2:
            state = pairs[:, 0] @ p0.T
        else:
            odd = odd_blocks[0]  # I x U x I on 4 wires
            # the odd pairs that cross from one 4-wire block to the next, (3, 4),
            # (7, 8), ..., act on the pair states (2k+1, 2k+2) alone: apply them
            # there, on (B, n/4 - 1, 16) states (one matmul), before the
            # product state is multiplied out
            factors = list(pairs.unbind(1))
            if n >= 8:
                inner = pairs[:, 1:-1].reshape(batch, n // 4 - 1, 2, 4)
                crossed = (inner[:, :, 0, :, None] * inner[:, :, 1, None, :]).reshape(batch, n // 4 - 1, 16)
                crossed = crossed @ odd.T
                factors = [factors[0], *crossed.unbind(1), factors[-1]]
            state = factors[0]
            for factor in factors[1:]:
                state = (state[:, :, None] * factor[:, None, :]).reshape(batch, -1)
            # the other odd pairs and the pooling: on each 4-wire block one 16x16
            # matrix, kron(P, P) (I x U x I), applied by one matrix product
            inside = blocks[0]
            for k in range(n // 4 - 1):
                view = state.reshape(-1, 16, 2 ** (n - 4 * (k + 1)))
                state = (inside @ view).reshape(batch, -1)
            state = (state.reshape(-1, 16) @ inside.T).reshape(batch, -1)  # the last block: lowest bits
        # <Z> = <psi| I_discarded (x) O |psi>, with the discarded wires of level 0
        # first: psi as (B, D, K), <Z> = sum_d psi_d^H O psi_d
        psi = state.reshape((-1,) + (2,) * n).permute(self.discarded_first_axes)
        psi = psi.reshape(-1, 2 ** (n // 2), 2 ** (n // 2))
        obs = self.observable(u_conv, u_pool, blocks)
        # Re(conj(a) b) = Re a Re b + Im a Im b: a real product, no conjugate copies in backward
        return (torch.view_as_real(psi) * torch.view_as_real(psi @ obs.T)).sum(dim=(1, 2, 3))

    def observable(self, u_conv, u_pool, blocks=None) -> torch.Tensor:
        """(2**(n/2), 2**(n/2)) Hermitian observable on the wires kept by level 0.

        u_conv, u_pool : the (4, 4) blocks of every level (an (L, 4, 4) tensor or a sequence).
        blocks : optional, per level l < L-1 the (16, 16) kron(P_l, P_l) (I x U_l x I),
        reused for the level on 4 wires.

        Levels 1, 2, ... and the final <Z> in the Heisenberg picture: for a level
        with unitary W on m active wires (output basis ordered discarded-first,
        see :func:`discarded_first`), Tr(tr_d(W rho W^H) O) = Tr(rho W^H (I (x) O) W).
        Built from the gate matrices alone, once per forward pass, so no batch
        of density matrices is ever formed.
        """
        cdt = u_conv[0].dtype
        obs = cached(("Z", cdt), lambda: torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=cdt))
        m = 2
        for level in range(len(self.levels) - 1, 0, -1):
            if m == 4 and blocks is not None:
                w = blocks[level] @ kron(u_conv[level], u_conv[level])
            else:
                w = level_unitary(u_conv[level], u_pool[level], m)
            if m > 2:  # for m = 2 the order is already discarded-first
                w = w[self.reorder[m]]
            half = 2 ** (m // 2)
            # (I (x) O) W: O on the kept (low) bits of every discarded value's block of rows
            lifted = (obs @ w.reshape(half, half, 2**m)).reshape(2**m, 2**m)
            obs = w.conj().T @ lifted
            m *= 2
        return obs

    def forward_statevector(self, angles: torch.Tensor) -> torch.Tensor:
        """The same circuit gate by gate on (B, 2**n) state vectors: (B, n) angles -> (B,) <Z>."""
        n = self.n_qubits
        u_conv = conv_matrices(self.conv.to(angles.dtype))
        u_pool = pool_matrices(self.pool.to(angles.dtype))
        state = encode(angles)
        for level, (conv_pairs, pool_pairs) in enumerate(self.levels):
            for a, b in conv_pairs:
                state = apply_two_qubit(state, u_conv[level], a, b, n)
            for a, b in pool_pairs:
                state = apply_two_qubit(state, u_pool[level], a, b, n)
        return expval_z(state, self.wire, n)


# ---------------------------------------------------------------- PennyLane reference
def pennylane_circuit(n_qubits: int):
    """The circuit as a function ``(inputs, conv, pool) -> qml.expval`` for a QNode."""
    import pennylane as qml

    wires = list(range(check_n_qubits(n_qubits)))
    lev = levels(n_qubits)
    out_wire = readout_wire(n_qubits)

    def conv_block(w, a, b):
        qml.RZ(w[0], wires=a)
        qml.RZ(w[1], wires=b)
        qml.RY(w[2], wires=a)
        qml.RY(w[3], wires=b)
        qml.CNOT(wires=[a, b])
        qml.RY(w[4], wires=a)
        qml.RY(w[5], wires=b)
        qml.CNOT(wires=[b, a])

    def pool_block(w, discarded, kept):
        qml.CRY(w[0], wires=[discarded, kept])
        qml.PauliX(wires=discarded)
        qml.CRX(w[1], wires=[discarded, kept])
        qml.PauliX(wires=discarded)

    def circuit(inputs, conv, pool):
        qml.AngleEmbedding(inputs, wires=wires, rotation="Y")
        for level, (conv_pairs, pool_pairs) in enumerate(lev):
            for a, b in conv_pairs:
                conv_block(conv[level], a, b)
            for a, b in pool_pairs:
                pool_block(pool[level], a, b)
        return qml.expval(qml.PauliZ(out_wire))

    return circuit


def pennylane_qcnn(n_qubits: int, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The QCNN circuit as ``qml.qnn.TorchLayer`` (default.qubit, backprop).

    Same parameter names as :class:`TorchQCNN` (``conv``, ``pool``; TorchLayer
    registers them at its top level), so state_dicts are interchangeable.
    forward: (B, n_qubits) angles -> (B,) <Z> of the last wire.
    """
    import pennylane as qml

    weights = weights if weights is not None else init_weights(n_qubits)
    device = qml.device("default.qubit", wires=check_n_qubits(n_qubits))
    qnode = qml.QNode(pennylane_circuit(n_qubits), device, interface="torch", diff_method="backprop")
    layer = qml.qnn.TorchLayer(qnode, {name: tuple(value.shape) for name, value in weights.items()})
    with torch.no_grad():
        for name, value in weights.items():
            # .data, not copy_: keep the dtype of the given weights (float64 in tests)
            getattr(layer, name).data = value.detach().clone()
    return layer


SIMULATORS = {"torch": TorchQCNN, "pennylane": pennylane_qcnn}


def make_quantum_layer(n_qubits: int, simulator: str = "torch",
                       weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The QCNN circuit module for ``simulator`` ("torch" or "pennylane")."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {tuple(SIMULATORS)}, got {simulator!r}")
    return SIMULATORS[simulator](n_qubits, weights)
