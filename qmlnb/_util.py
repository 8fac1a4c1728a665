"""Small helpers every part of qmlnb shares: atomic file writes, JSON, the project folder, cores, argument checks.

The library (``data``, ``kernels``, ``qcnn``, ``qsvm``) and the lab both use these,
so they live below both: this module imports nothing from qmlnb.
"""
from __future__ import annotations

import abc

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


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised C-ordered array of ``shape`` and ``dtype`` whose data starts on an ``alignment``-byte
    boundary (a view of a slightly larger byte buffer).

    NumPy's large arrays start 16 bytes past a page; the native code's streaming stores write whole
    cache lines and need them aligned.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    buffer = np.empty(size + alignment, dtype=np.uint8)
    start = -buffer.ctypes.data % alignment
    return buffer[start:start + size].view(dtype).reshape(shape)


def is_int(value, minimum: int | None = None) -> bool:
    """True for an integer (Python or NumPy; bools are not integers here) that is >= ``minimum``."""
    return bool(not isinstance(value, bool) and isinstance(value, numbers.Integral)
                and (minimum is None or value >= minimum))


def is_real(value) -> bool:
    """True for a real number that is not NaN (Python or NumPy ints and floats; bools are not numbers here)."""
    return bool(not isinstance(value, bool) and isinstance(value, numbers.Real) and not math.isnan(value))


# ---------------------------------------------------------------------- the validation vocabulary
# One way to state what a parameter accepts, in the spirit of scikit-learn's parameter constraints: a public
# function checks an argument with ``Interval(int, 1)(n_train, "n_train")`` or ``Options(MODES)(mode, "mode")``, and
# a lab task declares its parameters with the same objects, so every refusal reads
# "<name> must be <what>, got <value!r>".
class Constraint(abc.ABC):
    """What a value must be: ``describe()`` says it in words, ``accepts(value)`` tests it, and calling
    ``constraint(value, name)`` returns the value (ints and floats as Python's) or raises the ValueError."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The accepted values in words ("a positive integer")."""

    @abc.abstractmethod
    def accepts(self, value) -> bool:
        """Whether ``value`` is accepted."""

    def convert(self, value):
        return value

    def __call__(self, value, name: str, *, none_ok: bool = False):
        if none_ok and value is None:
            return None
        if not self.accepts(value):
            raise ValueError(f"{name} must be {self.describe()}{' or None' if none_ok else ''}, got {value!r}")
        return self.convert(value)


class Interval(Constraint):
    """Numbers of ``kind`` (``int``: integers, bools refused; ``float``: reals, NaN and bools refused) between
    ``low`` and ``high`` (None: unbounded), ``closed`` on "both", "left", "right" or "neither" side."""

    def __init__(self, kind: type, low=None, high=None, *, closed: str = "both"):
        if kind not in (int, float):
            raise ValueError(f"kind must be int or float, got {kind!r}")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be one of ('both', 'left', 'right', 'neither'), got {closed!r}")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def __repr__(self) -> str:
        return f"Interval({self.kind.__name__}, {self.low!r}, {self.high!r}, closed={self.closed!r})"

    def accepts(self, value) -> bool:
        if not (is_int(value) if self.kind is int else is_real(value)):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return bool(low_ok and high_ok)

    def convert(self, value):
        return self.kind(value)

    def describe(self) -> str:
        noun = "integer" if self.kind is int else "number"
        left_closed, right_closed = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.kind is float and self.high == math.inf and right_closed is False:  # [low, inf): finite numbers
            return "a finite number" + ("" if self.low is None else f" {'>=' if left_closed else '>'} {self.low}")
        if self.high is None:
            if self.low is None:
                return f"an {noun}" if self.kind is int else "a real number (not NaN)"
            if self.kind is int and left_closed and self.low in (0, 1):
                return "a positive integer" if self.low == 1 else "a non-negative integer"
            if self.kind is int:
                return f"an integer >= {self.low}"
            if self.low == 0:  # as the integers read: "a positive number", "a non-negative number"
                return "a non-negative number" if left_closed else "a positive number"
            return f"a number {'>=' if left_closed else '>'} {self.low}"
        if self.low is None:
            return f"a{'n' if self.kind is int else ''} {noun} {'<=' if right_closed else '<'} {self.high}"
        return (f"a{'n' if self.kind is int else ''} {noun} in {'[' if left_closed else '('}{self.low}, "
                f"{self.high}{']' if right_closed else ')'}")


