"""Models on a sparse (top-k neighbour) kernel, and their classical control.

A ``sparse_gram`` matrix is built on all samples at once (training and test:
the neighbour search needs no labels), and the models read it transductively:

- :func:`kernel_knn`: each test sample's class scores are the kernel-weighted
  votes of the labelled samples among its stored neighbours (its row of K);
- :func:`label_spreading`: Zhou et al.'s normalised propagation (NIPS 2003)
  on the graph W = K without its diagonal: F <- alpha D^-1/2 W D^-1/2 F +
  (1 - alpha) Y, iterated on the CSR matrix (O(nnz) per step, never dense);
- :func:`rbf_sparse_gram`: the classical control, the same top-k construction
  with an RBF kernel on the embeddings (Euclidean neighbours), so that the
  quantum kernel is compared with the classical kernel it would replace;
- :func:`nystrom_qsvm`: the QSVM of the dense branch at scale, a linear SVM on
  ``NystroemQuantumKernel`` features, for comparison.

Every function returns ``qmlnb.metrics.classification_metrics`` of the test samples.
"""
from __future__ import annotations

import numpy as np

from ..kernels.sparse import check_k, neighbour_graph
from ..metrics import classification_metrics

LABEL_SPREADING_ALPHA = 0.2


def _check_problem(K, y, train, test):
    """Validated (K as CSR float64, y (N,) int, train (T,) int, test (M,) int, n_classes)."""
    from scipy import sparse

    if not sparse.issparse(K) or K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square scipy.sparse matrix (sparse_gram), got {type(K).__name__} "
                         f"of shape {getattr(K, 'shape', None)}")
    K = sparse.csr_matrix(K, dtype=np.float64)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != K.shape[0] or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise ValueError(f"y must be (N,) = ({K.shape[0]},) non-negative integer labels, got {y.dtype} {y.shape}")
    train, test = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    for name, part in (("train", train), ("test", test)):
        if part.ndim != 1 or part.size == 0 or part.min() < 0 or part.max() >= K.shape[0]:
            raise ValueError(f"{name} must be a non-empty 1-D array of sample indices in [0, {K.shape[0]})")
    if np.intersect1d(train, test).size:
        raise ValueError("train and test share samples; a test label would be seen during training")
    if len(np.unique(y[train])) < 2:
        raise ValueError("the training samples hold fewer than 2 classes")
    return K, y, train, test, int(y.max()) + 1


def _scores_to_metrics(scores: np.ndarray, y_test: np.ndarray, n_classes: int) -> dict:
    """Metrics of argmax predictions; a row without any evidence (all 0) predicts nothing better than class 0,
    and is counted in ``unreached`` (the fraction of test samples with no labelled sample in reach)."""
    predicted = scores.argmax(axis=1)
    metrics = classification_metrics(y_test, predicted, scores, n_classes=n_classes)
    metrics["unreached"] = float(np.mean(~(scores > 0).any(axis=1)))
    return metrics


def kernel_knn(K, y, train, test, *, n_neighbors: int | None = None) -> dict:
    """Kernel k-NN on a sparse kernel: votes of the ``n_neighbors`` labelled neighbours of largest kernel value.

    K : (N, N) scipy.sparse kernel over all samples (``sparse_gram``)
    y : (N,) int labels (only ``y[train]`` is read)
    train, test : int index arrays, disjoint
    n_neighbors : labelled neighbours per test sample (default: all stored in its row)

    Returns ``classification_metrics`` of the test samples, with per-class
    scores = the sum of the kernel values of each class's votes, plus
    ``unreached``.
    """
    K, y, train, test, n_classes = _check_problem(K, y, train, test)
    labelled = np.zeros(K.shape[0], dtype=bool)
    labelled[train] = True
    rows = K[test]
    rows = rows.multiply(labelled[None, :]).tocsr()  # only labelled columns vote
    rows.eliminate_zeros()
    if n_neighbors is not None:
        n_neighbors = check_k(n_neighbors, K.shape[0])
        rows = _keep_largest_per_row(rows, n_neighbors)
    scores = np.zeros((len(test), n_classes))
    r = np.repeat(np.arange(len(test)), np.diff(rows.indptr))
    np.add.at(scores, (r, y[rows.indices]), rows.data)
    return _scores_to_metrics(scores, y[test], n_classes)


def _keep_largest_per_row(M, m: int):
    """A CSR matrix with only the ``m`` largest entries of each row of CSR ``M`` (vectorised over rows)."""
    from scipy import sparse

    counts = np.diff(M.indptr)
    r = np.repeat(np.arange(M.shape[0]), counts)
    order = np.lexsort((-M.data, r))
    start = np.repeat(M.indptr[:-1], counts)
    keep = order[(np.arange(len(order)) - start) < m]
    return sparse.csr_matrix((M.data[keep], (r[keep], M.indices[keep])), shape=M.shape)


