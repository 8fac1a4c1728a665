"""The report's "Shots": the quantum-kernel SVM on the kernel a device would estimate, against shots and noise.

Each run of the ``shots`` task (``qmlnb.lab.tasks.shots_study``, notebook
45-shots.ipynb) writes one ``shots.csv`` row per (qubits, depolarising rate,
shots).  Here:

- :func:`shots_rows` stacks those rows of every complete run;
- :func:`shots_summary` pools them over seeds only (a row is one setting, n,
  rate and shot count): the QSVM's balanced accuracy on the estimated kernel,
  mean ± std (n seeds), the paired difference to the exact kernel's QSVM of the
  same seed with its 95% interval (:func:`qmlnb.stats.paired_difference`), the
  exact and RBF accuracies, the relative kernel error, the fraction of entries
  estimated as 0, the PSD repair's size and the concentration's prediction
  1 / Var(off-diagonal);
- :func:`shots_needed` finds, per setting, n and rate, the smallest shot count
  from which on the QSVM reaches its exact-kernel accuracy within noise (every
  larger count's interval reaches 0), and :func:`shots_sentences` says it;
- :func:`plot_shots` draws accuracy, kernel error and the zero fraction against
  shots with the exact and RBF levels and the predicted shots;
- :func:`show_section` does all of it for the summary notebook in one call.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from ... import stats
from .. import stages

CONFIDENCE = 0.95
GROUP = ("stage", "dataset", "classes")
SETTING = ("n_train", "n_test", "reps", "estimator", "mitigate", "psd", "readout", "backend", "split_seed")
POINT = ("n_qubits", "depolarising", "shots")
MEANS = ("exact_balanced_accuracy", "rbf_balanced_accuracy", "kernel_error_rel", "fraction_zero",
         "psd_relative_change", "predicted_shots")


def shots_rows(runs_dir: str | os.PathLike, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every complete ``shots`` run's ``shots.csv`` rows, stacked, with the run's grid, run and stage."""
    from .load import task_tables

    return task_tables(runs_dir, stages.SHOTS, stages.SHOTS_TABLE, frame)


def _keys(rows: pd.DataFrame, names) -> list[str]:
    return [c for c in names if c in rows.columns]


def shots_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, n_qubits, depolarising, shots), pooled over seeds (see the module docstring)."""
    if rows.empty:
        return pd.DataFrame()
    rows = rows.copy()
    if "stage" not in rows.columns:  # a single run's own table (the notebook)
        rows["stage"] = stages.SHOTS_STAGE
    keys = _keys(rows, GROUP) + _keys(rows, SETTING) + list(POINT)
    out = []
    for key, group in rows.groupby(keys, sort=True, dropna=False):
        group = group.sort_values("seed")
        d = stats.paired_difference(group["qsvm_balanced_accuracy"], group["exact_balanced_accuracy"], CONFIDENCE)
        record = dict(zip(keys, key))
        record |= {"n": d["n"], "qsvm": d["mean_a"], "qsvm_std": d["std_a"],
                   "difference_vs_exact": d["mean_difference"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]}
        record |= {name: float(group[name].mean()) for name in MEANS if name in group}
        out.append(record)
    return pd.DataFrame(out)


def _reached(row) -> bool:
    """The QSVM at this shot count is at its exact-kernel accuracy within noise (interval reaches 0)."""
    high = row["ci_high"]
    return bool(row["difference_vs_exact"] >= 0) if pd.isna(high) else bool(high >= 0)


def shots_needed(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, n_qubits, depolarising): the smallest shots from which every larger count is reached.

    Columns: the keys, ``shots_needed`` (NaN when even the largest count
    falls short), ``largest_shots``, ``predicted_shots`` (1 / off-diagonal
    variance of the exact training Gram, mean over seeds) and ``n`` (seeds).
    """
    if summary.empty:
        return pd.DataFrame()
    keys = [c for c in summary.columns if c in (*GROUP, *SETTING)] + ["n_qubits", "depolarising"]
    out = []
    for key, group in summary.groupby(keys, sort=True, dropna=False):
        group = group.sort_values("shots")
        reached = [_reached(r) for _, r in group.iterrows()]
        needed = math.nan
        for shots, ok in zip(reversed(group["shots"].tolist()), reversed(reached)):
            if not ok:
                break
            needed = shots
        out.append({**dict(zip(keys, key)), "shots_needed": needed, "largest_shots": int(group["shots"].max()),
                    "predicted_shots": float(group["predicted_shots"].mean()), "n": int(group["n"].min())})
    return pd.DataFrame(out)


