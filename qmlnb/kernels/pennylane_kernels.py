"""``kernel_matrix`` and ``square_kernel_matrix``: PennyLane's ``qml.kernels`` helpers on qmlnb's engine.

PennyLane users write the embedding once and a kernel of two circuits around it::

    def embedding(x):                                   # the quantum function of the feature map
        qml.AngleEmbedding(x, wires=range(4))

    @qml.qnode(qml.device("default.qubit", wires=4))
    def circuit(x1, x2):
        embedding(x1)
        qml.adjoint(embedding)(x2)
        return qml.probs(wires=range(4))

    K = qml.kernels.square_kernel_matrix(X, lambda a, b: circuit(a, b)[0])   # one circuit per pair

Here the embedding itself is given, and the matrices are the same::

    from qmlnb.kernels.pennylane_kernels import kernel_matrix, square_kernel_matrix
    K = square_kernel_matrix(X, embedding)              # (N, N)
    K_test = kernel_matrix(X_test, X, embedding)        # (N_test, N)

The embedding is traced once per call with symbolic features
(``from_pennylane``), every state of X is simulated once, as a batch, and the
Gram is one product (``qmlnb.kernels.gram``), never a circuit per pair.  The
embedding is traced again on every call (a few milliseconds), so one that
reads trainable parameters from its closure always uses their current values.
PennyLane is imported by ``from_pennylane`` only, when a function here is called.
"""
from __future__ import annotations

import numpy as np

from .gram import gram
from .interop import default_backend, from_pennylane, native_equivalent
from .validation import check_embeddings


def embedding_map(embedding, n_features: int, wires=None):
    """The feature map of a PennyLane quantum function ``embedding(x)`` with ``n_features`` features.

    The built-in ``FeatureMap`` with the same kernel where there is one
    (``qml.IQPEmbedding``; ``interop.native_equivalent``), else the ``CircuitFeatureMap``.

    wires : the wire labels of the circuit, in order; default: the wires the
        embedding acts on, as PennyLane records them (wires it never touches
        stay in |0> and do not change the kernel).
    """
    import pennylane as qml

    from .circuit import Feature

    if wires is None:
        symbolic = np.array([Feature(k) for k in range(n_features)], dtype=object)
        try:
            wires = list(qml.tape.make_qscript(embedding)(symbolic).wires)
        except IndexError as err:
            raise ValueError(f"the embedding reads a feature beyond the data's {n_features} columns ({err})") from err
        if not wires:
            raise ValueError("the embedding applies no operation: it has no wires (pass wires=)")
    wires = list(wires)
    fm = from_pennylane(embedding, n_wires=len(wires), n_features=n_features, wires=wires)
    return native_equivalent(fm) or fm


def _check_data(X, name: str) -> np.ndarray:
    """X (list of datapoints or array) as a (N, D) float64 array: 2-D, at least one sample, finite reals."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of datapoints (n_samples, n_features), got shape {X.shape}")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {X.shape})")
    try:
        return check_embeddings(X, X.shape[1])
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err


def square_kernel_matrix(X, embedding, assume_normalized_kernel: bool = False, *, wires=None,
                         backend: str | None = None, n_threads: int | None = None) -> np.ndarray:
    """The (N, N) float64 fidelity kernel matrix |<phi(x_i)|phi(x_j)>|^2 of X (N, D), as ``qml.kernels.square_kernel_matrix``.

    Parameters
    ----------
    X : array_like, shape (N, D), real
    embedding : callable ``embedding(x)`` applying PennyLane operations (the feature map)
    assume_normalized_kernel : bool
        As in PennyLane: the diagonal is set to exactly 1 (without it, the
        diagonal is computed, 1 to about 1e-7 in complex64).
    wires : wire labels, optional (see ``embedding_map``)
    backend, n_threads : passed to ``qmlnb.kernels.gram`` (default backend: ``interop.default_backend()``).
    """
    X = _check_data(X, "X")
    K = gram(embedding_map(embedding, X.shape[1], wires).states(X), backend=backend or default_backend(),
             n_threads=n_threads)
    if assume_normalized_kernel:
        np.fill_diagonal(K, 1.0)
    return K


def kernel_matrix(X1, X2, embedding, *, wires=None, backend: str | None = None,
                  n_threads: int | None = None) -> np.ndarray:
    """The (N, M) float64 fidelity kernel matrix of X1 (N, D) against X2 (M, D), as ``qml.kernels.kernel_matrix``.

    Raises ValueError when X1 and X2 have different numbers of features.
    """
    X1, X2 = _check_data(X1, "X1"), _check_data(X2, "X2")
    if X1.shape[1] != X2.shape[1]:
        raise ValueError(f"X1 and X2 have different numbers of features: {X1.shape[1]} and {X2.shape[1]}")
    fm = embedding_map(embedding, X1.shape[1], wires)
    return gram(fm.states(X1), fm.states(X2), backend=backend or default_backend(), n_threads=n_threads)
