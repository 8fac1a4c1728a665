"""Run a parameterised notebook over YAML grids with papermill (resumable, failure-tolerant).

The grid files and their checks are :mod:`.grid`'s (:func:`load_sweep`, handed on
here); this module plans the points of loaded grids and runs them through
:mod:`.executor`, and is the ``python -m qmlnb sweep`` command.

Each point runs in its own folder ``runs/<name>/<run>/`` (papermill ``cwd``), with
OMP/MKL/OpenBLAS/Numba thread counts set in the kernel's environment and passed as
the notebook's ``threads`` parameter.  ``<name>`` must be one plain folder name;
``<run>`` is :func:`qmlnb.lab.runs.run_name` of the point (readable, plus a hash of the
exact parameters).  A run is complete only for the same point and the same notebook
(path and SHA-256); complete runs are skipped on a re-run, failed and interrupted
ones are redone.  Everything is checked before the first run starts.

Safe to run twice at once on one runs folder: each point is run under the run
folder's lock (:class:`qmlnb.lab.runs.RunLock`), and a point another live sweep holds is
counted "busy" and left alone.  Each papermill process leads its own process group
(its kernel, its own session); SIGTERM or SIGINT of the sweep stops them all and marks
their runs interrupted.  A papermill process that outlives a SIGKILLed sweep still
holds its lock, so the next sweep does not start that point a second time.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from . import decisions, runs
from ..data import catalog
from .._util import available_cores, check_positive_int, plural
from .executor import BUSY, CHILDREN, CoreBudget, SweepInterrupted, run_point, skip_point, stop_children_on_signals
from .executor_dask import run_points_on_dask
# the grid files' names, handed on: `sweep.load_sweep(...)` is how callers read a grid
from .grid import GRID_KEYS, Sweep, SweepError, expand_grid, load_sweep, notebook_parameters

__all__ = ["GRID_KEYS", "Sweep", "SweepError", "add_arguments", "backend_unusable", "expand_grid", "load_sweep",
           "notebook_parameters", "plan", "resolve_data_dir", "run", "run_sweeps"]


def backend_unusable(point: dict) -> str | None:
    """Why the Gram backend a point names cannot run here, or None (also None for no/unknown backend).

    Checked before starting a kernel, so a GPU-less machine does not pay a
    kernel start per GPU point; unknown names are left to the notebook's error.
    """
    name = point.get("backend")
    if not isinstance(name, str):
        return None
    from ..kernels.registry import UnknownBackendError, unusable_reason

    try:
        return unusable_reason(name)
    except UnknownBackendError:
        return None


def plan(sweeps: list[Sweep], cores: int, jobs: int,
         where: str = "this machine") -> list[tuple[Sweep, dict, int | None, str]]:
    """(sweep, point, threads, action) for every point: action 'run', 'done' or a skip reason.

    Raises SweepError when a run folder would lie outside the runs folder (a
    symlinked grid folder) or when two grids share a run folder.
    """
    out, owners = [], {}
    for sweep in sweeps:
        sweep_jobs = min(jobs, sweep.jobs or jobs)
        for point in sweep.points:
            try:
                folder = runs.inside(sweep.run_dir(point), sweep.runs_dir)
            except runs.RunPathError as err:
                raise SweepError(f"{sweep.path}: {err}") from err
            if folder in owners:
                raise SweepError(f"{owners[folder]} and {sweep.path} both have the point {point!r} under the name "
                                 f"{sweep.name!r}: give one of them another 'name:'")
            owners[folder] = sweep.path
            threads = point.get("threads") or max(1, cores // sweep_jobs)
            if sweep.is_done(point):
                out.append((sweep, point, threads, "done"))
            elif isinstance(threads, int) and threads > cores:
                out.append((sweep, point, threads, f"threads={threads} exceeds the {plural(cores, 'core')} of {where}"))
            else:
                out.append((sweep, point, threads, backend_unusable(point) or decisions.dataset_unusable(point) or "run"))
    return out


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder the runs will read, absolute: ``data_dir``, else $QMLNB_DATA_DIR, else ``data/``.

    A folder given explicitly (``data_dir`` or the variable) that does not exist
    is a :class:`SweepError` naming it, raised before any run starts: otherwise
    every point needing a dataset would be skipped, one by one, for want of its
    files.  The default ``data/`` may be absent (the embedded digits need no files).
    """
    if data_dir:
        path, source = Path(data_dir), "--data-dir"
    else:
        path, source = catalog.data_dir(), f"${catalog.ENV_VAR}" if os.environ.get(catalog.ENV_VAR) else None
    if source and not path.is_dir():
        absolute = "" if path.is_absolute() else f" (from {Path.cwd()}: {path.resolve()})"
        raise SweepError(f"the data folder {path}{absolute}, given by {source}, does not exist or is not a folder")
    if source and not known_datasets(path):
        # a folder given on purpose that holds none of the catalogue's datasets is almost always the wrong folder
        # (its parent, or a dataset's own folder): say so before every point needing a dataset is skipped
        warnings.warn(f"the data folder {path.resolve()}, given by {source}, holds none of the datasets "
                      f"{', '.join(n for n in catalog.DATASETS if n != 'digits')} (each in its own subfolder, e.g. "
                      f"{catalog.dataset_info('fashion-mnist').folder}/): their stages will be skipped and "
                      "`first_available` stages will use the embedded digits", stacklevel=2)
    return path.resolve()


