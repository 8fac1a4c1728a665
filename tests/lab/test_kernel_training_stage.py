"""The kernel-training stage: the task on tiny digits, the report's section from run folders and in the report's
Holm family, the alignment table and curve, the grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmlnb.lab import grid, runs, stages, tasks
from qmlnb.lab.report import kernel_training as report
from qmlnb.lab.report import verdicts
from qmlnb.lab.tasks import kernel_training as task

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["trained", "untrained", "rbf", "projected"]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def two_seeds():
    return [tasks.kernel_training_run(n_qubits=2, layers=1, steps=3, batch_size=16, n_samples=60, threads=1, seed=seed)
            for seed in (0, 1)]


def test_one_run_is_one_seed_of_the_trained_kernel_and_its_three_controls(two_seeds):
    metrics, tables = two_seeds[0]
    table, history = tables[stages.KERNEL_TRAINING_TABLE], tables[stages.HISTORY]
    assert metrics["task"] == stages.KERNEL_TRAINING and metrics["seed"] == 0
    assert table["model"].tolist() == MODELS and set(table["seed"]) == {0}
    assert set(table["classes"]) == {"3 vs 5"} and set(table["n_samples"]) == {60}
    assert history["step"].tolist() == [1, 2, 3] and set(history["seed"]) == {0}
    assert set(history["n_qubits"]) == {2}  # the setting rides along, so the report groups the curves
    # every declared metric is written; the alignment before/after are the untrained and trained Grams'
    for key in (*task.SPEC.metrics,):
        assert task.SPEC.metric(key).read(metrics) is not None, key
    by_model = table.set_index("model")
    assert metrics["trained"]["alignment"] == by_model.loc["trained", "alignment"]
    assert metrics["untrained"]["alignment"] != metrics["trained"]["alignment"]
    assert metrics["train_steps"] == 3 and 0 < metrics["train_seconds"] < metrics["seconds"]
    assert sorted(metrics["theta"]) == sorted(task.feature_map(2, 1, 0.5).circuit.theta_dict)
    # the recorded theta rebuilds the trained map: its Gram differs from the untrained one's
    X, y, _ = task.features("digits", [3, 5], 2, 60, 0)
    before, after = task.feature_map(2, 1, 0.5), task.feature_map(2, 1, 0.5, metrics["theta"])
    assert not np.allclose(before.states(X[:5]), after.states(X[:5]))
    # another seed: another split and mini-batches
    other = two_seeds[1][1][stages.HISTORY]
    assert not np.allclose(history["objective"], other["objective"])
    assert set(history["loss"]) == {"alignment"}  # the setting's loss, beside the objective's values


def test_the_report_section_reads_run_folders(two_seeds, tmp_path):
    for seed, (metrics, tables) in enumerate(two_seeds):
        folder = tmp_path / "kernel-training" / f"run-{seed}"
        tasks.save_run(folder, {"seed": seed}, {**metrics, "stage": stages.KERNEL_TRAINING_STAGE}, tables)
        runs.write_status(folder, runs.COMPLETE)
    table = report.rows(tmp_path)
    assert len(table) == 8 and set(table["stage"]) == {stages.KERNEL_TRAINING_STAGE}
    compared = report.comparisons(table)
    assert compared["model"].tolist() == MODELS and set(compared.loc[compared.model != "trained", "pairs"]) == {2}
    lines = report.sentences(compared)
    # two seeds never make a claim
    assert len(lines) == 3 and all("no difference beyond noise" in line for line in lines)
    alignment = report.alignment_table(table)
    assert len(alignment) == 1 and alignment["seeds with higher alignment"].iloc[0].endswith("/2")
    fig = report.plot_alignment_curve(report.rows(tmp_path, name=stages.HISTORY))
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[0].lines[0].get_xdata()) == 3


def _synthetic(gain: float, seeds=range(6)) -> pd.DataFrame:
    """A kernel-training table: the trained kernel `gain` above the untrained one in every seed (with a little
    spread), level with the RBF SVM, below the projected kernel by 0.2."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        base = 0.7 + 0.01 * seed
        scores = {"trained": base + gain + rng.normal(0, 0.005), "untrained": base,
                  "rbf": base + gain + rng.normal(0, 0.05), "projected": base + gain + 0.2}
        alignments = {"trained": 0.5, "untrained": 0.2, "rbf": 0.6, "projected": 0.3}
        rows += [{"stage": stages.KERNEL_TRAINING_STAGE, "dataset": "digits", "classes": "3 vs 5", "n_qubits": 4,
                  "loss": "alignment", "steps": 20, "seed": seed, "model": m, "balanced_accuracy": s,
                  "alignment": alignments[m], "degenerate": False} for m, s in scores.items()]
    return pd.DataFrame(rows)


