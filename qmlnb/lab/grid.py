"""Grid files (``params/*.yaml``): read, validate and expand into a :class:`Sweep` of points.

A grid file::

    name: gram-scaling                      # runs/<name>/...; default: the file's stem
    stage: gram-scaling                     # what the runs measure (qmlnb.lab.stages.STAGES): the report selects by it
    notebook: notebooks/30-gram-scaling.ipynb   # relative to the YAML's repository (its folder's parent) or absolute
    jobs: 1                                 # at most this many runs at once (timing stages say 1)
    timeout: 900                            # seconds per notebook cell (optional)
    grid:                                   # a product of lists (a scalar is a one-value list) ...
      backend: [cpu, numba]
      threads: [1, 2]
    # ... or a list of such mappings, whose points are joined in order
    # a value may be {from: <grid>, pick: <rule>}: an earlier stage's decision (qmlnb.lab.decisions,
    # filled in stage by stage by qmlnb.lab.flow, which `python -m qmlnb sweep` runs through)

Everything a grid can get wrong is refused here, by :func:`load_sweep`, before
any run starts (:class:`SweepError` naming the file, the key and the value).
:mod:`.sweep` plans and runs the points; :mod:`.executor` runs one point.  Both
import the :class:`Sweep` type from here, so neither imports the other's module
for it.
"""
from __future__ import annotations

import ast
import hashlib
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import decisions, runs, stages
from .tasks.spec import NAMED, Param, TaskSpec
from .._util import a_or_an, check_positive_int

GRID_KEYS = {"name", "stage", "notebook", "jobs", "timeout", "grid", "description"}
# most points one grid file may expand to: counted from the lists' lengths before the product is built, so a
# short YAML of many long lists (9 keys x 10 values: 10**9 points) is refused at once instead of filling memory
MAX_POINTS = 100_000


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
    stage: str | None = None  # one of stages.STAGES, recorded by each run (None: the notebook's own)
    # {run name: {asked, used, reason}} of the points whose ``{first_available: [...]}`` dataset fell back to a
    # later candidate (filled by qmlnb.lab.flow.resolve); each such run records it
    dataset_fallbacks: dict = field(default_factory=dict)

    def dataset_fallback(self, point: dict) -> dict | None:
        """``{"asked", "used", "reason"}`` when ``point``'s dataset is a fallback (the first choice absent), else None."""
        return self.dataset_fallbacks.get(runs.run_name(point))

    def run_dir(self, point: dict) -> Path:
        return self.runs_dir / self.name / runs.run_name(point)

    def identity(self, point: dict) -> dict:
        """What a complete run of ``point`` must have recorded: the point, the grid's stage and the notebook's
        path and hash (a run recorded under another stage would land in another report section: it is redone),
        and its dataset fallback when it has one (:meth:`dataset_fallback`)."""
        identity = {"point": point, "stage": self.stage, "notebook_path": str(self.notebook),
                    "notebook_sha256": self.notebook_sha256}
        fallback = self.dataset_fallback(point)
        if fallback:  # a run that must say it ran on a fallback: one recorded without saying so is redone
            identity["dataset_fallback"] = fallback
        return identity

    def label(self, point: dict, width: int = 60) -> str:
        """``<name>: key=value ...`` of the parameters that tell ``point`` apart from the grid's other points.

        For progress lines: the run folder's name starts with the parameters in
        alphabetical order and ends with a hash, so any cut of it may hide the
        one value that differs.  Cut at ``width`` characters (ending in "...").
        """
        varying = [key for key in point
                   if len({runs.canonical_json(p.get(key)) for p in self.points}) > 1] or list(point)
        values = " ".join(f"{key}={runs.canonical_json(point[key])}" for key in varying) or "defaults"
        text = f"{self.name}: {values}"
        return text if len(text) <= width else text[:width - 3] + "..."

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
        count = math.prod(len(v) for v in axes.values())
        if len(points) + count > MAX_POINTS:
            sizes = " x ".join(f"{len(v)} {k}" for k, v in axes.items())
            raise SweepError(f"{where}: grid {i} expands to {count:,} points ({sizes}), more than the "
                             f"{MAX_POINTS:,} a grid file may hold; split it into smaller grids")
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
    import nbformat  # here, not at the top: a Dask worker that imports the grid's types never reads a notebook

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
    if not runs.SAFE_NAME.fullmatch(name):
        source = "name" if spec.get("name") else "the file name (set 'name:')"
        raise SweepError(f"{grid_file}: {source} {name!r} is not a plain folder name: use up to 100 of "
                         "A-Z a-z 0-9 _ + - . (not starting with '.'), so the runs stay inside the runs folder")
    return name


