"""A support vector classifier on the quantum fidelity kernel.

``QuantumKernelSVC`` encodes each sample with a ``FeatureMap``, compares the
states with ``kernels.gram`` (any backend) and trains scikit-learn's
``SVC(kernel="precomputed")`` on that Gram matrix.  Three things keep it fast
and well-behaved:

- **One Gram per bandwidth.**  The training Gram K is computed once for each
  candidate bandwidth; the C search then *slices* that matrix for every
  stratified fold (``K[np.ix_(tr, tr)]`` to fit, ``K[np.ix_(va, tr)]`` to
  score) instead of recomputing kernels per fold and per C.
- **Bandwidth by kernel-target alignment.**  Fidelity kernels of many qubits
  concentrate (off-diagonal entries shrink towards 2**-n, Shaydulin and Wild
  2022) unless the features are scaled down.  The scale is chosen as the one
  whose Gram best aligns with the label kernel (centred alignment, Cortes,
  Mohri and Rostamizadeh 2012), which needs no SVM fit at all.
- **Prediction against the support vectors only.**  The test kernel is
  computed against the training states that are support vectors
  (``svc.support_``), usually a fraction of the training set.

>>> clf = QuantumKernelSVC(n_qubits=4, bandwidth="auto", C="auto").fit(X, y)
>>> clf.predict(X_test), clf.bandwidth_, clf.C_, clf.timings_
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y
from tqdm.auto import tqdm

from ..kernels import FeatureMap, gram
from ..kernels.registry import get_backend
from .._util import Interval, check_int, check_option
from .diagnostics import kernel_diagnostics, warn_diagnostics

# C grid of the stratified search, log-spaced as usual for SVMs
DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
# feature scales tried by kernel-target alignment; with angles of order one
# and n = 4..12 qubits the best scale is usually well below 1
DEFAULT_BANDWIDTHS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
# qubit count the default grid was sized for (scaled_bandwidths leaves it unchanged up to here)
BANDWIDTH_REFERENCE_QUBITS = 8
# rows of test kernel handed to the SVC at once (bounds the scratch matrix)
PREDICT_SCRATCH_BYTES = 64 << 20


def scaled_bandwidths(n_qubits: int, reference: int = BANDWIDTH_REFERENCE_QUBITS,
                      grid=DEFAULT_BANDWIDTHS) -> tuple[float, ...]:
    """The bandwidth grid for ``n_qubits``: ``grid`` extended downwards by the factor sqrt(reference / n).

    Why: the fidelity kernel of the ZZ map concentrates as n grows.  Its
    overlap is a product over qubits (and linked pairs) of terms whose phases
    depend on the bandwidth-scaled features, so with a fixed bandwidth b the
    total phase difference between two inputs is a sum of about n terms whose
    spread grows like b * sqrt(n): the kernel's off-diagonal entries shrink
    towards 2**-n and the grid's smallest value stops being small enough
    (alignment then picks it, at the grid's edge).  A bandwidth that scales like
    1 / sqrt(n) keeps that spread, hence the kernel's typical value, constant
    (Shaydulin and Wild 2022, "Importance of kernel bandwidth in quantum machine
    learning", Phys. Rev. A 106, 042407; Canatar et al. 2022, "Bandwidth enables
    generalization in quantum kernel models").  The grid, sized for
    ``reference`` qubits, is therefore also tried times sqrt(reference / n).

    n_qubits, reference : int >= 1.  grid : bandwidths > 0.
    Returns a tuple of floats: exactly ``grid`` (as floats, e.g. ``DEFAULT_BANDWIDTHS``
    itself) when n_qubits <= reference, else the sorted union of ``grid`` and
    ``grid * sqrt(reference / n_qubits)`` (values equal to 12 significant digits
    counted once).
    """
    n_qubits = check_int(n_qubits, "n_qubits", minimum=1)
    reference = check_int(reference, "reference", minimum=1)
    grid = _check_grid(grid, "grid")
    if n_qubits <= reference:
        return grid
    factor = float(np.sqrt(reference / n_qubits))
    # the rounding only merges products that equal a grid value up to float error (n = 4 * reference: factor 1/2)
    return tuple(sorted({float(f"{b:.12g}") for b in (*grid, *(b * factor for b in grid))}))


# ---------------------------------------------------------------- validation
def _check_positive(value, name: str) -> float:
    """A finite real number > 0 (bools refused), else a ValueError naming it."""
    return Interval(float, 0, math.inf, closed="neither")(value, name)


def _check_grid(values, name: str) -> tuple[float, ...]:
    """A non-empty sequence of finite numbers > 0."""
    values = tuple(np.atleast_1d(np.asarray(values, dtype=object)).tolist())
    if not values:
        raise ValueError(f"{name} must hold at least one value")
    return tuple(_check_positive(v, f"every value of {name}") for v in values)


def _check_auto_or_positive(value, name: str):
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{name} must be 'auto' or a finite number > 0, got {value!r}")
        return value
    return _check_positive(value, name)


def check_at_least_two_classes(y) -> np.ndarray:
    """Training labels as an array, else a ValueError when they hold fewer than two classes."""
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"the training labels hold a single class ({classes.tolist()}); "
                         "a classifier needs at least two")
    return y


def stratified_folds(y: np.ndarray, cv: int) -> int:
    """Folds for a stratified search: ``cv``, capped by the smallest class."""
    cv = check_int(cv, "cv", minimum=2)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if smallest < 2:
        raise ValueError("choosing C by cross-validation needs at least 2 samples of every class; "
                         f"the smallest class has {smallest} (pass a fixed C instead)")
    return min(cv, smallest)


def check_kernel(K, shape: tuple[int, int], name: str = "K") -> np.ndarray:
    """K as a finite float64 matrix of exactly ``shape``, else a ValueError saying why."""
    K = np.asarray(K)
    if K.ndim != 2:
        raise ValueError(f"{name} must be a 2-D kernel matrix of shape {shape}, got {K.ndim}-D shape {K.shape}")
    if not np.issubdtype(K.dtype, np.number) or np.iscomplexobj(K):
        raise ValueError(f"{name} must hold real numbers, got dtype {K.dtype}")
    if K.shape != tuple(shape):
        raise ValueError(f"{name} has shape {K.shape} but {shape} is expected "
                         "(rows: samples to score, columns: the training samples)")
    K = K.astype(np.float64, copy=False)
    if not np.isfinite(K).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return K


# ---------------------------------------------------------------- kernel selection
def kernel_target_alignment(K, y) -> float:
    """Centred kernel-target alignment of a Gram matrix with the labels.

    A(K, Y) = <Kc, Yc>_F / (||Kc||_F ||Yc||_F), where Y[i, j] = 1 if samples
    i and j share a class, else 0, and Kc = H K H is the centred kernel
    (H = I - 11^T / N).  Centring makes the score blind to the constant part
    that dominates concentrated quantum kernels; it works for any number of
    classes.  Returns a float in [-1, 1]; 0 for a constant kernel.

    K : (N, N) real symmetric;  y : (N,) labels.
    """
    y = np.asarray(y)
    K = check_kernel(K, (len(y), len(y)))
    Y = (y[:, None] == y[None, :]).astype(np.float64)
    Kc = K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()
    Yc = Y - Y.mean(axis=0, keepdims=True) - Y.mean(axis=1, keepdims=True) + Y.mean()
    norm = np.linalg.norm(Kc) * np.linalg.norm(Yc)
    # H is a projection, so <HKH, HYH> = <HKH, Y>; Yc only enters the norm
    return float(np.vdot(Kc, Y) / norm) if norm > 0 else 0.0


def cross_validate_C(K, y, Cs=DEFAULT_CS, *, cv: int = 5, seed: int = 0, progress: bool = False) -> np.ndarray:
    """Balanced accuracy of ``SVC(kernel="precomputed", C)`` per fold and C.

    The folds slice the one training Gram: ``K[np.ix_(tr, tr)]`` trains,
    ``K[np.ix_(va, tr)]`` scores; nothing is recomputed.

    K : (N, N) training Gram;  y : (N,) labels;  Cs : C values (> 0).
    Returns (n_folds, len(Cs)) float64; folds are ``min(cv, smallest class)``.
    """
    y = check_at_least_two_classes(y)
    K = check_kernel(K, (len(y), len(y)))
    Cs = _check_grid(Cs, "Cs")
    n_splits = stratified_folds(y, cv)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    scores = np.empty((n_splits, len(Cs)))
    for f, (tr, va) in enumerate(tqdm(folds, total=n_splits, desc="C search (folds)", disable=not progress, leave=False)):
        K_tr, K_va = K[np.ix_(tr, tr)], K[np.ix_(va, tr)]
        for c, C in enumerate(Cs):
            svc = SVC(kernel="precomputed", C=C).fit(K_tr, y[tr])
            scores[f, c] = balanced_accuracy_score(y[va], svc.predict(K_va))
    return scores


def best_C(Cs, scores: np.ndarray) -> float:
    """The C of highest mean CV score; ties go to the smallest C (most regularised)."""
    Cs = np.asarray(Cs, dtype=np.float64)
    mean = scores.mean(axis=0)
    tied = np.flatnonzero(mean >= mean.max() - 1e-12)
    return float(Cs[tied].min())


@dataclass
class PrecomputedFit:
    """``fit_precomputed``'s result: the fitted SVC, its C, the CV table and the seconds spent."""

    svc: SVC
    C: float
    cv_scores: np.ndarray | None  # (n_folds, len(Cs)) balanced accuracy, None for a fixed C
    timings: dict  # seconds: "select" (the C search, 0 for a fixed C), "fit" (the final SVC)


def fit_precomputed(K, y, *, C="auto", Cs=DEFAULT_CS, cv: int = 5, seed: int = 0, progress: bool = False) -> PrecomputedFit:
    """Fit ``SVC(kernel="precomputed")`` on a training Gram, choosing C by CV if asked.

    The one C search and final fit: :meth:`QuantumKernelSVC.fit` calls it on
    the Gram of the bandwidth it chose.

    K : (N, N) finite training Gram;  y : (N,) labels (two classes or more).
    C : "auto" (stratified CV over ``Cs`` on slices of K) or a number > 0.
    """
    C = _check_auto_or_positive(C, "C")
    y = check_at_least_two_classes(y)
    K = check_kernel(K, (len(y), len(y)))
    scores = None
    t0 = time.perf_counter()
    if C == "auto":
        Cs = _check_grid(Cs, "Cs")
        scores = cross_validate_C(K, y, Cs, cv=cv, seed=seed, progress=progress)
        C = best_C(Cs, scores)
    t1 = time.perf_counter()
    svc = SVC(kernel="precomputed", C=C).fit(K, y)
    return PrecomputedFit(svc, float(C), scores, {"select": t1 - t0, "fit": time.perf_counter() - t1})


# ---------------------------------------------------------------- estimator
class QuantumKernelSVC(ClassifierMixin, BaseEstimator):
    """SVM classifier on the fidelity kernel |<psi(x)|psi(x')>|^2 of a feature map.

    Parameters
    ----------
    n_qubits, reps, entanglement, kind
        The ``FeatureMap``: one feature per qubit.
    bandwidth : "auto" or float > 0
        Feature scale.  ``"auto"``: the value of ``bandwidths`` with the
        highest kernel-target alignment on the training set.
    bandwidths : sequence of float > 0
        Candidates for ``bandwidth="auto"``.
    backend : str
        Gram backend (``qmlnb.kernels.available_backends()``).
    C : "auto" or float > 0
        SVM regularisation.  ``"auto"``: stratified ``cv``-fold search over
        ``Cs`` (balanced accuracy) on slices of the one training Gram.
    Cs : sequence of float > 0
        Candidates for ``C="auto"``.
    cv : int >= 2
        Folds of the C search (capped by the smallest class).
    tile, n_threads
        Passed to ``kernels.gram``.
    seed : int
        Shuffling of the CV folds.
    progress : bool
        tqdm bars over the bandwidth and C searches.
    method : {"auto", "statevector", "mps"}
        How the states are simulated (``FeatureMap.resolve_method``):
        ``"auto"`` keeps state vectors while they fit (up to 20 qubits) and
        uses the exact MPS beyond (ZZ map, linear or circular entanglement).
    custom_map : CircuitFeatureMap, optional
        Any feature map with ``FeatureMap``'s interface (``qmlnb.kernels.CircuitFeatureMap``,
        ``from_qiskit``, ``from_pennylane``) used instead of ``n_qubits``, ``reps``,
        ``entanglement`` and ``kind``; its bandwidth is replaced by ``bandwidth``'s
        choice, and X has its ``n_features`` columns.

    Attributes (after ``fit``)
    --------------------------
    classes_ : (n_classes,) labels.
    bandwidth_, C_ : float, the values used.
    alignments_ : {bandwidth: centred kernel-target alignment}.
    cv_scores_ : (n_folds, len(Cs)) balanced accuracy, or None for a fixed C.
    svc_ : the fitted ``SVC(kernel="precomputed")``.
    support_ : (n_SV,) indices of the support vectors in the training set.
    method_ : "statevector" or "mps", the simulation ``method`` chose.
    support_states_ : (n_SV, 2**n_qubits) complex64 states of the support vectors
        (``MPSStates`` of them with ``method_ == "mps"``).
    train_kernel_ : (N, N) float64 training Gram at ``bandwidth_``.
    n_train_ : int, training samples.
    diagnostics_ : dict, ``qsvm.diagnostics.kernel_diagnostics`` of the training
        Gram (concentration, correlation with the best Gaussian, alignment,
        bandwidth at its grid's edge, support-vector fraction); a
        ``KernelDiagnosticWarning`` is issued for each flag raised.
    timings_ : seconds: ``states``, ``gram`` (all candidate bandwidths),
        ``select`` (alignment and C search), ``fit`` (final SVC),
        ``fit_total``, ``diagnostics`` (not in fit_total); after a prediction also ``predict_states``,
        ``predict_gram``, ``predict_svc`` and ``predict`` (their sum).
    """

    def __init__(self, n_qubits: int = 8, reps: int = 2, entanglement: str = "linear", kind: str = "zz",
                 bandwidth="auto", bandwidths=DEFAULT_BANDWIDTHS, backend: str = "cpu", C="auto", Cs=DEFAULT_CS,
                 cv: int = 5, tile: int | None = None, n_threads: int | None = None, seed: int = 0,
                 progress: bool = False, method: str = "auto", custom_map=None):
        self.custom_map = custom_map
        self.n_qubits = n_qubits
        self.reps = reps
        self.entanglement = entanglement
        self.kind = kind
        self.bandwidth = bandwidth
        self.bandwidths = bandwidths
        self.backend = backend
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.tile = tile
        self.n_threads = n_threads
        self.seed = seed
        self.progress = progress
        self.method = method

    # ------------------------------------------------------------ helpers
    def feature_map(self, bandwidth: float) -> FeatureMap:
        """The ``FeatureMap`` (or ``custom_map``) of this classifier at a given bandwidth."""
        if self.custom_map is not None:
            return replace(self.custom_map, bandwidth=bandwidth)
        return FeatureMap(n_qubits=self.n_qubits, reps=self.reps, entanglement=self.entanglement,
                          bandwidth=bandwidth, kind=self.kind)

    def _gram(self, A, B=None) -> np.ndarray:
        return gram(A, B, backend=self.backend, tile=self.tile, n_threads=self.n_threads)

    def _check_X(self, X) -> np.ndarray:
        X = check_array(X, dtype=np.float64)
        if self.custom_map is not None:
            if X.shape[1] != self.custom_map.n_features:
                raise ValueError(f"X has {X.shape[1]} features per sample but custom_map reads "
                                 f"{self.custom_map.n_features}")
            return X
        if X.shape[1] != self.n_qubits:
            raise ValueError(f"X has {X.shape[1]} features per sample but n_qubits={self.n_qubits} "
                             "(the feature map takes one feature per qubit)")
        return X

    def _check_params(self) -> list[float]:
        """Validate every hyperparameter before any work; return the bandwidth candidates."""
        bandwidth = _check_auto_or_positive(self.bandwidth, "bandwidth")
        _check_auto_or_positive(self.C, "C")
        if self.C == "auto":
            _check_grid(self.Cs, "Cs")
        candidates = list(_check_grid(self.bandwidths, "bandwidths")) if bandwidth == "auto" else [bandwidth]
        self.feature_map(candidates[0]).resolve_method(1, self.method)  # validates the map and the method
        get_backend(self.backend)  # unknown or unusable backend: fail now, not after the states
        return candidates

    # ------------------------------------------------------------ fit
    def fit(self, X, y) -> "QuantumKernelSVC":
        """Choose the bandwidth and C, then fit the SVM on the training Gram.

        X : (N, n_qubits) real, finite (e.g. QCNN embeddings);  y : (N,) labels.
        """
        candidates = self._check_params()
        X, y = check_X_y(X, y, dtype=np.float64)
        X = self._check_X(X)
        y = check_at_least_two_classes(y)
        if self.C == "auto":
            stratified_folds(y, self.cv)  # enough samples per class for the folds?
        timings = dict(states=0.0, gram=0.0, select=0.0, fit=0.0)
        start = time.perf_counter()
        self.method_ = self.feature_map(candidates[0]).resolve_method(len(X), self.method)

        self.alignments_ = {}
        best = None  # (alignment, bandwidth, states, Gram) of the best candidate so far
        bar = tqdm(candidates, desc="bandwidth (alignment)", disable=not self.progress or len(candidates) == 1,
                   leave=False)
        for b in bar:
            t0 = time.perf_counter()
            S = self.feature_map(b).simulate(X, self.method_)
            t1 = time.perf_counter()
            K = self._gram(S)
            t2 = time.perf_counter()
            alignment = kernel_target_alignment(K, y)
            timings["states"] += t1 - t0
            timings["gram"] += t2 - t1
            timings["select"] += time.perf_counter() - t2
            self.alignments_[b] = alignment
            if best is None or alignment > best[0]:
                best = (alignment, b, S, K)
        _, self.bandwidth_, S, K = best
        del best

        result = fit_precomputed(K, y, C=self.C, Cs=self.Cs, cv=self.cv, seed=self.seed, progress=self.progress)
        timings["select"] += result.timings["select"]
        timings["fit"] = result.timings["fit"]
        self.svc_ = result.svc
        self.C_ = result.C
        self.cv_scores_ = result.cv_scores
        self.classes_ = self.svc_.classes_
        self.support_ = self.svc_.support_
        self.support_states_ = S[self.support_] if self.method_ == "mps" else np.ascontiguousarray(S[self.support_])
        self.train_kernel_ = K
        self.n_train_ = len(y)
        self.n_features_in_ = X.shape[1]
        timings["fit_total"] = time.perf_counter() - start
        # after fit_total: the diagnostics are a report on the fit, not part of it
        t0 = time.perf_counter()
        self.diagnostics_ = kernel_diagnostics(K, X, alignment=self.alignments_[self.bandwidth_],
                                               bandwidth=self.bandwidth_,
                                               grid=candidates if len(candidates) > 1 else None,
                                               n_support=len(self.support_), seed=self.seed)
        timings["diagnostics"] = time.perf_counter() - t0
        self.timings_ = timings
        warn_diagnostics(self.diagnostics_)
        return self

    # ------------------------------------------------------------ predict
    def support_kernel(self, X) -> np.ndarray:
        """(M, n_SV) float64 fidelities of X's states with the support vectors' states."""
        check_is_fitted(self, "svc_")
        X = self._check_X(X)
        t0 = time.perf_counter()
        S = self.feature_map(self.bandwidth_).simulate(X, self.method_)
        t1 = time.perf_counter()
        K = self._gram(S, self.support_states_)
        self.timings_.update(predict_states=t1 - t0, predict_gram=time.perf_counter() - t1)
        return K

    def _svc_on_support_kernel(self, K_sv: np.ndarray, method: str) -> np.ndarray:
        """Run ``svc_.<method>`` on a kernel given against the support vectors only.

        A precomputed-kernel SVC reads only its support columns, but expects
        the full training width; the columns of other training samples are
        zeros here, filled in row batches so the scratch matrix stays small.
        """
        t0 = time.perf_counter()
        rows = max(1, PREDICT_SCRATCH_BYTES // (8 * self.n_train_))
        scratch = np.zeros((min(rows, len(K_sv)), self.n_train_))
        parts = []
        for start in range(0, len(K_sv), rows):
            block = K_sv[start:start + rows]
            scratch[:len(block), self.support_] = block
            parts.append(getattr(self.svc_, method)(scratch[:len(block)]))
        out = np.concatenate(parts)
        self.timings_["predict_svc"] = time.perf_counter() - t0
        self.timings_["predict"] = sum(self.timings_[k] for k in ("predict_states", "predict_gram", "predict_svc"))
        return out

    def decision_function(self, X) -> np.ndarray:
        """SVM decision values: (M,) for two classes (> 0 means ``classes_[1]``), else (M, n_classes) one-vs-rest."""
        return self._svc_on_support_kernel(self.support_kernel(X), "decision_function")

    def predict(self, X) -> np.ndarray:
        """(M,) predicted labels for embeddings X of shape (M, n_qubits)."""
        return self._svc_on_support_kernel(self.support_kernel(X), "predict")

    def predict_with_scores(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``(predict(X), decision_function(X))`` from one test kernel (half the work of two calls)."""
        K_sv = self.support_kernel(X)
        scores = self._svc_on_support_kernel(K_sv, "decision_function")
        seconds = self.timings_["predict_svc"]
        labels = self._svc_on_support_kernel(K_sv, "predict")
        self.timings_["predict_svc"] += seconds
        self.timings_["predict"] += seconds
        return labels, scores

    # ------------------------------------------------------------ precomputed test kernels
    def _check_test_kernel(self, K_test) -> np.ndarray:
        check_is_fitted(self, "svc_")
        K_test = np.asarray(K_test)
        if K_test.ndim == 2 and K_test.shape[1] != self.n_train_:
            raise ValueError(f"the test kernel has {K_test.shape[1]} columns but the classifier was trained on "
                             f"{self.n_train_} samples; pass K_test of shape (n_test, {self.n_train_}) against "
                             "all training samples in training order")
        rows = K_test.shape[0] if K_test.ndim == 2 else 0
        return check_kernel(K_test, (rows, self.n_train_), "K_test")

    def decision_function_from_kernel(self, K_test) -> np.ndarray:
        """Decision values from a test kernel (M, n_train) against every training sample."""
        return self.svc_.decision_function(self._check_test_kernel(K_test))

    def predict_from_kernel(self, K_test) -> np.ndarray:
        """Labels from a test kernel (M, n_train) against every training sample."""
        return self.svc_.predict(self._check_test_kernel(K_test))


# the rules a task may name for its bandwidth grid at n qubits: scaled_bandwidths(n) ("scaled": extended by
# sqrt(8 / n) beyond 8 qubits, against the concentration of many-qubit kernels) or DEFAULT_BANDWIDTHS at every n
BANDWIDTH_RULES = ("scaled", "default")


def bandwidth_grid(rule: str, n_qubits: int) -> tuple[float, ...]:
    """The bandwidth candidates of ``rule`` (one of :data:`BANDWIDTH_RULES`) at ``n_qubits`` qubits."""
    check_option(rule, "bandwidth_rule", BANDWIDTH_RULES)
    return scaled_bandwidths(n_qubits) if rule == "scaled" else DEFAULT_BANDWIDTHS
