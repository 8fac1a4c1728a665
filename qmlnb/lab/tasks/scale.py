"""The ``kernels-at-scale`` task (notebook 40-kernels-at-scale.ipynb): the QSVM beside an RBF SVM against qubits."""
from __future__ import annotations

import pandas as pd

from . import common
from .spec import BACKEND, CLASSES, DATASET, SEED, THREADS, Param, TaskSpec
from .. import stages
from ... import _util, timing
from ..._util import Each, Interval, IsInstance, Options
from ...data.angles import pca_angles, pixel_angles
from ...qcnn.determinism import set_threads
from ...qsvm.svm import BANDWIDTH_RULES, bandwidth_grid


FEATURES = ("pca", "pixels")  # kernels_at_scale's ``features``: what each qubit encodes


def check_scale_features(features: str, qubits, n_train: int, image_shape) -> list[int]:
    """The sorted qubit counts if ``features`` can give each of them from ``n_train`` images of ``image_shape``.

    ``pca``: at most min(n_train, pixels) components (PCA has no more
    directions); ``pixels``: perfect squares s * s with s <= the image side.
    Otherwise a ValueError naming the largest count that works, before any work.
    """
    from ...data.resample import pixel_side

    Options(FEATURES)(features, "features")
    qubits = sorted({_util.check_positive_int(n, "each of qubits") for n in qubits})
    if not qubits:
        raise ValueError("qubits must be a non-empty list of positive integers, got []")
    channels, height, width = image_shape
    if features == "pca":
        cap = min(n_train, height * width)
        too_many = [n for n in qubits if n > cap]
        if too_many:
            raise ValueError(f"features='pca' cannot give n_qubits={too_many}: PCA has at most min(n_train, pixels) = "
                             f"min({n_train}, {height * width}) = {cap} components (fitted on the {n_train} training "
                             f"images); use qubits <= {cap}, more training images, or features='pixels'")
    else:
        for n in qubits:
            pixel_side(n, height, width)
    return qubits


