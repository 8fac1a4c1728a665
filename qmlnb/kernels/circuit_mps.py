"""The MPS of any circuit whose two-qubit gates act on neighbouring wires, for all samples at once, by SVD.

Gates are grouped into *blocks*: consecutive gates inside one pair of
neighbouring wires (``CX P CX`` on (k, k+1) is one block) and runs of
one-qubit gates on one wire.  A one-qubit block is contracted into its site
tensor (a unitary on the physical index keeps the canonical form).  A
two-qubit block is applied the textbook way, batched over the N samples: the
orthogonality centre is moved to site k by QR, the two sites are merged with
the block's (N, 4, 4) unitary into a (N, 2 chi_l, 2 chi_r) matrix, and its SVD
splits them again.  With the centre there, the singular values are the Schmidt
coefficients of the state across bond k, so

- **exact** (default): every singular value above ``EXACT_RELATIVE`` times the
  largest is kept: the bond grows as the circuit needs, up to ``2**min(k+1,
  n-k-1)``.  Before any work, :func:`check_mps_circuit` bounds each bond by the
  product of its blocks' operator Schmidt ranks (measured on random features)
  and refuses a bound above ``max_bond``;
- **truncated** (``truncate=True``): at most ``max_bond`` values are kept and
  those below ``cutoff`` times the largest are dropped; the dropped squared
  singular values (the discarded weight, exact in canonical form) are summed
  per sample and the state renormalised.

Samples share one bond dimension per bond (the largest any sample needs;
the others are padded with zero singular values, which keeps them exact), and
the result is an ``MPSStates`` with one padded bond dimension, the type
``gram`` contracts on the cpu, numba and openmp backends.
"""
from __future__ import annotations

import numpy as np

from .circuit import Circuit
from .gate_matrices import I2, SWAP, one_qubit_matrices, two_qubit_matrices
from .mps import MPSStates
from .validation import check_fits_in_memory

# singular values below this fraction of the largest are numerically zero: dropping them keeps the MPS exact
# to ~1e-10 in the amplitudes (complex64 states carry ~1e-7)
EXACT_RELATIVE = 1e-10
def blocks(circuit: Circuit) -> list[tuple[tuple, list]]:
    """The gates grouped as ``(wires, gates)``: one-qubit runs ``((w,), ...)`` and neighbour-pair blocks ``((k, k+1), ...)``.

    Raises ValueError naming the first two-qubit gate on wires that are not neighbours.
    """
    out: list[tuple[tuple, list]] = []
    for g in circuit.gates:
        if not g.wires:  # a global phase: a one-qubit factor on wire 0
            out.append(((0,), [g]))
        elif len(g.wires) == 2:
            a, b = g.wires
            if abs(a - b) != 1:
                raise ValueError(f"gate {g.name} on wires {g.wires} acts on wires that are not neighbours: the MPS "
                                 "path needs every two-qubit gate on wires k and k+1 (reorder the wires, or use "
                                 "states() for state vectors)")
            pair = (min(a, b), max(a, b))
            if out and out[-1][0] == pair:
                out[-1][1].append(g)
            else:
                out.append((pair, [g]))
        elif out and g.wires[0] in out[-1][0]:
            out[-1][1].append(g)  # joins the open block (a pair containing its wire, or its own wire's run)
        else:
            out.append((g.wires, [g]))
    return out


def block_matrices(wires: tuple, gates: list, X: np.ndarray, theta: dict) -> np.ndarray:
    """(N or 1, 2, 2) or (N or 1, 4, 4) complex128 unitary of one block for the (N, n_features) features X."""
    def angles(g):
        return [np.broadcast_to(np.asarray(a.evaluate(X, theta), dtype=np.float64), (X.shape[0],))
                for a in g.angles]

    out = None
    for g in gates:
        if len(wires) == 1:
            m = one_qubit_matrices(g.name, angles(g))
        elif len(g.wires) == 1:
            u = one_qubit_matrices(g.name, angles(g))
            m = np.einsum("nab,cd->nacbd", u, I2) if g.wires[0] == wires[0] else np.einsum("ab,ncd->nacbd", I2, u)
            m = m.reshape(-1, 4, 4)
        else:
            m = two_qubit_matrices(g.name, angles(g))
            if g.wires[0] > g.wires[1]:
                m = SWAP @ m @ SWAP  # the gate's first wire is the pair's second
        out = m if out is None else m @ out
    return out


