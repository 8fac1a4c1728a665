"""Run folders: atomic writes, status markers, names and listing."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from qmlnb import runs


def test_atomic_write_json_round_trip_and_no_temporaries(tmp_path):
    path = runs.atomic_write_json(tmp_path / "sub" / "m.json", {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = runs.atomic_write_text(tmp_path / "metrics.json", "old")

    def crash(*args):
        raise KeyboardInterrupt  # e.g. the sweep is killed between write and rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_unserialisable_json_is_refused_before_touching_the_file(tmp_path):
    path = runs.atomic_write_json(tmp_path / "p.json", {"ok": 1})
    with pytest.raises(TypeError):
        runs.atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}


def test_write_table_csv_parquet_and_bad_suffix(tmp_path):
    table = pd.DataFrame({"n": [1, 2], "t": [0.5, 0.25]})
    pd.testing.assert_frame_equal(pd.read_csv(runs.write_table(tmp_path / "t.csv", table)), table)
    pd.testing.assert_frame_equal(pd.read_parquet(runs.write_table(tmp_path / "t.parquet", table)), table)
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        runs.write_table(tmp_path / "t.xlsx", table)


def test_run_name_is_sorted_safe_and_bounded():
    assert runs.run_name({"threads": 2, "backend": "cpu"}) == "backend-cpu_threads-2"
    assert runs.run_name({"sizes": [100, 200], "path": "a/b c"}) == "path-a-b-c_sizes-100-200"
    assert runs.run_name({}) == "defaults"
    long_a = runs.run_name({"x": "a" * 300})
    long_b = runs.run_name({"x": "a" * 299 + "b"})
    assert len(long_a) <= runs.MAX_NAME and long_a != long_b


def test_status_markers(tmp_path):
    run = tmp_path / "grid" / "run"
    assert runs.read_status(run) is None and not runs.is_complete(run)
    runs.write_status(run, runs.RUNNING)
    assert not runs.is_complete(run)
    runs.write_status(run, runs.FAILED, error="boom")
    assert runs.read_status(run)["error"] == "boom" and not runs.is_complete(run)
    runs.write_status(run, runs.COMPLETE, seconds=1.0)
    assert runs.is_complete(run)
    with pytest.raises(ValueError, match="status must be one of"):
        runs.write_status(run, "done")
    (run / runs.STATUS_FILE).write_text("{torn")
    assert runs.read_status(run)["status"] == runs.RUNNING and not runs.is_complete(run)


def test_iter_runs_filters_by_status_and_clear_run(tmp_path):
    for name, status in [("a", runs.COMPLETE), ("b", runs.FAILED), ("c", runs.SKIPPED)]:
        runs.write_status(tmp_path / "g" / name, status)
    (tmp_path / "g" / "never-started").mkdir()
    assert [p.name for p in runs.iter_runs(tmp_path)] == ["a"]
    assert [p.name for p in runs.iter_runs(tmp_path, status=None)] == ["a", "b", "c"]
    assert list(runs.iter_runs(tmp_path / "absent")) == []
    (tmp_path / "g" / "b" / "sub").mkdir()
    runs.clear_run(tmp_path / "g" / "b")
    assert list((tmp_path / "g" / "b").iterdir()) == []


def test_atomic_writes_give_files_the_usual_permissions(tmp_path):
    import os
    import stat

    from qmlnb.runs import UMASK, atomic_write_text

    path = atomic_write_text(tmp_path / "summary.html", "<html></html>")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~UMASK
