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


TINY = dict(n_qubits=2, layers=1, steps=3, batch_size=16, n_samples=60, threads=1)


@pytest.fixture(scope="module")
def two_runs():
    """(a run of seeds 0 and 1, a run of seed 1 alone): the same seed in both, to hold its results identical."""
    return tasks.kernel_training_run(**TINY, seeds=(0, 1)), tasks.kernel_training_run(**TINY, seeds=[1])


def test_one_run_trains_each_seed_beside_its_three_controls(two_runs):
    (metrics, tables), (alone, alone_tables) = two_runs
    table, history = tables[stages.KERNEL_TRAINING_TABLE], tables[stages.HISTORY]
    assert metrics["task"] == stages.KERNEL_TRAINING and metrics["seeds"] == [0, 1]
    assert table["model"].tolist() == MODELS * 2 and table["seed"].tolist() == [0] * 4 + [1] * 4
    assert set(table["classes"]) == {"3 vs 5"} and set(table["n_samples"]) == {60}
    assert history["step"].tolist() == [1, 2, 3] * 2 and history["seed"].tolist() == [0] * 3 + [1] * 3
    assert set(history["n_qubits"]) == {2}  # the setting rides along, so the report groups the curves
    # every declared metric is written; the alignment before/after are the untrained and trained Grams', mean
    # over the seeds; the steps and seconds the trainers', summed
    for key in (*task.SPEC.metrics,):
        assert task.SPEC.metric(key).read(metrics) is not None, key
    trained = table[table["model"] == "trained"]
    assert metrics["trained"]["alignment"] == pytest.approx(trained["alignment"].mean())
    assert metrics["untrained"]["alignment"] != metrics["trained"]["alignment"]
    assert metrics["train_steps"] == 6 and 0 < metrics["train_seconds"] < metrics["seconds"]
    assert metrics["train_seconds"] == pytest.approx(trained["train_seconds"].sum())
    assert sorted(metrics["theta"]) == ["0", "1"]  # keyed as the JSON file keys them
    assert sorted(metrics["theta"]["0"]) == sorted(task.feature_map(2, 1, 0.5).circuit.theta_dict)
    # the recorded theta rebuilds the trained map: its Gram differs from the untrained one's
    X, y, _ = task.features("digits", [3, 5], 2, 60, 0)
    before, after = task.feature_map(2, 1, 0.5), task.feature_map(2, 1, 0.5, metrics["theta"]["0"])
    assert not np.allclose(before.states(X[:5]), after.states(X[:5]))
    # another seed: another split and mini-batches
    assert not np.allclose(*(history.loc[history["seed"] == s, "objective"] for s in (0, 1)))
    assert set(history["loss"]) == {"alignment"}  # the setting's loss, beside the objective's values
    # a seed's results do not depend on the run's other seeds: seed 1 alone gives seed 1's rows and theta
    one = alone_tables[stages.KERNEL_TRAINING_TABLE].drop(columns="train_seconds").reset_index(drop=True)
    pd.testing.assert_frame_equal(table[table["seed"] == 1].drop(columns="train_seconds").reset_index(drop=True), one)
    pd.testing.assert_frame_equal(history[history["seed"] == 1].reset_index(drop=True), alone_tables[stages.HISTORY])
    assert alone["theta"] == {"1": metrics["theta"]["1"]}


def test_the_report_section_reads_run_folders_old_and_new(two_runs, tmp_path):
    (metrics, tables), (alone, alone_tables) = two_runs
    folder = tmp_path / "kernel-training" / "seeds-0-1"
    tasks.save_run(folder, {"seeds": [0, 1]}, {**metrics, "stage": stages.KERNEL_TRAINING_STAGE}, tables)
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
    # a run recorded before the task took `seeds` (one `seed`, its metrics keyed so) reads alike: its seed,
    # recorded again here, is averaged as a repeat of the same result, so the comparison does not change
    old = {**{k: v for k, v in alone.items() if k not in ("seeds", "theta")}, "seed": 1, "theta": alone["theta"]["1"]}
    folder = tmp_path / "kernel-training" / "seed-1"
    tasks.save_run(folder, {"seed": 1}, {**old, "stage": stages.KERNEL_TRAINING_STAGE}, alone_tables)
    runs.write_status(folder, runs.COMPLETE)
    both = report.rows(tmp_path)
    assert len(both) == 12 and sorted(both["seed"].unique()) == [0, 1]
    again = report.comparisons(both)
    columns = ["model", "n", "mean", "reference_minus_model", "pairs", "verdict"]
    pd.testing.assert_frame_equal(again[columns], compared[columns])


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
    with pytest.raises(ValueError, match="seeds must be distinct"):
        tasks.kernel_training_run(dataset="no-such-data", seeds=[1, 1])
    with pytest.raises(ValueError, match="seeds must be a non-empty list"):
        tasks.kernel_training_run(dataset="no-such-data", seeds=[])
    with pytest.raises(ValueError, match="seeds must be a non-empty list"):
        tasks.kernel_training_run(dataset="no-such-data", seeds=3)


def test_the_small_grid_is_in_make_report_and_the_large_one_is_not():
    sweep = grid.load_sweep(ROOT / "params" / "85-kernel-training.yaml")
    assert sweep.stage == stages.KERNEL_TRAINING_STAGE and sweep.notebook.name == "60-kernel-training.ipynb"
    # the verdict needs 5 paired seeds; one run holds them all (a notebook's start-up costs more than a seed)
    assert [p["seeds"] for p in sweep.points] == [[0, 1, 2, 3, 4]]
    assert {(p["dataset"], tuple(p["classes"]), p["n_qubits"]) for p in sweep.points} == {("digits", (3, 5), 4)}
    large = ROOT / "params" / "large" / "kernel-training-large.yaml"
    assert large not in set((ROOT / "params").glob("*.yaml"))
    sweep = grid.load_sweep(large)
    assert sweep.stage == stages.KERNEL_TRAINING_STAGE and {len(p["seeds"]) for p in sweep.points} == {10}
    assert {(p["dataset"], p["n_qubits"], p["layers"]) for p in sweep.points} == {("fashion-mnist", 8, 3)}
    assert {p["loss"] for p in sweep.points} == {"alignment", "svc"}


def test_the_svc_loss_records_its_objective_and_the_curve_draws_it():
    metrics, tables = tasks.kernel_training_run(n_qubits=2, layers=1, loss="svc", steps=2, batch_size=16, n_samples=40,
                                                threads=1, seeds=[0])
    history = tables[stages.HISTORY]
    assert "alignment" not in history and history["objective"].notna().all() and set(history["loss"]) == {"svc"}
    assert metrics["loss"] == "svc" and metrics["train_steps"] == 2
    fig = report.plot_alignment_curve(history)
    assert fig.axes[0].lines[0].get_label().endswith("(objective)")
