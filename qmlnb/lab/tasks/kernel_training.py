"""The ``kernel-training`` task: a trainable feature map against its controls, over seeds (notebook 60-kernel-training.ipynb).

The images of two classes (``n_samples`` of the pooled training and test
splits, a stratified subset drawn by ``split_seed``) become ``n_qubits`` PCA
features in [-1, 1] (``qsvm.kernel_training.pca_features``, no labels).  The
map is ``trainable_zz_circuit(n_qubits, layers)`` at ``bandwidth`` (the ZZ map
with a trainable RY layer before each repetition, theta = 0 at the start).
Then ``kernel_training_controls(..., seeds=seeds)``: per seed, its stratified
train/test split, ``KernelTrainer`` (``loss``, ``steps``, ``lr``,
``batch_size``) on the training part and, on the test part, the QSVM on the
trained map beside the untrained map, the RBF SVM and the projected kernel of
the untrained states.  The seeds run in one process: the notebook's start-up
would cost more than a seed's work.  The seeds are the setting's repeats; the
report pairs them by seed, whether one run holds them all or each run one
(runs recorded with a single ``seed`` are read alike: their rows carry it).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from . import common
from .spec import DATASET, THREADS, Param, TaskSpec
from .. import stages
from ..._util import Each, Interval, Options
from ...qcnn.determinism import set_threads
from ...qsvm.kernel_training import CONTROL_MODELS as MODELS

SCORES = ("balanced_accuracy", "alignment")
SETTING = ("dataset", "classes", "n_qubits", "layers", "bandwidth", "loss", "steps", "lr", "batch_size", "n_samples",
           "test_fraction", "split_seed")


def kernel_training_run(dataset: str = "digits", classes=(3, 5), n_qubits: int = 4, layers: int = 2,
                        bandwidth: float = 0.5, loss: str = "alignment", steps: int = 40, lr: float = 0.05,
                        batch_size: int = 64, n_samples: int = 0, test_fraction: float = 0.3, threads: int = 0,
                        seeds=(0, 1, 2, 3, 4), split_seed: int = 0):
    """The trained kernel beside its controls, for each of ``seeds`` (distinct; each its split and mini-batches).

    Returns (metrics: task, setting, ``seeds``, ``theta`` {str(seed): {name:
    trained value}}, ``<model>`` {balanced_accuracy, alignment}: mean over the
    seeds, for each of :data:`MODELS` (alignment: centred kernel-target
    alignment of the model's training Gram, so ``untrained.alignment`` and
    ``trained.alignment`` are the alignment before and after training),
    ``train_steps`` and ``train_seconds`` (the trainers', summed over the
    seeds) and ``seconds`` (the whole run); {"kernel_training": one row per
    (seed, model) (``kernel_training_controls``' columns and the setting),
    "history": one row per (seed, step) (step, objective: the batch loss
    minimised, alignment with the alignment loss, validation_loss, seed, the
    setting)}).
    """
    from ...qsvm.kernel_training import kernel_training_controls

    start = time.perf_counter()
    threads = set_threads(threads)
    args = SPEC.check_args(n_qubits=n_qubits, layers=layers, bandwidth=bandwidth, loss=loss, steps=steps, lr=lr,
                           batch_size=batch_size, n_samples=n_samples, test_fraction=test_fraction,
                           seeds=list(seeds) if isinstance(seeds, (list, tuple)) else seeds, split_seed=split_seed)
    if len(set(args["seeds"])) != len(args["seeds"]):  # before the data are read: a seed twice is one repeat twice
        raise ValueError(f"seeds must be distinct, got {args['seeds']!r}")
    X, y, found = features(dataset, classes, args["n_qubits"], args["n_samples"], args["split_seed"])
    fm = feature_map(args["n_qubits"], args["layers"], args["bandwidth"])
    options = dict(loss=args["loss"], steps=args["steps"], lr=args["lr"], batch_size=args["batch_size"])
    table = kernel_training_controls(fm, X, y, seeds=args["seeds"], test_fraction=args["test_fraction"],
                                     trainer_options=options)
    # the trainer's "loss" column is renamed "objective": "loss" is the setting's name of the objective
    history = pd.concat([table.attrs["histories"][seed].rename(columns={"loss": "objective"}).assign(seed=seed)
                         for seed in args["seeds"]], ignore_index=True)
    setting = {**{k: args[k] for k in SETTING if k in args}, "dataset": dataset,
               "classes": " vs ".join(str(c) for c in found), "n_samples": int(len(y))}
    table, history = table.assign(**setting), history.assign(**setting)
    by_model = table.groupby("model")
    trained = table[table["model"] == "trained"]
    metrics = {"task": stages.KERNEL_TRAINING, **setting, "classes": list(found), "threads": threads,
               "seeds": args["seeds"], "theta": {str(seed): table.attrs["theta"][seed] for seed in args["seeds"]},
               **{m: {s: float(by_model[s].mean()[m]) for s in SCORES} for m in MODELS},
               "train_steps": int(trained["train_steps"].sum()), "train_seconds": float(trained["train_seconds"].sum()),
               "seconds": time.perf_counter() - start}
    return metrics, {stages.KERNEL_TRAINING_TABLE: pd.DataFrame(table), stages.HISTORY: history}


def features(dataset: str, classes, n_qubits: int, n_samples: int, split_seed: int):
    """(X (N, n_qubits) float64 PCA features in [-1, 1], y (N,) labels 0/1, the classes found): ``n_samples``
    images (0: all) of the pooled training and test splits, a stratified subset drawn by ``split_seed``."""
    from ...qsvm.kernel_training import pca_features

    if len(classes) != 2:
        raise ValueError(f"classes must name two classes (the SVC loss and the paired verdict are binary), "
                         f"got {list(classes)!r}")
    splits = common.load_data(dataset, classes=classes, seed=split_seed, grayscale=True)
    images = np.concatenate([splits.X_train, splits.X_test])
    labels = np.concatenate([splits.y_train, splits.y_test])
    keep = common.take(labels, n_samples, split_seed)
    return pca_features(images[keep], n_qubits), labels[keep], splits.classes


def feature_map(n_qubits: int, layers: int, bandwidth: float, theta: dict | None = None):
    """The task's ``CircuitFeatureMap``: ``trainable_zz_circuit(n_qubits, layers)`` at ``bandwidth``, its
    parameters at ``theta`` ({name: value}, a run's recorded ``metrics["theta"]``) or at their start (0)."""
    from ...kernels import CircuitFeatureMap
    from ...kernels.circuit import Circuit
    from ...qsvm.kernel_training import trainable_zz_circuit

    circuit = trainable_zz_circuit(n_qubits, layers)
    if theta is not None:
        circuit = Circuit(circuit.n_qubits, circuit.gates, theta={**circuit.theta_dict, **theta},
                          n_features=circuit.n_features, name=circuit.name)
    return CircuitFeatureMap(circuit, bandwidth=bandwidth)


def plot_gram_before_after(metrics: dict, n: int = 80, seed: int | None = None):
    """The Gram of ``n`` samples (stratified, ordered by class) at the initial and the trained theta of ``seed``
    (one of the run's ``seeds``; None: the first), side by side with each one's centred alignment; rebuilt from
    the run's recorded setting."""
    import matplotlib.pyplot as plt

    from ...qsvm.kernel_training import grams_by_class

    X, y, _ = features(metrics["dataset"], metrics["classes"], metrics["n_qubits"], metrics["n_samples"],
                       metrics["split_seed"])
    seed = metrics["seeds"][0] if seed is None else seed
    if str(seed) not in metrics["theta"]:
        raise ValueError(f"seed must be one of the run's seeds {metrics['seeds']!r}, got {seed!r}")
    pick = common.take(y, n, seed)
    maps = {"before": feature_map(metrics["n_qubits"], metrics["layers"], metrics["bandwidth"]),
            "after": feature_map(metrics["n_qubits"], metrics["layers"], metrics["bandwidth"],
                                 metrics["theta"][str(seed)])}
    grams, alignments, _ = grams_by_class(maps, X[pick], y[pick])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (name, K) in zip(axes, grams.items()):
        image = ax.imshow(K, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{name} training: alignment {alignments[name]:.3f}")
    fig.colorbar(image, ax=axes, shrink=0.8)
    return fig


SPEC = TaskSpec(
    name=stages.KERNEL_TRAINING, notebook="notebooks/60-kernel-training.ipynb",
    params=(DATASET, Param("classes", [3, 5]),
            Param("n_qubits", 4, Interval(int, 1)), Param("layers", 2, Interval(int, 1)),
            Param("bandwidth", 0.5, Interval(float, 0, closed="neither")),
            Param("loss", "alignment", Options(("alignment", "svc"))),
            Param("steps", 40, Interval(int, 1)), Param("lr", 0.05, Interval(float, 0, closed="neither")),
            Param("batch_size", 64, Interval(int, 4)), Param("n_samples", 0, Interval(int, 0)),
            Param("test_fraction", 0.3, Interval(float, 0, 1, closed="neither")),
            THREADS, Param("seeds", [0, 1, 2, 3, 4], Each(Interval(int, 0))), Param("split_seed", 0, Interval(int, 0))),
    metrics=("dataset", "classes", "n_qubits", "loss", "seeds", *(f"{m}.{s}" for m in MODELS for s in SCORES),
             "train_steps", "train_seconds", "seconds"),
    tables=(stages.KERNEL_TRAINING_TABLE, stages.HISTORY))