def test_one_sentence_per_control_says_whether_training_helped_beyond_noise():
    compared = report.comparisons(_synthetic(0.1))
    lines = dict(zip(compared.loc[compared.model != "trained", "model"], report.sentences(compared)))
    assert "training helped beyond noise" in lines["untrained"] and "+0.100" in lines["untrained"]
    assert "the control is better beyond noise" in lines["projected"]
    assert "no difference beyond noise" in lines["rbf"]
    assert "6 paired seeds" in lines["untrained"] and "won 6, lost 0" in lines["untrained"]
    # alignment is its own table: the projected kernel scores higher with a lower alignment
    alignment = report.alignment_table(_synthetic(0.1))
    row = alignment.iloc[0]
    assert row["alignment trained"] == pytest.approx(0.5) and row["alignment untrained"] == pytest.approx(0.2)
    assert row["alignment after − before"] == pytest.approx(0.3) and row["seeds with higher alignment"] == "6/6"
    assert list(alignment.columns[-6:-2]) == [f"alignment {m}" for m in MODELS]


def test_the_sections_comparisons_join_the_reports_holm_family():
    compared = report.comparisons(_synthetic(0.03))
    alone = compared.set_index("model").loc["untrained"]
    family = verdicts.comparison_family(pd.DataFrame(), kernel_training=compared)
    joined = family["kernel_training"].set_index("model").loc["untrained"]
    assert family["kernel_training"].attrs["size"] == 3
    assert joined["p_holm"] == pytest.approx(alone["p_holm"])  # the same three comparisons, the same family
    # with more comparisons in the family, the correction is stronger
    extra = report.comparisons(pd.concat([_synthetic(0.03), _synthetic(0.03).assign(loss="svc")]))
    bigger = verdicts.comparison_family(pd.DataFrame(), kernel_training=extra)["kernel_training"]
    assert bigger.attrs["size"] == 6
    assert bigger.set_index(["setting", "model"])["p_holm"].max() >= joined["p_holm"]
    assert "kernel_training" not in verdicts.comparison_family(pd.DataFrame())


def test_an_empty_runs_folder_gives_an_empty_section(tmp_path):
    folder = tmp_path / "qsvm" / "run"
    tasks.save_run(folder, {}, {"task": stages.QSVM})
    runs.write_status(folder, runs.COMPLETE)
    rows = report.rows(tmp_path)
    assert rows.empty and report.comparisons(rows).empty and report.alignment_table(rows).empty


def test_bad_settings_are_refused_before_the_data_are_read():
    with pytest.raises(ValueError, match="loss"):
        tasks.kernel_training_run(dataset="no-such-data", loss="hinge")
    with pytest.raises(ValueError, match="steps"):
        tasks.kernel_training_run(dataset="no-such-data", steps=0)
    with pytest.raises(ValueError, match="two classes"):
        tasks.kernel_training_run(dataset="no-such-data", classes=[1, 2, 3])


def test_the_small_grid_is_in_make_report_and_the_large_one_is_not():
    sweep = grid.load_sweep(ROOT / "params" / "85-kernel-training.yaml")
    assert sweep.stage == stages.KERNEL_TRAINING_STAGE and sweep.notebook.name == "60-kernel-training.ipynb"
    assert {p["seed"] for p in sweep.points} == {0, 1, 2, 3, 4}  # the verdict needs 5 paired seeds
    assert {(p["dataset"], tuple(p["classes"]), p["n_qubits"]) for p in sweep.points} == {("digits", (3, 5), 4)}
    large = ROOT / "params" / "large" / "kernel-training-large.yaml"
    assert large not in set((ROOT / "params").glob("*.yaml"))
    sweep = grid.load_sweep(large)
    assert sweep.stage == stages.KERNEL_TRAINING_STAGE and len({p["seed"] for p in sweep.points}) == 10
    assert {(p["dataset"], p["n_qubits"], p["layers"]) for p in sweep.points} == {("fashion-mnist", 8, 3)}
    assert {p["loss"] for p in sweep.points} == {"alignment", "svc"}


def test_the_svc_loss_records_its_objective_and_the_curve_draws_it():
    metrics, tables = tasks.kernel_training_run(n_qubits=2, layers=1, loss="svc", steps=2, batch_size=16, n_samples=40,
                                                threads=1)
    history = tables[stages.HISTORY]
    assert "alignment" not in history and history["objective"].notna().all() and set(history["loss"]) == {"svc"}
    assert metrics["loss"] == "svc" and metrics["train_steps"] == 2
    fig = report.plot_alignment_curve(history)
    assert fig.axes[0].lines[0].get_label().endswith("(objective)")
