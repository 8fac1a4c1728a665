"""The report's "Kernels at scale": the quantum-kernel SVM beside an RBF SVM against the number of qubits.

Each run of the ``kernels-at-scale`` task (``tasks.kernels_at_scale``, notebook
40-kernels-at-scale.ipynb) writes one ``scale.csv`` row per qubit count n: both
models' test scores on the same features and split, the training Gram's
diagnostics, the simulation method and the Gram time.  Here:

- :func:`scale_rows` stacks those rows of every complete run;
- :func:`scale_summary` pools them over seeds only (a row is one setting and
  one n): QSVM and RBF balanced accuracy mean ± std (n seeds), the paired
  difference QSVM - RBF with its interval (:func:`qmlnb.stats.paired_difference`:
  the two models of one seed saw the same training images; Holm-corrected,
  :func:`.controls.correct`: within the section alone, across the report's
  comparisons once :func:`.verdicts.comparison_family` joins it), the method, the
  diagnostics (mean ± std over seeds), the chosen bandwidths, the smallest
  bandwidth of the grid searched and the flags raised; the ``bandwidth_rule``
  (which grid the task searched) is part of the setting;
- :func:`scale_sentences` says per setting whether the quantum kernel beats,
  matches (within noise) or loses to the RBF SVM, and at which n;
- :func:`plot_scale` draws accuracy, off-diagonal std and Gaussian correlation against n.
"""
from __future__ import annotations

import math
import os
import textwrap

import numpy as np
import pandas as pd

from ... import stats
from .. import stages
from .controls import SAME_EVERY_SEED, correct, verdict

CONFIDENCE = 0.95
QUANTUM, CLASSICAL = "QSVM", "RBF"
# what tells two settings apart: a summary row pools runs that differ in nothing else but the seed
GROUP = ("stage", "dataset", "classes", "features")
SETTING = ("n_train", "n_test", "reps", "method_requested", "bandwidth_rule", "backend", "threads", "split_seed")
# runs recorded before the task had a bandwidth_rule searched DEFAULT_BANDWIDTHS at every n
LEGACY_BANDWIDTH_RULE = "default"
FLAGS = {"concentrated": "concentrated", "gaussian_like": "Gaussian-like",
         "bandwidth_at_grid_edge": "bandwidth at its grid's edge"}
SUMMARY_COLUMNS = [*GROUP, *SETTING, "n_qubits", "method", "n", "qsvm", "qsvm_std", "rbf", "rbf_std", "difference",
                   "ci_low", "ci_high", "level", "verdict", "off_diagonal_std", "off_diagonal_std_std",
                   "gaussian_correlation", "gaussian_correlation_std", "bandwidth", "bandwidth_grid_min",
                   "rbf_gamma_factor", "flags", "gram_s", "projected", "projected_std", "g_fidelity", "g_projected"]
# what the report-wide Holm correction (controls.correct) reads and writes besides the shown columns
TEST_COLUMNS = ["p_value", "p_holm", "std_difference", "identical"]


