"""How grid points run: papermill processes on this machine's cores, or Dask tasks (:mod:`.executor_dask`).

Each point runs under its run folder's lock (:class:`runs.RunLock`), inherited by
papermill so a second sweep sees the point as busy.  Papermill runs in its own
process group, so SIGTERM/SIGINT/SIGHUP of the sweep stops the kernel too and marks the
run interrupted; nothing goes on writing after the sweep is gone.  On a Dask
cluster the same signal also reaches the workers (``executor_dask.stop_remote_runs``): each
stops the papermill processes of that sweep's tasks, which mark their runs
interrupted before the sweep returns.  Once a run's papermill has exited (also
after a kill -9 of papermill or of its kernel), every process still carrying
that run's token (``RUN_TOKEN_ENV``) is killed: no orphaned kernel or worker
outlives its run.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from . import runs, stages
from ..data import catalog
from .grid import Sweep
from .papermill_run import papermill_command
from ..qcnn.determinism import THREAD_ENV_VARS
from .. import _util


BUSY, ALREADY_COMPLETE = "busy", "already_complete"  # outcomes of a point that the sweep did not run
STOP_GRACE_S = 5.0  # after SIGTERM, seconds a papermill process group gets before SIGKILL
# the signals that stop a sweep and its runs: SIGHUP is what a closed terminal or ssh session sends
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# set in each local run's papermill environment (inherited by its kernel and the kernel's workers): once papermill
# has exited, whatever still carries it is a leftover of that run, even when a kill -9 of papermill or of the
# kernel (what the OOM killer does) orphaned it out of the process tree and groups the sweep knows
RUN_TOKEN_ENV = "QMLNB_RUN_TOKEN"


class SweepInterrupted(KeyboardInterrupt):
    """The sweep got SIGTERM or SIGINT (``signum``); its papermill processes were stopped first."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {_signal_name(signum)}")


class CoreBudget:
    """Counting lock over the cores: a run holding t threads takes t tokens, so processes x threads <= cores."""

    def __init__(self, cores: int):
        self.cores = cores
        self.free = cores
        self._cond = threading.Condition()

    def acquire(self, n: int) -> int:
        n = min(max(n, 1), self.cores)
        with self._cond:
            self._cond.wait_for(lambda: self.free >= n)
            self.free -= n
        return n

    def release(self, n: int) -> None:
        with self._cond:
            self.free += n
            self._cond.notify_all()


def _error_of(notebook: Path) -> tuple[str, str, str]:
    """(ename, evalue, traceback) of the first error output in an executed notebook, if any."""
    import nbformat  # only for a failed run: a sweep's processes (Dask workers too) start without it

    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable notebook simply has no error to report
        return "", "", ""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return output.get("ename", ""), output.get("evalue", ""), "\n".join(output.get("traceback", []))
    return "", "", ""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_os_error(err: OSError) -> str:
    """``ENOSPC (No space left on device): /path`` -- the errno's name, its message and the file."""
    name = errno.errorcode.get(err.errno, "OSError") if err.errno else "OSError"
    where = f": {err.filename}" if err.filename else ""
    return f"{name} ({err.strerror or err}){where}"


def _wait_gone(procs: list, timeout: float) -> bool:
    """Wait until every psutil process in ``procs`` has exited (a zombie counts as exited); False on timeout."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        procs = alive
        time.sleep(0.05)


def stop_process_trees(pids, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL, the process groups of ``pids`` and of all their descendants.

    Each papermill process leads its own group, and its kernel leads another
    (jupyter_client starts kernels in a new session) holding the kernel's own
    workers, so every group met among the descendants is signalled -- never
    this process's own.  Returns once they are all gone or after the SIGKILL's
    grace period.
    """
    import psutil

    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
    groups = set()
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(proc.pid))
    groups.discard(os.getpgrp())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        if _wait_gone(procs, grace):
            return


def run_leftovers(token: str) -> list:
    """Live processes (psutil, not this one, not zombies) whose environment carries ``RUN_TOKEN_ENV=token``.

    Only processes of this user can be read; others are skipped.
    """
    import psutil

    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(RUN_TOKEN_ENV) == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def stop_run_leftovers(token: str, grace: float = STOP_GRACE_S) -> list[int]:
    """SIGKILL every process left over by the run of ``token`` (:func:`run_leftovers`); their pids.

    Called once the run's papermill has exited, whichever way: nothing of the
    run is meant to be alive then, so there is no polite stop to wait for.
    """
    procs = run_leftovers(token)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)
    _wait_gone(procs, grace)
    return [proc.pid for proc in procs]


