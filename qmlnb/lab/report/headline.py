"""The headline of the report: per dataset, each training mode and baseline of the final stages.

One table per dataset, from the complete runs of the final stages only
(``final-modes``: the QCNN trained sequentially, fold-parallel and
data-parallel with the same work; ``final``: the QCNN + quantum-kernel SVM and
the classical baselines beside it: the CNN with a linear head instead of the
quantum layer, trained by the same trainer with the same budget, and the
models of :mod:`qmlnb.qsvm.baselines`, CNN+SVM first, in :data:`BASELINE_NAMES`'
order).  A row is one model/mode at one setting:
runs are pooled over seeds only, never over any other parameter (a stage run
twice at two training sizes gives two rows each).  Columns:

- ``F1``, ``ROC AUC``, ``balanced accuracy``: mean ± sample std over the seeds;
- ``n``: the number of runs (seeds) behind the row;
- ``training time``: median [25th-75th percentile] seconds (3 significant digits);
- ``speedup vs sequential``: for a parallel mode, the speedup each run measured
  against sequential training of the same work in the same run
  (``compare: sequential``, on ``compare_threads`` threads, named in the cell),
  median [min-max] over the seeds; for the sequential row, 1 when it is its own
  reference, else its measured speedup over sequential training on the
  reference's threads (below 1: its extra threads slowed it down); only for
  runs that measured none, the sequential runs' time over this mode's, seed by
  seed, said to be across runs.

The decisions of the flow (:mod:`qmlnb.lab.decisions`) are stated above the
tables (:func:`decision_lines`) and drawn as a diagram (:func:`plot_flow`).
Datasets with no complete final run are listed with the reason their runs
were skipped (e.g. SVHN's missing ``train_32x32.mat``/``test_32x32.mat``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import decisions, flow, runs, stages
from .load import select_stage
from .present import markdown_text

FINAL_GRIDS = ("final-modes", "final")  # the grids (run folders) whose skipped points name absent datasets
MODE_ORDER = {"sequential": 0, "fold-parallel": 1, "data-parallel": 2}
# what a mode's training time holds (qmlnb.qcnn.parallel): both parallel modes reuse the worker processes the
# run's warm-up training started (fold-parallel a process pool, data-parallel a gloo group), so their start-up
# (seconds of imports against a tenth of a second of training for this small model) is not in the time
MODE_TIMED = {"sequential": "QCNN training", "fold-parallel": "QCNN training (process pool already started)",
              "data-parallel": "QCNN training (gloo worker processes already started)"}
SCORE_COLUMNS = {"F1": "f1", "ROC AUC": "roc_auc", "balanced accuracy": "balanced_accuracy"}
# the classical baselines of the final stage in the order of their rows (others follow, sorted by name):
# the CNN beside CNN+SVM, then the other models on the embeddings, then those on the pixels
BASELINE_NAMES = {
    stages.CNN_BASELINE: "CNN (linear head, same trainer and budget)",
    "rbf_svm_embeddings": "RBF SVM on the QCNN's CNN embeddings (CNN+SVM)",
    "rbf_svm_embeddings_alignment": "RBF SVM on the QCNN's embeddings, gamma chosen like the bandwidth",
    "logreg_embeddings": "logistic regression on the QCNN's embeddings",
    "linear_svm_pixels": "linear SVM on the pixels",
    "rbf_svm_pixels": "RBF SVM on the pixels (PCA)",
    "logreg_pixels": "logistic regression on the pixels (PCA)",
}
BASELINE_TIMED = {stages.CNN_BASELINE: "training (one call, as the QCNN's)"}  # the others: "fit with its CV search"
COLUMNS = ["model", "mode", "n", *SCORE_COLUMNS, "training time (s)", "speedup vs sequential", "timed", "setting"]


def _mean_std(values) -> str:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return "—"
    if arr.size == 1:
        return f"{arr[0]:.3f} (one run)"
    return f"{arr.mean():.3f} ± {arr.std(ddof=1):.3f}"


def _median_iqr(values) -> str:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return "—"
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return f"{med:.3g} [{q1:.3g}-{q3:.3g}]"  # significant digits: a 3 ms Gram and a 30 s training both read


def _setting_columns(frame: pd.DataFrame) -> list[str]:
    # every parameter the run was given except the seed (pooled) and the mode (the row)
    return sorted(c for c in frame.columns if c.startswith("param.") and c not in ("param.seed", "param.mode"))


def _plain(value):
    # a column holding NaN for other grids' runs is float: show 2, not 2.0
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _setting(row: pd.Series, columns: list[str]) -> dict:
    skip = {"param.dataset", "param.progress"}
    return {c.removeprefix("param."): _plain(row[c]) for c in columns if c not in skip and pd.notna(row[c])}


def _text(setting: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items())


def _split_common(rows: list[dict]) -> tuple[list[dict], str]:
    """``rows`` with each ``setting`` dict turned into the text of what sets it apart from the table's other
    rows, and the text of what every row shares (said once above the table: a column repeating a dozen
    parameters on every row hid the few that differ)."""
    settings = [r["setting"] for r in rows]
    common = {k: v for k, v in settings[0].items() if all(k in s and s[k] == v for s in settings[1:])}
    own = [{k: v for k, v in s.items() if k not in common} for s in settings]
    return [{**r, "setting": _text(o) or "—"} for r, o in zip(rows, own)], _text(common)


def _key(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    if not columns:
        return pd.Series("", index=frame.index)
    return frame[columns].apply(lambda r: "|".join(map(str, r)), axis=1)


def _seed_speedups(seq: pd.DataFrame, mine: pd.DataFrame) -> list[float]:
    """sequential time / this mode's time for each seed both have (their own runs' medians per seed)."""
    a = seq.groupby(seq["param.seed"].astype(str))["timings.train_s"].median()
    b = mine.groupby(mine["param.seed"].astype(str))["timings.train_s"].median()
    common = sorted(set(a.index) & set(b.index))
    return [float(a[s] / b[s]) for s in common if b[s] > 0]


def _with_settings(runs: pd.DataFrame, exclude=()) -> tuple[pd.DataFrame, list[str]]:
    """``runs`` with ``param.seed`` (0 where no seed was recorded) and ``_setting``, the key of every other
    parameter that varies (minus ``exclude``), so rows pool seeds only; and those parameter columns."""
    if "param.seed" not in runs:
        runs["param.seed"] = 0
    columns = [c for c in _setting_columns(runs) if c not in exclude]
    runs["_setting"] = _key(runs, columns)
    return runs, columns


def _mode_rows(frame: pd.DataFrame) -> list[dict]:
    qcnn = select_stage(frame, stages.FINAL_MODES, stages.QCNN)
    if qcnn.empty:
        return []
    qcnn, columns = _with_settings(qcnn)
    rows = []
    for (dataset, setting), part in qcnn.groupby(["dataset", "_setting"], sort=True):
        seq = part[part["mode"] == "sequential"]
        for mode, mine in sorted(part.groupby("mode"), key=lambda m: MODE_ORDER.get(m[0], 9)):
            measured = mine.get("speedup_vs_sequential", pd.Series(dtype=float)).dropna()
            # the runs that trained a reference of their own (not "the run itself"), on how many threads
            reference_threads = mine.get("comparison.reference_threads", pd.Series(dtype=float)).dropna()
            if mode == "sequential" and reference_threads.empty:
                speedup = "1 (reference)"
            elif len(measured):
                on = ", ".join(str(_plain(t)) for t in sorted(reference_threads.unique()))
                against = f" against sequential on {on} thread(s)" if on else ""
                speedup = (f"{measured.median():.2f} [{measured.min():.2f}-{measured.max():.2f}], "
                           f"measured in each run{against}, {len(measured)} run(s)")
            else:
                ratios = _seed_speedups(seq, mine)
                # separate runs of one stage (the runs do not time a sequential pass themselves): say so
                speedup = (f"{np.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}], across runs, "
                           f"{len(ratios)} seed pair(s)" if ratios else "— (no sequential run of this setting)")
            rows.append({"dataset": dataset, "model": "QCNN", "mode": mode, "n": len(mine),
                         **{name: _mean_std(mine.get(f"qcnn.{key}", pd.Series(dtype=float)))
                            for name, key in SCORE_COLUMNS.items()},
                         "training time (s)": _median_iqr(mine["timings.train_s"]), "speedup vs sequential": speedup,
                         "timed": MODE_TIMED.get(mode, "QCNN training"), "setting": _setting(mine.iloc[0], columns)})
    return rows


def _final_rows(frame: pd.DataFrame) -> list[dict]:
    final = select_stage(frame, stages.FINAL, stages.QSVM)
    if final.empty:
        return []
    final, columns = _with_settings(final, exclude=("param.backend",))
    rows = []
    for (dataset, setting), part in final.groupby(["dataset", "_setting"], sort=True):
        common = {"dataset": dataset, "n": len(part), "speedup vs sequential": "— (not a training mode)",
                  "setting": _setting(part.iloc[0], columns)}
        qsvm_time = part.get("timings.gram_s", np.nan) + part.get("timings.svm_fit_s", np.nan)
        rows.append({**common, "model": "QSVM on the QCNN's embeddings", "mode": "sequential",
                     **{name: _mean_std(part.get(f"qsvm.{key}", pd.Series(dtype=float)))
                        for name, key in SCORE_COLUMNS.items()},
                     "training time (s)": _median_iqr(qsvm_time), "timed": "Gram + SVM fit (after the QCNN)"})
        names = {c.split(".")[1] for c in part.columns if c.startswith("baselines.") and part[c].notna().any()}
        rank = {name: i for i, name in enumerate(BASELINE_NAMES)}
        for name in sorted(names, key=lambda n: (rank.get(n, len(rank)), n)):
            rows.append({**common, "model": BASELINE_NAMES.get(name, name), "mode": "classical",
                         **{label: _mean_std(part.get(f"baselines.{name}.{key}", pd.Series(dtype=float)))
                            for label, key in SCORE_COLUMNS.items()},
                         "training time (s)": _median_iqr(part.get(f"baselines.{name}.fit_s",
                                                                   pd.Series(dtype=float))),
                         "timed": BASELINE_TIMED.get(name, "fit with its CV search")})
    return rows


def headline_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{dataset: table} from the final stages' complete runs (see the module docstring); {} when there are none.

    A table's ``setting`` column holds what sets a row apart; the parameters every row of it shares are
    ``table.attrs["common_setting"]`` (text, "" when none), for the line above the table.
    """
    if frame.empty or "task" not in frame or "stage" not in frame:
        return {}
    from ...data import DATASETS

    rows = _mode_rows(frame) + _final_rows(frame)
    out = {}
    rank = {name: i for i, name in enumerate(DATASETS)}  # the catalogue's order: digits first
    for dataset in sorted(dict.fromkeys(r["dataset"] for r in rows), key=lambda d: (rank.get(d, len(rank)), d)):
        mine, common = _split_common([r for r in rows if r["dataset"] == dataset])
        out[dataset] = pd.DataFrame(mine, columns=COLUMNS)
        out[dataset].attrs["common_setting"] = common
    return out


