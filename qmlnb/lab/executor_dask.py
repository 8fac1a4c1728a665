"""Grid points as tasks on a Dask cluster: each task runs its point with :func:`.executor.run_point` on the
worker's cores, and a stopped sweep stops its tasks' papermill processes there (:func:`stop_remote_runs`).

:func:`run_on_dask` is the general form: any function over items, results in order, on any client.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import uuid
from pathlib import Path

from tqdm.auto import tqdm

from . import runs
from ..data import catalog
from ..kernels.distributed import connect
from .executor import _Children, run_point
from .grid import Sweep


class _RemoteSweep(_Children):
    """On a Dask worker: the papermill processes of one sweep's tasks, and how many of its tasks run here.

    A worker may run the tasks of several sweeps at once (one per thread), so
    each sweep has its own registry (``_remote_sweep(token)``): stopping one
    sweep never touches another's runs, nor the worker's own ``CHILDREN``.
    """

    def __init__(self):
        super().__init__()
        self._active = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def task(self):
        """Count a task of this sweep as running on this worker for the duration of the block."""
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def stop_and_wait(self, timeout: float) -> bool:
        """Stop this sweep's papermill process trees here; wait until its tasks have recorded their status.

        Returns False if some task was still running after ``timeout`` seconds.
        """
        self.stop_all()
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)


_REMOTE_SWEEPS: dict[str, _RemoteSweep] = {}  # in a worker process: token of a sweep -> its registry
_REMOTE_SWEEPS_LOCK = threading.Lock()
REMOTE_STOP_TIMEOUT_S = 60.0  # a stopped run's task has this long to record its status on its worker


def _remote_sweep(token: str) -> _RemoteSweep:
    with _REMOTE_SWEEPS_LOCK:
        return _REMOTE_SWEEPS.setdefault(token, _RemoteSweep())


def _point_task(item: tuple) -> dict:
    """A Dask task: ``run_point(*args)`` on a worker, for ``item = (token, args)``, registered as the sweep's."""
    token, args = item
    remote = _remote_sweep(token)
    with remote.task():
        return run_point(*args, children=remote)


async def _stop_remote_sweep(token: str, timeout: float) -> bool:
    """Run by ``Client.run`` on each worker: stop the sweep ``token``'s runs there (in a thread: the
    worker's event loop keeps serving).  True once its tasks there have all recorded their status."""
    import asyncio

    return await asyncio.to_thread(_remote_sweep(token).stop_and_wait, timeout)


def _forget_remote_sweep(token: str) -> None:
    """Run by ``Client.run`` on each worker once every task of the sweep ``token`` has finished."""
    with _REMOTE_SWEEPS_LOCK:
        _REMOTE_SWEEPS.pop(token, None)


def stop_remote_runs(dask_client, token: str, timeout: float = REMOTE_STOP_TIMEOUT_S) -> list[str]:
    """Stop the papermill processes of the sweep ``token`` on every worker; the addresses of workers that
    did not confirm it (unreachable, or a task still running after ``timeout`` seconds).

    Cancelling a Dask future does not stop a task that is already running,
    so each worker is asked directly (``Client.run``): its runs of this sweep
    are stopped with their process groups and record themselves as
    interrupted, and the sweep's tasks that start there afterwards run nothing.
    """
    try:
        answers = dask_client.run(_stop_remote_sweep, token, timeout, on_error="return")
    except Exception as exc:  # noqa: BLE001 - the scheduler is gone: nothing more can be asked
        return [f"the scheduler ({exc!r})"]
    return sorted(address for address, done in answers.items() if done is not True)


def run_points_on_dask(sweep: Sweep, pending: list[tuple[dict, int]], dask_client,
                       data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Status records of ``pending`` (point, threads) pairs, each run as a Dask task.

    The workers must see the notebooks, the runs folder and the data folder
    at the same paths as this process (one machine or a shared file system);
    paths are made absolute here (``data_dir``: default $QMLNB_DATA_DIR or
    ./data).  A task that fails outside papermill
    (e.g. its worker died more often than Dask retries) counts as a failed run.
    """
    portable = dataclasses.replace(sweep, runs_dir=sweep.runs_dir.resolve())
    data_dir = str(Path(data_dir or catalog.data_dir()).resolve())
    token = f"{sweep.name}-{uuid.uuid4().hex}"
    items = [(token, (portable, point, threads, data_dir)) for point, threads in pending]
    try:
        results = run_on_dask(_point_task, items, dask_client, return_exceptions=True, desc=f"{sweep.name} on Dask")
    except BaseException:  # SweepInterrupted (SIGTERM/SIGINT) or a lost scheduler: no run may go on alone
        unconfirmed = stop_remote_runs(dask_client, token)
        if unconfirmed:
            tqdm.write(f"could not confirm that the runs of {sweep.name} stopped on {', '.join(unconfirmed)}; "
                       "their status may stay 'running'", file=sys.stderr)
        raise
    with contextlib.suppress(Exception):  # only tidying: a worker that went away holds nothing
        dask_client.run(_forget_remote_sweep, token, on_error="return")
    return [r if isinstance(r, dict) else {"status": runs.FAILED, "error": f"the Dask task failed: {r!r}"}
            for r in results]


def run_on_dask(fn, items, client, *, return_exceptions: bool = False, timeout: float | None = None,
                desc: str = "tasks") -> list:
    """``[fn(item) for item in items]`` with each call as a Dask task; results in the order of ``items``.

    Made for sweeps: one papermill run per item.  ``fn`` must be picklable
    (a module-level function).  With ``return_exceptions=True`` a failed item
    yields its exception instead of stopping the others, so a sweep can
    record the failure and go on; otherwise the first failure is raised
    (after the other tasks were cancelled).

    Parameters
    ----------
    fn : callable(item) -> result
    items : iterable of picklable items
    client : see ``connect``
    """
    from distributed import as_completed

    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    items = list(items)
    results: list = [None] * len(items)
    with connect(client, timeout=timeout) as dask_client:
        futures = dask_client.map(fn, items, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            with tqdm(total=len(items), desc=desc, unit="task") as bar:
                for future in as_completed(futures, loop=dask_client.loop):  # not the default client's loop
                    i = index[future.key]
                    if future.status == "error" and return_exceptions:
                        results[i] = future.exception()
                    else:
                        results[i] = future.result()
                    bar.update()
        finally:
            dask_client.cancel(futures)
    return results
