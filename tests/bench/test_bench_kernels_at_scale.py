"""``bench kernels-at-scale``: a grid's runs pooled as the report pools them, with their provenance."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from qmlnb.bench import kernels_at_scale as bench
from qmlnb.bench.results import DirtyTreeError
from qmlnb.lab import runs

from test_kernels_at_scale import PCA, scale_run  # fabricated complete kernels-at-scale runs


def _set_git(folder, dirty):
    """Rewrite a run's recorded git state (what the run's tree was when it ran)."""
    path = folder / runs.METRICS_FILE
    metrics = json.loads(path.read_text())
    metrics["environment"]["git"] = {"commit": "abc123", "dirty": dirty}
    path.write_text(json.dumps(metrics))


@pytest.fixture
def grid_runs(tmp_path):
    folders = [scale_run(tmp_path, seed, rows) for seed, rows in PCA.items()]
    for folder in folders:
        _set_git(folder, False)
    return tmp_path, folders


def test_the_grids_runs_are_pooled_over_seeds_with_their_commits(grid_runs):
    runs_dir, _ = grid_runs
    result = bench.grid_summary(runs_dir, "kernels-at-scale")
    assert result["runs"] == 5 and result["seeds"] == [0, 1, 2, 3, 4]
    assert result["commits"] == {"abc123": 5} and result["dirty_runs"] == []
    rows = {row["n_qubits"]: row for row in result["rows"]}
    assert set(rows) == {4, 64} and all(row["n"] == 5 for row in rows.values())

    assert rows[4]["difference"] == pytest.approx(-0.10, abs=1e-9) and rows[4]["ci_high"] < 0
    assert rows[4]["projected"] is None  # NaN (no projected kernel scored) becomes null, valid JSON
    json.dumps(result, allow_nan=False)


def test_another_grids_folder_is_not_pooled_and_an_empty_grid_is_refused(grid_runs):
    runs_dir, _ = grid_runs
    with pytest.raises(ValueError, match="no complete kernels-at-scale run of grid 'kernels-at-scale-large'"):
        bench.grid_summary(runs_dir, "kernels-at-scale-large")


def test_a_run_from_a_dirty_tree_is_refused_unless_allowed(grid_runs, tmp_path_factory):
    runs_dir, folders = grid_runs
    _set_git(folders[2], True)
    assert bench.grid_summary(runs_dir, "kernels-at-scale")["dirty_runs"] == [folders[2].name]
    out = tmp_path_factory.mktemp("out") / "kas.json"
    args = SimpleNamespace(runs_dir=runs_dir, grid="kernels-at-scale", json=out, allow_dirty=False)
    with pytest.raises(DirtyTreeError):  # the tree check or the dirty run: either way nothing is written
        bench.run(args)
    assert not out.exists()
    bench.run(SimpleNamespace(**{**vars(args), "allow_dirty": True}))
    written = json.loads(out.read_text())
    assert written["provenance"]["allow_dirty"] is True and written["dirty_runs"] == [folders[2].name]
    assert written["benchmark"] == "kernels-at-scale" and len(written["rows"]) == 2
