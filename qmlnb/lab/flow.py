"""Run YAML grids of notebooks stage by stage, filling references from earlier stages' decisions.

``python -m qmlnb sweep`` is this module's :func:`run`: the sweep of :mod:`qmlnb.lab.sweep`, run
through :func:`run_flow`.  Grids without references
(:mod:`qmlnb.lab.decisions`) run as before, in one plan.  Otherwise, before any
run starts:

1. every reference's stage is found: among the grids given, else among the YAML
   files beside the referring grid (they are added and run first), else in the
   runs folder (its complete runs are reused); none of these is an error;
2. the stages are put in dependency order (a cycle is an error naming the
   files and keys).

Then each stage in turn: its references are decided from the referenced stage's
complete runs (the runs of that stage's current points when it is part of this
sweep, else every complete run in ``<runs>/<stage>/``), each decision is recorded
(:func:`qmlnb.lab.decision_records.record`), the chosen values fill the points, and the
stage is planned and run by :func:`qmlnb.lab.sweep.run_sweeps`.  Each stage's place in the
flow and the values it took are written to ``<runs>/<stage>/flow.json`` (for the report's diagram).  A referenced
stage that ends with no complete run stops the flow before the stages that need it.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
from pathlib import Path

import yaml

from . import decision_records, decisions, runs
from .._util import atomic_write_json
from .decisions import DecisionError


FLOW_FILE = "flow.json"  # <runs>/<stage>/flow.json: the stage's place in the flow and the values it took


def _references(sweep) -> list[decisions.Reference]:
    return decisions.check_points(sweep.points, sweep.path, sweep.notebook_params)


def has_deferred(sweeps) -> bool:
    """Does any grid hold a reference or a first-available choice?"""
    return any(decisions.is_deferred(v) for s in sweeps for p in s.points for v in p.values())


def _sibling_grids(grid_file: Path, stage: str) -> list[Path]:
    """YAML grid files beside ``grid_file`` whose name (``name:`` or stem) is ``stage``."""
    out = []
    for path in sorted(grid_file.parent.glob("*.yaml")):
        try:
            spec = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(spec, dict) and str(spec.get("name") or path.stem) == stage:
            out.append(path)
    return out


def _complete_runs_on_disk(runs_dir: Path, stage: str) -> list[Path]:
    folder = Path(runs_dir) / stage
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and (runs.read_status(p) or {}).get("status") == runs.COMPLETE]


def stages_in_order(sweeps, runs_dir) -> tuple[list[str], dict[str, list], dict[str, list]]:
    """(stage names in dependency order, {stage: its sweeps}, {stage: its references}), checked before any work.

    Adds the grid files of referenced stages found beside the referring grid.
    Raises DecisionError for a reference to a stage that is neither a grid nor
    has complete runs in ``runs_dir``, and for a cycle.
    """
    from .grid import load_sweep

    groups: dict[str, list] = {}
    for sweep in sweeps:
        groups.setdefault(sweep.name, []).append(sweep)
    refs = {name: [r for s in group for r in _references(s)] for name, group in groups.items()}
    pending = [r for rs in refs.values() for r in rs]
    while pending:
        ref = pending.pop()
        if ref.stage in groups:
            continue
        found = _sibling_grids(Path(ref.grid_file), ref.stage)
        if found:
            group = groups[ref.stage] = [load_sweep(path, runs_dir) for path in found]
            refs[ref.stage] = [r for s in group for r in _references(s)]
            pending.extend(refs[ref.stage])
        elif not _complete_runs_on_disk(runs_dir, ref.stage):
            raise DecisionError(f"{ref.where}: references stage {ref.stage!r}, which is not among the grids "
                                f"({', '.join(groups)}), has no grid file beside {ref.grid_file} and no complete "
                                f"run in {Path(runs_dir) / ref.stage}")
    order = decisions.stage_order(refs)
    return order, groups, refs


def decide_reference(ref: decisions.Reference, groups: dict, runs_dir, write: bool = True) -> dict:
    """Decide ``ref`` from its stage's complete runs; record it when ``write``."""
    if ref.stage in groups:
        run_dirs = [s.run_dir(p) for s in groups[ref.stage] for p in s.points
                    if not any(decisions.is_deferred(v) for v in p.values()) and s.is_done(p)]
        source = "this sweep's points of"
    else:
        run_dirs = _complete_runs_on_disk(runs_dir, ref.stage)
        source = "the runs folder of"
    if not run_dirs:
        raise DecisionError(f"{ref.where}: {source} stage {ref.stage!r} has no complete run to decide "
                            f"{ref.param!r} by {ref.pick!r}")
    try:
        decision = decisions.decide(decisions.collect(run_dirs, ref.param, decisions.RULES[ref.pick].metric),
                                    ref.pick, ref.param, ref.stage)
    except DecisionError as err:
        raise DecisionError(f"{ref.where}: {err}") from err
    if write:
        decision_records.record(runs_dir, decision)
    return decision


