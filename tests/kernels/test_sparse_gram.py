"""sparse_gram: top-k neighbour kernels as CSR matrices, the finders, and the models on them."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from qmlnb.kernels import FeatureMap, gram, sparse_gram
from qmlnb.kernels.sparse import (exact_neighbours, find_neighbours, neighbour_recall, pair_kernel, probe_cuvs,
                                  search_representation)


@pytest.fixture(scope="module")
def problem():
    """Two noisy clusters of 4-feature embeddings, their states, MPS and the dense Gram."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 150)
    X = rng.normal(0, 0.25, (300, 4)) + np.where(y[:, None] == 1, 1.2, 0.3)
    fm = FeatureMap(n_qubits=4, bandwidth=1.0)
    S = fm.states(X)
    return X, y, fm, S, fm.mps(X), gram(S)


def brute_force(K, k):
    """Each row's k largest off-diagonal entries of a dense K, as index sets."""
    D = K.copy()
    np.fill_diagonal(D, -np.inf)
    return np.argsort(-D, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("which", ["states", "mps"])
def test_entries_equal_the_dense_gram_symmetric_with_diagonal(problem, which):
    X, y, fm, S, M, K = problem
    A, idx = sparse_gram(S if which == "states" else M, k=6, tile=64, return_neighbours=True)
    assert isinstance(A, sparse.csr_matrix) and A.shape == K.shape and A.has_sorted_indices
    i, j = A.nonzero()
    np.testing.assert_allclose(A[i, j].A1, K[i, j], atol=1e-6, rtol=0)
    assert (A != A.T).nnz == 0
    np.testing.assert_allclose(A.diagonal(), 1.0, atol=1e-6)
    # every sample's own neighbours are stored; at most both directions of each plus the diagonal
    assert all(A[r, idx[r]].min() > 0 for r in range(0, len(S), 37))
    assert len(S) * 7 <= A.nnz <= len(S) * 13


def test_mps_and_states_find_the_same_graph(problem):
    X, y, fm, S, M, K = problem
    a, b = sparse_gram(S, k=5, tile=100), sparse_gram(M, k=5, tile=100)
    assert (a != b).nnz == 0 or set(zip(*a.nonzero())) == set(zip(*b.nonzero()))


@pytest.mark.parametrize("tile", [7, 64, 1000])
def test_exact_top_k_equals_brute_force(problem, tile):
    X, y, fm, S, M, K = problem
    idx, values = exact_neighbours(S, 9, tile=tile)
    expected = brute_force(K, 9)
    # the same sets (ties aside: values equal to float32 rounding), best first
    np.testing.assert_allclose(values, np.take_along_axis(K, expected, 1), atol=1e-6)
    assert neighbour_recall(idx, expected) > 0.99
    assert np.all(np.diff(values, axis=1) <= 0)
    assert not np.any(idx == np.arange(len(S))[:, None])


def test_pair_kernel_is_symmetric_and_exact(problem):
    X, y, fm, S, M, K = problem
    i, j = np.array([0, 5, 299, 17]), np.array([3, 5, 0, 200])
    np.testing.assert_array_equal(pair_kernel(S, i, j), pair_kernel(S, j, i))
    np.testing.assert_allclose(pair_kernel(S, i, j), K[i, j], atol=1e-6)
    np.testing.assert_allclose(pair_kernel(M, i, j), K[i, j], atol=1e-6)


def test_recall_counts_matches():
    exact = np.array([[1, 2, 3], [0, 2, 3]])
    assert neighbour_recall(exact, exact) == 1.0
    assert neighbour_recall(np.array([[3, 9, -1], [2, 0, 3]]), exact) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="one shape"):
        neighbour_recall(exact[:, :2], exact)


@pytest.mark.parametrize("finder", ["pynndescent", "faiss"])
def test_approximate_finder_recall_is_measured(problem, finder):
    pytest.importorskip("pynndescent" if finder == "pynndescent" else "faiss",
                        reason=f"{finder} is in the optional sparse extra")
    X, y, fm, S, M, K = problem
    exact = brute_force(K, 8)
    found = find_neighbours(S, 8, finder, candidates=32)
    recall = neighbour_recall(found, exact)
    assert 0.8 <= recall <= 1.0
    # the values of what is found are exact kernel values, whatever the search's metric
    A = sparse_gram(S, k=8, neighbours=finder, candidates=32)
    i, j = A.nonzero()
    np.testing.assert_allclose(A[i, j].A1, K[i, j], atol=1e-6)
    # MPS: the search runs on the embeddings
    assert neighbour_recall(find_neighbours(M, 8, finder, features=X, candidates=32), exact) > 0.5


