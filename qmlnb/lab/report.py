"""Build the summary report from run folders: tables, seaborn plots and a self-contained HTML page.

``python -m qmlnb report`` executes ``notebooks/90-summary.ipynb`` with papermill
(it calls the functions below, which read only run folders' ``params.json``,
``metrics.json`` and CSV tables, never notebook outputs), then exports it with
nbconvert to ``reports/summary.html``: images inlined, no external resources,
code cells hidden behind a "show code" button.  Figures go to
``reports/figures/*.png`` and tables to ``reports/tables/*.csv``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import runs
from .. import _util

SCORES = ("accuracy", "f1", "roc_auc", "balanced_accuracy")
SUMMARY_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "90-summary.ipynb"


class ReportError(ValueError):
    """The report cannot be built (no runs, missing summary notebook)."""


# ------------------------------------------------------------------- reading
def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


UNREADABLE = "unreadable"  # run_overview's status of a complete run whose files cannot be read


def _read_object(path: Path) -> dict:
    """The JSON object in ``path`` ({} when absent); ValueError naming the path when it is not one."""
    try:
        value = _util.read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: {type(err).__name__}: {err}") from err
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value or {}


def read_run(run_dir: Path) -> dict:
    """One complete run's row: ``grid``, ``run``, ``path``, ``param.<name>`` and flattened metrics.

    Raises ValueError, naming the file, when ``metrics.json`` or ``params.json``
    (or the environment record in it) is not a readable JSON object.
    """
    metrics = _read_object(run_dir / runs.METRICS_FILE)
    params = _read_object(run_dir / runs.PARAMS_FILE)
    env = metrics.pop("environment", None) or {}
    if not isinstance(env, dict) or not all(isinstance(env.get(key) or {}, dict) for key in ("machine", "git")):
        raise ValueError(f"{run_dir / runs.METRICS_FILE}: its 'environment' record is not a JSON object")
    machine, git = env.get("machine") or {}, env.get("git") or {}
    row = {"grid": run_dir.parent.name, "run": run_dir.name, "path": str(run_dir)}
    for key, value in params.items():
        row[f"param.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    _flatten("", metrics, row)
    row["machine.cpu"] = machine.get("cpu")
    row["machine.cores"] = machine.get("cores")
    row["git.commit"] = str(git.get("commit") or "")[:10]
    row["timestamp"] = env.get("timestamp")
    return row


def unreadable_runs(runs_dir: str | os.PathLike = "runs") -> list[tuple[Path, str]]:
    """(run folder, why) for every complete run whose files :func:`read_run` cannot read."""
    out = []
    for run_dir in runs.iter_runs(runs_dir, runs.COMPLETE):
        try:
            read_run(run_dir)
        except ValueError as err:
            out.append((run_dir, str(err)))
    return out


def load_runs(runs_dir: str | os.PathLike = "runs") -> pd.DataFrame:
    """One row per complete run: ``grid``, ``run``, ``path``, ``param.<name>`` and flattened metrics.

    Nested metrics become dotted columns (``scores.f1``, ``timings.train_s``);
    the environment record is reduced to its machine, commit and timestamp.
    Only folders whose ``status.json`` says ``complete`` are read.  A complete
    run whose ``metrics.json``/``params.json`` cannot be read (e.g. edited by
    hand, a damaged disk) is left out with a warning naming its path; the
    overview (:func:`run_overview`) lists it as ``unreadable``.
    """
    rows = []
    for run_dir in runs.iter_runs(runs_dir, runs.COMPLETE):
        try:
            rows.append(read_run(run_dir))
        except ValueError as err:
            warnings.warn(f"unreadable run {run_dir} left out of the report: {err}", stacklevel=2)
    return pd.DataFrame(rows)


def run_overview(runs_dir: str | os.PathLike = "runs") -> pd.DataFrame:
    """Every run folder with a final or running status: grid, run, status, seconds and reason/error.

    A complete run whose files cannot be read shows as ``unreadable``, the
    note naming the file and the error.
    """
    unreadable = {str(path): why for path, why in unreadable_runs(runs_dir)}
    rows = []
    for run_dir in runs.iter_runs(runs_dir, status=None):
        record = runs.read_status(run_dir) or {}
        status, note = record.get("status"), record.get("reason") or record.get("error") or ""
        if str(run_dir) in unreadable:
            status, note = UNREADABLE, unreadable[str(run_dir)]
        rows.append({"grid": run_dir.parent.name, "run": run_dir.name, "status": status,
                     "seconds": record.get("seconds"), "note": note})
    return pd.DataFrame(rows, columns=["grid", "run", "status", "seconds", "note"])


def load_tables(runs_dir: str | os.PathLike, name: str, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """``<name>.csv`` of every complete run, stacked, with the run's ``grid``, ``run`` and flattened metrics beside it."""
    frame = load_runs(runs_dir) if frame is None else frame
    parts = []
    for _, row in frame.iterrows():
        path = Path(row["path"]) / f"{name}.csv"
        if path.is_file():
            table = pd.read_csv(path)
            for key in ("grid", "run", "stage", "backend", "threads", "dataset", "mode"):
                if key in row and key not in table and pd.notna(row[key]):
                    table[key] = row[key]
            parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def require_runs(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """The complete runs, or a ReportError saying there are none (and what to run)."""
    frame = load_runs(runs_dir)
    if frame.empty:
        raise ReportError(f"no complete runs under {Path(runs_dir).resolve()}; run a sweep first, e.g. "
                          "`python -m qmlnb sweep params/*.yaml` (or `make report`)")
    return frame


def _stage(frame: pd.DataFrame, stage: str) -> pd.DataFrame:
    if frame.empty or "stage" not in frame:
        return frame.iloc[0:0]
    return frame[frame["stage"] == stage].copy()


# -------------------------------------------------------------------- tables
def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Test scores per dataset and model (QCNN per mode, QSVM per backend, classical baselines).

    One row per dataset, model, variant (mode/backend), n_train, folds and threads:
    accuracy, f1, roc_auc, balanced_accuracy (means), time_s (median), speedup
    (time of the sequential QCNN run, or of the ``cpu`` backend's Gram, on the
    same dataset, n_train, folds and threads, over this time; median) and runs.
    """
    rows = []
    for _, r in frame.iterrows():
        stage = r.get("stage")
        if stage not in ("qcnn", "qsvm"):
            continue
        base = {"grid": r["grid"], "dataset": r.get("dataset"), "n_train": r.get("n_train"),
                "folds": r.get("folds", 1), "threads": r.get("threads")}
        rows.append({**base, "model": "QCNN", "variant": r.get("mode"),
                     **{s: r.get(f"qcnn.{s}") for s in SCORES}, "time_s": r.get("timings.train_s")})
        if stage == "qsvm":
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
    return load_tables(runs_dir, "gram_times", _stage(frame, "gram-scaling"))


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
    """Gram time of each backend against ``cpu`` at the same N, n_qubits and threads (ratio > 1: faster)."""
    if times.empty:
        return pd.DataFrame(columns=["backend", "n_qubits", "threads", "n_samples", "gram_s", "cpu_s", "speedup_vs_cpu"])
    keys = ["n_qubits", "threads", "n_samples"]
    cpu = times[times["backend"] == "cpu"].groupby(keys)["gram_s"].median().rename("cpu_s")
    out = times.groupby(["backend", *keys])["gram_s"].median().reset_index().join(cpu, on=keys)
    out["speedup_vs_cpu"] = out["cpu_s"] / out["gram_s"]
    return out


def threads_speedup(frame: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    """Speedup against 1 thread: QCNN training time and the Gram time at the largest N, with the ideal line."""
    rows = []
    qcnn = _stage(frame, "qcnn")
    if not qcnn.empty and "timings.train_s" in qcnn:
        qcnn = qcnn[qcnn["grid"].str.contains("threads")]
        for (dataset, mode), part in qcnn.groupby(["dataset", "mode"]):
            t = part.groupby("threads")["timings.train_s"].median()
            if 1 in t.index:
                rows += [{"what": f"QCNN {mode} ({dataset})", "threads": int(k), "seconds": float(v),
                          "speedup": float(t[1] / v)} for k, v in t.items()]
    if not times.empty:
        for (backend, n), part in times.groupby(["backend", "n_qubits"]):
            largest = part[part["n_samples"] == part["n_samples"].max()]
            t = largest.groupby("threads")["gram_s"].median()
            if 1 in t.index and len(t) > 1:
                rows += [{"what": f"Gram {backend} n={n} N={largest['n_samples'].iloc[0]}", "threads": int(k),
                          "seconds": float(v), "speedup": float(t[1] / v)} for k, v in t.items()]
    out = pd.DataFrame(rows, columns=["what", "threads", "seconds", "speedup"])
    out["ideal"] = out["threads"].astype(float)
    out["efficiency"] = out["speedup"] / out["ideal"]
    return out


def training_modes(frame: pd.DataFrame) -> pd.DataFrame:
    """QCNN training time and test scores per dataset, mode (sequential, fold-parallel, data-parallel), n_train,
    threads and folds; the speedup is against the sequential run of the same dataset, n_train, threads and folds."""
    qcnn = _stage(frame, "qcnn")
    cols = ["dataset", "mode", "n_train", "threads", "folds", "train_s", "accuracy", "f1", "speedup_vs_sequential"]
    if qcnn.empty:
        return pd.DataFrame(columns=cols)
    out = (qcnn.groupby(["dataset", "mode", "n_train", "threads", "folds"], dropna=False)
           .agg(train_s=("timings.train_s", "median"), accuracy=("qcnn.accuracy", "mean"), f1=("qcnn.f1", "mean"))
           .reset_index())
    out["folds"] = out["folds"].fillna(1).astype(int)
    # the same work: a dataset-size sweep's small runs or a 1-thread run are not the reference of a 2-thread one
    same = ["dataset", "n_train", "threads", "folds"]
    seq = out[out["mode"] == "sequential"].groupby(same)["train_s"].median().rename("seq_s")
    out = out.join(seq, on=same)
    out["speedup_vs_sequential"] = out["seq_s"] / out["train_s"]
    return out[cols]


def sweep_table(frame: pd.DataFrame, grid_word: str, column: str) -> pd.DataFrame:
    """Test scores and training time against ``column`` (n_train, batch_size) for QCNN runs of grids named *grid_word*."""
    qcnn = _stage(frame, "qcnn")
    if qcnn.empty or column not in qcnn:
        return pd.DataFrame(columns=["dataset", column, "accuracy", "f1", "train_s"])
    qcnn = qcnn[qcnn["grid"].str.contains(grid_word)]
    return (qcnn.groupby(["dataset", column]).agg(accuracy=("qcnn.accuracy", "mean"), f1=("qcnn.f1", "mean"),
                                                  train_s=("timings.train_s", "median")).reset_index())


def kernel_matrices(frame: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(title, K) of every QSVM run's saved kernel sample (``kernel_sample.csv``)."""
    out = []
    for _, r in _stage(frame, "qsvm").iterrows():
        path = Path(r["path"]) / "kernel_sample.csv"
        if path.is_file():
            out.append((f"{r.get('dataset')} / {r.get('backend')} ({r['run']})", pd.read_csv(path).to_numpy()))
    return out


# --------------------------------------------------------------------- plots
# pragma: no mutate block -- `make mutate` tests the tables above; the plots, the export and the command line
# below are checked end to end by the smoke sweep in tests/test_report.py
def save_figure(fig, reports_dir: str | os.PathLike, name: str) -> Path:
    """Save a matplotlib figure as ``<reports_dir>/figures/<name>.png`` (atomically)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return _util.atomic_write_bytes(Path(reports_dir) / "figures" / f"{name}.png", buffer.getvalue())


def save_table(table: pd.DataFrame, reports_dir: str | os.PathLike, name: str) -> Path:
    """Save a table as ``<reports_dir>/tables/<name>.csv`` (atomically)."""
    return runs.write_table(Path(reports_dir) / "tables" / f"{name}.csv", table)


def plot_gram_scaling(times: pd.DataFrame, slopes: pd.DataFrame):
    """Gram time against N per backend (log-log, one panel per n_qubits), slopes in the legend."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    # the scaling plot uses each backend's highest thread count (the threads plot covers the rest)
    top = times[times["threads"] == times.groupby("backend")["threads"].transform("max")].copy()
    slope = slopes.set_index(["backend", "n_qubits", "threads"])["slope"]
    top["label"] = [f"{b} (slope {slope.get((b, n, t), np.nan):.2f})"
                    for b, n, t in zip(top["backend"], top["n_qubits"], top["threads"])]
    qubits = sorted(top["n_qubits"].unique())
    fig, axes = plt.subplots(1, len(qubits), figsize=(5 * len(qubits), 4), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], qubits):
        # several runs of one (backend, n, threads, N) -- e.g. the scaling and threads grids -- show their median
        sns.lineplot(data=top[top["n_qubits"] == n], x="n_samples", y="gram_s", hue="label", marker="o", ax=ax,
                     estimator="median", errorbar=None)
        ax.set(xscale="log", yscale="log", xlabel="N (states)", ylabel="Gram time (s)", title=f"n = {n} qubits")
        ax.legend(fontsize=8, title=None)
    return fig


