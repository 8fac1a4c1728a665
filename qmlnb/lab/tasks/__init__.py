"""What each notebook runs, one module per task, so the notebooks stay a parameters cell and a few calls.

========================  ======================  ===============================  ==========================
task (``metrics.task``)   module                  function                         notebook
========================  ======================  ===============================  ==========================
``qcnn``                  :mod:`.qcnn`            :func:`qcnn_run`                 10-train-qcnn.ipynb
``qsvm``                  :mod:`.qsvm`            :func:`qsvm_run`                 20-qsvm.ipynb
``gram-scaling``          :mod:`.gram`            :func:`gram_scaling`             30-gram-scaling.ipynb
``explore``               :mod:`.exploration`     :func:`explore`                  00-explore.ipynb
``kernels-at-scale``      :mod:`.scale`           :func:`kernels_at_scale`         40-kernels-at-scale.ipynb
``shots``                 :mod:`.shots`           :func:`shots_study`              45-shots.ipynb
``feature-map-qsvm``      :mod:`.feature_map`     :func:`feature_map_qsvm`         50-feature-maps.ipynb
``kernel-training``       :mod:`.kernel_training` :func:`kernel_training_run`      60-kernel-training.ipynb
``positive-control``      :mod:`.positive_control` :func:`positive_control_run`    25-positive-control.ipynb
``sparse-kernel``         :mod:`.sparse_kernel`   :func:`sparse_kernel_run`        70-sparse-kernel.ipynb
========================  ======================  ===============================  ==========================

Each module ends with its :class:`.spec.TaskSpec` (``SPEC``): parameters, metrics, tables and notebook,
declared once; :data:`SPECS` collects them by task name.  :mod:`.common` holds what the tasks share
(run folder, :func:`save_run`, data loading, :class:`RunSkipped`).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..._util import lazy_exports
from ..._util import project_root  # noqa: F401 -- notebooks find runs/ and reports/ with tasks.project_root()
from ...qcnn.determinism import set_threads  # noqa: F401 -- a notebook sets its threads with tasks.set_threads
from .common import RunSkipped, check_backend, flat_diagnostics, load_data, run_dir, save_run, take  # noqa: F401
from .spec import Metric, Param, TaskSpec  # noqa: F401

# The task modules and their public names are imported on first use (PEP 562): a notebook that only records a
# run (run_dir, save_run) does not pay for scikit-learn, SciPy's statistics and every task's imports (a second
# or two at each papermill run's start); ``tasks.qsvm_run`` or ``from qmlnb.lab.tasks import qsvm_run`` work as before.
TASK_MODULES = ("qcnn", "qsvm", "gram", "exploration", "scale", "shots", "feature_map", "kernel_training",
                "positive_control", "sparse_kernel")
_EXPORTS = {
    "class_edges": "exploration", "explore": "exploration", "kernel_alignment": "exploration",
    "plot_exploration": "exploration",
    "REGISTRY": "feature_map", "feature_map_qsvm": "feature_map", "plot_feature_map_run": "feature_map",
    "resolve_feature_map": "feature_map",
    "gram_scaling": "gram", "states_vs_pennylane_metrics": "gram",
    "kernel_training_run": "kernel_training",
    "positive_control_run": "positive_control",
    "epoch_timing": "qcnn", "qcnn_run": "qcnn", "simulator_comparison": "qcnn", "train_config": "qcnn",
    "gram_comparison": "qsvm", "kernel_sample": "qsvm", "qsvm_run": "qsvm",
    "FEATURES": "scale", "check_scale_features": "scale", "kernels_at_scale": "scale",
    "shots_study": "shots",
    "sparse_kernel_run": "sparse_kernel",
}


_export, _exports_dir = lazy_exports(__name__, _EXPORTS, globals())


def __getattr__(name: str):
    if name in TASK_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "SPECS":  # every task's declaration, by task name: imports every task module, once
        specs: dict[str, TaskSpec] = {}
        for module in TASK_MODULES:
            spec = importlib.import_module(f".{module}", __name__).SPEC
            specs[spec.name] = spec
        globals()["SPECS"] = specs
        return specs
    return _export(name)  # a task's public name, or AttributeError


def __dir__() -> list[str]:
    return sorted({*_exports_dir(), *TASK_MODULES, "SPECS"})


def spec_of_notebook(notebook: str | Path) -> TaskSpec | None:
    """The task whose notebook has ``notebook``'s file name, or None (a notebook of no declared task)."""
    name = Path(notebook).name
    specs: dict[str, TaskSpec] = globals().get("SPECS") or __getattr__("SPECS")
    return next((spec for spec in specs.values() if Path(spec.notebook).name == name), None)
