"""The tasks' declarations (qmlnb.lab.tasks.*.SPEC) are the one place their parameters and metric keys are named."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from qmlnb._util import Each, Interval, Options
from qmlnb.lab import grid, stages, tasks
from qmlnb.lab.tasks.spec import Metric, Param, TaskSpec

ROOT = Path(__file__).resolve().parents[2]


def test_every_task_is_declared_once_with_its_notebook():
    assert sorted(tasks.SPECS) == sorted(stages.TASKS)
    for name, spec in tasks.SPECS.items():
        assert (ROOT / spec.notebook).is_file(), spec.notebook
        assert tasks.spec_of_notebook(ROOT / spec.notebook) is spec
    assert tasks.spec_of_notebook("notebooks/90-summary.ipynb") is None


@pytest.mark.parametrize("name", sorted(stages.TASKS))
def test_a_notebooks_parameters_cell_is_its_tasks_declaration(name):
    spec = tasks.SPECS[name]
    assert grid.notebook_parameters(ROOT / spec.notebook) == spec.defaults


def test_a_metric_must_be_declared_and_reads_nested_metrics():
    spec = tasks.SPECS[stages.QCNN]
    assert spec.metric("timings.train_s") == "timings.train_s"
    assert Metric("timings.train_s").read({"timings": {"train_s": 2.5}}) == 2.5
    assert Metric("timings.train_s").read({"timings": 3}) is None
    assert Metric("qsvm").join("f1") == "qsvm.f1"
    with pytest.raises(ValueError, match="task 'qcnn' declares no metric 'timings.trian_s'"):
        spec.metric("timings.trian_s")
    with pytest.raises(ValueError, match="declares a parameter twice"):
        TaskSpec("t", "t.ipynb", (Param("a", 1), Param("a", 2)))
    with pytest.raises(ValueError, match=r"names must be one of \('backend', 'dataset'\)"):
        Param("x", "a", names="model")


def test_declared_constraints_check_arguments_and_grid_values():
    spec = tasks.SPECS[stages.GRAM]
    assert spec.check_args(repeats=3, qubits=(2, 3)) == {"repeats": 3, "qubits": [2, 3]}
    with pytest.raises(ValueError, match="^repeats must be a positive integer, got True$"):
        spec.check_args(repeats=True)
    with pytest.raises(ValueError, match="^each of qubits must be a positive integer, got 0$"):
        spec.check_args(qubits=[4, 0])
    with pytest.raises(ValueError, match="has no parameter 'repets'"):
        spec.check_args(repets=3)
    with pytest.raises(ValueError, match="parameter 'backend' = 'gpu' is not a known Gram backend"):
        spec.check({"backend": "gpu"})
    # the same vocabulary in every message
    assert isinstance(spec.param("sizes").check, Each) and isinstance(spec.param("repeats").check, Interval)
    assert isinstance(tasks.SPECS[stages.QCNN].param("compare").check, Options)


@pytest.mark.parametrize("value, message", [(0, "parameter 'repeats' must be a positive integer, got 0"),
                                            (-1, "parameter 'repeats' must be a positive integer, got -1")])
def test_a_grid_breaking_a_declared_constraint_is_refused_when_loaded(tmp_path, value, message):
    path = tmp_path / "params" / "g.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"notebook": str(ROOT / "notebooks/30-gram-scaling.ipynb"),
                                    "grid": {"repeats": [3, value]}}))
    with pytest.raises(grid.SweepError, match=re.escape(f"{path}: {message}")):
        grid.load_sweep(path)


def _declared_keys() -> tuple[set[str], set[str]]:
    """(every declared dotted metric key, every group: the first part of a dotted key)."""
    keys = {key for spec in tasks.SPECS.values() for key in (*spec.metrics, *spec.optional) if "." in key}
    return keys, {key.split(".")[0] for key in keys}


def _string_literals(path: Path):
    """(line, text) of each string constant of a module, docstrings left out, f-strings by their leading text."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    fstring_parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            fstring_parts |= {id(v) for v in node.values}
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                and id(node) not in fstring_parts):
            yield node.lineno, node.value


def test_no_module_names_a_tasks_metric_by_a_string_outside_its_declaration():
    keys, groups = _declared_keys()
    assert {"timings.train_s", "qcnn.balanced_accuracy"} <= keys and {"qsvm", "baselines", "timings"} <= groups
    declarations = ROOT / "qmlnb" / "lab" / "tasks"
    found = []
    for path in sorted((ROOT / "qmlnb").rglob("*.py")):
        if declarations in path.parents:
            continue
        for line, text in _string_literals(path):
            if text in keys or any(text.startswith(f"{group}.") for group in groups):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not found, "metric keys typed outside the task declarations (use the task's SPEC.metric):\n" + "\n".join(found)


def _has(metrics: dict, key: str) -> bool:
    """Does nested ``metrics`` hold dotted ``key`` (whatever its value, None included)?"""
    *parents, last = key.split(".")
    for part in parents:
        metrics = metrics.get(part) if isinstance(metrics, dict) else None
    return isinstance(metrics, dict) and last in metrics


def test_the_gram_task_writes_the_metrics_it_declares():
    metrics, table = tasks.gram_scaling("cpu", sizes=[10], qubits=[2], threads=1, repeats=2, min_time=0.0,
                                        progress=False)
    spec = tasks.SPECS[stages.GRAM]
    assert metrics["task"] == spec.name and not [key for key in spec.metrics if not _has(metrics, key)]
    assert not [key for key in spec.optional if _has(metrics, key)]  # pennylane_states=0: no comparison


def test_the_qcnn_task_writes_the_metrics_it_declares():
    spec = tasks.SPECS[stages.QCNN]
    metrics, tables = tasks.qcnn_run(n_train=40, epochs=1, threads=1, batch_size=16, progress=False)
    assert metrics["task"] == spec.name and not [key for key in spec.metrics if not _has(metrics, key)]
    assert sorted(tables) == sorted(spec.tables)