def known_datasets(root: str | os.PathLike) -> list[str]:
    """The catalogue's datasets (digits aside: it is embedded) whose training or test files are all in ``root``."""
    return [name for name in catalog.DATASETS if name != "digits" and decisions.dataset_available(name, root)]


def run_sweeps(sweeps: list[Sweep], jobs: int = 1, cores: int | None = None, progress: bool = True,
               client=None, tracker=None, data_dir: str | os.PathLike | None = None) -> dict:
    """Run every pending point of ``sweeps``; returns counts and the failed, skipped and busy runs.

    Points of one grid run up to ``min(jobs, grid's jobs)`` at a time; a run with
    t threads holds t of the ``cores`` tokens, so concurrent threads never exceed them.
    With ``client`` (a Dask client, ``"local"`` or a scheduler address) each point
    is a Dask task instead, with the threads of one worker, and the cluster decides
    how many run at once.  A point held by another live sweep counts as ``busy``
    and is not run.  SIGTERM/SIGINT (when called from the main thread) stop the
    papermill processes (here, or on the Dask workers), mark their runs interrupted and raise
    :class:`SweepInterrupted`.  ``tracker`` (a :class:`qmlnb.lab.track.SweepTracker`) logs each run
    completed here to MLflow or W&B; its failures are recorded in the run's ``tracker.json``, never raised.
    ``data_dir``: the data folder the runs read (see :func:`resolve_data_dir`; checked before anything runs).
    """
    from ..kernels.distributed import connect

    data_dir = resolve_data_dir(data_dir)

    summary = {"complete": 0, "already_complete": 0, "skipped": 0, "failed": 0, "busy": 0, "interrupted": 0,
               "failures": [], "skips": [], "busy_runs": []}
    budget_cores = cores or available_cores()
    lock = threading.Lock()
    CHILDREN.stopping = False

    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_children_on_signals())
        dask_client = None if client is None else stack.enter_context(connect(client))
        if dask_client is not None:
            worker_threads = dask_client.nthreads().values()
            if not worker_threads:  # its tasks would wait for ever
                raise SweepError(f"the Dask cluster of {dask_client.scheduler.address} has no workers")
            todo = plan(sweeps, min(worker_threads), 1, where="a Dask worker")
        else:
            todo = plan(sweeps, budget_cores, jobs)
        # the bar and its ETA count only the points that run: points already complete or skipped before running
        # take no time, and counting them made the rate (hundreds of runs/s) and the ETA meaningless
        bar = stack.enter_context(tqdm(total=sum(1 for *_, action in todo if action == "run"), desc="sweep",
                                       unit="run", disable=not progress))
        budget = CoreBudget(budget_cores)

        def account(result: dict, sweep: Sweep, point: dict, ran: bool = True) -> None:
            if tracker is not None and result["status"] == runs.COMPLETE:
                result["tracker"] = tracker(sweep.run_dir(point))
            with lock:
                summary[result["status"]] += 1
                where = str(sweep.run_dir(point))
                if result["status"] == runs.FAILED:
                    summary["failures"].append((where, result["error"]))
                    tqdm.write(f"FAILED {where}: {result['error']}")
                elif result["status"] == runs.SKIPPED:
                    summary["skips"].append((where, result["reason"]))
                elif result["status"] == BUSY:
                    holder = f"pid {result['pid']}" if result.get("pid") else "another process"
                    summary["busy_runs"].append((where, result.get("pid")))
                    tqdm.write(f"BUSY {where}: held by {holder} (another sweep is running it); not run")
                if ran:
                    bar.update(1)

        def work(sweep: Sweep, point: dict, threads: int) -> None:
            tokens = budget.acquire(threads)
            try:
                bar.set_postfix_str(sweep.label(point))
                result = run_point(sweep, point, threads, str(data_dir))
            finally:
                budget.release(tokens)
            account(result, sweep, point)

        for sweep in sweeps:
            mine = [(p, t, a) for s, p, t, a in todo if s is sweep]
            pending = []
            for point, threads, action in mine:
                if action == "run":
                    pending.append((point, threads))
                elif action == "done":
                    summary["already_complete"] += 1
                else:  # a reason known before running: record it like a skip from inside the notebook
                    account(skip_point(sweep, point, action), sweep, point, ran=False)
            if dask_client is not None:
                for (point, _), result in zip(pending, run_points_on_dask(sweep, pending, dask_client, data_dir)):
                    account(result, sweep, point)
                continue
            workers = max(1, min(jobs, sweep.jobs or jobs, len(pending) or 1))
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                for future in [pool.submit(work, sweep, p, t) for p, t in pending]:
                    future.result()
            finally:
                # on a signal the papermill processes are already stopped: their runs are marked interrupted,
                # queued points never start; on another error, the runs in progress finish first
                pool.shutdown(wait=True, cancel_futures=True)
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("grids", nargs="+", help="YAML grid files (params/*.yaml)")
    parser.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs/)")
    parser.add_argument("--jobs", "-j", type=int, default=1,
                        help="runs at once (each grid may cap it; threads x runs never exceed the cores)")
    parser.add_argument("--cores", type=int, default=None, help="cores to share out (default: this process's)")
    parser.add_argument("--data-dir", default=None,
                        help=f"folder holding the dataset folders (default ${catalog.ENV_VAR} or ./data); "
                             "one given that does not exist is an error")
    parser.add_argument("--dask", default=None, metavar="ADDRESS",
                        help="run each point as a Dask task: 'local' (a LocalCluster of this machine) or a "
                             "scheduler address; the workers must see the notebooks, runs and data at the same paths")
    parser.add_argument("--list", action="store_true", help="print the points and their state, run nothing")
    parser.add_argument("--tracker", choices=("mlflow", "wandb"), default=None,
                        help="also log each completed run to MLflow (mlruns/) or W&B (offline, wandb/); "
                             "needs pip install -e \".[track]\"")
    parser.add_argument("--tracker-store", default=None, metavar="PATH",
                        help="the tracker's store (see python -m qmlnb track export --help)")


