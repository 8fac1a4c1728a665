"""FeatureMap states against PennyLane default.qubit and closed forms."""
import numpy as np
import pennylane as qml
import pytest

from qmlnb.kernels import FeatureMap, InsufficientMemoryError
from qmlnb.kernels import feature_map as feature_map_module
from qmlnb.kernels import validation
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
        ({"n_qubits": 100_001}, "n_qubits"),
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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bandwidth": "1.0"}, "bandwidth must be a real number, got str '1.0'"),
        ({"bandwidth": None}, "bandwidth must be a real number, got NoneType None"),
        ({"bandwidth": True}, "bandwidth must be a real number, got bool True"),
        ({"bandwidth": 1 + 0j}, "bandwidth must be a real number"),
        ({"n_qubits": True}, "n_qubits must be an integer, got bool True"),
        ({"n_qubits": 4.0}, "n_qubits must be an integer, got float 4.0"),
        ({"n_qubits": "4"}, "n_qubits must be an integer, got str '4'"),
    ],
)
def test_parameters_of_the_wrong_type_are_a_type_error(kwargs, message):
    """Bools are not numbers here (True is not 1 qubit), strings and None are not numbers at all."""
    with pytest.raises(TypeError, match=message):
        FeatureMap(**kwargs)


def test_numpy_scalars_are_accepted():
    fm = FeatureMap(n_qubits=np.int64(3), bandwidth=np.float32(0.5))
    X = np.random.default_rng(3).normal(size=(4, 3))
    np.testing.assert_array_equal(fm.states(X), FeatureMap(n_qubits=3, bandwidth=0.5).states(X))


@pytest.mark.parametrize("kind", ["zz", "iqp"])
@pytest.mark.parametrize("x, bandwidth", [(1e160, 1.0), (1e150, 1e10), (1e300, 1e300)])
def test_features_whose_angles_overflow_are_refused(kind, x, bandwidth):
    """Finite features, but the gate angles (x_i x_j) are not finite in float64: NaN states are never returned."""
    X = np.array([[0.1, 0.2, 0.3], [0.0, x, 0.5]])
    with pytest.raises(ValueError, match=r"features times bandwidth reach .*overflow float64"):
        FeatureMap(n_qubits=3, kind=kind, bandwidth=bandwidth).states(X)


def test_large_but_representable_angles_still_give_unit_states():
    X = np.array([[1e100, -3e99]])
    S = FeatureMap(n_qubits=2, kind="iqp").states(X)
    assert np.isfinite(S.view(np.float32)).all()
    np.testing.assert_allclose(np.linalg.norm(S, axis=1), 1.0, atol=1e-6)


def test_work_arrays_count_towards_the_memory_check(monkeypatch):
    """At 16 qubits 2 states are 1 MiB but the (31, 2**16) float64 phase codes alone 15.5 MiB: refused at once."""
    def no_work(*args, **kwargs):
        raise AssertionError("the simulation started although its peak memory does not fit")

    monkeypatch.setattr(validation, "available_memory_bytes", lambda: 8 << 20)
    monkeypatch.setattr(feature_map_module, "_native_states", lambda: None)  # the NumPy path's codes
    monkeypatch.setattr(FeatureMap, "_codes", no_work)
    monkeypatch.setattr(FeatureMap, "_simulate", no_work)
    with pytest.raises(InsufficientMemoryError, match="with their work arrays needs 0.02 GiB but only 0.01 GiB"):
        FeatureMap(n_qubits=16, reps=2).states(np.zeros((2, 16)))


def test_24_qubits_is_refused_before_work_where_its_peak_does_not_fit(monkeypatch):
    """The case that died with MemoryError after 29 s: one 24-qubit state is 128 MiB, its peak about 7 GiB."""
    def no_work(*args, **kwargs):
        raise AssertionError("the simulation started although its peak memory does not fit")

    fm = FeatureMap(n_qubits=24, reps=2)
    monkeypatch.setattr(validation, "available_memory_bytes", lambda: 4 << 30)  # room for 25 such states
    monkeypatch.setattr(feature_map_module, "_native_states", lambda: None)  # the NumPy path's codes
    monkeypatch.setattr(FeatureMap, "_codes", no_work)
    monkeypatch.setattr(FeatureMap, "_simulate", no_work)
    with pytest.raises(InsufficientMemoryError, match=r"states of 1 samples on 24 qubits .* needs 6\.\d+ GiB"):
        fm.states(np.zeros((1, 24)))


@pytest.mark.parametrize(
    "n_qubits, reps, kind, n_samples, batch_size",
    [(10, 2, "zz", 300, None), (10, 3, "iqp", 300, 50), (12, 1, "zz", 40, 7), (14, 2, "zz", 5, None),
     (8, 4, "iqp", 1000, None)],
)
@pytest.mark.parametrize("native", [True, False])
def test_peak_bytes_bounds_the_memory_states_uses(n_qubits, reps, kind, n_samples, batch_size, native,
                                                  monkeypatch):
    """The memory check's estimate against what NumPy allocates (tracemalloc sees every array).

    The fused C++ kernel's per-thread rows are not NumPy arrays: they are
    added as the extension allocates them (4 float32 rows of 2**n and 2
    float64 rows of 2**(n - n//2) per thread, one thread per row at most).
    """
    import tracemalloc

    from qmlnb._util import available_cores

    if not native:
        monkeypatch.setattr(feature_map_module, "_native_states", lambda: None)
    elif feature_map_module._native_states() is None:
        pytest.skip("the native state extension is not built")
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, kind=kind, entanglement="full")
    X = np.random.default_rng(0).uniform(-1, 1, (n_samples, n_qubits))
    fm.states(X[:2], batch_size=batch_size)  # first-call allocations of NumPy itself are not the map's
    tracemalloc.start()
    try:
        fm.states(X, batch_size=batch_size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if native:
        threads = min(available_cores(), n_samples, fm._batch_size(batch_size))
        peak += threads * (fm.dim * 16 + 2 ** (n_qubits - n_qubits // 2) * 16)
    estimate = fm.peak_bytes(n_samples, batch_size)
    assert peak <= estimate <= 1.5 * peak


def test_states_too_large_for_memory_are_refused_before_allocating():
    fm = FeatureMap(n_qubits=30)
    with pytest.raises(InsufficientMemoryError, match=r"GiB but only .* GiB"):
        fm.states(np.zeros((64, 30)))


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        FeatureMap(n_qubits=2).states(np.zeros((3, 2)), batch_size=0)
