"""FeatureMap states against PennyLane default.qubit and closed forms."""
import numpy as np
import pennylane as qml
import pytest

from qmlnb.kernels import FeatureMap, InsufficientMemoryError
from qmlnb.kernels.feature_map import entangled_pairs


def reference_states(fm, X):
    qnode = fm.qnode()
    return np.array([qnode(x) for x in X])


@pytest.mark.parametrize("entanglement", ["linear", "circular", "full"])
@pytest.mark.parametrize("reps", [1, 2])
@pytest.mark.parametrize("n_qubits", [2, 3, 5])
def test_zz_states_equal_pennylane(entanglement, reps, n_qubits):
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=0.7, kind="zz")
    X = np.random.default_rng(n_qubits).uniform(-np.pi, np.pi, (4, n_qubits))
    S = fm.states(X)
    assert S.dtype == np.complex64 and S.shape == (4, 2**n_qubits) and S.flags.c_contiguous
    np.testing.assert_allclose(S, reference_states(fm, X), atol=1e-6)


@pytest.mark.parametrize("n_qubits,reps", [(1, 1), (3, 2), (4, 3), (6, 2)])
def test_iqp_states_equal_pennylane_iqp_embedding(n_qubits, reps):
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, bandwidth=1.3, kind="iqp")
    X = np.random.default_rng(0).uniform(-1, 1, (3, n_qubits))

    @qml.qnode(qml.device("default.qubit", wires=n_qubits))
    def iqp(x):
        qml.IQPEmbedding(x * 1.3, wires=range(n_qubits), n_repeats=reps)
        return qml.state()

    np.testing.assert_allclose(fm.states(X), np.array([iqp(x) for x in X]), atol=1e-6)


def test_zz_circuit_is_the_gate_sequence_of_the_design():
    """The reference circuit itself follows DESIGN.md: H, P(2x), CNOT-P-CNOT per pair."""
    fm = FeatureMap(n_qubits=3, reps=1, entanglement="circular")
    ops = qml.tape.make_qscript(fm.circuit)([0.1, 0.2, 0.3]).operations
    names = [op.name for op in ops]
    assert names[:6] == ["Hadamard", "PhaseShift"] * 3
    assert names[6:] == ["CNOT", "PhaseShift", "CNOT"] * 3
    np.testing.assert_allclose(ops[7].parameters[0], 2 * (np.pi - 0.1) * (np.pi - 0.2))
    assert [op.wires.tolist() for op in ops[6::3]] == [[0, 1], [1, 2], [2, 0]]


def test_rows_are_unit_vectors_and_one_rep_is_uniform_in_modulus():
    X = np.random.default_rng(1).normal(size=(50, 6))
    S = FeatureMap(n_qubits=6, reps=1).states(X)
    # one repetition on |0>: every amplitude has modulus 2**(-n/2)
    np.testing.assert_allclose(np.abs(S), 2**-3, atol=1e-6)
    S2 = FeatureMap(n_qubits=6, reps=3, entanglement="full").states(X)
    np.testing.assert_allclose(np.linalg.norm(S2, axis=1), 1.0, atol=1e-6)


def test_zero_features_single_qubit_closed_form():
    # one qubit, x = 0, reps = 2: P(0) H P(0) H |0> = |0>
    S = FeatureMap(n_qubits=1, reps=2).states(np.zeros((1, 1)))
    np.testing.assert_allclose(S, [[1, 0]], atol=1e-7)


def test_batching_does_not_change_states():
    X = np.random.default_rng(2).normal(size=(37, 4))
    fm = FeatureMap(n_qubits=4, reps=2, entanglement="full")
    np.testing.assert_array_equal(fm.states(X, batch_size=5), fm.states(X))


def test_entangled_pairs():
    assert entangled_pairs(4, "linear") == [(0, 1), (1, 2), (2, 3)]
    assert entangled_pairs(4, "circular") == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert entangled_pairs(2, "circular") == [(0, 1)]
    assert len(entangled_pairs(5, "full")) == 10


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros(4), "2-D"),
        (np.zeros((2, 3)), "expects 4"),
        (np.array([[0.0, np.nan, 0.0, 0.0]]), "NaN or infinite"),
        (np.array([[0.0, np.inf, 0.0, 0.0]]), "NaN or infinite"),
        (np.zeros((0, 4)), "no samples"),
        (np.zeros((1, 4), dtype=complex), "real numbers"),
    ],
)
def test_bad_embeddings_are_refused(X, message):
    with pytest.raises(ValueError, match=message):
        FeatureMap(n_qubits=4).states(X)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_qubits": 0}, "n_qubits"),
        ({"n_qubits": 31}, "n_qubits"),
        ({"reps": 0}, "reps"),
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"bandwidth": float("nan")}, "bandwidth"),
        ({"kind": "pauli"}, "kind"),
        ({"entanglement": "star"}, "entanglement"),
    ],
)
def test_bad_feature_map_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureMap(**kwargs)


def test_states_too_large_for_memory_are_refused_before_allocating():
    fm = FeatureMap(n_qubits=30)
    with pytest.raises(InsufficientMemoryError, match=r"GiB but only .* GiB"):
        fm.states(np.zeros((64, 30)))


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        FeatureMap(n_qubits=2).states(np.zeros((3, 2)), batch_size=0)
