"""FeatureMap.states through the fused C++ kernel (qmlnb._states_openmp) against NumPy and float64 references."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap
from qmlnb.kernels import feature_map as feature_map_module
from statevector64 import states64

_states_openmp = pytest.importorskip("qmlnb._states_openmp", reason="the native state extension is not built")


def numpy_states(fm, X, monkeypatch, **kwargs):
    with monkeypatch.context() as patch:
        patch.setattr(feature_map_module, "_native_states", lambda: None)
        return fm.states(X, **kwargs)


@pytest.mark.parametrize("kind, entanglement, n_qubits, reps", [
    ("zz", "linear", 12, 2), ("zz", "circular", 7, 3), ("zz", "full", 6, 2), ("iqp", "linear", 9, 3),
    ("iqp", "linear", 5, 1), ("zz", "linear", 1, 2), ("zz", "linear", 2, 1), ("zz", "linear", 3, 4),
])
def test_native_states_equal_float64_and_numpy_states(kind, entanglement, n_qubits, reps, monkeypatch):
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, kind=kind, entanglement=entanglement, bandwidth=0.9)
    X = np.random.default_rng(n_qubits + reps).uniform(-np.pi, np.pi, (41, n_qubits))
    S = fm.states(X)
    assert S.shape == (41, 2**n_qubits) and S.dtype == np.complex64 and S.flags.c_contiguous
    np.testing.assert_allclose(S, states64(fm, X), rtol=0, atol=1e-6)
    np.testing.assert_allclose(S, numpy_states(fm, X, monkeypatch), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(S.astype(np.complex128), axis=1), 1.0, atol=1e-6)


def test_large_angles_are_reduced_once_and_stay_accurate():
    """Features of 1e3 give angles of ~1e7: the float64 reduction of the coefficients keeps 1e-6."""
    fm = FeatureMap(n_qubits=8, reps=2, entanglement="circular")
    X = np.random.default_rng(1).uniform(-1e3, 1e3, (9, 8))
    np.testing.assert_allclose(fm.states(X), states64(fm, X), rtol=0, atol=1e-6)


def test_batches_and_threads_do_not_change_states():
    fm = FeatureMap(n_qubits=10, reps=2)
    X = np.random.default_rng(2).uniform(-np.pi, np.pi, (23, 10))
    np.testing.assert_array_equal(fm.states(X), fm.states(X, batch_size=4))
    w, Q, const = fm._phase_form(X)
    one, two = (np.empty((23, 1024), dtype=np.complex64) for _ in range(2))
    _states_openmp.states(w, Q, const, 2, one, 1)
    _states_openmp.states(w, Q, const, 2, two, 2)
    np.testing.assert_array_equal(one, two)


def test_extension_rejects_bad_arrays():
    w, Q, const = np.zeros((2, 3)), np.zeros((2, 3, 3)), np.zeros(2)
    out = np.empty((2, 8), dtype=np.complex64)
    with pytest.raises(ValueError, match="out must have shape"):
        _states_openmp.states(w, Q, const, 1, np.empty((2, 4), dtype=np.complex64), 1)
    with pytest.raises(ValueError, match="complex64"):
        _states_openmp.states(w, Q, const, 1, np.empty((2, 8), dtype=np.complex128), 1)
    with pytest.raises(ValueError, match="float64"):
        _states_openmp.states(w.astype(np.float32), Q, const, 1, out, 1)
    with pytest.raises(ValueError, match=r"Q must have shape"):
        _states_openmp.states(w, np.zeros((2, 2, 3)), const, 1, out, 1)
    with pytest.raises(ValueError, match="reps"):
        _states_openmp.states(w, Q, const, 0, out, 1)
