"""The report's tables, computed from the runs DataFrame of :mod:`.load` (one row per configuration)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import runs, stages
from .load import load_tables, select_stage, select_task

SCORES = ("accuracy", "f1", "roc_auc", "balanced_accuracy")


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Test scores per dataset and model (QCNN per mode, QSVM per backend, classical baselines).

    One row per dataset, model, variant (mode/backend), n_train, folds and threads:
    accuracy, f1, roc_auc, balanced_accuracy (means), time_s (median), speedup
    (time of the sequential QCNN run, or of the ``cpu`` backend's Gram, on the
    same dataset, n_train, folds and threads, over this time; median) and runs.
    """
    rows = []
    for _, r in frame.iterrows():
        task = r.get("task")
        if task not in (stages.QCNN, stages.QSVM):
            continue
        base = {"grid": r["grid"], "dataset": r.get("dataset"), "n_train": r.get("n_train"),
                "folds": r.get("folds", 1), "threads": r.get("threads")}
        rows.append({**base, "model": "QCNN", "variant": r.get("mode"),
                     **{s: r.get(f"qcnn.{s}") for s in SCORES}, "time_s": r.get("timings.train_s")})
        if task == stages.QSVM:
            rows.append({**base, "model": "QSVM", "variant": r.get("backend"),
                         **{s: r.get(f"qsvm.{s}") for s in SCORES}, "time_s": r.get("timings.gram_s")})
            names = sorted({c.split(".")[1] for c in r.index if c.startswith("baselines.") and pd.notna(r[c])})
            for name in names:
                rows.append({**base, "model": name, "variant": "classical",
                             **{s: r.get(f"baselines.{name}.{s}") for s in SCORES},
                             "time_s": r.get(f"baselines.{name}.fit_s")})
    table = pd.DataFrame(rows, columns=["grid", "dataset", "n_train", "folds", "threads", "model", "variant", *SCORES,
                                        "time_s"])
    if table.empty:
        return table.assign(speedup=[])
    table = table.astype({s: float for s in SCORES} | {"time_s": float})
    table["folds"] = table["folds"].fillna(1).astype(int)
    table["n_train"] = table["n_train"].astype("Int64")

    def reference(row) -> float:
        # QCNN: the sequential run; QSVM: the cpu backend -- same dataset, training size, folds and threads
        # (a 2-thread parallel run against a 1-thread sequential one would not measure the parallel mode)
        same = table[(table["dataset"] == row["dataset"]) & (table["n_train"] == row["n_train"])
                     & (table["folds"] == row["folds"]) & (table["threads"] == row["threads"])
                     & (table["model"] == row["model"])]
        ref = {"QCNN": "sequential", "QSVM": "cpu"}.get(row["model"])
        times = same.loc[same["variant"] == ref, "time_s"]
        return float(times.median() / row["time_s"]) if ref and len(times) and row["time_s"] else np.nan

    table["speedup"] = table.apply(reference, axis=1)
    return (table.groupby(["dataset", "model", "variant", "n_train", "folds", "threads"], dropna=False, sort=True)
            .agg({**{s: "mean" for s in SCORES}, "time_s": "median", "speedup": "median", "grid": "count"})
            .rename(columns={"grid": "runs"}).reset_index())