def _drain_pipes(proc: subprocess.Popen, timeout: float = 10.0):
    """Read ``proc``'s stdout and stderr in threads (so neither pipe fills up); returns ``stderr()``, which
    waits up to ``timeout`` s for the end of stderr and gives its text.

    Called after the process and its leftovers are gone; a pipe that some
    process still holds open then gives what was read so far.
    """
    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def drain(name: str, stream) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                chunks[name].append(line)

    threads = [threading.Thread(target=drain, args=(name, stream), daemon=True)
               for name, stream in (("out", proc.stdout), ("err", proc.stderr))]
    for thread in threads:
        thread.start()

    def stderr() -> str:
        for thread in threads:
            thread.join(timeout)
        return "".join(chunks["err"])

    return stderr


class _Children:
    """The papermill processes this process has started and not yet reaped, and whether it is stopping."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, cmd: list[str], **kwargs) -> subprocess.Popen | None:
        """``Popen(cmd)`` leading a new session (its own process group); None once the sweep is stopping."""
        with self._lock:
            if self.stopping:
                return None
            proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, **kwargs)
            self._procs.add(proc)
            return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self, grace: float = STOP_GRACE_S) -> None:
        """Start nothing more, and stop every running papermill process tree."""
        self.stopping = True  # set first: start() checks it under the lock, so no process starts after the snapshot
        with self._lock:
            pids = [proc.pid for proc in self._procs]
        stop_process_trees(pids, grace)


CHILDREN = _Children()


def _under_lock(sweep: Sweep, point: dict, action, children: _Children = CHILDREN) -> dict:
    """``action(run_dir, lock)`` while holding the run folder's lock, as a status record.

    A point another live process holds gives ``{"status": "busy", "pid": ...}``
    and one that became complete since the plan was made gives
    ``already_complete``; neither is touched.  An OSError (e.g. a full disk)
    gives a failed record naming the errno and the path, written to
    ``status.json`` when the disk allows it (else the folder keeps its
    ``running`` status, which is not complete either).
    """
    run_dir = sweep.run_dir(point)
    if children.stopping:  # the sweep is being stopped: touch nothing more
        return {"status": runs.INTERRUPTED}
    try:
        runs.inside(run_dir, sweep.runs_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with runs.RunLock(run_dir) as lock:
            try:
                if sweep.is_done(point):  # another sweep finished it after this one made its plan
                    return {"status": ALREADY_COMPLETE}
                return action(run_dir, lock)
            except OSError as err:
                error = describe_os_error(err)
                with contextlib.suppress(OSError):
                    runs.write_status(run_dir, runs.FAILED, error=error, params=point, **sweep.identity(point))
                return {"status": runs.FAILED, "error": error}
    except runs.RunBusy as busy:
        return {"status": BUSY, "pid": busy.pid}
    except OSError as err:  # creating the folder or its lock file: nothing of this run was written
        return {"status": runs.FAILED, "error": describe_os_error(err)}


def run_point(sweep: Sweep, point: dict, threads: int, data_dir: str | None = None,
              children: _Children = CHILDREN) -> dict:
    """Execute one grid point with papermill in a fresh process group and record its final status.

    Runs under the run folder's lock (see ``_under_lock`` for busy, already
    complete and OSError outcomes), which papermill inherits.  The executed
    notebook is written under a temporary name and moved into place only when
    papermill wrote it whole; ``status.json`` is written last, with the point
    and the notebook's path and SHA-256.  Returns the status record.
    ``data_dir``: the data folder (default: $QMLNB_DATA_DIR or the project's data/, resolved here).
    ``children``: the registry that starts papermill and says whether the sweep is stopping (on a Dask
    worker, the one of this point's sweep: ``_remote_sweep``).
    """
    return _under_lock(sweep, point,
                       lambda run_dir, lock: _execute(sweep, point, threads, data_dir, run_dir, lock, children),
                       children)


def skip_point(sweep: Sweep, point: dict, reason: str) -> dict:
    """Record ``point`` as skipped for a ``reason`` known before running (under the run folder's lock)."""

    def record(run_dir: Path, lock) -> dict:
        runs.clear_run(run_dir, sweep.runs_dir)
        runs.write_status(run_dir, runs.SKIPPED, reason=reason, params=point, **sweep.identity(point))
        return {"status": runs.SKIPPED, "reason": reason}

    return _under_lock(sweep, point, record)


def _execute(sweep: Sweep, point: dict, threads: int, data_dir: str | None, run_dir: Path, lock,
             children: _Children = CHILDREN) -> dict:
    runs.clear_run(run_dir, sweep.runs_dir)
    parameters = dict(point)
    if "threads" in sweep.notebook_params:
        parameters["threads"] = threads
    record = {"params": parameters, **sweep.identity(point)}
    # the exact parameters, also for a run that fails early; the notebook may rewrite it with all of its own
    _util.atomic_write_json(run_dir / runs.PARAMS_FILE, parameters)
    runs.write_status(run_dir, runs.RUNNING, sweep_pid=os.getpid(), **record)
    env = dict(os.environ, **{var: str(threads) for var in THREAD_ENV_VARS})
    env[runs.RUN_DIR_ENV] = str(run_dir.resolve())
    token = env[RUN_TOKEN_ENV] = uuid.uuid4().hex
    # the grid's stage, which tasks.save_run records; without one the notebook's own (not this shell's) holds
    env.pop(stages.STAGE_ENV, None)
    if sweep.stage:
        env[stages.STAGE_ENV] = sweep.stage
    # the kernel's cwd is the run folder: a relative data directory means relative to where the sweep started
    env[catalog.ENV_VAR] = data_dir or str(catalog.data_dir().resolve())
    # a first-available dataset that fell back: tasks.save_run records it, so the run says what it measured
    env.pop(runs.DATASET_FALLBACK_ENV, None)
    if sweep.dataset_fallback(point):
        env[runs.DATASET_FALLBACK_ENV] = json.dumps(sweep.dataset_fallback(point))
    partial = run_dir / f".{sweep.notebook.stem}.executing.ipynb"
    final = run_dir / sweep.notebook.name
    cmd = papermill_command(sweep.notebook, partial, cwd=run_dir, parameters=parameters, timeout=sweep.timeout)
    start = time.perf_counter()
    # papermill keeps a copy of the lock: should this sweep be SIGKILLed, the point stays held while papermill lives
    proc = children.start(cmd, env=env, pass_fds=(lock.fileno(),))
    if proc is None:
        runs.write_status(run_dir, runs.INTERRUPTED, reason="the sweep was stopped before this run started", **record)
        return {"status": runs.INTERRUPTED, **record}
    stderr_of = _drain_pipes(proc)
    try:
        lock.set_holder(proc.pid)
        runs.write_status(run_dir, runs.RUNNING, sweep_pid=os.getpid(), pid=proc.pid, **record)
        proc.wait()  # not communicate(): an orphaned kernel holding papermill's pipes would keep it waiting forever
    finally:
        if proc.poll() is None:  # an error above (e.g. ENOSPC writing the status): papermill must not run on alone
            stop_process_trees([proc.pid])
            proc.wait()
        children.done(proc)
        # a kernel orphaned by a kill -9 of papermill, or workers orphaned by one of the kernel, run on otherwise
        leftovers = stop_run_leftovers(token)
    stderr = stderr_of()
    info = {**record, "threads": threads, "seconds": round(time.perf_counter() - start, 3)}
    if leftovers:
        info["killed_leftovers"] = leftovers
    if children.stopping and proc.returncode != 0:
        # stopped by SIGTERM/SIGINT of the sweep: the partial notebook stays under its temporary name
        runs.write_status(run_dir, runs.INTERRUPTED, reason="the sweep was stopped (SIGTERM/SIGINT/SIGHUP)",
                          notebook=partial.name if partial.exists() else None, **info)
        return {"status": runs.INTERRUPTED, **info}
    ename, evalue = ("", "") if proc.returncode == 0 else _error_of(partial)[:2]
    # only a notebook papermill wrote whole takes the final name: one that ran to its end or stopped at a
    # cell's error; one papermill died writing (a full disk, a kill) is torn and keeps its temporary name
    if partial.exists() and (proc.returncode == 0 or ename):
        os.replace(partial, final)  # same folder: atomic
        info["notebook"] = final.name
    else:
        info["notebook"] = partial.name if partial.exists() else None
    if proc.returncode == 0:
        runs.write_status(run_dir, runs.COMPLETE, **info)
        return {"status": runs.COMPLETE, **info}
    reason = runs.skip_reason(evalue)  # a runs.RunSkipped raised inside the notebook: the run does not apply here
    if reason is not None:
        runs.write_status(run_dir, runs.SKIPPED, reason=reason, **info)
        return {"status": runs.SKIPPED, **info, "reason": reason}
    error = f"{ename}: {evalue}" if ename else (stderr.strip().splitlines() or ["papermill failed"])[-1]
    if proc.returncode < 0:
        error = f"papermill was killed by {_signal_name(-proc.returncode)}; {error}"
    runs.write_status(run_dir, runs.FAILED, error=error, stderr_tail=stderr[-4000:], **info)
    return {"status": runs.FAILED, **info, "error": error}


@contextlib.contextmanager
def stop_children_on_signals():
    """While in this block (main thread only): SIGTERM/SIGINT/SIGHUP stop every papermill process tree, then raise
    :class:`SweepInterrupted`, so no run goes on writing after the sweep is gone."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def handler(signum, frame):
        if CHILDREN.stopping:
            return  # a second signal while the first is being handled
        CHILDREN.stop_all()
        raise SweepInterrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
