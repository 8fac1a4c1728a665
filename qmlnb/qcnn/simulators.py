"""Two simulators of the QCNN circuit of :mod:`qmlnb.qcnn.circuit`, with the same parameters.

Both register exactly two parameters, ``conv`` (L, 6) and ``pool`` (L, 2),
L = log2(n_qubits), so a ``state_dict`` of one loads into the other:

* :class:`TorchQCNN` (``simulator="torch"``) -- a batched simulator in plain
  torch: the first level on ``(B, 2**n)`` complex state vectors (the ``(4, 4)``
  blocks of all levels built from the parameters once per forward pass, as one
  real matrix product of cos/sin monomials with a constant basis, and applied
  to all samples by a few matrix products on pair states and 4-wire blocks);
  the later levels and the readout folded into one observable on the wires the
  first level keeps (Heisenberg picture).  Full autograd (nothing is detached
  or converted to NumPy).
* :func:`pennylane_qcnn` (``simulator="pennylane"``) -- the same circuit as a
  PennyLane QNode on ``default.qubit`` with ``diff_method="backprop"``, wrapped
  in ``qml.qnn.TorchLayer``: the reference the fast simulator is tested against.

:func:`make_quantum_layer` builds either by name; :data:`SIMULATORS` names them.
"""
from __future__ import annotations

import torch
from torch import nn

from .._util import check_option
from .circuit import (block_kron, cached, check_n_qubits, complex_dtype, conv_matrices, discarded_first,
                      half_angle_cos_sin, identity_around, init_weights, kron, level_unitary, levels, n_levels,
                      pool_matrices, readout_wire)


# ---------------------------------------------------------------- gate-by-gate state vectors
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


# ---------------------------------------------------------------- fast simulator
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


def check_simulator(simulator) -> str:
    """``simulator`` if it names one of :data:`SIMULATORS`, else a ValueError listing them."""
    return check_option(simulator, "simulator", SIMULATORS)


def make_quantum_layer(n_qubits: int, simulator: str = "torch",
                       weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The QCNN circuit module for ``simulator`` ("torch" or "pennylane")."""
    return SIMULATORS[check_simulator(simulator)](n_qubits, weights)
