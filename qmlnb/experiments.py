"""What each notebook runs, as functions, so the notebooks stay a parameters cell and a few calls.

Every experiment returns plain data (dicts of metrics, pandas tables); ``save_run``
writes them into the run folder with ``qmlnb.runs``' atomic writes:
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

RUN_DIR_ENV = "QMLNB_RUN_DIR"  # set by `qmlnb sweep` to the run's folder
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


class RunSkipped(RuntimeError):
    """This run does not apply here (e.g. its dataset is not in the data directory)."""


# ---------------------------------------------------------------------- runs
def run_dir(stage: str = "interactive") -> Path:
    """Folder this run writes to: ``$QMLNB_RUN_DIR`` under a sweep, else ``runs/interactive/<stage>/``.

    The interactive folder lies under the notebook's working directory; ``runs/``
    is git-ignored at any depth, and the summary only reads folders with a
    ``status.json`` (written by the sweep), so interactive runs never reach it.
    """
    folder = Path(os.environ.get(RUN_DIR_ENV) or Path.cwd() / "runs" / "interactive" / stage)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Use ``threads`` threads in torch, BLAS (threadpoolctl) and numba; 0 means all cores.

    The sweep already exports OMP/MKL/OpenBLAS/NUMBA_NUM_THREADS before the kernel
    starts (the only moment some libraries read them); this sets the libraries
    that can change at run time, so an interactive notebook obeys ``threads`` too.
    Returns the thread count in effect.
    """
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be a non-negative integer (0 = all cores), got {threads!r}")
    threads = int(threads) or cores()
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
    from :func:`qmlnb.provenance.environment`.
    """
    folder = Path(folder)
    runs.atomic_write_json(folder / runs.PARAMS_FILE, params)
    for name, table in (tables or {}).items():
        runs.write_table(folder / f"{name}.csv", pd.DataFrame(table))
    runs.atomic_write_json(folder / runs.METRICS_FILE, {**metrics, "environment": provenance.environment()})
    return folder


# ---------------------------------------------------------------------- data
def load_data(dataset: str, classes=(3, 8), n_train: int | None = None, seed: int = 0, grayscale: bool = False):
    """``qmlnb.data.load_splits`` with absent files turned into :class:`RunSkipped` (data dir: ``$QMLNB_DATA_DIR``)."""
    from .data import DataNotFoundError, load_splits

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
    from .kernels import available_backends

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


def gram_scaling(backend: str = "cpu", sizes=(100, 200, 400), n_qubits: int = 8, threads: int = 0, reps: int = 2,
                 tile: int = 0, repeats: int = 3, dataset: str = "digits", seed: int = 0, progress: bool = True):
    """Time the symmetric Gram matrix of N states for each N in ``sizes``.

    Embeddings are ``n_qubits`` PCA angles of the dataset's images (all splits
    joined, so N can reach the dataset size); states come from the ZZ feature
    map.  The first, smallest size is also computed with the ``cpu`` backend to
    check the result (max |K - K_cpu|).

    Returns (metrics dict, table DataFrame with one row per N: n_samples,
    n_qubits, dim, states_s, gram_s (best of ``repeats``), gram_median_s,
    gflops: 4 N^2 d real flops (the symmetric half of the complex product
    A A^H, d = 2**n) over the best seconds).
    """
    from tqdm.auto import tqdm

    from .kernels import FeatureMap, gram

    check_backend(backend)
    sizes = sorted(int(n) for n in sizes)
    if not sizes or sizes[0] < 2:
        raise ValueError(f"sizes must be a non-empty list of integers >= 2, got {sizes!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = set_threads(threads)
    splits = load_data(dataset, classes=None, seed=seed)
    images = np.concatenate([splits.X_train, splits.X_val, splits.X_test])
    if sizes[-1] > len(images):
        raise ValueError(f"sizes go up to {sizes[-1]} but {dataset} holds {len(images)} images")
    X = pca_angles(images, n_components=n_qubits)[0]
    fm = FeatureMap(n_qubits=n_qubits, reps=reps)
    kwargs = {"backend": backend, "n_threads": threads, "tile": tile or None}
    rows, check = [], None
    for n in tqdm(sizes, desc=f"gram {backend}", disable=not progress):
        states_s, _, S = _timed(lambda: fm.states(X[:n]), 1)
        gram(S[: min(n, 8)], **kwargs)  # warm-up: JIT compilation and GPU context are not the kernel's time
        best, median, K = _timed(lambda: gram(S, **kwargs), repeats)
        if check is None:
            check = float(np.abs(K - gram(S, backend="cpu")).max())
        rows.append({"n_samples": n, "n_qubits": n_qubits, "dim": fm.dim, "states_s": states_s, "gram_s": best,
                     "gram_median_s": median, "gflops": 4.0 * n * n * fm.dim / best / 1e9})
    table = pd.DataFrame(rows)
    metrics = {"stage": "gram-scaling", "backend": backend, "threads": threads, "n_qubits": n_qubits,
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

    from .kernels import FeatureMap, gram

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
    """Sample images and the kernel heatmap of an :func:`explore` result (a matplotlib Figure)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    k = len(result["images"])
    fig, axes = plt.subplot_mosaic([[f"i{i}" for i in range(k)], ["K"] * k], figsize=(max(1.6 * k, 7), 8),
                                   height_ratios=[1, 4])
    for i, (image, label) in enumerate(zip(result["images"], result["labels"])):
        axes[f"i{i}"].imshow(image, cmap="gray")
        axes[f"i{i}"].set_title(label, fontsize=9)
        axes[f"i{i}"].axis("off")
    ax = axes["K"]
    sns.heatmap(result["K"], ax=ax, cmap="viridis", vmin=0, vmax=1, square=True, xticklabels=False, yticklabels=False)
    ax.set_title(f"fidelity kernel, samples sorted by class ({result['gram_s'] * 1e3:.1f} ms)")
    return fig