def shots_sentences(needed: pd.DataFrame) -> list[str]:
    """One sentence per (dataset, n, rate): the smallest shot count at the exact-kernel accuracy within noise."""
    lines = []
    for _, r in needed.iterrows():
        where = f"{r['dataset']} ({r['classes']}), {r['n_qubits']} qubits, depolarising {r['depolarising']:g} per layer"
        predicted = f"the concentration predicts about {r['predicted_shots']:,.0f} (1 / Var of the off-diagonal)"
        if pd.isna(r["shots_needed"]):
            lines.append(f"{where}: the QSVM stays below its exact-kernel accuracy up to {r['largest_shots']:,} shots "
                         f"({r['n']} seeds); {predicted}.")
        else:
            lines.append(f"{where}: the QSVM reaches its exact-kernel accuracy within noise from "
                         f"{int(r['shots_needed']):,} shots on ({r['n']} seeds, 95% interval of the paired "
                         f"difference); {predicted}.")
    return lines


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as shown: accuracy mean ± std, the paired difference with its interval, the diagnostics."""
    from .present import mean_std

    shown = summary[[c for c in ("dataset", "classes", "n_qubits", "depolarising", "shots", "n") if c in summary]].copy()
    shown["QSVM (estimated kernel)"] = [mean_std(m, s) for m, s in zip(summary["qsvm"], summary["qsvm_std"])]
    shown["− exact [95% CI]"] = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not pd.isna(lo) else f"{d:+.3f}"
                                 for d, lo, hi in zip(summary["difference_vs_exact"], summary["ci_low"],
                                                      summary["ci_high"])]
    for name, label in (("exact_balanced_accuracy", "exact QSVM"), ("rbf_balanced_accuracy", "RBF"),
                        ("kernel_error_rel", "‖K̂ − K‖/‖K‖"), ("fraction_zero", "entries = 0"),
                        ("psd_relative_change", "PSD repair")):
        shown[label] = summary[name].map(lambda v: f"{v:.3g}")
    return shown


def plot_shots(summary: pd.DataFrame):
    """Per qubit count: balanced accuracy (top), relative kernel error and zero fraction (bottom) against shots.

    Lines per depolarising rate (mean over seeds, accuracy with its std);
    the exact kernel's QSVM (dashed) and the RBF SVM (dotted) as levels; the
    concentration's predicted shots 1 / Var(off-diagonal) as a vertical line.
    """
    import matplotlib.pyplot as plt

    qubits = sorted(summary["n_qubits"].unique())
    fig, axes = plt.subplots(2, len(qubits), figsize=(4.2 * len(qubits), 6.4), squeeze=False, sharex=True)
    for col, n in enumerate(qubits):
        part = summary[summary["n_qubits"] == n]
        top, bottom = axes[0, col], axes[1, col]
        for rate, rows in part.groupby("depolarising"):
            rows = rows.groupby("shots", as_index=False).mean(numeric_only=True).sort_values("shots")
            top.errorbar(rows["shots"], rows["qsvm"], yerr=rows["qsvm_std"].fillna(0), marker="o", capsize=2,
                         label=f"depolarising {rate:g}")
            line, = bottom.plot(rows["shots"], rows["kernel_error_rel"], marker="o", label=f"error, p={rate:g}")
            bottom.plot(rows["shots"], rows["fraction_zero"], ls="--", color=line.get_color(),
                        label=f"zero fraction, p={rate:g}")
        top.axhline(part["exact_balanced_accuracy"].mean(), color="k", ls="--", lw=1, label="exact kernel")
        top.axhline(part["rbf_balanced_accuracy"].mean(), color="grey", ls=":", lw=1.5, label="RBF")
        predicted = part["predicted_shots"].mean()
        for ax in (top, bottom):
            if np.isfinite(predicted) and predicted > 0:
                ax.axvline(predicted, color="tab:red", lw=1, alpha=0.6, label="1 / Var(off-diagonal)")
            ax.set_xscale("log")
        top.set(title=f"{n} qubits", ylabel="balanced accuracy (mean ± std)")
        bottom.set(xlabel="shots", ylabel="relative error / fraction", yscale="log")
    axes[0, -1].legend(fontsize=7)
    axes[1, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def show_section(runs_dir, frame, reports_dir) -> None:
    """The summary notebook's "Shots" section: tables (saved as CSV), sentences and the figure (saved as PNG)."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML, Markdown, display

    from .plots import save_figure
    from .present import to_html
    from .tables import save_table

    summary = shots_summary(shots_rows(runs_dir, frame))
    if summary.empty:
        display(Markdown("*No shots runs yet (`params/62-shots.yaml`).*"))
        return
    needed = shots_needed(summary)
    save_table(summary, reports_dir, "shots")
    save_table(needed, reports_dir, "shots_needed")
    display(Markdown("\n".join(f"- {line}" for line in shots_sentences(needed))))
    display(HTML(to_html(display_table(summary))))
    fig = plot_shots(summary)
    save_figure(fig, reports_dir, "shots")
    plt.show()