def label_spreading(K, y, train, test, *, alpha: float = LABEL_SPREADING_ALPHA, max_iter: int = 200,
                    tol: float = 1e-6) -> dict:
    """Graph label spreading (Zhou et al. 2003) on a sparse kernel's graph: metrics of the test samples.

    K : (N, N) scipy.sparse symmetric kernel (``sparse_gram``); its diagonal is dropped (no self loops)
    y, train, test : as :func:`kernel_knn`
    alpha : in (0, 1): the share of each step taken from the neighbours (the rest stays with the labels)
    max_iter, tol : stop after ``max_iter`` steps or when no label mass moves by more than ``tol``

    Returns ``classification_metrics`` with the propagated label distribution
    as scores, plus ``unreached`` (test samples no label reached: not
    connected to any training sample) and ``iterations``.
    """
    from scipy import sparse

    K, y, train, test, n_classes = _check_problem(K, y, train, test)
    if not (0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    W = K - sparse.diags(K.diagonal())
    W.eliminate_zeros()
    degree = np.asarray(W.sum(axis=1)).ravel()
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    S = sparse.diags(inv_sqrt) @ W @ sparse.diags(inv_sqrt)
    Y = np.zeros((K.shape[0], n_classes))
    Y[train, y[train]] = 1.0
    F = Y.copy()
    iterations = 0
    for iterations in range(1, max_iter + 1):
        F_next = alpha * (S @ F) + (1 - alpha) * Y
        moved = float(np.abs(F_next - F).max())
        F = F_next
        if moved <= tol:
            break
    metrics = _scores_to_metrics(F[test], y[test], n_classes)
    metrics["iterations"] = iterations
    return metrics


def rbf_sparse_gram(X, *, k: int, gamma: float | str = "median", n_threads: int | None = None):
    """The classical control of ``sparse_gram``: exp(-gamma |x_i - x_j|^2) on each sample's k Euclidean nearest
    neighbours (exact, scikit-learn's NearestNeighbors), symmetrised, with the diagonal (1).

    X : (N, F) real embeddings;  gamma : > 0, or "median" (1 / the median squared distance to the k-th neighbour)
    Returns (scipy.sparse.csr_matrix (N, N) float64, gamma used).
    """
    from sklearn.neighbors import NearestNeighbors
    from sklearn.utils.validation import check_array

    X = check_array(X, dtype=np.float64)
    k = check_k(k, X.shape[0])
    distances, idx = NearestNeighbors(n_neighbors=k + 1, n_jobs=n_threads).fit(X).kneighbors(X)
    # each sample finds itself first unless an exact duplicate ties with it: drop the sample itself wherever it is
    others = idx != np.arange(len(X))[:, None]
    idx = np.stack([row[keep][:k] for row, keep in zip(idx, others)]) if not others[:, 0].all() else idx[:, 1:]
    if isinstance(gamma, str):
        if gamma != "median":
            raise ValueError(f"gamma must be a positive number or 'median', got {gamma!r}")
        scale = float(np.median(distances[:, -1] ** 2))
        if not scale > 0:
            raise ValueError("the k-th neighbour distances are all 0 (duplicated samples); give gamma explicitly")
        gamma = 1.0 / scale
    elif not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive number or 'median', got {gamma!r}")

    def values(i, j):
        return np.exp(-gamma * np.sum((X[i] - X[j]) ** 2, axis=1))

    return neighbour_graph(idx, values), float(gamma)


def nystrom_qsvm(feature_map, X_train, y_train, X_test, y_test, *, n_components: int = 200, C: float = 1.0,
                 backend: str = "cpu", seed: int = 0) -> dict:
    """The dense branch's QSVM at scale for comparison: a linear SVM on Nystrom features of the fidelity kernel.

    X_* : (N, n_qubits) embeddings; y_* : (N,) int labels.  ``n_components``
    landmarks (k-means++ on the training embeddings).  Returns
    ``classification_metrics`` of the test samples.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    from ..kernels.nystrom import NystroemQuantumKernel

    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    model = make_pipeline(NystroemQuantumKernel(feature_map, min(n_components, len(y_train)), landmarks="kmeans++",
                                                backend=backend, random_state=seed),
                          LinearSVC(C=C, dual="auto", max_iter=5000, random_state=seed))
    model.fit(X_train, y_train)
    scores = model.decision_function(X_test)
    return classification_metrics(y_test, model.predict(X_test), scores, n_classes=n_classes)