def scale_rows(runs_dir: str | os.PathLike, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every complete ``kernels-at-scale`` run's ``scale.csv`` rows, stacked, with the run's grid, run and stage."""
    from .load import task_tables

    return task_tables(runs_dir, stages.SCALE, stages.SCALE_TABLE, frame)


def _joined(values, fmt="{:g}") -> str:
    """Distinct values, sorted, as "a, b" (what a setting's seeds chose); equal once formatted counts once
    (a gamma factor read back as gamma * median is 1.0000000000000002 on one seed and 1.0 on another)."""
    present = [v for v in values if isinstance(v, str) or not pd.isna(v)]
    order = sorted(present, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))
    return ", ".join(dict.fromkeys(v if isinstance(v, str) else fmt.format(v) for v in order))


def _raised(value) -> bool:
    """A flag read back from CSV: True, "True" or 1 (None / NaN: not raised, e.g. no bandwidth grid)."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return isinstance(value, (bool, np.bool_, int, float, np.number)) and not pd.isna(value) and bool(value)


def _flags(group: pd.DataFrame) -> str:
    """The diagnostic flags raised in a setting's runs, as "Gaussian-like (3 of 3 runs)"; "" when none."""
    parts = []
    for column, label in FLAGS.items():
        if column in group:
            raised = sum(_raised(v) for v in group[column])
            if raised:
                parts.append(f"{label} ({raised} of {len(group)} runs)")
    return "; ".join(parts)


def _std(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def scale_summary(rows: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per setting and qubit count, pooled over seeds: :data:`SUMMARY_COLUMNS`.

    rows : :func:`scale_rows` (or one run's ``scale`` table).  Runs of one
    setting (:data:`GROUP`, :data:`SETTING`) and one n pair up seed by seed
    (a seed run twice counts once, averaged).  ``qsvm`` / ``rbf``: mean
    balanced accuracy with ``_std`` (ddof 1) over ``n`` seeds; ``difference``:
    mean of QSVM - RBF per seed, ``ci_low`` / ``ci_high`` its Student's t
    interval at ``level``, Holm-corrected across the summary's rows at the
    family-wise ``confidence`` (NaN for one seed), ``verdict`` in words; ``method``: the
    simulation(s) used; the diagnostics as mean and ``_std``; ``bandwidth`` and
    ``rbf_gamma_factor``: the values chosen (distinct, joined);
    ``bandwidth_grid_min``: the smallest value of the bandwidth grid searched
    (``bandwidth_rule`` sets the grid per n), the edge a bandwidth flagged "at
    its grid's edge" usually sits on; ``flags``: the
    diagnostic flags raised and in how many seeds; ``gram_s``: median seconds
    of the training Grams over the bandwidth grid; ``projected`` (with ``_std``): the projected quantum
    kernel's mean balanced accuracy where the runs scored it (``projected=True``); ``g_fidelity`` /
    ``g_projected``: the mean geometric difference of each quantum kernel against the RBF's Gram.
    """
    if rows.empty:
        return pd.DataFrame(columns=[*SUMMARY_COLUMNS, *TEST_COLUMNS])
    rows = rows.copy()
    rule = rows["bandwidth_rule"] if "bandwidth_rule" in rows else pd.Series(np.nan, index=rows.index)
    rows["bandwidth_rule"] = rule.astype(object).fillna(LEGACY_BANDWIDTH_RULE)
    for column in (*GROUP, *SETTING):
        if column not in rows:
            rows[column] = "" if column in GROUP else np.nan
    rows[list(GROUP)] = rows[list(GROUP)].fillna("").astype(str)
    keys = [*GROUP, *SETTING, "n_qubits"]
    out = []
    for key, group in rows.groupby(keys, sort=True, dropna=False):
        per_seed = group.groupby("seed")[["qsvm_balanced_accuracy", "rbf_balanced_accuracy"]].mean()
        d = stats.paired_difference(per_seed["qsvm_balanced_accuracy"].to_numpy(),
                                    per_seed["rbf_balanced_accuracy"].to_numpy(), confidence)
        row = dict(zip(keys, key))
        row |= {"method": _joined(group["method"]), "n": d["n"],
                "qsvm": d["mean_a"], "qsvm_std": d["std_a"], "rbf": d["mean_b"], "rbf_std": d["std_b"],
                "difference": d["mean_difference"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                "verdict": verdict(d, QUANTUM, CLASSICAL), "p_value": d["p_value"], "identical": d["identical"],
                "std_difference": d["std_difference"]}
        for column in ("off_diagonal_std", "gaussian_correlation"):
            values = pd.to_numeric(group.get(column, pd.Series(dtype=float)), errors="coerce")
            row[column], row[f"{column}_std"] = float(values.mean()), _std(values)
        row["bandwidth"] = _joined(group.get("bandwidth", []))
        row["bandwidth_grid_min"] = _joined(group.get("bandwidth_grid_min", []))  # recorded by the task
        row["rbf_gamma_factor"] = _joined(group.get("rbf_gamma_factor", []))
        row["flags"] = _flags(group)
        row["gram_s"] = float(pd.to_numeric(group.get("gram_s", pd.Series(dtype=float)), errors="coerce").median())
        # the third kernel (runs with projected=True) and each quantum kernel's geometric difference to the RBF
        for column, name in (("projected_balanced_accuracy", "projected"), ("g_fidelity", "g_fidelity"),
                             ("g_projected", "g_projected")):
            values = pd.to_numeric(group.get(column, pd.Series(dtype=float)), errors="coerce")
            row[name] = float(values.mean()) if values.notna().any() else np.nan
            if name == "projected":
                row["projected_std"] = _std(values)
        out.append(row)
    out = pd.DataFrame(out, columns=[*SUMMARY_COLUMNS, *TEST_COLUMNS])
    # alone, the section's comparisons are one family; the report corrects them with all of its others
    # (verdicts.comparison_family, through corrected())
    return corrected(out, correct([comparisons(out)], [QUANTUM], alpha=1 - confidence)[0])


def comparisons(summary: pd.DataFrame) -> pd.DataFrame:
    """A :func:`scale_summary`'s rows as :func:`.controls.correct` reads a comparison table (QSVM − RBF per row)."""
    return summary.rename(columns={"difference": "reference_minus_model", "n": "pairs"}).assign(model=CLASSICAL)


def corrected(summary: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with the corrected p value, interval level, interval and verdict of :func:`comparisons`'
    table after :func:`.controls.correct` (row for row)."""
    if len(summary) != len(table):
        raise ValueError(f"one corrected row per summary row: got {len(table)} for {len(summary)}")
    out = summary.copy()
    for column in ("p_holm", "level", "ci_low", "ci_high", "verdict"):
        out[column] = table[column].to_numpy()
    return out


def _label(key: tuple) -> str:
    """A setting as "fashion-mnist 3 vs 8, pca features (n_train=150, ...) [stage]"."""
    values = dict(zip((*GROUP, *SETTING), key))
    setting = ", ".join(f"{k}={int(v) if isinstance(v, float) and v.is_integer() else v}"
                        for k, v in values.items() if k in SETTING and not (isinstance(v, float) and math.isnan(v)))
    head = f"{values['dataset']} {values['classes']}".strip() + f", {values['features']} features"
    return head + (f" ({setting})" if setting else "") + (f" [{values['stage']}]" if values["stage"] else "")


def settings(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, its rows sorted by n) for each setting of a :func:`scale_summary`."""
    if summary.empty:
        return []
    return [(_label(key), group.sort_values("n_qubits").reset_index(drop=True))
            for key, group in summary.groupby([*GROUP, *SETTING], sort=True, dropna=False)]


def display_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One setting's summary rows without the columns that name the setting (they are its heading), nor the
    projected kernel's and g's where no run recorded them."""
    unrecorded = [c for c in ("projected", "projected_std", "g_fidelity", "g_projected")
                  if c in rows and rows[c].isna().all()]
    return rows.drop(columns=[*GROUP, *SETTING, *(c for c in TEST_COLUMNS if c in rows), *unrecorded]).rename(columns={
        "n_qubits": "qubits", "qsvm": f"{QUANTUM} bal. acc.", "qsvm_std": f"{QUANTUM} bal. acc._std",
        "rbf": f"{CLASSICAL} bal. acc.", "rbf_std": f"{CLASSICAL} bal. acc._std",
        "difference": f"{QUANTUM} − {CLASSICAL}", "ci_low": "CI low (Holm)", "ci_high": "CI high (Holm)",
        "level": "CI level",
        "off_diagonal_std": "off-diag. std", "off_diagonal_std_std": "off-diag. std_std",
        "gaussian_correlation": "Gaussian corr.", "gaussian_correlation_std": "Gaussian corr._std",
        "bandwidth_grid_min": "grid's smallest bandwidth",
        "rbf_gamma_factor": "RBF gamma factor", "gram_s": "Gram s (median)",
        "projected": "projected QSVM bal. acc.", "projected_std": "projected QSVM bal. acc._std",
        "g_fidelity": "g (fidelity)", "g_projected": "g (projected)"})


def _qubit_list(values) -> str:
    values = [int(v) for v in values]
    return ", ".join(str(v) for v in values[:-1]) + (" and " if len(values) > 1 else "") + str(values[-1])


def outcome(rows: pd.DataFrame) -> str:
    """One setting's rows in one word: "beats", "loses to", "matches", "mixed" or "undecided" (no interval)."""
    decided = rows[rows["ci_low"].notna()]
    if decided.empty:
        return "undecided"
    wins = (decided["verdict"] == f"{QUANTUM} better").any()
    losses = (decided["verdict"] == f"{CLASSICAL} better").any()
    return "mixed" if wins and losses else "beats" if wins else "loses to" if losses else "matches"


def scale_sentences(summary: pd.DataFrame) -> dict[str, str]:
    """Per setting, one sentence: does the quantum kernel beat, match (within noise) or lose to the RBF SVM?

    The verdict at each n is the paired interval of QSVM - RBF balanced
    accuracy over seeds, Holm-corrected with the family the summary was
    corrected in (the report's comparisons): it excludes 0 (better or worse
    beyond noise, with at least 5 seeds) or not (within noise); one seed
    gives no interval and no verdict.
    """
    out = {}
    for label, rows in settings(summary):
        at = {v: rows.loc[rows["verdict"] == v, "n_qubits"] for v in rows["verdict"].unique()}
        parts = []
        for verdict_text, words in ((f"{QUANTUM} better", "beats the RBF SVM beyond noise"),
                                    ("no measurable difference", "matches it within noise"),
                                    (SAME_EVERY_SEED, "gives the same difference in every seed"),
                                    (f"too few seeds (under {stats.MIN_PAIRS})",
                                     f"has too few seeds (under {stats.MIN_PAIRS}) for a verdict"),
                                    (f"{CLASSICAL} better", "loses to it beyond noise")):
            if verdict_text in at:
                parts.append(f"{words} at n = {_qubit_list(at[verdict_text])}")
        undecided = rows.loc[rows["ci_low"].isna(), "n_qubits"]
        seeds = f"{int(rows['n'].min())}" + ("" if rows["n"].nunique() == 1 else f" to {int(rows['n'].max())}")
        kind = outcome(rows)
        if kind == "undecided":
            sentence = (f"One seed per qubit count (n = {_qubit_list(undecided)}): no interval, so nothing can be "
                        "concluded about the quantum kernel against the RBF SVM (run more seeds).")
        else:
            lead = {"beats": "The quantum kernel beats the RBF SVM", "loses to": "The quantum kernel loses to the RBF SVM",
                    "matches": "The quantum kernel matches the RBF SVM within noise",
                    "mixed": "Mixed: the quantum kernel neither beats nor loses to the RBF SVM everywhere"}[kind]
            sentence = (f"{lead}: it " + "; it ".join(parts) +
                        f" (balanced accuracy, QSVM − RBF paired over {seeds} seeds, Holm-corrected interval).")
            if len(undecided):
                sentence += f" At n = {_qubit_list(undecided)} one seed only: no interval."
        out[label] = sentence
    return out


def plot_scale(summary: pd.DataFrame):
    """Per setting (a column of panels), against qubits on a log axis: balanced accuracy of QSVM and RBF,
    the off-diagonal std of the QSVM's training Gram and its correlation with the best Gaussian; error bars
    are the std over seeds (none for one seed).  Dashed lines: the diagnostics' thresholds."""
    import matplotlib.pyplot as plt

    from ...qsvm.diagnostics import CONCENTRATION_STD, GAUSSIAN_CORRELATION

    groups = settings(summary)
    fig, axes = plt.subplots(3, max(1, len(groups)), figsize=(4.6 * max(1, len(groups)), 9), squeeze=False,
                             layout="constrained")

    def errorbar(ax, rows, column, **style):
        std = rows[f"{column}_std"]
        # a single seed has no std: NaN draws no bar there (rather than a bar of 0)
        ax.errorbar(rows["n_qubits"], rows[column], yerr=std.to_numpy(dtype=float) if std.notna().any() else None,
                    marker="o", capsize=3, **style)

    for col, (label, rows) in enumerate(groups):
        top, middle, bottom = axes[:, col]
        errorbar(top, rows, "qsvm", label=QUANTUM)
        errorbar(top, rows, "rbf", label=CLASSICAL, linestyle="--")
        # the whole label (two settings may differ only in their training size), wrapped to the panel
        top.set_title(textwrap.fill(label, 48), fontsize=9)
        top.set(ylabel="test balanced accuracy")
        top.legend(fontsize=8)
        errorbar(middle, rows, "off_diagonal_std")
        middle.axhline(CONCENTRATION_STD, color="red", linestyle=":", label=f"concentrated below {CONCENTRATION_STD}")
        middle.set(yscale="log", ylabel="off-diagonal std (QSVM Gram)")
        middle.legend(fontsize=8)
        errorbar(bottom, rows, "gaussian_correlation")
        bottom.axhline(GAUSSIAN_CORRELATION, color="red", linestyle=":",
                       label=f"Gaussian-like above {GAUSSIAN_CORRELATION}")
        bottom.set(ylabel="correlation with best Gaussian", xlabel="qubits (n)")
        bottom.legend(fontsize=8)
        for ax in (top, middle, bottom):
            ax.set_xscale("log")
            ax.set_xticks(rows["n_qubits"].tolist(), [str(int(n)) for n in rows["n_qubits"]])
            ax.minorticks_off()
    return fig
