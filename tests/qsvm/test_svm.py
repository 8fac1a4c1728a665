"""QuantumKernelSVC: one Gram per bandwidth, C search on slices, SV-only prediction, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import SVC

import qmlnb.qsvm.svm as svm_module
from qmlnb.kernels import UnknownBackendError, available_backends, gram
from qmlnb.qsvm.diagnostics import KernelDiagnosticWarning
from qmlnb.qsvm.svm import (DEFAULT_BANDWIDTHS, QuantumKernelSVC, cross_validate_C, fit_precomputed,
                            kernel_target_alignment, scaled_bandwidths)

N_QUBITS = 4
SMALL = dict(n_qubits=N_QUBITS, bandwidths=(0.1, 0.5), Cs=(0.1, 1.0, 10.0), cv=3)
USABLE_BACKENDS = [name for name, (usable, _) in available_backends().items() if usable]


def digits_embeddings(classes, n_train, n_test, seed=0):
    """Digits reduced to N_QUBITS features scaled to [0, pi], as stand-in embeddings."""
    X, y = load_digits(return_X_y=True)
    keep = np.isin(y, classes)
    X, y = X[keep], y[keep]
    order = np.random.default_rng(seed).permutation(len(y))[: n_train + n_test]
    tr, te = order[:n_train], order[n_train:]
    pca = PCA(N_QUBITS, random_state=seed).fit(X[tr])
    scale = MinMaxScaler((0.0, np.pi)).fit(pca.transform(X[tr]))
    return scale.transform(pca.transform(X[tr])), y[tr], scale.transform(pca.transform(X[te])), y[te]


@pytest.fixture(scope="module")
def binary():
    return digits_embeddings((3, 8), 120, 60)


@pytest.fixture(scope="module")
def fitted(binary):
    X, y, _, _ = binary
    return QuantumKernelSVC(**SMALL).fit(X, y)


@pytest.fixture
def no_gram(monkeypatch):
    """Fail the test if any Gram is computed (errors must come before the work)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a Gram matrix was computed before the input was rejected")

    monkeypatch.setattr(svm_module, "gram", forbidden)


# ---------------------------------------------------------------- estimator behaviour
def test_classifies_held_out_digits(fitted, binary):
    _, _, X_test, y_test = binary
    assert fitted.score(X_test, y_test) >= 0.9
    assert set(fitted.predict(X_test)) <= {3, 8}
    assert fitted.bandwidth_ in (0.1, 0.5) and fitted.C_ in (0.1, 1.0, 10.0)
    assert fitted.cv_scores_.shape == (3, 3)
    assert fitted.support_states_.shape == (len(fitted.support_), 2**N_QUBITS)
    assert fitted.support_states_.dtype == np.complex64
    assert {"states", "gram", "select", "fit", "fit_total", "predict"} <= set(fitted.timings_)


def test_sklearn_params_and_clone(fitted):
    params = fitted.get_params()
    assert params["n_qubits"] == N_QUBITS and params["C"] == "auto" and params["bandwidth"] == "auto"
    twin = clone(fitted).set_params(C=2.0, bandwidth=0.3)
    assert twin.get_params()["C"] == 2.0 and twin.bandwidth == 0.3
    assert not hasattr(twin, "svc_")


def test_string_labels(binary):
    X, y, X_test, _ = binary
    names = np.where(y == 3, "three", "eight")
    clf = QuantumKernelSVC(n_qubits=N_QUBITS, bandwidth=0.3, C=1.0).fit(X, names)
    assert set(clf.predict(X_test)) <= {"three", "eight"}
    assert list(clf.classes_) == ["eight", "three"]


def test_prediction_against_support_vectors_equals_full_kernel(fitted, binary):
    """Dropping the non-support columns of the test kernel changes nothing."""
    X, y, X_test, _ = binary
    fm = fitted.feature_map(fitted.bandwidth_)
    K_test = gram(fm.states(X_test), fm.states(X))
    reference = SVC(kernel="precomputed", C=fitted.C_).fit(fitted.train_kernel_, y)
    assert len(fitted.support_) < len(y)
    np.testing.assert_array_equal(fitted.predict(X_test), reference.predict(K_test))
    np.testing.assert_allclose(fitted.decision_function(X_test), reference.decision_function(K_test), atol=1e-5)
    np.testing.assert_array_equal(fitted.predict_from_kernel(K_test), reference.predict(K_test))
    np.testing.assert_allclose(fitted.decision_function_from_kernel(K_test),
                               reference.decision_function(K_test), atol=1e-12)


