"""The report's controls section on fabricated run folders: paired differences over seeds, verdicts in words,
degenerate flags, kernel diagnostics; and the controls grid loads."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from qmlnb.lab import grid, runs, stages, tasks
from qmlnb.lab.report import controls, kernel_diagnostics, load_runs

ROOT = Path(__file__).resolve().parents[2]


def fake_run(runs_dir, grid_name, params, metrics):
    """A complete run folder as the sweep leaves it (tasks.save_run, then the status)."""
    folder = runs_dir / grid_name / runs.run_name(params)
    tasks.save_run(folder, params, metrics)
    runs.write_status(folder, runs.COMPLETE, point=params)
    return folder


def scores(b, degenerate=False):
    return {"accuracy": b, "f1": b - 0.05, "roc_auc": b + 0.02, "balanced_accuracy": b, "degenerate": degenerate}


def head_run(runs_dir, head, seed, ba, dataset="digits", degenerate=False, stage=stages.CONTROLS, n_train=150):
    params = {"dataset": dataset, "head": head, "seed": seed, "split_seed": 0, "n_train": n_train, "epochs": 3}
    fake_run(runs_dir, "controls", params, {
        "task": stages.QCNN, "stage": stage, "dataset": dataset, "classes": [3, 8], "n_train": n_train, "epochs": 3,
        "batch_size": 16, "n_qubits": 4, "head": head, "seed": seed, "split_seed": 0, "degenerate": degenerate,
        "qcnn": scores(ba, degenerate), "timings": {"train_s": 1.0}})


# digits, 5 seeds: quantum beats linear on every seed by 0.10 +- 0.01 (beyond noise); mlp differs by +0.05, -0.05,
# +0.01, -0.01, 0 (no measurable difference); cnn-linear is degenerate on seed 2 (balanced accuracy 0.5) and worse.
QUANTUM = {0: 0.90, 1: 0.92, 2: 0.88, 3: 0.92, 4: 0.88}
LINEAR = {0: 0.80, 1: 0.81, 2: 0.79, 3: 0.82, 4: 0.78}
MLP = {0: 0.85, 1: 0.97, 2: 0.87, 3: 0.93, 4: 0.88}
CNN_LINEAR = {0: 0.89, 1: 0.93, 2: 0.50, 3: 0.91, 4: 0.87}
FASHION_LINEAR = [0.72, 0.69, 0.73, 0.71, 0.76]


@pytest.fixture
def head_runs(tmp_path):
    for seed in range(5):
        head_run(tmp_path, "quantum", seed, QUANTUM[seed])
        head_run(tmp_path, "linear", seed, LINEAR[seed])
        head_run(tmp_path, "mlp", seed, MLP[seed])
        head_run(tmp_path, "cnn-linear", seed, CNN_LINEAR[seed], degenerate=seed == 2)
        # fashion-mnist: every control within noise of the quantum model
        head_run(tmp_path, "quantum", seed, 0.70 + 0.01 * seed, dataset="fashion-mnist")
        head_run(tmp_path, "linear", seed, FASHION_LINEAR[seed], dataset="fashion-mnist")
    # a dataset-size run without controls: not a controls task
    fake_run(tmp_path, "dataset-size", {"dataset": "digits", "n_train": 50, "seed": 0},
             {"task": stages.QCNN, "stage": stages.DATASET_SIZE, "dataset": "digits", "classes": [3, 8],
              "n_train": 50, "qcnn": scores(0.7)})
    return load_runs(tmp_path)


def by_model(table, dataset):
    return table[table["dataset"] == dataset].set_index("model")


def test_each_head_mean_std_and_paired_difference(head_runs):
    table = controls.qcnn_controls(head_runs)
    assert set(table["dataset"]) == {"digits", "fashion-mnist"}  # the dataset-size run has no controls
    digits = by_model(table, "digits")
    assert list(digits.index) == ["quantum", "linear", "mlp", "cnn-linear"]  # reference first, then HEADS' order
    assert digits.loc["quantum", "n"] == 5
    assert digits.loc["quantum", "mean"] == pytest.approx(0.90)
    assert digits.loc["quantum", "std"] == pytest.approx(0.02)
    assert digits.loc["quantum", "mean ± std"] == "0.900 ± 0.020"
    assert math.isnan(digits.loc["quantum", "reference_minus_model"])
    linear = digits.loc["linear"]
    assert linear["reference_minus_model"] == pytest.approx(0.10)
    assert 0 < linear["ci_low"] < 0.10 < linear["ci_high"]
    assert (linear["wins"], linear["losses"], linear["pairs"]) == (5, 0, 5)
    assert linear["verdict"] == "quantum better"
    mlp = digits.loc["mlp"]
    assert mlp["reference_minus_model"] == pytest.approx(0.0, abs=1e-12)
    assert mlp["ci_low"] < 0 < mlp["ci_high"]
    assert mlp["verdict"] == "no measurable difference"
    # Holm across the table's 4 comparisons: the strongest is tested at 1 - 0.05 / 4
    assert linear["level"] == pytest.approx(1 - 0.05 / 4) and linear["p_holm"] <= 0.05
    assert digits.loc["cnn-linear", "degenerate"] == 1
    assert digits.loc["linear", "degenerate"] == 0


def test_sentences_say_which_is_better_and_when_nothing_is_measurable(head_runs):
    sentences = controls.control_sentences(controls.qcnn_controls(head_runs), "quantum", "the quantum layer")
    digits = next(v for k, v in sentences.items() if k.startswith("digits 3 vs 8"))
    fashion = next(v for k, v in sentences.items() if k.startswith("fashion-mnist"))
    assert "[controls]" in next(k for k in sentences if k.startswith("digits"))
    assert any(s.startswith("quantum − linear = +0.100 [") and "quantum won in all 5 seeds" in s
               and s.endswith("quantum better.") for s in digits)
    assert any(s.startswith("quantum − mlp") and "no measurable difference" in s for s in digits)
    assert any("cnn-linear" in s and "1 of its 5 runs predicted one class (degenerate)" in s for s in digits)
    assert digits[-1].startswith("quantum is better beyond noise than linear")
    assert fashion[-1] == ("The quantum layer adds nothing measurable here: no corrected interval excludes 0 in its "
                           "favour.")
    assert any("no measurable difference" in s for s in fashion)


def test_a_control_better_than_the_quantum_model_is_named(tmp_path):
    for seed, (q, lin) in enumerate([(0.70, 0.80), (0.72, 0.81), (0.71, 0.83), (0.70, 0.79), (0.73, 0.84)]):
        head_run(tmp_path, "quantum", seed, q)
        head_run(tmp_path, "linear", seed, lin)
    table = controls.qcnn_controls(load_runs(tmp_path))
    assert table.set_index("model").loc["linear", "verdict"] == "linear better"
    (lines,) = controls.control_sentences(table, "quantum", "the quantum layer").values()
    assert lines[-1] == ("The quantum layer adds nothing measurable here: no corrected interval excludes 0 in its "
                         "favour; linear is better than quantum beyond noise.")


def test_weak_evidence_is_never_a_verdict(tmp_path):
    # three identical one-image differences: said as the same difference in every seed, never "[+0.006, +0.006]"
    for seed, q in enumerate([0.900, 0.910, 0.920]):
        head_run(tmp_path, "quantum", seed, q)
        head_run(tmp_path, "mlp", seed, q - 0.006)
    table = controls.qcnn_controls(load_runs(tmp_path))
    row = table.set_index("model").loc["mlp"]
    assert bool(row["identical"]) and row["verdict"] == controls.SAME_EVERY_SEED
    (lines,) = controls.control_sentences(table, "quantum", "the quantum layer").values()
    assert any("+0.006 in every one of 3 paired seeds" in s for s in lines)
    assert not any("[+0.006, +0.006]" in s for s in lines) and not any("quantum better" in s for s in lines)


def test_losing_in_every_seed_is_said_and_holm_spans_the_report(tmp_path):
    # 4 seeds, lost in every one: too few seeds for a verdict, but the sentence says it lost in all of them
    for seed in range(4):
        head_run(tmp_path, "quantum", seed, 0.70 + 0.01 * seed)
        head_run(tmp_path, "linear", seed, 0.80 + 0.012 * seed)
    table = controls.qcnn_controls(load_runs(tmp_path))
    (lines,) = controls.control_sentences(table, "quantum", "the quantum layer").values()
    assert "quantum lost in all 4 seeds" in lines[0] and "too few seeds (under 5)" in lines[0]
    assert lines[-1].endswith("quantum lost to linear in every seed.")
    # one clear comparison (p ~ 1e-3 alone) corrected together with 40 others: no longer "better"
    row = {**dict.fromkeys(controls.TABLE_COLUMNS), "stage": "s", "dataset": "d", "classes": "", "setting": "",
           "model": "linear", "reference_minus_model": 0.02, "std_difference": 0.01, "pairs": 5, "wins": 5,
           "losses": 0, "identical": False}
    import pandas as pd
    from qmlnb import stats

    p = stats.paired_difference([0.82, 0.81, 0.83, 0.80, 0.84], [0.80, 0.80, 0.80, 0.79, 0.80])["p_value"]
    alone = pd.DataFrame([{**row, "p_value": p}])
    assert controls.correct([alone], ["quantum"])[0].loc[0, "verdict"] == "quantum better"
    many = pd.DataFrame([{**row, "p_value": p}] + [{**row, "p_value": 0.5}] * 40)
    corrected = controls.correct([many], ["quantum"])[0]
    assert corrected.loc[0, "verdict"] == "no measurable difference" and corrected.loc[0, "p_holm"] > 0.05
    # its interval widens to the corrected level (1 - 0.05 / 41) and now holds 0
    assert corrected.loc[0, "level"] == pytest.approx(1 - 0.05 / 41) and corrected.loc[0, "ci_low"] < 0


def test_seeds_pair_up_only_where_both_models_ran(tmp_path):
    for seed in (0, 1, 2):
        head_run(tmp_path, "quantum", seed, QUANTUM[seed])
    head_run(tmp_path, "linear", 1, 0.5)
    row = controls.qcnn_controls(load_runs(tmp_path)).set_index("model").loc["linear"]
    assert (row["n"], row["pairs"]) == (1, 1)
    assert row["reference_minus_model"] == pytest.approx(0.42)
    assert row["verdict"] == "one paired seed: no interval"


def qsvm_run(runs_dir, seed, qsvm_ba, rbf_ba, pixels_ba, stage=stages.FINAL, degenerate=False, n_qubits=4,
             bandwidth=0.02, std=0.05):
    params = {"dataset": "digits", "seed": seed, "n_qubits": n_qubits, "bandwidth": bandwidth}
    diagnostics, warnings = tasks.flat_diagnostics({
        "off_diagonal_mean": 0.5 ** n_qubits * 1.7, "off_diagonal_std": std, "effective_rank": 12.0,
        "gaussian_gamma": 0.3, "gaussian_correlation": 0.995, "alignment": 0.2, "bandwidth": bandwidth,
        "bandwidth_grid": [0.02, 0.1, 1.0], "bandwidth_at_grid_edge": True, "support_fraction": 0.4,
        "concentrated": std < 0.01, "gaussian_like": True, "n_samples_diagnosed": 100,
        "warnings": ["the kernel is a Gaussian in disguise"]})
    fake_run(runs_dir, "final", params, {
        "task": stages.QSVM, "stage": stage, "dataset": "digits", "classes": [3, 8], "n_train": 100, "epochs": 3,
        "n_qubits": n_qubits, "backend": "cpu", "seed": seed, "qcnn": scores(0.8), "qsvm": scores(qsvm_ba, degenerate),
        "qsvm_params": {"C": 1000.0 if n_qubits == 8 else 1.0},
        "baselines": {"cnn": {**scores(0.85), "fit_s": 2.0},
                      "rbf_svm_embeddings_alignment": {**scores(rbf_ba), "fit_s": 0.1},
                      "rbf_svm_pixels": {**scores(pixels_ba), "fit_s": 0.1}},
        "kernel_diagnostics": diagnostics, "kernel_warnings": warnings, "degenerate": degenerate})


def test_qsvm_against_its_baselines_paired_within_runs(tmp_path):
    for seed, (q, rbf, pix) in enumerate([(0.90, 0.91, 0.97), (0.92, 0.90, 0.98), (0.50, 0.89, 0.96)]):
        qsvm_run(tmp_path, seed, q, rbf, pix, degenerate=seed == 2)
    frame = load_runs(tmp_path)
    table = controls.qsvm_controls(frame).set_index("model")
    # the classical CNN (same trainer and budget as the QCNN) right after the QCNN
    assert list(table.index) == ["qsvm", "qcnn", "cnn", "rbf_svm_embeddings_alignment", "rbf_svm_pixels"]
    assert table.loc["qsvm", "degenerate"] == 1
    assert table.loc["rbf_svm_pixels", "reference_minus_model"] == pytest.approx((0.90 + 0.92 + 0.50) / 3 - 0.97)
    assert table.loc["rbf_svm_embeddings_alignment", "verdict"] == "too few seeds (under 5)"
    (lines,) = controls.control_sentences(table.reset_index(), "qsvm", "the quantum kernel").values()
    assert lines[0].startswith("qsvm: ") and "1 of its 3 runs predicted one class (degenerate)" in lines[0]
    assert lines[-1].startswith("The quantum kernel adds nothing measurable here")


def test_kernel_diagnostics_table_and_plot(tmp_path):
    qsvm_run(tmp_path, 0, 0.9, 0.9, 0.9, n_qubits=4, std=0.05)
    qsvm_run(tmp_path, 0, 0.6, 0.9, 0.9, n_qubits=8, std=0.002, bandwidth=1.0)
    diag = kernel_diagnostics.kernel_diagnostics_table(load_runs(tmp_path))
    assert list(diag["n_qubits"]) == [4, 8]
    assert list(diag["off_diagonal_std"]) == [0.05, 0.002]
    # C at the edge of its cross-validation grid is flagged like the bandwidth
    assert list(diag["C"]) == [1.0, 1000.0] and list(diag["C_at_grid_edge"]) == [False, True]
    assert "C=1000 sits on its grid's edge" in diag["warnings"].iloc[1] and "C=" not in diag["warnings"].iloc[0]
    assert list(diag["bandwidth"]) == [0.02, 1.0]
    assert diag.loc[0, "bandwidth_grid"] == "0.02 0.1 1"
    assert diag.loc[0, "warnings"] == "the kernel is a Gaussian in disguise"
    assert diag.loc[0, "gaussian_correlation"] == pytest.approx(0.995)
    fig = kernel_diagnostics.plot_kernel_concentration(diag)
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["qubits", "qubits"]


def test_no_runs_give_empty_tables(tmp_path):
    fake_run(tmp_path, "sequential", {"seed": 0}, {"task": stages.QCNN, "qcnn": scores(0.8)})
    frame = load_runs(tmp_path)
    assert controls.qcnn_controls(frame).empty
    assert controls.qsvm_controls(frame).empty
    assert kernel_diagnostics.kernel_diagnostics_table(frame).empty


def test_the_controls_grid_loads_every_head_over_seeds_on_one_split():
    sweep = grid.load_sweep(ROOT / "params" / "65-controls.yaml")
    assert sweep.stage == stages.CONTROLS
    from qmlnb.qcnn.model import HEADS

    assert {(p["head"], p["seed"]) for p in sweep.points} == {(h, s) for h in HEADS for s in (0, 1, 2)}
    assert {p["split_seed"] for p in sweep.points} == {0}
    assert {p["threads"] for p in sweep.points} == {1}


def test_a_single_seed_concludes_nothing(tmp_path):
    head_run(tmp_path, "quantum", 0, 0.9)
    head_run(tmp_path, "linear", 0, 0.7)
    table = controls.qcnn_controls(load_runs(tmp_path))
    (lines,) = controls.control_sentences(table, "quantum", "the quantum layer").values()
    assert lines[0] == ("quantum − linear = +0.200 over 1 paired seed (0.700 for linear): "
                        "one paired seed: no interval.")
    assert lines[-1].startswith("No control has two seeds paired with quantum: no interval")