class Options(Constraint):
    """One of ``values`` (compared with ==; a bool is not taken for 0 or 1)."""

    def __init__(self, values):
        self.values = tuple(values)

    def __repr__(self) -> str:
        return f"Options({self.values!r})"

    def accepts(self, value) -> bool:
        return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values)

    def describe(self) -> str:
        return f"one of {self.values!r}"


class Each(Constraint):
    """A list or tuple whose every item meets ``item`` (at least one item unless ``empty_ok``); the items
    are checked one by one, so a refusal names the item: "each of qubits must be a positive integer, got 0"."""

    def __init__(self, item: Constraint, *, empty_ok: bool = False):
        self.item, self.empty_ok = item, empty_ok

    def __repr__(self) -> str:
        return f"Each({self.item!r})"

    def accepts(self, value) -> bool:
        return (isinstance(value, (list, tuple)) and (self.empty_ok or len(value) > 0)
                and all(self.item.accepts(v) for v in value))

    def describe(self) -> str:
        return f"a{'' if self.empty_ok else ' non-empty'} list of which each is {self.item.describe()}"

    def __call__(self, value, name: str, *, none_ok: bool = False):
        if none_ok and value is None:
            return None
        if not isinstance(value, (list, tuple)) or not (self.empty_ok or len(value)):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return [self.item(v, f"each of {name}") for v in value]


class IsInstance(Constraint):
    """An instance of ``kind`` (a type or tuple of types; bools are not ints here) -- for text and flags."""

    NAMES = {str: "a string", bool: "a bool (True or False)", list: "a list", dict: "a mapping"}

    def __init__(self, kind):
        self.kind = kind

    def __repr__(self) -> str:
        return f"IsInstance({self.kind!r})"

    def accepts(self, value) -> bool:
        return isinstance(value, self.kind)

    def describe(self) -> str:
        return self.NAMES.get(self.kind) or f"a {getattr(self.kind, '__name__', self.kind)}"


def check_int(value, name: str, *, minimum: int | None = None, none_ok: bool = False) -> int | None:
    """``value`` as a Python int >= ``minimum``, else a ValueError naming the parameter.

    Bools are refused (True is not 1 of anything); NumPy integers are accepted.
    none_ok : None passes through unchanged (the parameter is optional).
    """
    return Interval(int, minimum)(value, name, none_ok=none_ok)


def check_real(value, name: str, low=None, high=None, *, closed: str = "both", none_ok: bool = False) -> float | None:
    """``value`` as a Python float in the interval (bools and NaN refused), else a ValueError naming it."""
    return Interval(float, low, high, closed=closed)(value, name, none_ok=none_ok)


def check_option(value, name: str, options, *, none_ok: bool = False):
    """``value`` if it is one of ``options``, else "<name> must be one of (...), got <value!r>"."""
    return Options(options)(value, name, none_ok=none_ok)


def check_positive_int(value, name: str, *, none_ok: bool = False) -> int | None:
    """An int > 0 (bools refused; None too unless ``none_ok``), else a ValueError naming the parameter."""
    return check_int(value, name, minimum=1, none_ok=none_ok)


def skip_unused_schema_format() -> None:
    """Keep jsonschema from importing ``rfc3987_syntax`` in this process (call before nbformat or papermill).

    nbformat's validator imports jsonschema's format checkers, which import rfc3987_syntax wherever it is
    installed (jsonschema's format-nongpl extra, which Jupyter's own packages pull in) only to check the "iri"
    string format, which the notebook schemas never use; that import builds a parser, at 2 to 5 s: more than a
    light notebook's whole run, paid by every papermill run and every ``python -m qmlnb`` command. Marked absent
    (an ImportError, which jsonschema expects), it leaves that one checker out. For papermill's own process
    (:mod:`qmlnb.lab.papermill_run`) and the command line's (``qmlnb.cli.main`` does it inline, to keep
    ``--help`` free of NumPy) only: a library import never changes ``sys.modules`` for its caller.
    """
    import sys

    sys.modules.setdefault("rfc3987_syntax", None)


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__)`` for a package whose public names (``{name: submodule}``) are imported from their
    submodules on first use (PEP 562): the package's face costs nothing until a name is asked for."""
    import importlib

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