def resolve(sweep, groups: dict, runs_dir, write: bool = True, used: list | None = None):
    """A copy of ``sweep`` whose points hold the decided values instead of references (checked like a grid).

    ``used`` (when given) gets one entry per reference: key, from, pick, param, at_least and the value filled in.
    """
    from .grid import SweepError, _check_points, _type_ok

    cache: dict = {}
    points, fallbacks = [], {}
    for point in sweep.points:
        filled, fallback = {}, None
        for key, value in point.items():
            if decisions.is_choice(value):
                names = decisions.check_choice(key, value, sweep.path)
                value = decisions.first_available(names, f"{sweep.path}: {key}")
                fallback = decisions.fallback_record(names, value)
            elif decisions.is_reference(value):
                ref = decisions.parse_reference(key, value, sweep.path)
                if ref.decision_key not in cache:
                    cache[ref.decision_key] = decide_reference(ref, groups, runs_dir, write)["value"]
                value = decisions.apply_floor(cache[ref.decision_key], ref)
                entry = {"key": key, "from": ref.stage, "pick": ref.pick, "param": ref.param,
                         "at_least": ref.at_least, "decided": cache[ref.decision_key], "value": value}
                if used is not None and entry not in used:
                    used.append(entry)
                if not _type_ok(value, sweep.notebook_params[key]):
                    raise SweepError(f"{ref.where}: the decided value {value!r} does not have the type of the "
                                     f"notebook's default {sweep.notebook_params[key]!r}")
            filled[key] = value
        points.append(filled)
        if fallback:
            fallbacks[runs.run_name(filled)] = fallback
    _check_points(points, sweep.path)
    return dataclasses.replace(sweep, points=points, dataset_fallbacks=fallbacks)


def _merge(total: dict, part: dict) -> dict:
    for key, value in part.items():
        total[key] = total.get(key, [] if isinstance(value, list) else 0) + value
    return total


