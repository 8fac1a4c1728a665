"""Reading run folders into one DataFrame: only complete runs' params.json, metrics.json and tables."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pandas as pd

from .. import runs, stages
from ..tasks import qsvm as qsvm_task
from ... import _util


class ReportError(ValueError):
    """The report cannot be built (no runs, missing summary notebook)."""


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


UNREADABLE = "unreadable"  # run_overview's status of a complete run whose files cannot be read


def _read_object(path: Path) -> dict:
    """The JSON object in ``path`` ({} when absent); ValueError naming the path when it is not one.

    A symlink is not followed (its target could be any file the reader can
    read: the report would show it): the run is unreadable instead.
    """
    if path.is_symlink():
        raise ValueError(f"{path}: a symbolic link (not followed)")
    try:
        value = _util.read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: {type(err).__name__}: {err}") from err
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value or {}


def read_run(run_dir: Path) -> dict:
    """One complete run's row: ``grid``, ``run``, ``path``, ``param.<name>`` and flattened metrics.

    Raises ValueError, naming the file, when ``metrics.json`` or ``params.json``
    (or the environment record in it) is not a readable JSON object.
    """
    metrics = _read_object(run_dir / runs.METRICS_FILE)
    params = _read_object(run_dir / runs.PARAMS_FILE)
    env = metrics.pop("environment", None) or {}
    if not isinstance(env, dict) or not all(isinstance(env.get(key) or {}, dict) for key in ("machine", "git")):
        raise ValueError(f"{run_dir / runs.METRICS_FILE}: its 'environment' record is not a JSON object")
    machine, git = env.get("machine") or {}, env.get("git") or {}
    row = {"grid": run_dir.parent.name, "run": run_dir.name, "path": str(run_dir)}
    for key, value in params.items():
        row[f"param.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    fallback = metrics.pop("dataset_fallback", None)
    _flatten("", metrics, row)
    note = fallback_note(fallback, row.get("dataset", row.get("param.dataset")))
    if note:  # every section that names the dataset says it (headings, sentences, tables, the first screen)
        row["dataset"], row["dataset_fallback"] = f"{fallback['used']} ({note})", note
    if "task" not in row and row.get("stage") in stages.TASKS:
        # written before runs recorded a task: their "stage" named the task
        row["task"], row["stage"] = row["stage"], None
    row["machine.cpu"] = machine.get("cpu")
    row["machine.cores"] = machine.get("cores")
    row["git.commit"] = str(git.get("commit") or "")[:10]
    row["timestamp"] = env.get("timestamp")
    # the rest of the record, for the report's header (env.machine.memory_gib, env.versions.numpy, env.blas.vendor,
    # env.git.dirty, env.data_dir, ...); lists (the GPUs) as JSON text, so a cell holds one value
    flat: dict = {}
    _flatten("env", env, flat)
    row.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flat.items()})
    return row


def fallback_note(record, dataset) -> str | None:
    """"fallback: fashion-mnist not in the data folder" for a run's ``dataset_fallback`` record
    (:func:`qmlnb.lab.tasks.save_run`) that names two known datasets, the second being the one the run
    used (``dataset``); None otherwise.  Only catalogue names reach the page, never the record's text."""
    from ...data import DATASETS

    if not isinstance(record, dict):
        return None
    asked, used = record.get("asked"), record.get("used")
    if asked in DATASETS and used in DATASETS and asked != used and used == dataset:
        return f"fallback: {asked} not in the data folder"
    return None


def unreadable_runs(runs_dir: str | os.PathLike = "runs") -> list[tuple[Path, str]]:
    """(run folder, why) for every complete run whose files :func:`read_run` cannot read."""
    out = []
    for run_dir in runs.iter_runs(runs_dir, runs.COMPLETE):
        try:
            read_run(run_dir)
        except ValueError as err:
            out.append((run_dir, str(err)))
    return out


def unreadable_records(runs_dir: str | os.PathLike = "runs") -> list[tuple[Path, str]]:
    """(file, why) for every decision or flow record under ``runs_dir`` that the report cannot use."""
    from .. import decision_records, flow

    return decision_records.load_decisions(runs_dir)[1] + flow.load_flow(runs_dir)[1]


def load_runs(runs_dir: str | os.PathLike = "runs") -> pd.DataFrame:
    """One row per complete run: ``grid``, ``run``, ``path``, ``param.<name>`` and flattened metrics.

    Nested metrics become dotted columns (``scores.f1``, ``timings.train_s``);
    the environment record gives ``machine.cpu``, ``machine.cores``, ``git.commit``
    (10 characters) and ``timestamp``, and all of it flattened as ``env.<path>``
    (``env.versions.numpy``, ``env.blas.vendor``, ``env.git.dirty``, ...).
    Only folders whose ``status.json`` says ``complete`` are read.  A complete
    run whose ``metrics.json``/``params.json`` cannot be read (e.g. edited by
    hand, a damaged disk) is left out with a warning naming its path; the
    overview (:func:`run_overview`) lists it as ``unreadable``.
    """
    rows = []
    for run_dir in runs.iter_runs(runs_dir, runs.COMPLETE):
        try:
            rows.append(read_run(run_dir))
        except ValueError as err:
            warnings.warn(f"unreadable run {run_dir} left out of the report: {err}", stacklevel=2)
    return pd.DataFrame(rows)


