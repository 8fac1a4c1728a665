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

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import provenance, runs, stages
from .. import _util, timing
from .._util import project_root  # noqa: F401 -- notebooks find runs/ and reports/ with tasks.project_root()

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


class RunSkipped(RuntimeError):
    """This run does not apply here (e.g. its dataset is not in the data directory)."""


# ---------------------------------------------------------------------- runs
def run_dir(task: str = "notebook") -> Path:
    """Folder this run writes to: ``$QMLNB_RUN_DIR`` under a sweep, else ``<project>/runs/interactive/<task>/``.

    ``task`` names the folder of a run made by hand (e.g. :data:`.stages.QCNN`).

    ``<project>`` is :func:`qmlnb._util.project_root`, whatever the working directory
    (a notebook opened in JupyterLab runs in ``notebooks/``, and writes nothing there).
    ``runs/`` is git-ignored, and the summary only reads folders with a
    ``status.json`` (written by the sweep), so interactive runs never reach it.
    """
    folder = Path(os.environ.get(runs.RUN_DIR_ENV) or project_root() / "runs" / stages.INTERACTIVE / task)
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
    from :func:`qmlnb.lab.provenance.environment` and a ``stage``: the grid's
    (``$QMLNB_STAGE``, set by the sweep) when there is one, else the ``stage``
    ``metrics`` names, else ``interactive`` (:func:`qmlnb.lab.stages.current_stage`), and a
    ``dataset_fallback`` ``{"asked", "used", "reason"}`` when the sweep ran this point on a fallback
    dataset (``$QMLNB_DATASET_FALLBACK``: the grid's first choice was not in the data directory).
    """
    folder = Path(folder)
    _util.atomic_write_json(folder / runs.PARAMS_FILE, params)
    for name, table in (tables or {}).items():
        runs.write_table(folder / f"{name}.csv", pd.DataFrame(table))
    metrics = {**metrics, "stage": stages.current_stage(metrics.get("stage"))}
    fallback = os.environ.get(runs.DATASET_FALLBACK_ENV)
    if fallback:
        metrics["dataset_fallback"] = json.loads(fallback)
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
    from ..kernels import check_backend

    usable, reason = check_backend(backend)  # an unknown name: UnknownBackendError, a ValueError
    if not usable:
        raise RunSkipped(f"Gram backend {backend!r} cannot run here: {reason}")


# ---------------------------------------------------------------- gram scaling
def _timing_columns(prefix: str, t) -> dict:
    """A Timing as flat table columns: median, IQR, min, n, compile_s (``<prefix>_s`` is the median)."""
    return {f"{prefix}_s": t.median, f"{prefix}_iqr_s": t.iqr, f"{prefix}_min_s": t.min, f"{prefix}_n": t.n,
            f"{prefix}_compile_s": t.compile_s}


def _ratio_columns(name: str, r: dict) -> dict:
    """A ``qmlnb.timing.ratio`` as flat columns: the ratio of medians and the quartiles of the per-round ratios."""
    return {name: r["ratio"], f"{name}_q1": r["q1"], f"{name}_q3": r["q3"]}


def states_vs_pennylane_metrics(result: dict) -> dict:
    """``qmlnb.kernels.pennylane_reference.states_vs_pennylane``'s result as a run's metrics entry.

    ``n_states``, ``n_qubits``; ``qmlnb_s``/``pennylane_s`` (median seconds of
    one call on all the states) and the same per state (``*_per_state_s``);
    ``ratio`` (PennyLane's median over ours) with ``ratio_q1``/``ratio_q3``, the
    quartiles of the per-round ratios; ``max_abs_difference`` of the
    amplitudes; ``load`` and ``noisy`` of the interleaved rounds; ``timing``.
    """
    n, r, ours = result["n"], result["speedup_rounds"], result["timing"]["qmlnb"]
    return {"n_states": n, "n_qubits": result["n_qubits"], "qmlnb_s": result["qmlnb_s"],
            "pennylane_s": result["pennylane_broadcast_s"], "qmlnb_per_state_s": result["qmlnb_s"] / n,
            "pennylane_per_state_s": result["pennylane_broadcast_s"] / n, "ratio": result["speedup"],
            "ratio_q1": r["q1"], "ratio_q3": r["q3"], "rounds": r["n"],
            "max_abs_difference": result["max_abs_difference"],
            "load": max(ours["load_before"], ours["load_after"]), "noisy": bool(r["noisy"]),
            "timing": result["timing"]}


def gram_scaling(backend: str = "cpu", sizes=(100, 200, 400), qubits=(8,), threads: int = 0, reps: int = 2,
                 tile: int = 0, repeats: int = 5, min_time: float = 0.2, dataset: str = "digits", seed: int = 0,
                 progress: bool = True, pennylane_states: int = 0):
    """Time the symmetric Gram matrix of N states for each N in ``sizes`` and n in ``qubits``, with its references.

    Embeddings are n PCA angles of the dataset's images (all splits joined, so
    N can reach the dataset size); states come from the ZZ feature map.  Every
    point is timed with :func:`qmlnb.timing.interleaved` (a warm-up call each,
    kept as ``compile_s``, then rounds until ``repeats`` rounds and
    ``min_time`` seconds), the backend side by side with, on the same states:

    - BLAS ``cherk`` (S S^H on the same threads: the matrix-product limit);
    - the ``cpu`` backend (unless ``backend`` is ``cpu``), the reference of ``speedup_vs_cpu``;
    - the backend on 1 thread (when ``threads`` > 1), the reference of ``speedup_vs_1_thread``.

    Ratios come from these interleaved rounds (same run, same data, same load),
    never from other runs.  Returns (metrics dict, table DataFrame with one row
    per (n, N): n_qubits, n_samples, dim; states_s and gram_s (medians) with
    their ``_iqr_s``, ``_min_s``, ``_n`` and ``_compile_s``; gflops (8 N^2 2^n
    real flops, the full matrix's, over the median: comparable with cherk's);
    cherk_s, cherk_gflops, vs_cherk (cherk's time over the backend's: the
    fraction of BLAS throughput reached) with the quartiles of its per-round
    values, speedup_vs_cpu and speedup_vs_1_thread likewise (cpu_s,
    one_thread_s), max_abs_diff_vs_cpu, load and noisy).

    ``pennylane_states`` > 0 also times ``FeatureMap.states`` against PennyLane
    ``default.qubit`` (broadcast QNode of the same map) on the first
    ``pennylane_states`` angles of the largest point (largest n, largest N),
    interleaved in the same run
    (:func:`qmlnb.kernels.pennylane_reference.states_vs_pennylane`): the
    metrics' ``states_vs_pennylane`` (:func:`states_vs_pennylane_metrics`).
    PennyLane is slow per state: a few dozen states give a stable ratio.
    """
    from tqdm.auto import tqdm

    from ..kernels import FeatureMap, gram
    from ..kernels.blas_reference import cherk_call, gram_gflops

    check_backend(backend)
    sizes = sorted(int(n) for n in sizes)
    qubits = sorted(_util.check_positive_int(n, "each of qubits") for n in qubits)
    if not sizes or sizes[0] < 2:
        raise ValueError(f"sizes must be a non-empty list of integers >= 2, got {sizes!r}")
    if not qubits:
        raise ValueError("qubits must be a non-empty list of positive integers, got []")
    _util.check_positive_int(repeats, "repeats")
    pennylane_states = _util.check_int(pennylane_states, "pennylane_states", minimum=0)
    if pennylane_states > sizes[-1]:
        raise ValueError(f"pennylane_states={pennylane_states} exceeds the largest size {sizes[-1]}: it compares "
                         "states of the largest point")
    threads = set_threads(threads)
    splits = load_data(dataset, classes=None, seed=seed)
    images = np.concatenate([splits.X_train, splits.X_val, splits.X_test])
    if sizes[-1] > len(images):
        raise ValueError(f"sizes go up to {sizes[-1]} but {dataset} holds {len(images)} images")
    kwargs = {"backend": backend, "n_threads": threads, "tile": tile or None}
    rows, largest = [], {}
    for n_qubits, n in tqdm([(q, n) for q in qubits for n in sizes], desc=f"gram {backend}", disable=not progress):
        fm = FeatureMap(n_qubits=n_qubits, reps=reps)
        X = pca_angles(images[:n], n_components=n_qubits)[0]
        states = timing.measure(lambda: fm.states(X), min_repeats=repeats, min_time=min_time)
        S = states.value
        calls = {"backend": lambda: gram(S, **kwargs), "cherk": cherk_call(S, threads)}
        if backend != "cpu":
            calls["cpu"] = lambda: gram(S, backend="cpu", n_threads=threads, tile=tile or None)
        if threads > 1:
            calls["one_thread"] = lambda: gram(S, **{**kwargs, "n_threads": 1})
        timed = timing.interleaved(calls, min_rounds=repeats, min_time=min_time)
        t = timed["backend"]
        K = t.value
        reference = timed["cpu"].value if "cpu" in timed else K  # the cpu backend is the reference itself
        row = {"n_qubits": n_qubits, "n_samples": n, "dim": fm.dim, **_timing_columns("states", states),
               **_timing_columns("gram", t), "gflops": gram_gflops(n, n, fm.dim, t.median),
               "cherk_s": timed["cherk"].median, "cherk_iqr_s": timed["cherk"].iqr,
               "cherk_gflops": gram_gflops(n, n, fm.dim, timed["cherk"].median),
               **_ratio_columns("vs_cherk", timing.ratio(timed["cherk"], t))}
        if "cpu" in timed:
            row |= {"cpu_s": timed["cpu"].median, **_ratio_columns("speedup_vs_cpu", timing.ratio(timed["cpu"], t))}
        if "one_thread" in timed:
            row |= {"one_thread_s": timed["one_thread"].median,
                    **_ratio_columns("speedup_vs_1_thread", timing.ratio(timed["one_thread"], t))}
        row |= {"max_abs_diff_vs_cpu": float(np.abs(K - reference).max()), "load": t.load,
                "noisy": any(x.noisy for x in (states, *timed.values()))}
        rows.append(row)
        largest = {"n_qubits": n_qubits, "n_samples": n, "gram": t.as_dict(), "states": states.as_dict(),
                   **{name: x.as_dict() for name, x in timed.items() if name != "backend"}}
        del K, reference, timed, calls
    table = pd.DataFrame(rows)
    last = rows[-1]
    metrics = {"task": stages.GRAM, "backend": backend, "threads": threads, "qubits": qubits,
               "dataset": dataset, "max_abs_diff_vs_cpu": float(table["max_abs_diff_vs_cpu"].max()),
               "largest_n": sizes[-1], "noisy": bool(table["noisy"].any()), "load_max": float(table["load"].max()),
               "timings": {"gram_s_largest": last["gram_s"], "gram_iqr_s_largest": last["gram_iqr_s"],
                           "states_s_largest": last["states_s"], "gflops_largest": last["gflops"],
                           "vs_cherk_largest": last["vs_cherk"],
                           "speedup_vs_cpu_largest": last.get("speedup_vs_cpu"),
                           "speedup_vs_1_thread_largest": last.get("speedup_vs_1_thread")},
               "timing_largest": largest}
    if pennylane_states:
        from ..kernels.pennylane_reference import states_vs_pennylane

        # fm and X are the largest point's (the loop's last): the same angles as its Gram's states
        result = states_vs_pennylane(fm, X[:pennylane_states], rounds=repeats, min_time=min_time)
        metrics["states_vs_pennylane"] = states_vs_pennylane_metrics(result)
    return metrics, table


# ----------------------------------------------------------------- exploration
def explore(dataset: str = "digits", classes=(3, 8), n_samples: int = 120, n_qubits: int = 4, kind: str = "zz",
            entanglement: str = "linear", bandwidth: float = 0.2, reps: int = 2, backend: str = "cpu", seed: int = 0):
    """Everything the exploration notebook shows for one choice of settings.

    Returns a dict: ``images`` (k, H, W) float32 samples, ``labels`` their class
    names, ``X`` (n_samples, n_qubits) PCA angles, ``y`` int64 labels,
    ``K`` (n_samples, n_samples) float64 Gram sorted by label, ``gram_s``
    median seconds (``timing``: the :class:`qmlnb.timing.Timing` as a dict),
    ``circuit`` the text drawing of the feature map on the first sample.
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
    timed = timing.measure(lambda: gram(S, backend=backend))
    K, gram_s = timed.value, timed.median
    # up to four samples of each class, for the image strip
    picks = [int(i) for c in np.unique(y) for i in np.flatnonzero(y == c)[:4]]
    return {"images": images[picks, 0], "labels": [splits.class_names[y[i]] for i in picks], "X": X, "y": y, "K": K,
            "gram_s": gram_s, "timing": timed.as_dict(), "circuit": qml.draw(fm.qnode())(X[0]), "class_names": splits.class_names}


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
    # the class boundary (samples are sorted by class): bright blocks on the diagonal, dark off it, separate them
    for edge in class_edges(result["y"]):
        ax.axhline(edge, color="white", linewidth=1.2)
        ax.axvline(edge, color="white", linewidth=1.2)
    ax.set_title(f"fidelity kernel, samples sorted by class ({result['gram_s'] * 1e3:.1f} ms); kernel-target "
                 f"alignment {kernel_alignment(result):.3f}")
    return fig


def class_edges(y) -> list[int]:
    """Where a label sorted (n,) array changes class: the heatmap's boundary lines (row indices)."""
    y = np.asarray(y)
    return [int(i) for i in np.flatnonzero(y[1:] != y[:-1]) + 1]


def kernel_alignment(result: dict) -> float:
    """The kernel-target alignment of an :func:`explore` result's Gram and labels (1: the kernel is the ideal
    +-1 label kernel; about 0: it ignores the classes): the quantity the QSVM's bandwidth search maximises."""
    from ..qsvm.svm import kernel_target_alignment

    return float(kernel_target_alignment(result["K"], result["y"]))


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


COMPARISONS = ("", "sequential", "1-thread")  # qcnn_run's ``compare``: what the run is measured against
# qcnn_run's ``compare_simulator``: the fast torch simulator's training step against PennyLane's TorchLayer
SIMULATOR_COMPARISONS = ("", "torchlayer")
# training steps per timed block (one for PennyLane, whose step is many times slower) and the least rounds (then
# rounds until the blocks add up to 0.2 s): a small cost beside the training, PennyLane's import included
SIMULATOR_STEPS = {"torch": 10, "pennylane": 1}
SIMULATOR_ROUNDS = 5


def simulator_comparison(splits, cfg, threads: int) -> dict:
    """The run's training step with the torch simulator against PennyLane's ``TorchLayer``, as a metrics entry.

    Same model (``cfg``'s n_qubits, head, seed, optimiser) and the same data:
    the first ``cfg.batch_size`` images of the run's training split; timed in
    this process on ``threads`` threads by
    :func:`qmlnb.qcnn.simulator_speed.compare_simulators` (interleaved blocks of
    :data:`SIMULATOR_STEPS` steps, :data:`SIMULATOR_ROUNDS` rounds).  Returns
    ``against``, ``batch_size``, ``n_qubits``, ``threads``, ``steps_per_call``,
    ``torch_samples_per_s``, ``torchlayer_samples_per_s``, ``ratio`` (torch's
    samples/s over TorchLayer's) with ``ratio_q1``/``ratio_q3`` (quartiles of
    the per-round ratios), ``load``, ``noisy`` and ``timing``.
    """
    import torch

    from ..qcnn.simulator_speed import compare_simulators

    set_threads(threads)
    images = torch.as_tensor(np.asarray(splits.X_train[: cfg.batch_size], dtype=np.float32))
    labels = torch.as_tensor(np.asarray(splits.y_train[: cfg.batch_size], dtype=np.int64))
    result = compare_simulators(images, labels, cfg, n_classes=len(splits.classes), steps=SIMULATOR_STEPS["torch"],
                                pennylane_steps=SIMULATOR_STEPS["pennylane"], rounds=SIMULATOR_ROUNDS)
    ours, theirs, r = result["torch"], result["pennylane"], result["speedup_train_rounds"]
    timed = ours["timing"]["train"]
    return {"against": "torchlayer", "batch_size": len(labels), "n_qubits": cfg.n_qubits, "threads": threads,
            "steps_per_call": {"torch": ours["steps_per_call"], "torchlayer": theirs["steps_per_call"]},
            "torch_samples_per_s": ours["train_samples_per_s"],
            "torchlayer_samples_per_s": theirs["train_samples_per_s"], "ratio": result["speedup_train"],
            "ratio_q1": r["q1"], "ratio_q3": r["q3"], "rounds": timed["n"],
            "load": max(timed["load_before"], timed["load_after"]), "noisy": bool(result["noisy"]),
            "timing": {"torch": ours["timing"]["train"], "torchlayer": theirs["timing"]["train"]}}


def epoch_timing(result, train: timing.Timing) -> timing.Timing:
    """The per-epoch seconds of a training as a Timing: each fold's first epoch apart, the later ones repeats.

    ``result`` is a ``TrainResult`` (its history has ``fold`` and ``seconds``
    per epoch); ``train`` the Timing of the whole ``train_qcnn`` call, whose
    load and CPU time the epochs share.  ``compile_s`` is the median of the
    folds' first epochs (graph building, thread pools, caches); with a single
    epoch per fold there is nothing to set apart and every epoch is a repeat.
    """

    history = pd.DataFrame(result.history)
    later = history[history.groupby("fold").cumcount() > 0]["seconds"]
    first = history.groupby("fold")["seconds"].first()
    times, compile_s = (later.tolist(), float(first.median())) if len(later) else (history["seconds"].tolist(), None)
    return timing.Timing(times=[float(t) for t in times], compile_s=compile_s, load_before=train.load_before,
                         load_after=train.load_after, cpu_s=train.cpu_s, wall_s=train.wall_s, cores=train.cores)


def qcnn_run(dataset: str = "digits", classes=(3, 8), n_train: int = 0, mode: str = "sequential", threads: int = 0,
             workers: int = 2, folds: int = 1, batch_size: int = 32, epochs: int = 3, lr: float = 0.01,
             n_qubits: int = 4, patience: int = 0, grayscale: bool = False, seed: int = 0, progress: bool = True,
             compare: str = "", compare_rounds: int = 1, compare_threads: int = 0, head: str = "quantum",
             split_seed: int | None = None, compare_simulator: str = ""):
    """Train the hybrid QCNN and score it on the test split; optionally against a reference trained in the same run.

    ``n_train`` 0 and ``patience`` 0 mean "all" and "no early stopping".
    ``head`` is "quantum" (the QCNN) or one of its controls (``qmlnb.qcnn.model.HEADS``:
    the same trainer and budget with the quantum layer replaced, docs/controls.md).
    ``seed`` seeds the initial weights and the shuffling; ``split_seed`` the data
    split and subsample (None: ``seed``), so runs over seeds on one fixed split
    pair up seed by seed across heads.
    ``compare`` trains a reference configuration on the same data in the same
    run, interleaved with this one (one untimed warm-up training each, then
    reference, run, reference, run, ...: ``compare_rounds`` rounds), so that
    the speedup never divides times of different runs and neither side pays
    the process's first-time costs (thread pools, a fold-parallel pool's
    processes) alone:

    - ``"sequential"``: the same work (folds, epochs, data) in one process with
      ``compare_threads`` threads (0: the run's ``threads``); gives
      ``speedup_vs_sequential``.  Giving it the threads stage's fastest count
      compares a parallel mode with the fastest sequential training, not with a
      sequential one slowed by threads it cannot use (this small model trains
      faster on 1 thread than on 2 on a shared 2-core machine);
    - ``"1-thread"``: the same mode on 1 thread; gives ``speedup_vs_1_thread``.

    A run that already is its reference (a sequential run at ``compare_threads``, a 1-thread run)
    records 1.0 by definition and trains twice (a warm-up, then the timed run,
    like every run it is compared with), so one grid can hold both.

    The speedup is the reference's median training time over this run's (see
    :func:`qmlnb.timing.ratio`).

    ``compare_simulator="torchlayer"`` also times, after the training, a few
    training steps of this model with the fast torch simulator against the
    same model with PennyLane's ``qml.qnn.TorchLayer``, interleaved, on the
    first batch of the training split (:func:`simulator_comparison`: few
    steps, since PennyLane's are slow): the metrics' ``simulator_comparison``.
    The sequential stage (``params/10-sequential.yaml``) sets it.

    Returns (metrics dict with ``qcnn`` test scores, ``timings`` (train_s,
    load_s, samples_per_s), ``timing``: the training call and its epochs as
    :class:`qmlnb.timing.Timing` dicts, and ``noisy``; {"history": per-epoch
    table, "folds": per-fold table}).
    """
    import dataclasses

    from ..qcnn.train import train_qcnn

    if compare not in COMPARISONS:
        raise ValueError(f"compare must be one of {COMPARISONS}, got {compare!r}")
    _util.check_positive_int(compare_rounds, "compare_rounds")
    compare_threads = _util.check_int(compare_threads, "compare_threads", minimum=0)
    if compare_simulator not in SIMULATOR_COMPARISONS:
        raise ValueError(f"compare_simulator must be one of {SIMULATOR_COMPARISONS}, got {compare_simulator!r}")
    if compare_simulator:
        from ..qcnn.model import QUANTUM_HEADS

        if head not in QUANTUM_HEADS:
            raise ValueError(f"compare_simulator times the quantum layer; head={head!r} has none")
    split_seed = seed if split_seed is None else _util.check_int(split_seed, "split_seed", minimum=0)
    cfg = train_config(threads=threads, mode=mode, workers=workers, folds=folds, n_qubits=n_qubits, epochs=epochs,
                       batch_size=batch_size, lr=lr, patience=patience or None, seed=seed, progress=progress,
                       head=head)
    total = cfg.threads * cfg.processes()
    loading = timing.measure(lambda: load_data(dataset, classes=classes, n_train=n_train, seed=split_seed,
                                               grayscale=grayscale), warmup=0, min_repeats=1, min_time=0.0)
    splits = loading.value

    def run():
        set_threads(total)  # the reference may have changed BLAS's threads
        return train_qcnn(splits, cfg)

    calls = {"run": run}
    reference_threads = (compare_threads or total) if compare == "sequential" else 1
    if compare == "sequential" and (mode != "sequential" or reference_threads != total):
        reference = dataclasses.replace(cfg, mode="sequential", threads=reference_threads, progress=False)
    elif compare == "1-thread" and total > 1:
        reference = dataclasses.replace(cfg, threads=1, progress=False)
    else:
        reference = None
    if reference is not None:
        def run_reference():
            set_threads(reference.threads)
            return train_qcnn(splits, reference)

        calls = {"reference": run_reference, **calls}
    # A run that is compared with others (compare set) is warmed up like them, also when it is its own
    # reference: a cold 1-thread or sequential training against warm runs of the same stage would make the
    # stage's `fastest` decision and its time columns compare first-call costs. Without compare the one
    # training is the stage's result: no warm-up (its first epoch is set apart below).
    timed = timing.interleaved(calls, warmup=1 if compare else 0, min_rounds=compare_rounds if reference else 1,
                               min_time=0.0)
    train, result = timed["run"], timed["run"].value
    epochs_t = epoch_timing(result, train)
    metrics = {"task": stages.QCNN, "dataset": dataset, "classes": list(splits.classes), "mode": mode,
               "threads": total, "threads_per_process": cfg.threads,
               "processes": cfg.processes(), "workers": workers, "folds": folds, "n_train": int(len(splits.y_train)),
               "n_test": int(len(splits.y_test)), "batch_size": batch_size, "epochs": epochs, "n_qubits": n_qubits,
               "head": head, "seed": seed, "split_seed": split_seed,
               # every test prediction one class (qmlnb.metrics.is_degenerate): the report flags the run
               "degenerate": bool(result.metrics.get("degenerate", False)),
               "best_fold": result.best_fold, "qcnn": result.metrics,
               "timings": {"train_s": train.median, "train_iqr_s": train.iqr, "train_n": train.n,
                           "epoch_s": epochs_t.median, "epoch_iqr_s": epochs_t.iqr, "epoch_n": epochs_t.n,
                           "first_epoch_s": epochs_t.compile_s, "load_s": loading.median,
                           "samples_per_s": result.timings.get("train_samples_per_s")},
               "timing": {"train": train.as_dict(), "epochs": epochs_t.as_dict()},
               "noisy": bool(train.noisy), "load": train.load}
    if compare:
        key = "speedup_vs_sequential" if compare == "sequential" else "speedup_vs_1_thread"
        if reference is None:  # a sequential or 1-thread run: the reference is the run itself
            metrics[key] = 1.0
            metrics["comparison"] = {"against": compare, "reference": "the run itself"}
        else:
            r = timing.ratio(timed["reference"], train)
            metrics[key] = r["ratio"]
            metrics["comparison"] = {"against": compare, "reference_train_s": timed["reference"].median,
                                     "reference_threads": reference_threads,
                                     "reference_mode": reference.mode, "ratio": r,
                                     "reference_timing": timed["reference"].as_dict(),
                                     "reference_qcnn": timed["reference"].value.metrics}
            metrics["noisy"] = bool(r["noisy"])
    if compare_simulator:
        metrics["simulator_comparison"] = simulator_comparison(splits, cfg, total)
    return metrics, {stages.HISTORY: _history_table(result), stages.FOLDS: _fold_table(result)}


# ------------------------------------------------------------------ quantum-kernel SVM
def _svm_states(model, X, params: dict) -> np.ndarray:
    """States of the SVM's chosen feature map (``params``: n_qubits, reps, entanglement, kind, bandwidth)
    on the trained model's embeddings of images ``X``: (N, 2**n_qubits) complex64."""
    from ..kernels import FeatureMap
    from ..qsvm.pipeline import embed

    fm = FeatureMap(n_qubits=params["n_qubits"], reps=params["reps"], entanglement=params["entanglement"],
                    kind=params["kind"], bandwidth=float(params["bandwidth"]))
    return fm.states(embed(model, X))


def kernel_sample(model, splits, params: dict, backend: str, n: int = 80) -> pd.DataFrame:
    """The fidelity Gram of the first ``n`` training samples, sorted by class, as a (n, n) table.

    Uses the trained model's embeddings and the SVM's chosen feature map
    (``params``: n_qubits, reps, entanglement, kind, bandwidth) -- the kernel the SVM saw.
    """
    from ..kernels import gram

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
    from ..kernels import gram
    from ..kernels.blas_reference import cherk_call, gram_gflops

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


DIAGNOSTIC_SCALARS = ("off_diagonal_mean", "off_diagonal_std", "effective_rank", "gaussian_gamma",
                      "gaussian_correlation", "alignment", "bandwidth", "bandwidth_at_grid_edge", "support_fraction",
                      "concentrated", "gaussian_like", "n_samples_diagnosed")


def flat_diagnostics(diagnostics: dict | None) -> tuple[dict, list[str]]:
    """A ``qmlnb.qsvm.diagnostics.kernel_diagnostics`` result as (flat scalars, warning sentences).

    The scalars (:data:`DIAGNOSTIC_SCALARS`, plus ``bandwidth_grid`` as a
    string) become one report column each; the warnings stay a list.  None or
    {} (a model without a Gram) gives ({}, []).
    """
    if not diagnostics:
        return {}, []
    flat = {key: diagnostics.get(key) for key in DIAGNOSTIC_SCALARS}
    grid = diagnostics.get("bandwidth_grid")
    flat["bandwidth_grid"] = None if grid is None else " ".join(f"{g:g}" for g in grid)
    return flat, list(diagnostics.get("warnings") or [])


def qsvm_run(dataset: str = "digits", classes=(3, 8), n_train: int = 0, backend: str = "cpu", tile: int = 0,
             threads: int = 0, n_qubits: int = 4, bandwidth: float = 0.0, C: float = 0.0, epochs: int = 3,
             batch_size: int = 32, lr: float = 0.01, baselines: bool = True, cnn_baseline: bool = True,
             grayscale: bool = False, seed: int = 0, progress: bool = True):
    """Train the QCNN, then the quantum-kernel SVM on its embeddings with ``backend``, beside the baselines.

    ``bandwidth`` / ``C`` 0 mean "auto" (kernel-target alignment / CV search).
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

    from ..qsvm.baselines import BASELINES
    from ..qsvm.pipeline import run_qsvm_experiment
    from ..qcnn.train import train_qcnn

    check_backend(backend)  # before training: a backend that cannot run here skips the run
    cfg = train_config(threads=threads, n_qubits=n_qubits, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       progress=progress)
    splits = load_data(dataset, classes=classes, n_train=n_train, seed=seed, grayscale=grayscale)
    trained = train_qcnn(splits, cfg)
    # the classical CNN: the same network, trainer, budget, seed and split; only the quantum layer is replaced
    cnn = train_qcnn(splits, dataclasses.replace(cfg, head="cnn-linear")) if cnn_baseline else None
    svm_params = {"backend": backend, "tile": tile or None, "n_threads": cfg.threads, "seed": seed,
                  "bandwidth": bandwidth or "auto", "C": C or "auto"}
    result = run_qsvm_experiment(splits, svm_params=svm_params, trained=trained,
                                 baselines=tuple(BASELINES) if baselines else ())
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
    if cnn is not None:  # a baseline like the others: its scores, degenerate flag and fit_s (its training)
        metrics["baselines"][stages.CNN_BASELINE] = {**cnn.metrics, "fit_s": cnn.timings["total"]}
        metrics["timings"]["cnn_train_s"] = cnn.timings["total"]
    # the training Gram's diagnostics (concentration, Gaussian likeness, grid edge), flat for the report, and those
    # of the RBF control's Gram (gamma chosen by alignment like the bandwidth)
    metrics["kernel_diagnostics"], metrics["kernel_warnings"] = flat_diagnostics(result["qsvm"].get("diagnostics"))
    metrics["baseline_diagnostics"] = {name: flat_diagnostics(r.get("diagnostics"))[0]
                                       for name, r in result["baselines"].items() if r.get("diagnostics")}
    models = {"qcnn": metrics["qcnn"], "qsvm": metrics["qsvm"], **metrics["baselines"]}
    metrics["degenerate_models"] = sorted(name for name, scores in models.items() if scores.get("degenerate"))
    metrics["degenerate"] = "qsvm" in metrics["degenerate_models"]
    metrics["seed"] = seed
    tables = {stages.KERNEL_SAMPLE: kernel_sample(trained.model, splits, result["qsvm"]["params"], backend),
              stages.TIMINGS: pd.DataFrame([timings])}
    return metrics, tables


# ------------------------------------------------------------------ kernels at scale
FEATURES = ("pca", "pixels")  # kernels_at_scale's ``features``: what each qubit encodes
# kernels_at_scale's ``bandwidth_rule``: the QSVM's bandwidth grid at n qubits is
# qsvm.svm.scaled_bandwidths(n) ("scaled": extended by sqrt(8 / n) beyond 8 qubits) or DEFAULT_BANDWIDTHS
BANDWIDTH_RULES = ("scaled", "default")


def bandwidth_grid(rule: str, n_qubits: int) -> tuple[float, ...]:
    """The bandwidth candidates of ``rule`` (one of :data:`BANDWIDTH_RULES`) at ``n_qubits`` qubits."""
    from ..qsvm.svm import DEFAULT_BANDWIDTHS, scaled_bandwidths

    if rule not in BANDWIDTH_RULES:
        raise ValueError(f"bandwidth_rule must be one of {BANDWIDTH_RULES}, got {rule!r}")
    return scaled_bandwidths(n_qubits) if rule == "scaled" else DEFAULT_BANDWIDTHS


def pixel_angles(X_fit: np.ndarray, *others: np.ndarray, n_pixels: int) -> list[np.ndarray]:
    """Images (N, C, H, W) -> ``n_pixels`` = s * s area-averaged pixels, scaled to [0, pi] on ``X_fit``'s range.

    One pixel per qubit (``qmlnb.data.resample``: the image averaged over s x s
    boxes, channels averaged too; s = H gives the image itself).  One scale for
    all pixels (``X_fit``'s smallest and largest value), so the image keeps its
    contrast; a per-pixel scale would stretch the almost constant border pixels'
    noise to the full angle range.  Returns float64 (N, n_pixels) arrays, first
    for ``X_fit``, then for each of ``others``.
    """
    from ..data.resample import area_downsample, pixel_side

    images = [np.asarray(x) for x in (X_fit, *others)]
    side = pixel_side(n_pixels, *images[0].shape[2:])
    flat = [area_downsample(x, side).mean(axis=1).reshape(len(x), -1) for x in images]
    lo, hi = float(flat[0].min()), float(flat[0].max())
    span = hi - lo if hi > lo else 1.0
    return [np.clip((z - lo) / span, 0.0, 1.0) * np.pi for z in flat]


def check_scale_features(features: str, qubits, n_train: int, image_shape) -> list[int]:
    """The sorted qubit counts if ``features`` can give each of them from ``n_train`` images of ``image_shape``.

    ``pca``: at most min(n_train, pixels) components (PCA has no more
    directions); ``pixels``: perfect squares s * s with s <= the image side.
    Otherwise a ValueError naming the largest count that works, before any work.
    """
    from ..data.resample import pixel_side

    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
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


def _take(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subset of ``n`` of the labels ``y`` (all of them when n is 0 or >= len(y))."""
    from ..data import stratified_split

    if not n or n >= len(y):
        return np.arange(len(y))
    return stratified_split(y, n, np.random.default_rng(seed), "subset")[0]


def kernels_at_scale(dataset: str = "digits", classes=(3, 8), features=FEATURES, qubits=(4, 16, 64),
                     n_train: int = 100, n_test: int = 0, reps: int = 2, backend: str = "cpu", method: str = "auto",
                     threads: int = 0, seed: int = 0, split_seed: int = 0, bandwidth_rule: str = "scaled",
                     progress: bool = True):
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
    at every n), C by CV, Gram ``backend``; beside it the RBF SVM with gamma by alignment.

    Returns (metrics: task, dataset, classes, features, qubits, sizes, seeds,
    bandwidth_rule, ``per_n`` {"<features>:<n>": {qsvm / rbf balanced accuracy,
    method, bandwidth, bandwidth_grid_min, gram_s}};
    {"scale": one row per (features, n): the setting (bandwidth_rule included),
    qsvm_* and rbf_* accuracy, balanced accuracy and degenerate flag, difference
    (QSVM - RBF balanced accuracy), method, the QSVM training Gram's diagnostics
    (off-diagonal mean and std, Gaussian correlation, alignment, bandwidth, the
    grid searched as ``bandwidth_grid`` and its smallest value
    ``bandwidth_grid_min``, grid edge against that grid, flags), warnings, C, the RBF's gamma, gamma factor, C and off-diagonal std, and the
    seconds of the states, the training Grams over the bandwidth grid (and per
    bandwidth), the test Gram and the RBF (single calls, not benchmarks) with
    the load}).
    """
    from tqdm.auto import tqdm

    from ..qsvm.pipeline import run_kernel_comparison

    check_backend(backend)
    kinds = [features] if isinstance(features, str) else list(features)
    if not kinds:
        raise ValueError(f"features must name at least one of {FEATURES}, got []")
    threads = set_threads(threads)
    split_seed = _util.check_int(split_seed, "split_seed", minimum=0)
    seed = _util.check_int(seed, "seed", minimum=0)
    n_train = _util.check_positive_int(n_train, "n_train")
    bandwidth_grid(bandwidth_rule, 1)  # an unknown rule fails before the data are read
    splits = load_data(dataset, classes=classes, seed=split_seed, grayscale=True)
    train = _take(splits.y_train, n_train, seed)
    test = _take(splits.y_test, n_test, split_seed)
    X_train, y_train = splits.X_train[train], splits.y_train[train]
    X_test, y_test = splits.X_test[test], splits.y_test[test]
    points = [(kind, n) for kind in kinds
              for n in check_scale_features(kind, qubits, len(y_train), splits.image_shape)]
    common = {"dataset": dataset, "classes": " vs ".join(str(c) for c in splits.classes),
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
                                       n_classes=len(splits.classes), bandwidths=bandwidth_grid(bandwidth_rule, n))
        qsvm, rbf = result["qsvm"], result["rbf"]
        diagnostics, kernel_warnings = flat_diagnostics(qsvm["diagnostics"])
        t = qsvm["timings"]
        row = {**common, "features": kind, "n_qubits": n, "method": qsvm["params"]["method_used"]}
        for name, scores in (("qsvm", qsvm["metrics"]), ("rbf", rbf["metrics"])):
            row |= {f"{name}_{key}": scores[key] for key in ("accuracy", "balanced_accuracy", "degenerate")}
        row["difference"] = row["qsvm_balanced_accuracy"] - row["rbf_balanced_accuracy"]
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
    metrics = {"task": stages.SCALE, **common, "classes": list(splits.classes), "features": kinds,
               "qubits": sorted({n for _, n in points}),
               "methods_used": sorted(set(table["method"])),
               "per_n": {f"{r['features']}:{r['n_qubits']}": {
                   "qsvm_balanced_accuracy": r["qsvm_balanced_accuracy"],
                   "rbf_balanced_accuracy": r["rbf_balanced_accuracy"], "method": r["method"],
                   "bandwidth": r["bandwidth"], "bandwidth_grid_min": r["bandwidth_grid_min"], "gram_s": r["gram_s"]}
                   for r in rows},
               "load": float(table["load"].max())}
    return metrics, {stages.SCALE_TABLE: table}
