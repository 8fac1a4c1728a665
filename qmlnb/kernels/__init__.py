"""Quantum fidelity kernels: feature-map states and their Gram matrices.

>>> from qmlnb.kernels import FeatureMap, gram
>>> S = FeatureMap(n_qubits=4).states(X)      # (N, 16) complex64
>>> K = gram(S, backend="cpu")                 # (N, N) float64
>>> M = FeatureMap(n_qubits=200).mps(X)       # exact MPS (ZZ, linear/circular): any n
>>> K = gram(M, backend="openmp")              # same entry point
>>> K = gram(S, shots=4096, seed=0)            # as a device estimates it (qmlnb.kernels.shots)
>>> fm = from_qiskit(PauliFeatureMap(12))        # any circuit: CircuitFeatureMap, same interface
>>> F = projected_features(fm, X)               # (N, 3n) one-qubit Bloch vectors (state vectors or MPS)
>>> K = projected_gram(F, gamma=projected_gamma(F))   # the projected quantum kernel (Huang et al. 2021)
>>> A = sparse_gram(S, k=32)                     # top-k neighbours only: scipy CSR (qmlnb.kernels.sparse)
"""
from .circuit import Circuit, Gate, parse
from .circuit_map import CircuitFeatureMap, TruncationWarning
from .feature_map import FeatureMap
from .interop import from_pennylane, from_qiskit
from .gram import gram
from .mps import MPSStates
from .noise import DeviceNoise, repair_psd
from .projected import (bloch_features, bloch_features_mps, projected_features, projected_gamma, projected_gram,
                        rbf_gram)
from .sparse import sparse_gram
from .registry import (
    BackendError,
    BackendUnavailableError,
    UnknownBackendError,
    available_backends,
    check_backend,
)
from .validation import InsufficientMemoryError

__all__ = [
    "FeatureMap",
    "Circuit",
    "Gate",
    "parse",
    "CircuitFeatureMap",
    "TruncationWarning",
    "from_qiskit",
    "from_pennylane",
    "gram",
    "sparse_gram",
    "MPSStates",
    "DeviceNoise",
    "repair_psd",
    "bloch_features",
    "bloch_features_mps",
    "projected_features",
    "projected_gamma",
    "projected_gram",
    "rbf_gram",
    "available_backends",
    "check_backend",
    "BackendError",
    "BackendUnavailableError",
    "UnknownBackendError",
    "InsufficientMemoryError",
]
