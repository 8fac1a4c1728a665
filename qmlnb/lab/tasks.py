"""What each notebook runs, as functions, so the notebooks stay a parameters cell and a few calls.

Every experiment returns plain data (dicts of metrics, pandas tables); ``save_run``
writes them into the run folder with ``qmlnb.lab.runs``' atomic writes:
``params.json``, the tables as CSV, then ``metrics.json`` (with
``provenance.environment()``).  The sweep writes the final ``status.json``.

A run that cannot apply on this machine (dataset files absent, Gram backend not
usable here) raises :class:`RunSkipped`; the sweep records it as skipped with the
reason instead of as a failure.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import provenance, runs
from .. import _util
from .._util import project_root  # notebooks find runs/ and reports/ with tasks.project_root()

RUN_DIR_ENV = "QMLNB_RUN_DIR"  # set by `qmlnb sweep` to the run's folder
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


class RunSkipped(RuntimeError):
    """This run does not apply here (e.g. its dataset is not in the data directory)."""


# ---------------------------------------------------------------------- runs
def run_dir(stage: str = "interactive") -> Path:
    """Folder this run writes to: ``$QMLNB_RUN_DIR`` under a sweep, else ``<project>/runs/interactive/<stage>/``.

    ``<project>`` is :func:`qmlnb._util.project_root`, whatever the working directory
    (a notebook opened in JupyterLab runs in ``notebooks/``, and writes nothing there).
    ``runs/`` is git-ignored, and the summary only reads folders with a
    ``status.json`` (written by the sweep), so interactive runs never reach it.
    """
    folder = Path(os.environ.get(RUN_DIR_ENV) or project_root() / "runs" / "interactive" / stage)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def set_threads(threads: int) -> int:
    """Use ``threads`` threads in torch, BLAS (threadpoolctl) and numba; 0 means all cores.

    The sweep already exports OMP/MKL/OpenBLAS/NUMBA_NUM_THREADS before the kernel
    starts (the only moment some libraries read them); this sets the libraries
    that can change at run time, so an interactive notebook obeys ``threads`` too.
    Returns the thread count in effect.
    """
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be a non-negative integer (0 = all cores), got {threads!r}")
    threads = int(threads) or _util.available_cores()
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, str(threads))
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return threads


def save_run(folder: str | os.PathLike, params: dict, metrics: dict, tables: dict | None = None) -> Path:
    """Write ``params.json``, each table as ``<name>.csv`` and, last, ``metrics.json`` (all atomic).

    ``metrics`` gets an ``environment`` entry (machine, versions, git commit, time)
    from :func:`qmlnb.lab.provenance.environment`.
    """
    folder = Path(folder)
    _util.atomic_write_json(folder / runs.PARAMS_FILE, params)
    for name, table in (tables or {}).items():
        runs.write_table(folder / f"{name}.csv", pd.DataFrame(table))
    _util.atomic_write_json(folder / runs.METRICS_FILE, {**metrics, "environment": provenance.environment()})
    return folder


# ---------------------------------------------------------------------- data
def load_data(dataset: str, classes=(3, 8), n_train: int | None = None, seed: int = 0, grayscale: bool = False):
    """``qmlnb.data.load_splits`` with absent files turned into :class:`RunSkipped` (data dir: ``$QMLNB_DATA_DIR``)."""
    from ..data import DataNotFoundError, load_splits

    try:
        return load_splits(dataset, classes=None if classes is None else tuple(classes), n_train=n_train or None, seed=seed, grayscale=grayscale)
    except DataNotFoundError as err:
        raise RunSkipped(f"dataset {dataset!r} is not in the data directory: {err}") from err


def pca_angles(X_fit: np.ndarray, *others: np.ndarray, n_components: int) -> list[np.ndarray]:
    """Flattened images -> ``n_components`` PCA features scaled to [0, pi] on ``X_fit``'s range.

    A quick, training-free embedding (one angle per qubit) for the kernel
    experiments that do not need the trained QCNN.  Returns float64 arrays of
    shape (N, n_components), first for ``X_fit``, then for each of ``others``.
    """
    from sklearn.decomposition import PCA

    flat = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in (X_fit, *others)]
    if n_components > min(flat[0].shape):
        raise ValueError(f"n_qubits={n_components} needs at least that many samples and pixels; "
                         f"the data has {flat[0].shape[0]} samples of {flat[0].shape[1]} pixels")
    pca = PCA(n_components=n_components, random_state=0).fit(flat[0])
    Z = [pca.transform(x) for x in flat]
    lo, hi = Z[0].min(axis=0), Z[0].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return [np.clip((z - lo) / span, 0.0, 1.0) * np.pi for z in Z]


def check_backend(backend: str) -> None:
    """Raise :class:`RunSkipped` when a known Gram backend cannot run here (unknown names stay errors)."""
    from ..kernels import available_backends

    status = available_backends()
    if backend not in status:
        raise ValueError(f"unknown Gram backend {backend!r}; known backends: {', '.join(status)}")
    usable, reason = status[backend]
    if not usable:
        raise RunSkipped(f"Gram backend {backend!r} cannot run here: {reason}")


# ---------------------------------------------------------------- gram scaling
def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """(best seconds, median seconds, last result) of ``repeats`` calls."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return float(np.min(seconds)), float(np.median(seconds)), result