def fit_loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x) (2 for a Gram matrix's N^2 cost)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def gram_table(frame: pd.DataFrame, runs_dir) -> pd.DataFrame:
    """Per-N Gram timings of every gram-scaling run (backend, threads, n_qubits, n_samples, gram_s, ...)."""
    return load_tables(runs_dir, stages.GRAM_TIMES, select_task(frame, stages.GRAM))


def gram_slopes(times: pd.DataFrame) -> pd.DataFrame:
    """Fitted log-log slope of Gram time against N per backend, n_qubits and threads."""
    if times.empty:
        return pd.DataFrame(columns=["backend", "n_qubits", "threads", "slope", "largest_n", "gram_s_largest"])
    rows = []
    for (backend, n, threads), part in times.groupby(["backend", "n_qubits", "threads"]):
        part = part.sort_values("n_samples")
        rows.append({"backend": backend, "n_qubits": n, "threads": threads,
                     "slope": fit_loglog_slope(part["n_samples"], part["gram_s"]),
                     "largest_n": int(part["n_samples"].iloc[-1]), "gram_s_largest": float(part["gram_s"].iloc[-1])})
    return pd.DataFrame(rows)


def backend_speedup(times: pd.DataFrame) -> pd.DataFrame:
    """Gram time of each backend and its speedup against ``cpu`` at the same N, n_qubits and threads.

    Both come from the run itself: a gram-scaling run times ``cpu`` interleaved with its backend on the same
    states (``cpu_s`` and ``speedup_vs_cpu`` in ``gram_times.csv``); ``cpu``'s own rows are 1 by definition.
    Medians over the runs of a row; never a ratio of times from different runs (NaN where none was measured).
    """
    keys = ["n_qubits", "threads", "n_samples"]
    if times.empty:
        return pd.DataFrame(columns=["backend", *keys, "gram_s", "cpu_s", "speedup_vs_cpu"])
    measured = times.assign(cpu_s=times.get("cpu_s", np.nan), speedup_vs_cpu=times.get("speedup_vs_cpu", np.nan))
    is_cpu = measured["backend"] == "cpu"
    measured.loc[is_cpu, "cpu_s"] = measured.loc[is_cpu, "gram_s"]
    measured.loc[is_cpu, "speedup_vs_cpu"] = 1.0
    return (measured.groupby(["backend", *keys])
            .agg(gram_s=("gram_s", "median"), cpu_s=("cpu_s", "median"), speedup_vs_cpu=("speedup_vs_cpu", "median"))
            .reset_index())


def threads_speedup(frame: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    """Speedup against 1 thread as each run measured it, with the ideal line: QCNN training (runs of the
    threads stage with ``compare: 1-thread``) and the Gram at the largest N (``speedup_vs_1_thread`` of
    ``gram_times.csv``; 1 at 1 thread).  Medians over the runs of a row; never a ratio across runs."""
    rows = []
    qcnn = select_stage(frame, stages.THREADS, stages.QCNN)
    if not qcnn.empty and "timings.train_s" in qcnn and "speedup_vs_1_thread" in qcnn:
        qcnn = qcnn[qcnn["speedup_vs_1_thread"].notna()]
        for (dataset, mode, threads), part in qcnn.groupby(["dataset", "mode", "threads"]):
            rows.append({"what": f"QCNN {mode} ({dataset})", "threads": int(threads),
                         "seconds": float(part["timings.train_s"].median()),
                         "speedup": float(part["speedup_vs_1_thread"].median())})
    if not times.empty:
        times = times.assign(speedup_vs_1_thread=times.get("speedup_vs_1_thread", np.nan))
        times.loc[times["threads"] == 1, "speedup_vs_1_thread"] = 1.0
        for (backend, n), part in times.groupby(["backend", "n_qubits"]):
            largest = part[(part["n_samples"] == part["n_samples"].max()) & part["speedup_vs_1_thread"].notna()]
            if (largest["threads"] > 1).any():
                for threads, same in largest.groupby("threads"):
                    rows.append({"what": f"Gram {backend} n={n} N={largest['n_samples'].iloc[0]}",
                                 "threads": int(threads), "seconds": float(same["gram_s"].median()),
                                 "speedup": float(same["speedup_vs_1_thread"].median())})
    out = pd.DataFrame(rows, columns=["what", "threads", "seconds", "speedup"])
    out["ideal"] = out["threads"].astype(float)
    out["efficiency"] = out["speedup"] / out["ideal"]
    return out


def training_modes(frame: pd.DataFrame) -> pd.DataFrame:
    """QCNN training time and test scores per dataset, mode (sequential, fold-parallel, data-parallel), n_train,
    threads and folds; ``speedup_vs_sequential`` is the one each run measured against sequential training of the
    same work in the same run (``qcnn_run(compare="sequential")``; median over the row's runs), never a ratio of
    times from different runs (NaN where the runs measured none)."""
    qcnn = select_task(frame, stages.QCNN)
    cols = ["dataset", "mode", "n_train", "threads", "folds", "train_s", "accuracy", "f1", "speedup_vs_sequential"]
    if qcnn.empty:
        return pd.DataFrame(columns=cols)
    qcnn = qcnn.assign(speedup_vs_sequential=qcnn.get("speedup_vs_sequential", np.nan))
    out = (qcnn.groupby(["dataset", "mode", "n_train", "threads", "folds"], dropna=False)
           .agg(train_s=("timings.train_s", "median"), accuracy=("qcnn.accuracy", "mean"), f1=("qcnn.f1", "mean"),
                speedup_vs_sequential=("speedup_vs_sequential", "median"))
           .reset_index())
    out["folds"] = out["folds"].fillna(1).astype(int)
    return out[cols]


def sweep_table(frame: pd.DataFrame, stage: str, column: str) -> pd.DataFrame:
    """Test scores and training time against ``column`` (n_train, batch_size) for the QCNN runs of ``stage``
    (e.g. :data:`qmlnb.lab.stages.DATASET_SIZE`), whatever their grids are named."""
    qcnn = select_stage(frame, stage, stages.QCNN)
    if qcnn.empty or column not in qcnn:
        return pd.DataFrame(columns=["dataset", column, "accuracy", "f1", "train_s"])
    return (qcnn.groupby(["dataset", column]).agg(accuracy=("qcnn.accuracy", "mean"), f1=("qcnn.f1", "mean"),
                                                  train_s=("timings.train_s", "median")).reset_index())


def kernel_matrices(frame: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(title, K) of every QSVM run's saved kernel sample (``kernel_sample.csv``)."""
    out = []
    for _, r in select_task(frame, stages.QSVM).iterrows():
        path = Path(r["path"]) / f"{stages.KERNEL_SAMPLE}.csv"
        if path.is_file():
            out.append((f"{r.get('dataset')} / {r.get('backend')} ({r['run']})", pd.read_csv(path).to_numpy()))
    return out


def save_table(table: pd.DataFrame, reports_dir: str | os.PathLike, name: str) -> Path:
    """Save a table as ``<reports_dir>/tables/<name>.csv`` (atomically)."""
    return runs.write_table(Path(reports_dir) / "tables" / f"{name}.csv", table)