def run_overview(runs_dir: str | os.PathLike = "runs") -> pd.DataFrame:
    """Every run folder with a final or running status: grid, run, status, seconds and reason/error.

    A complete run whose files cannot be read shows as ``unreadable``, the
    note naming the file and the error; so does each decision or flow record
    of the flow (``<stage>/decision-*.json``, ``<stage>/flow.json``) that cannot
    be read or is malformed (its ``run`` is the file's name): the report
    leaves them out and lists them here.
    """
    unreadable = {str(path): why for path, why in unreadable_runs(runs_dir)}
    rows = []
    for run_dir in runs.iter_runs(runs_dir, status=None):
        record = runs.read_status(run_dir) or {}
        status, note = record.get("status"), record.get("reason") or record.get("error") or ""
        if str(run_dir) in unreadable:
            status, note = UNREADABLE, unreadable[str(run_dir)]
        rows.append({"grid": run_dir.parent.name, "run": run_dir.name, "status": status,
                     "seconds": record.get("seconds"), "note": note})
    for path, why in unreadable_records(runs_dir):
        rows.append({"grid": path.parent.name, "run": path.name, "status": UNREADABLE, "seconds": None, "note": why})
    return pd.DataFrame(rows, columns=["grid", "run", "status", "seconds", "note"])


def load_tables(runs_dir: str | os.PathLike, name: str, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """``<name>.csv`` of every complete run, stacked, with the run's ``grid``, ``run`` and flattened metrics beside it."""
    frame = load_runs(runs_dir) if frame is None else frame
    parts = []
    for _, row in frame.iterrows():
        path = Path(row["path"]) / f"{name}.csv"
        if path.is_file():
            table = pd.read_csv(path)
            for key in ("grid", "run", "task", "stage", "backend", "threads", "dataset", "mode"):
                if key in row and key not in table and pd.notna(row[key]):
                    table[key] = row[key]
            if isinstance(row.get("dataset_fallback"), str) and "dataset" in table:
                table["dataset"] = row["dataset"]  # the run's label: "digits (fallback: ...)"
            parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def task_tables(runs_dir: str | os.PathLike, task: str, name: str, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """``<name>.csv`` of every complete run whose notebook did ``task``, stacked as :func:`load_tables` does;
    an empty frame when there is no such run."""
    frame = load_runs(runs_dir) if frame is None else frame
    runs = select_task(frame, task)
    return pd.DataFrame() if runs.empty else load_tables(runs_dir, name, runs)


def require_runs(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """The complete runs (maybe none), or a ReportError when ``runs_dir`` holds no run at all (and what to run).

    A sweep whose every run failed or was skipped still gets a report: its
    overview lists each failure and skip with the error or reason.
    """
    if not any(True for _ in runs.iter_runs(runs_dir, status=None)):
        raise ReportError(f"no runs under {Path(runs_dir).resolve()}; run a sweep first, e.g. "
                          "`python -m qmlnb sweep params/*.yaml` (or `make report`)")
    return load_runs(runs_dir)


def report_dirs(runs_dir: str | os.PathLike = "", reports_dir: str | os.PathLike = "") -> tuple[Path, Path]:
    """(runs folder, reports folder), absolute: the ones given, else ``runs/`` and ``reports/`` of the project.

    The project is :func:`qmlnb._util.project_root` (the checkout of this package,
    else found from the working directory), so the summary notebook finds the runs
    whether its kernel starts in ``notebooks/``, in the package or elsewhere.
    """
    root = _util.project_root()
    return (Path(runs_dir or root / "runs").resolve(), Path(reports_dir or root / "reports").resolve())


def select_stage(frame: pd.DataFrame, stage: str, task: str | None = None) -> pd.DataFrame:
    """The runs recorded under ``stage`` (one of :data:`qmlnb.lab.stages.STAGES`), of ``task`` when given.

    Selects by the ``stage`` each run recorded (its grid's ``stage:``), never by
    the grid's name: a renamed grid keeps its section.  An unknown ``stage``
    is a ValueError (a misspelt name would select nothing, silently).
    """
    stages.check_stage(stage)
    if frame.empty or "stage" not in frame:
        return frame.iloc[0:0]
    chosen = frame[frame["stage"] == stage]
    return (chosen if task is None else select_task(chosen, task)).copy()


def select_task(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """The runs whose notebook did ``task`` (one of :data:`qmlnb.lab.stages.TASKS`), whatever their stage."""
    if task not in stages.TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(stages.TASKS)}")
    if frame.empty or "task" not in frame:
        return frame.iloc[0:0]
    return frame[frame["task"] == task].copy()


def baseline_names(frame: pd.DataFrame, score: str) -> list[str]:
    """The baselines with a ``score`` in some run of ``frame`` (columns ``baselines.<name>.<score>``), in column order."""
    prefix = qsvm_task.BASELINE_SCORES + "."
    return [c[len(prefix):-len(score) - 1] for c in frame.columns
            if c.startswith(prefix) and c.endswith(f".{score}") and frame[c].notna().any()]
