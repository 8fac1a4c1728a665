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
    # a value may be {from: <stage>, pick: <rule>}: an earlier stage's decision (qmlnb.lab.decisions,
    # filled in stage by stage by qmlnb.lab.flow, which `python -m qmlnb sweep` runs through)

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

import ast
import contextlib
import hashlib
import itertools
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml
from tqdm.auto import tqdm

from . import decisions, runs
from .._util import available_cores
from .executor import (BUSY, CHILDREN, CoreBudget, SweepInterrupted, run_point,
                       run_points_on_dask, skip_point, stop_children_on_signals)

GRID_KEYS = {"name", "notebook", "jobs", "timeout", "grid", "description"}
# a grid name is one folder under the runs folder: no separators, no "." or "..", no hidden name
SAFE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,99}")


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
    notebook_sha256: str = ""  # of the notebook file when the grid was loaded: recorded by each run
    jobs: int | None = None
    timeout: int | None = None
    description: str = ""
    runs_dir: Path = field(default_factory=lambda: Path("runs"))

    def run_dir(self, point: dict) -> Path:
        return self.runs_dir / self.name / runs.run_name(point)

    def identity(self, point: dict) -> dict:
        """What a complete run of ``point`` must have recorded: the point and the notebook's path and hash."""
        return {"point": point, "notebook_path": str(self.notebook), "notebook_sha256": self.notebook_sha256}

    def is_done(self, point: dict) -> bool:
        """Is ``point`` complete, run by this very notebook with these very parameters?"""
        return runs.is_complete(self.run_dir(point), **self.identity(point))


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


def _read_notebook(notebook: Path, grid_file: Path) -> str:
    """SHA-256 of ``notebook``, after checking that it is a valid nbformat notebook (SweepError if not)."""
    data = notebook.read_bytes()
    try:
        nbformat.validate(nbformat.reads(data.decode("utf-8"), as_version=4))
    except Exception as err:  # noqa: BLE001 - nbformat raises many types for a file that is not a notebook
        raise SweepError(f"{grid_file}: notebook {notebook} is not a valid Jupyter notebook "
                         f"({type(err).__name__}: {str(err)[:200]})") from err
    return hashlib.sha256(data).hexdigest()


def _grid_name(spec: dict, grid_file: Path) -> str:
    """The grid's folder name (``name:`` or the file's stem), refused unless it is one safe folder name."""
    name = str(spec.get("name") or grid_file.stem)
    if not SAFE_NAME.fullmatch(name):
        source = "name" if spec.get("name") else "the file name (set 'name:')"
        raise SweepError(f"{grid_file}: {source} {name!r} is not a plain folder name: use up to 100 of "
                         "A-Z a-z 0-9 _ + - . (not starting with '.'), so the runs stay inside the runs folder")
    return name


