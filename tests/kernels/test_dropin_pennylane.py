"""kernel_matrix / square_kernel_matrix beside PennyLane's qml.kernels with the default.qubit fidelity kernel."""
from __future__ import annotations

import numpy as np
import pytest

qml = pytest.importorskip("pennylane", reason="PennyLane is an optional peer of the kernels")

from sklearn.svm import SVC  # noqa: E402

from qmlnb.kernels.pennylane_kernels import embedding_map, kernel_matrix, square_kernel_matrix  # noqa: E402

ATOL = 1e-6


def pennylane_kernel(embedding, wires):
    """PennyLane's fidelity kernel of an embedding: probability of |0..0> after U(x1), U(x2)^dagger."""
    dev = qml.device("default.qubit", wires=wires)

    @qml.qnode(dev)
    def circuit(x1, x2):
        embedding(x1)
        qml.adjoint(embedding)(x2)
        return qml.probs(wires=wires)

    return lambda x1, x2: circuit(x1, x2)[0]


def angle_embedding(x):
    """The embedding of qml.kernels' own docstring example (AngleEmbedding on 2 wires)."""
    qml.AngleEmbedding(x, wires=[0, 1])


# PennyLane's kernels demo ("Training and evaluating quantum kernels"): 5 wires, 6 layers of H, RZ(x), RY(param)
# and a ring of CRZ(param); its qml.broadcast(pattern="ring") is written out (broadcast left PennyLane)
def demo_layer(x, params, wires, i0=0, inc=1):
    i = i0
    for j, wire in enumerate(wires):
        qml.Hadamard(wires=[wire])
        qml.RZ(x[i % len(x)], wires=[wire])
        i += inc
        qml.RY(params[0, j], wires=[wire])
    for k in range(len(wires)):
        qml.CRZ(params[1][k], wires=[wires[k], wires[(k + 1) % len(wires)]])


def demo_ansatz(x, params, wires):
    for j, layer_params in enumerate(params):
        demo_layer(x, layer_params, wires, i0=j * len(wires))


def demo_params(seed=0):
    from pennylane import numpy as pnp  # the demo's trainable array

    return pnp.array(np.random.default_rng(seed).uniform(0, 2 * np.pi, (6, 2, 5)), requires_grad=True)


def test_the_docstring_example_and_its_printed_values():
    rng = np.random.default_rng(seed=1234)
    X_train, X_test = rng.random((4, 2)), rng.random((3, 2))
    peer = pennylane_kernel(angle_embedding, [0, 1])
    K = square_kernel_matrix(X_train, angle_embedding)
    np.testing.assert_allclose(K, qml.kernels.square_kernel_matrix(X_train, peer), atol=ATOL)
    np.testing.assert_allclose(K[0], [1.0, 0.9957817, 0.88043387, 0.87011008], atol=1e-7)  # as printed there
    R = kernel_matrix(X_train, X_test, angle_embedding)
    np.testing.assert_allclose(R, qml.kernels.kernel_matrix(X_train, X_test, peer), atol=ATOL)


def test_the_kernels_demo_circuit():
    params = demo_params()
    wires = list(range(5))

    def embedding(x):
        demo_ansatz(x, params, wires)

    rng = np.random.default_rng(1)
    X, Y = rng.uniform(-1, 1, (7, 2)), rng.uniform(-1, 1, (3, 2))
    peer = pennylane_kernel(embedding, wires)
    for normalized in (False, True):
        np.testing.assert_allclose(square_kernel_matrix(X, embedding, assume_normalized_kernel=normalized),
                                   qml.kernels.square_kernel_matrix(X, peer, assume_normalized_kernel=normalized),
                                   atol=ATOL)
    np.testing.assert_allclose(kernel_matrix(Y, X, embedding), qml.kernels.kernel_matrix(Y, X, peer), atol=ATOL)


@pytest.mark.parametrize("embedding,wires,width", [
    (lambda x: qml.IQPEmbedding(x, wires=range(3), n_repeats=2), [0, 1, 2], 3),
    (lambda x: qml.AngleEmbedding(x, wires=["a", "b", "c"], rotation="Y"), ["a", "b", "c"], 3),
    (lambda x: [qml.Hadamard(w) for w in range(3)] + [qml.IsingZZ(x[0] * x[1], wires=[0, 2]),
                                                       qml.RX(x[1] - 0.5, wires=1), qml.CNOT([1, 0])], [0, 1, 2], 2),
], ids=["IQPEmbedding", "labelled-wires", "expressions"])
def test_other_embeddings(embedding, wires, width):
    rng = np.random.default_rng(2)
    X, Y = rng.uniform(-np.pi, np.pi, (6, width)), rng.uniform(-np.pi, np.pi, (2, width))
    peer = pennylane_kernel(embedding, wires)
    np.testing.assert_allclose(square_kernel_matrix(X, embedding), qml.kernels.square_kernel_matrix(X, peer),
                               atol=ATOL)
    np.testing.assert_allclose(kernel_matrix(X, Y, embedding), qml.kernels.kernel_matrix(X, Y, peer), atol=ATOL)