def run_flow(sweeps, jobs: int = 1, cores: int | None = None, progress: bool = True, client=None,
             **options) -> dict:
    """Run ``sweeps`` stage by stage in dependency order (see the module docstring); returns the merged summary.

    ``options`` (``tracker``, ``data_dir``) go to :func:`qmlnb.lab.sweep.run_sweeps` for every stage.
    """
    from .sweep import run_sweeps

    if not has_deferred(sweeps):
        return run_sweeps(sweeps, jobs=jobs, cores=cores, progress=progress, client=client, **options)
    runs_dir = sweeps[0].runs_dir
    order, groups, _ = stages_in_order(sweeps, runs_dir)
    summary: dict = {}
    for index, stage in enumerate(order):
        used: list = []
        group = [resolve(s, groups, runs_dir, used=used) for s in groups[stage]]
        groups[stage] = group  # later stages decide from these (resolved) points
        decision_records.check_writable(runs_dir / stage / FLOW_FILE, runs_dir)  # never through a linked stage folder
        atomic_write_json(runs_dir / stage / FLOW_FILE, {
            "stage": stage, "order": index, "grid_files": [str(s.path) for s in group], "references": used,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        if progress:
            print(f"stage {stage}: {sum(len(s.points) for s in group)} point(s)", file=sys.stderr)
        for fallback in {runs.canonical_json(f): f for s in group for f in s.dataset_fallbacks.values()}.values():
            # said whether or not progress is shown: the stage's runs measure another dataset than its grid asks
            print(f"stage {stage}: runs on {fallback['used']} instead of {fallback['asked']}: {fallback['reason']}",
                  file=sys.stderr)
        _merge(summary, run_sweeps(group, jobs=jobs, cores=cores, progress=progress, client=client, **options))
    return summary


def _is_reference_record(entry) -> bool:
    """Is ``entry`` one ``references`` item as :func:`resolve` records it (names plain, values finite numbers)?"""
    return (isinstance(entry, dict) and isinstance(entry.get("key"), str) and entry["key"].isidentifier()
            and isinstance(entry.get("from"), str) and bool(runs.SAFE_NAME.fullmatch(entry["from"]))
            and entry.get("pick") in decisions.RULES
            and isinstance(entry.get("param"), str) and entry["param"].isidentifier()
            and decisions.is_number(entry.get("value"))
            and all(entry.get(k) is None or decisions.is_number(entry[k]) for k in ("decided", "at_least")))


def check_flow_record(record, path: Path) -> dict:
    """``record`` (a parsed ``flow.json``) when it is what :func:`run_flow` writes; ValueError naming ``path`` and
    the field otherwise: the stage is its folder's (plain) name, ``order`` a count, each reference's names plain
    and its values finite numbers (the report draws and prints these; nothing else may reach the page)."""
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
    decision_records.check_fields(record, {
        "stage": decision_records.stage_field(path),
        "order": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10_000, "a stage count"),
        "references": (lambda v: isinstance(v, list) and all(map(_is_reference_record, v)),
                       "a list of {key, from, pick, param, value, decided, at_least} with plain names and numbers"),
    }, str(path))
    return record


def load_flow(runs_dir) -> tuple[list[dict], list[tuple[Path, str]]]:
    """(the valid flow records under ``runs_dir``, in run order; (path, why) of those that are not).

    Read like the decision records (:func:`qmlnb.lab.decision_records.load_decisions`):
    never through a symlink, only inside ``runs_dir``, checked by :func:`check_flow_record`.
    """
    out, unreadable = [], []
    for path in sorted(Path(runs_dir).glob(f"*/{FLOW_FILE}")):
        try:
            out.append(check_flow_record(runs.read_record(path, runs_dir), path))
        except ValueError as err:
            unreadable.append((path, str(err)))
    return sorted(out, key=lambda r: r["order"]), unreadable


def add_arguments(parser) -> None:
    """The ``sweep`` command's arguments (those of :mod:`qmlnb.lab.sweep`)."""
    from .sweep import add_arguments as sweep_arguments

    sweep_arguments(parser)


def run(args) -> int:
    """``python -m qmlnb sweep``: :func:`qmlnb.lab.sweep.run` with the stages run in dependency order."""
    from .sweep import run as run_sweep_command

    return run_sweep_command(args, run_all=run_flow, plan_lines=plan_lines)


def plan_lines(sweeps, cores: int, jobs: int) -> list[str]:
    """``--list``: each point's run folder and state; a stage whose decision cannot be made yet says so."""
    from .sweep import plan

    if not has_deferred(sweeps):
        return [f"{s.run_dir(p)}  threads={t}  {a if a in ('run', 'done') else f'skip ({a})'}"
                for s, p, t, a in plan(sweeps, cores, jobs)]
    runs_dir = sweeps[0].runs_dir
    order, groups, _ = stages_in_order(sweeps, runs_dir)
    lines = []
    for stage in order:
        try:
            group = [resolve(s, groups, runs_dir, write=False) for s in groups[stage]]
        except DecisionError as err:
            lines.append(f"{runs_dir / stage}/*  waits for an earlier stage ({err})")
            continue
        groups[stage] = group
        lines += [f"{s.run_dir(p)}  threads={t}  {a if a in ('run', 'done') else f'skip ({a})'}"
                  for s, p, t, a in plan(group, cores, jobs)]
    return lines
