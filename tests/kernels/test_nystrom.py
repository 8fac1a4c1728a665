"""NystroemQuantumKernel: features F with F F^T ~ K, error vs M, tile-wise error."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from qmlnb.kernels import FeatureMap, gram
from qmlnb.kernels.nystrom import NystroemQuantumKernel, relative_frobenius_error

FM = FeatureMap(n_qubits=4, bandwidth=0.5)


@pytest.fixture(scope="module")
def data():
    X = np.random.default_rng(3).uniform(0, 1, (160, 4))
    S = FM.states(X)
    return X, S, gram(S)


def dense_error(K, F):
    return np.linalg.norm(K - F @ F.T) / np.linalg.norm(K)


@pytest.mark.parametrize("landmarks", ["uniform", "kmeans++"])
def test_error_decreases_with_m(data, landmarks):
    X, S, K = data
    errors = [dense_error(K, NystroemQuantumKernel(FM, m, landmarks=landmarks, random_state=0).fit_transform(X))
              for m in (8, 32, 96)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] > 0.1 and errors[2] < 0.05


def test_all_samples_as_landmarks_is_exact(data):
    X, S, K = data
    F = NystroemQuantumKernel(FM, len(X), random_state=0).fit_transform(X)
    assert F.shape == (160, 160)
    np.testing.assert_allclose(F @ F.T, K, atol=1e-5)


def test_landmark_block_is_reproduced(data):
    # C W^+ C^T restricted to the landmarks is W W^+ W = W
    X, S, K = data
    ny = NystroemQuantumKernel(FM, 40, landmarks="kmeans++", random_state=1).fit(X)
    idx = ny.landmark_indices_
    assert len(np.unique(idx)) == 40
    F = ny.transform(X[idx])
    np.testing.assert_allclose(F @ F.T, K[np.ix_(idx, idx)], atol=1e-4)


def test_transform_states_matches_transform(data):
    X, S, K = data
    ny = NystroemQuantumKernel(FM, 20, random_state=0).fit(X)
    np.testing.assert_allclose(ny.transform(X[:30]), ny.transform_states(S[:30]), atol=1e-12)


def test_tilewise_error_equals_dense(data):
    X, S, K = data
    F = NystroemQuantumKernel(FM, 24, random_state=2).fit_transform(X)
    assert relative_frobenius_error(S, F, tile=37) == pytest.approx(dense_error(K, F), rel=1e-6)  # float32 rounding of K
    G = NystroemQuantumKernel(FM, 60, random_state=2).fit_transform(X)
    assert relative_frobenius_error(S, [F, G], tile=50) == pytest.approx([dense_error(K, F), dense_error(K, G)], rel=1e-6)


def test_works_in_a_pipeline():
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.svm import LinearSVC

    X, y = load_digits(return_X_y=True)
    keep = y < 2
    X, y = X[keep], y[keep]
    X = MinMaxScaler((0, np.pi)).fit_transform(PCA(4, random_state=0).fit_transform(X))
    model = make_pipeline(NystroemQuantumKernel(FM, 50, random_state=0), LinearSVC())
    model.fit(X[::2], y[::2])
    assert model.score(X[1::2], y[1::2]) > 0.9  # 0 vs 1 digits: easily separable


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_components": 0}, ValueError, "n_components must be a positive integer"),
    ({"n_components": 500}, ValueError, "cannot be chosen among 160 samples"),
    ({"landmarks": "random"}, ValueError, "landmarks must be one of"),
    ({"eig_cutoff": -1.0}, ValueError, "eig_cutoff must be a number in"),
    ({"feature_map": "zz"}, TypeError, "feature_map must be a qmlnb FeatureMap"),
    ({"backend": "nope"}, ValueError, "unknown Gram backend"),
])
def test_bad_parameters_are_refused(data, kwargs, error, match):
    params = {"feature_map": FM, "n_components": 10, **kwargs}
    with pytest.raises(error, match=match):
        NystroemQuantumKernel(**params).fit(data[0])


def test_bad_inputs_are_refused(data):
    X, S, K = data
    with pytest.raises(NotFittedError):
        NystroemQuantumKernel(FM, 10).transform(X)
    ny = NystroemQuantumKernel(FM, 10, random_state=0).fit(X)
    with pytest.raises(ValueError, match="features per sample"):
        ny.transform(X[:, :3])
    with pytest.raises(ValueError, match="dimension"):
        ny.transform_states(S[:, :8])
    with pytest.raises(ValueError, match="features must have shape"):
        relative_frobenius_error(S, np.ones((5, 3)))