def operator_schmidt_rank(m: np.ndarray, tol: float = 1e-9) -> int:
    """Largest operator Schmidt rank across the (N, 4, 4) two-qubit unitaries m (1, 2 or 4 for gates)."""
    realigned = m.reshape(-1, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4, 4)
    s = np.linalg.svd(realigned, compute_uv=False)
    return int((s > tol * s[:, :1]).sum(axis=1).max())


def bond_bounds(circuit: Circuit, seed: int = 0) -> np.ndarray:
    """(n-1,) int: an upper bound of each bond's dimension after the circuit.

    The product of the operator Schmidt ranks of the two-qubit blocks on that
    bond (each measured on 4 random feature rows in [-pi, pi]: the generic
    rank), capped by ``2**min(k+1, n-k-1)``.
    """
    n = circuit.n_qubits
    X = np.random.default_rng(seed).uniform(-np.pi, np.pi, size=(4, circuit.n_features))
    log2 = np.zeros(max(n - 1, 0))
    for wires, gates in blocks(circuit):
        if len(wires) == 2:
            log2[wires[0]] += np.log2(operator_schmidt_rank(block_matrices(wires, gates, X, circuit.theta_dict)))
    cap = np.minimum(np.arange(1, n), np.arange(n - 1, 0, -1))
    return np.round(2.0 ** np.minimum(log2, cap)).astype(np.int64)


def check_mps_circuit(circuit: Circuit, max_bond: int, truncate: bool) -> int:
    """The padded bond dimension ``circuit_mps`` will use at most; ValueError if the circuit has no MPS path.

    Refuses two-qubit gates on non-neighbouring wires and, when exact
    (``truncate`` False), a bond bound above ``max_bond``.
    """
    bounds = bond_bounds(circuit)
    chi = int(bounds.max()) if bounds.size else 1
    if chi > max_bond and not truncate:
        k = int(np.argmax(bounds))
        raise ValueError(f"the exact MPS of {circuit.name} may need bond dimension {chi} (bond {k}-{k + 1}) > "
                         f"max_bond={max_bond}; raise max_bond, or pass truncate=True (with max_bond and/or "
                         "cutoff) for an approximate MPS that records its discarded weight")
    return min(chi, max_bond)


def mps_work_bytes(n_samples: int, n_qubits: int, chi: int) -> int:
    """Upper bound of ``circuit_mps``'s memory: complex128 sites, one merged pair with its SVD, the result."""
    sites = n_samples * n_qubits * 2 * chi * chi * 16
    merged = n_samples * (2 * chi) ** 2 * 16 * 4
    return sites + merged + n_samples * n_qubits * 2 * chi * chi * 8


