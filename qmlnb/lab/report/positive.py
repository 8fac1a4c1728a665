"""The positive control in the report: do the controls detect a quantum advantage where one exists?

The ``positive-control`` task (:mod:`qmlnb.lab.tasks.positive_control`, params/66-positive-control.yaml)
scores each quantum kernel (fidelity, projected) beside its RBF control on the data's real labels and on
labels engineered so that the quantum kernel must win, seed by seed.  Here:

- :func:`positive_rows`: the runs' per-seed rows, stacked;
- :func:`positive_long` / :func:`positive_comparisons`: quantum against RBF, paired over seeds per
  (dataset, classes, kernel, labels, inputs) with :func:`.controls.compare_models` (reference
  ``quantum``); the runs of several split seeds pool their seeds, so the interval covers the split too.
  The report corrects these with its other comparisons (:func:`.verdicts.comparison_family`);
- :func:`positive_sentences`: per kernel, "on engineered labels the controls detect the advantage
  (+x [a, b]); on the real labels they find none", and, when the engineered interval does not exclude 0
  in the quantum kernel's favour, a loud :data:`BROKEN` sentence: the controls cannot say yes.
"""
from __future__ import annotations

import math

import pandas as pd

from .. import stages
from ..tasks import positive_control as task
from . import controls

REFERENCE, CONTROL = task.MODELS  # "quantum", "rbf"
SETTING = ("kernel", "labels", "n", "n_qubits", "bandwidth")  # what tells two comparisons apart (not the split)
BROKEN = "THE CONTROLS ARE BROKEN"


def positive_rows(runs_dir, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``positive_control.csv`` rows of every complete positive-control run (one per labels, kernel, seed)."""
    from .load import task_tables

    return task_tables(runs_dir, stages.POSITIVE_CONTROL, stages.POSITIVE_CONTROL_TABLE, frame)


def _setting(row) -> str:
    parts = []
    for key in SETTING:
        value = row[key]
        parts.append(f"{key}={int(value) if isinstance(value, float) and value.is_integer() else value}")
    return ", ".join(parts)


def positive_long(rows: pd.DataFrame, score: str = controls.SCORE) -> pd.DataFrame:
    """One row per (row of :func:`positive_rows`, model): :data:`.controls.TASK_COLUMNS`, model ("quantum",
    "rbf"), seed, score and degenerate, as :func:`.controls.compare_models` takes them.  A seed of split seed
    s is the pair (s, seed): the runs of several splits pool as distinct repeats of one comparison."""
    columns = [*controls.TASK_COLUMNS, "seed", "model", "score", "degenerate"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    task_part = pd.DataFrame({"stage": rows.get("stage", pd.Series("", index=rows.index)).fillna("").astype(str),
                              "dataset": rows["dataset"].astype(str), "classes": rows["classes"].astype(str),
                              "setting": [_setting(r) for _, r in rows.iterrows()],
                              "seed": [f"{int(s)}:{int(seed)}" for s, seed in zip(rows["split_seed"], rows["seed"])]})
    parts = []
    for model in task.MODELS:
        part = task_part.copy()
        part["model"] = model
        part["score"] = pd.to_numeric(rows[f"{model}_{score}"], errors="coerce")
        part["degenerate"] = rows[f"{model}_degenerate"].astype(bool)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)[columns]


def positive_comparisons(rows: pd.DataFrame, score: str = controls.SCORE) -> pd.DataFrame:
    """quantum − RBF per comparison (:func:`.controls.compare_models` rows, reference "quantum"), with the
    comparison's ``kernel``, ``labels``, ``g`` (mean over its runs) and ``n_train`` beside them."""
    long = positive_long(rows, score)
    table = controls.compare_models(long, REFERENCE, order=task.MODELS)
    if table.empty:
        return table
    setting = pd.Series([_setting(r) for _, r in rows.iterrows()], index=rows.index)
    by_setting = rows.assign(setting=setting).groupby("setting")
    table["kernel"] = table["setting"].map(by_setting["kernel"].first())
    table["labels"] = table["setting"].map(by_setting["labels"].first())
    table["g"] = table["setting"].map(by_setting["g"].mean())
    table["n_train"] = table["setting"].map(by_setting["n_train"].max())
    return table


def _interval(row: pd.Series) -> str:
    number = controls._number
    if bool(row.get("identical", False)) or pd.isna(row["ci_low"]):
        return f"{number(row['reference_minus_model'])} (no interval)"
    return f"{number(row['reference_minus_model'])} [{number(row['ci_low'])}, {number(row['ci_high'])}]"


def positive_sentences(table: pd.DataFrame) -> list[str]:
    """Per (dataset, classes, kernel, inputs) of :func:`positive_comparisons` rows (corrected by the report's
    family): one sentence on both labellings.  The engineered labels must show the quantum kernel better beyond
    noise; where their interval does not exclude 0 (or is missing), the sentence starts with :data:`BROKEN`."""
    compared = table[(table["model"] == CONTROL)] if not table.empty else table
    if compared.empty:
        return []
    compared = compared.assign(inputs=compared["setting"].str.replace(r"labels=\w+, ", "", regex=True))
    out = []
    for (stage, dataset, classes, inputs), group in compared.groupby(["stage", "dataset", "classes", "inputs"],
                                                                    sort=True):
        by_labels = {r["labels"]: r for _, r in group.iterrows()}
        first = group.iloc[0]
        label = (f"{dataset} {classes}, {first['kernel']} kernel ({inputs.split(', ', 1)[1]}; "
                 f"g = {first['g']:.3g}, sqrt(N) = {math.sqrt(first['n_train']):.3g})")
        parts = []
        engineered = by_labels.get("engineered")
        if engineered is None:
            parts.append(f"{BROKEN}: no engineered labels were scored, so nothing shows the controls can detect an "
                         "advantage")
        elif pd.notna(engineered["ci_low"]) and engineered["ci_low"] > 0:
            short = ("" if engineered["verdict"] == f"{REFERENCE} better" else
                     f", though no verdict yet: {engineered['verdict']}")
            parts.append(f"on engineered labels the controls detect the advantage ({REFERENCE} − {CONTROL} = "
                         f"{_interval(engineered)}, {int(engineered['pairs'])} paired seeds, Holm-corrected{short})")
        else:
            parts.append(f"{BROKEN}: on labels engineered so that the quantum kernel must win, {REFERENCE} − "
                         f"{CONTROL} = {_interval(engineered)} over {int(engineered['pairs'])} paired seeds does not "
                         "exclude 0 in its favour (" + engineered["verdict"] + "); a comparison that cannot find "
                         "this advantage proves nothing on the real labels: a bug in the controls, not a finding")
        natural = by_labels.get("natural")
        if natural is not None:
            if natural["verdict"] == f"{REFERENCE} better":
                parts.append(f"on the real labels they find one too ({_interval(natural)})")
            else:
                parts.append(f"on the real labels they find none ({REFERENCE} − {CONTROL} = {_interval(natural)}: "
                             f"{natural['verdict']})")
        text = "; ".join(parts)
        out.append(f"{label}: {text[0].upper()}{text[1:]}.")
    return out


def broken(table: pd.DataFrame) -> bool:
    """Whether some positive control failed: a sentence of :func:`positive_sentences` starts with :data:`BROKEN`."""
    return any(BROKEN in line for line in positive_sentences(table))
