"""Decisions as records: each one written atomically, with its evidence, to
``<runs>/<stage>/decision-<param>-<rule>.json``, and read back (validated) by the flow and the report.

A decision that differs from the one already recorded (another value or other runs) keeps the earlier
ones in its ``history`` list and is reported on stderr, never silently replaced.  :mod:`.decisions`
parses references and decides; this module only writes and reads what was decided.
"""
from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

from . import runs
from .decisions import RULES, DecisionError, is_number
from .._util import a_or_an, atomic_write_json


def decision_path(runs_dir, stage: str, param: str, rule: str) -> Path:
    """``<runs_dir>/<stage>/decision-<param>-<rule>.json``."""
    return Path(runs_dir) / stage / f"decision-{runs.slug(param)}-{rule}.json"


def _same(a: dict, b: dict) -> bool:
    return all(runs.canonical_json(a.get(k)) == runs.canonical_json(b.get(k)) for k in ("value", "runs", "per_value"))


def record(runs_dir, decision: dict) -> Path:
    """Write ``decision`` atomically to :func:`decision_path`, keeping a different earlier decision in ``history``.

    An identical decision (same value, same runs, same evidence) leaves the file
    as it is; a different one is written with the earlier record(s) in
    ``history`` (oldest first) and a notice on stderr.  Raises DecisionError,
    writing nothing, when the record would land outside ``runs_dir`` (a stage
    folder that is a symlink) or its path is a symlink or not a regular file
    (:func:`check_writable`).
    """
    path = decision_path(runs_dir, decision["stage"], decision["param"], decision["rule"])
    check_writable(path, runs_dir)
    try:
        old = runs.read_record(path)
    except ValueError:  # a regular file of the runs folder that is not JSON: keep it aside rather than lose it
        old = {"unreadable": path.read_text(errors="replace")[:2000]}
    if isinstance(old, dict) and old and _same(old, decision):
        return path
    history = []
    if isinstance(old, dict) and old:
        history = [*old.pop("history", []), old]
        if "value" in old:
            print(f"decision {path}: {decision['param']} was {old.get('value')!r} "
                  f"({old.get('time')}), now {decision['value']!r}; the earlier one is kept in 'history'",
                  file=sys.stderr)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return atomic_write_json(path, {**decision, "time": now, "history": history})


def check_writable(path: Path, runs_dir) -> None:
    """DecisionError unless a record may be (re)written at ``path``: inside ``runs_dir`` once symlinks are
    followed (a stage folder that is a link out of it is refused), and not a symlink, folder or other non-file."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        what = "a symbolic link" if path.is_symlink() else "not a regular file"
        raise DecisionError(f"refusing to write {path}: it is {what} (remove it; the flow writes only plain files "
                            "inside the runs folder)")
    try:
        runs.inside(path, runs_dir)
    except runs.RunPathError as err:
        raise DecisionError(f"refusing to write {path.name}: {err}") from None


def check_fields(record: dict, spec: dict, where: str) -> None:
    """ValueError naming the first field of ``spec`` ({name: (test, what it must be)}) that ``record`` fails."""
    for name, (test, what) in spec.items():
        if not test(record.get(name)):
            # the kind of value only, never the value: the file's text is not repeated anywhere
            got = "nothing" if name not in record else a_or_an(type(record[name]).__name__)
            raise ValueError(f"{where}: {name!r} must be {what}, got {got}")


def stage_field(path: Path) -> tuple:
    """The :func:`check_fields` test of a record's ``stage``: the plain name of the folder holding ``path``."""
    return (lambda v: isinstance(v, str) and bool(runs.SAFE_NAME.fullmatch(v)) and v == path.parent.name,
            "the name of its folder")


def _is_list_of(kind):
    return lambda v: isinstance(v, list) and all(isinstance(x, kind) for x in v)


EVIDENCE_FIELDS = {"value": (is_number, "a finite number"), "n": (lambda v: isinstance(v, int) and not
                                                                   isinstance(v, bool) and v > 0, "a positive count"),
                   **{k: (is_number, "a finite number") for k in ("median", "q1", "q3", "mean", "std")}}


def check_decision(record, path: Path) -> dict:
    """``record`` (a parsed ``decision-*.json``) when it has every field the report shows, of the right kind.

    Raises ValueError naming ``path`` and the field.  The stage must be the
    record's own folder and a plain stage name, the rule a known one (and its
    metric that rule's), the value and every number of the evidence finite:
    the report states each decision from these fields, so a record with
    anything else is listed as unreadable instead of stopping the report.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
    check_fields(record, {
        "stage": stage_field(path),
        "param": (lambda v: isinstance(v, str) and v.isidentifier(), "a parameter name"),
        "rule": (lambda v: v in RULES, f"one of {', '.join(RULES)}"),
        "value": (is_number, "a finite number"),
        "reason": (lambda v: isinstance(v, str), "text"),
        "per_value": (_is_list_of(dict), "a list of objects"),
        "runs": (lambda v: v is None or _is_list_of(str)(v), "a list of run folders"),
    }, str(path))
    check_fields(record, {"metric": (lambda v: v == RULES[record["rule"]].metric,
                                      f"{RULES[record['rule']].metric!r}, the metric of its rule")}, str(path))
    for i, entry in enumerate(record["per_value"]):
        check_fields(entry, EVIDENCE_FIELDS, f"{path}: per_value[{i}]")
    return record


def load_decisions(runs_dir) -> tuple[list[dict], list[tuple[Path, str]]]:
    """(every valid decision record under ``runs_dir``, by stage and parameter; (path, why) of the others).

    A record is read without following a symlink and only inside ``runs_dir``
    (:func:`qmlnb.lab.runs.read_record`) and checked by :func:`check_decision`;
    one that fails either is left out and listed with the reason, never quoted.
    """
    out, unreadable = [], []
    for path in sorted(Path(runs_dir).glob("*/decision-*.json")):
        try:
            record = check_decision(runs.read_record(path, runs_dir), path)
        except ValueError as err:
            unreadable.append((path, str(err)))
            continue
        out.append({**record, "path": str(path)})
    return out, unreadable


def read_decisions(runs_dir) -> list[dict]:
    """Every valid decision record under ``runs_dir`` (``<stage>/decision-*.json``), by stage and parameter
    (:func:`load_decisions`; the records it cannot read are left out here)."""
    return load_decisions(runs_dir)[0]