def run(args, run_all=None, plan_lines=None) -> int:
    """The ``sweep`` command; ``run_all``/``plan_lines`` replace :func:`run_sweeps` and the ``--list``
    lines (``qmlnb.lab.flow`` passes its stage-by-stage versions; ``python -m qmlnb sweep`` runs through it)."""
    for name in ("jobs", "cores"):
        value = getattr(args, name)
        if value is not None:
            try:
                check_positive_int(value, f"--{name}")
            except ValueError as err:
                print(f"qmlnb sweep: {err}", file=sys.stderr)
                return 2
    try:
        sweeps = [load_sweep(path, args.runs_dir) for path in args.grids]
        data_dir = resolve_data_dir(args.data_dir)  # also before --list: a folder that is not there is named at once
    except SweepError as err:
        print(f"qmlnb sweep: {err}", file=sys.stderr)
        return 2
    tracker = None
    if getattr(args, "tracker", None) and not args.list:
        from .track import SweepTracker, TrackerUnavailable
        try:
            tracker = SweepTracker(args.tracker, args.tracker_store)
        except TrackerUnavailable as err:
            print(f"qmlnb sweep: {err}", file=sys.stderr)
            return 2
    if args.data_dir:
        # this command's process reads the same folder as its runs: the skips of absent datasets
        # (plan) and the flow's first-available datasets look for files there
        os.environ[catalog.ENV_VAR] = str(data_dir)
    try:
        if args.list:
            if plan_lines is not None:
                print("\n".join(plan_lines(sweeps, args.cores or available_cores(), args.jobs)))
                return 0
            for sweep, point, threads, action in plan(sweeps, args.cores or available_cores(), args.jobs):
                state = action if action in ("run", "done") else f"skip ({action})"
                print(f"{sweep.run_dir(point)}  threads={threads}  {state}")
            return 0
        summary = (run_all or run_sweeps)(sweeps, jobs=args.jobs, cores=args.cores, client=args.dask, tracker=tracker,
                                          data_dir=args.data_dir)
    except (SweepError, decisions.DecisionError) as err:
        print(f"qmlnb sweep: {err}", file=sys.stderr)
        return 2
    except SweepInterrupted as stop:
        print(f"qmlnb sweep: {stop}: the runs in progress were stopped and marked interrupted; "
              "run the sweep again to redo them", file=sys.stderr)
        return 128 + stop.signum
    busy = f", {summary['busy']} busy (held by another sweep)" if summary["busy"] else ""
    print(f"sweep: {plural(summary['complete'], 'run')} completed, {summary['already_complete']} already complete, "
          f"{summary['skipped']} skipped, {summary['failed']} failed{busy}")
    for where, reason in summary["skips"]:
        print(f"  skipped {where}: {reason}")
    for where, pid in summary["busy_runs"]:
        print(f"  busy {where}: held by {f'pid {pid}' if pid else 'another process'}, not run")
    for where, error in summary["failures"]:
        print(f"  FAILED {where}: {error}", file=sys.stderr)
    if tracker is not None:
        print(tracker.report(args.runs_dir))
    return 1 if summary["failed"] else 0
