"""The ``qsvm`` task (notebook 20-qsvm.ipynb): the QCNN, then the quantum-kernel SVM on its embeddings,
beside the classical baselines, with the training Gram timed against its references."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import common
from .qcnn import train_config
from .spec import BACKEND, CLASSES, DATASET, SEED, THREADS, Param, TaskSpec
from .. import stages
from ... import timing
from ..._util import Interval, IsInstance


def _svm_states(model, X, params: dict) -> np.ndarray:
    """States of the SVM's chosen feature map (``params``: n_qubits, reps, entanglement, kind, bandwidth)
    on the trained model's embeddings of images ``X``: (N, 2**n_qubits) complex64."""
    from ...kernels import FeatureMap
    from ...qsvm.pipeline import embed

    fm = FeatureMap(n_qubits=params["n_qubits"], reps=params["reps"], entanglement=params["entanglement"],
                    kind=params["kind"], bandwidth=float(params["bandwidth"]))
    return fm.states(embed(model, X))


def kernel_sample(model, splits, params: dict, backend: str, n: int = 80) -> pd.DataFrame:
    """The fidelity Gram of the first ``n`` training samples, sorted by class, as a (n, n) table.

    Uses the trained model's embeddings and the SVM's chosen feature map
    (``params``: n_qubits, reps, entanglement, kind, bandwidth) -- the kernel the SVM saw.
    """
    from ...kernels import gram

    y = splits.y_train[:n]
    order = np.argsort(y, kind="stable")
    K = gram(_svm_states(model, splits.X_train[:n][order], params), backend=backend)
    return pd.DataFrame(K, columns=[f"{splits.class_names[c]}:{i}" for i, c in enumerate(y[order])])


def gram_comparison(S: np.ndarray, backend: str, threads: int, *, repeats: int = 5, min_time: float = 0.2) -> dict:
    """The training Gram of ``backend`` interleaved with ``cpu`` and BLAS ``cherk`` on the same states ``S``.

    ``S`` is (N, d) complex64.  Returns the backend's Timing dict (``gram``),
    ``gflops`` (8 N^2 d / median), ``vs_cherk`` (cherk's median over the
    backend's: the fraction of BLAS throughput) and ``speedup_vs_cpu`` (absent
    for ``cpu``), each a :func:`qmlnb.timing.ratio` of the paired rounds, and ``noisy``.
    """
    from ...kernels import gram
    from ...kernels.blas_reference import cherk_call, gram_gflops

    calls = {"backend": lambda: gram(S, backend=backend, n_threads=threads), "cherk": cherk_call(S, threads)}
    if backend != "cpu":
        calls["cpu"] = lambda: gram(S, backend="cpu", n_threads=threads)
    timed = timing.interleaved(calls, min_rounds=repeats, min_time=min_time)
    t = timed["backend"]
    out = {"gram": t.as_dict(), "cherk": timed["cherk"].as_dict(), "n": len(S), "dim": S.shape[1],
           "gflops": gram_gflops(len(S), len(S), S.shape[1], t.median),
           "vs_cherk": timing.ratio(timed["cherk"], t), "noisy": any(x.noisy for x in timed.values())}
    if "cpu" in timed:
        out["cpu"] = timed["cpu"].as_dict()
        out["speedup_vs_cpu"] = timing.ratio(timed["cpu"], t)
    return out


