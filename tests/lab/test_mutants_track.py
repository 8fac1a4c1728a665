"""qmlnb.lab.track, track_store and track_sinks: the cases a mutmut run over the tracker showed no other test pins.

Where the stores are (the default beside the project, a tracking URI kept as given), what the entry a call returns
records, the messages of the refusals, and how a run folder's content becomes a tracker record.  Run folders are
fabricated with the tracker tests' own helper.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct
import sys
import types
import zlib
from pathlib import Path

import nbformat
import pytest
from test_track import GRID, POINTS, fabricate_run

from qmlnb import _util, cli
from qmlnb.lab import runs, track, track_sinks

if "mutmut" in sys.modules:  # collected by mutmut (make mutate) only: no other pytest session pays for it
    with contextlib.suppress(ImportError):
        # imported once, while the tests are collected: mutmut's forked test processes then share the modules
        # (mlflow alone takes seconds to import on a loaded machine, more than most of these tests)
        import mlflow.tracking  # noqa: F401
        import wandb  # noqa: F401


@pytest.fixture
def mlflow_ok():
    pytest.importorskip("mlflow", reason="the MLflow tracker (qmlnb's track extra)")
    track.require("mlflow")


def a_run(tmp_path: Path, point: dict | None = None) -> Path:
    return fabricate_run(tmp_path / "runs", point or POINTS[0])


# ------------------------------------------------------------------ where the stores are
def test_the_default_store_is_at_the_nearest_pyproject_even_above_the_runs_folder(tmp_path, monkeypatch):
    """The project (the folder holding ``pyproject.toml``) wins over ``run_dir/../..``, wherever runs/ lies."""
    project = tmp_path / "proj"
    run_dir = project / "lab" / "experiments" / "runs" / "g" / "r"
    run_dir.mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    assert track.default_store("mlflow", run_dir) == project.resolve() / "mlruns"
    assert track.default_store("wandb", run_dir) == project.resolve()
    # a folder named like it is no project file
    (project / "pyproject.toml").unlink()
    (project / "pyproject.toml").mkdir()
    assert track.default_store("wandb", run_dir) == (project / "lab" / "experiments").resolve()
    # from a notebook's folder inside the project, without run_dir: the project again
    (project / "pyproject.toml").rmdir()
    (project / "pyproject.toml").write_text("")
    monkeypatch.chdir(project / "lab")
    assert track.default_store("mlflow") == project.resolve() / "mlruns"


def test_the_default_store_near_the_filesystem_root_is_the_folder_above_the_runs_folder(monkeypatch, tmp_path):
    """Without a project: ``run_dir/../..``; a run folder too near ``/`` to have one keeps its own (no IndexError)."""
    assert track.default_store("wandb", "/qmlnb-no-such-folder/g/r") == Path("/")
    assert track.default_store("wandb", "/qmlnb-no-such-folder/r") == Path("/qmlnb-no-such-folder/r")
    monkeypatch.chdir(tmp_path)  # no run_dir: the current folder itself, however deep
    assert track.default_store("mlflow") == tmp_path.resolve() / "mlruns"


def test_log_run_records_the_store_it_wrote_to(tmp_path, monkeypatch, mlflow_ok):
    run_dir = a_run(tmp_path)
    store = tmp_path / "mlruns"
    entry = track.log_run(run_dir, "mlflow", store)
    assert entry["status"] == "logged" and entry["store"] == str(store.resolve())
    assert track.read_tracker_file(run_dir)["mlflow"]["store"] == str(store.resolve())
    # a tracking URI is kept as given, not read as a folder name
    uri = (tmp_path / "by-uri").resolve().as_uri()
    entry = track.log_run(run_dir, "mlflow", uri)
    assert (entry["status"], entry["store"]) == ("logged", uri)
    assert any((tmp_path / "by-uri").iterdir())


def test_log_run_without_a_store_uses_the_run_folders_project_not_the_current_folder(tmp_path, monkeypatch,
                                                                                     mlflow_ok):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text("")
    run_dir = a_run(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    entry = track.log_run(run_dir, "mlflow")
    assert (entry["status"], entry["store"]) == ("logged", str(project.resolve() / "mlruns"))
    assert (project / "mlruns").is_dir() and not (elsewhere / "mlruns").exists()


def test_log_run_refuses_a_folder_without_metrics_naming_it_and_the_fix(tmp_path, mlflow_ok):
    with pytest.raises(ValueError) as err:
        track.log_run(tmp_path, "mlflow", tmp_path / "mlruns")
    assert str(err.value) == (f"run_dir {tmp_path} is not a run folder: it has no metrics.json "
                              "(write it first with tasks.save_run)")


# ------------------------------------------------------------------ a sweep's tracker
def test_a_sweep_tracker_counts_each_outcome_and_records_the_store_in_each_entry(tmp_path, mlflow_ok):
    folders = [a_run(tmp_path, point) for point in POINTS]
    store = tmp_path / "mlruns"
    tracker = track.SweepTracker("mlflow", store)
    assert tracker.counts == {"logged": 0, "already_logged": 0, "failed": 0, "busy": 0}
    assert tracker.report(tmp_path / "runs") == (f"tracker mlflow ({store.resolve()}): 0 logged, 0 already logged, "
                                                 "0 failed, 0 busy")
    entries = [tracker(folder) for folder in folders] + [tracker(folders[0])]
    assert [e["status"] for e in entries] == ["logged", "logged", "already_logged"]
    assert {e["store"] for e in entries} == {str(store.resolve())}
    assert tracker.counts == {"logged": 2, "already_logged": 1, "failed": 0, "busy": 0}
    # a tracking URI is kept as given
    uri = (tmp_path / "by-uri").resolve().as_uri()
    assert track.SweepTracker("mlflow", uri).store == uri


def test_a_sweep_tracker_that_raises_is_a_failed_entry_listed_in_the_report(tmp_path, monkeypatch, mlflow_ok):
    """Whatever the tracker raises, the sweep goes on: the error is counted and reported with its run folder."""
    folders = [a_run(tmp_path, point) for point in POINTS]
    tracker = track.SweepTracker("mlflow", tmp_path / "mlruns")

    def broken(run_dir, to, store, sinks):
        raise RuntimeError(f"lock table on fire at {run_dir.name}")

    monkeypatch.setattr(track, "_log_guarded", broken)
    entries = [tracker(folder) for folder in folders]
    assert entries == [{"status": "failed", "error": f"RuntimeError: lock table on fire at {f.name}"}
                       for f in folders]
    assert tracker.counts == {"logged": 0, "already_logged": 0, "failed": 2, "busy": 0}
    assert tracker.failures == [(str(f), f"RuntimeError: lock table on fire at {f.name}") for f in folders]
    runs_dir = tmp_path / "runs"
    assert tracker.report(runs_dir).split("\n") == [
        f"tracker mlflow ({(tmp_path / 'mlruns').resolve()}): 0 logged, 0 already logged, 2 failed, 0 busy",
        *(f"  tracker FAILED {f}: RuntimeError: lock table on fire at {f.name}" for f in folders),
        f"  the runs are complete; retry with: python -m qmlnb track export {runs_dir} --to mlflow"]


# ------------------------------------------------------------------ W&B run ids and offline run files
def test_a_wandb_run_id_is_stable_across_versions():
    """Stores written before must find their runs again: the id of a given run key and content never changes."""
    rec = track.RunRecord(run_dir=Path("/r"), grid="g", name="r", fingerprint="0" * 64, params={}, metrics={},
                          info={}, env={}, environment={}, status={}, files=[], figures=[], skipped_files=[])
    assert track.wandb_run_id(rec) == "a567e3ebdfcb32c5ae992b24"  # the first 24 hex digits of SHA-256("g/r\0" + fp)
    assert track.wandb_run_id(dataclasses.replace(rec, name="s")) != track.wandb_run_id(rec)
    assert track.wandb_run_id(dataclasses.replace(rec, fingerprint="1" * 64)) != track.wandb_run_id(rec)


BLOCK = 32768


def leveldb_log(payloads: list[bytes]) -> bytes:
    """An offline W&B run file as its docstring describes the format, written independently of the reader: the
    7-byte header, then 32 KiB blocks of chunks (7-byte header: CRC32, length, type 1 full / 2 first / 3 middle /
    4 last); a block with less than 7 bytes left is padded with zeros, a record that does not fit is split."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for payload in payloads:
        first, rest = True, payload
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < 7:
                out += bytes(left)
                continue
            piece, rest = rest[:left - 7], rest[left - 7:]
            kind = (1 if not rest else 2) if first else (4 if not rest else 3)
            out += struct.pack("<IHB", zlib.crc32(piece), len(piece), kind) + piece
            first = False
            if not rest:
                break
    return bytes(out)