def gram_scaling(backend: str = "cpu", sizes=(100, 200, 400), qubits=(8,), threads: int = 0, reps: int = 2,
                 tile: int = 0, repeats: int = 3, dataset: str = "digits", seed: int = 0, progress: bool = True):
    """Time the symmetric Gram matrix of N states for each N in ``sizes`` and n in ``qubits``.

    Embeddings are n PCA angles of the dataset's images (all splits joined, so
    N can reach the dataset size); states come from the ZZ feature map.  For
    each n the smallest N is also computed with the ``cpu`` backend to check
    the result (max |K - K_cpu| over all n).

    Returns (metrics dict, table DataFrame with one row per (n, N): n_qubits,
    n_samples, dim, states_s, gram_s (best of ``repeats``), gram_median_s and
    gflops: 4 N^2 d real flops (the symmetric half of the complex product
    A A^H, d = 2**n) over the best seconds).
    """
    from tqdm.auto import tqdm

    from ..kernels import FeatureMap, gram

    check_backend(backend)
    sizes = sorted(int(n) for n in sizes)
    qubits = sorted(int(n) for n in qubits)
    if not sizes or sizes[0] < 2:
        raise ValueError(f"sizes must be a non-empty list of integers >= 2, got {sizes!r}")
    if not qubits or qubits[0] < 1:
        raise ValueError(f"qubits must be a non-empty list of positive integers, got {qubits!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = set_threads(threads)
    splits = load_data(dataset, classes=None, seed=seed)
    images = np.concatenate([splits.X_train, splits.X_val, splits.X_test])
    if sizes[-1] > len(images):
        raise ValueError(f"sizes go up to {sizes[-1]} but {dataset} holds {len(images)} images")
    kwargs = {"backend": backend, "n_threads": threads, "tile": tile or None}
    rows, check = [], 0.0
    for n_qubits, n in tqdm([(q, n) for q in qubits for n in sizes], desc=f"gram {backend}", disable=not progress):
        fm = FeatureMap(n_qubits=n_qubits, reps=reps)
        X = pca_angles(images[:n], n_components=n_qubits)[0]
        states_s, _, S = _timed(lambda: fm.states(X), 1)
        gram(S[: min(n, 8)], **kwargs)  # warm-up: JIT compilation and GPU context are not the kernel's time
        best, median, K = _timed(lambda: gram(S, **kwargs), repeats)
        if n == sizes[0]:
            check = max(check, float(np.abs(K - gram(S, backend="cpu")).max()))
        rows.append({"n_qubits": n_qubits, "n_samples": n, "dim": fm.dim, "states_s": states_s, "gram_s": best,
                     "gram_median_s": median, "gflops": 4.0 * n * n * fm.dim / best / 1e9})
    table = pd.DataFrame(rows)
    metrics = {"stage": "gram-scaling", "backend": backend, "threads": threads, "qubits": qubits,
               "dataset": dataset, "max_abs_diff_vs_cpu": check, "largest_n": sizes[-1],
               "timings": {"gram_s_largest": rows[-1]["gram_s"], "states_s_largest": rows[-1]["states_s"]}}
    return metrics, table


# ----------------------------------------------------------------- exploration
def explore(dataset: str = "digits", classes=(3, 8), n_samples: int = 120, n_qubits: int = 4, kind: str = "zz",
            entanglement: str = "linear", bandwidth: float = 0.2, reps: int = 2, backend: str = "cpu", seed: int = 0):
    """Everything the exploration notebook shows for one choice of settings.

    Returns a dict: ``images`` (k, H, W) float32 samples, ``labels`` their class
    names, ``X`` (n_samples, n_qubits) PCA angles, ``y`` int64 labels,
    ``K`` (n_samples, n_samples) float64 Gram sorted by label, ``gram_s``
    seconds, ``circuit`` the text drawing of the feature map on the first sample.
    """
    import pennylane as qml

    from ..kernels import FeatureMap, gram

    check_backend(backend)
    splits = load_data(dataset, classes=classes, seed=seed, grayscale=True)
    n = min(n_samples, len(splits.y_train))
    order = np.argsort(splits.y_train[:n], kind="stable")
    images = splits.X_train[:n][order]
    y = splits.y_train[:n][order]
    X = pca_angles(images, n_components=n_qubits)[0]
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=bandwidth, kind=kind)
    S = fm.states(X)
    start = time.perf_counter()
    K = gram(S, backend=backend)
    gram_s = time.perf_counter() - start
    # up to four samples of each class, for the image strip
    picks = [int(i) for c in np.unique(y) for i in np.flatnonzero(y == c)[:4]]
    return {"images": images[picks, 0], "labels": [splits.class_names[y[i]] for i in picks], "X": X, "y": y, "K": K,
            "gram_s": gram_s, "circuit": qml.draw(fm.qnode())(X[0]), "class_names": splits.class_names}


