"""The report's "Sparse kernels": models on the top-k neighbour kernel against k, and the UMAP picture.

Each run of the ``sparse-kernel`` task (:mod:`qmlnb.lab.tasks.sparse_kernel`, notebook
70-sparse-kernel.ipynb) writes ``sparse_kernel.csv`` (one row per model, k and seed) and, with ``umap``,
``umap.csv`` (the 2-D UMAP of the QCNN's embeddings).  Here:

- :func:`rows` / :func:`umap_rows`: those files of every complete run, read one by one: a file that cannot be
  read or lacks a column is left out and named (the section says which), never stopping the report;
- :func:`budget_tables`: one table per budget (dataset, classes, samples, qubits, finder, QCNN budget), one
  row per configuration (model, k): balanced accuracy mean ± std over the seeds, the kernel's build time and
  traced peak memory (single calls, not benchmarks), its stored entries;
- :func:`comparisons`: the quantum kernel against its RBF control per budget, k and method (k-NN, label
  spreading), paired by seed (:func:`.controls.compare_models`, reference ``quantum``); the report corrects
  these with its other comparisons (:func:`.verdicts.comparison_family`);
- :func:`plot_against_k`: accuracy and memory against k, drawn from one budget table;
- :func:`plot_umap`: the UMAP picture coloured by class;
- :func:`show_section` does all of it for the summary notebook in one call.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import stages
from ..tasks import sparse_kernel as task
from . import controls

REFERENCE, CONTROL = task.KERNELS  # "quantum", "rbf"
# what makes two runs one budget (their seeds pool); split_seed too: another split is another experiment here
BUDGET = ("dataset", "classes", "n_samples", "n_originals", "augmented", "n_qubits", "neighbours", "n_train_qcnn",
          "epochs", "labelled", "split_seed")
NUMBERS = ("k", "seed", "balanced_accuracy", "accuracy", "unreached", "gram_s", "peak_mib", "nnz", "n_samples",
           "n_originals", "n_qubits", "n_train_qcnn", "epochs", "labelled", "split_seed", "bandwidth")
REQUIRED = (*BUDGET, "model", "kernel", "method", "k", "seed", "balanced_accuracy", "degenerate")
UMAP_REQUIRED = ("x", "y", "class_name")
INSTALL_UMAP = ('The UMAP picture needs umap-learn, which `make report` does not install (its numba functions '
                'compile in every notebook process, beyond the default sweep\'s budget): '
                '`pip install "qmlnb[sparse]"`, then `python -m qmlnb sweep params/large/sparse-kernel-large.yaml` '
                '(its runs set `umap: True`).')


def _read(runs_dir, frame, name: str, required) -> tuple[pd.DataFrame, list[str]]:
    """``<name>.csv`` of every complete sparse-kernel run, stacked with the run's grid, run and stage, and the
    list of files left out ("path: why"): unreadable, empty or missing a column of ``required``."""
    from .load import load_runs, select_task

    frame = load_runs(runs_dir) if frame is None else frame
    parts, problems = [], []
    for _, run in select_task(frame, stages.SPARSE_KERNEL).iterrows():
        path = Path(run["path"]) / f"{name}.csv"
        if not path.is_file():
            continue
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
            problems.append(f"{path}: {type(err).__name__}: {err}")
            continue
        missing = [c for c in required if c not in table.columns]
        if missing or table.empty:
            problems.append(f"{path}: " + (f"no column {', '.join(missing)}" if missing else "no rows"))
            continue
        for key in ("grid", "run", "stage"):
            if key in run and pd.notna(run[key]):
                table[key] = run[key]
        parts.append(table)
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), problems


def rows(runs_dir: str | os.PathLike, frame: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(every complete sparse-kernel run's ``sparse_kernel.csv`` rows, the files left out with why).  Numeric
    columns are coerced (a cell that is not a number becomes empty) and rows without a score are dropped."""
    table, problems = _read(runs_dir, frame, stages.SPARSE_KERNEL_TABLE, REQUIRED)
    if table.empty:
        return table, problems
    for column in NUMBERS:
        if column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    table["degenerate"] = table["degenerate"].astype(str).str.lower().eq("true")
    return table[table["balanced_accuracy"].notna() & table["seed"].notna()].reset_index(drop=True), problems


