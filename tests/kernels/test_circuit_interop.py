"""from_qiskit and from_pennylane: states and kernels equal to Qiskit Statevector and PennyLane default.qubit."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from qmlnb.kernels import gram


def features(n, columns, seed=0):
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, columns))


def kernel(S):
    S = np.asarray(S, dtype=np.complex128)
    return np.abs(S @ S.conj().T) ** 2


def assert_equal_states(S, ref):
    """complex64 states and their kernel entries within 1e-6 of the reference."""
    assert S.dtype == np.complex64
    np.testing.assert_allclose(S, ref, atol=1e-6)
    np.testing.assert_allclose(gram(S), kernel(ref), atol=1e-6)


def qiskit_maps():
    lib = pytest.importorskip("qiskit.circuit.library", reason="qiskit is an optional peer (the compare extra)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the classes are deprecated for functions in 2.1+
        return {
            "ZFeatureMap": lib.ZFeatureMap(4, reps=2),
            "ZZ-linear": lib.ZZFeatureMap(4, entanglement="linear"),
            "ZZ-circular": lib.ZZFeatureMap(4, entanglement="circular"),
            "ZZ-full": lib.ZZFeatureMap(4, entanglement="full"),
            "Pauli": lib.PauliFeatureMap(4, paulis=["Z", "XX", "YY", "ZZ", "XY"]),
        }


@pytest.mark.parametrize("name", ["ZFeatureMap", "ZZ-linear", "ZZ-circular", "ZZ-full", "Pauli"])
def test_from_qiskit_equals_statevector(name):
    pytest.importorskip("qiskit", reason="qiskit is an optional peer (the compare extra)")
    from qiskit.quantum_info import Statevector

    from qmlnb.kernels import from_qiskit

    qc = qiskit_maps()[name]
    X = features(6, 4, seed=len(name))
    S = from_qiskit(qc).states(X)
    # Qiskit is little-endian: reversing the bits gives PennyLane's order (wire 0 most significant)
    ref = np.array([Statevector(qc.assign_parameters(row).reverse_bits()).data for row in X])
    assert_equal_states(S, ref)


def test_from_qiskit_own_circuit_with_theta_global_phase_and_errors():
    qiskit = pytest.importorskip("qiskit", reason="qiskit is an optional peer (the compare extra)")
    from qiskit.circuit import Parameter, ParameterVector
    from qiskit.quantum_info import Statevector

    from qmlnb.kernels import from_qiskit

    xv, w = ParameterVector("x", 3), Parameter("w")
    qc = qiskit.QuantumCircuit(3, global_phase=0.4)
    qc.ry(xv[0] * w, 0)
    qc.rxx(xv[1] ** 2, 0, 2)
    qc.crz(xv[2] + 1.0, 2, 1)
    qc.append(qiskit.circuit.library.CCXGate(), [0, 1, 2])  # transpiled to the supported gates
    qc.u(xv[0], xv[1], xv[2], 1)
    fm = from_qiskit(qc, features=xv, theta={"w": 0.8})
    X = features(5, 3)
    ref = np.array([Statevector(qc.assign_parameters({**dict(zip(xv, row)), w: 0.8}).reverse_bits()).data
                    for row in X])
    assert_equal_states(fm.states(X), ref)
    with pytest.raises(ValueError, match=r"\['w'\] are neither features nor given a value"):
        from_qiskit(qc, features=xv)
    with pytest.raises(ValueError, match="do not form one ParameterVector"):
        from_qiskit(qc)


def pennylane_cases():
    qml = pytest.importorskip("pennylane", reason="pennylane is an optional peer")

    def angle(rotation):
        def qfunc(x):
            qml.AngleEmbedding(x, wires=range(4), rotation=rotation)
        return qfunc

    def iqp(x):
        qml.IQPEmbedding(x, wires=range(4), n_repeats=2)

    def reupload(x):
        for layer in range(3):
            for k in range(4):
                qml.RY(x[k], wires=k)
                qml.RZ((layer + 1) * x[k], wires=k)
            for k in range(4):
                qml.CZ(wires=[k, (k + 1) % 4])

    return {"angle-X": angle("X"), "angle-Y": angle("Y"), "angle-Z": angle("Z"), "iqp": iqp, "reupload": reupload}


@pytest.mark.parametrize("name", ["angle-X", "angle-Y", "angle-Z", "iqp", "reupload"])
def test_from_pennylane_equals_default_qubit(name):
    import pennylane as qml

    from qmlnb.kernels import from_pennylane

    qfunc = pennylane_cases()[name]
    if name == "angle-Z":
        # AngleEmbedding with Z on |0> is only a phase: start from H so that the rotation shows
        inner = qfunc

        def qfunc(x):
            for k in range(4):
                qml.Hadamard(wires=k)
            inner(x)

    dev = qml.device("default.qubit", wires=4)

    @qml.qnode(dev)
    def state(x):
        qfunc(x)
        return qml.state()

    X = features(5, 4, seed=3)
    ref = np.array([state(row) for row in X])
    assert_equal_states(from_pennylane(qfunc, 4).states(X), ref)


def test_reuploading_circuit_equals_its_pennylane_twin():
    pytest.importorskip("pennylane", reason="pennylane is an optional peer")
    from qmlnb.kernels import CircuitFeatureMap, from_pennylane
    from qmlnb.kernels.circuit import reuploading_circuit

    X = features(4, 4, seed=5)
    np.testing.assert_allclose(CircuitFeatureMap(reuploading_circuit(4, 3)).states(X),
                               from_pennylane(pennylane_cases()["reupload"], 4).states(X), atol=1e-6)


def test_from_pennylane_errors():
    qml = pytest.importorskip("pennylane", reason="pennylane is an optional peer")
    from qmlnb.kernels import from_pennylane

    def three_wire_multirz(x):
        qml.MultiRZ(x[0], wires=[0, 1, 2])

    with pytest.raises(ValueError, match="MultiRZ on 3 wires is not supported|not supported"):
        from_pennylane(three_wire_multirz, 3)

    def outside(x):
        qml.RX(x[0], wires=7)

    with pytest.raises(ValueError, match="wire 7"):
        from_pennylane(outside, 2)

    def too_far(x):
        qml.RX(x[3], wires=0)

    with pytest.raises(ValueError, match="beyond the data's 2 columns"):
        from_pennylane(too_far, 2)
    assert from_pennylane(too_far, 2, n_features=4).n_features == 4