def _not_finite(value) -> bool:
    """Does ``value`` (a grid value: number, text, list, mapping) hold a NaN or infinite float anywhere?"""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_not_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_not_finite(v) for v in value)
    return False


def _check_points(points: list[dict], grid_file: Path) -> None:
    """Refuse values JSON cannot carry and points given twice (they would share one run folder).

    NaN and infinities are refused too: JSON has no spelling for them, so a
    run's ``status.json`` would record null and the point (NaN is not even
    equal to itself) would never count as done: it would run again on every sweep.
    """
    seen = {}
    for point in points:
        bad = [key for key, value in point.items() if _not_finite(value)]
        if bad:
            raise SweepError(f"{grid_file}: point {point!r}: {', '.join(map(repr, bad))} holds NaN or an infinity, "
                             "which JSON (status.json, papermill's parameters) cannot record; use a finite number")
        try:
            runs.canonical_json(point)
        except (TypeError, ValueError) as err:
            raise SweepError(f"{grid_file}: point {point!r} has a value papermill cannot pass as JSON: {err}") from err
        name = runs.run_name(point)
        if name in seen:
            raise SweepError(f"{grid_file}: the point {point!r} appears twice in the grid (as {seen[name]!r}); "
                             "each point runs once, so list it once")
        seen[name] = point


def tasks_spec(notebook: Path) -> TaskSpec:
    """The declared task of ``notebook`` (:data:`qmlnb.lab.tasks.SPECS`); a notebook of no declared task
    (one written for a test, a new experiment) gets a spec whose parameters that share a name with
    :data:`.tasks.spec.NAMED` (``backend``, ``dataset``) name what those name, unchecked otherwise."""
    from .tasks import spec_of_notebook

    return spec_of_notebook(notebook) or TaskSpec(name=notebook.stem, notebook=str(notebook),
                                                  params=tuple(Param(key, None, names=key) for key in NAMED))


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
    stage = spec.get("stage")
    if stage is not None and stage not in stages.STAGES:
        raise SweepError(f"{path}: 'stage' = {stage!r} is not a known stage; known stages: "
                         f"{', '.join(stages.STAGES)} (qmlnb/lab/stages.py)")
    notebook = _resolve_notebook(spec["notebook"], path)
    notebook_sha256 = _read_notebook(notebook, path)
    points = expand_grid(spec.get("grid"), str(path))
    _check_points(points, path)
    params = notebook_parameters(notebook)
    try:  # references to earlier stages ({from: ..., pick: ...}) are filled in by qmlnb.lab.flow
        decisions.check_points(points, path, params)
    except decisions.DecisionError as err:
        raise SweepError(str(err)) from err
    task = tasks_spec(notebook)
    for point in points:
        unknown = [k for k in point if k not in params]
        if unknown:
            raise SweepError(f"{path}: unknown parameter(s) {', '.join(map(repr, unknown))} for {notebook.name}; "
                             f"its parameters are: {', '.join(params)}")
        for key, value in point.items():
            if decisions.is_deferred(value):
                continue
            if not _type_ok(value, params[key]):
                raise SweepError(f"{path}: parameter {key!r} = {value!r} is {a_or_an(type(value).__name__)}, but "
                                 f"{notebook.name} expects {a_or_an(type(params[key]).__name__)} "
                                 f"(default {params[key]!r})")
        try:  # the task's declared constraints, and the backend or dataset a value names
            task.check({k: v for k, v in point.items() if not decisions.is_deferred(v)})
        except ValueError as err:
            raise SweepError(f"{path}: {err}") from None
    for key in ("jobs", "timeout"):
        value = spec.get(key)
        if value is not None:
            try:
                check_positive_int(value, repr(key))
            except ValueError as err:
                raise SweepError(f"{path}: {err}") from None
    return Sweep(path=path, name=name, notebook=notebook, points=points, notebook_params=params,
                 notebook_sha256=notebook_sha256, jobs=spec.get("jobs"), timeout=spec.get("timeout"),
                 description=str(spec.get("description") or ""), runs_dir=Path(runs_dir), stage=stage)
