"""Experiment trackers: each complete run folder also in MLflow or Weights & Biases, both offline.

The run folder stays the source of truth; a tracker is an optional copy of it for
people who compare experiments in MLflow or W&B.  One run folder
``runs/<grid>/<run>/`` becomes one tracker run:

==================  ==========================================  ===========================================
run folder          MLflow (local file store ``mlruns/``)       W&B (offline, ``wandb/`` under the project)
==================  ==========================================  ===========================================
``<grid>``          experiment                                  group (project ``qmlnb``)
``<run>``           run name                                    run name
``params.json``     params (lists and dicts as JSON)            config
``metrics.json``    metrics: every finite or NaN number,        summary: the same keys and values
                    nested keys joined with ``.`` (``qsvm.f1``,
                    ``timings.gram_s.median``, ``diagnostics.*``);
                    text and booleans as ``info.*`` tags
environment         ``env.*`` tags (commit, machine, versions)  config ``qmlnb.environment``; tags
                                                                ``commit:<sha>``, ``host:<name>``
files               artifacts: ``tables/`` (CSV, Parquet),      one artifact of type ``qmlnb-run`` with
                    ``figures/`` (image files and the           the same paths
                    notebook's image outputs), ``notebook/``
                    (the executed notebook), ``run/``
                    (params, metrics, status)
==================  ==========================================  ===========================================

A run is identified by ``<grid>/<run>`` and a fingerprint (SHA-256 of
``params.json`` and ``metrics.json``): a run that a sweep redoes gets a new
fingerprint and is logged again; the same run is never logged twice.  What was
logged where is recorded in the run folder's ``tracker.json``, one entry per
tracker::

    {"mlflow": {"status": "logged", "store": "file:///.../mlruns", "id": "<run id>",
                "fingerprint": "...", "time": "..."},
     "wandb":  {"status": "failed", "store": "...", "error": "ValueError: ...", "attempts": 2, ...}}

but the store decides (MLflow: the run's tags; W&B: its offline run folder, named
by a run id derived from the fingerprint): a lost ``tracker.json`` does not cause
a second copy, and a store deleted since gets the run again.  Run files are
read without following symlinks, and an export leaves run folders that are
links, or lie outside the runs folder, untouched.  A tracker error never
fails a run: it is recorded as ``"failed"`` in ``tracker.json``, and
``python -m qmlnb track export RUNS_DIR --to mlflow|wandb`` retries it (and logs
every complete run not yet in the store).

Neither tracker is a dependency of qmlnb: ``pip install -e ".[track]"`` installs
both; asking for one that is absent raises :class:`TrackerUnavailable` naming
that command.  mlflow and wandb are imported only inside the functions that use them.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import threading
from pathlib import Path

from . import runs
from .. import _util
from .track_sinks import MlflowSink, WandbSink, open_sink, read_wandb_records, wandb_run_id  # noqa: F401
from .track_store import (  # noqa: F401 -- the tracker API, re-exported here
    TRACKERS, TRACKER_FILE, LOGGED, ALREADY_LOGGED, FAILED, BUSY, _LOG_LOCK, TrackerUnavailable, RunRecord,
    flatten, fingerprint, read_run, default_store, store_location, check_tracker_name, require)


# ------------------------------------------------------------------ tracker.json
def read_tracker_file(run_dir: str | os.PathLike) -> dict:
    """The run's ``tracker.json`` ({tracker: entry}); {} when absent or unreadable (then the store decides)."""
    with contextlib.suppress(OSError, ValueError):  # a symlink is not followed: its target is never copied in
        record = runs.read_record(Path(run_dir) / TRACKER_FILE)
        if isinstance(record, dict):
            return record
    return {}


def _record(run_dir: Path, to: str, entry: dict) -> None:
    """Write ``entry`` as tracker ``to``'s entry of ``tracker.json``; a write that fails is reported in ``entry``."""
    record = read_tracker_file(run_dir)
    record[to] = entry
    try:
        _util.atomic_write_json(run_dir / TRACKER_FILE, record)
    except OSError as err:  # e.g. a full disk: the store still has the run, a later export finds it there
        entry["record_error"] = f"{TRACKER_FILE} not written: {err}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ logging runs
