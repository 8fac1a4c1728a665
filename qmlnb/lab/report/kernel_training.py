"""The report's "Kernels that learn": the QSVM on a trained feature map beside its controls, paired by seed.

Each run of the ``kernel-training`` task (``qmlnb.lab.tasks.kernel_training_run``,
notebook 60-kernel-training.ipynb) trains once per seed of its ``seeds``:
``kernel_training.csv`` holds one row per (seed, model) (trained, untrained,
rbf, projected), ``history.csv`` one row per (seed, Adam step).  Every row
carries its seed, so runs recorded with one ``seed`` each (before the task
took ``seeds``) read alike, and a seed recorded twice is averaged as a repeat
(:func:`.controls.compare_models`).  Here:

- :func:`comparisons`: per setting (dataset, classes, circuit, loss, budget),
  the trained kernel's balanced accuracy minus each control's, paired by seed
  (:func:`.controls.compare_models`); the report corrects these with its
  other comparisons as one Holm family (:func:`.verdicts.comparison_family`);
- :func:`alignment_table`: the centred kernel-target alignment of each model's
  training Gram, mean over seeds, before (untrained) and after (trained)
  training: its own table, since a higher alignment is not a higher accuracy;
- :func:`sentences`: one sentence per control on whether training helped
  beyond noise;
- :func:`plot_alignment_curve`: the batch alignment (or SVC loss) per step,
  mean and range over seeds, from ``history.csv``;
- :func:`show_section` does all of it for the summary notebook in one call.
"""
from __future__ import annotations

import os

import pandas as pd

from .. import stages
from ..tasks import kernel_training as task
from . import controls

REFERENCE = "trained"
ORDER = task.MODELS
# what makes two runs the same experiment (their seeds pair); the task's setting minus dataset and classes
SETTING = tuple(k for k in task.SETTING if k not in ("dataset", "classes"))


def rows(runs_dir: str | os.PathLike, frame: pd.DataFrame | None = None, name: str = stages.KERNEL_TRAINING_TABLE):
    """Every complete ``kernel-training`` run's ``<name>.csv`` rows, stacked, with the run's grid, run and stage."""
    from .load import task_tables

    return task_tables(runs_dir, stages.KERNEL_TRAINING, name, frame)


def _setting(table: pd.DataFrame) -> pd.Series:
    keys = [k for k in SETTING if k in table.columns]
    return table[keys].astype(str).apply(lambda r: ", ".join(f"{k}={v}" for k, v in zip(keys, r)), axis=1)