def test_search_representation_is_phase_invariant(problem):
    X, y, fm, S, M, K = problem
    rotated = S * np.exp(1j * np.random.default_rng(1).uniform(0, 2 * np.pi, len(S)))[:, None].astype(np.complex64)
    # the same points up to an isometry (the estimated directions' own phases are arbitrary): equal distances
    a, b = search_representation(rotated, dims=16), search_representation(S, dims=16)
    distances = [np.linalg.norm(p[:, None, :] - p[None, :60, :], axis=2) for p in (a, b)]
    np.testing.assert_allclose(*distances, atol=1e-4)


def test_bad_arguments_raise(problem):
    X, y, fm, S, M, K = problem
    with pytest.raises(ValueError, match="k=300 neighbours"):
        sparse_gram(S, k=300)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            sparse_gram(S, k=bad)
    with pytest.raises(ValueError, match="neighbours must be one of"):
        sparse_gram(S, k=3, neighbours="annoy")
    with pytest.raises(ValueError, match="not unit vectors"):
        sparse_gram(2 * S, k=3)
    with pytest.raises(ValueError, match="needs features="):
        find_neighbours(M, 3, "faiss")
    with pytest.raises(ValueError, match="one row per sample"):
        find_neighbours(S, 3, "faiss", features=X[:10])
    with pytest.raises(ValueError, match="fewer than k"):
        find_neighbours(S, 5, "faiss", candidates=3)


def test_cuvs_is_probed_with_a_clear_error(problem):
    X, y, fm, S, M, K = problem
    usable, reason = probe_cuvs()
    if usable:
        pytest.skip(f"cuVS can run here ({reason}); the GPU path is checked where it runs")
    with pytest.raises(RuntimeError, match="neighbours='cuvs' cannot run here"):
        sparse_gram(S, k=3, neighbours="cuvs")


@pytest.mark.skipif(not probe_cuvs()[0], reason="needs cuVS and a CUDA GPU")
def test_cuvs_recall(problem):  # pragma: no cover - GPU only
    X, y, fm, S, M, K = problem
    assert neighbour_recall(find_neighbours(S, 8, "cuvs", candidates=32), brute_force(K, 8)) >= 0.8


# ---------------------------------------------------------------- models
def test_models_on_the_sparse_kernel_and_the_rbf_control(problem):
    from qmlnb.qsvm.sparse_models import kernel_knn, label_spreading, nystrom_qsvm, rbf_sparse_gram

    X, y, fm, S, M, K = problem
    rng = np.random.default_rng(2)
    order = rng.permutation(len(y))
    train, test = order[:200], order[200:]
    A = sparse_gram(S, k=10)
    R, gamma = rbf_sparse_gram(X, k=10)
    assert gamma > 0 and (R != R.T).nnz == 0 and np.allclose(R.diagonal(), 1.0)
    for kernel in (A, R):
        knn = kernel_knn(kernel, y, train, test, n_neighbors=5)
        spread = label_spreading(kernel, y, train, test)
        # two separated clusters: both must do far better than chance
        assert knn["balanced_accuracy"] > 0.85 and spread["balanced_accuracy"] > 0.85
        assert 0 <= knn["unreached"] < 0.2 and spread["iterations"] >= 1
    # labels that ignore the data: the same models must fall to chance (the metrics can say no)
    shuffled = rng.permutation(y)
    assert kernel_knn(A, shuffled, train, test)["balanced_accuracy"] < 0.7
    metrics = nystrom_qsvm(fm, X[train], y[train], X[test], y[test], n_components=40)
    assert metrics["balanced_accuracy"] > 0.85
    with pytest.raises(ValueError, match="share samples"):
        kernel_knn(A, y, train, train[:3])
    with pytest.raises(ValueError, match="square scipy.sparse"):
        label_spreading(K, y, train, test)
    with pytest.raises(ValueError, match="alpha"):
        label_spreading(A, y, train, test, alpha=1.0)


def test_umap_baseline_is_optional_and_runs_when_installed(problem):
    from qmlnb.qsvm.baselines import BASELINES, OPTIONAL_BASELINES, fit_baseline, umap_2d

    assert not set(OPTIONAL_BASELINES) & set(BASELINES)  # the default set does not need umap-learn
    pytest.importorskip("umap", reason="umap-learn is in the optional sparse extra")
    X, y, fm, S, M, K = problem
    pixels = np.hstack([X, np.random.default_rng(3).normal(size=(len(X), 12))])
    result = fit_baseline("umap_logreg_pixels", pixels[::2], y[::2], pixels[1::2], y[1::2], cv=3)
    assert result["metrics"]["balanced_accuracy"] > 0.8
    picture = umap_2d(X, seed=0)
    assert picture.shape == (len(X), 2) and np.isfinite(picture).all()
    np.testing.assert_array_equal(picture, umap_2d(X, seed=0))


def test_exact_neighbours_of_some_rows(problem):
    X, y, fm, S, M, K = problem
    rows = np.array([0, 7, 150, 299])
    idx, values = exact_neighbours(S, 6, rows=rows, tile=50)
    np.testing.assert_allclose(values, np.take_along_axis(K[rows], brute_force(K, 6)[rows], 1), atol=1e-6)
    assert not np.any(idx == rows[:, None])
    with pytest.raises(ValueError, match="rows must be"):
        exact_neighbours(S, 6, rows=np.array([300]))


