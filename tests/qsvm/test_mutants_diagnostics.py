"""qmlnb.qsvm.diagnostics at its edges: the cases a mutmut run over diagnostics.py showed no other test pins.

Thresholds met exactly, the smallest Grams, small distances, degenerate inputs that must give NaN without
warnings, input dtypes, the subset drawn without replacement, and where a diagnostic warning points.
"""
from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest

from qmlnb.qsvm import diagnostics
from qmlnb.qsvm.diagnostics import (KernelDiagnosticWarning, best_gaussian, effective_rank, kernel_diagnostics,
                                    warn_diagnostics)


def gaussian(X, gamma):
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-gamma * d2)


def random_gram(n, seed=0):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n, 3))
    return F @ F.T / 3 + np.eye(n)


def test_best_gaussian_on_small_distances_and_three_samples():
    # every squared distance is far below 1: the Gaussian is still found at its own gamma
    X = np.random.default_rng(0).uniform(0, 0.1, (30, 2))
    gamma, corr = best_gaussian(gaussian(X, 50.0), X)
    assert corr > 0.999 and gamma == pytest.approx(50.0, rel=0.15)
    # three samples are enough (three pairs)
    X3 = np.array([[0.0], [1.0], [3.0]])
    gamma, corr = best_gaussian(gaussian(X3, 0.2), X3)
    assert math.isfinite(gamma) and corr > 0.99


def test_best_gaussian_reads_float32_and_integer_inputs_as_float64():
    X = np.random.default_rng(1).integers(0, 5, (20, 2))
    K = gaussian(X.astype(np.float64), 0.1).astype(np.float32)
    assert best_gaussian(K, X.astype(np.float32)) == best_gaussian(K.astype(np.float64), X.astype(np.float64))


def test_degenerate_inputs_give_nan_without_warnings():
    X = np.arange(6.0)[:, None]
    duplicates = np.zeros((6, 1))
    duplicates[-1] = 1.0  # most pairs at distance 0: median distance 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero on the way to "no answer"
        assert all(math.isnan(v) for v in best_gaussian(np.ones((6, 6)), X))
        assert all(math.isnan(v) for v in best_gaussian(random_gram(6), duplicates))


def test_effective_rank_edges():
    # negative eigenvalues (an indefinite estimate) count as 0: [[1, 2], [2, 1]] has -1 and 3
    assert effective_rank(np.array([[1.0, 2.0], [2.0, 1.0]])) == pytest.approx(1.0)
    assert effective_rank(0.1 * np.eye(4)) == pytest.approx(4.0)
    assert math.isnan(effective_rank(np.zeros((3, 3))))
    K = random_gram(8).astype(np.float32)
    assert effective_rank(K) == effective_rank(K.astype(np.float64))


def test_the_subset_is_seeded_at_zero_and_drawn_without_replacement():
    K = random_gram(40)
    d = kernel_diagnostics(K, max_samples=10)
    assert d == kernel_diagnostics(K, max_samples=10, seed=0)
    assert d["off_diagonal_mean"] != kernel_diagnostics(K, max_samples=10, seed=1)["off_diagonal_mean"]
    # an identity Gram has no off-diagonal weight in any subset of distinct samples
    sub = kernel_diagnostics(np.eye(300), max_samples=250)
    assert sub["off_diagonal_mean"] == 0.0 and sub["n_samples_diagnosed"] == 250


def test_float32_gram_is_diagnosed_in_float64():
    K = random_gram(12).astype(np.float32)
    assert kernel_diagnostics(K) == kernel_diagnostics(K.astype(np.float64))


def test_two_samples_and_the_ends_of_n_support():
    K = np.array([[1.0, 0.3], [0.3, 1.0]])
    assert kernel_diagnostics(K)["off_diagonal_mean"] == pytest.approx(0.3)
    assert kernel_diagnostics(K, n_support=0)["support_fraction"] == 0.0
    assert kernel_diagnostics(K, n_support=2)["support_fraction"] == 1.0


def test_one_dimensional_inputs_are_one_feature():
    X = np.random.default_rng(2).uniform(0, 1, 15)
    K = gaussian(X[:, None], 3.0)
    assert kernel_diagnostics(K, X) == kernel_diagnostics(K, X[:, None])


def test_grid_without_a_bandwidth_and_the_recorded_grid_and_thresholds():
    K = random_gram(5)
    d = kernel_diagnostics(K, grid=(0.1, 1))
    assert d["bandwidth_at_grid_edge"] is None and d["bandwidth_grid"] == [0.1, 1.0]
    assert d["thresholds"] == {"concentration_std": 0.01, "gaussian_correlation": 0.99}


def test_flags_are_strict_at_their_thresholds(monkeypatch):
    X = np.random.default_rng(3).uniform(0, 1, (20, 2))
    K = gaussian(X, 2.0)
    d = kernel_diagnostics(K, X)
    # a spread or a correlation exactly at its threshold raises no flag ("below", "exceeds")
    monkeypatch.setattr(diagnostics, "CONCENTRATION_STD", d["off_diagonal_std"])
    monkeypatch.setattr(diagnostics, "GAUSSIAN_CORRELATION", d["gaussian_correlation"])
    at = kernel_diagnostics(K, X)
    assert not at["concentrated"] and not at["gaussian_like"] and at["warnings"] == []


def test_error_messages_and_the_concentration_sentence():
    with pytest.raises(ValueError, match="^K contains NaN or infinite values$"):
        kernel_diagnostics(np.full((3, 3), np.inf))
    with pytest.raises(ValueError, match=r"got shape \(4, 2\)$"):
        kernel_diagnostics(np.eye(3), np.zeros((4, 2)))
    d = kernel_diagnostics(np.eye(4) + 0.001)
    assert d["warnings"][0].endswith("the SVM sees an almost constant Gram")


class _Depth(list):
    """A "warnings" list that, iterated inside warn_diagnostics, counts the frames between it and its caller."""

    def __iter__(self):
        frames = [f.function for f in inspect.stack()[1:]]
        self.to_caller = frames.index("_fit_like")  # 1 plain; more when a decorator wraps warn_diagnostics
        return super().__iter__()


def _fit_like(d, **kwargs):
    """Stands for a library function (QuantumKernelSVC.fit) that reports its diagnostics to its caller."""
    warn_diagnostics(d, **kwargs)


def test_warnings_point_at_the_caller_of_the_function_that_diagnosed():
    probe = _Depth()
    _fit_like({"warnings": probe})
    extra = probe.to_caller - 1  # frames a wrapper (a mutation tester's trampoline) adds: 0 when plain
    d = kernel_diagnostics(np.eye(4) + 0.001)
    with pytest.warns(KernelDiagnosticWarning) as record:
        _fit_like(d, stacklevel=2 + extra)  # the warning must name this line, not diagnostics.py or _fit_like
    assert record[0].filename == __file__ and record[0].lineno == _lineno_of("_fit_like(d, stacklevel=2 + extra)")
    with pytest.warns(KernelDiagnosticWarning) as record:
        warn_diagnostics(d, stacklevel=1 + extra)
    assert record[0].filename == __file__
    # the default is 2: the same line as an explicit 2
    with pytest.warns(KernelDiagnosticWarning) as default:
        for kwargs in ({}, {"stacklevel": 2}):
            _fit_like(d, **kwargs)
    assert default[0].filename == default[1].filename and default[0].lineno == default[1].lineno
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_diagnostics({})  # nothing diagnosed, nothing said


def _lineno_of(text):
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if text in line and "_lineno_of" not in line)