def _check_points(points: list[dict], grid_file: Path) -> None:
    """Refuse values JSON cannot carry and points given twice (they would share one run folder)."""
    seen = {}
    for point in points:
        try:
            runs.canonical_json(point)
        except (TypeError, ValueError) as err:
            raise SweepError(f"{grid_file}: point {point!r} has a value papermill cannot pass as JSON: {err}") from err
        name = runs.run_name(point)
        if name in seen:
            raise SweepError(f"{grid_file}: the point {point!r} appears twice in the grid (as {seen[name]!r}); "
                             "each point runs once, so list it once")
        seen[name] = point


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
    name = _grid_name(spec, path)
    notebook = _resolve_notebook(spec["notebook"], path)
    notebook_sha256 = _read_notebook(notebook, path)
    points = expand_grid(spec.get("grid"), str(path))
    _check_points(points, path)
    params = notebook_parameters(notebook)
    try:  # references to earlier stages ({from: ..., pick: ...}) are filled in by qmlnb.lab.flow
        decisions.check_points(points, path, params)
    except decisions.DecisionError as err:
        raise SweepError(str(err)) from err
    for point in points:
        unknown = [k for k in point if k not in params]
        if unknown:
            raise SweepError(f"{path}: unknown parameter(s) {', '.join(map(repr, unknown))} for {notebook.name}; "
                             f"its parameters are: {', '.join(params)}")
        for key, value in point.items():
            if not decisions.is_deferred(value) and not _type_ok(value, params[key]):
                raise SweepError(f"{path}: parameter {key!r} = {value!r} is a {type(value).__name__}, but "
                                 f"{notebook.name} expects a {type(params[key]).__name__} (default {params[key]!r})")
    for key in ("jobs", "timeout"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SweepError(f"{path}: {key!r} must be a positive integer, got {value!r}")
    return Sweep(path=path, name=name, notebook=notebook, points=points, notebook_params=params,
                 notebook_sha256=notebook_sha256, jobs=spec.get("jobs"), timeout=spec.get("timeout"),
                 description=str(spec.get("description") or ""), runs_dir=Path(runs_dir))



def backend_unusable(point: dict) -> str | None:
    """Why the Gram backend a point names cannot run here, or None (also None for no/unknown backend).

    Checked before starting a kernel, so a GPU-less machine does not pay a
    kernel start per GPU point; unknown names are left to the notebook's error.
    """
    name = point.get("backend")
    if not isinstance(name, str):
        return None
    from ..kernels import available_backends

    usable, reason = available_backends().get(name, (True, ""))
    return None if usable else f"Gram backend {name!r} cannot run here: {reason}"


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
                out.append((sweep, point, threads, f"threads={threads} exceeds the {cores} cores of {where}"))
            else:
                out.append((sweep, point, threads, backend_unusable(point) or decisions.dataset_unusable(point) or "run"))
    return out


def run_sweeps(sweeps: list[Sweep], jobs: int = 1, cores: int | None = None, progress: bool = True,
               client=None) -> dict:
    """Run every pending point of ``sweeps``; returns counts and the failed, skipped and busy runs.

    Points of one grid run up to ``min(jobs, grid's jobs)`` at a time; a run with
    t threads holds t of the ``cores`` tokens, so concurrent threads never exceed them.
    With ``client`` (a Dask client, ``"local"`` or a scheduler address) each point
    is a Dask task instead, with the threads of one worker, and the cluster decides
    how many run at once.  A point held by another live sweep counts as ``busy``
    and is not run.  SIGTERM/SIGINT (when called from the main thread) stop the
    local papermill processes, mark their runs interrupted and raise
    :class:`SweepInterrupted`.
    """
    from ..kernels.distributed import connect

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
                elif result["status"] == BUSY:
                    holder = f"pid {result['pid']}" if result.get("pid") else "another process"
                    summary["busy_runs"].append((where, result.get("pid")))
                    tqdm.write(f"BUSY {where}: held by {holder} (another sweep is running it); not run")
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
                    account(skip_point(sweep, point, action), sweep, point)
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
    parser.add_argument("--dask", default=None, metavar="ADDRESS",
                        help="run each point as a Dask task: 'local' (a LocalCluster of this machine) or a "
                             "scheduler address; the workers must see the notebooks, runs and data at the same paths")
    parser.add_argument("--list", action="store_true", help="print the points and their state, run nothing")


def run(args, run_all=None, plan_lines=None) -> int:
    """The ``sweep`` command; ``run_all``/``plan_lines`` replace :func:`run_sweeps` and the ``--list``
    lines (``qmlnb.lab.flow`` passes its stage-by-stage versions; ``python -m qmlnb sweep`` runs through it)."""
    for name in ("jobs", "cores"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name} must be at least 1, got {value}")
    try:
        sweeps = [load_sweep(path, args.runs_dir) for path in args.grids]
    except SweepError as err:
        print(f"qmlnb sweep: {err}", file=sys.stderr)
        return 2
    try:
        if args.list:
            if plan_lines is not None:
                print("\n".join(plan_lines(sweeps, args.cores or available_cores(), args.jobs)))
                return 0
            for sweep, point, threads, action in plan(sweeps, args.cores or available_cores(), args.jobs):
                state = action if action in ("run", "done") else f"skip ({action})"
                print(f"{sweep.run_dir(point)}  threads={threads}  {state}")
            return 0
        summary = (run_all or run_sweeps)(sweeps, jobs=args.jobs, cores=args.cores, client=args.dask)
    except (SweepError, decisions.DecisionError) as err:
        print(f"qmlnb sweep: {err}", file=sys.stderr)
        return 2
    except SweepInterrupted as stop:
        print(f"qmlnb sweep: {stop}: the runs in progress were stopped and marked interrupted; "
              "run the sweep again to redo them", file=sys.stderr)
        return 128 + stop.signum
    busy = f", {summary['busy']} busy (held by another sweep)" if summary["busy"] else ""
    print(f"sweep: {summary['complete']} run, {summary['already_complete']} already complete, "
          f"{summary['skipped']} skipped, {summary['failed']} failed{busy}")
    for where, reason in summary["skips"]:
        print(f"  skipped {where}: {reason}")
    for where, pid in summary["busy_runs"]:
        print(f"  busy {where}: held by {f'pid {pid}' if pid else 'another process'}, not run")
    for where, error in summary["failures"]:
        print(f"  FAILED {where}: {error}", file=sys.stderr)
    return 1 if summary["failed"] else 0
