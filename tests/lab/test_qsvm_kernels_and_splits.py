"""The QSVM task's fixed split (split_seed apart from the seed), the repeated-split mode the report pools, and
the three kernels side by side (fidelity, projected, RBF) in the controls, headline and kernels-at-scale tables."""
from __future__ import annotations

import pandas as pd
import pytest

from qmlnb.lab import runs, stages, tasks
from qmlnb.lab.report import controls, headline, kernel_diagnostics, load_runs, scale
from qmlnb.lab.tasks import qsvm as qsvm_task
from qmlnb.qsvm.baselines import BASELINES


def scores(b):
    return {"accuracy": b, "f1": b, "roc_auc": b, "balanced_accuracy": b, "degenerate": False}


def final_run(runs_dir, seed, split_seed, qsvm_ba, projected_ba, rbf_ba):
    params = {"dataset": "digits", "seed": seed, "split_seed": split_seed, "n_qubits": 4, "projected": True}
    folder = runs_dir / "final" / runs.run_name(params)
    tasks.save_run(folder, params, {
        "task": stages.QSVM, "stage": stages.FINAL, "dataset": "digits", "classes": [3, 8], "n_train": 100,
        "epochs": 3, "n_qubits": 4, "backend": "cpu", "seed": seed, "split_seed": split_seed, "qcnn": scores(0.8),
        "qsvm": scores(qsvm_ba), "projected": {**scores(projected_ba), "fit_s": 0.2},
        "geometric_difference": {"fidelity": 3.5, "projected": 4.5}, "kernel_diagnostics": {"off_diagonal_std": 0.05},
        "baselines": {"rbf_svm_embeddings_alignment": {**scores(rbf_ba), "fit_s": 0.1},
                      "rbf_svm_pixels_full": {**scores(0.95), "fit_s": 0.3}}})
    runs.write_status(folder, runs.COMPLETE, point=params)


def test_the_split_is_drawn_by_split_seed_not_by_the_seed(monkeypatch):
    asked = {}

    def load_data(dataset, **kwargs):  # stop the run where it reads its data: only the split's seed matters here
        asked.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(qsvm_task.common, "load_data", load_data)
    with pytest.raises(RuntimeError, match="stop"):
        qsvm_task.qsvm_run(seed=7, split_seed=2, threads=1, progress=False)
    assert asked["seed"] == 2
    with pytest.raises(RuntimeError, match="stop"):
        qsvm_task.qsvm_run(seed=7, threads=1, progress=False)
    assert asked["seed"] == 0  # the default: one fixed split, whatever the seed
    with pytest.raises(ValueError, match="split_seed"):
        qsvm_task.qsvm_run(seed=0, split_seed=-1, threads=1, progress=False)


def test_repeated_splits_pool_as_distinct_repeats_and_three_kernels_sit_side_by_side(tmp_path):
    for split_seed in (0, 1):
        for seed in range(3):
            final_run(tmp_path, seed, split_seed, 0.90 + 0.01 * seed, 0.85 + 0.01 * split_seed, 0.88)
    frame = load_runs(tmp_path)
    table = controls.qsvm_controls(frame).set_index("model")
    assert list(table.index[:2]) == ["qsvm", "projected"]  # the second quantum kernel right after the first
    # 3 seeds x 2 splits: six repeats, never seed i of split 0 averaged with seed i of split 1
    assert table.loc["projected", "pairs"] == 6 and table.loc["rbf_svm_embeddings_alignment", "pairs"] == 6
    assert table.loc["projected", "reference_minus_model"] == pytest.approx(0.91 - 0.855)
    diag = kernel_diagnostics.kernel_diagnostics_table(frame)
    assert len(diag) == 6 and (diag["g_fidelity"] == 3.5).all() and (diag["g_projected"] == 4.5).all()
    for final in headline.final_tables(frame):  # one headline table per split (its budget names the split)
        assert {"QSVM", "projected QSVM", "RBF SVM (all pixels)"} <= set(final["model"])


def test_every_baseline_has_a_report_name():
    # the names live once, in headline.py, and cover every baseline the library can run
    assert set(BASELINES) <= set(headline.SHORT_NAMES) and set(BASELINES) <= set(headline.LONG_NAMES)
    assert headline.SHORT_NAMES["rbf_svm_pixels_full"] == "RBF SVM (all pixels)"


def test_kernels_at_scale_summary_carries_the_projected_kernel_and_g():
    rows = pd.DataFrame([{"dataset": "digits", "classes": "3 vs 8", "features": "pca", "n_qubits": 4, "seed": s,
                          "split_seed": 0, "n_train": 100, "n_test": 100, "reps": 2, "method_requested": "auto",
                          "bandwidth_rule": "scaled", "backend": "cpu", "threads": 1, "method": "statevector",
                          "qsvm_balanced_accuracy": 0.9, "rbf_balanced_accuracy": 0.9 + 0.01 * s,
                          "projected_balanced_accuracy": 0.8 + 0.02 * s, "g_fidelity": 4.0, "g_projected": 6.0 + s,
                          "bandwidth": 0.5, "gram_s": 0.1} for s in range(3)])
    summary = scale.scale_summary(rows)
    assert summary.loc[0, "projected"] == pytest.approx(0.82) and summary.loc[0, "g_projected"] == pytest.approx(7.0)
    shown = scale.display_table(summary)
    assert {"projected QSVM bal. acc.", "g (fidelity)", "g (projected)"} <= set(shown.columns)
    # runs without the projected kernel show no empty columns for it
    older = scale.display_table(scale.scale_summary(rows.drop(columns=["projected_balanced_accuracy", "g_projected"])))
    assert "projected QSVM bal. acc." not in older and "g (projected)" not in older and "g (fidelity)" in older


def test_kernels_at_scale_rows_hold_three_kernels_and_g():
    _, tables = tasks.kernels_at_scale(features="pca", qubits=[4], n_train=40, n_test=40, backend="cpu", threads=1,
                                       projected=True, progress=False)
    row = tables[stages.SCALE_TABLE].iloc[0]
    for column in ("qsvm_balanced_accuracy", "rbf_balanced_accuracy", "projected_balanced_accuracy"):
        assert 0.0 <= row[column] <= 1.0
    assert row["g_fidelity"] > 0 and row["g_projected"] > 0 and row["projected_gamma"] > 0
    _, plain = tasks.kernels_at_scale(features="pca", qubits=[4], n_train=40, n_test=40, backend="cpu", threads=1,
                                      progress=False)
    assert "projected_balanced_accuracy" not in plain[stages.SCALE_TABLE] and "g_fidelity" in plain[stages.SCALE_TABLE]


def test_the_qsvm_task_records_the_projected_kernel_and_g():
    metrics, _ = tasks.qsvm_run(n_train=60, epochs=1, threads=1, cnn_baseline=False, projected=True, split_seed=1,
                                progress=False)
    assert metrics["split_seed"] == 1 and 0.0 <= metrics["projected"]["balanced_accuracy"] <= 1.0
    assert metrics["projected"]["fit_s"] > 0
    assert set(metrics["geometric_difference"]) == {"fidelity", "projected"}
    assert all(g > 0 for g in metrics["geometric_difference"].values())
