"""The report's figures (seaborn/matplotlib), saved as PNG beside the HTML."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ... import _util


def save_figure(fig, reports_dir: str | os.PathLike, name: str) -> Path:
    """Save a matplotlib figure as ``<reports_dir>/figures/<name>.png`` (atomically)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return _util.atomic_write_bytes(Path(reports_dir) / "figures" / f"{name}.png", buffer.getvalue())


def plot_gram_scaling(times: pd.DataFrame, slopes: pd.DataFrame):
    """Gram time against N per backend (log-log, one panel per n_qubits) with IQR error bars.

    Each point is the median over the runs of one (stage, backend, threads, N)
    of their medians; the error bar spans that median's IQR (``gram_iqr_s``,
    centred on the median, as the run recorded only its width).  The legend gives the
    fitted slope and, in brackets, the range of the local slopes between
    successive N (:func:`.tables.gram_slopes`); the stage is named when the runs
    come from more than one.
    """
    import matplotlib.pyplot as plt

    # the scaling plot uses each backend's highest thread count (the threads section covers the rest)
    top = times[times["threads"] == times.groupby("backend")["threads"].transform("max")].copy()
    top = top if "stage" in top else top.assign(stage=np.nan)
    top = top.assign(gram_iqr_s=top["gram_iqr_s"] if "gram_iqr_s" in top else np.nan)
    several = top["stage"].nunique(dropna=False) > 1
    by = slopes.set_index(["stage", "backend", "n_qubits", "threads"]) if "stage" in slopes else None
    qubits = sorted(top["n_qubits"].unique())
    fig, axes = plt.subplots(1, len(qubits), figsize=(5 * len(qubits), 4), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], qubits):
        for (stage, backend, threads), part in top[top["n_qubits"] == n].groupby(["stage", "backend", "threads"],
                                                                              dropna=False):
            per_n = part.groupby("n_samples").agg(gram_s=("gram_s", "median"), iqr=("gram_iqr_s", "median"))
            label = f"{backend}, {int(threads)} thr" + (f" [{stage}]" if several else "")
            if by is not None and (stage, backend, n, threads) in by.index:
                fit = by.loc[(stage, backend, n, threads)]
                # one N (a threads run) has no slope: say so rather than print nan
                label += (f": slope {fit['slope']:.2f} [{fit['slope_min']:.2f}-{fit['slope_max']:.2f}]"
                          if pd.notna(fit["slope"]) else ": one N, no slope")
            half = (per_n["iqr"] / 2).fillna(0.0).to_numpy()
            # a bar never reaches below zero on the log axis
            low = np.minimum(half, per_n["gram_s"].to_numpy() * 0.999)
            ax.errorbar(per_n.index, per_n["gram_s"], yerr=[low, half], marker="o", capsize=3, label=label)
        ax.set(xscale="log", yscale="log", xlabel="N (states)", ylabel="Gram time (s), median and IQR",
               title=f"n = {n} qubits")
        ax.legend(fontsize=7, title="slope [local range]")
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