def test_offline_run_files_are_read_across_blocks_padding_and_split_records(tmp_path):
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2", reason="the W&B tracker (qmlnb's track extra)")

    def record(num: int, size: int):
        rec = pb.Record(num=num)
        rec.run.display_name = "x" * size
        return rec

    # the first record ends 3 bytes before the first block's end: padding, no chunk header fits there
    fill = next(n for n in range(BLOCK, 0, -1) if 7 + 7 + len(record(0, n).SerializeToString()) == BLOCK - 3)
    sizes = [fill,
             70000,                 # split: first, middle, last chunks over three blocks
             10, 40000, 5]
    records = [record(i, size) for i, size in enumerate(sizes)]
    data = leveldb_log([r.SerializeToString() for r in records])
    assert data[BLOCK - 3:BLOCK] == bytes(3)  # the padding is there
    path = tmp_path / "run-x.wandb"
    path.write_bytes(data)
    got = track.read_wandb_records(path)
    assert [(r.num, r.run.display_name) for r in got] == [(r.num, r.run.display_name) for r in records]
    # a truncated tail (a crash mid-write) is ignored: the records before it are still read
    path.write_bytes(data[:-4])
    assert [r.num for r in track.read_wandb_records(path)] == [0, 1, 2, 3]
    path.write_bytes(data[:BLOCK + 100])  # inside the split record: only the first is whole
    assert [r.num for r in track.read_wandb_records(path)] == [0]
    path.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(ValueError) as err:
        track.read_wandb_records(path)
    assert str(err.value) == f"path {path} is not a W&B run file (no ':W&B' header)"


# ------------------------------------------------------------------ the command line
def test_the_track_command_line_documents_and_parses_its_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["track", "export", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "usage: qmlnb track export [-h] --to {mlflow,wandb} [--store STORE] runs_dir" in out
    assert "positional arguments: runs_dir the runs folder (holding <grid>/<run>/ folders) options:" in out
    assert "--to {mlflow,wandb} the tracker" in out
    assert ("--store STORE mlflow: the file store folder or a tracking URI (default <project>/mlruns); wandb: the "
            "folder to write wandb/ into (default <project>)") in out
    with pytest.raises(SystemExit):
        cli.main(["track", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "export log complete run folders to MLflow or W&B (offline), skipping those already logged" in out
    parser = cli.build_parser(["track", "export"])
    args = parser.parse_args(["track", "export", "runs", "--to", "wandb"])
    assert (args.track_command, args.runs_dir, args.to, args.store) == ("export", "runs", "wandb", None)
    for bad in (["track"], ["track", "export", "runs"], ["track", "export", "runs", "--to", "tensorboard"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert "invalid choice: 'tensorboard'" in capsys.readouterr().err


def test_track_export_prints_its_progress_the_counts_and_each_failure(tmp_path, capsys, mlflow_ok):
    runs_dir = tmp_path / "runs"
    good = a_run(tmp_path)
    far = fabricate_run(tmp_path / "outside", POINTS[1])
    linked = runs_dir / GRID / "linked"
    linked.symlink_to(far)
    store = tmp_path / "mlruns"
    assert cli.main(["track", "export", str(runs_dir), "--to", "mlflow", "--store", str(store)]) == 1
    out, err = capsys.readouterr()
    assert out == f"track export to mlflow ({store.resolve()}): 1 logged, 0 already logged, 1 failed, 0 busy\n"
    why = f"not exported: {linked} is a symbolic link (not followed)"
    assert err.splitlines() == [f"[1/2] logged: {good}", f"[2/2] failed: {linked}", f"  FAILED {linked}: {why}"]
    assert sorted(p.name for p in far.iterdir()) == sorted(p.name for p in good.iterdir() if p.name != ".lock"
                                                           and p.name != track.TRACKER_FILE)
    assert cli.main(["track", "export", str(tmp_path / "nope"), "--to", "mlflow"]) == 2
    assert capsys.readouterr().err == f"qmlnb track: runs_dir {tmp_path / 'nope'} is not a folder\n"


def test_export_counts_every_outcome_and_lists_the_failures_with_their_folders(tmp_path, capsys, mlflow_ok):
    runs_dir = tmp_path / "runs"
    folders = [a_run(tmp_path, point) for point in POINTS]
    # a grid folder linked out of the runs folder: its runs lie outside, nothing is read or written there
    far = fabricate_run(tmp_path / "elsewhere", {"backend": "cpu", "n": 4})
    (runs_dir / "linked-grid").symlink_to(far.parent)
    outside = runs_dir / "linked-grid" / far.name
    store = tmp_path / "mlruns"
    summary = track.export(runs_dir, "mlflow", store)
    assert {k: v for k, v in summary.items() if k != "failures"} == {
        "logged": 2, "already_logged": 0, "failed": 1, "busy": 0, "store": str(store.resolve())}
    ((where, error),) = summary["failures"]
    assert where == str(outside) and error.startswith(f"not exported: {outside} resolves to ")
    assert not (far / track.TRACKER_FILE).exists() and not (far / runs.LOCK_FILE).exists()
    again = track.export(runs_dir, "mlflow", store)
    assert (again["logged"], again["already_logged"], again["failed"]) == (0, 2, 1)
    assert [track.read_tracker_file(f)["mlflow"]["status"] for f in folders] == ["logged", "logged"]
    assert {track.read_tracker_file(f)["mlflow"]["store"] for f in folders} == {str(store.resolve())}
    assert capsys.readouterr().err == ""  # no progress lines unless asked
    uri = (tmp_path / "by-uri").resolve().as_uri()  # a tracking URI is kept as given
    assert track.export(runs_dir, "mlflow", uri)["store"] == uri
    # a runs folder without runs: nothing opened, nothing to close, all counts 0
    (tmp_path / "empty").mkdir()
    empty = track.export(tmp_path / "empty", "mlflow", store)
    assert (empty["logged"], empty["already_logged"], empty["failed"], empty["busy"], empty["failures"]) == \
        (0, 0, 0, 0, [])


def test_one_export_opens_one_sink_and_closes_it(tmp_path, monkeypatch, mlflow_ok):
    runs_dir = tmp_path / "runs"
    for point in POINTS:
        a_run(tmp_path, point)
    opened, closed = [], []
    real_open = track.open_sink

    def counting_open(to, store):
        sink = real_open(to, store)
        opened.append((to, store))
        real_close = sink.close
        sink.close = lambda: (closed.append(to), real_close())
        return sink

    monkeypatch.setattr(track, "open_sink", counting_open)
    store = tmp_path / "mlruns"
    assert track.export(runs_dir, "mlflow", store)["logged"] == 2
    assert opened == [("mlflow", str(store.resolve()))] and closed == ["mlflow"]


# ------------------------------------------------------------------ what tracker.json records
def test_a_logged_entry_records_store_time_fingerprint_and_id(tmp_path, mlflow_ok):
    import datetime as dt

    run_dir = a_run(tmp_path)
    store = tmp_path / "mlruns"
    entry = track.log_run(run_dir, "mlflow", store)
    assert set(entry) == {"store", "time", "fingerprint", "status", "id"}
    assert entry["fingerprint"] == track.fingerprint(run_dir) and entry["store"] == str(store.resolve())
    when = dt.datetime.fromisoformat(entry["time"])
    assert when.utcoffset() == dt.timedelta(0) and when.microsecond == 0
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 600
    assert track.read_tracker_file(run_dir) == {"mlflow": entry}
    # tracker.json lost: the store answers; the file records "logged" (found there), the call "already_logged"
    (run_dir / track.TRACKER_FILE).unlink()
    again = track.log_run(run_dir, "mlflow", store)
    assert again["status"] == "already_logged" and again["id"] == entry["id"] and again["found_in_store"] is True
    recorded = track.read_tracker_file(run_dir)["mlflow"]
    assert recorded == {**again, "status": "logged"}


def test_failed_attempts_are_counted_from_the_last_failed_entry(tmp_path, mlflow_ok):
    run_dir = a_run(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    store = blocker / "mlruns"
    for previous, attempts in [(None, 1), ({"status": "failed", "attempts": 4}, 5),
                               ({"status": "failed", "attempts": "many"}, 1), ({"status": "failed", "attempts": -3}, 1),
                               ({"status": "failed", "attempts": True}, 1), ({"status": "failed"}, 1),
                               ({"status": "logged", "attempts": 4}, 1)]:
        if previous is not None:
            _util.atomic_write_json(run_dir / track.TRACKER_FILE, {"mlflow": previous, "wandb": {"status": "x"}})
        entry = track.log_run(run_dir, "mlflow", store)
        assert (entry["status"], entry["attempts"]) == ("failed", attempts), previous
        record = track.read_tracker_file(run_dir)
        assert record["mlflow"] == entry
        assert previous is None or record["wandb"] == {"status": "x"}  # the other tracker's entry is kept


def test_a_failed_entry_names_the_error_type_and_at_most_2000_characters(tmp_path, monkeypatch, mlflow_ok):
    run_dir = a_run(tmp_path)

    def long_failure(self, rec):
        raise RuntimeError("y" * 3000)

    monkeypatch.setattr(track.MlflowSink, "log", long_failure)
    entry = track.log_run(run_dir, "mlflow", tmp_path / "mlruns")
    assert entry["error"] == "RuntimeError: " + "y" * 2000
    assert set(entry) == {"store", "time", "fingerprint", "status", "error", "attempts"}


@pytest.mark.parametrize("stop", [KeyboardInterrupt, track.TrackerUnavailable])
def test_an_interrupt_or_a_missing_tracker_is_raised_not_recorded(tmp_path, monkeypatch, mlflow_ok, stop):
    run_dir = a_run(tmp_path)

    def interrupted(self, rec):
        raise stop("stop")

    monkeypatch.setattr(track.MlflowSink, "find", interrupted)
    with pytest.raises(stop):
        track.log_run(run_dir, "mlflow", tmp_path / "mlruns")
    assert not (run_dir / track.TRACKER_FILE).exists()


def test_a_tracker_json_that_cannot_be_written_is_reported_in_the_entry(tmp_path, monkeypatch, mlflow_ok):
    run_dir = a_run(tmp_path)

    def full_disk(path, value):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(track._util, "atomic_write_json", full_disk)
    entry = track.log_run(run_dir, "mlflow", tmp_path / "mlruns")
    assert entry["status"] == "logged"
    assert entry["record_error"] == "tracker.json not written: [Errno 28] No space left on device"


def test_an_unreadable_tracker_json_counts_as_absent(tmp_path):
    run_dir = a_run(tmp_path)
    for text in ("[1, 2]", "{not json", '"logged"'):
        (run_dir / track.TRACKER_FILE).write_text(text)
        assert track.read_tracker_file(run_dir) == {}
    (run_dir / track.TRACKER_FILE).write_text('{"mlflow": {"status": "logged"}}')
    assert track.read_tracker_file(run_dir) == {"mlflow": {"status": "logged"}}
    (run_dir / track.TRACKER_FILE).unlink()
    (run_dir / track.TRACKER_FILE).mkdir()  # not a file
    assert track.read_tracker_file(run_dir) == {}


def test_a_tracker_json_that_cannot_be_read_counts_as_absent(tmp_path, monkeypatch):
    run_dir = a_run(tmp_path)
    (run_dir / track.TRACKER_FILE).write_text('{"mlflow": {"status": "logged"}}')

    def io_error(path, root=None):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(runs, "read_record", io_error)
    assert track.read_tracker_file(run_dir) == {}


def test_a_busy_or_unlockable_run_folder_is_reported_with_the_store(tmp_path, monkeypatch, mlflow_ok):
    run_dir = a_run(tmp_path)
    store = tmp_path / "mlruns"

    class Busy:
        def __init__(self, folder):
            raise runs.RunBusy(folder, 4242)

    monkeypatch.setattr(runs, "RunLock", Busy)
    assert track.log_run(run_dir, "mlflow", store) == {"status": "busy", "pid": 4242, "store": str(store.resolve())}
    # the run's own notebook (its sweep holds the lock): logged without the lock, into the store asked for
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(run_dir / ".." / run_dir.name))
    entry = track.log_run(run_dir, "mlflow", store)
    assert (entry["status"], entry["store"], entry["fingerprint"]) == ("logged", str(store.resolve()),
                                                                       track.fingerprint(run_dir))
    assert track.read_tracker_file(run_dir)["mlflow"] == entry
    other = a_run(tmp_path, POINTS[1])  # another run folder while a notebook runs: still locked, so busy here
    assert track.log_run(other, "mlflow", store)["status"] == "busy"
    monkeypatch.delenv(runs.RUN_DIR_ENV)

    class Unlockable:
        def __init__(self, folder):
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runs, "RunLock", Unlockable)
    assert track.log_run(run_dir, "mlflow", store) == {
        "status": "failed", "store": str(store.resolve()), "error": "PermissionError: [Errno 13] Permission denied"}
    assert track.read_tracker_file(run_dir) == {"mlflow": entry}  # nothing written without the lock


def test_a_wandb_offline_folder_without_a_readable_run_file_is_removed_not_found(tmp_path):
    pytest.importorskip("wandb", reason="the W&B tracker (qmlnb's track extra)")
    rec = track.read_run(a_run(tmp_path))
    run_id = track.wandb_run_id(rec)
    store = tmp_path / "project"
    sink = track.WandbSink(store)
    assert sink.find(rec) is None  # no wandb/ folder yet
    missing = store / "wandb" / f"offline-run-20260101_000000-{run_id}"  # a crash before the file was written
    missing.mkdir(parents=True)
    garbage = store / "wandb" / f"offline-run-20260101_000001-{run_id}"  # not a W&B file
    garbage.mkdir()
    (garbage / f"run-{run_id}.wandb").write_bytes(b"PK\x03\x04 not a run file")
    other = store / "wandb" / "offline-run-20260101_000002-someoneelse"
    other.mkdir()
    assert sink.find(rec) is None
    assert sorted(p.name for p in (store / "wandb").iterdir()) == [other.name]


# ------------------------------------------------------------------ what a run folder becomes (track_store)
def raw_run(tmp_path: Path, metrics, params=None, status=None, name="r") -> Path:
    run_dir = tmp_path / "runs" / "g" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if params is not None:
        (run_dir / "params.json").write_text(json.dumps(params))
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps(status))
    return run_dir


def test_read_run_splits_numbers_text_and_the_environment_and_keeps_nothing_else(tmp_path):
    metrics = {"score": 3, "ok": True, "nothing": None, "nan": float("nan"), "labels": ["a", 1],
               "nested": {"deep": {"x": 0.5, "note": "hi"}},
               "environment": {"git": {"commit": "abc"}, "n": 4, "missing": None}}
    run_dir = raw_run(tmp_path, metrics, params={"n": [1, 2]}, status={"status": "complete", "time": "x"})
    rec = track.read_run(run_dir)
    assert (rec.grid, rec.name, rec.run_dir, rec.fingerprint) == ("g", "r", run_dir.resolve(),
                                                                   track.fingerprint(run_dir))
    assert rec.metrics == {"score": 3.0, "nan": pytest.approx(float("nan"), nan_ok=True), "nested.deep.x": 0.5}
    assert type(rec.metrics["score"]) is float
    assert rec.info == {"ok": "true", "labels": '["a", 1]', "nested.deep.note": "hi"}
    assert rec.env == {"git.commit": "abc", "n": "4"}
    assert rec.environment == {"git": {"commit": "abc"}, "n": 4, "missing": None}
    assert rec.params == {"n": [1, 2]} and rec.status == {"status": "complete", "time": "x"}
    # no params.json, no status.json, no environment: empty, not None
    bare = track.read_run(raw_run(tmp_path, {"score": 1}, name="bare"))
    assert (bare.params, bare.status, bare.env, bare.environment) == ({}, {}, {}, {})


def test_read_run_takes_the_artifact_files_by_kind_and_skips_hidden_and_large_ones(tmp_path, monkeypatch):
    run_dir = raw_run(tmp_path, {"score": 1}, params={}, status={"status": "complete"})
    for name in ("t.CSV", "t.parquet", "a.png", "b.svg", "c.pdf", "d.jpg", "e.jpeg", "f.html", "notes.txt",
                 ".hidden.csv", "big.csv"):
        (run_dir / name).write_bytes(b"x" * (200 if name == "big.csv" else 10))
    (run_dir / "sub.csv").mkdir()
    (run_dir / "link.csv").symlink_to(run_dir / "t.CSV")
    import qmlnb.lab.track_store as store_module

    monkeypatch.setattr(store_module, "MAX_ARTIFACT_BYTES", 199)
    rec = track.read_run(run_dir)
    assert sorted((p.name, folder) for p, folder in rec.files) == [
        ("a.png", "figures"), ("b.svg", "figures"), ("c.pdf", "figures"), ("d.jpg", "figures"),
        ("e.jpeg", "figures"), ("f.html", "figures"), ("metrics.json", "run"), ("params.json", "run"),
        ("status.json", "run"), ("t.CSV", "tables"), ("t.parquet", "tables")]
    assert rec.skipped_files == ["big.csv"]
    monkeypatch.setattr(store_module, "MAX_ARTIFACT_BYTES", 200)  # at the limit: still an artifact
    assert track.read_run(run_dir).skipped_files == []


def test_a_logged_entry_lists_the_files_too_large_to_copy(tmp_path, monkeypatch, mlflow_ok):
    import qmlnb.lab.track_store as store_module

    run_dir = a_run(tmp_path)
    (run_dir / "K.csv").write_bytes(b"0" * 5000)
    monkeypatch.setattr(store_module, "MAX_ARTIFACT_BYTES", 4999)
    entry = track.log_run(run_dir, "mlflow", tmp_path / "mlruns")
    assert (entry["status"], entry["skipped_files"]) == ("logged", ["K.csv"])


def test_read_run_refuses_what_the_lab_did_not_write_naming_the_file(tmp_path):
    run_dir = raw_run(tmp_path, [1, 2])
    with pytest.raises(ValueError) as err:
        track.read_run(run_dir)
    assert str(err.value) == (f"run_dir {run_dir.resolve()}: metrics.json is missing or not a JSON object; "
                              "only folders written by the lab (tasks.save_run) can be tracked")
    run_dir = raw_run(tmp_path, {"score": 1}, params=[1], name="p")
    with pytest.raises(ValueError) as err:
        track.read_run(run_dir)
    assert str(err.value) == f"run_dir {run_dir.resolve()}: params.json is not a JSON object"
    run_dir = raw_run(tmp_path, {"score": 1}, name="bad")
    (run_dir / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"^run_dir {run_dir.resolve()}: unreadable \(.*metrics\.json"):
        track.read_run(run_dir)


def test_text_values_are_json_with_sorted_keys_and_cut_at_the_limit():
    from qmlnb.lab.track_store import MAX_TEXT, _text

    assert _text("as is") == "as is" and _text({"b": 1, "a": [True, None]}) == '{"a": [true, null], "b": 1}'
    assert _text(Path("/p")) == '"/p"'  # anything else as its str, quoted
    exact = "z" * MAX_TEXT
    assert _text(exact) == exact
    cut = _text("z" * (MAX_TEXT + 1))
    assert len(cut) <= MAX_TEXT and cut == "z" * (MAX_TEXT - 15) + "...(truncated)"  # the start kept, marked cut


def test_a_run_ends_at_its_status_time_else_its_environment_timestamp_else_now(tmp_path):
    import datetime as dt

    rec = track.read_run(raw_run(tmp_path, {"environment": {"timestamp": "2026-01-02T03:04:05+00:00"}},
                                 status={"status": "complete", "time": "2026-05-06T07:08:09.250+00:00"}))
    assert rec.timestamp_ms() == int(dt.datetime(2026, 5, 6, 7, 8, 9, 250000, dt.timezone.utc).timestamp() * 1000)
    rec.status["time"] = "not a time"
    assert rec.timestamp_ms() == int(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc).timestamp() * 1000)
    rec.status.pop("time")
    rec.environment.pop("timestamp")
    now = dt.datetime.now(dt.timezone.utc).timestamp() * 1000
    assert abs(rec.timestamp_ms() - now) < 60_000


def test_the_fingerprint_covers_params_and_metrics_and_which_file_holds_what(tmp_path):
    a = raw_run(tmp_path, {"s": 1}, params={"n": 1}, name="a")
    prints = {track.fingerprint(a)}
    b = raw_run(tmp_path, {"s": 1}, params={"n": 2}, name="b")
    c = raw_run(tmp_path, {"s": 2}, params={"n": 1}, name="c")
    d = raw_run(tmp_path, {"s": 1}, name="d")  # no params.json
    (d / "status.json").write_text("{}")  # status, tables and the rest do not count
    prints |= {track.fingerprint(f) for f in (b, c, d)}
    assert len(prints) == 4
    assert track.fingerprint(raw_run(tmp_path, {"s": 1}, params={"n": 1}, name="e")) == track.fingerprint(a)
    # the same bytes in the other file is another run
    swapped = raw_run(tmp_path, {"n": 1}, params={"s": 1}, name="f")
    assert track.fingerprint(swapped) != track.fingerprint(a)
    # stores written before must find their runs again: the fingerprint of given files never changes
    assert track.fingerprint(a) == "d549ffca7e881d83340ba9ec8b0045dbddde9ea8502877008d03c400b1a8f350"
    assert track.fingerprint(d) == "9ac7ad0f687576555ebf20829cfcced1394127682881255fc54718116d5da64b"


def test_notebook_image_outputs_become_named_figures(tmp_path):
    import base64

    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    svg = "<svg xmlns='http://www.w3.org/2000/svg'/>"
    jpeg = b"\xff\xd8\xff fake jpeg"
    png = b"\x89PNG fake"
    nb = new_notebook(cells=[
        new_markdown_cell("text"),
        new_code_cell("a", outputs=[new_output("stream", name="stdout", text="no data"),
                                    new_output("display_data", data={"text/plain": "x"})]),
        new_code_cell("b", outputs=[
            new_output("display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<F>"}),
            new_output("execute_result", execution_count=1, data={"image/svg+xml": [svg[:10], svg[10:]],
                                                                  "image/jpeg": base64.b64encode(jpeg).decode()})]),
    ] + [new_code_cell("c") for _ in range(8)] + [new_code_cell("d", outputs=[
        new_output("display_data", data={"image/png": base64.b64encode(png).decode()})])])
    run_dir = raw_run(tmp_path, {"s": 1})
    nbformat.write(nb, run_dir / "10-x.ipynb")
    rec = track.read_run(run_dir)
    figures = [("10-x-cell02-0.png", png), ("10-x-cell02-1.svg", svg.encode()), ("10-x-cell02-2.jpg", jpeg),
               ("10-x-cell11-0.png", png)]
    assert rec.figures == figures
    nbformat.write(nb, run_dir / "20-y.ipynb")  # every notebook's figures, not the last one's
    assert track.read_run(run_dir).figures == figures + [(name.replace("10-x", "20-y"), b) for name, b in figures]
    (run_dir / "20-y.ipynb").unlink()
    (run_dir / "10-x.ipynb").write_text("not a notebook")
    rec = track.read_run(run_dir)
    assert rec.figures == [] and ("10-x.ipynb", "notebook") in [(p.name, f) for p, f in rec.files]


def test_store_locations_and_tracker_names(tmp_path, monkeypatch):
    assert track.store_location("mlflow", "http://host:5000") == "http://host:5000"
    assert track.store_location("mlflow", "sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.chdir(tmp_path)
    # for W&B a store is always a folder, even one whose name looks like a URI
    assert track.store_location("wandb", "a://b") == str((tmp_path / "a:" / "b").resolve())
    assert track.store_location("mlflow", "rel") == str(tmp_path.resolve() / "rel")
    assert track.check_tracker_name("wandb") == "wandb"
    with pytest.raises(ValueError, match=r"^to must be one of \('mlflow', 'wandb'\), got 'neptune'$"):
        track.check_tracker_name("neptune")
    with pytest.raises(ValueError, match=r"^to must be one of"):
        track.default_store("neptune")
    with pytest.raises(ValueError, match=r"^to must be one of"):
        track.require("neptune")


def test_requiring_mlflow_allows_its_file_store_and_a_missing_tracker_names_the_extra(monkeypatch):
    pytest.importorskip("mlflow", reason="the MLflow tracker (qmlnb's track extra)")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert track.require("mlflow").__name__ == "mlflow"
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # the user's own setting wins
    track.require("mlflow")
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "false"
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(track.TrackerUnavailable) as err:
        track.require("mlflow")
    assert str(err.value).startswith("the mlflow tracker needs the optional packages of qmlnb's 'track' extra: "
                                     'pip install -e ".[track]" (')
    assert isinstance(err.value, ImportError)


# ------------------------------------------------------------------ what the W&B sink hands to wandb
class FakeWandbRun:
    """Stands in for the run ``wandb.init`` returns: records what the sink logs into it."""

    def __init__(self, fail_on_summary=False):
        self.summary, self.artifacts, self.finished = self, [], []
        self.values, self.fail_on_summary = {}, fail_on_summary

    def update(self, values):  # run.summary.update
        if self.fail_on_summary:
            raise RuntimeError("summary rejected")
        self.values.update(values)

    def log_artifact(self, artifact):
        self.artifacts.append(artifact)

    def finish(self, exit_code=None):
        self.finished.append(exit_code)


def fake_wandb_init(monkeypatch, run: FakeWandbRun) -> list:
    wandb = pytest.importorskip("wandb", reason="the W&B tracker (qmlnb's track extra)")
    calls = []

    def init(**kwargs):
        calls.append({**kwargs, "env": {var: os.environ.get(var) for var in track_sinks.WANDB_DIR_ENV}})
        return run

    monkeypatch.setattr(wandb, "init", init)
    for var in track_sinks.WANDB_DIR_ENV:
        monkeypatch.delenv(var, raising=False)
    return calls


def test_the_wandb_sink_logs_an_offline_silent_run_with_the_records_content(tmp_path, monkeypatch):
    run_dir = a_run(tmp_path)
    rec = track.read_run(run_dir)
    run = FakeWandbRun()
    calls = fake_wandb_init(monkeypatch, run)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "mine"))  # a folder the user chose is kept
    store = tmp_path / "project"
    assert track.WandbSink(store).log(rec) == track.wandb_run_id(rec)
    (call,) = calls
    settings = call.pop("settings")
    assert (settings.silent, settings.console, settings.disable_git, settings.save_code, settings.x_disable_stats,
            settings.x_disable_machine_info) == (True, "off", True, False, True, True)
    env = rec.env
    assert call == {
        "project": "qmlnb", "group": GRID, "name": run_dir.name, "id": track.wandb_run_id(rec),
        "dir": str(store.resolve()), "mode": "offline", "job_type": "qmlnb-run", "reinit": "create_new",
        "tags": [f"commit:{env['git.commit'][:12]}", f"host:{env['machine.hostname']}"],
        "config": {**POINTS[0], "qmlnb": {"run_key": rec.key, "fingerprint": rec.fingerprint,
                                          "run_dir": str(rec.run_dir), "status": "complete",
                                          "time": rec.status["time"], "environment": rec.environment}},
        "env": {"WANDB_DATA_DIR": str(store.resolve() / "wandb" / ".data"),
                "WANDB_CACHE_DIR": str(store.resolve() / "wandb" / ".cache"),
                "WANDB_CONFIG_DIR": str(tmp_path / "mine")}}
    # the variables are set only while logging
    assert [os.environ.get(v) for v in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR")] == [None, None]
    assert os.environ["WANDB_CONFIG_DIR"] == str(tmp_path / "mine")
    assert run.values == {**rec.info, **rec.metrics} and run.finished == [None]
    (artifact,) = run.artifacts
    assert (artifact.name, artifact.type) == (f"{GRID}-{run_dir.name}", "qmlnb-run")
    assert artifact.metadata == {"run_key": rec.key, "fingerprint": rec.fingerprint}
    assert set(artifact.manifest.entries) == {"tables/scores.csv", "figures/20-qsvm-cell00-0.png",
                                              "notebook/20-qsvm.ipynb", "run/params.json", "run/metrics.json",
                                              "run/status.json"}


def test_the_wandb_sink_tags_only_what_the_environment_has_and_cuts_the_host_tag(tmp_path, monkeypatch):
    rec = track.read_run(a_run(tmp_path))
    rec.env = {"machine.hostname": "h" * 100}
    run = FakeWandbRun()
    calls = fake_wandb_init(monkeypatch, run)
    track.WandbSink(tmp_path / "p").log(rec)
    assert calls[-1]["tags"] == ["host:" + "h" * 59]
    rec.env = {"git.commit": "0123456789abcdef"}
    track.WandbSink(tmp_path / "p").log(rec)
    assert calls[-1]["tags"] == ["commit:0123456789ab"]
    rec.name = "r" * 200  # a long run name: the artifact's name ends with the run id
    track.WandbSink(tmp_path / "p").log(rec)
    assert run.artifacts[-1].name == f"{GRID}-{'r' * 200}"[:95] + "-" + track.wandb_run_id(rec)


def test_a_wandb_run_that_fails_while_logging_is_finished_with_exit_code_1(tmp_path, monkeypatch):
    rec = track.read_run(a_run(tmp_path))
    run = FakeWandbRun(fail_on_summary=True)
    fake_wandb_init(monkeypatch, run)
    with pytest.raises(RuntimeError, match="summary rejected"):
        track.WandbSink(tmp_path / "p").log(rec)
    assert run.finished == [1] and run.artifacts == []
    assert "WANDB_DATA_DIR" not in os.environ  # restored after a failure too


def test_wandb_artifact_names_keep_safe_characters_and_stay_short():
    rec = track.RunRecord(run_dir=Path("/r"), grid="G rid", name="a/b:c.Z_9-é", fingerprint="0" * 64, params={},
                          metrics={}, info={}, env={}, environment={}, status={}, files=[], figures=[],
                          skipped_files=[])
    assert track_sinks._wandb_artifact_name(rec, "ID") == "G_rid-a_b_c.Z_9-_"
    rec.grid = "g"
    for length in (121, 200):  # over 120 characters: the first 95 and the run id
        rec.name = "n" * (length - 2)
        assert track_sinks._wandb_artifact_name(rec, "ID") == ("g-" + "n" * (length - 2))[:95] + "-ID"
    rec.name = "n" * 118  # exactly 120: kept
    assert track_sinks._wandb_artifact_name(rec, "ID") == "g-" + "n" * 118


def test_closing_the_wandb_sink_stops_wandbs_service_unless_the_caller_has_a_run(tmp_path):
    pytest.importorskip("wandb", reason="the W&B tracker (qmlnb's track extra)")
    sink = track.WandbSink(tmp_path)
    stopped = []

    def teardown():
        stopped.append(True)
        raise RuntimeError("service already gone")  # never raised out of close()

    sink.wandb = types.SimpleNamespace(run=None, teardown=teardown)
    sink.close()
    assert stopped == [True]
    sink.wandb = types.SimpleNamespace(run=object(), teardown=teardown)  # the notebook's own run: left running
    sink.close()
    assert stopped == [True]


def test_the_wandb_sink_passes_only_the_settings_this_wandb_version_knows(tmp_path, monkeypatch):
    """A setting that the installed wandb's ``Settings`` lacks (older or newer versions) is left out, not an error."""
    wandb = pytest.importorskip("wandb", reason="the W&B tracker (qmlnb's track extra)")
    rec = track.read_run(a_run(tmp_path))
    calls = fake_wandb_init(monkeypatch, FakeWandbRun())

    class OlderSettings:  # knows neither x_ setting
        model_fields = {"silent": None, "console": None, "disable_git": None, "save_code": None, "mode": None}

        def __init__(self, **kwargs):
            unknown = set(kwargs) - set(self.model_fields)
            if unknown:
                raise TypeError(f"unknown settings {sorted(unknown)}")
            self.kwargs = kwargs

    class PlainSettings:  # no field list to ask: every setting is passed
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    monkeypatch.setattr(wandb, "Settings", OlderSettings)
    track.WandbSink(tmp_path / "p").log(rec)
    assert calls[-1]["settings"].kwargs == {"silent": True, "console": "off", "disable_git": True, "save_code": False}
    monkeypatch.setattr(wandb, "Settings", PlainSettings)
    track.WandbSink(tmp_path / "p").log(rec)
    assert calls[-1]["settings"].kwargs == {"silent": True, "console": "off", "disable_git": True, "save_code": False,
                                            "x_disable_stats": True, "x_disable_machine_info": True}


# ------------------------------------------------------------------ what the MLflow sink writes
def test_an_mlflow_run_spans_the_runs_seconds_and_carries_its_source_tags(tmp_path, mlflow_ok):
    from test_track import mlflow_client

    run_dir = a_run(tmp_path)
    rec = track.read_run(run_dir)
    store = tmp_path / "mlruns"
    sink = track.MlflowSink(store)
    run = mlflow_client(store).get_run(sink.log(rec))
    end = rec.timestamp_ms()
    assert (run.info.start_time, run.info.end_time, run.info.run_name) == (end - 2500, end, run_dir.name)
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "/nb/20-qsvm.ipynb" and tags["qmlnb.run_dir"] == str(rec.run_dir)
    assert tags["qmlnb.fingerprint"] == rec.fingerprint and tags["env.machine.hostname"] == rec.env["machine.hostname"]
    (point,) = mlflow_client(store).get_metric_history(run.info.run_id, "qsvm.f1")
    assert (point.value, point.timestamp, point.step) == (rec.metrics["qsvm.f1"], end, 0)
    # no seconds, no notebook, no commit: a run of no duration, without those tags
    rec.status = {"status": "complete", "time": rec.status["time"]}
    rec.env = {}
    rec.fingerprint = "1" * 64
    run = mlflow_client(store).get_run(sink.log(rec))
    assert run.info.start_time == run.info.end_time == end
    assert not {"mlflow.source.name", "mlflow.source.git.commit"} & set(run.data.tags)
    # no status record at all (a notebook logging its own run before the sweep marks it): an empty status tag
    rec.status = {}
    rec.fingerprint = "2" * 64
    run = mlflow_client(store).get_run(sink.log(rec))
    assert run.data.tags.get("qmlnb.status", "") == ""


def test_an_mlflow_run_gets_every_param_and_metric_past_the_batch_size_under_safe_names(tmp_path, monkeypatch,
                                                                                       mlflow_ok):
    from test_track import mlflow_client

    client_class = track.require("mlflow").tracking.MlflowClient
    real_log_batch, batches = client_class.log_batch, []

    def counting_log_batch(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        batches.append((len(metrics), len(params)))
        return real_log_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(client_class, "log_batch", counting_log_batch)
    params = {f"p{i:03d}": i for i in range(250)} | {"odd key@1": "v", "k" * 300: 1}
    metrics = {f"m{i:03d}": i / 4 for i in range(130)}
    rec = track.read_run(raw_run(tmp_path, metrics, params=params, status={"status": "complete"}))
    store = tmp_path / "mlruns"
    run = mlflow_client(store).get_run(track.MlflowSink(store).log(rec))
    assert batches == [(100, 100), (30, 100), (0, 52)]  # a tracking server takes at most 100 params a batch
    assert run.data.params == {**{f"p{i:03d}": str(i) for i in range(250)}, "odd key_1": "v", "k" * 250: "1"}
    assert run.data.metrics == metrics
    history = mlflow_client(store).get_metric_history(run.info.run_id, "m100")  # the first of the second batch
    assert [(p.value, p.step) for p in history] == [(25.0, 0)]  # logged once
    assert track_sinks._mlflow_key("Ab-c_d. e/f:g@h") == "Ab-c_d. e/f_g_h"


def test_an_mlflow_run_that_fails_while_logging_is_marked_failed_and_the_first_error_is_raised(tmp_path, monkeypatch,
                                                                                               mlflow_ok):
    from test_track import mlflow_client

    client_class = track.require("mlflow").tracking.MlflowClient
    rec = track.read_run(a_run(tmp_path))
    store = tmp_path / "mlruns"
    sink = track.MlflowSink(store)

    def broken(self, run_id, local_path, artifact_path=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(client_class, "log_artifact", broken)
    with pytest.raises(OSError, match="No space left on device"):
        sink.log(rec)
    client = mlflow_client(store)
    (run,) = client.search_runs([client.get_experiment_by_name(GRID).experiment_id])
    assert run.info.status == "FAILED"
    real_set_terminated = client_class.set_terminated

    def unmarkable(self, run_id, status=None, end_time=None):
        if status == "FAILED":
            raise RuntimeError("the store went away")
        return real_set_terminated(self, run_id, status, end_time)

    monkeypatch.setattr(client_class, "set_terminated", unmarkable)
    rec.fingerprint = "3" * 64
    with pytest.raises(OSError, match="No space left on device"):  # not the error of marking it failed
        sink.log(rec)


def test_an_mlflow_sink_logs_into_a_deleted_experiment_again_and_tells_same_content_folders_apart(tmp_path,
                                                                                                   mlflow_ok):
    from test_track import mlflow_client

    store = tmp_path / "mlruns"
    client = mlflow_client(store)
    first = track.read_run(raw_run(tmp_path, {"s": 1}, params={"n": 1}, status={"status": "complete"}, name="a"))
    twin = track.read_run(raw_run(tmp_path, {"s": 1}, params={"n": 1}, status={"status": "complete"}, name="b"))
    assert first.fingerprint == twin.fingerprint  # same content, two run folders
    sink = track.MlflowSink(store)
    assert sink.find(first) is None  # no experiment yet
    first_id = sink.log(first)
    assert sink.find(first) == first_id and sink.find(twin) is None
    client.delete_experiment(client.get_experiment_by_name("g").experiment_id)
    twin_id = sink.log(twin)
    exp = client.get_experiment_by_name("g")
    assert exp.lifecycle_stage == "active" and client.get_run(twin_id).info.experiment_id == exp.experiment_id
    assert sink.find(twin) == twin_id
    # two finished copies of one run (logged by two processes at once): the first is the answer, none is deleted
    second_id = sink.log(twin)
    copies = [twin_id, second_id]
    assert sink.find(twin) in copies
    assert sorted(r.info.run_id for r in sink._matches(twin)) == sorted(copies)
    assert {client.get_run(i).info.lifecycle_stage for i in copies} == {"active"}
