"""The notebooks' tasks record what the controls section reads: head, seeds, degenerate flags, kernel diagnostics."""
from __future__ import annotations

import math

import pytest

from qmlnb.lab import stages, tasks
from qmlnb.qsvm.baselines import BASELINES


def test_qcnn_run_with_a_linear_head_records_head_seeds_and_degenerate():
    metrics, _ = tasks.qcnn_run(n_train=40, epochs=1, threads=1, batch_size=16, head="linear", seed=1, split_seed=0,
                                progress=False)
    assert metrics["head"] == "linear"
    assert (metrics["seed"], metrics["split_seed"]) == (1, 0)
    assert isinstance(metrics["degenerate"], bool)
    assert metrics["degenerate"] == metrics["qcnn"]["degenerate"]


def test_qcnn_run_splits_with_its_seed_unless_told_and_refuses_bad_heads():
    metrics, _ = tasks.qcnn_run(n_train=40, epochs=1, threads=1, batch_size=16, seed=2, progress=False)
    assert (metrics["head"], metrics["split_seed"]) == ("quantum", 2)
    with pytest.raises(ValueError, match="head"):
        tasks.qcnn_run(n_train=40, epochs=1, threads=1, head="classical", progress=False)
    with pytest.raises(ValueError, match="split_seed"):
        tasks.qcnn_run(n_train=40, epochs=1, threads=1, split_seed=-1, progress=False)


def test_flat_diagnostics_keeps_scalars_and_warnings():
    flat, warnings = tasks.flat_diagnostics({"off_diagonal_mean": 0.1, "off_diagonal_std": 0.004,
                                             "bandwidth_grid": [0.02, 0.5], "concentrated": True,
                                             "thresholds": {"concentration_std": 0.01}, "warnings": ["concentrated"]})
    assert flat["off_diagonal_std"] == 0.004 and flat["concentrated"] is True
    assert flat["bandwidth_grid"] == "0.02 0.5"
    assert flat["gaussian_correlation"] is None  # absent: recorded as missing, never invented
    assert all(not isinstance(v, (dict, list)) for v in flat.values())
    assert warnings == ["concentrated"]
    assert tasks.flat_diagnostics(None) == ({}, [])


def test_qsvm_run_records_kernel_diagnostics_every_baseline_and_degenerate_models():
    metrics, _ = tasks.qsvm_run(n_train=60, epochs=1, threads=1, batch_size=16, progress=False)
    diag = metrics["kernel_diagnostics"]
    assert 0 <= diag["off_diagonal_mean"] <= 1 and diag["off_diagonal_std"] >= 0
    assert math.isfinite(diag["gaussian_correlation"]) and diag["effective_rank"] >= 1
    assert diag["bandwidth"] == metrics["qsvm_params"]["bandwidth"]
    assert isinstance(metrics["kernel_warnings"], list)
    assert set(metrics["baselines"]) == {*BASELINES, stages.CNN_BASELINE}
    assert "rbf_svm_embeddings_alignment" in metrics["baseline_diagnostics"]
    models = {"qcnn": metrics["qcnn"], "qsvm": metrics["qsvm"], **metrics["baselines"]}
    assert metrics["degenerate_models"] == sorted(m for m, s in models.items() if s["degenerate"])
    assert metrics["degenerate"] == metrics["qsvm"]["degenerate"]
    assert metrics["seed"] == 0


def test_qsvm_run_trains_the_classical_cnn_with_the_qcnns_budget_unless_told_not_to():
    small = dict(n_train=60, epochs=1, threads=1, batch_size=16, progress=False)
    metrics, tables = tasks.qsvm_run(baselines=False, **small)
    cnn = metrics["baselines"][stages.CNN_BASELINE]
    assert set(metrics["baselines"]) == {stages.CNN_BASELINE}  # the CNN does not need the sklearn baselines
    for score in ("accuracy", "f1", "roc_auc", "balanced_accuracy"):
        assert 0 <= cnn[score] <= 1
    assert isinstance(cnn["degenerate"], bool)
    assert (stages.CNN_BASELINE in metrics["degenerate_models"]) == cnn["degenerate"]
    assert cnn["fit_s"] > 0 and cnn["fit_s"] == metrics["timings"]["cnn_train_s"]
    assert tables["timings"]["cnn_train"].iloc[0] == cnn["fit_s"]
    assert metrics["timings"]["total_s"] > metrics["timings"]["train_s"] + cnn["fit_s"]
    # the same trainer, budget, seed and split as a stand-alone cnn-linear training: the same scores
    alone, _ = tasks.qcnn_run(head="cnn-linear", **small)
    assert {k: cnn[k] for k in alone["qcnn"]} == alone["qcnn"]

    off, _ = tasks.qsvm_run(baselines=False, cnn_baseline=False, **small)
    assert off["baselines"] == {} and "cnn_train_s" not in off["timings"]
