"""The SVD-built MPS of nearest-neighbour circuits: exact against state vectors, gram on it, truncation, guards."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.kernels import Circuit, CircuitFeatureMap, MPSStates, TruncationWarning, available_backends, gram
from qmlnb.kernels.circuit import pi, x, zz_circuit
from qmlnb.kernels.circuit_mps import bond_bounds

MPS_BACKENDS = [name for name in ("cpu", "numba", "openmp") if available_backends()[name][0]]


def features(n, columns, seed=0):
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, columns))


def pauli_linear(n, reps=2):
    """PauliFeatureMap(["Z", "XX", "YY", "ZZ", "XY"]) with linear entanglement, term by term as Qiskit orders it."""
    gates = []
    for _ in range(reps):
        gates += [("h", k) for k in range(n)] + [("p", k, 2 * x[k]) for k in range(n)]
        pairs = [(k, k + 1, 2 * (pi - x[k]) * (pi - x[k + 1])) for k in range(n - 1)]
        gates += [("rxx", (k, j), angle) for k, j, angle in pairs]
        gates += [("ryy", (k, j), angle) for k, j, angle in pairs]
        gates += [("rzz", (k, j), angle) for k, j, angle in pairs]
        for k, j, angle in pairs:  # XY: basis changes, CX P CX, and back
            gates += [("h", k), ("sdg", j), ("h", j), ("cx", (k, j)), ("p", j, angle), ("cx", (k, j)), ("h", k),
                      ("h", j), ("s", j)]
    return Circuit(n, gates, name="pauli-linear")


def mixed(n):
    """Every two-qubit gate kind, both wire orders, and one-qubit gates between them."""
    gates = [("ry", k, x[k]) for k in range(n)]
    kinds = ["cx", "cz", "swap", "crz", "cp", "rxx", "ryy", "rzz", "rzx"]
    for k in range(n - 1):
        name = kinds[k % len(kinds)]
        pair = (k, k + 1) if k % 2 == 0 else (k + 1, k)
        angles = () if name in ("cx", "cz", "swap") else (x[k] * x[k + 1],)
        gates += [(name, pair, *angles), ("u3", k, x[k], 0.3, x[k + 1]), ("sx", k + 1)]
    return Circuit(n, gates + [("rx", k, 2 * x[k]) for k in range(n)] + [("rzx", (1, 0), x[0])], name="mixed")


@pytest.mark.parametrize("circuit", [zz_circuit(6, 3), pauli_linear(6), pauli_linear(8, reps=1), mixed(7),
                                     mixed(12)], ids=lambda c: f"{c.name}-{c.n_qubits}")
def test_exact_mps_equals_the_state_vector(circuit):
    fm = CircuitFeatureMap(circuit, bandwidth=0.7)
    X = features(5, circuit.n_features, seed=circuit.n_qubits)
    M = fm.mps(X)
    assert isinstance(M, MPSStates) and M.tensors.dtype == np.complex64
    np.testing.assert_allclose(M.to_dense(), fm.states(X), atol=1e-5)
    assert M.bond_dim <= bond_bounds(circuit).max()


def test_exact_mps_at_16_qubits_and_bond_above_4():
    fm = CircuitFeatureMap(pauli_linear(16, reps=1))
    X = features(3, 16, seed=1)
    M = fm.mps(X)
    assert M.bond_dim > 4
    np.testing.assert_allclose(M.to_dense(), fm.states(X), atol=1e-5)


@pytest.mark.parametrize("backend", MPS_BACKENDS)
def test_gram_on_the_circuit_mps_runs_unchanged(backend):
    fm = CircuitFeatureMap(pauli_linear(8))
    X, Y = features(6, 8, seed=2), features(4, 8, seed=3)
    M, N = fm.mps(X), fm.mps(Y)
    assert M.bond_dim > 4
    S, T = fm.states(X), fm.states(Y)
    np.testing.assert_allclose(gram(M, backend=backend), gram(S), atol=1e-5)
    np.testing.assert_allclose(gram(M, N, backend=backend), gram(S, T), atol=1e-5)


def test_truncation_records_discarded_weight_and_warns():
    exact = CircuitFeatureMap(pauli_linear(8))
    cut = CircuitFeatureMap(pauli_linear(8), max_bond=4, truncate=True)
    X = features(6, 8, seed=4)
    with pytest.warns(TruncationWarning, match="discarded weight up to"):
        M = cut.mps(X)
    assert M.bond_dim <= 4
    _, discarded = cut.mps_with_discarded(X)
    assert discarded.shape == (6,) and (discarded >= 0).all() and discarded.max() > 1e-3
    np.testing.assert_allclose(M.norms(), 1.0, atol=1e-5)
    # the kernel is approximate, and closer for a smaller discarded weight
    error = np.abs(gram(M) - gram(exact.states(X))).max()
    assert 1e-6 < error < 1.0
    _, none = exact.mps_with_discarded(X)
    assert (none == 0).all()
    # a cutoff alone also truncates
    with pytest.warns(TruncationWarning):
        CircuitFeatureMap(pauli_linear(8), truncate=True, cutoff=0.2).mps(X)


def test_max_bond_guard_refuses_before_work_and_other_errors():
    fm = CircuitFeatureMap(pauli_linear(10), max_bond=8)
    with pytest.raises(ValueError, match="may need bond dimension .* > max_bond=8"):
        fm.mps(features(2, 10))
    assert not fm.has_mps()
    ring = Circuit(3, [("cx", (0, 2))])
    with pytest.raises(ValueError, match=r"cx on wires \(0, 2\) acts on wires that are not neighbours"):
        CircuitFeatureMap(ring).mps(features(2, 1))
    with pytest.raises(ValueError, match="max_bond"):
        CircuitFeatureMap(ring, max_bond=0)


def test_bond_bounds_are_the_operator_schmidt_ranks():
    # CX P CX is diagonal with operator Schmidt rank 2: linear ZZ with r reps has bond 2**r
    assert list(bond_bounds(zz_circuit(6, 2))) == [2, 4, 4, 4, 2]
    assert list(bond_bounds(Circuit(4, [("swap", (1, 2))]))) == [1, 4, 1]
    M = CircuitFeatureMap(zz_circuit(6, 2)).mps(features(3, 6))
    assert M.bond_dim == 4


def test_mps_at_50_qubits_without_a_state_vector():
    fm = CircuitFeatureMap(pauli_linear(50, reps=1))
    X = features(3, 50, seed=6)
    M = fm.mps(X)
    assert M.n_qubits == 50
    np.testing.assert_allclose(M.norms(), 1.0, atol=1e-4)
    K = gram(M)
    np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-4)
    assert fm.resolve_method(3) == "mps"