# ---------------------------------------------------------------- speed paths: gate-angle search, blocked re-rank
@pytest.fixture(scope="module")
def ten_qubits():
    """400 clustered embeddings on 10 qubits at bandwidth 0.1 (off-diagonal entries far from 0), states, Gram."""
    rng = np.random.default_rng(4)
    centres = rng.uniform(0, np.pi, (5, 10))
    X = np.clip(centres[rng.integers(0, 5, 400)] + rng.normal(0, 0.4, (400, 10)), 0, np.pi)
    fm = FeatureMap(n_qubits=10, bandwidth=0.1)
    S = fm.states(X)
    return X, fm, S, gram(S)


def test_gate_angle_search_reaches_the_recall_target(ten_qubits):
    pytest.importorskip("faiss", reason="faiss-cpu is in the optional sparse extra")
    from qmlnb.kernels.sparse import search_features

    X, fm, S, K = ten_qubits
    off = K[np.triu_indices(len(K), 1)]
    assert np.median(off) > 0.02  # a kernel that means something, not one near the identity (0.001 is)
    exact = brute_force(K, 16)
    F = search_features(fm, X)
    assert F.shape == (400, 10 + 9) and F.dtype == np.float32
    recall = neighbour_recall(find_neighbours(S, 16, "faiss", features=F, candidates=32), exact)
    assert recall >= 0.95
    # the embeddings themselves are a worse proxy of the fidelity at the same number of candidates
    assert recall >= neighbour_recall(find_neighbours(S, 16, "faiss", features=X, candidates=32), exact)


@pytest.mark.parametrize("finder", ["exact", "faiss"])
def test_reused_finder_values_equal_the_dense_gram_at_ten_qubits(ten_qubits, finder):
    if finder == "faiss":
        pytest.importorskip("faiss", reason="faiss-cpu is in the optional sparse extra")
    from qmlnb.kernels.sparse import search_features

    X, fm, S, K = ten_qubits
    extra = {} if finder == "exact" else {"features": search_features(fm, X), "candidates": 48}
    A = sparse_gram(S, k=12, neighbours=finder, tile=96, n_threads=2, **extra)
    i, j = A.nonzero()
    np.testing.assert_allclose(A[i, j].A1, K[i, j], atol=1e-6, rtol=0)
    assert (A != A.T).nnz == 0 and A.has_sorted_indices
    np.testing.assert_allclose(A.diagonal(), 1.0, atol=1e-6)


def test_blocked_candidate_values_equal_pair_values(ten_qubits):
    from qmlnb.kernels.sparse import candidate_values

    X, fm, S, K = ten_qubits
    rng = np.random.default_rng(5)
    found = rng.integers(0, len(S), (len(S), 7))
    found[::9, 3] = -1  # nothing found there
    values = candidate_values(S, found, n_threads=2)
    assert values.shape == found.shape and values.dtype == np.float32
    assert np.all(np.isneginf(values[found < 0]))
    r = np.broadcast_to(np.arange(len(S))[:, None], found.shape)
    np.testing.assert_allclose(values[found >= 0], K[r[found >= 0], found[found >= 0]], atol=1e-6)


def test_neighbour_graph_takes_one_value_per_pair():
    from qmlnb.kernels.sparse import neighbour_graph

    idx = np.array([[1, 2], [0, -1], [1, 0]])
    values = np.array([[0.5, 0.25], [0.5001, -np.inf], [0.125, 0.2501]])
    A = neighbour_graph(idx, values, diagonal=np.array([1.0, 0.5, 0.75])).toarray()
    # (0, 1) and (0, 2) were found from both ends: the smaller index's value; (1, 2) only from 2
    expected = np.array([[1.0, 0.5, 0.25], [0.5, 0.5, 0.125], [0.25, 0.125, 0.75]])
    np.testing.assert_array_equal(A, expected)
    with pytest.raises(ValueError, match="neighbour lists' shape"):
        neighbour_graph(idx, values[:, :1])


def test_search_features_refuses_what_it_cannot_read(ten_qubits):
    from qmlnb.kernels.sparse import search_features

    X, fm, S, K = ten_qubits
    with pytest.raises(TypeError, match="needs a FeatureMap"):
        search_features(object(), X)
    with pytest.raises(ValueError, match="feature map expects 10"):
        search_features(fm, X[:, :4])


def test_neighbour_graph_stores_a_listed_self_pair_once():
    from qmlnb.kernels.sparse import neighbour_graph

    A = neighbour_graph(np.array([[0, 1], [0, 1]]), np.array([[0.9, 0.5], [0.5, 0.9]]), diagonal=1.0)
    np.testing.assert_array_equal(A.toarray(), [[1.0, 0.5], [0.5, 1.0]])
