"""The report's tables, computed from the runs DataFrame of :mod:`.load` (one row per configuration)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import runs, stages
from ..tasks import qcnn as qcnn_task, qsvm as qsvm_task
from .load import load_tables, select_stage, select_task

SCORES = ("accuracy", "f1", "roc_auc", "balanced_accuracy")
QCNN_SCORE_COLUMNS = {"accuracy": qcnn_task.SCORES.join("accuracy"), "f1": qcnn_task.SCORES.join("f1")}


# parameters never a column of their own: the seed is what repeats vary (pooled as mean ± std), progress is display
# parameters that do not make another configuration: repeats (seed), display (progress), and the comparisons with
# PennyLane a run makes after its own work (gram_scaling's pennylane_states, qcnn_run's compare_simulator), which
# change none of its scores or times
POOLED_PARAMS = ("param.seed", "param.progress", "param.pennylane_states", "param.compare_simulator")
# per-run metrics that are settings: a column wherever they vary among a table's runs
SETTING_METRICS = ("epochs", "batch_size", "n_qubits")


def setting_columns(frame: pd.DataFrame, fixed) -> list[str]:
    """The settings that vary among ``frame``'s runs and are not already in ``fixed`` (the table's own keys).

    Candidates are :data:`SETTING_METRICS` and every ``param.<name>`` the runs
    recorded, except the seed (repeats of one configuration) and ``param.<key>``
    where ``<key>`` is already in ``fixed`` or a kept metric column.  A column is kept when it takes
    more than one value (missing counts as a value): so a row never pools runs
    that differ in any recorded parameter.
    """
    out = []
    for column in [*SETTING_METRICS, *sorted(c for c in frame.columns if c.startswith("param."))]:
        if column in fixed or column in POOLED_PARAMS or column not in frame:
            continue
        if column.startswith("param.") and column.removeprefix("param.") in [*fixed, *out]:
            continue  # the run's recorded value (e.g. ``epochs``) is already a key or a column
        if frame[column].astype(str).nunique(dropna=False) > 1:
            out.append(column)
    return out


def _spread(groups, columns: dict) -> pd.DataFrame:
    """Per group: for each {output: input} column the mean and ``<output>_std`` (sample std; NaN for one run)."""
    parts = {}
    for out, col in columns.items():
        parts[out] = groups[col].mean()
        parts[f"{out}_std"] = groups[col].std(ddof=1)
    return pd.DataFrame(parts)


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Test scores per configuration: QCNN per mode, QSVM per backend, and the classical baselines.

    A row is one configuration: stage, dataset, model, variant (mode/backend),
    n_train, folds, threads and every other setting that varies among the runs
    (:func:`setting_columns`: epochs, batch size, any ``param.<name>``); only
    repeats of it (seeds) are pooled.  Columns: each score's mean and
    ``<score>_std`` (sample std over the repeats), ``n`` (the runs behind the
    row), ``time_s`` (median of the QCNN's training, the QSVM's steady Gram or
    the baseline's fit time: for the classical CNN, ``cnn``, its training) and ``speedup``: the speedup each run measured
    inside itself (QCNN: ``speedup_vs_sequential``; QSVM:
    ``timings.gram_speedup_vs_cpu``, 1 for ``cpu``), median over the row's
    runs, NaN where none was measured -- never a ratio of different runs' times.
    """
    qcnn_runs = frame[frame["task"].isin([stages.QCNN, stages.QSVM])] if "task" in frame else frame.iloc[0:0]
    fixed = ["stage", "dataset", "n_train", "folds", "threads", "mode", "backend"]
    settings = setting_columns(qcnn_runs, fixed) if not qcnn_runs.empty else []
    rows = []
    for _, r in qcnn_runs.iterrows():
        base = {"stage": r.get("stage"), "dataset": r.get("dataset"), "n_train": r.get("n_train"),
                "folds": r.get("folds", 1), "threads": r.get("threads"), **{c: r.get(c) for c in settings}}
        measured = r.get(qcnn_task.SPEEDUP_VS_SEQUENTIAL, np.nan) if r.get("task") == stages.QCNN else np.nan
        rows.append({**base, "model": "QCNN", "variant": r.get("mode"),
                     **{s: r.get(qcnn_task.SCORES.join(s)) for s in SCORES}, "time_s": r.get(qcnn_task.TRAIN_S),
                     "speedup": measured})
        if r.get("task") == stages.QSVM:
            gram = 1.0 if r.get("backend") == "cpu" else r.get(qsvm_task.GRAM_SPEEDUP_VS_CPU, np.nan)
            rows.append({**base, "model": "QSVM", "variant": r.get("backend"),
                         **{s: r.get(qsvm_task.SCORES.join(s)) for s in SCORES}, "time_s": r.get(qsvm_task.GRAM_S),
                         "speedup": gram})
            prefix = qsvm_task.BASELINE_SCORES + "."
            names = sorted({c[len(prefix):].split(".")[0] for c in r.index if c.startswith(prefix) and pd.notna(r[c])})
            for name in names:
                baseline = qsvm_task.BASELINE_SCORES.join(name)
                rows.append({**base, "model": name, "variant": "classical",
                             **{s: r.get(baseline.join(s)) for s in SCORES},
                             "time_s": r.get(baseline.join("fit_s")), "speedup": np.nan})
    keys = ["stage", "dataset", "model", "variant", "n_train", "folds", "threads", *settings]
    spread = [c for s in SCORES for c in (s, f"{s}_std")]
    if not rows:
        return pd.DataFrame(columns=[*keys, *spread, "n", "time_s", "speedup"])
    table = pd.DataFrame(rows)
    table = table.astype({s: float for s in SCORES} | {"time_s": float, "speedup": float})
    table["folds"] = table["folds"].fillna(1).astype(int)
    table["n_train"] = table["n_train"].astype("Int64")
    groups = table.groupby(keys, dropna=False, sort=True)
    out = _spread(groups, {s: s for s in SCORES})
    out["n"] = groups.size()
    out["time_s"] = groups["time_s"].median()
    out["speedup"] = groups["speedup"].median()
    return out.reset_index()[[*keys, *spread, "n", "time_s", "speedup"]]


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


