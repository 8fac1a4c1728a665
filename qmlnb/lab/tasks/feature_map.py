"""The feature-maps stage: a quantum-kernel SVM per feature map (a registry name or a spec file), beside RBF.

A grid names each map by ``feature_map``: a key of :data:`REGISTRY` (built for
the run's ``n_qubits``) or a ``.yaml``/``.json`` file holding a circuit spec
(``Circuit.to_dict``: gate records with angle expressions, see
``qmlnb.kernels.circuit``), relative to the project folder.  Every run records
the map's name and the short hash of its spec (``feature_map_label``:
``name#hash``), so tables tell apart two maps that share a name.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import common
from .spec import BACKEND, CLASSES, DATASET, SEED, Param, TaskSpec
from .. import stages
from ..._util import Interval, IsInstance, project_root
from ...data.angles import pca_angles


def _pauli(n_qubits: int):
    from ...kernels import from_qiskit

    try:
        from qiskit.circuit.library import pauli_feature_map
    except ImportError as err:
        raise common.RunSkipped(f"the 'pauli' feature map needs qiskit (pip install .[compare]): {err}") from err
    qc = pauli_feature_map(n_qubits, paulis=["Z", "XX", "YY", "ZZ", "XY"], entanglement="linear", reps=2)
    return from_qiskit(qc, name="pauli").circuit


def _registry() -> dict:
    from ...kernels.circuit import angle_circuit, iqp_circuit, reuploading_circuit, zz_circuit

    return {
        "zz": lambda n: zz_circuit(n, 2),
        "iqp": lambda n: iqp_circuit(n, 2),
        "angle-y": lambda n: angle_circuit(n, "y", name="angle-y"),
        "reupload": lambda n: reuploading_circuit(n, 3),
        "pauli": _pauli,
    }


REGISTRY = ("zz", "iqp", "angle-y", "reupload", "pauli")  # the names a grid may use (or a spec file)


def resolve_feature_map(feature_map: str, n_qubits: int):
    """A ``CircuitFeatureMap`` from a registry name (built on ``n_qubits`` wires) or a spec file's path."""
    import yaml

    from ...kernels import Circuit, CircuitFeatureMap

    if feature_map in REGISTRY:
        return CircuitFeatureMap(_registry()[feature_map](n_qubits))
    path = Path(feature_map)
    path = path if path.is_absolute() else project_root() / path
    if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
        raise ValueError(f"feature_map must be one of {REGISTRY} or a .yaml/.json circuit spec file, got "
                         f"{feature_map!r}{' (no such file)' if path.suffix in ('.yaml', '.yml', '.json') else ''}")
    circuit = Circuit.from_dict(yaml.safe_load(path.read_text()))
    if circuit.n_features != n_qubits:
        raise ValueError(f"the spec {path.name} reads {circuit.n_features} features but n_qubits={n_qubits} "
                         "PCA features are given")
    return CircuitFeatureMap(circuit)