def _log_locked(run_dir: Path, to: str, store: str, sink_of) -> dict:
    previous = read_tracker_file(run_dir).get(to) or {}
    tries = previous.get("attempts")
    attempts = (tries if _util.is_int(tries, 0) else 0) + 1 if previous.get("status") == FAILED else 1
    entry = {"store": store, "time": _now()}
    try:
        entry["fingerprint"] = fingerprint(run_dir)
        # the store decides, never tracker.json alone: a store deleted or replaced since (rm -rf mlruns) must get
        # the run again, and tracker.json is a file of the run folder that anyone may have edited
        rec = read_run(run_dir)
        sink = sink_of()
        found = sink.find(rec)
        if found is not None:  # logged before, but tracker.json was lost or not written
            entry.update(status=LOGGED, id=found, found_in_store=True)
            _record(run_dir, to, entry)
            return {**entry, "status": ALREADY_LOGGED}
        entry.update(status=LOGGED, id=sink.log(rec))
        if rec.skipped_files:
            entry["skipped_files"] = rec.skipped_files
    except (KeyboardInterrupt, TrackerUnavailable):
        raise
    except Exception as err:  # noqa: BLE001 - any tracker error is recorded, never raised: the run stays complete
        entry.update(status=FAILED, error=f"{type(err).__name__}: {str(err)[:2000]}", attempts=attempts)
    _record(run_dir, to, entry)
    return entry


class _Sinks:
    """Opens each tracker's sink once, on first use, and closes it at the end (wandb's service stops)."""

    def __init__(self, to: str, store: str | os.PathLike):
        self.to, self.store, self.sink = to, store, None

    def __call__(self):
        if self.sink is None:
            self.sink = open_sink(self.to, self.store)
        return self.sink

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def log_run(run_dir: str | os.PathLike, to: str, store: str | os.PathLike | None = None) -> dict:
    """Log one run folder to tracker ``to`` ("mlflow" or "wandb"), once; returns the ``tracker.json`` entry.

    Callable from a notebook after ``tasks.save_run`` (then the executed notebook
    is not in the folder yet; a sweep's ``--tracker`` logs it with the notebook)::

        from qmlnb.lab import tasks, track
        folder = tasks.save_run(tasks.run_dir("qsvm"), params, metrics, tables)
        track.log_run(folder, "mlflow")

    ``store``: the MLflow store (a folder, default ``<project>/mlruns``, or a
    tracking URI) or the folder W&B writes ``wandb/`` into (default ``<project>``).
    The entry's ``status`` is ``logged``, ``already_logged`` (same content logged
    before, by ``tracker.json`` or found in the store), ``failed`` (with
    ``error``; recorded, never raised) or ``busy`` (another process holds the
    run folder's lock; nothing written).  Raises ValueError for an unknown
    tracker and :class:`TrackerUnavailable` when its package is not installed.
    """
    check_tracker_name(to)
    require(to)
    run_dir = Path(run_dir)
    if not (run_dir / runs.METRICS_FILE).is_file():
        raise ValueError(f"run_dir {run_dir} is not a run folder: it has no {runs.METRICS_FILE} "
                         "(write it first with tasks.save_run)")
    store = store_location(to, store, run_dir)
    sinks = _Sinks(to, store)
    try:
        return _log_guarded(run_dir, to, store, sinks)
    finally:
        sinks.close()


def _log_guarded(run_dir: Path, to: str, store: str, sinks: _Sinks) -> dict:
    """:func:`_log_locked` under the run folder's lock -- unless this process is that run's own notebook,
    whose sweep (through papermill) already holds it."""
    own = os.environ.get(runs.RUN_DIR_ENV)
    with _LOG_LOCK:
        if own and Path(own).resolve() == run_dir.resolve():
            return _log_locked(run_dir, to, store, sinks)
        try:
            with runs.RunLock(run_dir):
                return _log_locked(run_dir, to, store, sinks)
        except runs.RunBusy as busy:
            return {"status": BUSY, "pid": busy.pid, "store": store}
        except OSError as err:  # the lock file cannot be created (read-only folder, full disk)
            return {"status": FAILED, "store": store, "error": f"{type(err).__name__}: {err}"}


def _outside(run_dir: Path, runs_dir: Path, store: str) -> dict | None:
    """A failed entry (nothing read or written) for a run folder that is a symlink or lies outside ``runs_dir``
    through a linked grid folder: its lock and tracker.json would be written there, its files read from there."""
    try:
        if run_dir.is_symlink():
            raise runs.RunPathError(f"{run_dir} is a symbolic link (not followed)")
        runs.inside(run_dir, runs_dir)
    except runs.RunPathError as err:
        return {"status": FAILED, "store": store, "error": f"not exported: {err}"}
    return None


