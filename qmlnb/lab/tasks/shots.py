"""The ``shots`` task: how many shots before the quantum kernel is useful (notebook 45-shots.ipynb).

For each qubit count n: n PCA features of the images, the ZZ feature map with
its bandwidth chosen by kernel-target alignment on the exact training Gram,
then the QSVM on the exact kernel (C by cross-validation) and, with that C, for each depolarising rate and each
shot count, on the kernel a device would estimate (``gram(..., shots=,
seed=, noise=)``: the raw frequencies, then the depolarising model inverted
when ``mitigate``; the training Gram repaired to PSD by ``psd`` before the
SVM, the repair's size recorded); beside them the RBF SVM on the same
features.  The test x train Gram is estimated with the test samples' own
global ids (n_train + i), so no test entry reuses a training entry's random
numbers.  ``seed`` draws the training images, the CV folds and the shots, so
the runs of one setting over seeds are its repeats.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import common
from .spec import BACKEND, CLASSES, DATASET, SEED, THREADS, Param, TaskSpec
from .. import stages
from ..._util import Each, Interval, IsInstance
from ...data.angles import pca_angles
from ...qcnn.determinism import set_threads
from ...qsvm.svm import bandwidth_grid

SHOTS = (100, 1_000, 10_000, 100_000, 1_000_000)


def _balanced_accuracy(y_true, y_pred) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y_true, y_pred))


def _off_diagonal(K: np.ndarray) -> np.ndarray:
    return K[np.triu_indices(len(K), 1)]


def shots_study(dataset: str = "digits", classes=(3, 8), qubits=(4, 8), shots=SHOTS, depolarising=(0.0, 0.01),
                readout: float = 0.0, estimator: str = "fidelity", mitigate: bool = True, psd: str = "clip",
                n_train: int = 100, n_test: int = 100, reps: int = 2, backend: str = "cpu", threads: int = 0,
                seed: int = 0, split_seed: int = 0, progress: bool = True):
    """The QSVM's test score and the kernel's error against shots, per qubit count and noise rate.

    Returns (metrics: task, setting, ``per_n`` {n: exact and RBF balanced
    accuracy, off-diagonal variance, predicted shots}; {"shots": one row per
    (n, depolarising, shots): the setting; ``qsvm_balanced_accuracy`` on the
    estimated kernel, ``exact_balanced_accuracy`` and ``rbf_balanced_accuracy``
    of the same seed (paired); ``kernel_error_fro`` ||K_est - K||_F and
    ``kernel_error_rel`` (divided by ||K||_F) of the training Gram before the
    PSD repair; ``fraction_zero`` (off-diagonal training entries whose count
    was 0); ``psd_n_negative``, ``psd_min_eigenvalue``, ``psd_relative_change``;
    the exact Gram's ``off_diagonal_mean`` and ``off_diagonal_var`` and
    ``predicted_shots`` = 1 / off_diagonal_var, the concentration's estimate
    of the shots needed to resolve the kernel's spread; the bandwidth and C}).
    """
    from tqdm.auto import tqdm

    from ...kernels import DeviceNoise, FeatureMap, gram, repair_psd
    from ...kernels.noise import estimate_map, outcome_map
    from ...qsvm.baselines import fit_rbf_alignment
    from ...qsvm.svm import fit_precomputed, kernel_target_alignment

    common.check_backend(backend)
    threads = set_threads(threads)
    args = SPEC.check_args(seed=seed, split_seed=split_seed, n_train=n_train, shots=list(shots))
    seed, split_seed, n_train = args["seed"], args["split_seed"], args["n_train"]
    shot_counts = sorted(set(args["shots"]))
    rates = sorted({float(p) for p in depolarising})
    for p in rates:  # bad rates fail before the data are read
        DeviceNoise(depolarising=p, layers=1, readout=readout)
    splits = common.load_data(dataset, classes=classes, seed=split_seed, grayscale=True)
    train, test = common.take(splits.y_train, n_train, seed), common.take(splits.y_test, n_test, split_seed)
    X_train, y_train = splits.X_train[train], splits.y_train[train]
    X_test, y_test = splits.X_test[test], splits.y_test[test]
    ids = (len(y_train) + np.arange(len(y_test)), np.arange(len(y_train)))
    setting = {"dataset": dataset, "classes": " vs ".join(str(c) for c in splits.classes),
              "n_train": int(len(y_train)), "n_test": int(len(y_test)), "reps": reps, "estimator": estimator,
              "mitigate": bool(mitigate), "psd": psd, "readout": float(readout), "backend": backend,
              "threads": threads, "seed": seed, "split_seed": split_seed}
    rows, per_n = [], {}
    for n in tqdm(list(qubits), desc="shots", disable=not progress):
        A_train, A_test = pca_angles(X_train, X_test, n_components=n)
        options = dict(backend=backend, n_threads=threads, dtype=np.float64)
        # bandwidth by alignment on the exact kernel: the study asks what shots do to a kernel worth having
        alignments = {}
        for bandwidth in bandwidth_grid("scaled", n):
            S = FeatureMap(n_qubits=n, reps=reps, bandwidth=bandwidth).states(A_train)
            alignments[bandwidth] = kernel_target_alignment(gram(S, **options), y_train)
        bandwidth = max(alignments, key=alignments.get)
        fm = FeatureMap(n_qubits=n, reps=reps, bandwidth=bandwidth)
        S_train, S_test = fm.states(A_train), fm.states(A_test)
        K, K_test = gram(S_train, **options), gram(S_test, S_train, **options)
        exact = fit_precomputed(K, y_train, seed=seed)
        exact_score = _balanced_accuracy(y_test, exact.svc.predict(K_test))
        rbf = fit_rbf_alignment(A_train, y_train, A_test, y_test, seed=seed, n_classes=len(splits.classes))
        rbf_score = float(rbf["metrics"]["balanced_accuracy"])
        off = _off_diagonal(K)
        variance = float(off.var())
        per_n[str(n)] = {"exact_balanced_accuracy": exact_score, "rbf_balanced_accuracy": rbf_score,
                         "off_diagonal_var": variance, "predicted_shots": 1.0 / variance if variance > 0 else None,
                         "bandwidth": bandwidth}
        norm = float(np.linalg.norm(K))
        for p in rates:
            noise = DeviceNoise.for_map(fm, depolarising=p, readout=readout) if (p or readout) else None
            # the raw frequencies (what the device returns), then the model's inverse when mitigating
            a, b = outcome_map(estimator, n, noise)
            g, h = estimate_map(estimator, n, noise, bool(mitigate and noise is not None))
            raw_g, raw_h = estimate_map(estimator, n, None, False)
            for s in shot_counts:
                device = dict(shots=s, seed=seed, estimator=estimator, noise=noise, **options)
                raw, raw_test = gram(S_train, **device), gram(S_test, S_train, ids=ids, **device)
                frequency = (raw - raw_h) / raw_g  # the counted outcome's frequency m / S
                K_est = g * frequency + h
                K_est_test = g * (raw_test - raw_h) / raw_g + h
                K_fit, repair = (K_est, None) if psd is None else repair_psd(K_est, psd)
                fit = fit_precomputed(K_fit, y_train, C=exact.C)  # the exact kernel's SVM: only the kernel changes
                error = float(np.linalg.norm(K_est - K))
                rows.append({**setting, "n_qubits": n, "depolarising": p, "layers": 0 if noise is None else noise.layers,
                             "shots": s, "qsvm_balanced_accuracy": _balanced_accuracy(y_test,
                                                                                      fit.svc.predict(K_est_test)),
                             "exact_balanced_accuracy": exact_score, "rbf_balanced_accuracy": rbf_score,
                             "kernel_error_fro": error, "kernel_error_rel": error / norm,
                             "fraction_zero": float(np.mean(_off_diagonal(frequency) == 0)),
                             "psd_n_negative": None if repair is None else repair["n_negative"],
                             "psd_min_eigenvalue": None if repair is None else repair["min_eigenvalue"],
                             "psd_relative_change": None if repair is None else repair["relative_change"],
                             "off_diagonal_mean": float(off.mean()), "off_diagonal_var": variance,
                             "predicted_shots": per_n[str(n)]["predicted_shots"], "noise_gain": a,
                             "bandwidth": bandwidth, "C": fit.C})
    metrics = {"task": stages.SHOTS, **setting, "classes": list(splits.classes), "qubits": list(qubits),
               "shots": shot_counts, "depolarising": rates, "per_n": per_n}
    return metrics, {stages.SHOTS_TABLE: pd.DataFrame(rows)}


SPEC = TaskSpec(
    name=stages.SHOTS, notebook="notebooks/45-shots.ipynb",
    params=(DATASET, CLASSES,
            Param("qubits", [4, 8], Each(Interval(int, 1))), Param("shots", list(SHOTS), Each(Interval(int, 1))),
            Param("depolarising", [0.0, 0.02], Each(Interval(float, 0, 1, closed="left"))),
            Param("readout", 0.0, Interval(float, 0, 1, closed="left")), Param("estimator", "fidelity", IsInstance(str)),
            Param("mitigate", True, IsInstance(bool)), Param("psd", "clip"), Param("n_train", 100, Interval(int, 1)),
            Param("n_test", 100, Interval(int, 0)), Param("reps", 2, Interval(int, 1)),
            BACKEND, THREADS,
            SEED, Param("split_seed", 0, Interval(int, 0))),
    metrics=("dataset", "classes", "qubits", "shots", "depolarising", "per_n", "seed", "split_seed"),
    tables=(stages.SHOTS_TABLE,))