def test_predict_with_scores_is_predict_and_decision_function(fitted, binary):
    X_test = binary[2]
    labels, scores = fitted.predict_with_scores(X_test)
    np.testing.assert_array_equal(labels, fitted.predict(X_test))
    np.testing.assert_array_equal(scores, fitted.decision_function(X_test))
    # binary decision values: positive means classes_[1]
    np.testing.assert_array_equal(labels, fitted.classes_[(scores > 0).astype(int)])


def test_one_gram_per_bandwidth_and_support_only_prediction(monkeypatch, binary):
    X, y, X_test, _ = binary
    calls = []

    def counting_gram(A, B=None, **kwargs):
        calls.append((A.shape, None if B is None else B.shape))
        return gram(A, B, **kwargs)

    monkeypatch.setattr(svm_module, "gram", counting_gram)
    clf = QuantumKernelSVC(**SMALL).fit(X, y)
    # two bandwidths, three Cs, three folds: still only two (symmetric) Grams
    assert calls == [((120, 16), None), ((120, 16), None)]
    calls.clear()
    clf.predict(X_test)
    assert calls == [((60, 16), (len(clf.support_), 16))]


def test_training_kernel_matches_pennylane(fitted, binary):
    """Two entries of the Gram the SVM trained on, from PennyLane state vectors."""
    X = binary[0]
    state = fitted.feature_map(fitted.bandwidth_).qnode()
    a, b = (np.asarray(state(x)) for x in X[:2])
    np.testing.assert_allclose(fitted.train_kernel_[0, 1], abs(np.vdot(a, b)) ** 2, atol=1e-5)
    np.testing.assert_allclose(fitted.train_kernel_[0, 0], 1.0, atol=1e-5)


def test_bandwidth_is_the_best_aligned(fitted):
    assert set(fitted.alignments_) == {0.1, 0.5}
    assert fitted.alignments_[fitted.bandwidth_] == max(fitted.alignments_.values())


def test_fixed_bandwidth_and_C_skip_the_searches(binary):
    X, y, _, _ = binary
    clf = QuantumKernelSVC(n_qubits=N_QUBITS, bandwidth=0.3, C=5.0).fit(X, y)
    assert clf.bandwidth_ == 0.3 and clf.C_ == 5.0 and clf.cv_scores_ is None
    assert list(clf.alignments_) == [0.3]


def test_multiclass():
    X, y, X_test, y_test = digits_embeddings((0, 1, 7), 150, 60)
    clf = QuantumKernelSVC(**SMALL).fit(X, y)
    assert clf.decision_function(X_test).shape == (60, 3)
    assert set(clf.predict(X_test)) <= {0, 1, 7}
    assert clf.score(X_test, y_test) >= 0.85


@pytest.mark.parametrize("backend", USABLE_BACKENDS)
def test_every_backend_gives_the_same_predictions(backend, fitted, binary):
    X, y, X_test, _ = binary
    clf = QuantumKernelSVC(**SMALL, backend=backend).fit(X, y)
    assert (clf.bandwidth_, clf.C_) == (fitted.bandwidth_, fitted.C_)
    np.testing.assert_allclose(clf.train_kernel_, fitted.train_kernel_, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(X_test), fitted.predict(X_test))
    # kernels equal to ~1e-6 still move libsvm's stopping point (tol=1e-3) a little
    np.testing.assert_allclose(clf.decision_function(X_test), fitted.decision_function(X_test), atol=1e-2)


# ---------------------------------------------------------------- selection helpers
def test_alignment_closed_forms():
    y = np.array([0, 0, 1, 1, 1, 2])
    ideal = (y[:, None] == y[None, :]).astype(float)
    assert kernel_target_alignment(ideal, y) == pytest.approx(1.0)
    # centring: adding a constant (kernel concentration) changes nothing
    assert kernel_target_alignment(0.3 * ideal + 2.0, y) == pytest.approx(1.0)
    assert kernel_target_alignment(np.ones((6, 6)), y) == 0.0
    assert kernel_target_alignment(1.0 - ideal, y) == pytest.approx(-1.0)
    # binary labels: yy^T with y = +-1 is the ideal kernel up to scale and shift
    s = np.array([1, 1, -1, -1, -1])
    assert kernel_target_alignment(np.outer(s, s), s) == pytest.approx(1.0)
    # identity kernel: <H, Y> / (||H|| ||HYH||) = (5 - 13/5) / (2 * ||Hs||^2 / 2) = 2.4 / 4.8
    assert kernel_target_alignment(np.eye(5), s) == pytest.approx(0.5)


