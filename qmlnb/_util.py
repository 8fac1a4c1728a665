"""Small helpers every part of qmlnb shares: atomic file writes, JSON, the project folder, cores, argument checks.

The library (``data``, ``kernels``, ``qcnn``, ``qsvm``) and the lab both use these,
so they live below both: this module imports nothing from qmlnb.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
import tempfile
from pathlib import Path

import numpy as np

# the process's file-creation mask, read once (os.umask can only be read by setting it)
UMASK = os.umask(0o022)
os.umask(UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); results are meant to be shared
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        # a failed or interrupted write leaves no temporary behind
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            # a write that fails (e.g. ENOSPC) names no file by itself: say which one
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value):
    """NumPy scalars/arrays, paths and tuples as plain JSON values; NaN and inf as null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """Atomically write ``obj`` as indented JSON (NumPy values converted, NaN as null)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike):
    """The parsed JSON file, or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, for messages: ``"an int"``, ``"a str"`` (by the first letter)."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def plural(count: int, noun: str) -> str:
    """``"1 run"``, ``"28 runs"``: ``count`` and ``noun``, with an ``s`` unless ``count`` is 1."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


# the folder holding the qmlnb package: in a checkout (editable install, or PYTHONPATH) its parent is the project
PACKAGE_DIR = Path(__file__).resolve().parent
_PROJECT_NAME = re.compile(r'^name\s*=\s*["\']qmlnb["\']\s*$', re.MULTILINE)


def is_project_root(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds qmlnb's ``pyproject.toml`` (one whose ``name`` is ``qmlnb``)."""
    try:
        return _PROJECT_NAME.search((Path(folder) / "pyproject.toml").read_text(encoding="utf-8")) is not None
    except (OSError, UnicodeDecodeError):
        return False


def project_root(cwd: str | os.PathLike | None = None) -> Path:
    """The qmlnb project folder (absolute): where ``data/``, ``runs/`` and ``reports/`` live by default.

    The same folder whatever the working directory (a notebook's kernel runs in
    ``notebooks/``, papermill's in a run folder): first the checkout this package
    is imported from (the parent of ``qmlnb/``, when it holds qmlnb's
    ``pyproject.toml``); for an installed copy (site-packages), the nearest
    folder at or above ``cwd`` (default: the working directory) holding qmlnb's
    ``pyproject.toml``; else ``cwd`` itself.
    """
    if is_project_root(PACKAGE_DIR.parent):
        return PACKAGE_DIR.parent
    start = Path(cwd if cwd is not None else Path.cwd()).resolve()
    return next((p for p in (start, *start.parents) if is_project_root(p)), start)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def is_int(value, minimum: int | None = None) -> bool:
    """True for an integer (Python or NumPy; bools are not integers here) that is >= ``minimum``."""
    return bool(not isinstance(value, bool) and isinstance(value, numbers.Integral)
                and (minimum is None or value >= minimum))


def check_int(value, name: str, *, minimum: int | None = None, none_ok: bool = False) -> int | None:
    """``value`` as a Python int >= ``minimum``, else a ValueError naming the parameter.

    Bools are refused (True is not 1 of anything); NumPy integers are accepted.
    none_ok : None passes through unchanged (the parameter is optional).
    """
    if none_ok and value is None:
        return None
    if not is_int(value, minimum):
        if minimum is None:
            what = "an integer"
        elif minimum == 1:
            what = "a positive integer"
        elif minimum == 0:
            what = "a non-negative integer"
        else:
            what = f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}{' or None' if none_ok else ''}, got {value!r}")
    return int(value)


def check_positive_int(value, name: str, *, none_ok: bool = False) -> int | None:
    """An int > 0 (bools refused; None too unless ``none_ok``), else a ValueError naming the parameter."""
    return check_int(value, name, minimum=1, none_ok=none_ok)