def kernels_at_scale(dataset: str = "digits", classes=(3, 8), features=FEATURES, qubits=(4, 16, 64),
                     n_train: int = 100, n_test: int = 0, reps: int = 2, backend: str = "cpu", method: str = "auto",
                     threads: int = 0, seed: int = 0, split_seed: int = 0, bandwidth_rule: str = "scaled",
                     projected: bool = False, progress: bool = True):
    """The quantum-kernel SVM beside an RBF SVM on the same features, for each qubit count n in ``qubits``.

    The data split (train / validation / test) is fixed by ``split_seed``; the
    test set (``n_test`` of it, stratified, 0: all) too, so every seed is scored
    on the same images.  ``seed`` draws the ``n_train`` training images
    (stratified, from the training split) and seeds the CV folds, so the runs
    of one setting over seeds are its repeats.  For each kind in ``features``
    (one of :data:`FEATURES`, or a list of them) and each n:

    - ``"pca"``: n PCA components fitted on the training images, scaled to
      [0, pi] (:func:`pca_angles`); n <= min(n_train, pixels), else refused
      before any work (:func:`check_scale_features`);
    - ``"pixels"``: the image area-averaged to s x s = n pixels (:func:`pixel_angles`;
      n = 784 is a 28 x 28 image itself; n must be a perfect square).

    Then :func:`qmlnb.qsvm.pipeline.run_kernel_comparison`: the ZZ map (``reps``,
    linear entanglement) simulated by ``method`` ("auto": state vectors up to
    20 qubits, the exact MPS beyond), bandwidth by kernel-target alignment over
    :func:`bandwidth_grid` (``bandwidth_rule`` "scaled": the default grid
    extended by sqrt(8 / n) beyond 8 qubits, :func:`qmlnb.qsvm.svm.scaled_bandwidths`,
    against the concentration of many-qubit kernels; "default": ``DEFAULT_BANDWIDTHS``
    at every n), C by CV, Gram ``backend``; beside it the RBF SVM with gamma by alignment, and with
    ``projected`` the projected quantum kernel of the same map at the chosen bandwidth (from the MPS beyond
    state vectors; gamma and C chosen as the RBF's): three kernels side by side.  Every row records the
    geometric difference g(K_rbf || K) of each quantum kernel against the RBF's training Gram.

    Returns (metrics: task, dataset, classes, features, qubits, sizes, seeds,
    bandwidth_rule, ``per_n`` {"<features>:<n>": {qsvm / rbf balanced accuracy,
    method, bandwidth, bandwidth_grid_min, gram_s}};
    {"scale": one row per (features, n): the setting (bandwidth_rule included),
    qsvm_* and rbf_* accuracy, balanced accuracy and degenerate flag, difference
    (QSVM - RBF balanced accuracy), method, the QSVM training Gram's diagnostics
    (off-diagonal mean and std, Gaussian correlation, alignment, bandwidth, the
    grid searched as ``bandwidth_grid`` and its smallest value
    ``bandwidth_grid_min``, grid edge against that grid, flags), warnings, C, the RBF's gamma, gamma factor, C and
    off-diagonal std, ``g_fidelity`` (and with ``projected``: ``projected_*`` scores, ``projected_gamma``,
    ``projected_C``, ``projected_off_diagonal_std``, ``g_projected`` and ``projected_s``), and the
    seconds of the states, the training Grams over the bandwidth grid (and per
    bandwidth), the test Gram and the RBF (single calls, not benchmarks) with
    the load}).
    """
    from tqdm.auto import tqdm

    from ...qsvm.pipeline import run_kernel_comparison

    common.check_backend(backend)
    kinds = [features] if isinstance(features, str) else list(features)
    if not kinds:
        raise ValueError(f"features must name at least one of {FEATURES}, got []")
    threads = set_threads(threads)
    args = SPEC.check_args(split_seed=split_seed, seed=seed, n_train=n_train)
    split_seed, seed, n_train = args["split_seed"], args["seed"], args["n_train"]
    bandwidth_grid(bandwidth_rule, 1)  # an unknown rule fails before the data are read
    splits = common.load_data(dataset, classes=classes, seed=split_seed, grayscale=True)
    train = common.take(splits.y_train, n_train, seed)
    test = common.take(splits.y_test, n_test, split_seed)
    X_train, y_train = splits.X_train[train], splits.y_train[train]
    X_test, y_test = splits.X_test[test], splits.y_test[test]
    points = [(kind, n) for kind in kinds
              for n in check_scale_features(kind, qubits, len(y_train), splits.image_shape)]
    setting = {"dataset": dataset, "classes": " vs ".join(str(c) for c in splits.classes),
              "n_train": int(len(y_train)), "n_test": int(len(y_test)), "reps": reps, "method_requested": method,
              "bandwidth_rule": bandwidth_rule, "backend": backend, "threads": threads, "seed": seed,
              "split_seed": split_seed}
    rows = []
    for kind, n in tqdm(points, desc="kernels at scale", disable=not progress):
        if kind == "pca":
            A_train, A_test = pca_angles(X_train, X_test, n_components=n)
        else:
            A_train, A_test = pixel_angles(X_train, X_test, n_pixels=n)
        load_before = timing.load_average()
        result = run_kernel_comparison(A_train, y_train, A_test, y_test, reps=reps, backend=backend,
                                       n_threads=threads, method=method, seed=seed,
                                       n_classes=len(splits.classes), bandwidths=bandwidth_grid(bandwidth_rule, n),
                                       projected=projected)
        qsvm, rbf = result["qsvm"], result["rbf"]
        diagnostics, kernel_warnings = common.flat_diagnostics(qsvm["diagnostics"])
        t = qsvm["timings"]
        row = {**setting, "features": kind, "n_qubits": n, "method": qsvm["params"]["method_used"]}
        for name, scores in (("qsvm", qsvm["metrics"]), ("rbf", rbf["metrics"])):
            row |= {f"{name}_{key}": scores[key] for key in ("accuracy", "balanced_accuracy", "degenerate")}
        row["difference"] = row["qsvm_balanced_accuracy"] - row["rbf_balanced_accuracy"]
        row |= {f"g_{kernel}": g for kernel, g in result["geometric_difference"].items()}
        if projected:  # the third kernel: its scores and diagnostics in the same row, beside the other two
            p = result["projected"]
            row |= {f"projected_{key}": p["metrics"][key] for key in ("accuracy", "balanced_accuracy", "degenerate")}
            row |= {"projected_gamma": p["params"]["gamma_projected"], "projected_C": p["params"]["C"],
                    "projected_off_diagonal_std": p["diagnostics"]["off_diagonal_std"],
                    "projected_s": p["timings"]["fit"] + p["timings"]["predict"] + p["timings"]["features"]}
        row |= diagnostics
        row["bandwidth_grid_min"] = min(qsvm["params"]["bandwidths"])
        row |= {"C": qsvm["params"]["C"], "warnings": "; ".join(kernel_warnings), "rbf_gamma": rbf["params"]["gamma"],
                "rbf_gamma_factor": rbf["params"]["gamma_factor"], "rbf_C": rbf["params"]["C"],
                "rbf_off_diagonal_std": rbf["diagnostics"]["off_diagonal_std"],
                "states_s": t["states"] + t.get("predict_states", 0.0), "gram_s": t["gram"],
                "gram_per_bandwidth_s": t["gram"] / len(qsvm["params"]["alignments"]),
                "gram_test_s": t.get("predict_gram"), "rbf_s": rbf["timings"]["fit"] + rbf["timings"]["predict"],
                "load": max(load_before, timing.load_average())}
        rows.append(row)
    table = pd.DataFrame(rows)
    metrics = {"task": stages.SCALE, **setting, "classes": list(splits.classes), "features": kinds,
               "qubits": sorted({n for _, n in points}),
               "methods_used": sorted(set(table["method"])),
               "per_n": {f"{r['features']}:{r['n_qubits']}": {
                   "qsvm_balanced_accuracy": r["qsvm_balanced_accuracy"],
                   "rbf_balanced_accuracy": r["rbf_balanced_accuracy"], "method": r["method"],
                   "bandwidth": r["bandwidth"], "bandwidth_grid_min": r["bandwidth_grid_min"], "gram_s": r["gram_s"]}
                   for r in rows},
               "load": float(table["load"].max())}
    return metrics, {stages.SCALE_TABLE: table}


SPEC = TaskSpec(
    name=stages.SCALE, notebook="notebooks/40-kernels-at-scale.ipynb",
    params=(DATASET, CLASSES,
            Param("features", ["pca", "pixels"]), Param("qubits", [4, 16, 64], Each(Interval(int, 1))),
            Param("n_train", 100, Interval(int, 1)), Param("n_test", 0, Interval(int, 0)),
            Param("reps", 2, Interval(int, 1)), BACKEND,
            Param("method", "auto", IsInstance(str)), THREADS,
            SEED, Param("split_seed", 0, Interval(int, 0)),
            Param("bandwidth_rule", "scaled", Options(BANDWIDTH_RULES)), Param("projected", False, IsInstance(bool))),
    metrics=("dataset", "classes", "features", "qubits", "methods_used", "per_n", "load", "bandwidth_rule", "seed",
             "split_seed"),
    tables=(stages.SCALE_TABLE,))
