"""The report's "What the controls show": each quantum model beside the classical models that would replace it.

Two kinds of comparison, both paired over seeds (:func:`qmlnb.stats.paired_difference`):

- **QCNN heads** (task ``qcnn``, e.g. the ``controls`` stage, params/65-controls.yaml): runs
  that differ only in ``head`` ("quantum", "frozen-quantum", "linear", "mlp",
  "cnn-linear") and ``seed``, on one task (dataset, classes, setting: training
  size, epochs, batch size, qubits, split seed, stage).  The runs of one seed
  pair up across heads (same split, same initial CNN weights).
- **QSVM and its baselines** (task ``qsvm``): each run scores the QSVM, the QCNN
  it embeds with, the classical CNN (``cnn``: the QCNN's network with a linear
  head, same trainer and budget) and every other baseline on one split, so the
  models of one run pair up; the runs of one task (stage, dataset, classes,
  training size, epochs, backend) give one pair per seed.

:func:`qcnn_controls` / :func:`qsvm_controls` give one row per (task, model):
n seeds, mean ± std, and (for every model but the reference) the reference's
paired difference ``reference - model`` with its 95% interval and a verdict in
words; :func:`control_sentences` says per task what the comparison shows.
:mod:`.kernel_diagnostics` shows the QSVM's training Gram as its model saw it.

Runs whose test predictions are all one class (``degenerate``) are counted
in each row's ``degenerate`` column and named in the sentences.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from ... import stats
from ...qcnn.model import HEADS
from ...qsvm.baselines import BASELINES
from .. import stages
from ..tasks import qcnn as qcnn_task, qsvm as qsvm_task
from .load import baseline_names

SCORE = "balanced_accuracy"
QCNN_REFERENCE = "quantum"
QSVM_REFERENCE = "qsvm"
CONFIDENCE = 0.95
# what tells two tasks apart (a row never pools two of them); "classes" and "setting" are built from these
QCNN_SETTING = ("n_train", "epochs", "batch_size", "n_qubits", "split_seed")
QSVM_SETTING = ("n_train", "epochs", "n_qubits", "backend")
TASK_COLUMNS = ("stage", "dataset", "classes", "setting")
TABLE_COLUMNS = [*TASK_COLUMNS, "model", "n", "mean", "std", "mean ± std", "degenerate", "reference_minus_model",
                 "ci_low", "ci_high", "pairs", "wins", "losses", "verdict", "std_difference", "identical", "p_value",
                 "p_holm", "level"]


# ---------------------------------------------------------------- helpers
def _column(frame: pd.DataFrame, name: str, default=np.nan) -> pd.Series:
    return frame[name] if name in frame else pd.Series(default, index=frame.index, dtype=object)


def _classes_label(value) -> str:
    """A run's classes (a list, or the JSON text of one from params) as "3 vs 8"; "" when absent."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, (list, tuple)):
        return " vs ".join(str(c) for c in value)
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _value(row: pd.Series, name: str):
    """``row[name]``, else the run's parameter ``param.<name>``, else NaN."""
    for key in (name, f"param.{name}"):
        if key in row and not (isinstance(row[key], float) and math.isnan(row[key])):
            return row[key]
    return np.nan


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _setting(row: pd.Series, keys) -> str:
    parts = []
    for key in keys:
        value = _value(row, key)
        if key == "split_seed" and not _given(row.get("param.split_seed")) and _given(value):
            value = "seed"  # no split seed asked for: each seed its own split, and the runs are still one task
        if not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{key}={int(value) if isinstance(value, float) and value.is_integer() else value}")
    return ", ".join(parts)


def _seed(row: pd.Series) -> int:
    value = _value(row, "seed")
    return 0 if isinstance(value, float) and math.isnan(value) else int(value)


def _flag(value) -> bool:
    return bool(value) if isinstance(value, (bool, np.bool_, int, np.integer)) else False


def _task_frame(runs: pd.DataFrame, setting_keys) -> pd.DataFrame:
    """stage, dataset, classes label and setting string of each run, as columns."""
    out = pd.DataFrame(index=runs.index)
    out["stage"] = _column(runs, "stage", "").fillna("").astype(str)
    out["dataset"] = _column(runs, "dataset", "").fillna("").astype(str)
    out["classes"] = [_classes_label(_value(row, "classes")) for _, row in runs.iterrows()]
    out["setting"] = [_setting(row, setting_keys) for _, row in runs.iterrows()]
    out["seed"] = [_seed(row) for _, row in runs.iterrows()]
    return out


