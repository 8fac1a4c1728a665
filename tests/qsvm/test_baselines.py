"""The QSVM's controls: RBF SVM on the embeddings chosen like the QSVM, and PCA baselines on pixels."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.data import load_splits
from qmlnb.qsvm.baselines import (BASELINES, RBF_GAMMA_FACTORS, fit_baseline, fit_rbf_alignment, make_baseline,
                                  rbf_gram)
from qmlnb.qsvm.svm import fit_precomputed, kernel_target_alignment


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", classes=(3, 8), seed=0)


def features(splits, n=4):
    """A fixed random projection of the pixels to n features in [-pi, pi] (an embedding stand-in)."""
    P = np.random.default_rng(0).normal(size=(64, n)) / 8
    return [np.pi * np.tanh(X.reshape(len(X), -1) @ P) for X in (splits.X_train, splits.X_test)]


def test_rbf_control_chooses_gamma_by_alignment_and_c_by_the_qsvm_search(digits):
    E_train, E_test = features(digits)
    out = fit_rbf_alignment(E_train, digits.y_train, E_test, digits.y_test, cv=3, seed=0)
    gammas = [float(g) for g in out["alignments"]]
    assert len(gammas) == len(RBF_GAMMA_FACTORS)
    best = max(gammas, key=lambda g: out["alignments"][str(g)])
    assert out["params"]["gamma"] == pytest.approx(best)
    K = rbf_gram(E_train, gamma=best)
    assert kernel_target_alignment(K, digits.y_train) == pytest.approx(out["alignments"][str(best)])
    assert out["params"]["C"] == fit_precomputed(K, digits.y_train, cv=3, seed=0).C
    assert out["metrics"]["balanced_accuracy"] > 0.7  # well above chance on a 4-feature random projection
    d = out["diagnostics"]
    assert d["bandwidth"] == pytest.approx(best) and d["bandwidth_grid"] == pytest.approx(gammas)
    assert d["gaussian_correlation"] > 0.999  # a Gaussian is a Gaussian: the comparison works
    via_name = fit_baseline("rbf_svm_embeddings_alignment", E_train, digits.y_train, E_test, digits.y_test, cv=3)
    assert via_name["metrics"] == out["metrics"]


def test_rbf_gram_is_the_gaussian_kernel():
    A, B = np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 2.0]])
    np.testing.assert_allclose(rbf_gram(A, B, 0.5), [[np.exp(-2.0)], [np.exp(-2.5)]])
    np.testing.assert_allclose(np.diag(rbf_gram(A, gamma=3.0)), 1.0)


@pytest.mark.parametrize("name", ["rbf_svm_pixels", "logreg_pixels", "rbf_svm_pixels_full"])
def test_pixel_baselines_after_pca(digits, name):
    out = fit_baseline(name, digits.X_train.reshape(len(digits.X_train), -1), digits.y_train,
                       digits.X_test.reshape(len(digits.X_test), -1), digits.y_test, cv=3)
    assert BASELINES[name][0] == "pixels" and out["metrics"]["balanced_accuracy"] > 0.9
    assert "C" in out["params"]


def test_full_pixel_rbf_chooses_gamma_and_C_on_the_training_split(digits):
    """All 64 pixels, no PCA; gamma from its grid in units of 1 / n_pixels, both chosen by CV on training data only."""
    from qmlnb.qsvm.baselines import PIXEL_GAMMA_FACTORS

    X_train = digits.X_train.reshape(len(digits.X_train), -1)
    out = fit_baseline("rbf_svm_pixels_full", X_train, digits.y_train, X_train[:5], digits.y_train[:5], cv=3)
    assert out["params"]["gamma"] in [f / 64 for f in PIXEL_GAMMA_FACTORS]
    assert out["params"]["C"] in (1.0, 10.0, 100.0)
    search = make_baseline("rbf_svm_pixels_full", cv=3, n_features=64)
    assert "pca" not in search.estimator.named_steps


def test_pca_components_fit_the_smallest_training_fold(digits):
    X = digits.X_train.reshape(len(digits.X_train), -1)[:20]
    y = digits.y_train[:20]
    assert len(set(y)) == 2
    out = fit_baseline("rbf_svm_pixels", X, y, X, y, cv=5)  # folds of 16 samples: at most 15 components
    assert 0 <= out["metrics"]["balanced_accuracy"] <= 1
    assert make_baseline("logreg_pixels", cv=3, pca_components=7).estimator.named_steps["pca"].n_components == 7
    with pytest.raises(ValueError, match="not a grid search"):
        make_baseline("rbf_svm_embeddings_alignment", cv=3)


def test_identical_features_are_refused():
    X = np.zeros((10, 3))
    y = np.array([0, 1] * 5)
    with pytest.raises(ValueError, match="identical"):
        fit_rbf_alignment(X, y, X, y, cv=2)