# ---------------------------------------------------------------- simulators against PennyLane
SIMULATOR_COLUMNS = ["comparison", "ours", "PennyLane", "ratio [q1-q3]", "max |difference|", "setting", "load",
                     "noisy", "measured in"]
STATES_LABEL = "states: FeatureMap.states vs default.qubit (broadcast QNode)"
QCNN_LABEL = "QCNN training step: torch simulator vs qml.qnn.TorchLayer"
# what to run when no run measured a row: the stage (and the grid parameter) that gives it
STATES_SOURCE = ("no run yet: the gram-scaling stage measures it (params/50-gram-scaling.yaml, its cpu run with "
                 "pennylane_states > 0)")
QCNN_SOURCE = ("no run yet: the sequential stage measures it (params/10-sequential.yaml, "
               "compare_simulator: torchlayer)")


def _seconds(value: float) -> str:
    """Seconds in the unit that reads: 12.3 µs, 4.56 ms, 1.23 s."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-6:.3g} µs"


def _ratio(row: pd.Series, prefix: str) -> str:
    return f"{row[prefix + '.ratio']:.3g} [{row[prefix + '.ratio_q1']:.3g}-{row[prefix + '.ratio_q3']:.3g}]"


def _load_noisy(row: pd.Series, prefix: str) -> dict:
    load, noisy = row.get(prefix + ".load"), row.get(prefix + ".noisy")
    return {"load": f"{load:.2f}" if pd.notna(load) else "—",
            "noisy": ("yes" if bool(noisy) else "no") if pd.notna(noisy) else "—"}


def _measured(frame: pd.DataFrame, task: str, key: str) -> pd.DataFrame:
    """The complete runs of ``task`` that recorded ``<key>.ratio``, in stage and run order."""
    from .load import select_task

    runs_of_task = select_task(frame, task)
    if runs_of_task.empty or f"{key}.ratio" not in runs_of_task:
        return runs_of_task.iloc[0:0]
    measured = runs_of_task[runs_of_task[f"{key}.ratio"].notna()]
    return measured.sort_values(["stage", "run"], key=lambda c: c.astype(str))


def simulator_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Our simulators against PennyLane, each ratio measured inside one run (interleaved, same data, same load).

    Rows (one per run that measured it; runs are never pooled):

    - states: ``FeatureMap.states`` against PennyLane ``default.qubit``'s
      broadcast QNode of the same map on the same angles (the ``gram_scaling``
      task's ``states_vs_pennylane``): seconds per state of each, the ratio
      PennyLane / ours (median of the paired rounds' ratio of medians, with the
      quartiles of the per-round ratios), the max |amplitude difference|;
    - QCNN training: samples/s of the training step with the fast torch
      simulator and with ``qml.qnn.TorchLayer`` (the ``qcnn_run`` task's
      ``simulator_comparison``), and their ratio (torch / TorchLayer).

    Each row gives the run's setting, its load (1-minute load average during
    the rounds) and ``noisy`` flag, and the run it comes from.  With no run
    for a comparison, its row says which stage measures it.  Every cell is
    text (no NaN).
    """
    rows = []
    states = _measured(frame, stages.GRAM, "states_vs_pennylane")
    for _, run in states.iterrows():
        p = "states_vs_pennylane"
        rows.append({"comparison": STATES_LABEL, "ours": f"{_seconds(run[p + '.qmlnb_per_state_s'])} per state",
                     "PennyLane": f"{_seconds(run[p + '.pennylane_per_state_s'])} per state",
                     "ratio [q1-q3]": _ratio(run, p), "max |difference|": f"{run[p + '.max_abs_difference']:.1e}",
                     "setting": f"{int(run[p + '.n_qubits'])} qubits, {int(run[p + '.n_states'])} states, "
                                f"{int(run[p + '.rounds'])} rounds",
                     **_load_noisy(run, p), "measured in": f"{run['stage']} run {run['run']}"})
    if states.empty:
        rows.append({"comparison": STATES_LABEL, "measured in": STATES_SOURCE})
    qcnn = _measured(frame, stages.QCNN, "simulator_comparison")
    for _, run in qcnn.iterrows():
        p = "simulator_comparison"
        rows.append({"comparison": QCNN_LABEL, "ours": f"{run[p + '.torch_samples_per_s']:,.0f} samples/s",
                     "PennyLane": f"{run[p + '.torchlayer_samples_per_s']:,.0f} samples/s",
                     "ratio [q1-q3]": _ratio(run, p), "max |difference|": "— (a speed comparison)",
                     "setting": f"{run.get('dataset', '?')}, {int(run[p + '.n_qubits'])} qubits, batch "
                                f"{int(run[p + '.batch_size'])}, {int(run[p + '.threads'])} thread(s), "
                                f"{int(run[p + '.rounds'])} rounds",
                     **_load_noisy(run, p), "measured in": f"{run['stage']} run {run['run']}"})
    if qcnn.empty:
        rows.append({"comparison": QCNN_LABEL, "measured in": QCNN_SOURCE})
    return pd.DataFrame([{**dict.fromkeys(SIMULATOR_COLUMNS, "—"), **row} for row in rows], columns=SIMULATOR_COLUMNS)


def skipped_datasets(runs_dir: str | os.PathLike, tables: dict) -> pd.DataFrame:
    """Datasets the final stages skipped (no complete run there), with the skip reason (the files they need)."""
    rows = {}
    for grid in FINAL_GRIDS:
        folder = Path(runs_dir) / grid
        if not folder.is_dir():
            continue
        for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            status = runs.read_status(run_dir) or {}
            dataset = (status.get("point") or {}).get("dataset")
            if status.get("status") == runs.SKIPPED and dataset and dataset not in tables:
                rows.setdefault(dataset, status.get("reason") or "skipped")
    return pd.DataFrame([{"dataset": d, "reason": r} for d, r in rows.items()], columns=["dataset", "reason"])


def decision_lines(runs_dir: str | os.PathLike) -> list[str]:
    """One sentence per recorded decision: "optimal threads: 2, because ..." (Markdown)."""
    out = []
    for d in decisions.read_decisions(runs_dir):
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
