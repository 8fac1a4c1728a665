"""Run folders: one folder per executed notebook, written so a crash never leaves a half result.

A run folder ``runs/<grid>/<run>/`` holds

- ``params.json``   the parameters the notebook ran with (written by the notebook);
- ``metrics.json``  scores, timings, backend, threads and ``provenance.environment()``;
- ``*.csv``         the run's tables;
- ``<notebook>.ipynb`` the executed notebook (written by the sweep);
- ``status.json``   written LAST, by the sweep: ``{"status": "complete" | "failed" |
  "skipped", ...}``.

Every file is written to a temporary name in the same folder and moved into place
with ``os.replace`` (atomic on POSIX), so a reader sees either the old file or the
new one, never a torn one.  A run counts as finished only when ``status.json``
says so; a folder without it (or with ``"running"``) is an interrupted run that a
re-run of the sweep redoes, and the summary ignores it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

STATUS_FILE = "status.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
COMPLETE, FAILED, SKIPPED, RUNNING = "complete", "failed", "skipped", "running"
FINAL_STATUSES = (COMPLETE, FAILED, SKIPPED)
MAX_NAME = 120  # run folder names longer than this get a hash suffix instead of every value


# the process's file-creation mask, read once (os.umask can only be read by setting it)
UMASK = os.umask(0o022)
os.umask(UMASK)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); results are meant to be shared
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # a failed or interrupted write leaves no temporary behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value):
    """NumPy scalars/arrays, paths and tuples as plain JSON values; NaN and inf as null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """Atomically write ``obj`` as indented JSON (NumPy values converted, NaN as null)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_table(path: str | os.PathLike, table) -> Path:
    """Atomically write a pandas DataFrame as CSV (``.csv``) or Parquet (``.parquet``)."""
    path = Path(path)
    if path.suffix == ".csv":
        return atomic_write_text(path, table.to_csv(index=False))
    if path.suffix == ".parquet":
        return atomic_write_bytes(path, table.to_parquet(index=False))
    raise ValueError(f"table files end in .csv or .parquet, got {path.name!r}")


def read_json(path: str | os.PathLike):
    """The parsed JSON file, or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def slug(value) -> str:
    """A file-name-safe spelling of one parameter value."""
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "empty"


def run_name(params: dict) -> str:
    """Folder name of a grid point: ``key-value_key-value`` in key order (hashed when too long)."""
    name = "_".join(f"{slug(k)}-{slug(v)}" for k, v in sorted(params.items())) or "defaults"
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(json.dumps(to_jsonable(params), sort_keys=True).encode()).hexdigest()[:12]
        name = f"{name[:MAX_NAME - 13]}_{digest}"
    return name


def read_status(run_dir: str | os.PathLike) -> dict | None:
    """The run's status record, or None if it never started.

    A status file that cannot be parsed (it cannot be torn, but it could be
    edited by hand) reads as an interrupted run, so the sweep redoes it.
    """
    try:
        return read_json(Path(run_dir) / STATUS_FILE)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"status": RUNNING, "error": "unreadable status.json"}


def is_complete(run_dir: str | os.PathLike) -> bool:
    """True only when the run's final marker says ``complete``."""
    status = read_status(run_dir)
    return bool(status) and status.get("status") == COMPLETE


def write_status(run_dir: str | os.PathLike, status: str, **fields) -> Path:
    """Atomically (re)write the run's status marker; ``status`` in complete/failed/skipped/running."""
    if status not in (*FINAL_STATUSES, RUNNING):
        raise ValueError(f"status must be one of {(*FINAL_STATUSES, RUNNING)}, got {status!r}")
    return atomic_write_json(Path(run_dir) / STATUS_FILE, {"status": status, "time": _now(), **fields})


def clear_run(run_dir: str | os.PathLike) -> None:
    """Remove the files of an earlier failed or interrupted attempt (the folder itself stays)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.is_file() or path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def iter_runs(runs_dir: str | os.PathLike, status: str | None = COMPLETE):
    """Run folders under ``runs_dir`` (``<grid>/<run>/``) whose status is ``status`` (None: any)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return
    for run_dir in sorted(p for p in runs_dir.glob("*/*") if p.is_dir()):
        record = read_status(run_dir)
        if record is None:
            continue
        if status is None or record.get("status") == status:
            yield run_dir
