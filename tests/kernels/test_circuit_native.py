"""CircuitFeatureMap.states through the C++ kernel (qmlnb._circuit_openmp) against the NumPy steps and a dense
reference: random circuits with every gate type, both phase paths (quadratic form and Walsh-Hadamard), gathers,
per-sample one-qubit matrices, threads and batches, the compile-time cancellations, and every error of the
extension."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qmlnb.kernels import Circuit, CircuitFeatureMap, FeatureMap, InsufficientMemoryError
from qmlnb.kernels import circuit_native
from qmlnb.kernels.circuit import pi, theta, x
from qmlnb.kernels.circuit_map import _Diagonal, compile_program, feature_map_circuit
from qmlnb.kernels.circuit_native import OP_CONST_1Q, OP_DIAGONAL, OP_SAMPLE_1Q, NativeProgram
from test_circuit_feature_map import EVERY_GATE, dense_state, features

_circuit_openmp = pytest.importorskip("qmlnb._circuit_openmp", reason="the native circuit extension is not built")

ONE = ["h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "p", "u3"]
TWO = ["cx", "cz", "swap", "crz", "cp", "rxx", "ryy", "rzz", "rzx"]
ANGLES = {"rx": 1, "ry": 1, "rz": 1, "p": 1, "u3": 3, "crz": 1, "cp": 1, "rxx": 1, "ryy": 1, "rzz": 1, "rzx": 1}


def numpy_states(fm, X, monkeypatch, **kwargs):
    """The NumPy reference path: the same map with the extension hidden."""
    with monkeypatch.context() as patch:
        patch.setattr(circuit_native, "native_extension", lambda: None)
        return fm.states(X, **kwargs)


def random_circuit(seed: int, n_qubits: int, n_gates: int) -> Circuit:
    """Every gate type at random places, angles of x, of theta and constants, and a global phase."""
    rng = np.random.default_rng(seed)
    gates = [("gphase", (), x[0] * 0.3)]
    for _ in range(n_gates):
        name = str(rng.choice(ONE + TWO if n_qubits > 1 else ONE))
        wires = tuple(int(w) for w in rng.choice(n_qubits, 2 if name in TWO else 1, replace=False))
        angles = []
        for _ in range(ANGLES.get(name, 0)):
            kind = rng.integers(4)
            k = int(rng.integers(n_qubits))
            angles.append([x[k] * float(rng.uniform(0.5, 2)), theta["a"] + x[k], float(rng.uniform(-3, 3)),
                           (pi - x[k]) * (pi - x[(k + 1) % n_qubits])][kind])
        gates.append((name, wires[0] if len(wires) == 1 else wires, *angles))
    return Circuit(n_qubits, gates, theta={"a": 0.4}, name=f"random-{seed}")


@pytest.mark.parametrize("seed, n_qubits, n_gates", [(0, 1, 12), (1, 2, 30), (2, 3, 40), (3, 5, 60), (4, 7, 80),
                                                     (5, 9, 60)])
def test_random_circuits_with_every_gate_equal_numpy_and_the_dense_reference(seed, n_qubits, n_gates, monkeypatch):
    circuit = random_circuit(seed, n_qubits, n_gates)
    fm = CircuitFeatureMap(circuit, bandwidth=0.8)
    X = features(9, n_qubits, seed=seed, scale=math.pi)
    S = fm.states(X)
    assert S.shape == (9, 2**n_qubits) and S.dtype == np.complex64 and S.flags.c_contiguous
    np.testing.assert_allclose(S, numpy_states(fm, X, monkeypatch), rtol=0, atol=1e-6)
    np.testing.assert_allclose(S, np.array([dense_state(circuit, row * 0.8) for row in X]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(S.astype(np.complex128), axis=1), 1.0, atol=1e-6)


def test_every_gate_circuit_uses_every_step_kind(monkeypatch):
    X = features(5, 3, seed=3, scale=math.pi)
    fm = CircuitFeatureMap(EVERY_GATE)
    prefix, rest = fm._split_prefix(compile_program(EVERY_GATE))
    kinds = set(NativeProgram.compile(rest, 3).ops[:, 0].tolist())
    assert kinds == {OP_DIAGONAL, OP_CONST_1Q, OP_SAMPLE_1Q}
    np.testing.assert_allclose(fm.states(X), numpy_states(fm, X, monkeypatch), rtol=0, atol=1e-6)


def test_parities_of_three_bits_take_the_walsh_hadamard_path_and_a_left_permutation_a_gather(monkeypatch):
    """CX(0,2) CX(1,2) RZ(x) on wire 2 is a phase of b0 ^ b1 ^ b2 (not a quadratic form); the last CX(0, 1)
    stays as a permutation of the run (a gather)."""
    circuit = Circuit(4, [("h", k) for k in range(4)] + [
        ("cx", (0, 2)), ("cx", (1, 2)), ("rz", 2, x[0] * x[1]), ("p", 3, x[2]), ("cx", (0, 1)), ("ry", 1, x[3]),
        ("x", 0), ("cp", (0, 3), x[1]), ("swap", (1, 3)), ("rzz", (1, 2), x[0])], name="parity")
    program = NativeProgram.compile(CircuitFeatureMap(circuit)._split_prefix(compile_program(circuit))[1], 4)
    diagonal = program.ops[program.ops[:, 0] == OP_DIAGONAL]
    assert 0 in diagonal[:, 5] and (diagonal[:, 6] >= 0).any()
    fm = CircuitFeatureMap(circuit)
    X = features(6, 4, seed=4, scale=2.0)
    S = fm.states(X)
    np.testing.assert_allclose(S, numpy_states(fm, X, monkeypatch), rtol=0, atol=1e-6)
    np.testing.assert_allclose(S, np.array([dense_state(circuit, row) for row in X]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind, reps", [("zz", 3), ("iqp", 2)])
def test_repeated_blocks_reuse_their_phases_and_equal_feature_map(kind, reps):
    fm = FeatureMap(n_qubits=8, reps=reps, kind=kind, entanglement="circular")
    X = features(11, 8, seed=5)
    np.testing.assert_allclose(CircuitFeatureMap(feature_map_circuit(fm)).states(X), fm.states(X), rtol=0, atol=1e-6)


def test_large_angles_stay_accurate(monkeypatch):
    """Features of 1e3: angles of ~1e7 are reduced in float64 before float32 cos and sin."""
    fm = FeatureMap(n_qubits=6, reps=2)
    cfm = CircuitFeatureMap(feature_map_circuit(fm))
    X = features(5, 6, seed=6, scale=1e3)
    S = cfm.states(X)
    np.testing.assert_allclose(S, np.array([dense_state(cfm.circuit, row) for row in X]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(S, numpy_states(cfm, X, monkeypatch), rtol=0, atol=1e-6)


def test_threads_and_batches_do_not_change_the_states():
    circuit = random_circuit(7, 6, 50)
    fm = CircuitFeatureMap(circuit)
    X = features(13, 6, seed=7)
    np.testing.assert_array_equal(fm.states(X), fm.states(X, batch_size=3))
    prefix, rest = fm._split_prefix(compile_program(circuit))
    program = NativeProgram.compile(rest, 6)
    start = np.zeros(64, dtype=np.complex64)
    start[0] = 1
    assert not prefix  # the circuit starts with a data-dependent global phase: the kernel runs every step
    one, two = (np.empty((13, 64), dtype=np.complex64) for _ in range(2))
    program.run(X, circuit.theta_dict, start, one, 1)
    program.run(X, circuit.theta_dict, start, two, 2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, fm.states(X))


def test_constant_products_equal_to_a_phase_are_dropped_at_compile_time(monkeypatch):
    """H H and SX RX(-pi/2) (= exp(i pi/4) I) vanish, so the diagonal gates around them fuse into one run;
    the phase they leave is kept."""
    circuit = Circuit(2, [("h", 0), ("h", 1), ("rzz", (0, 1), x[0]), ("sx", 1), ("rx", 1, -pi / 2), ("h", 0),
                          ("h", 0), ("rzz", (0, 1), x[1]), ("p", 1, x[0])], name="cancel")
    steps = compile_program(circuit)
    assert [type(s).__name__ for s in steps] == ["_OneQubit", "_OneQubit", "_Diagonal"]
    assert any(g[0] == "gphase" for g in steps[2].gates)
    fm = CircuitFeatureMap(circuit)
    X = features(4, 2, seed=8, scale=math.pi)
    S = fm.states(X)
    np.testing.assert_allclose(S, np.array([dense_state(circuit, row) for row in X]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(S, numpy_states(fm, X, monkeypatch), rtol=0, atol=1e-6)
    # a product that is not a multiple of I stays
    assert sum(not isinstance(s, _Diagonal) for s in compile_program(Circuit(1, [("h", 0), ("s", 0), ("h", 0)]))) \
        >= 1


def test_memory_is_checked_before_the_kernel_runs(monkeypatch):
    from qmlnb.kernels import validation

    def refuse(*args, **kwargs):
        raise AssertionError("the kernel ran before the memory check")

    fm = CircuitFeatureMap(random_circuit(9, 4, 20))
    X = features(4, 4)
    assert fm.peak_bytes(4) > 4 * 16 * 8  # the states and the kernel's tables and work rows
    monkeypatch.setattr(validation, "available_memory_bytes", lambda: 1000)
    monkeypatch.setattr(NativeProgram, "run", refuse)
    with pytest.raises(InsufficientMemoryError, match="states of 4 samples on 4 qubits"):
        fm.states(X)


# ------------------------------------------------------------------------------------------ the extension's checks
def valid_arguments(n: int = 3, rows: int = 2) -> dict:
    """A small valid program: a quadratic diagonal run with a gather, a constant and a per-sample one-qubit step."""
    d = 2**n
    return dict(
        ops=np.array([[OP_DIAGONAL, 0, 2, 0, 2, 1, 0], [OP_CONST_1Q, 1, 0, 3, 0, 0, 0],
                      [OP_SAMPLE_1Q, 2, 0, 0, 0, 0, 0]], dtype=np.int64),
        slot=np.array([0, 1], dtype=np.int64), param=np.array([0, -1], dtype=np.int64),
        coef=np.array([0.5, 1.0]), masks=np.array([1, 6], dtype=np.int64),
        gather=np.arange(d, dtype=np.int64)[::-1].copy(),
        cmats=(np.array([[1, 1], [1, -1]], dtype=np.complex128) / math.sqrt(2))[None],
        smats=np.tile(np.eye(2, dtype=np.complex128), (rows, 1, 1, 1)),
        angles=np.ones((rows, 1)), start=np.eye(1, d, dtype=np.complex64)[0],
        out=np.empty((rows, d), dtype=np.complex64), n_threads=1)


def test_the_extension_runs_the_valid_arguments():
    args = valid_arguments()
    _circuit_openmp.states(**args)
    np.testing.assert_allclose(np.linalg.norm(args["out"], axis=1), 1.0, atol=1e-6)


def _set(key, value):
    def change(args):
        args[key] = value(args) if callable(value) else value
    return change


def _op(row, column, value):
    def change(args):
        args["ops"][row, column] = value
    return change


@pytest.mark.parametrize("change, error, match", [
    (_set("n_threads", 0), ValueError, "n_threads must be a positive integer"),
    (_set("ops", [[0] * 7]), TypeError, "ops must be a NumPy array"),
    (_set("coef", lambda a: a["coef"].astype(np.float32)), ValueError, "coef must be float64"),
    (_set("slot", lambda a: a["slot"][None]), ValueError, "slot must have 1 dimensions"),
    (_set("angles", lambda a: np.ones((2, 2))[:, :1]), ValueError, "angles must be C-contiguous"),
    (_set("start", lambda a: np.ones(6, dtype=np.complex64)), ValueError, "start must have 2\\*\\*n entries"),
    (_set("out", lambda a: np.empty((2, 4), dtype=np.complex64)), ValueError, "out must have shape"),
    (_set("out", lambda a: np.empty((2, 8), dtype=np.complex128)), ValueError, "out must be complex64"),
    (_set("angles", lambda a: np.ones((3, 1))), ValueError, "one row per row of out"),
    (_set("ops", lambda a: a["ops"][:, :6].copy()), ValueError, "ops must have shape"),
    (_set("param", lambda a: a["param"][:1].copy()), ValueError, "one length"),
    (_set("cmats", lambda a: np.zeros((1, 3, 2), dtype=np.complex128)), ValueError, "cmats must have shape"),
    (_op(0, 0, 7), ValueError, "step 0: unknown step kind 7"),
    (_op(0, 2, 3), ValueError, "step 0: term range"),
    (_op(0, 4, 5), ValueError, "step 0: mask range"),
    (_op(0, 6, 4), ValueError, "step 0: gather offset"),
    (_op(1, 1, 3), ValueError, "step 1: wire out of range"),
    (_op(1, 2, 1), ValueError, "step 1: matrix index"),
    (_op(1, 3, 9), ValueError, "step 1: unknown matrix kind"),
    (_op(2, 2, 1), ValueError, "step 2: matrix index"),
    (_set("slot", np.array([0, 2], dtype=np.int64)), ValueError, "mask slot"),
    (_set("param", np.array([1, -1], dtype=np.int64)), ValueError, "angle column"),
    (_set("masks", np.array([1, 8], dtype=np.int64)), ValueError, "not a basis index"),
    (_set("masks", np.array([1, 7], dtype=np.int64)), ValueError, "more than two bits"),
    (_set("gather", lambda a: np.full(8, 8, dtype=np.int64)), ValueError, "gather holds an index"),
])
def test_the_extension_refuses_bad_arguments(change, error, match):
    args = valid_arguments()
    change(args)
    with pytest.raises(error, match=match):
        _circuit_openmp.states(**args)


def test_the_extension_refuses_a_read_only_out():
    args = valid_arguments()
    args["out"].setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _circuit_openmp.states(**args)
