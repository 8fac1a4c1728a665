"""Run a parameterised notebook over YAML grids with papermill (resumable, failure-tolerant).

A grid file (``params/*.yaml``)::

    name: gram-scaling                      # runs/<name>/...; default: the file's stem
    notebook: notebooks/40-gram-scaling.ipynb   # relative to the YAML's repository (its folder's parent) or absolute
    jobs: 1                                 # at most this many runs at once (timing stages say 1)
    timeout: 900                            # seconds per notebook cell (optional)
    grid:                                   # a product of lists (a scalar is a one-value list) ...
      backend: [cpu, numba]
      threads: [1, 2]
    # ... or a list of such mappings, whose points are joined in order

Each point runs in its own folder ``runs/<name>/<run>/`` (papermill ``cwd``), with
OMP/MKL/OpenBLAS/Numba thread counts set in the kernel's environment and passed as
the notebook's ``threads`` parameter.  Completed runs are skipped on a re-run; failed
and interrupted ones are redone.  Everything is checked before the first run starts.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml
from tqdm.auto import tqdm

from . import runs
from .provenance import available_cores
from .experiments import THREAD_ENV_VARS, RunSkipped

DATA_DIR_ENV = "QMLNB_DATA_DIR"
SKIP_EXCEPTION = RunSkipped.__name__  # raised inside a notebook: the run does not apply here (data, backend)
GRID_KEYS = {"name", "notebook", "jobs", "timeout", "grid", "description"}


class SweepError(ValueError):
    """A grid file that cannot be run (raised before any run starts)."""


@dataclass
class Sweep:
    """One validated grid file: its notebook, its points and how to run them."""

    path: Path
    name: str
    notebook: Path
    points: list[dict]
    notebook_params: dict  # name -> default value (literal) of the notebook's parameters cell
    jobs: int | None = None
    timeout: int | None = None
    description: str = ""
    runs_dir: Path = field(default_factory=lambda: Path("runs"))

    def run_dir(self, point: dict) -> Path:
        return self.runs_dir / self.name / runs.run_name(point)


def notebook_parameters(notebook: Path) -> dict:
    """{name: default value} of the notebook's ``parameters`` cell (literals only)."""
    import papermill

    inferred = papermill.inspect_notebook(str(notebook))
    if not inferred:
        raise SweepError(f"notebook {notebook} has no cell tagged 'parameters'")
    out = {}
    for name, info in inferred.items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as err:
            raise SweepError(f"parameter {name!r} of {notebook} is not a literal: {info['default']!r}") from err
    return out


def _type_ok(value, default) -> bool:
    """Does a grid value have the type of the notebook's default?  (ints pass for floats; None default: any)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def expand_grid(grid, where: str) -> list[dict]:
    """Points of a grid: the product of a mapping's lists, or the joined points of a list of mappings."""
    if grid is None:
        raise SweepError(f"{where}: the grid is empty (no 'grid' key)")
    blocks = grid if isinstance(grid, list) else [grid]
    if not blocks:
        raise SweepError(f"{where}: the grid is empty (an empty list of grids)")
    points = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise SweepError(f"{where}: grid {i} must be a mapping of parameter -> list of values, got {block!r}")
        axes = {}
        for key, values in block.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise SweepError(f"{where}: the grid is empty (parameter {key!r} has no values)")
            axes[key] = values
        points.extend(dict(zip(axes, combo)) for combo in itertools.product(*axes.values()))
    return points


