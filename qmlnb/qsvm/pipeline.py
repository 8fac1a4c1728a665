"""End to end: train the hybrid QCNN, embed the images, classify the embeddings
with the quantum-kernel SVM, and score classical baselines on the same split.

    images --train_qcnn--> model --model.embed--> embeddings (N, n_qubits)
    embeddings --QuantumKernelSVC (FeatureMap states, Gram backend)--> labels
    same split --baselines--> RBF SVM / logistic regression / linear SVM on pixels

>>> from qmlnb.data import load_splits
>>> from qmlnb.qcnn.train import TrainConfig
>>> result = run_qsvm_experiment(load_splits("digits"), TrainConfig(), {"backend": "cpu"})
>>> result["qsvm"]["metrics"]["balanced_accuracy"], result["timings"]
"""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from .baselines import BASELINES, check_baselines, fit_rbf_alignment, run_baselines
from ..kernels import projected_features, projected_gram, rbf_gram
from ..metrics import classification_metrics
from .geometric import DEFAULT_LAMBDA, geometric_difference
from .svm import DEFAULT_BANDWIDTHS, QuantumKernelSVC


def embed(model, X, *, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """QCNN embeddings of images, in batches, without gradients.

    model : a trained ``HybridQCNN`` (anything with ``embed(torch.Tensor) -> Tensor``).
    X : (N, C, H, W) float32 images.  Returns (N, n_qubits) float32.
    """
    import torch

    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise ValueError(f"images must be 4-D (N, C, H, W), got shape {X.shape}")
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(X), batch_size), desc="embedding", disable=not progress, leave=False):
                parts.append(model.embed(torch.from_numpy(X[start:start + batch_size])).detach().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(parts).astype(np.float32, copy=False)


def check_svm_params(svm_params) -> dict:
    """``svm_params`` as a dict of ``QuantumKernelSVC`` parameters, rejecting unknown names."""
    svm_params = dict(svm_params or {})
    known = QuantumKernelSVC().get_params()
    unknown = sorted(set(svm_params) - set(known))
    if unknown:
        raise ValueError(f"unknown QuantumKernelSVC parameters {unknown}; known: {', '.join(sorted(known))}")
    return svm_params


def run_qsvm_experiment(splits, train_config=None, svm_params=None, *, trained=None, baselines=tuple(BASELINES),
                        cv: int | None = None, embed_batch_size: int = 256, progress: bool = False,
                        projected: bool = False, return_model: bool = False) -> dict:
    """Train (or take) a QCNN, then score the quantum-kernel SVM and the baselines on its test split.

    Parameters
    ----------
    splits : ``qmlnb.data.Splits``
        X_* float32 (N, C, H, W), y_* int64 (N,) in 0..k-1.  The SVM and the
        baselines train on ``X_train`` and are scored on ``X_test``, like the QCNN.
    train_config : ``qmlnb.qcnn.train.TrainConfig``
        Passed to ``train_qcnn``; ignored when ``trained`` is given.
    svm_params : dict
        ``QuantumKernelSVC`` parameters (``n_qubits`` defaults to the
        embedding width; ``backend``, ``bandwidth``, ``C``, ...).
    trained : ``TrainResult``, optional
        An already trained QCNN (``.model``, ``.metrics``, ``.timings``): skips training.
    baselines : names from ``qmlnb.qsvm.baselines.BASELINES`` (empty: none).
    cv : folds of every hyperparameter search (default: ``svm_params["cv"]`` or 5).
    projected : also score the projected quantum kernel of the same feature map at the chosen bandwidth
        (:func:`fit_projected_kernel`) under ``"projected"``.
    return_model : also return the fitted ``QuantumKernelSVC`` (``"model"``) and its (N_train, N_train)
        float64 training Gram (``"train_gram"``); off by default, so that the result stays plain JSON data.

    Returns
    -------
    dict with
      ``qcnn``: {"metrics", "timings"} from training;
      ``qsvm``: {"metrics", "timings", "params": chosen bandwidth and C, support size, alignments,
      "diagnostics": the training Gram's ``kernel_diagnostics``};
      ``baselines``: {name: {"metrics", "timings", "params", "description"}};
      ``timings``: seconds of qcnn_train, embedding, states, gram, svm_select,
      svm_fit, predict, baselines and total;
      ``gram_backend``, ``state_method`` ("statevector" or "mps", what ``svm_params["method"]``,
      default "auto", chose) and ``dataset`` (name, classes, sizes); the caller records the environment;
      ``geometric_difference``: {"fidelity": g(K_rbf || K_fidelity), "projected": ... with ``projected``}
      on the training inputs, against the RBF control's training Gram (``qsvm.geometric``; only when the
      ``rbf_svm_embeddings_alignment`` baseline ran);
      ``projected`` (with ``projected``) and ``model``, ``train_gram`` (with ``return_model``).
    """
    svm_params = check_svm_params(svm_params)
    baselines = check_baselines(baselines)
    if trained is None and train_config is None:
        raise ValueError("pass a train_config to train the QCNN, or trained= an existing TrainResult")
    cv = svm_params.get("cv", 5) if cv is None else cv
    svm_params["cv"] = cv
    start = time.perf_counter()

    if trained is None:
        from ..qcnn.train import train_qcnn

        trained = train_qcnn(splits, train_config)
    t_trained = time.perf_counter()

    E_train = embed(trained.model, splits.X_train, batch_size=embed_batch_size, progress=progress)
    E_test = embed(trained.model, splits.X_test, batch_size=embed_batch_size, progress=progress)
    t_embedded = time.perf_counter()

    n_qubits = svm_params.setdefault("n_qubits", E_train.shape[1])
    if n_qubits != E_train.shape[1]:
        raise ValueError(f"svm_params['n_qubits']={n_qubits} but the QCNN embeds into {E_train.shape[1]} features")
    clf = QuantumKernelSVC(**{"progress": progress, **svm_params}).fit(E_train, splits.y_train)
    predicted, scores = clf.predict_with_scores(E_test)
    n_classes = len(splits.classes)
    qsvm = {
        "metrics": classification_metrics(splits.y_test, predicted, scores, n_classes=n_classes),
        "timings": dict(clf.timings_),
        # the settings as given ("auto" or a number), then the values chosen
        "params": {
            **{k: v for k, v in clf.get_params().items() if k != "progress"},
            "bandwidth_requested": clf.bandwidth, "C_requested": clf.C,
            "bandwidth": clf.bandwidth_, "C": clf.C_, "n_support": int(len(clf.support_)),
            "n_train": int(clf.n_train_), "alignments": {str(b): a for b, a in clf.alignments_.items()},
            "method_used": clf.method_,
        },
        # concentration, Gaussian likeness, grid edge (qsvm.diagnostics); its warnings were issued by fit
        "diagnostics": clf.diagnostics_,
    }
    t_svm = time.perf_counter()

    baseline_results = run_baselines(E_train, E_test, splits.X_train, splits.X_test, splits.y_train, splits.y_test,
                                      names=baselines, cv=cv, seed=clf.seed, n_classes=n_classes,
                                      progress=progress) if baselines else {}
    t_end = time.perf_counter()
    extra = {}
    grams = {"fidelity": clf.train_kernel_}
    if projected:
        extra["projected"] = fit_projected_kernel(clf.feature_map(clf.bandwidth_), E_train, splits.y_train, E_test,
                                                  splits.y_test, method=clf.method_, cv=cv, seed=clf.seed,
                                                  n_classes=n_classes, return_gram=True)
        grams["projected"] = extra["projected"].pop("train_gram")
    if "rbf_svm_embeddings_alignment" in baseline_results:
        extra["geometric_difference"] = geometric_differences(
            E_train, baseline_results["rbf_svm_embeddings_alignment"]["params"]["gamma"], grams)
    if return_model:
        extra |= {"model": clf, "train_gram": clf.train_kernel_}

    return {
        "dataset": {
            "name": splits.name, "classes": list(splits.classes), "class_names": list(splits.class_names),
            "n_train": int(len(splits.y_train)), "n_val": int(len(splits.y_val)),
            "n_test": int(len(splits.y_test)), "image_shape": list(splits.image_shape),
        },
        "qcnn": {"metrics": trained.metrics, "timings": trained.timings},
        "qsvm": qsvm,
        "baselines": baseline_results,
        "timings": {
            "qcnn_train": t_trained - start,
            "embedding": t_embedded - t_trained,
            "states": clf.timings_["states"] + clf.timings_["predict_states"],
            "gram": clf.timings_["gram"] + clf.timings_["predict_gram"],
            "svm_select": clf.timings_["select"],
            "svm_fit": clf.timings_["fit"],
            "predict": clf.timings_["predict"],
            "baselines": t_end - t_svm,
            "total": t_end - start,
        },
        "gram_backend": clf.backend,
        "state_method": clf.method_,
        **extra,
    }


def geometric_differences(X_train, rbf_gamma: float, grams: dict, lam: float = DEFAULT_LAMBDA) -> dict:
    """{name: g(K_rbf || K)} for each quantum training Gram of ``grams``, against the RBF control's Gram.

    X_train : (N, F) the inputs both kernels saw (the RBF control's, unscaled); rbf_gamma : its chosen gamma;
    grams : {name: (N, N) quantum training Gram on the same rows}.  See ``qsvm.geometric``.
    """
    K_C = rbf_gram(X_train, gamma=rbf_gamma)
    return {name: geometric_difference(K_C, K, lam) for name, K in grams.items()}


def fit_projected_kernel(fm, X_train, y_train, X_test, y_test, *, method: str = "auto", cv: int = 5, seed: int = 0,
                         n_classes: int | None = None, return_gram: bool = False) -> dict:
    """The projected quantum kernel's SVM on ``fm``'s states: gamma and C chosen as the RBF control's are.

    The projected kernel is an RBF on the (N, 3n) one-qubit Bloch features
    (``kernels.projected``), so this is ``baselines.fit_rbf_alignment`` on
    those features: gamma = factor / median over its grid by kernel-target
    alignment, C by stratified CV on slices of the one training Gram.  Its
    ``params`` add ``gamma_projected`` (= 2 gamma: the gamma of
    exp(-gamma sum_k ||rho_k - rho_k'||_F^2)) and ``method``; ``timings`` add ``features``
    (seconds for both feature sets).  ``return_gram``: also ``"train_gram"`` (N, N) float64.
    """
    t0 = time.perf_counter()
    F_train = projected_features(fm, X_train, method=method)
    F_test = projected_features(fm, X_test, method=method)
    seconds = time.perf_counter() - t0
    out = fit_rbf_alignment(F_train, y_train, F_test, y_test, cv=cv, seed=seed, n_classes=n_classes)
    out["description"] = "SVM on the projected quantum kernel (one-qubit reduced density matrices)"
    out["params"] |= {"gamma_projected": 2 * out["params"]["gamma"], "method": method}
    out["timings"]["features"] = seconds
    if return_gram:
        out["train_gram"] = projected_gram(F_train, gamma=out["params"]["gamma_projected"])
    return out


def run_kernel_comparison(X_train, y_train, X_test, y_test, *, reps: int = 2, entanglement: str = "linear",
                          backend: str = "cpu", n_threads: int | None = None, method: str = "auto", cv: int = 5,
                          seed: int = 0, n_classes: int | None = None, bandwidths=DEFAULT_BANDWIDTHS,
                          progress: bool = False, projected: bool = False) -> dict:
    """The quantum-kernel SVM and its RBF control on the same features (no QCNN): one point of a scaling study.

    X_* : (N, n) real features, one per qubit (e.g. angles in [0, pi]);
    y_* : (N,) int labels 0..k-1.  The QSVM uses the ZZ feature map on n
    qubits (``reps``, ``entanglement``), simulated as ``method`` says
    (``"auto"``: state vectors while they fit, the exact MPS beyond), with the
    bandwidth chosen by kernel-target alignment over ``bandwidths`` (e.g.
    :func:`qmlnb.qsvm.svm.scaled_bandwidths` of n for many qubits) and C by
    stratified CV, as :class:`QuantumKernelSVC` always does; the control is
    :func:`qmlnb.qsvm.baselines.fit_rbf_alignment` (gamma by alignment, C by
    the same CV) on the same, unscaled features.

    Returns {"qsvm": {"metrics", "params" (bandwidth, bandwidths: the grid
    searched, C, method_used, alignments, n_support), "diagnostics" (its
    training Gram's ``kernel_diagnostics``; the edge flag is against that
    grid), "timings" (``QuantumKernelSVC.timings_``: states, gram over every
    candidate bandwidth, predict_gram, ...)}, "rbf":
    ``fit_rbf_alignment``'s dict, "geometric_difference": {"fidelity": g(K_rbf || K_fidelity)} on the
    training inputs}; with ``projected`` also "projected" (:func:`fit_projected_kernel` of the same map at the
    chosen bandwidth, from its MPS beyond state vectors) and its g under "geometric_difference".  Timings are
    single calls, not benchmarks.
    """
    from sklearn.utils.validation import check_X_y

    X_train, y_train = check_X_y(X_train, y_train, dtype=np.float64)  # 2-D and finite, before n is read off it
    n_classes = n_classes or int(max(np.max(y_train), np.max(y_test))) + 1
    clf = QuantumKernelSVC(n_qubits=X_train.shape[1], reps=reps, bandwidths=bandwidths,
                           entanglement=entanglement, backend=backend, n_threads=n_threads, method=method, cv=cv,
                           seed=seed, progress=progress).fit(X_train, y_train)
    predicted, scores = clf.predict_with_scores(X_test)
    qsvm = {
        "metrics": classification_metrics(y_test, predicted, scores, n_classes=n_classes),
        "params": {"bandwidth": clf.bandwidth_, "bandwidths": [float(b) for b in clf.alignments_],
                   "C": clf.C_, "method_used": clf.method_,
                   "n_support": int(len(clf.support_)), "alignments": {str(b): a for b, a in clf.alignments_.items()}},
        "diagnostics": clf.diagnostics_,
        "timings": dict(clf.timings_),
    }
    rbf = fit_rbf_alignment(X_train, y_train, X_test, y_test, cv=cv, seed=seed, n_classes=n_classes)
    out = {"qsvm": qsvm, "rbf": rbf}
    grams = {"fidelity": clf.train_kernel_}
    if projected:
        out["projected"] = fit_projected_kernel(clf.feature_map(clf.bandwidth_), X_train, y_train, X_test, y_test,
                                                method=clf.method_, cv=cv, seed=seed, n_classes=n_classes,
                                                return_gram=True)
        grams["projected"] = out["projected"].pop("train_gram")
    out["geometric_difference"] = geometric_differences(X_train, rbf["params"]["gamma"], grams)
    return out