def feature_map_qsvm(dataset: str = "digits", classes=(3, 8), n_train: int = 120, feature_map: str = "zz",
                     n_qubits: int = 4, bandwidths=(0.25, 0.5, 1.0), backend: str = "cpu", seed: int = 0):
    """QSVM with one feature map on ``n_qubits`` PCA angles, beside the RBF SVM on the same features.

    The bandwidth is the value of ``bandwidths`` with the highest kernel-target
    alignment on the training Gram, C by cross-validation (as ``QuantumKernelSVC``).
    Returns (metrics, {"kernel_sample": the training Gram sorted by class}).
    """
    from ...kernels import gram
    from ...metrics import classification_metrics
    from ...qsvm.baselines import fit_rbf_alignment
    from ...qsvm.svm import fit_precomputed, kernel_target_alignment

    fm = resolve_feature_map(feature_map, n_qubits)
    splits = common.load_data(dataset, classes=classes, n_train=n_train, seed=seed)
    X_train, X_test = pca_angles(splits.X_train, splits.X_test, n_components=n_qubits)
    y_train, y_test = np.asarray(splits.y_train), np.asarray(splits.y_test)
    t0 = time.perf_counter()
    best = None
    alignments = {}
    for b in bandwidths:
        S = fm.with_bandwidth(float(b)).states(X_train)
        K = gram(S, backend=backend)
        alignments[float(b)] = kernel_target_alignment(K, y_train)
        if best is None or alignments[float(b)] > alignments[best[0]]:
            best = (float(b), S, K)
    bandwidth, S_train, K = best
    fit = fit_precomputed(K, y_train, C="auto", seed=seed)
    S_test = fm.with_bandwidth(bandwidth).states(X_test)
    K_test = gram(S_test, S_train, backend=backend)
    predicted, scores = fit.svc.predict(K_test), fit.svc.decision_function(K_test)
    qsvm_s = time.perf_counter() - t0
    rbf = fit_rbf_alignment(X_train, y_train, X_test, y_test, seed=seed)
    metrics = {"task": stages.FEATURE_MAP_TASK, "dataset": dataset, "classes": list(splits.classes),
               "n_train": int(len(y_train)), "n_test": int(len(y_test)), "n_qubits": n_qubits, "seed": seed,
               "backend": backend, "feature_map": fm.name, "feature_map_hash": fm.spec_hash(),
               "feature_map_label": fm.label, "feature_map_gates": len(fm.circuit.gates),
               "feature_map_spec": fm.circuit.to_dict() if all(
                   "func(" not in a for g in fm.circuit.to_dict()["gates"] for a in g.get("angles", [])) else None,
               "states_bytes": int(S_train.nbytes + S_test.nbytes), "bandwidth": bandwidth,
               "alignments": {str(k): v for k, v in alignments.items()}, "C": fit.C,
               "qsvm": classification_metrics(y_test, predicted, scores),
               "baselines": {"rbf_svm_embeddings_alignment": rbf["metrics"]},
               "timings": {"qsvm_s": qsvm_s, "rbf_s": rbf["timings"]["fit"] + rbf["timings"]["predict"]}}
    order = np.argsort(y_train, kind="stable")[:80]
    sample = pd.DataFrame(K[np.ix_(order, order)])
    return metrics, {stages.KERNEL_SAMPLE: sample}


def plot_feature_map_run(metrics: dict, tables: dict):
    """The training Gram heatmap (sorted by class) and the QSVM against the RBF control: one figure."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    image = left.imshow(tables[stages.KERNEL_SAMPLE].to_numpy(), cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(image, ax=left)
    left.set_title(f"{metrics['feature_map_label']}: training Gram (sorted by class)")
    names = ["qsvm", "rbf"]
    values = [metrics["qsvm"]["balanced_accuracy"],
              metrics["baselines"]["rbf_svm_embeddings_alignment"]["balanced_accuracy"]]
    right.bar(names, values, color=["tab:blue", "tab:gray"])
    right.set_ylim(0, 1)
    right.set_ylabel("test balanced accuracy")
    right.set_title(f"{metrics['dataset']} {metrics['classes']}, n={metrics['n_qubits']}")
    fig.tight_layout()
    return fig


SPEC = TaskSpec(
    name=stages.FEATURE_MAP_TASK, notebook="notebooks/50-feature-maps.ipynb",
    params=(DATASET, CLASSES,
            Param("n_train", 120, Interval(int, 1)), Param("n_qubits", 4, Interval(int, 1)),
            Param("feature_map", "reupload", IsInstance(str)), BACKEND,
            SEED),
    metrics=("dataset", "classes", "n_qubits", "seed", "backend", "feature_map", "feature_map_label", "qsvm",
             "qsvm.balanced_accuracy", "baselines", "baselines.rbf_svm_embeddings_alignment.balanced_accuracy",
             "timings", "timings.qsvm_s"),
    tables=(stages.KERNEL_SAMPLE,))
SCORES = SPEC.metric("qsvm")  # the QSVM's test scores with this map
RBF_BALANCED_ACCURACY = SPEC.metric("baselines.rbf_svm_embeddings_alignment.balanced_accuracy")  # the RBF control
