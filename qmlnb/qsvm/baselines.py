"""Classical baselines scored beside the quantum-kernel SVM, on the same splits.

Each baseline is a scikit-learn pipeline (standardisation + model) whose
hyperparameters are chosen by the same stratified CV (balanced accuracy) as
``QuantumKernelSVC``'s C, so that the comparison is fair:

- ``rbf_svm_embeddings``: RBF-kernel SVM on the QCNN embeddings (C, gamma);
- ``logreg_embeddings``: logistic regression on the embeddings (C);
- ``linear_svm_pixels``: linear SVM on the raw pixels, flattened (C).

If the quantum kernel does not beat the RBF SVM on the same embeddings, the
quantum part adds nothing; if the pixel baseline wins, the embedding loses
information.

>>> results = run_baselines(E_train, E_test, P_train, P_test, y_train, y_test)
>>> results["rbf_svm_embeddings"]["metrics"]["balanced_accuracy"]
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.validation import check_array, check_X_y
from tqdm.auto import tqdm

from ..metrics import classification_metrics
from .svm import check_at_least_two_classes, stratified_folds

# name -> (input: "embeddings" | "pixels", what it is)
BASELINES = {
    "rbf_svm_embeddings": ("embeddings", "RBF-kernel SVM on the QCNN embeddings"),
    "logreg_embeddings": ("embeddings", "logistic regression on the QCNN embeddings"),
    "linear_svm_pixels": ("pixels", "linear SVM on the raw pixels"),
}


def check_baselines(names) -> tuple[str, ...]:
    """``names`` as a tuple if every one is in :data:`BASELINES`, else a ValueError listing the unknown ones.

    The one check of baseline names: :func:`make_baseline`, :func:`fit_baseline`,
    :func:`run_baselines` and ``qsvm.pipeline.run_qsvm_experiment`` all call it.
    """
    if isinstance(names, (str, bytes)):
        raise ValueError(f"baselines must be a sequence of names such as ({next(iter(BASELINES))!r},), "
                         f"got the string {names!r}")
    names = tuple(names)
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known baselines: {', '.join(BASELINES)}")
    return names


def make_baseline(name: str, *, cv: int, seed: int = 0) -> GridSearchCV:
    """The unfitted baseline ``name``: a standardising pipeline inside a stratified grid search.

    ``cv`` is the number of folds (already capped by the smallest class).
    """
    check_baselines((name,))
    if name == "rbf_svm_embeddings":
        model = make_pipeline(StandardScaler(), SVC(kernel="rbf"))
        grid = {"svc__C": [0.1, 1.0, 10.0, 100.0], "svc__gamma": ["scale", 0.1, 1.0]}
    elif name == "logreg_embeddings":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        grid = {"logisticregression__C": [0.01, 0.1, 1.0, 10.0, 100.0]}
    elif name == "linear_svm_pixels":
        # the dual solver: with as many pixels as images (784 vs ~1000) sklearn's
        # "auto" picks the primal, which measured ~10x slower at C >= 0.1 here
        model = make_pipeline(StandardScaler(), LinearSVC(dual=True, max_iter=5000, random_state=seed))
        grid = {"linearsvc__C": [1e-4, 1e-3, 1e-2, 0.1, 1.0]}
    else:  # a name added to BASELINES without its model here
        raise NotImplementedError(f"baseline {name!r} is listed in BASELINES but make_baseline has no model for it")
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    return GridSearchCV(model, grid, scoring="balanced_accuracy", cv=folds, n_jobs=1)


def fit_baseline(name: str, X_train, y_train, X_test, y_test, *, cv: int = 5, seed: int = 0,
                 n_classes: int | None = None) -> dict:
    """Fit one baseline on (X_train, y_train) and score it on (X_test, y_test).

    X_* : (N, F) real features (embeddings, or pixels flattened to F = C*H*W);
    y_* : (N,) integer labels 0..k-1.
    Returns {"metrics": classification_metrics, "timings": {"fit", "predict"}
    in seconds, "params": the chosen hyperparameters, "description"}.
    """
    check_baselines((name,))
    X_train, y_train = check_X_y(X_train, y_train)
    X_test = check_array(X_test)
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_test has {X_test.shape[1]} features but X_train has {X_train.shape[1]}")
    check_at_least_two_classes(y_train)
    search = make_baseline(name, cv=stratified_folds(y_train, cv), seed=seed)
    t0 = time.perf_counter()
    search.fit(X_train, y_train)
    t1 = time.perf_counter()
    predicted = search.predict(X_test)
    scores = search.decision_function(X_test)
    t2 = time.perf_counter()
    params = {key.split("__", 1)[1]: value for key, value in search.best_params_.items()}
    return {
        "description": BASELINES[name][1],
        "metrics": classification_metrics(y_test, predicted, scores, n_classes=n_classes),
        "timings": {"fit": t1 - t0, "predict": t2 - t1},
        "params": params,
    }


def run_baselines(embeddings_train, embeddings_test, pixels_train, pixels_test, y_train, y_test, *,
                  names=tuple(BASELINES), cv: int = 5, seed: int = 0, n_classes: int | None = None,
                  progress: bool = False) -> dict[str, dict]:
    """Every baseline in ``names`` on the same split.

    embeddings_* : (N, n_qubits) QCNN embeddings;  pixels_* : (N, C, H, W) or
    (N, F) images (flattened here);  y_* : (N,) labels 0..k-1.
    Returns {name: fit_baseline(...) result}.
    """
    names = check_baselines(names)
    inputs = {
        "embeddings": (np.asarray(embeddings_train), np.asarray(embeddings_test)),
        "pixels": (np.asarray(pixels_train).reshape(len(pixels_train), -1),
                   np.asarray(pixels_test).reshape(len(pixels_test), -1)),
    }
    results = {}
    for name in tqdm(names, desc="baselines", disable=not progress, leave=False):
        X_train, X_test = inputs[BASELINES[name][0]]
        results[name] = fit_baseline(name, X_train, y_train, X_test, y_test, cv=cv, seed=seed, n_classes=n_classes)
    return results
