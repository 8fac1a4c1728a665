"""The names the notebooks, the sweep and the report share: tasks, stages and tables, each spelled once.

A run records two names in its ``metrics.json``:

- ``task``: what its notebook computed (:data:`QCNN` training, the :data:`QSVM`
  pipeline, :data:`GRAM` timings, the :data:`EXPLORE` notebook), set by the
  function of :mod:`.tasks` that did the work; it says which metrics exist.
- ``stage``: the question the run's grid asks (:data:`THREADS`,
  :data:`DATASET_SIZE`, ...), declared by the grid file's ``stage:`` key,
  checked against :data:`STAGES` when the grid is loaded, handed to the kernel
  in ``$QMLNB_STAGE`` and written by :func:`.tasks.save_run`.

The report selects runs by these recorded names, never by a grid's ``name``, so
a renamed grid keeps its report section.  Table names are the CSV files a run
writes (``<name>.csv``) and the report reads.
"""
from __future__ import annotations

import os

# ---------------------------------------------------------------- tasks (metrics["task"])
QCNN = "qcnn"              # 10-train-qcnn.ipynb: tasks.qcnn_run
QSVM = "qsvm"              # 20-qsvm.ipynb: tasks.qsvm_run
GRAM = "gram-scaling"      # 30-gram-scaling.ipynb: tasks.gram_scaling
EXPLORE = "explore"        # 00-explore.ipynb
SCALE = "kernels-at-scale"  # 40-kernels-at-scale.ipynb: tasks.kernels_at_scale
SHOTS = "shots"            # 45-shots.ipynb: tasks.shots_study
FEATURE_MAP_TASK = "feature-map-qsvm"  # 50-feature-maps.ipynb: tasks.feature_map_qsvm
KERNEL_TRAINING = "kernel-training"  # 60-kernel-training.ipynb: tasks.kernel_training_run
POSITIVE_CONTROL = "positive-control"  # 25-positive-control.ipynb: tasks.positive_control_run
SPARSE_KERNEL = "sparse-kernel"  # 70-sparse-kernel.ipynb: tasks.sparse_kernel_run
TASKS = (QCNN, QSVM, GRAM, EXPLORE, SCALE, SHOTS, FEATURE_MAP_TASK, KERNEL_TRAINING, POSITIVE_CONTROL, SPARSE_KERNEL)

# ---------------------------------------------------------------- stages (metrics["stage"], a grid's `stage:`)
SEQUENTIAL = "sequential"
PARALLEL_MODES = "parallel-modes"
THREADS = "threads"
DATASET_SIZE = "dataset-size"
BATCH_SIZE = "batch-size"
GRAM_SCALING = "gram-scaling"
GRAM_THREADS = "gram-threads"
QSVM_BACKENDS = "qsvm-backends"
CONTROLS = "controls"
FINAL = "final"
FINAL_MODES = "final-modes"
KERNELS_AT_SCALE = "kernels-at-scale"
SHOTS_STAGE = "shots"
FEATURE_MAPS = "feature-maps"
KERNEL_TRAINING_STAGE = "kernel-training"
SPARSE_KERNEL_STAGE = "sparse-kernel"
STAGES = {
    SEQUENTIAL: "the sequential QCNN baseline",
    PARALLEL_MODES: "sequential against fold- and data-parallel QCNN training, same work",
    THREADS: "QCNN training time against threads (the report's threads speedup)",
    DATASET_SIZE: "QCNN test scores against the training-set size",
    BATCH_SIZE: "QCNN test scores against the batch size",
    GRAM_SCALING: "Gram time against N and n per backend",
    GRAM_THREADS: "Gram time against threads per CPU backend",
    QSVM_BACKENDS: "the quantum-kernel SVM per Gram backend, beside the baselines",
    CONTROLS: "the QCNN against classical controls of its quantum layer (head x seed, one split); the quantum "
              "kernels against their RBF control on natural and engineered labels (the positive control)",
    FINAL: "QCNN and QSVM on the real datasets",
    FINAL_MODES: "sequential against fold- and data-parallel training on each dataset, at the decided settings",
    KERNELS_AT_SCALE: "the quantum-kernel SVM beside an RBF SVM against qubits (PCA or pixel features, MPS beyond "
                      "state vectors)",
    SHOTS_STAGE: "the quantum-kernel SVM on the kernel a device would estimate, against shots and noise",
    FEATURE_MAPS: "the quantum-kernel SVM per feature map (registry or circuit spec, named by name#hash) beside an "
                  "RBF SVM",
    KERNEL_TRAINING_STAGE: "the QSVM on a feature map trained by kernel-target alignment beside its controls (untrained, "
                           "RBF, projected), paired by seed",
    SPARSE_KERNEL_STAGE: "k-NN and label spreading on the top-k neighbour quantum kernel against k, beside their RBF "
                         "control and the dense QSVM where it fits (time and memory per k)",
}
INTERACTIVE = "interactive"  # a run made outside a sweep (a notebook opened by hand)
STAGE_ENV = "QMLNB_STAGE"    # set by the sweep in a kernel's environment to its grid's stage

# ---------------------------------------------------------------- models a run scores beside its own
# QSVM: the classical CNN (the QCNN's network with a linear head instead of the quantum layer, same trainer and
# budget) that tasks.qsvm_run trains and records among its baselines: metrics["baselines"][CNN_BASELINE]
CNN_BASELINE = "cnn"

# ---------------------------------------------------------------- tables (<name>.csv in a run folder)
GRAM_TIMES = "gram_times"        # GRAM: one row per (n_qubits, N)
HISTORY = "history"              # QCNN: one row per epoch (and fold)
FOLDS = "folds"                  # QCNN: one row per fold
KERNEL_SAMPLE = "kernel_sample"  # QSVM: the (n, n) training Gram, samples sorted by class
TIMINGS = "timings"              # QSVM: one row of the pipeline's timings
SCALE_TABLE = "scale"            # SCALE: one row per qubit count (QSVM and RBF scores, diagnostics, Gram time)
SHOTS_TABLE = "shots"            # SHOTS: one row per (qubits, noise rate, shots)
KERNEL_TRAINING_TABLE = "kernel_training"  # KERNEL_TRAINING: one row per model (its history is HISTORY: per step)
POSITIVE_CONTROL_TABLE = "positive_control"  # POSITIVE_CONTROL: one row per (labels, kernel, seed)
SPARSE_KERNEL_TABLE = "sparse_kernel"  # SPARSE_KERNEL: one row per (model, k, seed)
UMAP_TABLE = "umap"                    # SPARSE_KERNEL (with umap): 2-D UMAP of the QCNN's embeddings, one row per image


def check_stage(stage) -> str:
    """``stage`` if it is one of :data:`STAGES`, else a ValueError listing them."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known stages: {', '.join(STAGES)}")
    return stage


def current_stage(default: str | None = None) -> str:
    """The stage of the run in progress: ``$QMLNB_STAGE`` (under a sweep), else ``default`` or ``interactive``."""
    return os.environ.get(STAGE_ENV) or default or INTERACTIVE
