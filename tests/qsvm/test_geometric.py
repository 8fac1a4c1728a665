"""The geometric difference of Huang et al. on cases with known answers, and the positive control it engineers."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from qmlnb.qsvm.geometric import engineered_labels, geometric_difference, geometric_matrix


def rbf(X, gamma):
    d2 = np.sum((X[:, None] - X[None]) ** 2, axis=2)
    return np.exp(-gamma * d2)


def test_a_kernel_against_itself_has_g_one():
    X = np.random.default_rng(0).normal(size=(40, 3))
    K = rbf(X, 0.5)
    assert geometric_difference(K, K, lam=0.0) == pytest.approx(1.0, abs=1e-6)
    # regularised: g = c_max / (c_max + lam) for the largest eigenvalue c_max of the trace-normalised K
    c_max = np.linalg.eigvalsh(K * 40 / np.trace(K))[-1]
    assert geometric_difference(K, K, lam=0.1) == pytest.approx(c_max / (c_max + 0.1), rel=1e-9)


def test_diagonal_grams_give_the_closed_form():
    """Commuting (diagonal) Grams: g^2 = max_i q_i c_i / (c_i + lam)^2 of the trace-normalised diagonals."""
    rng = np.random.default_rng(1)
    c, q = rng.uniform(0.1, 2, 12), rng.uniform(0.1, 2, 12)
    cn, qn = c * 12 / c.sum(), q * 12 / q.sum()
    for lam in (0.0, 0.05):
        expected = np.sqrt(np.max(qn * cn / (cn + lam) ** 2))
        assert geometric_difference(np.diag(c), np.diag(q), lam=lam) == pytest.approx(expected, rel=1e-9)


def test_a_constant_quantum_kernel_against_a_delta_kernel_reaches_sqrt_n():
    """K_C = I (every sample alone), K_Q = all ones (rank one, eigenvalue N): g = sqrt(N) / (1 + lam)."""
    n = 25
    assert geometric_difference(np.eye(n), np.ones((n, n)), lam=0.0) == pytest.approx(np.sqrt(n))
    assert geometric_difference(np.eye(n), np.ones((n, n)), lam=0.5) == pytest.approx(np.sqrt(n) / 1.5)
    # the other way round, only the constant direction of K_Q = I is one K_C = ones has (the pseudo-inverse leaves
    # out the others: a classical model cannot fit them at all, which the training error shows, not g)
    assert geometric_difference(np.ones((n, n)), np.eye(n), lam=0.0) == pytest.approx(1 / np.sqrt(n))


def test_g_is_blind_to_the_kernels_scale():
    X = np.random.default_rng(2).normal(size=(30, 2))
    K_C, K_Q = rbf(X, 0.2), rbf(X, 3.0)
    assert geometric_difference(2 * K_C, 5 * K_Q) == pytest.approx(geometric_difference(K_C, K_Q), rel=1e-9)
    # a narrower kernel expresses what a wider one cannot: g is asymmetric
    assert geometric_difference(K_C, K_Q) > 3 * geometric_difference(K_Q, K_C)
    M = geometric_matrix(K_C, K_Q)
    np.testing.assert_allclose(M, M.T)
    assert np.linalg.eigvalsh(M).min() > -1e-9


def test_engineered_labels_follow_the_top_eigenvector():
    """Diagonal Grams: the top eigenvector is the sample where q_i c_i / (c_i + lam)^2 peaks; y = sqrt(K_Q) v is
    then non-zero only there, and the median threshold puts that one sample in class 1."""
    c = np.array([1.0, 1.0, 0.01, 1.0, 1.0])
    labels, info = engineered_labels(np.diag(c), np.eye(5), lam=0.0)
    np.testing.assert_array_equal(labels, [0, 0, 1, 0, 0])
    assert info["g"] == pytest.approx(np.sqrt(1 / (0.01 * 5 / c.sum())))


def test_engineered_labels_are_balanced_and_repeatable():
    X = np.random.default_rng(3).normal(size=(50, 4))
    labels, info = engineered_labels(rbf(X, 0.1), rbf(X, 2.0))
    again, _ = engineered_labels(rbf(X, 0.1), rbf(X, 2.0))
    np.testing.assert_array_equal(labels, again)
    assert labels.sum() == 25 and info["g"] > 1


def test_bad_grams_are_refused():
    K = np.eye(4)
    with pytest.raises(ValueError, match="same inputs"):
        geometric_difference(K, np.eye(5))
    with pytest.raises(ValueError, match="not symmetric"):
        geometric_difference(np.triu(np.ones((4, 4))), K)
    with pytest.raises(ValueError, match="lam"):
        geometric_difference(K, K, lam=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        geometric_difference(np.full((3, 3), np.nan), np.eye(3))


# ---------------------------------------------------------------- the positive control on real data
def digits_inputs(n_samples=200, n=8):
    """The first n_samples digits (all classes) of qmlnb.data's embedded set, as n standardised PCA components:
    the inputs of ``python -m qmlnb bench positive-control``."""
    from qmlnb.bench.positive_control import digits_inputs as bench_inputs

    return bench_inputs(n_samples, n)


@pytest.mark.parametrize("kernel", ["projected", "fidelity"])
def test_positive_control_is_positive_beyond_noise(kernel):
    """On engineered labels the quantum-kernel SVM beats the RBF control on held-out data over 5 seeds (splits):
    the paired 95% interval of the balanced-accuracy difference excludes 0."""
    from qmlnb.kernels import FeatureMap
    from qmlnb.qsvm.diagnostics import KernelDiagnosticWarning
    from qmlnb.qsvm.positive_control import run_positive_control
    from qmlnb.stats import paired_difference

    X = digits_inputs()
    fm = FeatureMap(n_qubits=8, reps=2, bandwidth=1.0)
    quantum, classical, labels = [], [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelDiagnosticWarning)
        for seed in range(5):
            result = run_positive_control(X, fm, kernel=kernel, seed=seed, labels=labels)
            labels = (result["labels"], {**result["labels_info"], "g": result["g"]})
            quantum.append(result["quantum"]["metrics"]["balanced_accuracy"])
            classical.append(result["rbf"]["metrics"]["balanced_accuracy"])
    difference = paired_difference(quantum, classical)
    assert difference["ci_low"] > 0, difference
    assert result["g"] > 1


def test_positive_control_is_deterministic_per_seed():
    from qmlnb.kernels import FeatureMap
    from qmlnb.qsvm.diagnostics import KernelDiagnosticWarning
    from qmlnb.qsvm.positive_control import run_positive_control

    X = digits_inputs(120)
    fm = FeatureMap(n_qubits=8, reps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelDiagnosticWarning)
        first, second = (run_positive_control(X, fm, seed=4) for _ in range(2))
        other = run_positive_control(X, fm, seed=5)
    np.testing.assert_array_equal(first["labels"], second["labels"])
    assert first["quantum"]["metrics"] == second["quantum"]["metrics"]
    assert first["rbf"]["metrics"] == second["rbf"]["metrics"]
    assert first["g"] == second["g"]
    # another seed: the same engineered task (labels depend on the inputs only), another split
    np.testing.assert_array_equal(first["labels"], other["labels"])
    assert first["quantum"]["metrics"] != other["quantum"]["metrics"] or first["rbf"]["metrics"] != other["rbf"]["metrics"]


def test_bench_positive_control_smoke(tmp_path):
    import json

    from qmlnb.cli import main

    out = tmp_path / "pc.json"
    assert main(["bench", "positive-control", "--n", "80", "--seeds", "0,1", "--allow-dirty", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["kernels"]) == {"fidelity", "projected"}
    for row in result["kernels"].values():
        assert row["quantum_minus_rbf"]["n"] == 2 and row["g"] > 1
        assert row["positive"] == (row["quantum_minus_rbf"]["ci_low"] > 0)
