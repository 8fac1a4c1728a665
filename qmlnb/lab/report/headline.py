"""The headline of the report: per dataset, the final comparison and the training modes, each in its own table.

A headline table never mixes stages or budgets:

- :func:`final_tables`: one per dataset and setting of the ``final`` stage
  (params/70-final.yaml): the QCNN, the QSVM on its embeddings and the
  classical baselines beside them (the CNN with a linear head instead of the
  quantum layer, trained by the same trainer with the same budget, and the
  models of :mod:`qmlnb.qsvm.baselines`), all scored in the same runs, so
  every row has the same epochs, training size and seeds;
- :func:`modes_tables`: one per dataset and setting of the ``final-modes``
  stage (params/75-final-modes.yaml): sequential, fold-parallel and
  data-parallel training of the same work, each run timing its own reference
  (sequential training on the threads stage's fastest count) beside itself;
  the speedup of every row is against that one reference, named above the
  table, with its IQR.

Tables hold numbers (``<c>_std`` beside a mean, ``<c>_q1``/``<c>_q3`` beside a
median); :func:`.present.format_table` turns them into cells, and the plots
(:mod:`.verdicts`) draw from the same DataFrames.  The decisions of the flow
(:mod:`qmlnb.lab.decisions`) are stated in words (:func:`decision_lines`) and
drawn (:func:`plot_flow`).  Datasets with no complete final run are listed with
the reason their runs were skipped (e.g. SVHN's missing ``train_32x32.mat``).
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ...qcnn.train import MODES
from ...qsvm.baselines import BASELINES
from .. import decision_records, flow, runs, stages
from ..tasks import qcnn as qcnn_task, qsvm as qsvm_task
from .load import baseline_names, select_stage
from .present import markdown_text, natural_key, setting_value

FINAL_STAGES = (stages.FINAL_MODES, stages.FINAL)  # the stages whose skipped points name absent datasets
MODE_ORDER = {mode: i for i, mode in enumerate(MODES)}  # qmlnb.qcnn.train's modes, in its order
# what a mode's training time holds (qmlnb.qcnn.parallel): both parallel modes reuse the worker processes the
# run's warm-up training started (fold-parallel a process pool, data-parallel a gloo group), so their start-up
# (seconds of imports against a tenth of a second of training for this small model) is not in the time
MODE_TIMED = dict(zip(MODES, ("QCNN training", "QCNN training (process pool already started)",
                              "QCNN training (gloo worker processes already started)")))
# what each classical baseline is, for the table's legend: the CNN (trained by the qsvm task itself), then the
# models of qmlnb.qsvm.baselines as that module describes them
BASELINE_NAMES = {stages.CNN_BASELINE: "CNN (linear head, same trainer and budget)",
                  **{name: description for name, (_, description) in BASELINES.items()}}
BASELINE_TIMED = {stages.CNN_BASELINE: "training (one call, as the QCNN's)"}  # the others: "fit with its CV search"
# short names for the table's model column (the long ones, BASELINE_NAMES, are its legend): the core columns
# fit 800 px
SHORT_NAMES = {"qsvm": "QSVM", "qcnn": "QCNN", stages.CNN_BASELINE: "CNN", "rbf_svm_embeddings": "CNN+SVM",
               "rbf_svm_embeddings_alignment": "RBF SVM (embeddings)", "logreg_embeddings": "log. reg. (embeddings)",
               "linear_svm_pixels": "linear SVM (pixels)", "rbf_svm_pixels": "RBF SVM (pixels)",
               "rbf_svm_pixels_full": "RBF SVM (all pixels)", "logreg_pixels": "log. reg. (pixels)",
               "projected": "projected QSVM"}
LONG_NAMES = {"qsvm": "the quantum-kernel SVM on the QCNN's embeddings", "qcnn": "the hybrid QCNN",
              "projected": "the SVM on the projected quantum kernel of the same feature map and embeddings "
                           "(one-qubit reduced density matrices)", **BASELINE_NAMES}
# the run parameters that make a budget: a headline table holds runs that agree on all of them (and on every
# other recorded parameter but the seed); said above the table
BUDGET = ("epochs", "n_train", "batch_size", "threads")
# where a model's scores sit in a qsvm run's metrics (the baselines': qsvm_task.BASELINE_SCORES.join(name))
MODEL_SCORES = {"qsvm": qsvm_task.SCORES, "qcnn": qsvm_task.QCNN_SCORES, "projected": qsvm_task.PROJECTED_SCORES}
SCORE_KEYS = {"balanced accuracy": "balanced_accuracy", "F1": "f1", "ROC AUC": "roc_auc"}
FINAL_COLUMNS = ["model", *[c for name in SCORE_KEYS for c in (name, f"{name}_std")], "n", "time (s)",
                 "time (s)_q1", "time (s)_q3"]
MODES_COLUMNS = ["mode", "n", "training time (s)", "training time (s)_q1", "training time (s)_q3", "speedup",
                 "speedup_q1", "speedup_q3", "balanced accuracy", "balanced accuracy_std"]


def _plain(value):
    # a numpy scalar as Python's; a column holding NaN for other grids' runs is float: show 2, not 2.0
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _setting_columns(frame: pd.DataFrame) -> list[str]:
    # every parameter the run was given except the seed (pooled), the mode (a row) and display/comparison switches
    skip = {"param.seed", "param.mode", "param.progress", "param.compare_simulator"}
    return sorted(c for c in frame.columns if c.startswith("param.") and c not in skip)


def _budgets(runs: pd.DataFrame):
    """(dataset, {parameter: value}, runs) for each dataset and setting: runs that differ in nothing but the seed
    (and the mode), in the catalogue's dataset order then the settings' order."""
    from ...data import DATASETS

    columns = [c for c in _setting_columns(runs) if runs[c].notna().any()]
    key = runs[columns].astype(str).agg("|".join, axis=1) if columns else pd.Series("", index=runs.index)
    rank = {name: i for i, name in enumerate(DATASETS)}
    out = []
    for (dataset, text), part in runs.groupby([runs["dataset"].astype(str), key], sort=True):
        setting = {c.removeprefix("param."): _plain(part[c].iloc[0]) for c in columns if pd.notna(part[c].iloc[0])}
        setting.pop("dataset", None)
        out.append((dataset, setting, part, text))
    # settings in natural order (2 epochs before 10)
    out = sorted(out, key=lambda t: (rank.get(t[0], len(rank)), t[0], natural_key(t[3])))
    return [t[:3] for t in out]


def _describe(setting: dict) -> str:
    """The setting as text, the budget first: "epochs=10, n_train=150, batch_size=16, threads=2; backend=openmp"."""
    first = [f"{k}={setting_value(k, setting[k])}" for k in BUDGET if k in setting]
    rest = [f"{k}={setting_value(k, v)}" for k, v in setting.items() if k not in BUDGET]
    return ", ".join(first) + ("; " if first and rest else "") + ", ".join(rest)


def _attrs(table: pd.DataFrame, dataset: str, stage: str, setting: dict, part: pd.DataFrame, title: str):
    seeds = sorted({int(s) for s in part["param.seed"].dropna()}) if "param.seed" in part else []
    table.attrs.update({"dataset": dataset, "stage": stage, "setting": setting, "budget": _describe(setting),
                        "seeds": seeds, "runs": [str(p) for p in part["path"]], "title": title})
    return table


def _quartiles(values) -> tuple[float, float, float]:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(float)
    if arr.size == 0:
        return (np.nan, np.nan, np.nan)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return float(med), float(q1), float(q3)


def _score_cells(part: pd.DataFrame, prefix: str) -> dict:
    out = {}
    for name, key in SCORE_KEYS.items():
        values = pd.to_numeric(part.get(f"{prefix}.{key}", pd.Series(dtype=float)), errors="coerce").dropna()
        out[name] = float(values.mean()) if len(values) else np.nan
        out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
    return out


def final_tables(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The final comparison: one table per dataset and budget, from the ``final`` stage's complete runs only.

    Every row comes from the same runs (each run scores the QCNN, the QSVM on its embeddings and every
    baseline on one split), so every row has the same epochs, training size, batch size, threads and seeds;
    runs that differ in any parameter but the seed are another table.  Columns (numbers; the page shows
    them with :func:`.present.format_table`): ``model`` (:data:`SHORT_NAMES`), each score's mean and
    ``_std`` over the seeds, ``n`` (runs), ``time (s)`` median with ``_q1``/``_q3`` (QCNN: training; QSVM:
    Gram + SVM fit; CNN: training; the others: fit with their CV search).  ``attrs``: dataset, stage,
    setting (dict), budget (text), seeds, runs (paths), title.  Rows are sorted by balanced accuracy.
    """
    final = select_stage(frame, stages.FINAL, stages.QSVM)
    if final.empty:
        return []
    final = final.assign(**({"param.seed": 0} if "param.seed" not in final else {}))
    out = []
    for dataset, setting, part in _budgets(final):
        times = {"qcnn": part.get(qsvm_task.TRAIN_S, pd.Series(np.nan, index=part.index)),
                 "qsvm": part.get(qsvm_task.GRAM_S, np.nan) + part.get(qsvm_task.SVM_FIT_S, np.nan)}
        names = [n for n in ("qsvm", "projected", "qcnn") if MODEL_SCORES[n].join("balanced_accuracy") in part
                 and part[MODEL_SCORES[n].join("balanced_accuracy")].notna().any()]
        names += baseline_names(part, "balanced_accuracy")
        rows = []
        for name in dict.fromkeys(names):
            prefix = MODEL_SCORES.get(name) or qsvm_task.BASELINE_SCORES.join(name)
            med, q1, q3 = _quartiles(times.get(name, part.get(f"{prefix}.fit_s", pd.Series(dtype=float))))
            rows.append({"model": SHORT_NAMES.get(name, name), "key": name, **_score_cells(part, prefix), "n": len(part),
                         "time (s)": med, "time (s)_q1": q1, "time (s)_q3": q3})
        table = pd.DataFrame(rows).sort_values("balanced accuracy", ascending=False, kind="stable")
        keys = list(table.pop("key"))
        table = table.reset_index(drop=True)[FINAL_COLUMNS]
        _attrs(table, dataset, stages.FINAL, setting, part, f"{dataset}: the final comparison")
        table.attrs["models"] = keys
        table.attrs["legend"] = "; ".join(f"{SHORT_NAMES.get(k, k)}: {LONG_NAMES.get(k, k)}" for k in keys)
        out.append(table)
    return out


