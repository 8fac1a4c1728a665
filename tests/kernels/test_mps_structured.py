"""The openmp MPS kernel's structured path (ZZ zero pattern) against its general path and float64 state vectors."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap, gram
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
    """Relative 5e-5 on every entry above 1e-7 (1e-4 above 1e-30) against the same tensors contracted in
    complex128 and against float64 state vectors; 5e-5 against the general path (the kernel before the
    structured path).

    The tensors are complex64 and the kernel accumulates in float32: a value
    much smaller than its terms (cancellation) is only as accurate as float32
    rounding of those terms, and the two paths round in different orders (the
    register path sums each column's products as its own FMA chain).  Bandwidth
    0.15 keeps the values above about 1e-7 here, where that stays below 5e-5
    (most entries agree to 1e-6, the median to 4e-7 in both paths); the few
    smaller ones (down to 8e-8 at 8 circular qubits) reach 5.3e-5.
    """
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=0.15)
    X = np.random.default_rng(reps + n_qubits).uniform(-np.pi, np.pi, (37, n_qubits))
    M = fm.mps(X).tensors
    S = states64(fm, X)
    reference = np.abs(S @ S.conj().T) ** 2
    fast, general = native_gram(M), native_gram(M, structured=False)
    complex128 = overlap_reference(M, M)
    for kept, rtol in [(reference > 1e-7, 5e-5), (reference > 1e-30, 1e-4)]:
        np.testing.assert_allclose(fast[kept], complex128[kept], rtol=rtol, atol=0)
        np.testing.assert_allclose(fast[kept], reference[kept], rtol=rtol, atol=0)
    np.testing.assert_allclose(fast, general, rtol=5e-5, atol=0)
    rect = native_gram(M[:11], M[4:], tile=5, dtype=np.float32)
    np.testing.assert_allclose(rect, fast[:11, 4:], rtol=1e-5, atol=0)


def test_structured_path_keeps_relative_accuracy_at_784_qubits():
    """Values near 1e-235 (features in [-pi, pi]) and the bandwidth-scaled ones agree with the complex128
    backend to 5e-5 relative, in both paths (784 sites of float32 rounding: 2.6e-5 and 3.4e-5 measured).

    784 sites also take the register path through several chunks of sites (128 per chunk at bond 4).
    """
    X = np.random.default_rng(7).uniform(-np.pi, np.pi, (21, 784))
    for bandwidth, tiny in [(1.0, 1e-100), (0.02, None)]:
        states = FeatureMap(n_qubits=784, reps=2, bandwidth=bandwidth).mps(X)
        M = states.tensors
        fast, general = native_gram(M), native_gram(M, structured=False)
        exact = gram(states, backend="cpu")
        off = fast[~np.eye(21, dtype=bool)]
        if tiny is not None:
            assert 0 < off.max() < tiny  # far below float32's range: only the carried exponents keep them
        np.testing.assert_allclose(fast, exact, rtol=5e-5, atol=0)
        np.testing.assert_allclose(general, exact, rtol=5e-5, atol=0)
        np.testing.assert_allclose(native_gram(M[:9], M[5:], tile=4), exact[:9, 5:], rtol=5e-5, atol=0)
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


def test_circular_bond_16_blocks_over_many_chunks_against_complex128():
    """The ring's 16 blocks of 4 x 4 run through chunks of 32 sites with their own exponents: 150 sites
    (5 chunks, entries 1e-62 to 1e-2) against the complex128 backend.

    Relative 2e-4 on every entry, median 5e-6: 150 sites of float32 rounding with
    cancellation; measured 9.6e-5 / 1.0e-4 worst (median 1.5e-6 / 1.7e-6) on the
    register path and 7.9e-5 / 5.2e-5 on the general one, at bandwidth 1 / 0.1.
    """
    X = np.random.default_rng(11).uniform(-np.pi, np.pi, (19, 150))
    for bandwidth in (1.0, 0.1):
        states = FeatureMap(n_qubits=150, reps=2, entanglement="circular", bandwidth=bandwidth).mps(X)
        exact = gram(states, backend="cpu")
        for K in (native_gram(states.tensors), native_gram(states.tensors, structured=False)):
            np.testing.assert_allclose(K, exact, rtol=2e-4, atol=0)
            assert np.median(np.abs(K - exact) / exact) < 5e-6
        np.testing.assert_allclose(native_gram(states.tensors[:7], states.tensors[3:], tile=3),
                                   exact[:7, 3:], rtol=2e-4, atol=0)


def test_bond_16_tensors_off_the_blocks_take_the_general_path():
    """Random bond-16 tensors, block diagonal in 4 x 4 blocks with the ZZ pattern at the middle sites; one
    sample with one entry outside its block at one site: exact either way (that site goes general)."""
    rng = np.random.default_rng(16)
    chi, n_sites = 16, 7
    shape = (9, n_sites, 2, chi, chi)
    T = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64) / 6
    T[:, 0, :, 1:, :] = 0  # the first site starts from left index 0
    T[:, -1, :, :, 1:] = 0  # the last one ends at right index 0
    block = np.arange(chi) // 4
    off_block = block[:, None] != block[None, :]
    T[:, 1:-1, :, off_block] = 0
    last_bit = np.arange(chi) & 1
    for s in range(2):
        T[:, :, s, :, last_bit != s] = 0
    broken = T.copy()
    broken[5, 3, 1, 2, 9] = 0.3 - 0.2j  # row block 0, column block 2; s = 1 matches the odd column
    for B in (T, broken):
        expected = overlap_reference(T, B)
        np.testing.assert_allclose(native_gram(T, B, tile=4), expected, rtol=2e-5, atol=1e-12)
        np.testing.assert_allclose(native_gram(T, B, structured=False, tile=4), expected, rtol=2e-5, atol=1e-12)
    expected = overlap_reference(broken, broken)
    np.testing.assert_allclose(native_gram(broken, tile=5), expected, rtol=2e-5, atol=1e-12)


def test_fma_rate_counts_thread_cpu_time():
    """The probe's rate is flops per CPU second of its thread: positive, finite, and refusing no work."""
    rate = _mps_openmp.fma_rate(1 << 16)
    assert np.isfinite(rate) and rate > 1e8
    with pytest.raises(ValueError, match="positive"):
        _mps_openmp.fma_rate(0)


@pytest.mark.parametrize("entanglement, reps", [("linear", 2), ("circular", 2), ("linear", 3)])
def test_self_log_overlap_equals_the_state_vector_norms(entanglement, reps):
    """The norms' check (stacked matmuls) against float64 state vectors: unit MPS give log 1, and a site
    tensor scaled by 1.5 in one sample gives log 2.25 there."""
    from qmlnb.kernels.mps import self_log_overlap

    fm = FeatureMap(n_qubits=7, reps=reps, entanglement=entanglement, bandwidth=0.4)
    X = np.random.default_rng(5).uniform(-np.pi, np.pi, (6, 7))
    T = fm.mps(X).tensors.copy()
    np.testing.assert_allclose(self_log_overlap(T), np.log(np.sum(np.abs(states64(fm, X)) ** 2, axis=1)),
                               atol=1e-5)
    T[2, 3] *= 1.5
    expected = np.zeros(6)
    expected[2] = np.log(2.25)
    np.testing.assert_allclose(self_log_overlap(T), expected, atol=1e-5)


@pytest.mark.parametrize("entanglement, reps, n_qubits, n_samples", [
    ("linear", 1, 9, 5), ("linear", 2, 60, 19), ("linear", 3, 7, 8), ("circular", 2, 6, 9), ("circular", 1, 3, 1)])
def test_native_self_log_overlap_equals_numpy(entanglement, reps, n_qubits, n_samples):
    """The native norms' check against the NumPy contraction: equal to 1e-12 (both float64) on unit states, on
    samples scaled at some sites (a group of 8 lanes holding different norms, and a tail group), and on a chain
    long enough that the environment is rescaled many times; any thread count gives the same values."""
    from qmlnb.kernels.mps import self_log_overlap

    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=0.4)
    X = np.random.default_rng(n_qubits).uniform(-np.pi, np.pi, (n_samples, n_qubits))
    T = fm.mps(X).tensors.copy()
    T[::3, n_qubits // 2] *= 1.5
    T[1::4, 0] *= 0.25
    expected = self_log_overlap(T)
    assert np.ptp(expected) > 0.5 or n_samples == 1
    for threads in (1, 3):
        np.testing.assert_allclose(_mps_openmp.self_log_overlap(T, threads), expected, rtol=0, atol=1e-12)


def test_native_self_log_overlap_keeps_tiny_and_general_tensors():
    """Site tensors without the ZZ zero pattern (random dense complex64) and norms far below float64's range
    (every site scaled by 1e-3 on 400 sites: log <a|a> about -5500) agree with NumPy's rescaled contraction."""
    from qmlnb.kernels.mps import self_log_overlap

    rng = np.random.default_rng(3)
    T = (rng.standard_normal((11, 400, 2, 4, 4)) + 1j * rng.standard_normal((11, 400, 2, 4, 4))).astype(np.complex64)
    T *= np.float32(1e-3)
    expected = self_log_overlap(T)
    assert expected.max() < -1000
    np.testing.assert_allclose(_mps_openmp.self_log_overlap(T, 2), expected, rtol=1e-12, atol=0)
    odd = (rng.standard_normal((5, 6, 2, 3, 3)) + 1j * rng.standard_normal((5, 6, 2, 3, 3))).astype(np.complex64)
    np.testing.assert_allclose(_mps_openmp.self_log_overlap(odd, 2), self_log_overlap(odd), rtol=1e-12, atol=0)


def test_native_self_log_overlap_flags_non_finite_samples_and_gram_refuses_them():
    """A NaN or an infinite entry gives NaN in that sample only, and gram(backend="openmp") refuses such an
    operand with the same error as the other backends (its norms' check is the finiteness check)."""
    fm = FeatureMap(n_qubits=6, reps=2)
    X = np.random.default_rng(1).uniform(-np.pi, np.pi, (10, 6))
    M = fm.mps(X)
    T = M.tensors.copy()
    T[3, 2, 1, 1, 1] = np.nan
    T[9, 5, 0, 0, 0] = np.inf
    logs = _mps_openmp.self_log_overlap(T, 2)
    assert np.isnan(logs[[3, 9]]).all() and np.isfinite(np.delete(logs, [3, 9])).all()
    from qmlnb.kernels import MPSStates

    for backend in ("openmp", "cpu"):
        with pytest.raises(ValueError, match="B contains NaN or infinite"):
            gram(M, MPSStates(T), backend=backend)
    with pytest.raises(ValueError, match="tensors must have shape"):
        _mps_openmp.self_log_overlap(np.zeros((2, 3, 2, 2), np.complex64), 1)
    with pytest.raises(ValueError, match="positive"):
        _mps_openmp.self_log_overlap(T, 0)


def test_openmp_gram_uses_the_native_norms_check(monkeypatch):
    """gram on MPS with the openmp backend checks the norms with the native routine (NumPy's is not called),
    and a wrongly scaled sample is still refused."""
    import importlib

    gram_module = importlib.import_module("qmlnb.kernels.gram")  # the module (the package exports the function)

    def refuse(*_):
        raise AssertionError("NumPy's self_log_overlap was called")

    monkeypatch.setattr(gram_module, "self_log_overlap", refuse)
    fm = FeatureMap(n_qubits=8, reps=2)
    X = np.random.default_rng(2).uniform(-np.pi, np.pi, (12, 8))
    M = fm.mps(X)
    K = gram(M, backend="openmp")
    np.testing.assert_allclose(np.diag(K), 1.0, rtol=1e-5)
    T = M.tensors.copy()
    T[4, 1] *= 2
    from qmlnb.kernels import MPSStates

    with pytest.raises(ValueError, match="not unit vectors"):
        gram(MPSStates(T), backend="openmp")
