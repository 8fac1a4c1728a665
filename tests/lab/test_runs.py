"""Run folders: atomic writes, status markers, names, locks, clearing and listing."""
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmlnb.lab import runs
from qmlnb import _util


def test_atomic_write_json_round_trip_and_no_temporaries(tmp_path):
    path = _util.atomic_write_json(tmp_path / "sub" / "m.json", {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = _util.atomic_write_text(tmp_path / "metrics.json", "old")

    def crash(*args):
        raise KeyboardInterrupt  # e.g. the sweep is killed between write and rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _util.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_unserialisable_json_is_refused_before_touching_the_file(tmp_path):
    path = _util.atomic_write_json(tmp_path / "p.json", {"ok": 1})
    with pytest.raises(TypeError):
        _util.atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}


def test_write_table_csv_parquet_and_bad_suffix(tmp_path):
    table = pd.DataFrame({"n": [1, 2], "t": [0.5, 0.25]})
    pd.testing.assert_frame_equal(pd.read_csv(runs.write_table(tmp_path / "t.csv", table)), table)
    pd.testing.assert_frame_equal(pd.read_parquet(runs.write_table(tmp_path / "t.parquet", table)), table)
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        runs.write_table(tmp_path / "t.xlsx", table)


def test_run_name_is_sorted_readable_safe_and_bounded():
    name = runs.run_name({"threads": 2, "backend": "cpu"})
    assert name == runs.run_name({"backend": "cpu", "threads": 2})  # key order does not matter
    assert name.startswith("backend-cpu_threads-2__") and len(name) == len("backend-cpu_threads-2__") + runs.HASH_CHARS
    assert runs.run_name({"sizes": [100, 200], "path": "a/b c"}).startswith("path-a-b-c_sizes-100-200__")
    assert runs.run_name({}).startswith("defaults__")
    long_a = runs.run_name({"x": "a" * 300})
    long_b = runs.run_name({"x": "a" * 299 + "b"})
    assert len(long_a) <= runs.MAX_NAME and long_a != long_b


POINTS = [{"a": 1}, {"a": -1}, {"a": 1.0}, {"a": "1"}, {"a": True}, {"a": None}, {"a": "None"},
          {"a": "a b"}, {"a": "a-b"}, {"a": "a/b"}, {"a": "a_b"}, {"a": [1, 2]}, {"a": "[1, 2]"}, {"a": [[1], 2]},
          {"a": {"k": 1}}, {"a": 1, "b": 2}, {"a-1_b": 2}, {"a": "../.."}, {"a": "."}, {}, {"a": ""},
          {"x": "a" * 300}, {"x": "a" * 299 + "b"}]


def test_run_names_are_injective_and_single_safe_path_components():
    names = [runs.run_name(point) for point in POINTS]
    assert len(set(names)) == len(POINTS)  # 1 and -1, "a b" and "a/b" ... each get their own folder
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+_-]*", name) and len(name) <= runs.MAX_NAME
        assert Path(name).name == name and name not in (".", "..")
    assert runs.canonical_json({"b": [1, 2.0], "a": "x"}) == '{"a":"x","b":[1,2.0]}'


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
    runs.clear_run(tmp_path / "g" / "b", tmp_path)
    assert list((tmp_path / "g" / "b").iterdir()) == []


def test_clear_run_refuses_anything_not_inside_the_runs_folder(tmp_path):
    runs_dir, outside = tmp_path / "runs", tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_text("precious")
    link = runs_dir / "g" / "linked"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    for target in (outside, runs_dir / ".." / "outside", runs_dir / "g" / ".." / "..", runs_dir, link):
        with pytest.raises(runs.RunPathError, match="not inside the runs folder"):
            runs.clear_run(target, runs_dir)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt", "sub"]
    # inside: emptied, symlinks removed (never followed), the lock file kept
    run = runs_dir / "g" / "ok"
    runs.write_status(run, runs.FAILED)
    (run / "sub").mkdir()
    (run / "to-outside").symlink_to(outside)
    (run / runs.LOCK_FILE).write_text("")
    runs.clear_run(run, runs_dir)
    assert [p.name for p in run.iterdir()] == [runs.LOCK_FILE]
    assert (outside / "keep.txt").read_text() == "precious"


def test_run_lock_is_exclusive_across_processes_and_names_its_holder(tmp_path):
    run = tmp_path / "g" / "r"
    run.mkdir(parents=True)
    with runs.RunLock(run):
        with pytest.raises(runs.RunBusy, match=f"held by pid {os.getpid()}") as busy:
            with runs.RunLock(run):
                pass
        assert busy.value.pid == os.getpid()
    holder = subprocess.Popen(  # another process holds it, as a second sweep would
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode()); "
         "print('locked', flush=True); "
         "time.sleep(600)", str(run / runs.LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(runs.RunBusy) as busy:
            runs.RunLock(run).__enter__()
        assert busy.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    with runs.RunLock(run) as lock:  # a dead holder leaves no stale lock
        assert lock.holder() == os.getpid()


def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
    path = _util.atomic_write_text(tmp_path / "status.json", "old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write to a full disk raises: no file name

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as err:
        _util.atomic_write_text(path, "new")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_atomic_writes_give_files_the_usual_permissions(tmp_path):
    import os
    import stat

    from qmlnb._util import UMASK, atomic_write_text

    path = atomic_write_text(tmp_path / "summary.html", "<html></html>")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~UMASK
