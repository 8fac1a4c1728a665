"""method="auto" | "statevector" | "mps": the choice, and the same classifier either way."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from qmlnb.data import load_splits
from qmlnb.kernels import FeatureMap
from qmlnb.kernels.mps import MPSStates
from qmlnb.qsvm.pipeline import run_qsvm_experiment
from qmlnb.qsvm.svm import QuantumKernelSVC


def digits_features(n_features, classes=(3, 8)):
    data = load_digits()
    keep = np.isin(data.target, classes)
    reduced = PCA(n_features, random_state=0).fit_transform(data.data[keep])
    return np.pi * reduced / np.abs(reduced).max(axis=0), data.target[keep]


def test_auto_keeps_state_vectors_while_they_fit_then_uses_the_mps():
    assert FeatureMap(n_qubits=8).resolve_method(100) == "statevector"
    assert FeatureMap(n_qubits=21).resolve_method(10) == "mps"
    assert FeatureMap(n_qubits=40, entanglement="circular").resolve_method(10) == "mps"
    # no MPS for IQP: auto stays with state vectors, whose own check explains the limit
    assert FeatureMap(n_qubits=40, kind="iqp").resolve_method(10) == "statevector"
    assert FeatureMap(n_qubits=8).resolve_method(100, "mps") == "mps"
    assert FeatureMap(n_qubits=40).resolve_method(100, "statevector") == "statevector"
    with pytest.raises(ValueError, match="kind='iqp'"):
        FeatureMap(n_qubits=8, kind="iqp").resolve_method(10, "mps")
    with pytest.raises(ValueError, match="method must be one of"):
        FeatureMap(n_qubits=8).resolve_method(10, "tensor")


def test_auto_uses_the_mps_when_state_vectors_do_not_fit(monkeypatch):
    from qmlnb.kernels import validation

    monkeypatch.setattr(validation, "available_memory_bytes", lambda: 1 << 20)  # 1 MiB free
    assert FeatureMap(n_qubits=16).resolve_method(1000) == "mps"


def test_the_mps_classifier_equals_the_statevector_one():
    X, y = digits_features(10)
    params = dict(n_qubits=10, bandwidths=(0.2, 0.5), Cs=(0.1, 1.0, 10.0), cv=3)
    dense = QuantumKernelSVC(**params, method="statevector").fit(X[::2], y[::2])
    mps = QuantumKernelSVC(**params, method="mps").fit(X[::2], y[::2])
    assert dense.method_ == "statevector" and mps.method_ == "mps"
    assert isinstance(mps.support_states_, MPSStates)
    np.testing.assert_allclose(mps.train_kernel_, dense.train_kernel_, atol=1e-5)
    assert mps.bandwidth_ == dense.bandwidth_ and mps.C_ == dense.C_
    np.testing.assert_array_equal(mps.predict(X[1::2]), dense.predict(X[1::2]))
    np.testing.assert_allclose(mps.decision_function(X[1::2]), dense.decision_function(X[1::2]), atol=1e-4)


def test_auto_classifies_beyond_the_state_vector_limit():
    X, y = digits_features(40)
    clf = QuantumKernelSVC(n_qubits=40, bandwidth=0.05, C=1.0, backend="openmp").fit(X[::2], y[::2])
    assert clf.method_ == "mps"
    assert (clf.predict(X[1::2]) == y[1::2]).mean() > 0.8


class ProjectionEmbedder(torch.nn.Module):
    """Stand-in for a trained QCNN: PCA of the pixels squashed to angles in (0, pi)."""

    def __init__(self, X_train: np.ndarray, n_out: int):
        super().__init__()
        pca = PCA(n_out, random_state=0).fit(X_train.reshape(len(X_train), -1))
        self.register_buffer("components", torch.tensor(pca.components_.T / np.sqrt(pca.explained_variance_),
                                                        dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(pca.mean_, dtype=torch.float32))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return math.pi * torch.sigmoid((x.flatten(1) - self.mean) @ self.components)


@pytest.mark.parametrize("method, expected", [("auto", "statevector"), ("mps", "mps")])
def test_pipeline_records_the_method(method, expected):
    splits = load_splits("digits", classes=(3, 8), seed=0)
    stand_in = SimpleNamespace(model=ProjectionEmbedder(splits.X_train, 4), metrics={}, timings={})
    result = run_qsvm_experiment(splits, None, dict(bandwidth=0.5, C=1.0, method=method), trained=stand_in,
                                 baselines=())
    assert result["state_method"] == expected
    assert result["qsvm"]["params"]["method"] == method and result["qsvm"]["params"]["method_used"] == expected
