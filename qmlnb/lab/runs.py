"""Run folders: one folder per executed notebook, written so a crash never leaves a half result.

A run folder ``runs/<grid>/<run>/`` holds

- ``params.json``   the parameters the notebook ran with (written by the notebook);
- ``metrics.json``  scores, timings, backend, threads and ``provenance.environment()``;
- ``*.csv``         the run's tables;
- ``<notebook>.ipynb`` the executed notebook (written by the sweep);
- ``status.json``   written LAST, by the sweep: ``{"status": "complete" | "failed" |
  "skipped" | "interrupted", ...}`` with the grid point and the notebook's path
  and SHA-256 it ran;
- ``.lock``         the lock a sweep holds (``flock``) while the run is in progress.

Every file is written to a temporary name in the same folder and moved into place
with ``os.replace`` (atomic on POSIX), so a reader sees either the old file or the
new one, never a torn one.  A run counts as finished only when ``status.json``
says so; a folder without it (or with ``"running"`` or ``"interrupted"``) is a run
that a re-run of the sweep redoes, and the summary ignores it.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path


from .._util import atomic_write_bytes, atomic_write_json, atomic_write_text, check_option, read_json

STATUS_FILE = "status.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
LOCK_FILE = ".lock"
RUN_DIR_ENV = "QMLNB_RUN_DIR"  # the sweep sets it in a kernel's environment: the folder that run writes to
# the sweep sets it (JSON {asked, used, reason}) when the point's dataset is a first-available choice that fell back
# to a later candidate; qmlnb.lab.tasks.save_run records it in metrics.json as ``dataset_fallback``
DATASET_FALLBACK_ENV = "QMLNB_DATASET_FALLBACK"
COMPLETE, FAILED, SKIPPED, RUNNING = "complete", "failed", "skipped", "running"
INTERRUPTED = "interrupted"  # stopped by SIGTERM/SIGINT of the sweep; redone by the next sweep
FINAL_STATUSES = (COMPLETE, FAILED, SKIPPED, INTERRUPTED)
MAX_NAME = 120  # run folder names are at most this long (the readable part is cut, the hash kept)
# a grid's name is one folder under the runs folder (and the stage a decision names): no separators, no "." or
# "..", no hidden name
SAFE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,99}")
HASH_CHARS = 12  # hex digits of the parameters' SHA-256 in a run folder name (48 bits)


class RunPathError(ValueError):
    """A path the run-folder code was asked to write or delete lies outside the runs folder."""


class RunBusy(RuntimeError):
    """Another live process holds the run folder's lock (``pid``: its recorded holder, or None)."""

    def __init__(self, run_dir: Path, pid: int | None):
        self.run_dir, self.pid = run_dir, pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{run_dir} is held by {holder} (another sweep is running it)")


class RunSkipped(RuntimeError):
    """This run does not apply here (e.g. its dataset is not in the data directory, its backend cannot run).

    A task raises it inside a notebook; the sweep sees only the error's text (papermill's ``evalue``), so the
    text carries :data:`SKIP_MARK`, which :func:`skip_reason` recognises and removes: a subclass is a skip too.
    """

    def __str__(self) -> str:
        return SKIP_MARK + super().__str__()


SKIP_MARK = "[run skipped] "


def skip_reason(evalue: str) -> str | None:
    """The reason of a :class:`RunSkipped` from a notebook error's text, or None for any other error."""
    return evalue[len(SKIP_MARK):] if isinstance(evalue, str) and evalue.startswith(SKIP_MARK) else None



def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_table(path: str | os.PathLike, table) -> Path:
    """Atomically write a pandas DataFrame as CSV (``.csv``) or Parquet (``.parquet``)."""
    path = Path(path)
    if path.suffix == ".csv":
        return atomic_write_text(path, table.to_csv(index=False))
    if path.suffix == ".parquet":
        return atomic_write_bytes(path, table.to_parquet(index=False))
    raise ValueError(f"table files end in .csv or .parquet, got {path.name!r}")


def canonical_json(value) -> str:
    """The one JSON spelling of ``value`` (sorted keys, no spaces): what identifies a grid point.

    Values that JSON tells apart stay apart (``1``, ``1.0``, ``"1"``, ``true``);
    papermill passes the parameters as JSON, so two points with the same
    spelling are the same run.  Raises TypeError for values JSON cannot hold.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def slug(value) -> str:
    """A file-name-safe spelling of one parameter value (readable, not unique: ``1`` and ``-1`` agree)."""
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "empty"


def run_name(params: dict) -> str:
    """Folder name of a grid point: ``key-value_key-value__<hash>``, one name per distinct point.

    The readable part (keys in order, values through :func:`slug`) is cut to fit
    ``MAX_NAME``; the suffix is the first ``HASH_CHARS`` hex digits of the SHA-256
    of :func:`canonical_json` of ``params``, so points that slug alike
    (``1``/``-1``, ``"a b"``/``"a/b"``) still get different folders.  The name is
    a single path component: only ``[A-Za-z0-9.+_-]``, never ``.`` or ``..``.
    """
    readable = "_".join(f"{slug(k)}-{slug(v)}" for k, v in sorted(params.items())) or "defaults"
    digest = hashlib.sha256(canonical_json(params).encode()).hexdigest()[:HASH_CHARS]
    return f"{readable[:MAX_NAME - HASH_CHARS - 2]}__{digest}"


def inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``path`` resolved (symlinks followed), after checking it lies strictly below ``root`` (resolved too).

    Raises :class:`RunPathError` otherwise, so nothing outside the runs folder
    is ever written or deleted through a crafted name or a symlink.
    """
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved == base or base not in resolved.parents:
        raise RunPathError(f"{path} resolves to {resolved}, which is not inside the runs folder {base}")
    return resolved


