"""Classical baselines scored beside the quantum-kernel SVM, on the same splits.

Each baseline is a scikit-learn pipeline (standardisation + model) whose
hyperparameters are chosen by the same stratified CV (balanced accuracy) as
``QuantumKernelSVC``'s C, so that the comparison is fair:

- ``rbf_svm_embeddings``: RBF-kernel SVM on the QCNN embeddings (C, gamma);
- ``logreg_embeddings``: logistic regression on the embeddings (C);
- ``linear_svm_pixels``: linear SVM on the raw pixels, flattened (C);
- ``rbf_svm_embeddings_alignment``: the QSVM's control: an RBF SVM on the same
  embeddings, unscaled like the QSVM's input, with gamma chosen exactly as the
  quantum bandwidth is (the highest centred kernel-target alignment over a
  grid, ``gamma = factor / median |x - y|^2``) and C by the same CV on slices
  of the one Gram (``svm.fit_precomputed``); its Gram's diagnostics are kept;
- ``rbf_svm_pixels``: RBF SVM on the pixels after PCA to at most 50
  components (C; gamma "scale");
- ``rbf_svm_pixels_full``: RBF SVM on all the standardised pixels (C and
  gamma, in units of 1 / n_pixels, both by the CV on the training split): an
  independent re-analysis found it stronger than the 50-component one on two
  of four Fashion-MNIST pairs;
- ``logreg_pixels``: logistic regression on the same PCA components (C).

Optional (named in ``names=``, never in the default set, so that a default run
does not depend on an optional package): ``umap_logreg_pixels``, a logistic
regression on a UMAP embedding of the pixels (umap-learn, the ``sparse``
extra).  :func:`umap_2d` gives the 2-D UMAP picture of the QCNN embeddings.

If the quantum kernel does not beat the RBF SVM on the same embeddings, the
quantum part adds nothing; if a pixel baseline wins, the embedding loses
information.  The paired differences over seeds are in docs/controls.md.

>>> results = run_baselines(E_train, E_test, P_train, P_test, y_train, y_test)
>>> results["rbf_svm_embeddings"]["metrics"]["balanced_accuracy"]
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.validation import check_array, check_X_y
from tqdm.auto import tqdm

from ..kernels import rbf_gram as kernels_rbf_gram
from ..metrics import classification_metrics
from .diagnostics import kernel_diagnostics
from .svm import DEFAULT_CS, check_at_least_two_classes, fit_precomputed, kernel_target_alignment, stratified_folds

# name -> (input: "embeddings" | "pixels", what it is)
BASELINES = {
    "rbf_svm_embeddings": ("embeddings", "RBF-kernel SVM on the QCNN embeddings"),
    "logreg_embeddings": ("embeddings", "logistic regression on the QCNN embeddings"),
    "linear_svm_pixels": ("pixels", "linear SVM on the raw pixels"),
    "rbf_svm_embeddings_alignment": ("embeddings", "RBF-kernel SVM on the QCNN embeddings, gamma by kernel-target "
                                                   "alignment and C by CV, as the QSVM's bandwidth and C"),
    "rbf_svm_pixels": ("pixels", "RBF-kernel SVM on the pixels after PCA (<= 50 components)"),
    "rbf_svm_pixels_full": ("pixels", "RBF-kernel SVM on all the pixels, gamma and C by CV"),
    "logreg_pixels": ("pixels", "logistic regression on the pixels after PCA (<= 50 components)"),
}
# named on request only (not in the default set): each needs an optional package, named in the error if absent
OPTIONAL_BASELINES = {
    "umap_logreg_pixels": ("pixels", "logistic regression on a UMAP embedding of the pixels (umap-learn)"),
}
KNOWN_BASELINES = {**BASELINES, **OPTIONAL_BASELINES}
# components of the UMAP embedding the umap_logreg_pixels baseline classifies
UMAP_COMPONENTS = 10
# the pixel baselines project onto at most this many principal components
PCA_COMPONENTS = 50
# gamma candidates of rbf_svm_embeddings_alignment, in units of 1 / median |x - y|^2: like the quantum
# bandwidth grid, from a nearly flat kernel to one that sees only near neighbours
RBF_GAMMA_FACTORS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
# gamma candidates of rbf_svm_pixels_full, in units of 1 / n_pixels (sklearn's "scale" on standardised pixels is 1)
PIXEL_GAMMA_FACTORS = (0.3, 1.0, 3.0)


def check_baselines(names) -> tuple[str, ...]:
    """``names`` as a tuple if every one is in :data:`BASELINES`, else a ValueError listing the unknown ones.

    The one check of baseline names: :func:`make_baseline`, :func:`fit_baseline`,
    :func:`run_baselines` and ``qsvm.pipeline.run_qsvm_experiment`` all call it.
    """
    if isinstance(names, (str, bytes)):
        raise ValueError(f"baselines must be a sequence of names such as ({next(iter(BASELINES))!r},), "
                         f"got the string {names!r}")
    names = tuple(names)
    unknown = [name for name in names if name not in KNOWN_BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known baselines: {', '.join(KNOWN_BASELINES)}")
    return names


def make_baseline(name: str, *, cv: int, seed: int = 0, pca_components: int = PCA_COMPONENTS,
                  n_features: int | None = None) -> GridSearchCV:
    """The unfitted baseline ``name``: a standardising pipeline inside a stratified grid search.

    ``cv`` is the number of folds (already capped by the smallest class);
    ``pca_components`` the components of the PCA baselines (at most the
    features and the samples of a CV training fold); ``n_features`` the input
    width, which ``rbf_svm_pixels_full``'s gamma grid is scaled by (needed for it).
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
    elif name == "rbf_svm_pixels":
        model = make_pipeline(StandardScaler(), PCA(pca_components, random_state=seed), SVC(kernel="rbf"))
        grid = {"svc__C": [0.1, 1.0, 10.0, 100.0]}
    elif name == "rbf_svm_pixels_full":
        if n_features is None:
            raise ValueError(f"{name} scales its gamma grid by the number of pixels: pass n_features")
        model = make_pipeline(StandardScaler(), SVC(kernel="rbf"))
        grid = {"svc__C": [1.0, 10.0, 100.0], "svc__gamma": [f / n_features for f in PIXEL_GAMMA_FACTORS]}
    elif name == "logreg_pixels":
        model = make_pipeline(StandardScaler(), PCA(pca_components, random_state=seed),
                              LogisticRegression(max_iter=5000))
        grid = {"logisticregression__C": [1e-3, 0.01, 0.1, 1.0, 10.0]}
    elif name == "umap_logreg_pixels":
        model = make_pipeline(StandardScaler(), umap_transformer(UMAP_COMPONENTS, seed),
                              LogisticRegression(max_iter=5000))
        grid = {"logisticregression__C": [0.01, 0.1, 1.0, 10.0]}
    elif name == "rbf_svm_embeddings_alignment":
        raise ValueError(f"{name} is not a grid search; fit it with fit_baseline or fit_rbf_alignment")
    else:  # a name added to BASELINES without its model here: a bug of this module, caught by test_pipeline
        raise AssertionError(f"baseline {name!r} is listed in BASELINES but make_baseline has no model for it")
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
    if name == "rbf_svm_embeddings_alignment":
        return fit_rbf_alignment(X_train, y_train, X_test, y_test, cv=cv, seed=seed, n_classes=n_classes)
    folds = stratified_folds(y_train, cv)
    # PCA inside the CV: fitted on each training fold, so it cannot have more components than its samples
    smallest_fold = len(y_train) - -(-len(y_train) // folds)
    search = make_baseline(name, cv=folds, seed=seed,
                           pca_components=max(1, min(PCA_COMPONENTS, X_train.shape[1], smallest_fold - 1)),
                           n_features=X_train.shape[1])
    t0 = time.perf_counter()
    search.fit(X_train, y_train)
    t1 = time.perf_counter()
    predicted = search.predict(X_test)
    scores = search.decision_function(X_test)
    t2 = time.perf_counter()
    params = {key.split("__", 1)[1]: value for key, value in search.best_params_.items()}
    return {
        "description": KNOWN_BASELINES[name][1],
        "metrics": classification_metrics(y_test, predicted, scores, n_classes=n_classes),
        "timings": {"fit": t1 - t0, "predict": t2 - t1},
        "params": params,
    }


def umap_transformer(n_components: int, seed: int):
    """An unfitted ``umap.UMAP`` (a scikit-learn transformer), or an ImportError naming the install step."""
    try:
        import umap
    except ImportError as exc:
        raise ImportError(f"UMAP needs the umap-learn package, which is not installed ({exc}); "
                          'pip install "qmlnb[sparse]"') from exc
    # n_jobs=1: with a random_state UMAP is single-threaded anyway, and says so in a warning otherwise
    return umap.UMAP(n_components=n_components, random_state=seed, n_jobs=1)


def umap_2d(embeddings, *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """(N, 2) float32 UMAP coordinates of (N, F) embeddings (e.g. the QCNN's), for a picture coloured by class.

    Needs umap-learn (the ``sparse`` extra); the same ``seed`` gives the same picture.
    """
    X = check_array(embeddings, dtype=np.float32)
    if len(X) < 3:
        raise ValueError(f"UMAP needs at least 3 samples, got {len(X)}")
    model = umap_transformer(2, seed)
    model.set_params(n_neighbors=min(n_neighbors, len(X) - 1))
    return model.fit_transform(X).astype(np.float32)


def rbf_gram(A, B=None, gamma: float = 1.0) -> np.ndarray:
    """exp(-gamma |a - b|^2) for rows a of A (N, F) and b of B (M, F) (default B = A): (N, M) float64.

    ``qmlnb.kernels.rbf_gram`` (BLAS tiles), the one RBF Gram of the package, with gamma positional as here.
    """
    return kernels_rbf_gram(A, B, gamma=gamma)


def fit_rbf_alignment(X_train, y_train, X_test, y_test, *, cv: int = 5, seed: int = 0, Cs=DEFAULT_CS,
                      gamma_factors=RBF_GAMMA_FACTORS, n_classes: int | None = None) -> dict:
    """RBF SVM chosen the way ``QuantumKernelSVC`` is: gamma by alignment, C by CV on slices of one Gram.

    X_* : (N, F) real features (the embeddings the QSVM sees, not standardised);
    y_* : (N,) labels.  gamma = factor / median |x - y|^2 over training pairs,
    for each factor of ``gamma_factors``.  Returns fit_baseline's dict plus
    "alignments" {gamma: alignment} and "diagnostics" (``kernel_diagnostics``
    of the chosen training Gram, with the gamma grid).
    """
    X_train, y_train = check_X_y(X_train, y_train, dtype=np.float64)
    X_test = check_array(X_test, dtype=np.float64)
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_test has {X_test.shape[1]} features but X_train has {X_train.shape[1]}")
    y_train = check_at_least_two_classes(y_train)
    t0 = time.perf_counter()
    sq = np.sum(X_train * X_train, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * X_train @ X_train.T, 0.0)
    median = float(np.median(d2[np.triu_indices(len(d2), 1)])) if len(d2) > 1 else 0.0
    if not median > 0:
        raise ValueError("the training features are all identical; an RBF kernel cannot tell them apart")
    gammas = [factor / median for factor in gamma_factors]
    alignments, best = {}, None
    for gamma in gammas:
        K = np.exp(-gamma * d2)
        alignments[gamma] = kernel_target_alignment(K, y_train)
        if best is None or alignments[gamma] > alignments[best[0]]:
            best = (gamma, K)
    gamma, K = best
    fit = fit_precomputed(K, y_train, C="auto", Cs=Cs, cv=cv, seed=seed)
    t1 = time.perf_counter()
    K_test = rbf_gram(X_test, X_train, gamma)
    predicted, scores = fit.svc.predict(K_test), fit.svc.decision_function(K_test)
    t2 = time.perf_counter()
    diagnostics = kernel_diagnostics(K, X_train, alignment=alignments[gamma], bandwidth=gamma, grid=gammas,
                                     n_support=len(fit.svc.support_), seed=seed)
    return {
        "description": BASELINES["rbf_svm_embeddings_alignment"][1],
        "metrics": classification_metrics(y_test, predicted, scores, n_classes=n_classes),
        "timings": {"fit": t1 - t0, "predict": t2 - t1},
        "params": {"gamma": gamma, "gamma_factor": gamma * median, "C": fit.C},
        "alignments": {str(g): a for g, a in alignments.items()},
        "diagnostics": diagnostics,
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
        X_train, X_test = inputs[KNOWN_BASELINES[name][0]]
        results[name] = fit_baseline(name, X_train, y_train, X_test, y_test, cv=cv, seed=seed, n_classes=n_classes)
    return results