def circuit_mps(circuit: Circuit, X: np.ndarray, *, max_bond: int, cutoff: float = 0.0,
                truncate: bool = False) -> tuple[MPSStates, np.ndarray]:
    """MPS of every row of the (N, n_features) float64 features X (already scaled), and the (N,) discarded weight.

    Returns ``MPSStates`` (tensors (N, n, 2, chi, chi) complex64, chi the
    largest bond any bond needed) and the per-sample sum of discarded squared
    singular values (0 for the exact MPS).  Raises ValueError
    (:func:`check_mps_circuit`) or ``InsufficientMemoryError`` before any work.
    """
    n, n_samples = circuit.n_qubits, X.shape[0]
    chi_bound = check_mps_circuit(circuit, max_bond, truncate)
    check_fits_in_memory(mps_work_bytes(n_samples, n, chi_bound),
                         f"the MPS of {n_samples} samples on {n} qubits ({circuit.name}, bond <= {chi_bound})")
    theta = circuit.theta_dict
    sites = [np.zeros((n_samples, 1, 2, 1), dtype=np.complex128) for _ in range(n)]
    for a in sites:
        a[:, 0, 0, 0] = 1.0
    discarded = np.zeros(n_samples)
    centre = 0
    relative = max(cutoff, EXACT_RELATIVE) if truncate else EXACT_RELATIVE
    for wires, gates in blocks(circuit):
        u = block_matrices(wires, gates, X, theta)
        if len(wires) == 1:
            w = wires[0]
            sites[w] = np.einsum("nst,nltr->nlsr", np.broadcast_to(u, (n_samples, 2, 2)), sites[w])
            continue
        k = wires[0]
        centre = _move_centre(sites, centre, k)
        left, right = sites[k], sites[k + 1]
        chi_l, chi_r = left.shape[1], right.shape[3]
        pair = np.einsum("nlsm,nmtr->nlstr", left, right).reshape(n_samples, chi_l, 4, chi_r)
        pair = np.einsum("nab,nlbr->nlar", np.broadcast_to(u, (n_samples, 4, 4)), pair)
        U, S, Vh = np.linalg.svd(pair.reshape(n_samples, 2 * chi_l, 2 * chi_r), full_matrices=False)
        keep = S > relative * S[:, :1]
        chi = int(keep.sum(axis=1).max())
        if truncate:
            chi = min(chi, max_bond)
            keep[:, chi:] = False
        kept = np.where(keep[:, :chi], S[:, :chi], 0.0)
        total = (S**2).sum(axis=1)
        discarded += (total - (kept**2).sum(axis=1)) / total
        kept /= np.sqrt((kept**2).sum(axis=1, keepdims=True))  # renormalise (a no-op when exact)
        sites[k] = U[:, :, :chi].reshape(n_samples, chi_l, 2, chi)
        sites[k + 1] = (kept[:, :, None] * Vh[:, :chi, :]).reshape(n_samples, chi, 2, chi_r)
        centre = k + 1
    chi = max(max(a.shape[1], a.shape[3]) for a in sites)
    tensors = np.zeros((n_samples, n, 2, chi, chi), dtype=np.complex64)
    for k, a in enumerate(sites):
        tensors[:, k, :, :a.shape[1], :a.shape[3]] = a.transpose(0, 2, 1, 3)
    return MPSStates(tensors), (discarded if truncate else np.zeros(n_samples))


def _move_centre(sites: list, centre: int, target: int) -> int:
    """Move the orthogonality centre from ``centre`` to ``target`` by batched QR; returns ``target``."""
    n_samples = sites[0].shape[0]
    for j in range(centre, target):  # rightwards: A_j = Q (left-canonical), R into A_j+1
        chi_l, chi_r = sites[j].shape[1], sites[j].shape[3]
        q, r = np.linalg.qr(sites[j].reshape(n_samples, 2 * chi_l, chi_r))
        sites[j] = q.reshape(n_samples, chi_l, 2, q.shape[2])
        sites[j + 1] = np.einsum("nmr,nrsq->nmsq", r, sites[j + 1])
    for j in range(centre, target, -1):  # leftwards: A_j = R^H Q^H, Q^H right-canonical, R^H into A_j-1
        chi_l, chi_r = sites[j].shape[1], sites[j].shape[3]
        q, r = np.linalg.qr(sites[j].reshape(n_samples, chi_l, 2 * chi_r).conj().transpose(0, 2, 1))
        sites[j] = q.conj().transpose(0, 2, 1).reshape(n_samples, q.shape[2], 2, chi_r)
        sites[j - 1] = np.einsum("nlsr,nrm->nlsm", sites[j - 1], r.conj().transpose(0, 2, 1))
    return target
