"""How a task declares itself once: its parameters, the metrics and tables it writes, and its notebook.

Each module of :mod:`qmlnb.lab.tasks` ends with a :class:`TaskSpec`.  The rest
of the lab reads these declarations instead of repeating names:

- the grid loader (:mod:`qmlnb.lab.grid`) checks a grid's values against the
  declared constraints and the names a parameter stands for (a Gram backend,
  a dataset: :data:`NAMED`);
- the decisions between stages and the report read a run's metrics through
  the declared :class:`Metric` keys (``QCNN.metric("timings.train_s")``
  fails at import when the task does not declare it), never by typing the
  dotted path again; a test greps the lab for dotted metric keys outside the
  task modules;
- a test holds each notebook's ``parameters`` cell to its task's declared
  names and defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..._util import Constraint, Interval, IsInstance


def _backends() -> tuple[str, ...]:
    from ...kernels.registry import BACKENDS

    return tuple(BACKENDS)


def _datasets() -> tuple[str, ...]:
    from ...data import DATASETS

    return tuple(DATASETS)


# what a parameter's value may name, with the library registry that knows the names: a grid naming an unknown
# one is refused when it is loaded (a known backend that cannot run here is not an error: its runs are skipped)
NAMED = {"backend": ("Gram backend", _backends), "dataset": ("dataset", _datasets)}


@dataclass(frozen=True)
class Param:
    """One parameter of a task: its ``name``, its notebook ``default`` (a literal), an optional ``check``
    (a :class:`qmlnb._util.Constraint`) and ``names``: a key of :data:`NAMED` when the value names a
    Gram backend or a dataset."""

    name: str
    default: object
    check: Constraint | None = None
    names: str | None = None

    def __post_init__(self):
        if self.names is not None and self.names not in NAMED:
            raise ValueError(f"names must be one of {tuple(NAMED)} or None, got {self.names!r}")


class Metric(str):
    """A dotted key of a run's metrics (``"timings.train_s"``: ``metrics["timings"]["train_s"]``, the column the
    report's loader flattens it to), declared by the task that writes it."""

    def join(self, *parts: str) -> "Metric":
        """A key inside this one (``Metric("qsvm").join("f1")`` is ``"qsvm.f1"``): a score of a declared group."""
        return Metric(".".join((self, *parts)))

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.split("."))

    def read(self, metrics: dict):
        """This key's value in a nested ``metrics`` dict, or None where a level is missing."""
        value = metrics
        for part in self.path:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value


@dataclass(frozen=True)
class TaskSpec:
    """A task as the lab sees it: ``name`` (``metrics["task"]``, one of :data:`qmlnb.lab.stages.TASKS`),
    ``notebook`` (the path under the project folder), ``params``, ``metrics`` (dotted keys every run of the
    task writes; a group such as ``"qsvm"`` holds a dict of scores), ``optional`` (keys some settings add:
    a comparison, a reference) and ``tables`` (the ``<name>.csv`` files it writes)."""

    name: str
    notebook: str
    params: tuple[Param, ...]
    metrics: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    _metrics: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r} declares a parameter twice: {names}")
        object.__setattr__(self, "_metrics", {key: Metric(key) for key in (*self.metrics, *self.optional)})

    def metric(self, key: str) -> Metric:
        """The declared metric ``key`` (a ValueError, at import, for a key the task does not write)."""
        try:
            return self._metrics[key]
        except KeyError:
            raise ValueError(f"task {self.name!r} declares no metric {key!r}; it declares: "
                             f"{', '.join(self._metrics)}") from None

    @property
    def defaults(self) -> dict:
        """{parameter: default} in declaration order: what the notebook's ``parameters`` cell holds."""
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def check_args(self, **values) -> dict:
        """Each value checked by its declared parameter's constraint (a ValueError naming it, the style of
        :mod:`qmlnb._util`); returns the converted values.  A task checks its arguments with this before any work."""
        out = {}
        for key, value in values.items():
            param = self.param(key)
            if param is None:
                raise ValueError(f"task {self.name!r} has no parameter {key!r}")
            out[key] = value if param.check is None else param.check(value, key)
        return out

    def check(self, point: dict) -> None:
        """Refuse (ValueError) a value of ``point`` that breaks its parameter's constraint or names an unknown
        backend or dataset; parameters the task does not declare are the grid loader's to refuse."""
        for key, value in point.items():
            param = self.param(key)
            if param is None:
                continue
            if param.names and isinstance(value, str):
                what, known = NAMED[param.names]
                if value not in known():
                    raise ValueError(f"parameter {key!r} = {value!r} is not a known {what}; "
                                     f"known: {', '.join(known())}")
            if param.check is not None:
                param.check(value, f"parameter {key!r}")


# parameters several tasks share, declared once: the dataset and Gram backend a run names, its classes, its
# threads (0: all cores) and its seed
DATASET = Param("dataset", "digits", IsInstance(str), names="dataset")
BACKEND = Param("backend", "cpu", IsInstance(str), names="backend")
CLASSES = Param("classes", [3, 8])
THREADS = Param("threads", 0, Interval(int, 0))
SEED = Param("seed", 0, Interval(int, 0))
