"""A positive control: labels engineered so that the quantum kernel must win, scored like the real comparison.

Every real-data comparison of the lab asks "does the quantum kernel beat its
RBF control?".  A control that can only answer "no" proves nothing; this one
builds a task whose answer is known to be "yes" (Huang et al. 2021's
engineered labels, :func:`qmlnb.qsvm.geometric.engineered_labels`) on the
*same inputs*, then runs the same two classifiers on it:

- the quantum-kernel SVM on K_Q (fidelity or projected, as used to engineer
  the labels; C by stratified CV on slices of the training Gram), and
- the RBF control (``baselines.fit_rbf_alignment``: its gamma chosen by
  alignment over its grid and C by the same CV, on the raw inputs), which may
  tune its bandwidth away from the one the labels were engineered against.

If the quantum kernel does not then come out ahead beyond noise over seeds,
the comparison machinery is broken, not the quantum model.

>>> result = run_positive_control(X, FeatureMap(n_qubits=8), kernel="projected", seed=0)
>>> result["quantum"]["metrics"]["balanced_accuracy"], result["rbf"]["metrics"]["balanced_accuracy"], result["g"]
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from ..kernels import gram, projected_features, projected_gamma, projected_gram, rbf_gram
from ..metrics import classification_metrics
from .baselines import fit_rbf_alignment
from .geometric import DEFAULT_LAMBDA, engineered_labels
from .svm import fit_precomputed

KERNELS = ("fidelity", "projected")


def quantum_gram(fm, X, kernel: str, *, method: str = "auto") -> tuple[np.ndarray, dict]:
    """(N, N) float64 quantum Gram of ``fm`` on X and its settings: the fidelity, or the projected kernel at
    gamma = 1 / median sum_k ||rho_k - rho_k'||_F^2 (``kernels.projected_gamma``)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "fidelity":
        return gram(fm.simulate(X, method)), {"kernel": "fidelity"}
    F = projected_features(fm, X, method=method)
    gamma = projected_gamma(F)
    return projected_gram(F, gamma=gamma), {"kernel": "projected", "gamma": gamma}


def median_rbf_gram(X) -> tuple[np.ndarray, float]:
    """The RBF Gram exp(-gamma |x - x'|^2) at the control's reference gamma = 1 / median |x - x'|^2, and gamma."""
    X = np.asarray(X, dtype=np.float64)
    sq = np.einsum("ij,ij->i", X, X)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0)[np.triu_indices(len(X), 1)]
    median = float(np.median(d2))
    if not median > 0:
        raise ValueError("the inputs are all identical; an RBF kernel cannot tell them apart")
    return rbf_gram(X, gamma=1.0 / median), 1.0 / median


def run_positive_control(X, fm, *, kernel: str = "projected", seed: int = 0, test_fraction: float = 0.3,
                         lam: float = DEFAULT_LAMBDA, cv: int = 5, method: str = "auto",
                         labels=None) -> dict:
    """Engineer labels on X, split them by ``seed``, and score the quantum-kernel SVM beside the RBF control.

    X : (N, n_features) real inputs of the feature map ``fm`` (and of the RBF control).
    kernel : "fidelity" or "projected" quantum Gram (:func:`quantum_gram`).
    seed : the stratified train/test split (``test_fraction`` of N held out) and the CV folds; the labels
        depend on X only, so every seed scores the same task on another split.
    lam : regularisation of the geometric difference.
    labels : (y, info) from an earlier call on the same X and kernel (skips re-engineering).

    Returns {"g": g(K_C || K_Q) on all N inputs, "n_train", "n_test", "quantum": {"metrics", "params"},
    "rbf": ``fit_rbf_alignment``'s dict, "labels_info": {"lam", "threshold", "rbf_gamma", ...}}.
    """
    X = np.asarray(X, dtype=np.float64)
    K_Q, settings = quantum_gram(fm, X, kernel, method=method)
    if labels is None:
        K_C, rbf_gamma = median_rbf_gram(X)
        y, info = engineered_labels(K_C, K_Q, lam)
        info = {**info, "rbf_gamma": rbf_gamma}
    else:
        y, info = labels
    train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed)
    fit = fit_precomputed(K_Q[np.ix_(train, train)], y[train], C="auto", cv=cv, seed=seed)
    K_test = K_Q[np.ix_(test, train)]
    quantum = {"metrics": classification_metrics(y[test], fit.svc.predict(K_test), fit.svc.decision_function(K_test),
                                                 n_classes=2),
               "params": {**settings, "C": fit.C}}
    rbf = fit_rbf_alignment(X[train], y[train], X[test], y[test], cv=cv, seed=seed, n_classes=2)
    return {"g": info["g"], "n_train": int(len(train)), "n_test": int(len(test)), "quantum": quantum, "rbf": rbf,
            "labels": y, "labels_info": {k: v for k, v in info.items() if k != "y"}}