def _mode_speedups(part: pd.DataFrame, mode: str, seq: pd.DataFrame) -> tuple[pd.Series, str]:
    """This mode's speedups against the stage's reference and where they come from."""
    measured = pd.to_numeric(part.get(qcnn_task.SPEEDUP_VS_SEQUENTIAL, pd.Series(dtype=float)), errors="coerce").dropna()
    if len(measured):
        return measured, "measured in each run"
    if mode == "sequential":
        return pd.Series([1.0] * len(part)), "the reference"
    # runs recorded before each run timed its own reference: the sequential runs' time over this mode's, per seed
    a = seq.groupby(seq["param.seed"].astype(str))[qcnn_task.TRAIN_S].median()
    b = part.groupby(part["param.seed"].astype(str))[qcnn_task.TRAIN_S].median()
    common = sorted(set(a.index) & set(b.index))
    return pd.Series([float(a[s] / b[s]) for s in common if b[s] > 0], dtype=float), "across runs, seed by seed"


def modes_tables(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """Training modes' timing: one table per dataset and budget from the ``final-modes`` stage's complete runs.

    Rows: the reference (sequential training on the reference's threads, timed inside each run beside it:
    ``comparison.reference_train_s``), then each mode (sequential, fold-parallel, data-parallel).
    ``training time (s)``: median with ``_q1``/``_q3`` over the runs; ``speedup``: the reference's time over
    the mode's as each run measured it (``speedup_vs_sequential``; median, ``_q1``/``_q3``): the same reference
    for every row, named in ``attrs["reference"]``; balanced accuracy mean and ``_std``.  A mode whose runs
    measured no speedup gets the ratio across runs (``attrs["notes"]`` says which).
    """
    qcnn = select_stage(frame, stages.FINAL_MODES, stages.QCNN)
    if qcnn.empty:
        return []
    qcnn = qcnn.assign(**({"param.seed": 0} if "param.seed" not in qcnn else {}))
    out = []
    for dataset, setting, part in _budgets(qcnn):
        seq = part[part["mode"] == "sequential"]
        rows, notes = [], []
        ref_threads = pd.to_numeric(part.get(qcnn_task.REFERENCE_THREADS, pd.Series(dtype=float)),
                                    errors="coerce").dropna()
        ref_times = pd.to_numeric(part.get(qcnn_task.REFERENCE_TRAIN_S, pd.Series(dtype=float)),
                                  errors="coerce").dropna()
        on = ", ".join(str(_plain(t)) for t in sorted(ref_threads.unique())) or str(setting.get("threads", "?"))
        reference = f"sequential training on {on} thread{'' if on == '1' else 's'}"
        if len(ref_times):
            med, q1, q3 = _quartiles(ref_times)
            rows.append({"mode": f"reference: {reference}", "n": len(ref_times), "training time (s)": med,
                         "training time (s)_q1": q1, "training time (s)_q3": q3, "speedup": 1.0, "speedup_q1": 1.0,
                         "speedup_q3": 1.0, "balanced accuracy": np.nan, "balanced accuracy_std": np.nan})
        for mode, mine in sorted(part.groupby("mode"), key=lambda m: MODE_ORDER.get(m[0], 9)):
            speedups, source = _mode_speedups(mine, mode, seq)
            if source != "measured in each run":
                notes.append(f"{mode}: {source}")
            med, q1, q3 = _quartiles(mine[qcnn_task.TRAIN_S])
            s_med, s_q1, s_q3 = _quartiles(speedups)
            ba = pd.to_numeric(mine.get(qcnn_task.BALANCED_ACCURACY, pd.Series(dtype=float)), errors="coerce").dropna()
            rows.append({"mode": mode, "n": len(mine), "training time (s)": med, "training time (s)_q1": q1,
                         "training time (s)_q3": q3, "speedup": s_med, "speedup_q1": s_q1, "speedup_q3": s_q3,
                         "balanced accuracy": float(ba.mean()) if len(ba) else np.nan,
                         "balanced accuracy_std": float(ba.std(ddof=1)) if len(ba) > 1 else np.nan})
        table = pd.DataFrame(rows, columns=MODES_COLUMNS)
        _attrs(table, dataset, stages.FINAL_MODES, setting, part, f"{dataset}: training modes")
        table.attrs["reference"] = reference
        table.attrs["notes"] = notes
        table.attrs["timed"] = "; ".join(f"{m}: {t}" for m, t in MODE_TIMED.items())
        out.append(table)
    return out


def headline_tables(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """Every headline table in page order: per dataset, its final comparison(s) then its training modes' timing.
    Each holds one stage and one budget (``attrs``: dataset, stage, budget, seeds, runs, title)."""
    tables = final_tables(frame) + modes_tables(frame)
    from ...data import DATASETS

    rank = {name: i for i, name in enumerate(DATASETS)}
    return sorted(tables, key=lambda t: (rank.get(t.attrs["dataset"], len(rank)), t.attrs["dataset"],
                                         t.attrs["stage"] != stages.FINAL))


def skipped_datasets(runs_dir: str | os.PathLike, tables) -> pd.DataFrame:
    """Datasets the final stages skipped (no complete run there), with the skip reason (the files they need).
    ``tables``: the headline tables shown (:func:`headline_tables`), or the names of the datasets they cover."""
    tables = {t.attrs.get("dataset") if isinstance(t, pd.DataFrame) else t for t in tables}
    rows = {}
    skipped = [(run_dir, runs.read_status(run_dir) or {}) for run_dir in runs.iter_runs(runs_dir, runs.SKIPPED)]
    # selected by the stage each run recorded (never by its grid's folder name), the final-modes stage first
    skipped = sorted(((FINAL_STAGES.index(status.get("stage")), str(run_dir), status) for run_dir, status in skipped
                      if status.get("stage") in FINAL_STAGES), key=lambda item: item[:2])
    for _, _, status in skipped:
        dataset = (status.get("point") or {}).get("dataset")
        if dataset and dataset not in tables:
            rows.setdefault(dataset, status.get("reason") or "skipped")
    return pd.DataFrame([{"dataset": d, "reason": r} for d, r in rows.items()], columns=["dataset", "reason"])


def decision_lines(runs_dir: str | os.PathLike) -> list[str]:
    """One sentence per recorded decision: "optimal threads: 2, because ..." (Markdown)."""
    out = []
    for d in decision_records.read_decisions(runs_dir):
        per = "; ".join(
            f"{v['value']}: median {v['median']:.3g} [{v['q1']:.3g}-{v['q3']:.3g}], mean {v['mean']:.3g} ± "
            f"{v['std']:.3g}, n={v['n']}" for v in d.get("per_value", []))
        label = {"threads": "optimal threads", "n_train": "training size", "batch_size": "batch size"}.get(
            d["param"], d["param"])
        out.append(f"**{label}: {d['value']}** (stage `{d['stage']}`, rule `{d['rule']}`), because "
                   f"{markdown_text(d['reason'])}. Evidence ({d['metric']} per value): {per}.")
    return out


def flow_stages(runs_dir: str | os.PathLike) -> list[dict]:
    """The valid flow records (``<runs>/<stage>/flow.json``, written by :mod:`qmlnb.lab.flow`), in run order
    (:func:`qmlnb.lab.flow.load_flow`; the others are listed as unreadable in the run overview)."""
    return flow.load_flow(runs_dir)[0]



def _took(ref: dict) -> str:
    """``threads=2`` or, when a floor raised the decision, ``threads=2 (decided 1, at least 2)``."""
    text = f"{ref['key']}={ref['value']}"
    if "decided" in ref and ref["decided"] != ref["value"]:
        text += f" (decided {ref['decided']}, at least {ref.get('at_least')})"
    return text


def flow_text(stages: list[dict]) -> str:
    """The flow as text: one line per stage, with the values it took from earlier stages."""
    lines = []
    for s in stages:
        used = ", ".join(f"{_took(r)} ({r['pick']} of {r['from']})" for r in s.get("references", []))
        lines.append(f"{s.get('order', 0) + 1}. {s['stage']}" + (f"  <-  {used}" if used else ""))
    return "\n".join(lines)


def plot_flow(stages: list[dict]):
    """The flow as boxes (columns by dependency depth) joined by arrows, each box with the values it took."""
    import matplotlib.pyplot as plt

    depth = {}
    for s in stages:
        depth[s["stage"]] = 1 + max((depth.get(r["from"], 0) for r in s.get("references", [])), default=-1)
    layers: dict[int, list[str]] = {}
    for s in stages:
        layers.setdefault(depth[s["stage"]], []).append(s["stage"])
    pos = {name: (d, -i) for d, names in layers.items() for i, name in enumerate(names)}
    width = max(len(layers), 1)
    height = max((len(v) for v in layers.values()), default=1)
    fig, ax = plt.subplots(figsize=(2.8 * width + 0.5, 1.3 * height + 0.8))
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-height + 0.4, 0.6)
    ax.axis("off")
    boxes = {}
    for s in stages:
        x, y = pos[s["stage"]]
        label = s["stage"] + "".join(f"\n{_took(r)}" for r in s.get("references", []))
        boxes[s["stage"]] = ax.text(x, y, label, ha="center", va="center", fontsize=8,
                                    bbox={"boxstyle": "round,pad=0.4", "fc": "#e8f0fe", "ec": "#3367d6"})
    for s in stages:
        for source in dict.fromkeys(r["from"] for r in s.get("references", [])):
            if source in boxes:  # one arrow per pair of stages, box edge to box edge
                ax.annotate("", xy=(0, 0.5), xycoords=boxes[s["stage"]], xytext=(1, 0.5),
                            textcoords=boxes[source],
                            arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 0.9,
                                        "connectionstyle": "arc3,rad=0.12", "shrinkA": 4, "shrinkB": 4})
    ax.set_title("the experiment flow: each stage with the values it took from earlier stages", fontsize=9)
    return fig
