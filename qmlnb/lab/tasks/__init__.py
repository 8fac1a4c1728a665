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

from pathlib import Path

from ..._util import project_root  # noqa: F401 -- notebooks find runs/ and reports/ with tasks.project_root()
from ...qcnn.determinism import set_threads  # noqa: F401 -- a notebook sets its threads with tasks.set_threads
from . import (exploration, feature_map, gram, kernel_training, positive_control, qcnn, qsvm, scale, shots,
               sparse_kernel)
from .common import RunSkipped, check_backend, flat_diagnostics, load_data, run_dir, save_run, take  # noqa: F401
from .exploration import class_edges, explore, kernel_alignment, plot_exploration  # noqa: F401
from .feature_map import REGISTRY, feature_map_qsvm, plot_feature_map_run, resolve_feature_map  # noqa: F401
from .gram import gram_scaling, states_vs_pennylane_metrics  # noqa: F401
from .kernel_training import kernel_training_run  # noqa: F401
from .positive_control import positive_control_run  # noqa: F401
from .qcnn import epoch_timing, qcnn_run, simulator_comparison, train_config  # noqa: F401
from .qsvm import gram_comparison, kernel_sample, qsvm_run  # noqa: F401
from .scale import FEATURES, check_scale_features, kernels_at_scale  # noqa: F401
from .shots import shots_study  # noqa: F401
from .sparse_kernel import sparse_kernel_run  # noqa: F401
from .spec import Metric, Param, TaskSpec  # noqa: F401

SPECS: dict[str, TaskSpec] = {m.SPEC.name: m.SPEC for m in (qcnn, qsvm, gram, exploration, scale, shots, feature_map,
                                                             kernel_training, positive_control, sparse_kernel)}


def spec_of_notebook(notebook: str | Path) -> TaskSpec | None:
    """The task whose notebook has ``notebook``'s file name, or None (a notebook of no declared task)."""
    name = Path(notebook).name
    return next((spec for spec in SPECS.values() if Path(spec.notebook).name == name), None)
