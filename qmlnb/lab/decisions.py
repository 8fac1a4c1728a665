"""Decisions between stages: grid values taken from an earlier stage's complete runs.

A value in a grid file (``params/*.yaml``) may be a *reference* instead of a literal::

    grid:
      threads: {from: threads, pick: fastest}            # the threads stage's fastest thread count
      batch_size: {from: batch-size, pick: best_score}   # the batch-size stage's best-scoring batch size
      n_train: {from: dataset-size, pick: best_score}
      threads: {from: threads, pick: fastest, at_least: 2}   # never fewer than 2 (two processes)

``from`` names a stage (a grid's ``name:``), ``pick`` a rule of :data:`RULES`,
``param`` (optional, default: the key itself) the referenced stage's parameter,
``at_least`` (optional) a floor applied to the chosen value for this grid only.
A ``dataset`` value may also be ``{first_available: [fashion-mnist, digits]}``:
the first dataset whose files are in the data directory (``$QMLNB_DATA_DIR``;
``digits`` is embedded, so always available), resolved when the stage runs.

Rules (the runs used are the referenced stage's *complete* runs; every other
parameter but ``seed`` must be the same in all of them, so no two settings are
pooled; "cheaper" is the smaller value: fewer threads, a smaller batch, fewer
training images):

``fastest``
    the value with the smallest median training time (``timings.train_s``);
    a cheaper value whose inter-quartile range (25th..75th percentile of its
    runs' times) overlaps the fastest one's is within noise and is chosen instead.
``best_score``
    the value with the best mean test balanced accuracy (``qcnn.balanced_accuracy``)
    over its runs (seeds); a cheaper value whose mean is below the best by at most
    one standard deviation of the best value's runs (sample std, ddof=1; 0 for a
    single run) is within noise and is chosen instead.  (The best value's spread,
    not the cheaper one's: a cheap setting whose seeds scatter widely must not win
    by its own noise.)

Each decision is written atomically (:mod:`.decision_records`), with its evidence (per-value count,
median, IQR, mean, std and run folders, the rule and the reason), to
``<runs>/<stage>/decision-<param>-<rule>.json``.  A decision that differs from
the one already recorded there (another value or other runs) keeps the earlier
ones in its ``history`` list and is reported on stderr, never silently replaced.

This module only parses, orders and decides; :mod:`qmlnb.lab.flow` runs the
stages in order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._util import Each, Interval, IsInstance, is_real
from . import runs
from .tasks import qcnn as qcnn_task


REFERENCE_KEYS = {"from", "pick", "param", "at_least"}
CHOICE_KEY = "first_available"


class DecisionError(ValueError):
    """A reference that cannot be resolved (missing stage, cycle, unknown rule, no complete run, ...)."""


@dataclass(frozen=True)
class Rule:
    """How a rule reads its runs: ``metric`` (dotted path in metrics.json), ``better`` ('min'/'max')."""

    name: str
    metric: str
    better: str
    what: str


RULES = {
    "fastest": Rule("fastest", qcnn_task.TRAIN_S, "min",
                    "smallest median training time; overlapping IQRs go to the cheaper (smaller) value"),
    "best_score": Rule("best_score", qcnn_task.BALANCED_ACCURACY, "max",
                       "best mean balanced accuracy over seeds; a cheaper (smaller) value within one std of the best (its seeds) wins"),
}


@dataclass(frozen=True)
class Reference:
    """``key: {from: stage, pick: rule, ...}`` in ``grid_file``: the value of ``param`` chosen by ``pick``."""

    key: str
    stage: str
    pick: str
    param: str
    grid_file: str
    at_least: int | float | None = None

    @property
    def where(self) -> str:
        return f"{self.grid_file}: {self.key}"

    @property
    def decision_key(self) -> tuple[str, str, str]:
        return (self.stage, self.param, self.pick)


# ---------------------------------------------------------------------- parsing
def is_reference(value) -> bool:
    """Is a grid value a reference to another stage (a mapping with ``from``)?"""
    return isinstance(value, dict) and "from" in value


def is_choice(value) -> bool:
    """Is a grid value ``{first_available: [...]}``?"""
    return isinstance(value, dict) and CHOICE_KEY in value


def is_deferred(value) -> bool:
    """A value the flow fills in before the stage runs (a reference or a first-available choice)."""
    return is_reference(value) or is_choice(value)


def parse_reference(key: str, value: dict, grid_file) -> Reference:
    """The :class:`Reference` of ``key: value``; DecisionError naming the file and key when malformed."""
    where = f"{grid_file}: {key}"
    unknown = set(value) - REFERENCE_KEYS
    if unknown:
        raise DecisionError(f"{where}: unknown reference keys {sorted(unknown)}; allowed: {sorted(REFERENCE_KEYS)}")
    stage, pick = value.get("from"), value.get("pick")
    if not isinstance(stage, str) or not runs.SAFE_NAME.fullmatch(stage):
        raise DecisionError(f"{where}: 'from' must name a stage (a grid's name), got {stage!r}")
    if pick not in RULES:
        raise DecisionError(f"{where}: unknown rule pick={pick!r}; known rules: {', '.join(RULES)}")
    param = value.get("param", key)
    if not isinstance(param, str) or not param:
        raise DecisionError(f"{where}: 'param' must be a parameter name, got {param!r}")
    floor = _checked(Interval(float), value.get("at_least"), f"{where}: 'at_least'", none_ok=True)
    return Reference(key=key, stage=stage, pick=pick, param=param, grid_file=str(grid_file), at_least=floor)


def _checked(constraint, value, name: str, *, none_ok: bool = False):
    """``value`` if it meets ``constraint`` (:mod:`qmlnb._util`'s vocabulary), else its refusal as a DecisionError."""
    if (none_ok and value is None) or constraint.accepts(value):
        return value
    raise DecisionError(f"{name} must be {constraint.describe()}{' or None' if none_ok else ''}, got {value!r}")


def check_choice(key: str, value: dict, grid_file) -> list[str]:
    """The candidate datasets of ``dataset: {first_available: [...]}`` (DecisionError when malformed)."""
    from ..data import DATASETS

    where = f"{grid_file}: {key}"
    if key != "dataset":
        raise DecisionError(f"{where}: {CHOICE_KEY!r} applies to 'dataset' only")
    if set(value) != {CHOICE_KEY}:
        raise DecisionError(f"{where}: {{{CHOICE_KEY}: [...]}} takes no other keys, got {sorted(value)}")
    names = list(_checked(Each(IsInstance(str)), value[CHOICE_KEY], f"{where}: {CHOICE_KEY} (dataset names)"))
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise DecisionError(f"{where}: unknown datasets {unknown}; known: {', '.join(DATASETS)}")
    return names


def check_points(points: list[dict], grid_file, notebook_params: dict) -> list[Reference]:
    """Validate the deferred values of a grid's points; return its references (each once).

    Raises DecisionError (naming the file and key) for a malformed reference,
    an unknown rule, or a reference whose key is not a notebook parameter.
    """
    out = {}
    for point in points:
        for key, value in point.items():
            if is_choice(value):
                check_choice(key, value, grid_file)
            elif is_reference(value):
                ref = parse_reference(key, value, grid_file)
                if key not in notebook_params:
                    raise DecisionError(f"{ref.where}: {key!r} is not a parameter of the notebook")
                out[(ref.key, ref.decision_key, ref.at_least)] = ref
            elif isinstance(value, dict):
                raise DecisionError(f"{grid_file}: {key}: a mapping value must be a reference "
                                    f"{{from: <stage>, pick: <rule>}} or {{{CHOICE_KEY}: [...]}}, got {value!r}")
    return list(out.values())


# ---------------------------------------------------------------------- ordering
def stage_order(stages: dict[str, list[Reference]]) -> list[str]:
    """Stage names so that every referenced stage comes before the stages referring to it.

    ``stages`` maps each stage name (in the order given) to its references;
    references to stages not in ``stages`` are ignored here (the caller handles
    them).  Stable: independent stages keep their order.  A cycle (a stage that
    depends on itself, directly or not) raises DecisionError naming its files and keys.
    """
    order, state = [], {}  # state: 1 = on the current path, 2 = placed

    def visit(name: str, path: list[tuple[str, Reference]]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:  # back on the current path: the cycle starts at name's own reference
            start = next(i for i, (owner, _) in enumerate(path) if owner == name)
            chain = " -> ".join(f"{owner} ({r.where} from {r.stage})" for owner, r in path[start:])
            raise DecisionError(f"the stages' references form a cycle: {chain}")
        state[name] = 1
        for ref in stages[name]:
            if ref.stage in stages:
                visit(ref.stage, [*path, (name, ref)])
        state[name] = 2
        order.append(name)

    for name in stages:
        visit(name, [])
    return order


# ---------------------------------------------------------------------- evidence
def is_number(value) -> bool:
    """A finite int or float (not a bool): what a decided value, and the numbers of its evidence, must be.

    NaN (which ``status.json`` may hold: Python's JSON reads it) is not equal to
    itself, so a rule could not even group the runs of such a value.
    """
    return isinstance(value, (int, float)) and is_real(value) and math.isfinite(value)


def _dotted(record: dict, path: str):
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def collect(run_dirs, param: str, metric: str) -> list[dict]:
    """One row per complete run: ``run`` (folder), ``value`` (of ``param``), ``metric``, ``seed``, ``setting``.

    ``value`` and the setting come from the run's ``status.json`` point, completed
    by its ``params.json``; ``setting`` is every parameter but ``param`` and
    ``seed`` (canonical JSON).  Runs without the metric are left out.
    """
    rows = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        status = runs.read_status(run_dir) or {}
        if status.get("status") != runs.COMPLETE:
            continue
        try:
            stored, metrics = (runs.read_record(run_dir / name) for name in (runs.PARAMS_FILE, runs.METRICS_FILE))
        except ValueError as err:
            raise DecisionError(f"complete run {run_dir} cannot be read: {err}") from None
        point = status.get("point")
        if not all(isinstance(v, dict) or v is None for v in (stored, point, metrics)):
            raise DecisionError(f"complete run {run_dir}: its params.json, metrics.json and status.json point "
                                "must be JSON objects")
        params = {**(stored or {}), **(point or {})}
        score = _dotted(metrics or {}, metric)
        if param not in params or not isinstance(score, (int, float)) or not math.isfinite(score):
            continue
        setting = {k: v for k, v in params.items() if k not in (param, "seed")}
        rows.append({"run": str(run_dir), "value": params[param], "metric": float(score),
                     "seed": params.get("seed"), "setting": runs.canonical_json(setting)})
    return rows


def _summary(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return {"n": int(arr.size), "median": float(median), "q1": float(q1), "q3": float(q3),
            "mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def decide(rows: list[dict], rule: str, param: str, stage: str = "?") -> dict:
    """Apply ``rule`` to ``rows`` of :func:`collect`: the chosen value, the reason and the per-value evidence.

    Raises DecisionError when there is no row, when the runs differ in another
    parameter than ``param`` and ``seed`` (their settings would be pooled), or
    when the values are not numbers (no "cheaper" order).
    """
    if rule not in RULES:
        raise DecisionError(f"unknown rule {rule!r}; known rules: {', '.join(RULES)}")
    spec = RULES[rule]
    if not rows:
        raise DecisionError(f"stage {stage!r} has no complete run with {param!r} and {spec.metric!r}")
    settings = {r["setting"] for r in rows}
    if len(settings) > 1:
        import json

        parsed = [json.loads(s) for s in settings]
        keys = sorted({k for p in parsed for k in p if len({runs.canonical_json(q.get(k)) for q in parsed}) > 1})
        raise DecisionError(f"stage {stage!r}: its complete runs differ in {keys} besides {param!r} and 'seed'; "
                            f"{rule} would pool different settings (rerun it with one setting, or clear old runs)")
    values = list({runs.canonical_json(r["value"]): r["value"] for r in rows}.values())
    if not all(is_number(v) for v in values):
        raise DecisionError(f"stage {stage!r}: {param!r} values {values} are not all finite numbers; "
                            f"{rule} needs an order (smaller = cheaper)")
    values.sort()
    per_value = []
    for v in values:
        mine = [r for r in rows if r["value"] == v]
        per_value.append({"value": v, **_summary([r["metric"] for r in mine]),
                          "runs": sorted(Path(r["run"]).name for r in mine)})
    if spec.better == "min":
        best = min(per_value, key=lambda s: (s["median"], s["value"]))
        close = [s for s in per_value if s["q1"] <= best["q3"] and best["q1"] <= s["q3"]]
        chosen = min(close, key=lambda s: s["value"])
        how = (f"median {spec.metric} {chosen['median']:.3g} s (IQR {chosen['q1']:.3g}-{chosen['q3']:.3g}, "
               f"n={chosen['n']})")
        if chosen is best:
            reason = f"{param}={chosen['value']} has the smallest {how}"
        else:
            reason = (f"{param}={chosen['value']} ({how}) is within noise of the fastest {param}={best['value']} "
                      f"(median {best['median']:.3g} s, IQR {best['q1']:.3g}-{best['q3']:.3g}, n={best['n']}: "
                      "the IQRs overlap) and cheaper")
    else:
        best = max(per_value, key=lambda s: (s["mean"], -s["value"]))
        close = [s for s in per_value if best["mean"] - s["mean"] <= best["std"]]
        chosen = min(close, key=lambda s: s["value"])
        how = f"mean {spec.metric} {chosen['mean']:.3f} ± {chosen['std']:.3f} (n={chosen['n']})"
        if chosen is best:
            reason = f"{param}={chosen['value']} has the best {how}"
        else:
            reason = (f"{param}={chosen['value']} ({how}) is within one std of the best {param}={best['value']} "
                      f"({best['mean']:.3f} ± {best['std']:.3f}, n={best['n']}) and cheaper")
    return {"stage": stage, "param": param, "rule": rule, "rule_text": spec.what, "metric": spec.metric,
            "value": chosen["value"], "reason": reason, "per_value": per_value,
            "runs": sorted(r["run"] for r in rows)}


def apply_floor(value, ref: Reference):
    """The decided value, raised to the reference's ``at_least`` when it is below it."""
    if ref.at_least is not None and value < ref.at_least:
        return type(value)(ref.at_least) if isinstance(value, int) and float(ref.at_least).is_integer() \
            else ref.at_least
    return value


def _present(folder, name: str) -> bool:
    # a dataset file, as distributed (.gz) or already unpacked
    return (folder / name).is_file() or (folder / name.removesuffix(".gz")).is_file()


def dataset_available(name: str, root=None) -> bool:
    """Are dataset ``name``'s training or test files (all of either group) in the data directory (``root``, else
    the configured one)?"""
    from ..data import dataset_info
    from ..data.catalog import dataset_folder

    if name == "digits":
        return True
    info = dataset_info(name)
    folder = dataset_folder(name, root)
    return any(files and all(_present(folder, f) for f in files) for files in (info.train_files, info.test_files))


def dataset_unusable(point: dict) -> str | None:
    """Why a point's ``dataset`` cannot be read here (its files named), or None (also for no/unknown dataset).

    Checked before a kernel starts, so a grid over datasets that are absent does
    not pay a kernel start per point; the notebook remains the judge of the rest.
    """
    from ..data import DATASETS, dataset_info
    from ..data.catalog import ENV_VAR, dataset_folder

    name = point.get("dataset")
    if not isinstance(name, str) or name not in DATASETS or dataset_available(name):
        return None
    info = dataset_info(name)
    return (f"dataset {name!r} is not in the data directory: missing {_missing_files(name)} "
            f"in {dataset_folder(name).resolve()} (point {ENV_VAR} at the folder that contains {info.folder}/)")


def _missing_files(name: str) -> str:
    """The files of dataset ``name`` absent from the data directory, as "a, b or c, d" (either group will do)."""
    from ..data import dataset_info
    from ..data.catalog import dataset_folder

    info, folder = dataset_info(name), dataset_folder(name)
    # only the files really missing, per group: either group (training or test files) makes the dataset usable
    groups = [[f for f in files if not _present(folder, f)] for files in (info.train_files, info.test_files) if files]
    return " or ".join(", ".join(g) for g in groups if g)


def first_available(names: list[str], where: str) -> str:
    """The first of ``names`` whose files are present (DecisionError naming ``where`` when none is)."""
    for name in names:
        if dataset_available(name):
            return name
    raise DecisionError(f"{where}: none of {names} is in the data directory")


def fallback_record(names: list[str], used: str) -> dict | None:
    """``{"asked", "used", "reason"}`` when ``used`` (:func:`first_available`'s pick) is not the first of ``names``,
    else None.  The reason names the first choice's missing files, not the folder (a run records its data folder
    apart, and the record must not change with where the folder lies)."""
    if used == names[0]:
        return None
    return {"asked": names[0], "used": used,
            "reason": f"{names[0]} is not in the data directory (missing {_missing_files(names[0])})"}