def plot_threads(speedup: pd.DataFrame):
    """Speedup against threads for each measured workload, with the ideal (linear) line."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    sns.lineplot(data=speedup, x="threads", y="speedup", hue="what", marker="o", ax=ax)
    top = max(speedup["threads"].max(), 1)
    ax.plot([1, top], [1, top], "k--", label="ideal")
    ax.set(xlabel="threads", ylabel="speedup vs 1 thread", title="threads speedup")
    ax.set_xticks(sorted(speedup["threads"].unique()))
    ax.legend(fontsize=8)
    return fig


def plot_training_modes(modes: pd.DataFrame):
    """Training time per mode (sequential vs parallel) per dataset."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    sns.barplot(data=modes, x="dataset", y="train_s", hue="mode", ax=ax)
    ax.set(ylabel="training time (s)", title="QCNN training: sequential vs parallel")
    return fig


def plot_sweep(table: pd.DataFrame, column: str, xlabel: str, log: bool = False):
    """Test accuracy and F1 against a swept parameter."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = table.melt(id_vars=["dataset", column], value_vars=["accuracy", "f1"], var_name="score")
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    sns.lineplot(data=long, x=column, y="value", hue="dataset", style="score", marker="o", ax=ax)
    ax.set(xlabel=xlabel, ylabel="test score", title=f"QCNN test scores against {xlabel}")
    if log:
        ax.set_xscale("log")
    return fig


def plot_kernel(title: str, K: np.ndarray):
    """Heatmap of a kernel matrix (samples sorted by class)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 4.2), layout="constrained")
    sns.heatmap(K, ax=ax, cmap="viridis", vmin=0, vmax=1, square=True, xticklabels=False, yticklabels=False)
    ax.set_title(title, fontsize=9)
    return fig