def _resolve_notebook(value, grid_file: Path) -> Path:
    path = Path(value)
    candidates = [path] if path.is_absolute() else [grid_file.parent.parent / path, grid_file.parent / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise SweepError(f"{grid_file}: notebook {value!r} not found (looked in {', '.join(str(c) for c in candidates)})")


def load_sweep(path: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Sweep:
    """Read and validate a grid file; every error is raised here, before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"grid file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: expected a mapping with 'notebook' and 'grid', got {type(spec).__name__}")
    unknown = set(spec) - GRID_KEYS
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(GRID_KEYS)}")
    if "notebook" not in spec:
        raise SweepError(f"{path}: no 'notebook' key")
    notebook = _resolve_notebook(spec["notebook"], path)
    points = expand_grid(spec.get("grid"), str(path))
    params = notebook_parameters(notebook)
    for point in points:
        unknown = [k for k in point if k not in params]
        if unknown:
            raise SweepError(f"{path}: unknown parameter(s) {', '.join(map(repr, unknown))} for {notebook.name}; "
                             f"its parameters are: {', '.join(params)}")
        for key, value in point.items():
            if not _type_ok(value, params[key]):
                raise SweepError(f"{path}: parameter {key!r} = {value!r} is a {type(value).__name__}, but "
                                 f"{notebook.name} expects a {type(params[key]).__name__} (default {params[key]!r})")
    for key in ("jobs", "timeout"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SweepError(f"{path}: {key!r} must be a positive integer, got {value!r}")
    return Sweep(path=path, name=str(spec.get("name") or path.stem), notebook=notebook, points=points,
                 notebook_params=params, jobs=spec.get("jobs"), timeout=spec.get("timeout"),
                 description=str(spec.get("description") or ""), runs_dir=Path(runs_dir))


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
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable notebook simply has no error to report
        return "", "", ""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return output.get("ename", ""), output.get("evalue", ""), "\n".join(output.get("traceback", []))
    return "", "", ""


def run_point(sweep: Sweep, point: dict, threads: int, data_dir: str | None = None) -> dict:
    """Execute one grid point with papermill in a fresh process and record its final status.

    The executed notebook is written under a temporary name and moved into place;
    ``status.json`` is written last.  Returns the status record.  ``data_dir``:
    the data folder (default: $QMLNB_DATA_DIR or ./data, resolved here).
    """
    run_dir = sweep.run_dir(point)
    runs.clear_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = dict(point)
    if "threads" in sweep.notebook_params:
        parameters["threads"] = threads
    runs.write_status(run_dir, runs.RUNNING, params=parameters, pid=os.getpid())
    env = dict(os.environ, **{var: str(threads) for var in THREAD_ENV_VARS})
    env["QMLNB_RUN_DIR"] = str(run_dir.resolve())
    # the kernel's cwd is the run folder: a relative data directory means relative to where the sweep started
    env[DATA_DIR_ENV] = data_dir or default_data_dir()
    partial = run_dir / f".{sweep.notebook.stem}.executing.ipynb"
    final = run_dir / sweep.notebook.name
    cmd = [sys.executable, "-m", "papermill", str(sweep.notebook), str(partial), "--cwd", str(run_dir),
           "--kernel", "python3", "--no-progress-bar", "-y", json.dumps(parameters)]
    if sweep.timeout:
        cmd += ["--execution-timeout", str(sweep.timeout)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 3)
    if partial.exists():
        os.replace(partial, final)  # same folder: atomic
    info = {"params": parameters, "threads": threads, "seconds": seconds, "notebook": final.name}
    if proc.returncode == 0:
        runs.write_status(run_dir, runs.COMPLETE, **info)
        return {"status": runs.COMPLETE, **info}
    ename, evalue, _ = _error_of(final)
    if ename == SKIP_EXCEPTION:
        runs.write_status(run_dir, runs.SKIPPED, reason=evalue, **info)
        return {"status": runs.SKIPPED, **info, "reason": evalue}
    error = f"{ename}: {evalue}" if ename else (proc.stderr.strip().splitlines() or ["papermill failed"])[-1]
    runs.write_status(run_dir, runs.FAILED, error=error, stderr_tail=proc.stderr[-4000:], **info)
    return {"status": runs.FAILED, **info, "error": error}


def default_data_dir() -> str:
    """$QMLNB_DATA_DIR or ./data, as an absolute path."""
    return str(Path(os.environ.get(DATA_DIR_ENV) or "data").resolve())


def _point_task(item: tuple) -> dict:
    """A Dask task: ``run_point(*item)`` on a worker."""
    return run_point(*item)


def run_points_on_dask(sweep: Sweep, pending: list[tuple[dict, int]], dask_client) -> list[dict]:
    """Status records of ``pending`` (point, threads) pairs, each run as a Dask task.

    The workers must see the notebooks, the runs folder and the data folder
    at the same paths as this process (one machine or a shared file system);
    paths are made absolute here.  A task that fails outside papermill
    (e.g. its worker died more often than Dask retries) counts as a failed run.
    """
    from .kernels.distributed import run_on_dask

    portable, data_dir = dataclasses.replace(sweep, runs_dir=sweep.runs_dir.resolve()), default_data_dir()
    items = [(portable, point, threads, data_dir) for point, threads in pending]
    results = run_on_dask(_point_task, items, dask_client, return_exceptions=True, desc=f"{sweep.name} on Dask")
    return [r if isinstance(r, dict) else {"status": runs.FAILED, "error": f"the Dask task failed: {r!r}"}
            for r in results]


def backend_unusable(point: dict) -> str | None:
    """Why the Gram backend a point names cannot run here, or None (also None for no/unknown backend).

    Checked before starting a kernel, so a GPU-less machine does not pay a
    kernel start per GPU point; unknown names are left to the notebook's error.
    """
    name = point.get("backend")
    if not isinstance(name, str):
        return None
    from .kernels import available_backends

    usable, reason = available_backends().get(name, (True, ""))
    return None if usable else f"Gram backend {name!r} cannot run here: {reason}"


def plan(sweeps: list[Sweep], cores: int, jobs: int,
         where: str = "this machine") -> list[tuple[Sweep, dict, int | None, str]]:
    """(sweep, point, threads, action) for every point: action 'run', 'done' or a skip reason."""
    out = []
    for sweep in sweeps:
        sweep_jobs = min(jobs, sweep.jobs or jobs)
        for point in sweep.points:
            threads = point.get("threads") or max(1, cores // sweep_jobs)
            if runs.is_complete(sweep.run_dir(point)):
                out.append((sweep, point, threads, "done"))
            elif isinstance(threads, int) and threads > cores:
                out.append((sweep, point, threads, f"threads={threads} exceeds the {cores} cores of {where}"))
            else:
                out.append((sweep, point, threads, backend_unusable(point) or "run"))
    return out


def run_sweeps(sweeps: list[Sweep], jobs: int = 1, cores: int | None = None, progress: bool = True,
               client=None) -> dict:
    """Run every pending point of ``sweeps``; returns counts and the failed runs.

    Points of one grid run up to ``min(jobs, grid's jobs)`` at a time; a run with
    t threads holds t of the ``cores`` tokens, so concurrent threads never exceed them.
    With ``client`` (a Dask client, ``"local"`` or a scheduler address) each point
    is a Dask task instead, with the threads of one worker, and the cluster decides
    how many run at once.
    """
    from .kernels.distributed import connect

    summary = {"complete": 0, "already_complete": 0, "skipped": 0, "failed": 0, "failures": [], "skips": []}
    budget_cores = cores or available_cores()
    lock = threading.Lock()

    with contextlib.ExitStack() as stack:
        dask_client = None if client is None else stack.enter_context(connect(client))
        if dask_client is not None:
            worker_threads = dask_client.nthreads().values()
            if not worker_threads:  # its tasks would wait for ever
                raise SweepError(f"the Dask cluster of {dask_client.scheduler.address} has no workers")
            todo = plan(sweeps, min(worker_threads), 1, where="a Dask worker")
        else:
            todo = plan(sweeps, budget_cores, jobs)
        bar = stack.enter_context(tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress))
        budget = CoreBudget(budget_cores)

        def account(result: dict, sweep: Sweep, point: dict) -> None:
            with lock:
                summary[result["status"]] += 1
                where = str(sweep.run_dir(point))
                if result["status"] == runs.FAILED:
                    summary["failures"].append((where, result["error"]))
                    tqdm.write(f"FAILED {where}: {result['error']}")
                elif result["status"] == runs.SKIPPED:
                    summary["skips"].append((where, result["reason"]))
                bar.update(1)

        def work(sweep: Sweep, point: dict, threads: int) -> None:
            tokens = budget.acquire(threads)
            try:
                bar.set_postfix_str(f"{sweep.name}/{runs.run_name(point)}"[-60:])
                result = run_point(sweep, point, threads)
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
                    bar.update(1)
                else:  # a reason known before running: record it like a skip from inside the notebook
                    run_dir = sweep.run_dir(point)
                    runs.clear_run(run_dir)
                    runs.write_status(run_dir, runs.SKIPPED, reason=action, params=point)
                    account({"status": runs.SKIPPED, "reason": action}, sweep, point)
            if dask_client is not None:
                for (point, _), result in zip(pending, run_points_on_dask(sweep, pending, dask_client)):
                    account(result, sweep, point)
                continue
            workers = max(1, min(jobs, sweep.jobs or jobs, len(pending) or 1))
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                for future in [pool.submit(work, sweep, p, t) for p, t in pending]:
                    future.result()
            finally:
                # on Ctrl-C or an error, start nothing more; runs in progress keep no final status and are redone
                pool.shutdown(wait=True, cancel_futures=True)
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("grids", nargs="+", help="YAML grid files (params/*.yaml)")
    parser.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs/)")
    parser.add_argument("--jobs", "-j", type=int, default=1,
                        help="runs at once (each grid may cap it; threads x runs never exceed the cores)")
    parser.add_argument("--cores", type=int, default=None, help="cores to share out (default: this process's)")
    parser.add_argument("--dask", default=None, metavar="ADDRESS",
                        help="run each point as a Dask task: 'local' (a LocalCluster of this machine) or a "
                             "scheduler address; the workers must see the notebooks, runs and data at the same paths")
    parser.add_argument("--list", action="store_true", help="print the points and their state, run nothing")


def run(args) -> int:
    for name in ("jobs", "cores"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name} must be at least 1, got {value}")
    try:
        sweeps = [load_sweep(path, args.runs_dir) for path in args.grids]
    except SweepError as err:
        print(f"qmlnb sweep: {err}", file=sys.stderr)
        return 2
    if args.list:
        for sweep, point, threads, action in plan(sweeps, args.cores or available_cores(), args.jobs):
            state = action if action in ("run", "done") else f"skip ({action})"
            print(f"{sweep.run_dir(point)}  threads={threads}  {state}")
        return 0
    try:
        summary = run_sweeps(sweeps, jobs=args.jobs, cores=args.cores, client=args.dask)
    except SweepError as err:
        print(f"qmlnb sweep: {err}", file=sys.stderr)
        return 2
    print(f"sweep: {summary['complete']} run, {summary['already_complete']} already complete, "
          f"{summary['skipped']} skipped, {summary['failed']} failed")
    for where, reason in summary["skips"]:
        print(f"  skipped {where}: {reason}")
    for where, error in summary["failures"]:
        print(f"  FAILED {where}: {error}", file=sys.stderr)
    return 1 if summary["failed"] else 0