def qsvm_run(dataset: str = "digits", classes=(3, 8), n_train: int = 0, backend: str = "cpu", tile: int = 0,
             threads: int = 0, n_qubits: int = 4, bandwidth: float = 0.0, C: float = 0.0, epochs: int = 3,
             batch_size: int = 32, lr: float = 0.01, baselines: bool = True, cnn_baseline: bool = True,
             grayscale: bool = False, seed: int = 0, split_seed: int = 0, projected: bool = False,
             progress: bool = True):
    """Train the QCNN, then the quantum-kernel SVM on its embeddings with ``backend``, beside the baselines.

    ``bandwidth`` / ``C`` 0 mean "auto" (kernel-target alignment / CV search).
    ``projected`` also scores the projected quantum kernel of the same feature map at the chosen bandwidth
    (``qsvm.pipeline.fit_projected_kernel``): the third kernel beside the fidelity QSVM and the RBF control.
    ``split_seed`` fixes the data split (the training subset of ``n_train`` and the test set), ``seed`` the
    QCNN's and CNN's initial weights and shuffling and the SVM's CV folds: the runs of one split over seeds
    are repeats of one task (docs/controls.md); a grid over ``split_seed`` repeats it over splits, and the
    report pools those runs as distinct repeats (:func:`qmlnb.lab.report.controls.qsvm_long`).
    ``baselines`` scores the classical models of :data:`qmlnb.qsvm.baselines.BASELINES`
    (on the QCNN's embeddings and on the pixels); ``cnn_baseline`` also trains
    the classical CNN (:data:`.stages.CNN_BASELINE`): the QCNN's network with the quantum
    layer replaced by a linear head (``head="cnn-linear"``), by the same trainer
    with the same budget (epochs, batch size, lr, early stopping), seed and split.
    Returns (metrics with ``qcnn``, ``qsvm`` and ``baselines.<name>`` scores (each
    with its ``degenerate`` flag; ``baselines.<name>.fit_s`` its fit time: for the
    CNN its one training call, as ``timings.train_s`` is the QCNN's),
    ``kernel_diagnostics`` (flat scalars of the training Gram's
    :func:`qmlnb.qsvm.diagnostics.kernel_diagnostics`), ``kernel_warnings`` (its
    sentences), ``baseline_diagnostics.<name>`` (the RBF control's Gram),
    ``degenerate`` (the QSVM predicts one class), ``degenerate_models`` (every
    model that does) and ``timings`` (train_s, cnn_train_s, gram_s, ...),
    {"kernel_sample": Gram table, "timings": one row}).
    ``timings.gram_s`` is the median of the training Gram timed by
    :func:`gram_comparison` (warm-up apart, interleaved with ``cpu`` and BLAS
    ``cherk`` on the same states); the pipeline's single cold call is
    ``timings.gram_first_call_s``.
    """
    import dataclasses

    from ...qsvm.baselines import BASELINES
    from ...qsvm.pipeline import run_qsvm_experiment
    from ...qcnn.train import train_qcnn

    common.check_backend(backend)  # before training: a backend that cannot run here skips the run
    cfg = train_config(threads=threads, n_qubits=n_qubits, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       progress=progress)
    split_seed = SPEC.check_args(split_seed=split_seed)["split_seed"]
    splits = common.load_data(dataset, classes=classes, n_train=n_train, seed=split_seed, grayscale=grayscale)
    trained = train_qcnn(splits, cfg)
    # the classical CNN: the same network, trainer, budget, seed and split; only the quantum layer is replaced
    cnn = train_qcnn(splits, dataclasses.replace(cfg, head="cnn-linear")) if cnn_baseline else None
    svm_params = {"backend": backend, "tile": tile or None, "n_threads": cfg.threads, "seed": seed,
                  "bandwidth": bandwidth or "auto", "C": C or "auto"}
    result = run_qsvm_experiment(splits, svm_params=svm_params, trained=trained,
                                 baselines=tuple(BASELINES) if baselines else (), projected=projected)
    timings = {**result["timings"], "qcnn_train": trained.timings["total"],
               **({"cnn_train": cnn.timings["total"]} if cnn else {})}
    # the pipeline's Gram is one cold call (compilation included): time it again, steady, beside its references
    compared = gram_comparison(_svm_states(trained.model, splits.X_train, result["qsvm"]["params"]), backend,
                               cfg.threads)
    gram_t = compared["gram"]
    metrics = {"task": stages.QSVM, "dataset": dataset, "classes": list(splits.classes), "mode": "sequential",
               "backend": result["gram_backend"], "threads": cfg.threads, "n_train": int(len(splits.y_train)),
               "n_test": int(len(splits.y_test)), "n_qubits": n_qubits, "epochs": epochs, "batch_size": batch_size,
               "qcnn": result["qcnn"]["metrics"], "qsvm": result["qsvm"]["metrics"],
               "qsvm_params": result["qsvm"]["params"],
               "baselines": {name: {**r["metrics"], "fit_s": r["timings"]["fit"]}
                             for name, r in result["baselines"].items()},
               "timings": {"train_s": trained.timings["total"], "gram_s": gram_t["median_s"],
                           "gram_iqr_s": gram_t["iqr_s"], "gram_n": gram_t["n"], "gram_compile_s": gram_t["compile_s"],
                           "gram_first_call_s": timings["gram"], "gram_gflops": compared["gflops"],
                           "gram_vs_cherk": compared["vs_cherk"]["ratio"],
                           "gram_speedup_vs_cpu": (compared.get("speedup_vs_cpu") or {}).get("ratio"),
                           "states_s": timings["states"], "svm_fit_s": timings["svm_fit"],
                           "svm_select_s": timings["svm_select"],
                           "total_s": timings["total"] + timings["qcnn_train"] + timings.get("cnn_train", 0.0)},
               "gram_comparison": compared, "noisy": compared["noisy"], "load": max(gram_t["load_before"], gram_t["load_after"])}
    if projected:  # the third kernel, scored like a baseline: its scores and fit_s (features, gamma and C search)
        seconds = result["projected"]["timings"]
        metrics["projected"] = {**result["projected"]["metrics"], "fit_s": seconds["fit"] + seconds["features"]}
    if "geometric_difference" in result:
        metrics["geometric_difference"] = result["geometric_difference"]
    if cnn is not None:  # a baseline like the others: its scores, degenerate flag and fit_s (its training)
        metrics["baselines"][stages.CNN_BASELINE] = {**cnn.metrics, "fit_s": cnn.timings["total"]}
        metrics["timings"]["cnn_train_s"] = cnn.timings["total"]
    # the training Gram's diagnostics (concentration, Gaussian likeness, grid edge), flat for the report, and those
    # of the RBF control's Gram (gamma chosen by alignment like the bandwidth)
    diagnostics = result["qsvm"].get("diagnostics")
    metrics["kernel_diagnostics"], metrics["kernel_warnings"] = common.flat_diagnostics(diagnostics)
    metrics["baseline_diagnostics"] = {name: common.flat_diagnostics(r.get("diagnostics"))[0]
                                       for name, r in result["baselines"].items() if r.get("diagnostics")}
    models = {"qcnn": metrics["qcnn"], "qsvm": metrics["qsvm"], **metrics["baselines"],
              **({"projected": metrics["projected"]} if projected else {})}
    metrics["degenerate_models"] = sorted(name for name, scores in models.items() if scores.get("degenerate"))
    metrics["degenerate"] = "qsvm" in metrics["degenerate_models"]
    metrics["seed"], metrics["split_seed"] = seed, split_seed
    tables = {stages.KERNEL_SAMPLE: kernel_sample(trained.model, splits, result["qsvm"]["params"], backend),
              stages.TIMINGS: pd.DataFrame([timings])}
    return metrics, tables


