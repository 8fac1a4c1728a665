"""The openmp MPS kernel's structured path (ZZ zero pattern) against its general path and float64 state vectors."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap
from statevector64 import states64

_mps_openmp = pytest.importorskip("qmlnb._mps_openmp", reason="the native MPS extension is not built")


def native_gram(A, B=None, *, structured=True, tile=8, n_threads=2, dtype=np.float64):
    out = np.empty((A.shape[0], (A if B is None else B).shape[0]), dtype=dtype)
    _mps_openmp.gram(A, B, out, tile, n_threads, structured)
    return out


def overlap_reference(A, B):
    """(N, M) float64 |<a|b>|^2 of site tensors, contracted in complex128 (no rescaling: short chains only)."""
    A, B = A.astype(np.complex128), B.astype(np.complex128)
    chi = A.shape[3]
    env = np.zeros((A.shape[0], B.shape[0], chi, chi), dtype=np.complex128)
    env[:, :, 0, 0] = 1.0
    for k in range(A.shape[1]):
        env = np.einsum("isxp,ijxy,jsyc->ijpc", A[:, k].conj(), env, B[:, k])
    return np.abs(env[:, :, 0, 0]) ** 2


CASES = [("linear", 1, 12), ("linear", 2, 12), ("linear", 3, 9), ("circular", 1, 10), ("circular", 2, 8),
         ("linear", 2, 1), ("linear", 2, 2), ("circular", 2, 3)]


@pytest.mark.parametrize("entanglement, reps, n_qubits", CASES)
def test_structured_path_equals_the_general_path_and_float64_states(entanglement, reps, n_qubits):
    """Relative 5e-5 on every entry above 1e-30 against the same tensors contracted in complex128 and
    against float64 state vectors; 1e-6 against the general path (the kernel before the structured path).

    The tensors are complex64 and the kernel accumulates in float32: a value
    much smaller than its terms (cancellation) is only as accurate as float32
    rounding of those terms.  Bandwidth 0.15 keeps the values above about
    1e-7 here, where that stays below 5e-5 (most entries agree to 1e-6).
    """
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=0.15)
    X = np.random.default_rng(reps + n_qubits).uniform(-np.pi, np.pi, (37, n_qubits))
    M = fm.mps(X).tensors
    S = states64(fm, X)
    reference = np.abs(S @ S.conj().T) ** 2
    fast, general = native_gram(M), native_gram(M, structured=False)
    kept = reference > 1e-30
    np.testing.assert_allclose(fast[kept], overlap_reference(M, M)[kept], rtol=5e-5, atol=0)
    np.testing.assert_allclose(fast[kept], reference[kept], rtol=5e-5, atol=0)
    np.testing.assert_allclose(fast, general, rtol=1e-6, atol=0)
    rect = native_gram(M[:11], M[4:], tile=5, dtype=np.float32)
    np.testing.assert_allclose(rect, general[:11, 4:], rtol=1e-5, atol=0)


def test_structured_path_keeps_relative_accuracy_at_784_qubits():
    """Values near 1e-235 (features in [-pi, pi]) and the bandwidth-scaled ones agree with the general path."""
    X = np.random.default_rng(7).uniform(-np.pi, np.pi, (20, 784))
    for bandwidth, tiny in [(1.0, 1e-100), (0.02, None)]:
        M = FeatureMap(n_qubits=784, reps=2, bandwidth=bandwidth).mps(X).tensors
        fast, general = native_gram(M), native_gram(M, structured=False)
        off = fast[~np.eye(20, dtype=bool)]
        if tiny is not None:
            assert 0 < off.max() < tiny  # far below float32's range: only the carried exponents keep them
        np.testing.assert_allclose(fast, general, rtol=1e-5, atol=0)
        np.testing.assert_allclose(np.diag(fast), 1.0, atol=1e-3)


def test_circular_bond_16_with_reps_1_padding_mixes_bond_dimensions():
    """A reps=1 circular MPS padded to bond 16 against a reps=2 one: both structured, still exact."""
    X = np.random.default_rng(3).uniform(-np.pi, np.pi, (9, 7))
    small = FeatureMap(n_qubits=7, reps=1, entanglement="circular", bandwidth=0.3)
    big = FeatureMap(n_qubits=7, reps=2, entanglement="circular", bandwidth=0.3)
    a = small.mps(X).tensors
    padded = np.zeros(a.shape[:3] + (16, 16), dtype=np.complex64)
    padded[..., :4, :4] = a
    value = native_gram(padded, big.mps(X).tensors)
    S, T = states64(small, X), states64(big, X)
    np.testing.assert_allclose(value, np.abs(S @ T.conj().T) ** 2, rtol=1e-5, atol=0)


@pytest.mark.parametrize("chi", [2, 4, 5, 8])
def test_tensors_without_the_pattern_take_the_general_path(chi):
    """Random tensors with the pattern at most sites and one sample breaking it at one site: exact either way."""
    rng = np.random.default_rng(chi)
    n_sites = 6
    shape = (10, n_sites, 2, chi, chi)
    T = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64) / chi
    T[:, 0, :, 1:, :] = 0  # the first site starts from left index 0
    last_bit = np.arange(chi) & 1
    for s in range(2):
        T[:, :, s, :, last_bit != s] = 0  # the ZZ pattern: s is the last bit of the right index
    broken = T.copy()
    broken[6, 3, 0, 1, 1] = 0.5 + 0.25j  # s = 0 with an odd right index, in one sample of B only
    for B in (T, broken):
        expected = overlap_reference(T, B)
        np.testing.assert_allclose(native_gram(T, B, tile=4), expected, rtol=2e-5, atol=1e-12)
        np.testing.assert_allclose(native_gram(T, B, structured=False, tile=4), expected, rtol=2e-5, atol=1e-12)
    dense = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64) / chi
    np.testing.assert_allclose(native_gram(dense, dense[:4]), overlap_reference(dense, dense[:4]), rtol=2e-5,
                               atol=1e-12)