def _stage_key(times: pd.DataFrame) -> pd.DataFrame:
    # the stage (grid) is part of every Gram configuration: two grids' measurements of one point stay two rows
    return times if "stage" in times else times.assign(stage=np.nan)


def slope_range(x, y) -> tuple[float, float]:
    """(min, max) of the local log-log slopes between successive N: how far the fitted slope holds."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan"), float("nan")
    order = np.argsort(x)
    local = np.diff(np.log(y[order])) / np.diff(np.log(x[order]))
    local = local[np.isfinite(local)]
    return (float(local.min()), float(local.max())) if local.size else (float("nan"), float("nan"))


def gram_slopes(times: pd.DataFrame) -> pd.DataFrame:
    """Fitted log-log slope of Gram time against N per stage, backend, n_qubits and threads.

    ``slope`` is the least-squares fit over all N (medians of each N's runs);
    ``slope_min``/``slope_max`` the range of the local slopes between successive N.
    """
    cols = ["stage", "backend", "n_qubits", "threads", "slope", "slope_min", "slope_max", "largest_n",
            "gram_s_largest"]
    if times.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (stage, backend, n, threads), part in _stage_key(times).groupby(["stage", "backend", "n_qubits", "threads"],
                                                                         dropna=False):
        per_n = part.groupby("n_samples")["gram_s"].median().sort_index()
        low, high = slope_range(per_n.index, per_n.to_numpy())
        rows.append({"stage": stage, "backend": backend, "n_qubits": n, "threads": threads,
                     "slope": fit_loglog_slope(per_n.index, per_n.to_numpy()), "slope_min": low, "slope_max": high,
                     "largest_n": int(per_n.index[-1]), "gram_s_largest": float(per_n.iloc[-1])})
    return pd.DataFrame(rows, columns=cols)


def backend_speedup(times: pd.DataFrame) -> pd.DataFrame:
    """Gram time of each backend and its speedup against ``cpu`` at the same stage, N, n_qubits and threads.

    Both come from the run itself: a gram-scaling run times ``cpu`` interleaved with its backend on the same
    states (``cpu_s`` and ``speedup_vs_cpu`` in ``gram_times.csv``); ``cpu``'s own rows are 1 by definition.
    Medians over the runs of a row (``n`` of them); never a ratio of times from different runs (NaN where none
    was measured).  The stage is a key: one configuration measured by two grids is two rows, each saying which.
    """
    keys = ["stage", "n_qubits", "threads", "n_samples"]
    if times.empty:
        return pd.DataFrame(columns=["backend", *keys, "gram_s", "cpu_s", "speedup_vs_cpu", "n"])
    measured = _stage_key(times)
    measured = measured.assign(cpu_s=measured.get("cpu_s", np.nan),
                               speedup_vs_cpu=measured.get("speedup_vs_cpu", np.nan))
    is_cpu = measured["backend"] == "cpu"
    measured.loc[is_cpu, "cpu_s"] = measured.loc[is_cpu, "gram_s"]
    measured.loc[is_cpu, "speedup_vs_cpu"] = 1.0
    return (measured.groupby(["backend", *keys], dropna=False)
            .agg(gram_s=("gram_s", "median"), cpu_s=("cpu_s", "median"), speedup_vs_cpu=("speedup_vs_cpu", "median"),
                 n=("gram_s", "size"))
            .reset_index())


def gram_headline(times: pd.DataFrame) -> pd.DataFrame:
    """Each backend at the largest N of its stage, n_qubits and threads: what the Gram step reaches.

    Columns: stage, n_qubits, threads, N, backend, ``gram_s`` (median of the
    runs' medians), ``gram_iqr_s`` (median of their IQRs), ``gflops`` (8 N^2 2^n
    real flops of the full matrix over the median), ``vs_cherk`` (BLAS
    ``cherk``'s time on the same states over the backend's, measured in the
    run: 1 means as fast as the matrix-product limit), ``speedup_vs_cpu``
    (measured in the run; 1 for ``cpu``), ``n`` (runs) and ``noisy`` (runs
    flagged noisy).  Runs recorded before GFLOP/s and ``cherk`` were measured
    show NaN there (shown as "—").
    """
    cols = ["stage", "n_qubits", "threads", "N", "backend", "gram_s", "gram_iqr_s", "gflops", "vs_cherk",
            "speedup_vs_cpu", "n", "noisy"]
    if times.empty:
        return pd.DataFrame(columns=cols)
    t = _stage_key(times)
    for column in ("gram_iqr_s", "gflops", "vs_cherk", "speedup_vs_cpu", "noisy"):
        if column not in t:
            t = t.assign(**{column: np.nan})
    t.loc[t["backend"] == "cpu", "speedup_vs_cpu"] = 1.0
    largest = t.groupby(["stage", "n_qubits", "threads"], dropna=False)["n_samples"].transform("max")
    top = t[t["n_samples"] == largest].copy()
    top["noisy"] = top["noisy"].map(lambda v: bool(v) if pd.notna(v) else False)
    out = (top.groupby(["stage", "n_qubits", "threads", "n_samples", "backend"], dropna=False)
           .agg(gram_s=("gram_s", "median"), gram_iqr_s=("gram_iqr_s", "median"), gflops=("gflops", "median"),
                vs_cherk=("vs_cherk", "median"), speedup_vs_cpu=("speedup_vs_cpu", "median"), n=("gram_s", "size"),
                noisy=("noisy", "sum"))
           .reset_index().rename(columns={"n_samples": "N"}))
    out["noisy"] = out["noisy"].astype(int)
    return out[cols].sort_values(["stage", "n_qubits", "threads", "gram_s"], kind="stable").reset_index(drop=True)


def threads_speedup(frame: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    """Speedup against 1 thread as each run measured it, with the ideal line: QCNN training (runs of the
    threads stage with ``compare: 1-thread``) and the Gram at the largest N (``speedup_vs_1_thread`` of
    ``gram_times.csv``; 1 at 1 thread).  Medians over the runs of a row; never a ratio across runs."""
    rows = []
    qcnn = select_stage(frame, stages.THREADS, stages.QCNN)
    if not qcnn.empty and qcnn_task.TRAIN_S in qcnn and qcnn_task.SPEEDUP_VS_1_THREAD in qcnn:
        qcnn = qcnn[qcnn[qcnn_task.SPEEDUP_VS_1_THREAD].notna()]
        for (dataset, mode, threads), part in qcnn.groupby(["dataset", "mode", "threads"]):
            rows.append({"what": f"QCNN {mode} ({dataset})", "threads": int(threads),
                         "seconds": float(part[qcnn_task.TRAIN_S].median()),
                         "speedup": float(part[qcnn_task.SPEEDUP_VS_1_THREAD].median())})
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
    """QCNN training time and test scores per stage, dataset, mode (sequential, fold-parallel, data-parallel),
    n_train, threads, folds and every other setting that varies (:func:`setting_columns`).

    ``train_s`` is the median over the row's runs (``n`` of them), accuracy and
    f1 their mean with ``_std``; ``speedup_vs_sequential`` is the one each run
    measured against sequential training of the same work in the same run
    (``qcnn_run(compare="sequential")``; median over the row's runs), never a
    ratio of times from different runs (NaN where the runs measured none).
    """
    qcnn = select_task(frame, stages.QCNN)
    keys = ["stage", "dataset", "mode", "n_train", "threads", "folds"]
    settings = setting_columns(qcnn, keys) if not qcnn.empty else []
    cols = [*keys, *settings, "n", "train_s", "accuracy", "accuracy_std", "f1", "f1_std", "speedup_vs_sequential"]
    if qcnn.empty:
        return pd.DataFrame(columns=cols)
    qcnn = qcnn.assign(**{qcnn_task.SPEEDUP_VS_SEQUENTIAL: qcnn.get(qcnn_task.SPEEDUP_VS_SEQUENTIAL, np.nan)},
                       stage=qcnn.get("stage", np.nan))
    groups = qcnn.groupby([*keys, *settings], dropna=False)
    out = _spread(groups, QCNN_SCORE_COLUMNS)
    out["n"] = groups.size()
    out["train_s"] = groups[qcnn_task.TRAIN_S].median()
    out["speedup_vs_sequential"] = groups[qcnn_task.SPEEDUP_VS_SEQUENTIAL].median()
    out = out.reset_index()
    out["folds"] = out["folds"].fillna(1).astype(int)
    return out[cols]


def sweep_table(frame: pd.DataFrame, stage: str, column: str) -> pd.DataFrame:
    """Test scores and training time against ``column`` (n_train, batch_size) for the QCNN runs of ``stage``
    (e.g. :data:`qmlnb.lab.stages.DATASET_SIZE`), whatever their grids are named.

    A row is one dataset, ``column`` value and any other setting that varies
    (:func:`setting_columns`); accuracy and f1 are means with ``_std`` over the
    row's ``n`` runs (seeds), ``train_s`` their median.
    """
    qcnn = select_stage(frame, stage, stages.QCNN)
    if qcnn.empty or column not in qcnn:
        return pd.DataFrame(columns=["dataset", column, "n", "accuracy", "accuracy_std", "f1", "f1_std", "train_s"])
    settings = setting_columns(qcnn, ["dataset", column])
    groups = qcnn.groupby(["dataset", column, *settings], dropna=False)
    out = _spread(groups, QCNN_SCORE_COLUMNS)
    out.insert(0, "n", groups.size())
    out["train_s"] = groups[qcnn_task.TRAIN_S].median()
    return out.reset_index()


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
