"""The hybrid QCNN: a CNN, angle encoding, a quantum convolution-and-pooling circuit and a classifier head.

>>> from qmlnb.qcnn import TrainConfig, train_qcnn
>>> result = train_qcnn(splits, TrainConfig(n_qubits=4, epochs=3, mode="sequential"))
>>> result.metrics["balanced_accuracy"], result.model     # test scores, the trained HybridQCNN
>>> train_controls(splits, cfg, heads=HEADS, seeds=(0, 1))  # beside its classical controls, over seeds

The names below are imported on first use (PEP 562), so ``import qmlnb.qcnn.determinism`` (the thread
settings a sweep reads) does not import torch.
"""
from __future__ import annotations

from .._util import lazy_exports

_EXPORTS = {
    "HybridQCNN": "model", "HEADS": "model", "QUANTUM_HEADS": "model",
    "TrainConfig": "train", "TrainResult": "train", "MODES": "train", "train_qcnn": "train", "evaluate": "train",
    "SIMULATORS": "simulators", "make_quantum_layer": "simulators",
    "train_controls": "controls", "compare_simulators": "simulator_speed",
    "THREAD_ENV_VARS": "determinism", "set_threads": "determinism", "training_settings": "determinism",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