SPEC = TaskSpec(
    name=stages.QSVM, notebook="notebooks/20-qsvm.ipynb",
    params=(DATASET, CLASSES,
            Param("n_train", 100, Interval(int, 0)), BACKEND,
            Param("tile", 0, Interval(int, 0)), THREADS,
            Param("n_qubits", 4, Interval(int, 1)), Param("bandwidth", 0.0, Interval(float, 0)),
            Param("C", 0.0, Interval(float, 0)), Param("epochs", 3, Interval(int, 1)),
            Param("batch_size", 32, Interval(int, 1)), Param("lr", 0.01, Interval(float, 0, closed="neither")),
            Param("baselines", True, IsInstance(bool)), Param("cnn_baseline", True, IsInstance(bool)),
            Param("grayscale", False, IsInstance(bool)), SEED, Param("split_seed", 0, Interval(int, 0)),
            Param("projected", False, IsInstance(bool))),
    metrics=("dataset", "backend", "threads", "n_train", "seed", "split_seed", "qcnn", "qcnn.balanced_accuracy", "qsvm",
             "qsvm.accuracy", "qsvm.f1", "qsvm.balanced_accuracy", "qsvm.degenerate", "qsvm_params", "baselines",
             "timings", "timings.train_s", "timings.gram_s", "timings.svm_fit_s", "timings.gram_speedup_vs_cpu",
             "gram_comparison", "kernel_diagnostics", "kernel_warnings", "baseline_diagnostics", "degenerate",
             "degenerate_models", "noisy", "load"),
    optional=("kernel_diagnostics.off_diagonal_std", "timings.cnn_train_s", "projected", "geometric_difference"),
    tables=(stages.KERNEL_SAMPLE, stages.TIMINGS))
SCORES = SPEC.metric("qsvm")  # the QSVM's test scores: SCORES.join("f1")
QCNN_SCORES = SPEC.metric("qcnn")  # the QCNN's, trained in the same run
BASELINE_SCORES = SPEC.metric("baselines")  # {name: scores and fit_s} of each classical model
DIAGNOSTICS = SPEC.metric("kernel_diagnostics")  # the training Gram's flat diagnostics
GRAM_S, SVM_FIT_S = SPEC.metric("timings.gram_s"), SPEC.metric("timings.svm_fit_s")
GRAM_SPEEDUP_VS_CPU = SPEC.metric("timings.gram_speedup_vs_cpu")
TRAIN_S = SPEC.metric("timings.train_s")  # the QCNN's training, as the qcnn task's
PROJECTED_SCORES = SPEC.metric("projected")  # the projected kernel's test scores (with projected=True)
GEOMETRIC_DIFFERENCE = SPEC.metric("geometric_difference")  # {kernel: g(K_rbf || K_kernel)} on the training inputs
PARAMS = SPEC.metric("qsvm_params")  # the QSVM's chosen settings (C, bandwidth, feature map)