def test_C_search_matches_gridsearchcv_on_the_precomputed_kernel(fitted, binary):
    y = binary[1]
    Cs = (0.1, 1.0, 10.0)
    scores = cross_validate_C(fitted.train_kernel_, y, Cs, cv=3, seed=0)
    search = GridSearchCV(SVC(kernel="precomputed"), {"C": list(Cs)}, scoring="balanced_accuracy",
                          cv=StratifiedKFold(3, shuffle=True, random_state=0)).fit(fitted.train_kernel_, y)
    np.testing.assert_allclose(scores.mean(axis=0), search.cv_results_["mean_test_score"])
    np.testing.assert_allclose(fitted.cv_scores_, scores)


def test_fit_precomputed(fitted, binary):
    y = binary[1]
    result = fit_precomputed(fitted.train_kernel_, y, Cs=(0.1, 1.0, 10.0), cv=3)
    assert result.C == fitted.C_
    np.testing.assert_array_equal(result.svc.support_, fitted.support_)
    assert set(result.timings) == {"select", "fit"} and min(result.timings.values()) >= 0
    fixed = fit_precomputed(fitted.train_kernel_, y, C=2.0)
    assert fixed.cv_scores is None and fixed.C == 2.0


@pytest.mark.parametrize("C", ["auto", 2.0])
def test_fit_searches_C_through_fit_precomputed(binary, monkeypatch, C):
    """One C-search path: the estimator hands its chosen Gram to fit_precomputed and keeps what it returns."""
    X, y, _, _ = binary
    calls = []

    def recording(K, labels, **kwargs):
        calls.append((K, kwargs))
        return fit_precomputed(K, labels, **kwargs)

    monkeypatch.setattr(svm_module, "fit_precomputed", recording)
    clf = QuantumKernelSVC(**{**SMALL, "C": C}).fit(X, y)
    assert len(calls) == 1
    K, kwargs = calls[0]
    assert K is clf.train_kernel_
    assert kwargs == dict(C=C, Cs=SMALL["Cs"], cv=SMALL["cv"], seed=0, progress=False)
    expected = fit_precomputed(clf.train_kernel_, y, C=C, Cs=SMALL["Cs"], cv=SMALL["cv"])
    assert clf.C_ == expected.C
    np.testing.assert_array_equal(clf.support_, expected.svc.support_)
    if C == "auto":
        np.testing.assert_array_equal(clf.cv_scores_, expected.cv_scores)
    else:
        assert clf.cv_scores_ is None


# ---------------------------------------------------------------- bandwidth grids
def test_scaled_bandwidths_are_the_default_grid_up_to_the_reference():
    for n in (1, 4, 8):
        assert scaled_bandwidths(n) == DEFAULT_BANDWIDTHS
    assert scaled_bandwidths(16, reference=16) == DEFAULT_BANDWIDTHS
    assert scaled_bandwidths(3, grid=[0.5, 0.1]) == (0.5, 0.1)  # the grid as given, floats


def test_scaled_bandwidths_extend_the_grid_down_by_sqrt_reference_over_n():
    grid = scaled_bandwidths(64)
    expected = sorted({*DEFAULT_BANDWIDTHS, *(b * np.sqrt(8 / 64) for b in DEFAULT_BANDWIDTHS)})
    assert len(grid) == 16 and list(grid) == sorted(grid) and all(type(b) is float for b in grid)
    np.testing.assert_allclose(grid, expected, rtol=1e-11)
    assert set(DEFAULT_BANDWIDTHS) <= set(grid)  # the default values themselves, not approximations
    assert grid[0] == pytest.approx(0.02 / np.sqrt(8))
    assert scaled_bandwidths(784)[0] == pytest.approx(0.02 * np.sqrt(8 / 784))
    assert scaled_bandwidths(64, reference=16)[0] == pytest.approx(0.01)
    # four times the reference: the factor is 1/2, and 0.1 / 2 = 0.05 (and two more) are grid values, kept once
    assert scaled_bandwidths(32) == (0.01, 0.02, 0.025, 0.05, 0.1, 0.175, 0.2, 0.25, 0.35, 0.375, 0.5, 0.75, 1.0)
    with pytest.raises(ValueError, match="n_qubits must be a positive integer"):
        scaled_bandwidths(0)
    with pytest.raises(ValueError, match="every value of grid"):
        scaled_bandwidths(64, grid=(0.1, -1.0))