MAX_RECORD_BYTES = 64 << 20  # a JSON record of a run folder larger than this is refused, not read into memory


def read_record(path: str | os.PathLike, root: str | os.PathLike | None = None):
    """The JSON value in ``path`` (None when there is no such file), read without following a symlink.

    For files of the runs folder that other code did not write for sure
    (decision and flow records, files a tracker exports): raises ValueError,
    naming the path and never quoting the file, when ``path`` is a symlink
    (not followed: its target is never read), is not a regular file (a folder,
    a FIFO), is larger than ``MAX_RECORD_BYTES``, is not UTF-8 JSON or, when
    ``root`` is given, lies outside ``root`` through a linked folder
    (:class:`RunPathError`).
    """
    path = Path(path)
    if root is not None and path.parent.resolve() != Path(root).resolve():
        inside(path.parent, root)  # the folder; a link at path itself is refused by the open below
    try:
        # O_NOFOLLOW: a link is refused by the kernel, never opened; O_NONBLOCK: a FIFO cannot hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link (not followed)") from None
        raise ValueError(f"{path}: {err.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a folder with its own error
        os.close(fd)
        raise ValueError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"{path} is larger than {MAX_RECORD_BYTES >> 20} MiB")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:  # its message says where, never what the file holds
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def read_status(run_dir: str | os.PathLike) -> dict | None:
    """The run's status record, or None if it never started.

    A status file that cannot be parsed (it cannot be torn, but it could be
    edited by hand) reads as an interrupted run, so the sweep redoes it.
    """
    try:
        record = read_json(Path(run_dir) / STATUS_FILE)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"status": RUNNING, "error": "unreadable status.json"}
    if record is not None and not isinstance(record, dict):
        return {"status": RUNNING, "error": "status.json is not a JSON object"}
    return record


def is_complete(run_dir: str | os.PathLike, **expected) -> bool:
    """True only when the run's final marker says ``complete`` and records each of ``expected``.

    ``expected`` (e.g. ``point=..., notebook_sha256=...``) is compared through
    :func:`canonical_json`, so a run of another notebook or other parameters
    that landed in this folder does not count.
    """
    status = read_status(run_dir)
    if not status or status.get("status") != COMPLETE:
        return False
    return all(key in status and canonical_json(status[key]) == canonical_json(value)
               for key, value in expected.items())


def write_status(run_dir: str | os.PathLike, status: str, **fields) -> Path:
    """Atomically (re)write the run's status marker; ``status`` in complete/failed/skipped/interrupted/running."""
    check_option(status, "status", (*FINAL_STATUSES, RUNNING))
    return atomic_write_json(Path(run_dir) / STATUS_FILE, {"status": status, "time": _now(), **fields})


def clear_run(run_dir: str | os.PathLike, runs_dir: str | os.PathLike) -> None:
    """Remove the files of an earlier failed or interrupted attempt (the folder and its lock file stay).

    Refuses (:class:`RunPathError`) unless ``run_dir`` resolves to a folder
    strictly inside ``runs_dir``.  Symlinks inside are removed, never followed.
    The lock file stays: deleting it would let another sweep lock a new one.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists() and not run_dir.is_symlink():
        return
    run_dir = inside(run_dir, runs_dir)
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_file() or path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


class RunLock:
    """Exclusive, non-blocking ``flock`` on ``<run_dir>/.lock``: one process at a time runs a point.

    ``with RunLock(run_dir) as lock:`` raises :class:`RunBusy` when another live
    process holds it.  The kernel drops the lock when every descriptor of it is
    closed, so a killed holder never leaves a stale lock; a child started with
    ``pass_fds=(lock.fileno(),)`` keeps it held for as long as it lives (a
    papermill process that outlives a killed sweep still blocks a second run).
    The holder's pid is written into the file for the "held by" message.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        # O_NOFOLLOW: a planted symlink must not make us truncate a file elsewhere
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunBusy(self.path.parent, self.holder()) from None
            raise
        self.fd = fd
        self.set_holder(os.getpid())
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing our descriptor releases the lock (unless a child still holds a copy)
        self.fd = None

    def fileno(self) -> int:
        return self.fd

    def set_holder(self, pid: int) -> None:
        """Record ``pid`` as the process holding the lock (read back by :meth:`holder`)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def holder(self) -> int | None:
        """The pid recorded in the lock file, or None when there is none (yet)."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None


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