def export(runs_dir: str | os.PathLike, to: str, store: str | os.PathLike | None = None,
           progress: bool = False) -> dict:
    """Log every complete run under ``runs_dir`` (``<grid>/<run>/``) not yet in tracker ``to``'s store.

    Runs logged before (same content, found in the store) are counted ``already_logged``
    and not logged again; runs whose earlier logging failed are retried.  A run
    folder that is a symlink, or lies outside ``runs_dir`` through a linked grid
    folder, is counted failed and left untouched (no lock, no ``tracker.json``).
    Returns {"logged", "already_logged", "failed", "busy": counts, "failures":
    [(run folder, error)], "store": str}.  Raises ValueError when ``runs_dir`` is
    not a folder, :class:`TrackerUnavailable` when the tracker is not installed.
    """
    check_tracker_name(to)
    require(to)
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ValueError(f"runs_dir {runs_dir} is not a folder")
    store = store_location(to, store)
    summary = {LOGGED: 0, ALREADY_LOGGED: 0, FAILED: 0, BUSY: 0, "failures": [], "store": store}
    sinks = _Sinks(to, store)
    try:
        folders = list(runs.iter_runs(runs_dir))
        for i, run_dir in enumerate(folders):
            entry = _outside(run_dir, runs_dir, store) or _log_guarded(run_dir, to, store, sinks)
            summary[entry["status"]] += 1
            if entry["status"] == FAILED:
                summary["failures"].append((str(run_dir), entry["error"]))
            if progress:
                print(f"[{i + 1}/{len(folders)}] {entry['status']}: {run_dir}", file=sys.stderr)
    finally:
        sinks.close()
    return summary


class SweepTracker:
    """What a sweep uses: logs each run it completes (one sink for the whole sweep) and counts the outcomes."""

    def __init__(self, to: str, store: str | os.PathLike | None = None):
        require(to)
        self.to = to
        self.store = store_location(to, store)
        self.counts = {LOGGED: 0, ALREADY_LOGGED: 0, FAILED: 0, BUSY: 0}
        self.failures: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # the sweep's worker threads count here at once

    def __call__(self, run_dir: str | os.PathLike) -> dict:
        """Log one completed run; never raises for a tracker error (it is in ``tracker.json``)."""
        sinks = _Sinks(self.to, self.store)  # one per run: wandb's service does not idle between runs
        try:
            entry = _log_guarded(Path(run_dir), self.to, self.store, sinks)
        except Exception as err:  # noqa: BLE001 - belt and braces: the sweep goes on whatever the tracker does
            entry = {"status": FAILED, "error": f"{type(err).__name__}: {err}"}
        finally:
            sinks.close()
        with self._lock:
            self.counts[entry["status"]] += 1
            if entry["status"] == FAILED:
                self.failures.append((str(run_dir), entry["error"]))
        return entry

    def report(self, runs_dir: str | os.PathLike) -> str:
        """One line (plus one per failure) for the sweep's summary."""
        c = self.counts
        lines = [f"tracker {self.to} ({self.store}): {c[LOGGED]} logged, {c[ALREADY_LOGGED]} already logged, "
                 f"{c[FAILED]} failed, {c[BUSY]} busy"]
        lines += [f"  tracker FAILED {where}: {error}" for where, error in self.failures]
        if self.failures:
            lines.append(f"  the runs are complete; retry with: python -m qmlnb track export {runs_dir} --to {self.to}")
        return "\n".join(lines)


# ------------------------------------------------------------------ command line
def add_arguments(parser) -> None:
    commands = parser.add_subparsers(dest="track_command", required=True)
    export_cmd = commands.add_parser("export", help="log complete run folders to MLflow or W&B (offline), "
                                                    "skipping those already logged")
    export_cmd.add_argument("runs_dir", help="the runs folder (holding <grid>/<run>/ folders)")
    export_cmd.add_argument("--to", required=True, choices=TRACKERS, help="the tracker")
    export_cmd.add_argument("--store", default=None,
                            help="mlflow: the file store folder or a tracking URI (default <project>/mlruns); "
                                 "wandb: the folder to write wandb/ into (default <project>)")


def run(args) -> int:
    try:
        summary = export(args.runs_dir, args.to, args.store, progress=True)
    except (ValueError, TrackerUnavailable) as err:
        print(f"qmlnb track: {err}", file=sys.stderr)
        return 2
    print(f"track export to {args.to} ({summary['store']}): {summary[LOGGED]} logged, "
          f"{summary[ALREADY_LOGGED]} already logged, {summary[FAILED]} failed, {summary[BUSY]} busy")
    for where, error in summary["failures"]:
        print(f"  FAILED {where}: {error}", file=sys.stderr)
    return 1 if summary[FAILED] else 0


__all__ = ["TRACKERS", "TRACKER_FILE", "TrackerUnavailable", "RunRecord", "read_run", "flatten", "fingerprint",
           "default_store", "require", "log_run", "export", "SweepTracker", "read_tracker_file",
           "read_wandb_records", "wandb_run_id", "MlflowSink", "WandbSink", "open_sink"]