def test_assume_normalized_kernel():
    X = np.random.default_rng(3).uniform(-1, 1, (5, 2))
    K = square_kernel_matrix(X, angle_embedding, assume_normalized_kernel=True)
    assert (np.diag(K) == 1.0).all()
    np.testing.assert_array_equal(K - np.diag(np.diag(K)),
                                  (lambda M: M - np.diag(np.diag(M)))(square_kernel_matrix(X, angle_embedding)))
    one = square_kernel_matrix(X[:1], angle_embedding, assume_normalized_kernel=True)
    np.testing.assert_array_equal(one, qml.kernels.square_kernel_matrix(X[:1], None, assume_normalized_kernel=True))


def test_trainable_parameters_are_read_at_each_call():
    params = demo_params(seed=4)
    wires = list(range(5))

    def embedding(x):
        demo_ansatz(x, params, wires)

    X = np.random.default_rng(5).uniform(-1, 1, (4, 2))
    before = square_kernel_matrix(X, embedding)
    params[0, 0] += 0.7  # a training step changes the closure's parameters in place
    after = square_kernel_matrix(X, embedding)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, qml.kernels.square_kernel_matrix(X, pennylane_kernel(embedding, wires)),
                               atol=ATOL)


def test_svc_on_the_kernel_functions():
    rng = np.random.default_rng(6)
    X, X_test = rng.uniform(-np.pi, np.pi, (16, 2)), rng.uniform(-np.pi, np.pi, (6, 2))
    y = (np.sin(X[:, 0]) * np.cos(X[:, 1]) > 0).astype(int)
    model = SVC(kernel=lambda A, B: kernel_matrix(A, B, angle_embedding)).fit(X, y)
    peer = pennylane_kernel(angle_embedding, [0, 1])
    ref = SVC(kernel="precomputed").fit(qml.kernels.square_kernel_matrix(X, peer), y)
    np.testing.assert_array_equal(model.predict(X_test), ref.predict(qml.kernels.kernel_matrix(X_test, X, peer)))


@pytest.mark.parametrize("call,match", [
    (lambda: square_kernel_matrix(np.zeros(3), angle_embedding), "2-D"),
    (lambda: square_kernel_matrix(np.zeros((2, 2, 2)), angle_embedding), "2-D"),
    (lambda: square_kernel_matrix(np.zeros((0, 2)), angle_embedding), "no samples"),
    (lambda: square_kernel_matrix(np.zeros((2, 0)), angle_embedding), "no features"),
    (lambda: square_kernel_matrix([[np.nan, 0.0]], angle_embedding), "NaN"),
    (lambda: square_kernel_matrix([["a", "b"]], angle_embedding), "real"),
    (lambda: kernel_matrix(np.zeros((2, 2)), np.zeros((2, 3)), angle_embedding), "different numbers of features"),
    (lambda: square_kernel_matrix(np.zeros((2, 1)), lambda x: qml.RX(x[1], wires=0)), "beyond"),
    (lambda: square_kernel_matrix(np.zeros((2, 1)), lambda x: None), "no operation"),
    (lambda: square_kernel_matrix(np.zeros((2, 1)), lambda x: qml.MultiRZ(x[0], wires=[0, 1, 2])),
     "not supported"),
], ids=["1-D", "3-D", "empty", "no-features", "nan", "strings", "widths", "feature-beyond", "no-ops", "multirz-3-wires"])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_embedding_map_wires():
    fm = embedding_map(lambda x: qml.AngleEmbedding(x, wires=[2, 0]), 2)
    assert fm.n_qubits == 2
    assert embedding_map(angle_embedding, 2, wires=[0, 1, 2]).n_qubits == 3  # an idle wire: same kernel
    X = np.random.default_rng(7).uniform(-1, 1, (3, 2))
    np.testing.assert_allclose(square_kernel_matrix(X, angle_embedding, wires=[0, 1, 2]),
                               square_kernel_matrix(X, angle_embedding), atol=ATOL)


def test_iqp_embedding_runs_on_the_built_in_simulator():
    from qmlnb.kernels import CircuitFeatureMap, FeatureMap

    fm = embedding_map(lambda x: qml.IQPEmbedding(x, wires=range(3), n_repeats=2), 3)
    assert isinstance(fm, FeatureMap) and fm.kind == "iqp" and fm.reps == 2
    assert isinstance(embedding_map(angle_embedding, 2), CircuitFeatureMap)
