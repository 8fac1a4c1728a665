"""The ``positive-control`` task (notebook 25-positive-control.ipynb): the quantum kernels against their RBF
control on the data's real labels and on labels engineered so that the quantum kernel must win.

A comparison that can only answer "no" proves nothing (docs/controls.md, "A control that can say yes").
One run takes the training images of one class pair (the split fixed by
``split_seed``), as ``n_qubits`` standardised principal components, and for each quantum kernel
(fidelity and projected, ZZ map) scores the quantum-kernel SVM beside the RBF control
(:func:`qmlnb.qsvm.positive_control.run_positive_control`) twice on the same inputs and the same
70/30 split of them drawn by each seed of ``seeds``:

- ``natural``: the images' own class labels;
- ``engineered``: Huang et al.'s labels from the top eigenvector of sqrt(K_Q) K_C^-1 sqrt(K_Q)
  (:func:`qmlnb.qsvm.geometric.engineered_labels`), on which the quantum kernel must win.

The geometric difference g(K_C || K_Q) depends on the inputs only, so both labellings record the same g.
Its table's rows pair up seed by seed (quantum against RBF); runs of several ``split_seed`` pool their
seeds (the report: :mod:`qmlnb.lab.report.positive`).
"""
from __future__ import annotations

import warnings

import numpy as np

from . import common
from .spec import CLASSES, DATASET, Param, TaskSpec
from .. import stages
from ..._util import Each, Interval

LABELS = ("natural", "engineered")  # the labellings one run scores, natural first
MODELS = ("quantum", "rbf")         # the quantum-kernel SVM and its RBF control
SCORES = ("accuracy", "balanced_accuracy", "degenerate")  # the scores of each model a row records


def pca_inputs(images: np.ndarray, n: int, n_components: int) -> np.ndarray:
    """(n, n_components) float64 principal components of the first ``n`` images (any shape per image; 0: all),
    each scaled to unit standard deviation: the feature map's and the RBF control's inputs."""
    from sklearn.decomposition import PCA

    pixels = images.reshape(len(images), -1)[: n or None].astype(np.float64)
    if n_components > min(pixels.shape):
        raise ValueError(f"n_qubits must be at most min(images, pixels) = {min(pixels.shape)}, got {n_components}")
    X = PCA(n_components, random_state=0).fit_transform(pixels)
    return X / X.std(axis=0)


def positive_control_run(dataset: str = "digits", classes=(3, 8), n: int = 120, n_qubits: int = 6,
                         bandwidth: float = 1.0, seeds=(0, 1, 2, 3, 4), split_seed: int = 0, cv: int = 3):
    """The positive control over ``seeds``: for each kernel of :data:`qmlnb.qsvm.positive_control.KERNELS`, each
    labelling of :data:`LABELS` and each seed, the quantum-kernel SVM and the RBF control on the same split.

    Inputs: the first ``n`` training images of ``classes`` (0: all; the data split fixed by ``split_seed``)
    as ``n_qubits`` standardised PCA components; the ZZ feature map (reps 2, linear entanglement,
    ``bandwidth``).  Each seed draws the 70/30 split of those inputs and the ``cv`` CV folds of C (and of
    the RBF control's C); the labels are engineered once per kernel (they depend on the inputs only).
    The seeds run in one process: the notebook's start-up would cost more than a seed's work.

    Returns (metrics: task, dataset, classes, n, n_qubits, bandwidth, seeds, split_seed, cv, ``g``
    {kernel: g(K_C || K_Q)}, ``mean_difference`` {labels: {kernel: mean quantum - RBF balanced
    accuracy}}; {"positive_control": one row per (labels, kernel, seed): the setting (dataset, classes, n,
    n_qubits, bandwidth, split_seed), g, n_train, n_test and
    ``quantum_<score>`` / ``rbf_<score>`` for the accuracy, balanced accuracy and degenerate flag}).
    """
    import pandas as pd

    from ...kernels import FeatureMap
    from ...qsvm.diagnostics import KernelDiagnosticWarning
    from ...qsvm.positive_control import KERNELS, run_positive_control

    args = SPEC.check_args(n=n, n_qubits=n_qubits, bandwidth=bandwidth, seeds=list(seeds), split_seed=split_seed,
                           cv=cv)
    splits = common.load_data(dataset, classes=classes, seed=args["split_seed"])
    X = pca_inputs(splits.X_train, args["n"], args["n_qubits"])
    y_natural = splits.y_train[: len(X)]
    fm = FeatureMap(n_qubits=args["n_qubits"], reps=2, bandwidth=args["bandwidth"])
    rows, g = [], {}
    setting = {"dataset": dataset, "classes": " vs ".join(str(c) for c in splits.classes), "n": len(X),
               "n_qubits": args["n_qubits"], "bandwidth": args["bandwidth"], "split_seed": args["split_seed"]}
    with warnings.catch_warnings():  # the RBF control's diagnostics are not this task's finding
        warnings.simplefilter("ignore", KernelDiagnosticWarning)
        for kernel in KERNELS:
            engineered = None
            for seed in args["seeds"]:
                given = None if engineered is None else (engineered["labels"], info)
                engineered = run_positive_control(X, fm, kernel=kernel, seed=seed, cv=args["cv"], labels=given)
                info = {**engineered["labels_info"], "g": engineered["g"]}  # g: of the inputs, whatever the labels
                natural = run_positive_control(X, fm, kernel=kernel, seed=seed, cv=args["cv"],
                                               labels=(y_natural, info))
                g[kernel] = engineered["g"]
                for labels, result in (("natural", natural), ("engineered", engineered)):
                    row = {**setting, "labels": labels, "kernel": kernel, "seed": seed, "g": result["g"],
                           "n_train": result["n_train"], "n_test": result["n_test"]}
                    for model in MODELS:
                        row |= {f"{model}_{key}": result[model]["metrics"][key] for key in SCORES}
                    rows.append(row)
    table = pd.DataFrame(rows)
    difference = (table["quantum_balanced_accuracy"] - table["rbf_balanced_accuracy"]).groupby(
        [table["labels"], table["kernel"]]).mean()
    metrics = {"task": stages.POSITIVE_CONTROL, "dataset": dataset, "classes": list(splits.classes), "n": len(X),
               "n_qubits": args["n_qubits"], "bandwidth": args["bandwidth"], "seeds": args["seeds"],
               "split_seed": args["split_seed"], "cv": args["cv"], "g": g,
               "mean_difference": {labels: {kernel: float(difference[labels, kernel]) for kernel in KERNELS}
                                   for labels in LABELS}}
    return metrics, {stages.POSITIVE_CONTROL_TABLE: table}


SPEC = TaskSpec(
    name=stages.POSITIVE_CONTROL, notebook="notebooks/25-positive-control.ipynb",
    params=(DATASET, CLASSES, Param("n", 120, Interval(int, 0)), Param("n_qubits", 6, Interval(int, 1)),
            Param("bandwidth", 1.0, Interval(float, 0, closed="neither")),
            Param("seeds", [0, 1, 2, 3, 4], Each(Interval(int, 0))), Param("split_seed", 0, Interval(int, 0)),
            Param("cv", 3, Interval(int, 2))),
    metrics=("dataset", "classes", "n", "n_qubits", "bandwidth", "seeds", "split_seed", "cv", "g", "mean_difference"),
    tables=(stages.POSITIVE_CONTROL_TABLE,))
G = SPEC.metric("g")  # {kernel: g(K_C || K_Q)} of the run's inputs