def plot_exploration(result: dict):
    """Sample images and the kernel heatmap of an :func:`explore` result: a matplotlib Figure, shown with ``display``.

    The figure is built without pyplot, so nothing shows it before it is complete: with ipykernel 7 a
    widget's message, handled on another thread, flushes pyplot's open figures (matplotlib-inline's
    post-execute hook), and the explorer's Run button then showed a half-drawn figure.
    """
    from matplotlib.figure import Figure
    import seaborn as sns

    k = len(result["images"])
    fig = Figure(figsize=(max(1.6 * k, 7), 8))
    axes = fig.subplot_mosaic([[f"i{i}" for i in range(k)], ["K"] * k], height_ratios=[1, 4])
    for i, (image, label) in enumerate(zip(result["images"], result["labels"])):
        axes[f"i{i}"].imshow(image, cmap="gray")
        axes[f"i{i}"].set_title(label, fontsize=9)
        axes[f"i{i}"].axis("off")
    ax = axes["K"]
    sns.heatmap(result["K"], ax=ax, cmap="viridis", vmin=0, vmax=1, square=True, xticklabels=False, yticklabels=False)
    ax.set_title(f"fidelity kernel, samples sorted by class ({result['gram_s'] * 1e3:.1f} ms)")
    return fig


# ------------------------------------------------------------------ QCNN training
def train_config(*, threads: int, mode: str = "sequential", workers: int = 2, folds: int = 1, **fields):
    """A ``TrainConfig`` whose processes x threads stay within ``threads`` (the run's share of the cores).

    ``threads`` is the run's total (0: all cores); each of the mode's processes
    gets ``threads // processes`` torch threads.
    """
    from ..qcnn.train import TrainConfig

    total = set_threads(threads)
    probe = TrainConfig(mode=mode, workers=workers, folds=folds, **fields)
    processes = probe.processes()
    if processes > total:
        raise ValueError(f"mode={mode!r} runs {processes} processes but the run has threads={total}; "
                         f"give it threads >= {processes}")
    return TrainConfig(mode=mode, workers=workers, folds=folds, threads=total // processes, **fields)


def _history_table(result) -> pd.DataFrame:
    return pd.DataFrame(result.history)


def _fold_table(result) -> pd.DataFrame:
    rows = []
    for fold in result.fold_metrics:
        row = {"fold": fold["fold"], "best_epoch": fold["best_epoch"]}
        row |= {f"val_{k}": v for k, v in (fold.get("val") or {}).items()}
        row |= {f"test_{k}": v for k, v in (fold.get("test") or {}).items()}
        rows.append(row)
    return pd.DataFrame(rows)


def qcnn_run(dataset: str = "digits", classes=(3, 8), n_train: int = 0, mode: str = "sequential", threads: int = 0,
             workers: int = 2, folds: int = 1, batch_size: int = 32, epochs: int = 3, lr: float = 0.01,
             n_qubits: int = 4, patience: int = 0, grayscale: bool = False, seed: int = 0, progress: bool = True):
    """Train the hybrid QCNN once and score it on the test split.

    ``n_train`` 0 and ``patience`` 0 mean "all" and "no early stopping".
    Returns (metrics dict with ``qcnn`` test scores and ``timings.train_s``,
    {"history": per-epoch table, "folds": per-fold table}).
    """
    from ..qcnn.train import train_qcnn

    cfg = train_config(threads=threads, mode=mode, workers=workers, folds=folds, n_qubits=n_qubits, epochs=epochs,
                       batch_size=batch_size, lr=lr, patience=patience or None, seed=seed, progress=progress)
    start = time.perf_counter()
    splits = load_data(dataset, classes=classes, n_train=n_train, seed=seed, grayscale=grayscale)
    load_s = time.perf_counter() - start
    result = train_qcnn(splits, cfg)
    metrics = {"stage": "qcnn", "dataset": dataset, "classes": list(splits.classes), "mode": mode,
               "threads": cfg.threads * cfg.processes(), "threads_per_process": cfg.threads,
               "processes": cfg.processes(), "workers": workers, "folds": folds, "n_train": int(len(splits.y_train)),
               "n_test": int(len(splits.y_test)), "batch_size": batch_size, "epochs": epochs, "n_qubits": n_qubits,
               "best_fold": result.best_fold, "qcnn": result.metrics,
               "timings": {"train_s": result.timings["total"], "load_s": load_s,
                           "samples_per_s": result.timings.get("train_samples_per_s")}}
    return metrics, {"history": _history_table(result), "folds": _fold_table(result)}


# ------------------------------------------------------------------ quantum-kernel SVM
def kernel_sample(model, splits, params: dict, backend: str, n: int = 80) -> pd.DataFrame:
    """The fidelity Gram of the first ``n`` training samples, sorted by class, as a (n, n) table.

    Uses the trained model's embeddings and the SVM's chosen feature map
    (``params``: n_qubits, reps, entanglement, kind, bandwidth) -- the kernel the SVM saw.
    """
    from ..kernels import FeatureMap, gram
    from ..qsvm.pipeline import embed

    y = splits.y_train[:n]
    order = np.argsort(y, kind="stable")
    E = embed(model, splits.X_train[:n][order])
    fm = FeatureMap(n_qubits=params["n_qubits"], reps=params["reps"], entanglement=params["entanglement"],
                    kind=params["kind"], bandwidth=float(params["bandwidth"]))
    K = gram(fm.states(E), backend=backend)
    return pd.DataFrame(K, columns=[f"{splits.class_names[c]}:{i}" for i, c in enumerate(y[order])])


def qsvm_run(dataset: str = "digits", classes=(3, 8), n_train: int = 0, backend: str = "cpu", tile: int = 0,
             threads: int = 0, n_qubits: int = 4, bandwidth: float = 0.0, C: float = 0.0, epochs: int = 3,
             batch_size: int = 32, lr: float = 0.01, baselines: bool = True, grayscale: bool = False, seed: int = 0,
             progress: bool = True):
    """Train the QCNN, then the quantum-kernel SVM on its embeddings with ``backend``, beside the baselines.

    ``bandwidth`` / ``C`` 0 mean "auto" (kernel-target alignment / CV search).
    Returns (metrics with ``qcnn``, ``qsvm`` and ``baselines.<name>`` scores
    and ``timings`` (train_s, gram_s, ...), {"kernel_sample": Gram table, "timings": one row}).
    """
    from ..qsvm.baselines import BASELINES
    from ..qsvm.pipeline import run_qsvm_experiment
    from ..qcnn.train import train_qcnn

    check_backend(backend)  # before training: a backend that cannot run here skips the run
    cfg = train_config(threads=threads, n_qubits=n_qubits, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       progress=progress)
    splits = load_data(dataset, classes=classes, n_train=n_train, seed=seed, grayscale=grayscale)
    trained = train_qcnn(splits, cfg)
    svm_params = {"backend": backend, "tile": tile or None, "n_threads": cfg.threads, "seed": seed,
                  "bandwidth": bandwidth or "auto", "C": C or "auto"}
    result = run_qsvm_experiment(splits, svm_params=svm_params, trained=trained,
                                 baselines=tuple(BASELINES) if baselines else ())
    timings = {**result["timings"], "qcnn_train": trained.timings["total"]}
    metrics = {"stage": "qsvm", "dataset": dataset, "classes": list(splits.classes), "mode": "sequential",
               "backend": result["gram_backend"], "threads": cfg.threads, "n_train": int(len(splits.y_train)),
               "n_test": int(len(splits.y_test)), "n_qubits": n_qubits, "epochs": epochs, "batch_size": batch_size,
               "qcnn": result["qcnn"]["metrics"], "qsvm": result["qsvm"]["metrics"],
               "qsvm_params": result["qsvm"]["params"],
               "baselines": {name: {**r["metrics"], "fit_s": r["timings"]["fit"]}
                             for name, r in result["baselines"].items()},
               "timings": {"train_s": trained.timings["total"], "gram_s": timings["gram"],
                           "states_s": timings["states"], "svm_fit_s": timings["svm_fit"],
                           "svm_select_s": timings["svm_select"], "total_s": timings["total"] + timings["qcnn_train"]}}
    tables = {"kernel_sample": kernel_sample(trained.model, splits, result["qsvm"]["params"], backend),
              "timings": pd.DataFrame([timings])}
    return metrics, tables