def test_the_grid_edge_is_judged_against_the_grid_searched(binary):
    X, y, _, _ = binary
    wide = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    params = dict(SMALL, bandwidths=wide)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelDiagnosticWarning)  # e.g. Gaussian-like; the edge is checked below
        inside = QuantumKernelSVC(**params).fit(X, y)
    best = inside.bandwidth_
    assert wide[0] < best < wide[-1]  # these digits' best bandwidth lies inside the wide grid
    assert inside.diagnostics_["bandwidth_grid"] == list(wide) and not inside.diagnostics_["bandwidth_at_grid_edge"]
    upper = tuple(b for b in wide if b >= best)  # the same best value, now the grid's smallest
    with pytest.warns(KernelDiagnosticWarning, match=f"bandwidth {best:g} is at the edge of its grid "
                                                     rf"\[{best:g} \.\. 3\]"):
        edge = QuantumKernelSVC(**dict(params, bandwidths=upper)).fit(X, y)
    assert edge.bandwidth_ == best and edge.diagnostics_["bandwidth_grid"] == list(upper)
    assert edge.diagnostics_["bandwidth_at_grid_edge"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("params, message", [
    (dict(C=0.0), "C must be"), (dict(C=-1.0), "C must be"), (dict(C="best"), "C must be"),
    (dict(C=float("nan")), "C must be"), (dict(bandwidth=0.0), "bandwidth must be"),
    (dict(bandwidth=-0.5), "bandwidth must be"), (dict(bandwidth=float("inf")), "bandwidth must be"),
    (dict(bandwidths=(0.1, 0.0)), "bandwidths"), (dict(bandwidths=()), "bandwidths"),
    (dict(Cs=(1.0, -1.0)), "Cs"), (dict(cv=1), "cv must be"), (dict(entanglement="star"), "entanglement"),
])
def test_bad_hyperparameters(params, message, binary, no_gram):
    X, y, _, _ = binary
    with pytest.raises(ValueError, match=message):
        QuantumKernelSVC(**{**SMALL, **params}).fit(X, y)


def test_unknown_backend(binary, no_gram):
    X, y, _, _ = binary
    with pytest.raises(UnknownBackendError, match="unknown Gram backend"):
        QuantumKernelSVC(**SMALL, backend="abacus").fit(X, y)


def test_single_class(binary, no_gram):
    X = binary[0]
    with pytest.raises(ValueError, match="single class"):
        QuantumKernelSVC(**SMALL).fit(X, np.zeros(len(X), dtype=int))


def test_class_too_small_for_the_C_search(binary, no_gram):
    X, y, _, _ = binary
    y = y.copy()
    y[0] = 5  # a class with one sample
    with pytest.raises(ValueError, match="at least 2 samples of every class"):
        QuantumKernelSVC(**SMALL).fit(X, y)


def test_X_of_the_wrong_width_or_not_finite(binary, fitted, no_gram):
    X, y, X_test, _ = binary
    with pytest.raises(ValueError, match="5 features per sample but n_qubits=4"):
        QuantumKernelSVC(**SMALL).fit(np.hstack([X, X[:, :1]]), y)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        QuantumKernelSVC(**SMALL).fit(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        QuantumKernelSVC(**SMALL).fit(X, y[:-1])
    with pytest.raises(ValueError, match="3 features per sample but n_qubits=4"):
        fitted.predict(X_test[:, :3])


def test_bad_training_kernels(fitted, binary):
    y = binary[1]
    K = fitted.train_kernel_
    with pytest.raises(ValueError, match=r"shape \(120, 119\) but \(120, 120\)"):
        fit_precomputed(K[:, :-1], y)
    with pytest.raises(ValueError, match="2-D"):
        fit_precomputed(K[0], y)
    bad = K.copy()
    bad[2, 7] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_precomputed(bad, y)
    with pytest.raises(ValueError, match="single class"):
        fit_precomputed(K, np.ones(len(y)))
    with pytest.raises(ValueError, match="C must be"):
        fit_precomputed(K, y, C=-2.0)


def test_bad_test_kernels(fitted):
    with pytest.raises(ValueError, match="119 columns but the classifier was trained on 120"):
        fitted.predict_from_kernel(np.ones((5, 119)))
    bad = np.ones((5, 120))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        fitted.decision_function_from_kernel(bad)
    with pytest.raises(ValueError, match="2-D"):
        fitted.predict_from_kernel(np.ones(120))


def test_predict_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        QuantumKernelSVC(n_qubits=N_QUBITS).predict(np.zeros((2, N_QUBITS)))
