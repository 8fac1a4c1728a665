"""Circuit descriptions and CircuitFeatureMap: expressions, spec round trips, every error, equality with FeatureMap."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from qmlnb.kernels import Circuit, CircuitFeatureMap, FeatureMap, InsufficientMemoryError, gram, parse
from qmlnb.kernels.circuit import Func, angle_circuit, iqp_circuit, pi, reuploading_circuit, theta, x, zz_circuit
from qmlnb.kernels.circuit_map import feature_map_circuit
from qmlnb.kernels.gate_matrices import one_qubit_matrices, two_qubit_matrices


def features(n, columns, seed=0, scale=1.0):
    return np.random.default_rng(seed).uniform(-scale, scale, (n, columns))


def dense_state(circuit: Circuit, row: np.ndarray) -> np.ndarray:
    """A reference simulator: full 2**n x 2**n matrices (kron of each gate), one sample at a time."""
    n = circuit.n_qubits
    psi = np.zeros(2**n, dtype=np.complex128)
    psi[0] = 1
    X = row[None]
    for g in circuit.gates:
        angles = [np.atleast_1d(a.evaluate(X, circuit.theta_dict)).astype(float) for a in g.angles]
        if not g.wires:
            psi *= np.exp(-1j * angles[0][0])
            continue
        if len(g.wires) == 1:
            m, wires = one_qubit_matrices(g.name, angles)[0], list(g.wires)
        else:
            m, wires = two_qubit_matrices(g.name, angles)[0], list(g.wires)
        k = len(wires)
        tensor = psi.reshape((2,) * n)
        tensor = np.moveaxis(tensor, wires, list(range(k))).reshape(2**k, -1)
        tensor = (m @ tensor).reshape((2,) * n)
        psi = np.moveaxis(tensor, list(range(k)), wires).reshape(-1)
    return psi


EVERY_GATE = Circuit(3, [
    ("h", 0), ("x", 1), ("y", 2), ("z", 0), ("s", 1), ("t", 2), ("sx", 0), ("sdg", 1), ("tdg", 2),
    ("rx", 0, x[0]), ("ry", 1, x[1] * 0.5), ("rz", 2, x[2] + 1), ("p", 0, x[0] * x[1]),
    ("u3", 1, x[0], x[1], x[2]), ("cx", (0, 1)), ("cz", (1, 2)), ("swap", (0, 2)),
    ("crz", (2, 0), x[1]), ("cp", (1, 0), pi - x[2]), ("rxx", (0, 1), x[0]), ("ryy", (1, 2), x[1]),
    ("rzz", (0, 2), x[2]), ("rzx", (2, 1), x[0] - x[1]), ("h", 1), ("gphase", (), 0.3), ("rx", 2, theta["a"]),
], theta={"a": 0.7})


def test_every_gate_matches_a_dense_reference_simulator():
    X = features(4, 3, seed=1, scale=math.pi)
    S = CircuitFeatureMap(EVERY_GATE).states(X)
    assert S.shape == (4, 8) and S.dtype == np.complex64 and S.flags.c_contiguous
    ref = np.array([dense_state(EVERY_GATE, row) for row in X])
    np.testing.assert_allclose(S, ref, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(S, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["zz", "iqp"])
@pytest.mark.parametrize("entanglement", ["linear", "circular", "full"])
@pytest.mark.parametrize("reps", [1, 2])
def test_feature_map_as_a_circuit_gives_the_same_states(kind, entanglement, reps):
    fm = FeatureMap(n_qubits=5, reps=reps, entanglement=entanglement, kind=kind, bandwidth=0.6)
    cfm = CircuitFeatureMap(feature_map_circuit(fm), bandwidth=0.6)
    X = features(7, 5, seed=reps)
    np.testing.assert_allclose(cfm.states(X), fm.states(X), atol=1e-6)
    np.testing.assert_allclose(gram(cfm.states(X)), gram(fm.states(X)), atol=1e-6)


def test_batches_and_the_constant_prefix_do_not_change_the_states():
    cfm = CircuitFeatureMap(reuploading_circuit(4, 3))
    X = features(9, 4, seed=2)
    np.testing.assert_allclose(cfm.states(X, batch_size=2), cfm.states(X), atol=1e-7)
    # one sample alone equals its row of the batch
    np.testing.assert_allclose(cfm.states(X[3:4])[0], cfm.states(X)[3], atol=1e-7)


def test_bandwidth_scales_the_features():
    c = angle_circuit(3, "y")
    X = features(4, 3)
    np.testing.assert_allclose(CircuitFeatureMap(c, bandwidth=0.5).states(X), CircuitFeatureMap(c).states(0.5 * X),
                               atol=1e-7)
    assert CircuitFeatureMap(c).with_bandwidth(2.0).bandwidth == 2.0


def test_expressions_print_parse_and_evaluate():
    e = 2 * (pi - x[0]) * (pi - x[1]) + theta["w"] * x[2] - x[0] ** 2 / 4
    assert parse(str(e)) == parse(str(parse(str(e))))
    X = features(5, 3)
    expected = 2 * (np.pi - X[:, 0]) * (np.pi - X[:, 1]) + 0.3 * X[:, 2] - X[:, 0] ** 2 / 4
    np.testing.assert_allclose(e.evaluate(X, {"w": 0.3}), expected)
    np.testing.assert_allclose(parse(str(e)).evaluate(X, {"w": 0.3}), expected)
    np.testing.assert_allclose(parse("cos(x[1]) * -2").evaluate(X), -2 * np.cos(X[:, 1]))
    assert e.features() == {0, 1, 2} and e.parameters() == {"w"}


def test_expressions_evaluate_on_torch_tensors():
    torch = pytest.importorskip("torch", reason="torch evaluates angles for trainable theta")
    X = features(4, 2)
    w = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    value = (theta["w"] * x[0] + pi * x[1]).evaluate(torch.from_numpy(X), {"w": w})
    value.sum().backward()
    assert math.isclose(float(w.grad), X[:, 0].sum())


def test_func_angles_and_their_shape_check():
    c = Circuit(2, [("ry", 0, Func(lambda X: np.arctan(X[:, 0] * X[:, 1]), name="atan_xy")), ("ry", 1, x[1])])
    X = features(3, 2)
    S = CircuitFeatureMap(c).states(X)
    np.testing.assert_allclose(S[:, 0], np.cos(np.arctan(X[:, 0] * X[:, 1]) / 2) * np.cos(X[:, 1] / 2), atol=1e-6)
    bad = Circuit(2, [("ry", 0, Func(lambda X: X[:, :2], name="wide"))], n_features=2)
    with pytest.raises(ValueError, match="one angle per sample"):
        CircuitFeatureMap(bad).states(X)


def test_spec_round_trips_through_json_and_pickle_with_the_same_hash():
    c = zz_circuit(4, 2)
    spec = json.loads(json.dumps(c.to_dict()))
    again = Circuit.from_dict(spec)
    assert again.spec_hash() == c.spec_hash() and len(c.spec_hash()) == 8
    assert pickle.loads(pickle.dumps(c)).spec_hash() == c.spec_hash()
    X = features(3, 4)
    np.testing.assert_allclose(CircuitFeatureMap(again).states(X), CircuitFeatureMap(c).states(X), atol=1e-7)
    # the hash changes with the spec, not with the name
    assert zz_circuit(4, 3).spec_hash() != c.spec_hash()
    assert zz_circuit(4, 2, name="other").spec_hash() == c.spec_hash()
    assert CircuitFeatureMap(c).label == f"zz#{c.spec_hash()}"
    assert "zz: 4 qubits" in c.draw()


@pytest.mark.parametrize("gates, match", [
    ([("foo", 0)], "unknown gate 'foo'"),
    ([("h", 3)], "wire 3 is out of range for 3 qubits"),
    ([("cx", (0, 5))], "wire 5 is out of range"),
    ([("cx", (1, 1))], "distinct wires"),
    ([("cx", 0)], "acts on 2 wires"),
    ([("rx", 0)], "takes 1 angle"),
    ([("rx", 0, float("nan"))], "finite"),
    ([("rx", 0, "x[0] + y")], "the name 'y'"),
    ([("rx", 0, "x[0] ** x[1]")], "power"),
    ([("rx", 0, "__import__('os')")], "not allowed|uses"),
    ([("rx", 0, "foo(x[0])")], "function 'foo'"),
    ([("rx", 0, "x[0] / x[1]")], "divided by a non-zero constant"),
    ([("rx", 0, theta["b"])], r"theta\['b'\]"),
])
def test_errors_of_the_description(gates, match):
    with pytest.raises(ValueError, match=match):
        Circuit(3, gates)


def test_a_feature_index_beyond_the_data_columns_is_refused():
    with pytest.raises(ValueError, match=r"reads x\[4\] but the data has 3 feature columns"):
        Circuit(2, [("rx", 0, x[4])], n_features=3)
    fm = CircuitFeatureMap(Circuit(2, [("rx", 0, x[2])]))
    assert fm.n_features == 3
    with pytest.raises(ValueError, match="X has 2 feature columns but the circuit"):
        fm.states(features(2, 2))


def test_non_finite_angles_and_bad_inputs_are_refused_before_work():
    fm = CircuitFeatureMap(Circuit(1, [("rx", 0, parse("exp(x[0])"))]))
    with pytest.raises(ValueError, match=r"exp\(x\[0\]\) of gate rx on wires \(0,\) is not finite for sample 1"):
        fm.states(np.array([[0.0], [1e4]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        fm.states(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="bandwidth"):
        CircuitFeatureMap(zz_circuit(2), bandwidth=-1.0)
    with pytest.raises(TypeError, match="Circuit"):
        CircuitFeatureMap("zz")
    with pytest.raises(ValueError, match="truncate=True"):
        CircuitFeatureMap(zz_circuit(2), cutoff=0.1)
    with pytest.raises(ValueError, match="state-vector limit"):
        CircuitFeatureMap(angle_circuit(31)).states(features(1, 31))
    with pytest.raises(ValueError, match="unknown keys"):
        Circuit.from_dict({"n_qubits": 1, "gates": [], "colour": 1})


def test_memory_is_checked_before_any_work(monkeypatch):
    import qmlnb.kernels.validation as validation

    monkeypatch.setattr(validation, "available_memory_bytes", lambda: 1000)
    with pytest.raises(InsufficientMemoryError, match="states of 4 samples on 3 qubits"):
        CircuitFeatureMap(iqp_circuit(3)).states(features(4, 3))


def test_resolve_method_and_simulate():
    fm = CircuitFeatureMap(zz_circuit(4))
    assert fm.resolve_method(10) == "statevector" and fm.has_mps()
    assert fm.resolve_method(10, "mps") == "mps"
    ring = CircuitFeatureMap(reuploading_circuit(4))
    assert not ring.has_mps()
    with pytest.raises(ValueError, match="not neighbours"):
        ring.resolve_method(10, "mps")
    with pytest.raises(ValueError, match="method must be one of"):
        fm.resolve_method(10, "dense")
    X = features(3, 4)
    np.testing.assert_allclose(fm.simulate(X), fm.states(X))


def test_quantum_kernel_svc_takes_a_circuit_feature_map():
    from sklearn.datasets import make_classification

    from qmlnb.qsvm.svm import QuantumKernelSVC

    X, y = make_classification(60, 4, n_informative=3, n_redundant=0, random_state=0)
    ours = QuantumKernelSVC(custom_map=CircuitFeatureMap(zz_circuit(4, 2)), bandwidth=0.5, C=1.0).fit(X, y)
    builtin = QuantumKernelSVC(n_qubits=4, reps=2, bandwidth=0.5, C=1.0).fit(X, y)
    np.testing.assert_allclose(ours.train_kernel_, builtin.train_kernel_, atol=1e-5)
    np.testing.assert_array_equal(ours.predict(X[:10]), builtin.predict(X[:10]))
    with pytest.raises(ValueError, match="custom_map reads 4"):
        ours.predict(X[:, :3])


def test_layers_is_the_circuits_gate_depth_for_the_noise_model():
    from qmlnb.kernels import Circuit, CircuitFeatureMap, DeviceNoise

    # H on 0 and 1 in parallel (layer 1), CNOT(0, 1) (2), RZ(x0) on 1 (3); H on 2 runs beside the first layer
    circuit = Circuit(3, [("H", 0), ("H", 1), ("H", 2), ("CNOT", (0, 1)), ("RZ", 1, "x[0]")])
    fm = CircuitFeatureMap(circuit)
    assert circuit.depth() == 3 and fm.layers == 3
    assert DeviceNoise.for_map(fm, depolarising=0.01).layers == 6
    assert Circuit(2, []).depth() == 0


@pytest.mark.parametrize("seed", range(6))
def test_random_gate_orders_match_the_dense_reference(seed):
    """Diagonal, permutation and one-qubit gates interleaved at random: scheduling moves gates only past
    steps they commute with."""
    rng = np.random.default_rng(seed)
    one, two = ["h", "x", "s", "rx", "ry", "rz", "p"], ["cx", "swap", "cz", "crz", "cp", "rzz"]
    gates = []
    for _ in range(40):
        name = rng.choice(one + two)
        wires = tuple(int(w) for w in rng.choice(4, 2 if name in two else 1, replace=False))
        angle = [x[int(rng.integers(3))] * float(rng.uniform(0.5, 2))] if name in ("rx", "ry", "rz", "p", "crz",
                                                                                  "cp", "rzz") else []
        gates.append((str(name), wires[0] if len(wires) == 1 else wires, *angle))
    circuit = Circuit(4, gates, name=f"random-{seed}")
    X = features(3, 3, seed=seed, scale=math.pi)
    np.testing.assert_allclose(CircuitFeatureMap(circuit).states(X),
                               np.array([dense_state(circuit, row) for row in X]), atol=1e-5)


def test_the_next_repetition_started_early_still_fuses_into_one_run_per_repetition():
    """The order in which Qiskit lists zz_feature_map(4) (full, reps 2): repetition 2's H on wire 0 comes before
    repetition 1's pairs (1, 3) and (2, 3).  Still one diagonal run per repetition."""
    from qmlnb.kernels.circuit_map import _Diagonal, compile_program

    def zz(i, j):
        return [("cx", (i, j)), ("p", j, 2 * (pi - x[i]) * (pi - x[j])), ("cx", (i, j))]

    def hp(q):
        return [("h", q), ("p", q, 2 * x[q])]

    order = (hp(0) + hp(1) + zz(0, 1) + hp(2) + zz(0, 2) + zz(1, 2) + hp(3) + zz(0, 3) + hp(0) + zz(1, 3)
             + hp(1) + zz(0, 1) + zz(2, 3) + hp(2) + zz(0, 2) + zz(1, 2) + hp(3) + zz(0, 3) + zz(1, 3) + zz(2, 3))
    circuit = Circuit(4, order, name="zz-qiskit-order")
    assert sum(isinstance(s, _Diagonal) for s in compile_program(circuit)) == 2
    X = features(3, 4, seed=2)
    np.testing.assert_allclose(CircuitFeatureMap(circuit).states(X), np.array([dense_state(circuit, r) for r in X]),
                               atol=1e-5)
