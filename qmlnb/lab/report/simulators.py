"""The report's simulators against PennyLane: one row per comparison a run measured in-run and interleaved
(the gram-scaling stage's states, the sequential stage's QCNN training step), or the stage that will measure it."""
from __future__ import annotations

import pandas as pd

from .. import stages
from ..tasks import gram as gram_task, qcnn as qcnn_task

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
    p = gram_task.STATES_VS_PENNYLANE
    states = _measured(frame, stages.GRAM, p)
    for _, run in states.iterrows():
        rows.append({"comparison": STATES_LABEL, "ours": f"{_seconds(run[p + '.qmlnb_per_state_s'])} per state",
                     "PennyLane": f"{_seconds(run[p + '.pennylane_per_state_s'])} per state",
                     "ratio [q1-q3]": _ratio(run, p), "max |difference|": f"{run[p + '.max_abs_difference']:.1e}",
                     "setting": f"{int(run[p + '.n_qubits'])} qubits, {int(run[p + '.n_states'])} states, "
                                f"{int(run[p + '.rounds'])} rounds",
                     **_load_noisy(run, p), "measured in": f"{run['stage']} run {run['run']}"})
    if states.empty:
        rows.append({"comparison": STATES_LABEL, "measured in": STATES_SOURCE})
    p = qcnn_task.SIMULATOR_COMPARISON
    qcnn = _measured(frame, stages.QCNN, p)
    for _, run in qcnn.iterrows():
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