# ---------------------------------------------------------------- the comparison
def verdict(difference: dict, reference: str, model: str, adjusted_p: float | None = None) -> str:
    """A :func:`qmlnb.stats.paired_difference` result (reference - model) in words (:func:`qmlnb.stats.judge`):
    "<reference> better" / "<model> better" (at least 5 paired seeds and a Holm-corrected interval without 0),
    "same difference in every seed", "too few seeds", "no measurable difference".  ``adjusted_p``: its p value
    after Holm's correction across the report's comparisons (:func:`correct`); None: the comparison alone."""
    if difference["n"] < 2:
        return "one paired seed: no interval"
    word = stats.judge(difference, difference["p_value"] if adjusted_p is None else adjusted_p)
    return {"better": f"{reference} better", "worse": f"{model} better", "identical": SAME_EVERY_SEED,
            "too few seeds": f"too few seeds (under {stats.MIN_PAIRS})"}.get(word, word)


SAME_EVERY_SEED = "same difference in every seed"


def correct(tables: list[pd.DataFrame], reference_of: list[str], alpha: float = stats.ALPHA) -> list[pd.DataFrame]:
    """The :func:`compare_models` tables with Holm's correction across all their comparisons together.

    Every comparison with a p value joins one family; each gets ``p_holm``,
    ``level`` (its corrected interval level), ``ci_low``/``ci_high`` recomputed
    at that level and its ``verdict`` from the corrected p.  ``reference_of``:
    each table's reference model.  Returns new tables (the inputs are not changed).
    """
    if len(tables) != len(reference_of):
        raise ValueError(f"one reference per table: got {len(tables)} tables and {len(reference_of)} references")
    tables = [t.copy() for t in tables]
    p = np.concatenate([pd.to_numeric(t["p_value"], errors="coerce").to_numpy(float) if len(t) else np.empty(0)
                        for t in tables])
    adjusted, level = stats.holm(p, alpha)
    start = 0
    for table, reference in zip(tables, reference_of):
        stop = start + len(table)
        table["p_holm"], table["level"] = adjusted[start:stop], level[start:stop]
        for i in table.index[table["p_value"].notna()]:
            row = table.loc[i]
            low, high = stats.t_interval(row["reference_minus_model"], row["std_difference"], int(row["pairs"]),
                                         row["level"])
            table.loc[i, ["ci_low", "ci_high"]] = [low, high]
            table.loc[i, "verdict"] = verdict({"n": int(row["pairs"]), "mean_difference": row["reference_minus_model"],
                                               "identical": bool(row["identical"]), "p_value": row["p_value"]},
                                              reference, row["model"], row["p_holm"])
        start = stop
    return tables


