"""The report's header: when, from which commit, on which machine and software, and under what load.

Everything comes from the environment each run recorded (``metrics.json``'s
``environment``, written by :func:`qmlnb.lab.provenance.environment`; read as
``env.*`` columns by :func:`.load.read_run`) and from the load and ``noisy``
flag its timings recorded (:mod:`qmlnb.timing`).  When the runs come from
more than one commit, machine or package version, the header says so
(:func:`header_fields`'s ``warnings``): their numbers are not one benchmark.
"""
from __future__ import annotations

import datetime as _dt

import numpy as np
import pandas as pd

from .present import markdown_text, natural_key

PACKAGES = ("numpy", "scipy", "torch", "pennylane", "numba")
NOT_RECORDED = "not recorded"


def _values(frame: pd.DataFrame, column: str) -> list:
    if column not in frame:
        return []
    return sorted({v for v in frame[column] if v is not None and not (isinstance(v, float) and np.isnan(v))},
                  key=natural_key)


def _plain(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _one_or_all(values: list) -> str:
    return " / ".join(_plain(v) for v in values) if values else NOT_RECORDED


def run_loads(frame: pd.DataFrame) -> pd.Series:
    """Each run's recorded 1-minute load: ``load_max`` (Gram scaling runs: the highest of their points), else
    ``load``; NaN for runs recorded before the load was."""
    load = pd.to_numeric(frame["load"], errors="coerce") if "load" in frame else \
        pd.Series(np.nan, index=frame.index, dtype=float)
    if "load_max" in frame:
        load = pd.to_numeric(frame["load_max"], errors="coerce").fillna(load)
    return load.astype(float)


def header_fields(frame: pd.DataFrame, overview: pd.DataFrame | None = None,
                  now: _dt.datetime | None = None) -> dict:
    """{label: text} of the header (insertion order is display order) and ``warnings``: a list of sentences.

    Labels: date, commit, machine, packages, BLAS, thread settings, data folder,
    load, runs.  ``frame`` is :func:`.load.load_runs`'s (complete runs);
    ``overview`` :func:`.load.run_overview`'s (all runs, for the counts).
    """
    now = now or _dt.datetime.now(_dt.timezone.utc)
    fields: dict = {}
    warnings: list[str] = []
    stamps = _values(frame, "timestamp")
    fields["date"] = (f"report built {now:%Y-%m-%d %H:%M} UTC; runs from {stamps[0]} to {stamps[-1]}" if stamps
                      else f"report built {now:%Y-%m-%d %H:%M} UTC; no run recorded a time")

    commits = []
    if "git.commit" in frame:
        dirty = frame["env.git.dirty"] if "env.git.dirty" in frame else pd.Series(None, index=frame.index)
        for commit, flag in sorted({(c or "", d if isinstance(d, (bool, np.bool_)) else None)
                                    for c, d in zip(frame["git.commit"], dirty)}, key=lambda p: (p[0], str(p[1]))):
            state = {True: "dirty: uncommitted changes", False: "clean"}.get(None if flag is None else bool(flag),
                                                                            "clean or dirty not recorded")
            commits.append(f"{commit or 'unknown'} ({state})")
    fields["commit"] = "; ".join(commits) or NOT_RECORDED
    if len({c.split(" ")[0] for c in commits}) > 1:
        warnings.append(f"the runs come from {len({c.split(' ')[0] for c in commits})} commits")
    if any("dirty" in c and "not recorded" not in c for c in commits):
        warnings.append("some runs ran on a tree with uncommitted changes")

    machines = []
    if "machine.cpu" in frame:
        memory = frame.get("env.machine.memory_gib", pd.Series(np.nan, index=frame.index))
        for cpu, cores, mem in sorted({(str(c), _plain(n), _plain(m)) for c, n, m in
                                       zip(frame["machine.cpu"], frame["machine.cores"], memory)}):
            mem_text = f"{mem} GiB memory" if mem != "nan" else "memory not recorded"
            machines.append(f"{cpu}, {cores} cores, {mem_text}")
    fields["machine"] = "; ".join(machines) or NOT_RECORDED
    if len(machines) > 1:
        warnings.append(f"the runs come from {len(machines)} different machines")

    packages = []
    for name in PACKAGES:
        found = _values(frame, f"env.versions.{name}")
        packages.append(f"{name} {_one_or_all(found)}")
        if len(found) > 1:
            warnings.append(f"the runs used {len(found)} versions of {name}")
    fields["packages"] = ", ".join(packages)
    vendors, versions, threads = (_values(frame, f"env.blas.{k}") for k in ("vendor", "version", "threads"))
    fields["BLAS"] = (f"{_one_or_all(vendors)} {_one_or_all(versions)}, {_one_or_all(threads)} thread(s) at start"
                      if vendors else NOT_RECORDED)
    thread_env = [f"{c.removeprefix('env.thread_env.')}={_one_or_all(_values(frame, c))}"
                  for c in sorted(frame.columns) if c.startswith("env.thread_env.") and _values(frame, c)]
    fields["thread settings"] = ("per run (threads column); " + ", ".join(thread_env)) if thread_env else \
        "per run (threads column)"
    fields["data folder"] = _one_or_all(_values(frame, "env.data_dir"))

    load = run_loads(frame).dropna() if not frame.empty else pd.Series(dtype=float)
    # True, numpy True or 1.0 is noisy; NaN (a run recorded before the flag) is not
    noisy = frame["noisy"].map(lambda v: bool(v == True)) if "noisy" in frame else pd.Series(dtype=bool)  # noqa: E712
    cores = _values(frame, "machine.cores")
    if load.empty:
        fields["load"] = "not recorded by these runs"
    else:
        fields["load"] = (f"1-minute load average during the runs: min {load.min():.2f}, median {load.median():.2f}, "
                          f"max {load.max():.2f} ({len(load)} runs; the machine has {_one_or_all(cores)} cores); "
                          f"{int(noisy.sum())} of {int(frame['noisy'].notna().sum()) if 'noisy' in frame else 0} "
                          "runs flagged noisy")
    if int(noisy.sum()):
        warnings.append(f"{int(noisy.sum())} run(s) are noisy: other work wanted cores while they were timed")
    if overview is not None and not overview.empty:
        counts = overview["status"].fillna("unknown").value_counts()
        fields["runs"] = ", ".join(f"{int(n)} {status}" for status, n in
                                   sorted(counts.items(), key=lambda kv: (kv[0] != "complete", kv[0])))
    else:
        fields["runs"] = f"{len(frame)} complete"
    warnings += fallback_warnings(frame)
    fields["warnings"] = warnings
    return fields


def fallback_warnings(frame: pd.DataFrame) -> list[str]:
    """One sentence per stage whose runs fell back to another dataset than their grid asks for
    (:func:`.load.fallback_note`): "3 run(s) of stage controls ran on digits (fallback: fashion-mnist not in
    the data folder)"."""
    if "dataset_fallback" not in frame:
        return []
    fell = frame[frame["dataset_fallback"].map(lambda v: isinstance(v, str))]
    stage = fell["stage"].fillna("").astype(str) if "stage" in fell else pd.Series("", index=fell.index)
    return [f"{len(part)} run(s) of stage {name or 'unknown'} ran on {label}"
            for (name, label), part in fell.groupby([stage, fell["dataset"].astype(str)], sort=True)]


def header_markdown(fields: dict) -> str:
    """The header as Markdown: a bold warning line when runs differ in commit/machine/versions, then one line
    per field."""
    # the texts hold what runs recorded (data folder, versions, CPU name): shown as written, never as markup
    lines = [f"**Warning: {markdown_text('; '.join(fields['warnings']))}.**", ""] if fields.get("warnings") else []
    lines += [f"- **{label}:** {markdown_text(text)}" for label, text in fields.items() if label != "warnings"]
    return "\n".join(lines)
