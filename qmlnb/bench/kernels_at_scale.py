"""The kernels-at-scale stage's results as a JSON: a grid's complete runs pooled the way the report pools them.

The ``kernels-at-scale`` stage (``notebooks/40-kernels-at-scale.ipynb``) is a lab
run, not a timing: its figures are accuracies, kernel diagnostics and the
geometric difference per qubit count.  A number quoted in README or docs/ must
still come from a JSON in ``bench/results/``, so this command reads the runs
of one grid (``runs/<grid>/``, e.g. ``kernels-at-scale-large`` after
``python -m qmlnb sweep params/large/kernels-at-scale-large.yaml``), pools
them with the report's own :func:`qmlnb.lab.report.scale.scale_summary` (one
row per setting and qubit count, over seeds; Holm-corrected within the grid)
and writes those rows with the runs' provenance.

Refused (before writing) when the grid has no complete run, or when a run was
recorded from a tree with uncommitted changes (its ``environment.git``), unless
``--allow-dirty`` (recorded).  The JSON itself is refused from a dirty tree
like every benchmark's.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from ..lab.provenance import environment
from ..lab.report.load import load_runs, require_runs
from ..lab.report.scale import scale_rows, scale_summary
from .results import DirtyTreeError, add_allow_dirty, check_tree, write_result

DEFAULT_GRID = "kernels-at-scale-large"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="the runs folder (default runs/)")
    parser.add_argument("--grid", default=DEFAULT_GRID,
                        help=f"the grid whose runs are pooled: its folder under --runs-dir (default {DEFAULT_GRID})")
    parser.add_argument("--json", type=Path, default=None,
                        help="output file (default bench/results/<grid>.json)")
    add_allow_dirty(parser)


def _plain(value):
    """A JSON value: NaN and infinities as None, NumPy scalars as Python ones."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def grid_summary(runs_dir: str | Path, grid: str) -> dict:
    """The pooled rows of ``grid``'s complete runs and their provenance.

    Returns ``{"rows": [...], "runs": int, "seeds": [...], "commits": {commit: runs}, "dirty_runs": [...]}``;
    ``rows`` are :func:`scale_summary`'s rows (NaN as None).  ValueError when the grid has no complete run.
    """
    frame = require_runs(runs_dir)
    frame = frame[frame["grid"] == grid] if "grid" in frame else frame.iloc[:0]
    rows = scale_rows(runs_dir, frame)
    if rows.empty:
        raise ValueError(f"no complete kernels-at-scale run of grid {grid!r} under {Path(runs_dir).resolve()}; "
                         f"run `python -m qmlnb sweep params/large/{grid}.yaml` first")
    # a run's git record: a run without one counts as dirty (its code cannot be traced to a commit)
    commits = frame["env.git.commit"] if "env.git.commit" in frame else pd.Series(None, index=frame.index)
    clean = frame["env.git.dirty"].isin([False]) if "env.git.dirty" in frame else pd.Series(False, index=frame.index)
    summary = scale_summary(rows)
    return {
        "rows": [{key: _plain(value) for key, value in row.items()} for row in summary.to_dict("records")],
        "runs": int(len(frame)),
        "seeds": sorted({int(s) for s in rows["seed"].dropna()}),
        "commits": {str(c): int(n) for c, n in commits.value_counts(dropna=False).items()},
        "dirty_runs": sorted(frame.loc[~clean, "run"].tolist()),
    }


def _shown(value, spec: str = "+.3f") -> str:
    return "n/a" if value is None else format(value, spec)


def run(args) -> int:
    started = check_tree(args.allow_dirty)
    result = grid_summary(args.runs_dir, args.grid)
    if result["dirty_runs"] and not args.allow_dirty:
        raise DirtyTreeError(f"{len(result['dirty_runs'])} run(s) of {args.grid} were recorded from a tree with "
                             "uncommitted changes (or without a git record): rerun them on a clean tree, or pass "
                             "--allow-dirty (the JSON then says so)")
    out = args.json or Path("bench/results") / f"{args.grid}.json"
    payload = {"benchmark": "kernels-at-scale", "grid": args.grid, **result, "environment": environment(),
               "note": "accuracies and kernel diagnostics of a lab stage pooled over seeds as the report pools "
                       "them; gram_s is the median seconds of one run's training Grams, a single call per run, "
                       "not a benchmark (bench mps times the Gram)"}
    write_result(out, payload, allow_dirty=args.allow_dirty, started=started)
    for row in result["rows"]:
        print(f"{row['features']:>7} n={row['n_qubits']:>4}  QSVM {row['qsvm']:.3f}  RBF {row['rbf']:.3f}  "
              f"projected {_shown(row['projected'], '.3f')}  QSVM - RBF {_shown(row['difference'])} "
              f"[{_shown(row['ci_low'])}, {_shown(row['ci_high'])}]  {row['verdict']}")
    print(f"wrote {out} ({result['runs']} runs, seeds {result['seeds']})")
    return 0