def compare_models(long: pd.DataFrame, reference: str, order=(), confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per task, each model's scores over seeds and the reference's paired difference to it.

    long : one row per (run, model): the :data:`TASK_COLUMNS`, ``model``,
        ``seed`` (int), ``score`` (float) and ``degenerate`` (bool).  Rows of one
        (task, model, seed) are averaged (a run repeated); a model's seeds pair
        with the reference's same seeds, and only those present for both count.
    reference : the model the others are compared with.
    order : models in the order of the rows (others follow, sorted).

    Returns a DataFrame with :data:`TABLE_COLUMNS`: ``n`` seeds, ``mean``,
    ``std`` (ddof 1; NaN for one seed), ``mean ± std`` as text, ``degenerate``
    (runs whose predictions are one class), ``reference_minus_model`` (mean
    paired difference: positive means the reference is better), ``ci_low``,
    ``ci_high`` (the ``confidence`` interval, Student's t), ``pairs``,
    ``wins`` / ``losses`` (of the reference) and ``verdict`` (:func:`verdict`).
    Tasks without the reference are left out.
    """
    if long.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    rank = {name: i for i, name in enumerate(order)}
    rows = []
    for task, group in long.groupby(list(TASK_COLUMNS), sort=True):
        per_seed = group.groupby(["model", "seed"])["score"].mean().unstack("seed")
        if reference not in per_seed.index:
            continue
        degenerate = group.groupby("model")["degenerate"].sum()
        models = sorted(per_seed.index, key=lambda m: (m != reference, rank.get(m, len(rank)), m))
        ref = per_seed.loc[reference]
        for model in models:
            scores = per_seed.loc[model].dropna()
            n = int(scores.size)
            std = float(scores.std(ddof=1)) if n > 1 else math.nan
            row = dict(zip(TASK_COLUMNS, task))
            row |= {"model": model, "n": n, "mean": float(scores.mean()), "std": std,
                    "mean ± std": f"{scores.mean():.3f} ± {std:.3f}" if n > 1 else f"{scores.mean():.3f}",
                    "degenerate": int(degenerate.get(model, 0))}
            if model != reference:
                both = pd.concat([ref, per_seed.loc[model]], axis=1).dropna()
                if len(both):
                    d = stats.paired_difference(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy(), confidence)
                    row |= {"reference_minus_model": d["mean_difference"], "ci_low": d["ci_low"],
                            "ci_high": d["ci_high"], "pairs": d["n"], "wins": d["wins"], "losses": d["losses"],
                            "std_difference": d["std_difference"], "identical": d["identical"],
                            "p_value": d["p_value"], "verdict": verdict(d, reference, model)}
                else:
                    row["verdict"] = "no seed in common with the reference"
            rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    # alone, a table is its own family; the report corrects all its comparisons together (:func:`correct`)
    return correct([table], [reference])[0] if len(table) else table


def qcnn_controls(frame: pd.DataFrame, score: str = SCORE, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The QCNN against its controls (runs that differ in ``head``), per task: :func:`compare_models` rows.

    A run that recorded no head is the QCNN ("quantum"); tasks whose runs all
    have one head (no control was run) are left out.
    """
    from .load import select_task

    runs = select_task(frame, stages.QCNN)
    column = qcnn_task.SCORES.join(score)
    if runs.empty or column not in runs:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    long = _task_frame(runs, QCNN_SETTING)
    long["model"] = [str(h) if isinstance(h, str) else QCNN_REFERENCE for h in _column(runs, "head")]
    long["score"] = pd.to_numeric(runs[column], errors="coerce")
    long["degenerate"] = [_flag(a) or _flag(b) for a, b in zip(_column(runs, "degenerate", False),
                                                               _column(runs, qcnn_task.SCORES.join("degenerate"), False))]
    long = long.dropna(subset=["score"])
    with_controls = long.groupby(list(TASK_COLUMNS))["model"].transform("nunique") > 1
    return compare_models(long[with_controls], QCNN_REFERENCE, order=HEADS, confidence=confidence)


def qsvm_long(frame: pd.DataFrame, score: str = SCORE) -> pd.DataFrame:
    """One row per (QSVM run, model it scored): the :data:`TASK_COLUMNS`, model ("qsvm", "qcnn", "cnn", the
    baselines' names), seed, score and degenerate, as :func:`compare_models` takes them."""
    from .load import select_task

    runs = select_task(frame, stages.QSVM)
    if runs.empty or qsvm_task.SCORES.join(score) not in runs:
        return pd.DataFrame(columns=[*TASK_COLUMNS, "seed", "model", "score", "degenerate"])
    task = _task_frame(runs, QSVM_SETTING)
    # runs of several split seeds (a repeated-split grid) pool as distinct repeats: the seed of split s is (s, seed)
    splits = pd.to_numeric(_column(runs, "split_seed"), errors="coerce")
    if splits.nunique() > 1:
        task["seed"] = [f"{int(s)}:{seed}" if pd.notna(s) else str(seed) for s, seed in zip(splits, task["seed"])]
    prefixes = {"qsvm": qsvm_task.SCORES, "projected": qsvm_task.PROJECTED_SCORES, "qcnn": qsvm_task.QCNN_SCORES}
    prefixes |= {name: qsvm_task.BASELINE_SCORES.join(name) for name in BASELINES}
    prefixes |= {name: qsvm_task.BASELINE_SCORES.join(name) for name in baseline_names(runs, score)}
    parts = []
    for model, prefix in prefixes.items():
        if f"{prefix}.{score}" not in runs:
            continue
        part = task.copy()
        part["model"] = model
        part["score"] = pd.to_numeric(runs[f"{prefix}.{score}"], errors="coerce")
        part["degenerate"] = [_flag(v) for v in _column(runs, f"{prefix}.degenerate", False)]
        parts.append(part.dropna(subset=["score"]))
    return pd.concat(parts, ignore_index=True)


def qsvm_controls(frame: pd.DataFrame, score: str = SCORE, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The QSVM against the QCNN it embeds with and every baseline of its runs: :func:`compare_models` rows."""
    long = qsvm_long(frame, score)
    if long.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return compare_models(long, QSVM_REFERENCE, order=("qsvm", "projected", "qcnn", stages.CNN_BASELINE, *BASELINES),
                          confidence=confidence)


def qcnn_against_cnn(frame: pd.DataFrame, score: str = SCORE, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The QCNN against its classical control in the QSVM stages' runs: the same network with a linear head
    instead of the quantum layer (``cnn``), same trainer, budget and split, paired run by run."""
    long = qsvm_long(frame, score)
    long = long[long["model"].isin(["qcnn", stages.CNN_BASELINE])]
    if long.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return compare_models(long, "qcnn", confidence=confidence)


def _number(x: float) -> str:
    return f"{x:+.3f}" if abs(x) >= 5e-4 else "0.000"  # never "-0.000" or "4.44e-17"


def record(wins: int, losses: int, pairs: int, reference: str) -> str:
    """How the reference fared seed by seed: "won in all 5 seeds", "lost in all 5 seeds", "won 3, lost 2 of 5"."""
    pairs, wins, losses = int(pairs), int(wins), int(losses)
    ties = pairs - wins - losses
    if wins == pairs:
        return f"{reference} won in all {pairs} seeds"
    if losses == pairs:
        return f"{reference} lost in all {pairs} seeds"
    if ties == pairs:
        return f"tied in all {pairs} seeds"
    return f"{reference} won {wins}, lost {losses}" + (f", tied {ties}" if ties else "") + f" of {pairs} seeds"


def difference_text(row: pd.Series, reference: str) -> str:
    """A comparison row's paired difference in words: "quantum − mlp = +0.012 [−0.004, +0.028] (98.3%, Holm)
    over 5 paired seeds, quantum won 4, lost 1 of 5 seeds"; the same difference in every seed is said as such,
    never as a zero-width interval."""
    pairs = int(row["pairs"])
    head = f"{reference} − {row['model']} = {_number(row['reference_minus_model'])}"
    if bool(row.get("identical", False)):
        return f"{head} in every one of {pairs} paired seeds (the same difference each time: no interval)"
    interval = ""
    if pd.notna(row["ci_low"]):
        level = row.get("level", CONFIDENCE)
        level = CONFIDENCE if pd.isna(level) else level
        interval = f" [{_number(row['ci_low'])}, {_number(row['ci_high'])}] ({level * 100:.3g}%, Holm-corrected)"
    seeds = f" over {pairs} paired seed{'s' if pairs != 1 else ''}"
    return head + interval + seeds + (f", {record(row['wins'], row['losses'], pairs, reference)}" if pairs > 1 else "")


def control_sentences(table: pd.DataFrame, reference: str, what: str) -> dict[str, list[str]]:
    """Per task ("dataset, classes, setting [stage]"), one sentence per comparison and a conclusion.

    table : :func:`compare_models` rows;  reference : their reference model;
    what : how the conclusion names the reference's quantum part (e.g. "the quantum layer").
    The conclusion is "<what> adds nothing measurable here" when no interval
    excludes 0 in the reference's favour, else which controls it beats; with
    no interval at all (one seed) it says that nothing can be concluded.
    """
    out = {}
    for task, group in table.groupby(list(TASK_COLUMNS), sort=True):
        stage, dataset, classes, setting = task
        label = f"{dataset} {classes}".strip() + (f", {setting}" if setting else "") + (f" [{stage}]" if stage else "")
        lines, beaten, better, lost = [], [], [], []
        for _, row in group.iterrows():
            flagged = (f"; {row['degenerate']} of its {row['n']} runs predicted one class (degenerate)"
                       if row["degenerate"] else "")
            if row["model"] == reference:
                if flagged:
                    lines.append(f"{reference}: {row['mean ± std']} over {row['n']} seeds{flagged}.")
                continue
            if pd.isna(row["reference_minus_model"]):
                lines.append(f"{row['model']}: {row['verdict']}{flagged}.")
                continue
            lines.append(f"{difference_text(row, reference)} ({row['mean ± std']} for {row['model']}): "
                         f"{row['verdict']}{flagged}.")
            if row["pairs"] >= 2 and row["losses"] == row["pairs"] and not row["verdict"].endswith(" better"):
                lost.append(row["model"])
            if row["verdict"] == f"{reference} better":
                beaten.append(row["model"])
            elif row["verdict"].endswith(" better"):
                better.append(row["model"])
        if group["ci_low"].notna().sum() == 0:
            conclusion = (f"No control has two seeds paired with {reference}: no interval, so nothing can be "
                          "concluded here (run more seeds)")
        elif beaten:
            conclusion = f"{reference} is better beyond noise than {', '.join(beaten)}"
            conclusion += ("" if len(beaten) == len(group) - 1 else
                           "; against the other controls the difference is within noise or unmeasured")
        else:
            conclusion = (f"{what[0].upper()}{what[1:]} adds nothing measurable here: no corrected interval excludes 0 "
                          "in its favour")
        if lost:  # said outright: "adds nothing measurable" hid a model that lost in every seed
            conclusion += f"; {reference} lost to {', '.join(lost)} in every seed"
        if better:
            conclusion += f"; {', '.join(better)} {'is' if len(better) == 1 else 'are'} better than {reference} beyond noise"
        out[label] = [*lines, conclusion + "."]
    return out