# -------------------------------------------------------------------- export
HIDE_CODE = """
<style>
  body:not(.qmlnb-show-code) .jp-CodeCell .jp-Cell-inputWrapper { display: none; }
  #qmlnb-code-toggle { position: fixed; top: 8px; right: 8px; z-index: 10; }
</style>
<script>
  function qmlnbToggleCode(button) {
    document.body.classList.toggle("qmlnb-show-code");
    button.textContent = document.body.classList.contains("qmlnb-show-code") ? "hide code" : "show code";
  }
</script>
"""
TOGGLE_BUTTON = '<button id="qmlnb-code-toggle" onclick="qmlnbToggleCode(this)">show code</button>'


def export_html(notebook: str | os.PathLike, html_path: str | os.PathLike, title: str = "qmlnb summary") -> Path:
    """Export an executed notebook to one self-contained HTML file, code hidden behind a toggle.

    Images are inlined as data URIs; MathJax and require.js (loaded from a CDN
    by the default template) are left out, so the page needs no network.
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    # the default template links MathJax and require.js from a CDN; the report uses neither
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    exporter.widget_renderer_url = ""
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4),
                                          resources={"metadata": {"name": title}})
    body = re.sub(r'<script src="">\s*</script>', "", body)  # what the emptied CDN links leave behind
    body = body.replace("</head>", HIDE_CODE + "</head>", 1)
    head, sep, rest = body.partition("<body")
    tag_end = rest.index(">") + 1
    body = head + sep + rest[:tag_end] + TOGGLE_BUTTON + rest[tag_end:]
    return _util.atomic_write_text(html_path, body)


def build_report(runs_dir: str | os.PathLike = "runs", reports_dir: str | os.PathLike = "reports",
                 notebook: str | os.PathLike = SUMMARY_NOTEBOOK, timeout: int = 900) -> Path:
    """Run the summary notebook over ``runs_dir`` and export ``<reports_dir>/summary.html``.

    Raises ReportError (before running anything) when there are no complete runs
    or the summary notebook is missing; a failing summary notebook raises
    ``RuntimeError`` with papermill's message.
    """
    runs_dir, reports_dir, notebook = Path(runs_dir).resolve(), Path(reports_dir).resolve(), Path(notebook)
    if not notebook.is_file():
        raise ReportError(f"summary notebook {notebook} not found")
    require_runs(runs_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    executed = reports_dir / "_build" / "summary.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(executed), "--cwd", str(reports_dir),
           "--kernel", "python3", "--no-progress-bar", "--execution-timeout", str(timeout),
           "-y", json.dumps({"runs_dir": str(runs_dir), "reports_dir": str(reports_dir)})]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the summary notebook failed (executed copy: {executed}):\n{proc.stderr[-3000:]}")
    return export_html(executed, reports_dir / "summary.html")


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="run folders to summarise (default: runs/)")
    parser.add_argument("--out", default="reports", help="report folder (default: reports/)")


def run(args) -> int:
    try:
        html = build_report(args.runs_dir, args.out)
    except ReportError as err:
        print(f"qmlnb report: {err}", file=sys.stderr)
        return 2
    print(f"report: {html}")
    return 0