def _with_task(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    if "stage" not in table.columns:  # a single run's own table (the notebook)
        table["stage"] = stages.KERNEL_TRAINING_STAGE
    table["setting"] = _setting(table)
    return table


def comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """The trained kernel against each control per task (:data:`.controls.TABLE_COLUMNS`), paired by seed;
    ``reference_minus_model`` is trained − control in balanced accuracy.  Alone, a table is its own Holm family."""
    if table.empty:
        return pd.DataFrame(columns=controls.TABLE_COLUMNS)
    table = _with_task(table)
    long = table[[*controls.TASK_COLUMNS, "model", "seed"]].assign(
        seed=table["seed"].astype(int), score=table[controls.SCORE].astype(float),
        degenerate=table["degenerate"].astype(bool))
    return controls.compare_models(long, REFERENCE, order=ORDER)


def alignment_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per task: the centred alignment of each model's training Gram (mean over seeds), the trained kernel's
    change (after − before) and the seeds; a column of its own beside the accuracy verdicts."""
    if table.empty:
        return pd.DataFrame()
    table = _with_task(table)
    wide = table.pivot_table(index=[*controls.TASK_COLUMNS, "seed"], columns="model", values="alignment")
    out = wide.groupby(level=list(controls.TASK_COLUMNS)).mean()
    out.columns = [f"alignment {m}" for m in out.columns]
    if {"trained", "untrained"} <= set(wide.columns):
        change = (wide["trained"] - wide["untrained"]).groupby(level=list(controls.TASK_COLUMNS))
        out["alignment after − before"] = change.mean()
        out["seeds with higher alignment"] = (wide["trained"] > wide["untrained"]).groupby(
            level=list(controls.TASK_COLUMNS)).sum().astype(int).astype(str) + "/" + change.size().astype(str)
    ordered = [f"alignment {m}" for m in ORDER if f"alignment {m}" in out.columns]
    return out[ordered + [c for c in out.columns if c not in ordered]].reset_index()


WHAT = {"untrained": "the same circuit at its initial parameters",
        "rbf": "the RBF SVM on the same features",
        "projected": "the projected kernel of the untrained states"}


def sentences(compared: pd.DataFrame) -> list[str]:
    """One sentence per task and control: did training help beyond noise (the corrected verdict)?"""
    lines = []
    for _, r in compared[compared["model"] != REFERENCE].iterrows():
        where = f"{r['dataset']} ({r['classes']}), {r['setting']}"
        against = f"the trained kernel against {WHAT.get(r['model'], r['model'])}"
        if pd.isna(r.get("reference_minus_model")):
            lines.append(f"{where}: {against}: {r['verdict']}.")
            continue
        interval = "" if pd.isna(r["ci_low"]) else (f", Holm-corrected {r['level']:.1%} interval "
                                                    f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
        if r["verdict"] == f"{REFERENCE} better":
            finding = "training helped beyond noise"
        elif r["verdict"] == f"{r['model']} better":
            finding = "the control is better beyond noise"
        else:
            finding = f"no difference beyond noise ({r['verdict']})"
        lines.append(f"{where}: {against}: {finding}: trained − control {r['reference_minus_model']:+.3f} in "
                     f"balanced accuracy{interval}, {int(r['pairs'])} paired seeds (won {int(r['wins'])}, "
                     f"lost {int(r['losses'])}).")
    return lines


def plot_alignment_curve(history: pd.DataFrame):
    """The training objective per step, mean over seeds with its range, one line per setting: the batch alignment
    with the alignment loss, the SVC dual objective with the SVC loss (``history.csv`` rows)."""
    import matplotlib.pyplot as plt

    history = _with_task(history) if "setting" not in history.columns else history
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for setting, part in history.groupby("setting", sort=True):
        column = "alignment" if "alignment" in part and part["alignment"].notna().any() else "objective"
        curve = part.groupby("step")[column].agg(["mean", "min", "max"])
        first = part.iloc[0]
        label = ", ".join(f"{first[k]}{unit}" for k, unit in (("dataset", ""), ("classes", ""), ("n_qubits", " qubits"),
                                                               ("layers", " layers"), ("loss", " loss")) if k in part)
        line, = ax.plot(curve.index, curve["mean"], label=f"{label} ({column})")
        ax.fill_between(curve.index, curve["min"], curve["max"], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="Adam step", ylabel="mini-batch objective\n(mean and range over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def show_section(runs_dir, frame, reports_dir, compared: pd.DataFrame) -> None:
    """The summary notebook's "Kernels that learn": sentences, the comparison table (``compared``: this section's
    rows of the report's corrected family), the alignment table and the curve; tables as CSV, the figure as PNG."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML, Markdown, display

    from .plots import save_figure
    from .present import to_html
    from .tables import save_table

    table = rows(runs_dir, frame)
    if table.empty:
        display(Markdown("*No kernel-training runs yet (`params/85-kernel-training.yaml`).*"))
        return
    display(Markdown("\n".join(f"- {line}" for line in sentences(compared))))
    save_table(compared, reports_dir, "kernel_training")
    display(HTML(to_html(compared)))
    alignment = alignment_table(table)
    save_table(alignment, reports_dir, "kernel_training_alignment")
    display(Markdown("Centred kernel-target alignment of each model's training Gram (mean over seeds): a higher "
                     "alignment is what the trainer maximises, not a higher test accuracy."))
    display(HTML(to_html(alignment)))
    history = rows(runs_dir, frame, stages.HISTORY)
    if not history.empty:
        fig = plot_alignment_curve(history)
        save_figure(fig, reports_dir, "kernel_training_curve")
        plt.show()
