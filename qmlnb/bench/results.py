"""Writing a benchmark's JSON: only from a clean git tree, unless asked otherwise and marked so.

A number in README or docs/ must be traceable to the code that produced it:
the commit recorded in the JSON is that code only when the tree had no
uncommitted changes to tracked files.  :func:`check_tree` refuses a dirty tree
(before any work) unless ``--allow-dirty``; :func:`write_result` checks again
at the end and records both states and the flag in ``result["provenance"]``.
"""
from __future__ import annotations

import argparse
import os

from .._util import atomic_write_json
from ..lab.provenance import git_commit


class DirtyTreeError(SystemExit):
    """The git tree has uncommitted changes (or is not a git checkout) and --allow-dirty was not given."""


def add_allow_dirty(parser: argparse.ArgumentParser) -> None:
    """The ``--allow-dirty`` flag every benchmark that writes a JSON takes."""
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write the JSON even when tracked files have uncommitted changes (recorded in the "
                             "JSON as provenance.dirty; such results must not be quoted in README or docs/)")


def check_tree(allow_dirty: bool) -> dict:
    """The git state now; DirtyTreeError if it is dirty or unknown and ``allow_dirty`` is False."""
    state = git_commit()
    if state["dirty"] is not False and not allow_dirty:
        why = "is not a git checkout" if state["dirty"] is None else "has uncommitted changes to tracked files"
        raise DirtyTreeError(f"the source tree {why}: a result written now could not be traced to a commit; "
                             "commit first, or pass --allow-dirty (the JSON then says so)")
    return state


def write_result(path: str | os.PathLike, result: dict, *, allow_dirty: bool, started: dict) -> dict:
    """Write ``result`` with its provenance: the git state at the start and now, and ``allow_dirty``.

    started : :func:`check_tree`'s return value at the start of the run.
    Refuses (DirtyTreeError) when the tree became dirty during the run and
    ``allow_dirty`` is False: the code that ran may no longer be the commit's.
    """
    now = check_tree(allow_dirty)
    dirty = started["dirty"] is not False or now["dirty"] is not False or started["commit"] != now["commit"]
    result = {**result, "provenance": {"git_at_start": started, "git_at_write": now, "allow_dirty": bool(allow_dirty),
                                       "dirty": bool(dirty)}}
    if dirty and not allow_dirty:
        raise DirtyTreeError("the commit changed during the run; commit and rerun, or pass --allow-dirty")
    atomic_write_json(path, result)
    return result
