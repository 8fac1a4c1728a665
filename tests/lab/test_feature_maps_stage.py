"""The feature-maps stage: registry and spec-file maps, the run's metrics naming each map, its grid."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.lab import stages, tasks


def test_registry_and_spec_file_resolve_to_circuit_feature_maps():
    for name in ("zz", "iqp", "angle-y", "reupload"):
        fm = tasks.resolve_feature_map(name, 4)
        assert fm.n_qubits == 4 and fm.label.startswith(f"{name}#")
    spec = tasks.resolve_feature_map("params/feature-maps/cz-ladder.yaml", 4)
    assert spec.name == "cz-ladder" and len(spec.spec_hash()) == 8
    S = spec.states(np.random.default_rng(0).uniform(0, np.pi, (3, 4)))
    np.testing.assert_allclose(np.linalg.norm(S, axis=1), 1.0, atol=1e-6)


def test_bad_feature_map_names_and_specs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="feature_map must be one of"):
        tasks.resolve_feature_map("nope", 4)
    with pytest.raises(ValueError, match="no such file"):
        tasks.resolve_feature_map(str(tmp_path / "missing.yaml"), 4)
    with pytest.raises(ValueError, match="reads 4 features but n_qubits=3"):
        tasks.resolve_feature_map("params/feature-maps/cz-ladder.yaml", 3)


def test_run_records_the_map_name_and_hash_beside_rbf():
    metrics, tables = tasks.feature_map_qsvm(n_train=60, feature_map="reupload", n_qubits=3,
                                                    bandwidths=(0.5, 1.0))
    assert metrics["task"] == stages.FEATURE_MAP_TASK
    assert metrics["feature_map_label"] == f"reupload#{metrics['feature_map_hash']}"
    assert 0 <= metrics["qsvm"]["balanced_accuracy"] <= 1
    assert "rbf_svm_embeddings_alignment" in metrics["baselines"]
    K = tables[stages.KERNEL_SAMPLE].to_numpy()
    np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-5)


def test_the_grid_loads_with_its_stage():
    from qmlnb.lab.grid import load_sweep

    sweep = load_sweep("params/80-feature-maps.yaml")
    assert sweep.stage == stages.FEATURE_MAPS
    assert len(sweep.points) == 3


def test_report_table_names_each_map(tmp_path):
    import pandas as pd

    from qmlnb.lab.report.feature_maps import feature_map_table

    rows = []
    for label, seed, acc in [("zz#0d1f9eb4", 0, 0.9), ("zz#0d1f9eb4", 1, 0.8), ("mine#12345678", 0, 0.7)]:
        rows.append({"stage": stages.FEATURE_MAPS, "task": stages.FEATURE_MAP_TASK, "dataset": "digits",
                     "feature_map_label": label, "n_qubits": 4, "n_train": 120, "feature_map_gates": 10,
                     "seed": seed, "bandwidth": 0.5, "qsvm.balanced_accuracy": acc,
                     "baselines.rbf_svm_embeddings_alignment.balanced_accuracy": 0.95})
    table = feature_map_table(pd.DataFrame(rows))
    assert list(table["feature_map_label"]) == ["mine#12345678", "zz#0d1f9eb4"]
    assert list(table["n"]) == [1, 2]
    assert table["qsvm_balanced_accuracy"].iloc[1] == pytest.approx(0.85)
    assert feature_map_table(pd.DataFrame()).empty


@pytest.mark.slow  # a real notebook run through the sweep
def test_the_notebook_runs_in_a_sweep(tmp_path):
    import json
    from pathlib import Path

    import yaml

    from qmlnb.lab import runs, sweep

    root = Path(__file__).resolve().parents[2]
    grid = tmp_path / "fm.yaml"
    grid.write_text(yaml.safe_dump({"name": "fm", "stage": stages.FEATURE_MAPS,
                                    "notebook": str(root / "notebooks" / "50-feature-maps.ipynb"),
                                    "grid": {"n_train": [50], "n_qubits": [3], "feature_map": ["zz"]}}))
    summary = sweep.run_sweeps([sweep.load_sweep(grid, tmp_path / "runs")], jobs=1, cores=1, progress=False)
    assert summary["failed"] == 0, summary["failures"]
    [folder] = list(runs.iter_runs(tmp_path / "runs"))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["stage"] == stages.FEATURE_MAPS and metrics["feature_map_label"].startswith("zz#")