def umap_rows(runs_dir: str | os.PathLike, frame: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(every complete sparse-kernel run's ``umap.csv`` rows with finite coordinates, the files left out)."""
    table, problems = _read(runs_dir, frame, stages.UMAP_TABLE, UMAP_REQUIRED)
    if table.empty:
        return table, problems
    for column in ("x", "y"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table[np.isfinite(table["x"]) & np.isfinite(table["y"])].reset_index(drop=True), problems


def _budget_label(values) -> str:
    record = dict(zip(BUDGET, values))
    made = (f"{_int(record['n_samples'])} samples repeated with noise from {_int(record['n_originals'])} images"
            if str(record["augmented"]).lower() == "true" else f"{_int(record['n_samples'])} images")
    return (f"{record['dataset']} {record['classes']}: {made}, {_int(record['n_qubits'])} qubits, "
            f"{record['neighbours']} neighbours, QCNN {_int(record['n_train_qcnn'])} images x "
            f"{_int(record['epochs'])} epochs, {record['labelled']:g} labelled, split {_int(record['split_seed'])}")


def _int(value) -> str:
    return str(int(value)) if isinstance(value, (int, float, np.number)) and math.isfinite(value) else str(value)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def budget_tables(table: pd.DataFrame) -> list[pd.DataFrame]:
    """One table per budget of :func:`rows`, one row per (model, k) in k order (the dense and pixel models last:
    their ``k`` is "all pairs" / empty): seeds ``n``, balanced accuracy ``mean`` (a number, for the plot) and
    ``mean ± std``, ``unreached`` (mean share of test samples no labelled sample reaches), the kernel's
    ``build s`` (median over runs of one timed call) and ``peak MiB`` (traced), ``stored entries``.
    ``attrs["title"]``: the budget in words."""
    if table.empty:
        return []
    out = []
    for values, budget in table.groupby(list(BUDGET), sort=True, dropna=False):
        lines = []
        for (model, k), part in budget.groupby(["model", budget["k"].fillna(-1)], sort=False):
            dense = k < 0
            lines.append({"model": model, "kernel": part["kernel"].iloc[0], "method": part["method"].iloc[0],
                          "k": np.nan if dense else int(k), "n": int(part["seed"].nunique()),
                          "mean": float(part["balanced_accuracy"].mean()),
                          "balanced accuracy": _mean_std(part["balanced_accuracy"]),
                          "unreached": float(part["unreached"].mean()) if "unreached" in part else np.nan,
                          "build s": float(part["gram_s"].median()) if "gram_s" in part else np.nan,
                          "peak MiB": float(part["peak_mib"].max()) if "peak_mib" in part else np.nan,
                          "stored entries": float(part["nnz"].median()) if "nnz" in part else np.nan,
                          "degenerate": int(part["degenerate"].sum())})
        summary = pd.DataFrame(lines)
        summary = summary.assign(_dense=summary["k"].isna()).sort_values(["_dense", "k", "model"]).drop(
            columns="_dense").reset_index(drop=True)
        summary["k"] = summary["k"].map(lambda v: "all pairs" if pd.isna(v) else str(int(v)))
        summary.loc[summary["kernel"] == "pixels", "k"] = ""
        summary.attrs["title"] = _budget_label(values)
        out.append(summary)
    return out


def comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """quantum − RBF balanced accuracy per budget, k and method, paired by seed (:data:`.controls.TABLE_COLUMNS`;
    reference ``quantum``).  Alone, a table is its own Holm family; the report joins it to its family."""
    if table.empty:
        return pd.DataFrame(columns=controls.TABLE_COLUMNS)
    sparse = table[table["kernel"].isin(task.KERNELS) & table["k"].notna()]
    if sparse.empty:
        return pd.DataFrame(columns=controls.TABLE_COLUMNS)
    budget = sparse[list(BUDGET)].apply(tuple, axis=1).map(_budget_label)
    setting = budget.str.split(": ", n=1).str[1] + ", k=" + sparse["k"].astype(int).astype(str) + ", " + \
        sparse["method"].astype(str)
    long = pd.DataFrame({"stage": sparse.get("stage", pd.Series("", index=sparse.index)).fillna("").astype(str),
                         "dataset": sparse["dataset"].astype(str), "classes": sparse["classes"].astype(str),
                         "setting": setting, "seed": sparse["seed"].astype(int), "model": sparse["kernel"],
                         "score": sparse["balanced_accuracy"].astype(float),
                         "degenerate": sparse["degenerate"].astype(bool)})
    return controls.compare_models(long, REFERENCE, order=task.KERNELS)


def sentences(compared: pd.DataFrame) -> list[str]:
    """One sentence per budget, k and method of the (corrected) :func:`comparisons`: does the sparse quantum
    kernel beat its RBF control beyond noise?  The difference in words is :func:`.controls.difference_text`'s."""
    findings = {f"{REFERENCE} better": "the quantum kernel is better beyond noise",
                f"{CONTROL} better": "the RBF control is better beyond noise"}
    lines = []
    for _, r in compared[compared["model"] == CONTROL].iterrows():
        where = f"{r['dataset']} ({r['classes']}), {r['setting']}"
        if pd.isna(r.get("reference_minus_model")):
            lines.append(f"{where}: {r['verdict']}.")
            continue
        finding = findings.get(r["verdict"], f"no difference beyond noise ({r['verdict']})")
        lines.append(f"{where}: {finding}: {controls.difference_text(r, REFERENCE)}, in balanced accuracy.")
    return lines


def plot_against_k(summary: pd.DataFrame):
    """Balanced accuracy (mean over seeds) and the kernel's traced peak memory against k, from one
    :func:`budget_tables` table: a line per sparse model, the dense QSVM as a horizontal line where it ran."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.4))
    sparse = summary[summary["k"].str.isdigit()].assign(k=lambda t: t["k"].astype(int))
    for model, part in sparse.groupby("model", sort=True):
        left.plot(part["k"], part["mean"], marker="o", label=model)
    for kernel, part in sparse.groupby("kernel", sort=True):
        memory = part.groupby("k")["peak MiB"].max()
        right.plot(memory.index, memory.to_numpy(), marker="o", label=f"{kernel} sparse kernel")
    dense = summary[summary["model"] == task.DENSE_MODEL]
    if not dense.empty:
        left.axhline(dense["mean"].iloc[0], color="black", linestyle="--", label="dense QSVM")
        right.axhline(dense["peak MiB"].iloc[0], color="black", linestyle="--", label="dense Gram")
    left.set(ylabel="balanced accuracy\n(mean over seeds)")
    right.set(yscale="log", ylabel="peak traced memory (MiB)")
    ks = sorted(sparse["k"].unique())
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set(xlabel="k (neighbours per sample)", xticks=ks, xticklabels=[str(k) for k in ks])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.suptitle(summary.attrs.get("title", ""), fontsize=8)
    fig.tight_layout()
    return fig


def plot_umap(points: pd.DataFrame, title: str = ""):
    """The 2-D UMAP of the QCNN's embeddings (``umap.csv`` rows of one run), one colour per class: a matplotlib
    Figure built without pyplot (as the explorer's figures: shown once, by ``display``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    for name, part in points.groupby("class_name", sort=True):
        ax.scatter(part["x"], part["y"], s=6, alpha=0.7, label=str(name))
    ax.set(xticks=[], yticks=[], title=title or "UMAP of the QCNN's embeddings")
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    return fig


def show_section(runs_dir, frame, reports_dir, compared: pd.DataFrame) -> None:
    """The summary notebook's "Sparse kernels": a table and plot per budget, the sentences (``compared``: this
    section's rows of the report's corrected family), the UMAP picture (or how to get it) and the files left out."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML, Markdown, display

    from .plots import save_figure
    from .present import to_html
    from .tables import save_table

    table, problems = rows(runs_dir, frame)
    if table.empty:
        display(Markdown("*No sparse-kernel runs yet (`params/88-sparse-kernel.yaml`).*"))
    for i, summary in enumerate(budget_tables(table)):
        display(Markdown(f"### {summary.attrs['title']}"))
        shown = summary.drop(columns="mean")
        save_table(shown, reports_dir, f"sparse_kernel_{i}")
        display(HTML(to_html(shown)))
        save_figure(plot_against_k(summary), reports_dir, f"sparse_kernel_{i}")
        plt.show()
    lines = sentences(compared)
    if lines:
        save_table(compared, reports_dir, "sparse_kernel_comparisons")
        display(Markdown("\n".join(f"- {line}" for line in lines)))
    points, umap_problems = umap_rows(runs_dir, frame)
    if points.empty:
        display(Markdown(f"*{INSTALL_UMAP}*"))
    else:
        first = points[points["run"] == points["run"].iloc[0]] if "run" in points else points
        label = " ".join(str(first[c].iloc[0]) for c in ("grid", "run") if c in first)
        picture = plot_umap(first, f"UMAP of the QCNN's embeddings ({label})")
        save_figure(picture, reports_dir, "sparse_kernel_umap")
        display(picture)
    left_out = problems + umap_problems
    if left_out:
        display(Markdown("Files left out of this section:\n" + "\n".join(f"- `{line}`" for line in left_out)))


def latest_umap(runs_dir: str | os.PathLike = "") -> tuple[pd.DataFrame, str]:
    """(points, where) of the newest readable ``umap.csv`` under ``runs_dir`` (default: the project's ``runs/``,
    sweep and interactive runs alike): the explorer's picture; (empty frame, how to make one) when there is none."""
    from .load import report_dirs

    found = sorted(Path(report_dirs(runs_dir)[0]).glob(f"**/{stages.UMAP_TABLE}.csv"),
                   key=lambda path: path.stat().st_mtime, reverse=True)
    for path in found:
        try:
            points = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if all(c in points for c in UMAP_REQUIRED) and len(points):
            points[["x", "y"]] = points[["x", "y"]].apply(pd.to_numeric, errors="coerce")
            points = points.dropna(subset=["x", "y"])
            if len(points):
                return points, f"{path.parent.parent.name}/{path.parent.name}"
    return pd.DataFrame(columns=list(UMAP_REQUIRED)), ("No run has drawn the UMAP picture yet: run "
                                                       "70-sparse-kernel.ipynb with `umap = True`. " + INSTALL_UMAP)
