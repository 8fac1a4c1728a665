"""Kernel diagnostics: the flags fire on concentrated and Gaussian-like Grams, and stay quiet otherwise."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap, gram
from qmlnb.qsvm.diagnostics import (KernelDiagnosticWarning, at_grid_edge, best_gaussian, effective_rank,
                                    kernel_diagnostics, warn_diagnostics)
from qmlnb.qsvm.svm import QuantumKernelSVC


@pytest.fixture(scope="module")
def angles():
    return np.random.default_rng(0).uniform(-np.pi, np.pi, (120, 10))


def fidelity(X, bandwidth):
    return gram(FeatureMap(n_qubits=X.shape[1], bandwidth=bandwidth).states(X), backend="cpu")


def test_a_concentrated_kernel_is_flagged(angles):
    d = kernel_diagnostics(fidelity(angles, 1.0), angles)  # 10 qubits, bandwidth 1: entries near 2**-10
    assert d["concentrated"] and not d["gaussian_like"]
    assert d["off_diagonal_std"] < 0.01 and d["off_diagonal_mean"] < 0.01
    assert d["effective_rank"] > 0.9 * len(angles)  # almost the identity
    assert any("concentrated" in w for w in d["warnings"])
    with pytest.warns(KernelDiagnosticWarning, match="concentrated"):
        warn_diagnostics(d)


def test_a_gaussian_in_disguise_is_flagged(angles):
    X = angles[:, :4]
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    K = np.exp(-0.05 * d2) + np.random.default_rng(1).normal(0, 1e-4, d2.shape)
    K = (K + K.T) / 2
    d = kernel_diagnostics(K, X)
    assert d["gaussian_like"] and not d["concentrated"]
    assert d["gaussian_correlation"] > 0.999 and d["gaussian_gamma"] == pytest.approx(0.05, rel=0.15)
    assert d["warnings"] and "Gaussian in disguise" in d["warnings"][0]


def test_a_kernel_that_is_neither_raises_no_flag(angles):
    X = angles[:, :4]
    d = kernel_diagnostics(fidelity(X, 0.5), X, alignment=0.1, bandwidth=0.5, grid=(0.1, 0.5, 1.0), n_support=30)
    assert not d["concentrated"] and not d["gaussian_like"] and d["bandwidth_at_grid_edge"] is False
    assert d["warnings"] == [] and d["support_fraction"] == pytest.approx(30 / 120) and d["alignment"] == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_diagnostics(d)


def test_grid_edges_and_helpers():
    assert at_grid_edge(0.02, (0.02, 0.1, 1.0)) and at_grid_edge(1.0, [1.0, 0.1, 0.02])
    assert at_grid_edge(0.1, (0.02, 0.1, 1.0)) is False and at_grid_edge(0.1, None) is None
    assert at_grid_edge(0.1, (0.1,)) is None
    assert effective_rank(np.eye(7)) == pytest.approx(7) and effective_rank(np.ones((5, 5))) == pytest.approx(1)
    assert all(math.isnan(v) for v in best_gaussian(np.ones((4, 4)), np.arange(4.0)[:, None]))
    K = np.eye(3)
    with pytest.raises(ValueError, match="square"):
        kernel_diagnostics(np.ones((3, 2)))
    with pytest.raises(ValueError, match="rows"):
        kernel_diagnostics(K, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        kernel_diagnostics(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="n_support"):
        kernel_diagnostics(K, n_support=4)


def test_large_grams_are_diagnosed_on_a_seeded_subset(angles):
    X = np.random.default_rng(2).uniform(-1, 1, (300, 4))
    K = fidelity(X, 0.5)
    a = kernel_diagnostics(K, X, max_samples=100, seed=3)
    assert a["n_samples"] == 300 and a["n_samples_diagnosed"] == 100
    assert a == kernel_diagnostics(K, X, max_samples=100, seed=3)
    assert a["off_diagonal_mean"] == pytest.approx(kernel_diagnostics(K, X)["off_diagonal_mean"], abs=0.02)


def test_the_fitted_svm_carries_its_diagnostics_and_warns_at_the_grid_edge():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 4))
    y = (X[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int)
    with pytest.warns(KernelDiagnosticWarning, match="edge of its grid"):
        clf = QuantumKernelSVC(n_qubits=4, bandwidths=(0.2, 0.6), C=1.0).fit(X, y)
    d = clf.diagnostics_
    assert d["bandwidth"] == clf.bandwidth_ and d["bandwidth_at_grid_edge"] is True
    assert d["alignment"] == clf.alignments_[clf.bandwidth_]
    assert d["support_fraction"] == pytest.approx(len(clf.support_) / 60)
    assert d["off_diagonal_mean"] == pytest.approx(
        clf.train_kernel_[~np.eye(60, dtype=bool)].mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelDiagnosticWarning)
        fixed = QuantumKernelSVC(n_qubits=4, bandwidth=0.6, C=1.0).fit(X, y)  # fixed bandwidth: no grid, no edge
    assert fixed.diagnostics_["bandwidth_at_grid_edge"] is None and fixed.diagnostics_["bandwidth_grid"] is None
