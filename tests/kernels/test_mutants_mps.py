"""Behaviours of the MPS kernels that mutation testing found unpinned (``make mutate``, docs/contributing.md).

Each test names the promise it keeps: the validation of ``MPSStates``, the norms and overlaps through the
per-site rescaling (a zero state included), the memory bounds the Gram checks before it starts, and the
backends' MPS entry points (thread limits, the lower triangle, the missing extension).
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap
from qmlnb.kernels.backends import cpu_blas
from qmlnb.kernels.mps import (MPSStates, check_mps, column_tables, paired_log_overlaps, self_log_overlap,
                               self_overlap_work_bytes)


def small_mps(n_samples=5, n_qubits=4, reps=2, seed=0):
    X = np.random.default_rng(seed).uniform(-np.pi, np.pi, (n_samples, n_qubits))
    return FeatureMap(n_qubits=n_qubits, reps=reps, entanglement="linear", bandwidth=0.9).mps(X)


def dense_kernel(M, N=None):
    S = M.to_dense()
    T = S if N is None else N.to_dense()
    return np.abs(S.conj() @ T.T) ** 2


# ---------------------------------------------------------------- MPSStates: validation, pickling, indexing
@pytest.mark.parametrize("shape", [(0, 3, 2, 2, 2), (2, 0, 2, 2, 2), (2, 3, 2, 0, 0)])
def test_mps_states_refuse_an_empty_axis(shape):
    with pytest.raises(ValueError, match=r"MPSStates.tensors is empty \(shape \(" + str(shape[0])):
        MPSStates(np.zeros(shape, dtype=np.complex64))


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 3, 2, 2), np.complex64), np.zeros((2, 3, 2, 2, 4), np.complex64),
                                 np.zeros((2, 3, 2, 2), np.complex64), [[0j]]])
def test_mps_states_refuse_a_wrong_shape_naming_it(bad):
    shape = getattr(bad, "shape", None)
    with pytest.raises(ValueError, match=r"must be an array of shape \(N, n, 2, chi, chi\), got shape "
                                         + (r"\(" if shape else "None")):
        MPSStates(bad)


def test_mps_states_refuse_other_dtypes_and_layouts_naming_which():
    with pytest.raises(ValueError, match=r"C-contiguous complex64, got complex128$"):
        MPSStates(np.zeros((2, 3, 2, 2, 2), np.complex128))
    strided = np.zeros((2, 3, 2, 2, 4), np.complex64)[..., ::2]
    with pytest.raises(ValueError, match=r"got complex64 \(not C-contiguous\)$"):
        MPSStates(strided)


def test_unpickled_mps_states_carry_numpy_s_own_complex64_descriptor():
    M = small_mps()
    copy = pickle.loads(pickle.dumps(M))
    # pickled as MPSStates(tensors): validated again, with NumPy's descriptor object (native code compares it)
    assert type(copy) is MPSStates and copy.tensors.dtype is np.dtype(np.complex64)
    np.testing.assert_array_equal(copy.tensors, M.tensors)
    assert M.__reduce__()[0] is MPSStates


def test_mps_states_index_by_samples_only():
    M = small_mps(n_samples=6)
    assert len(M) == 6 == M.n_samples
    np.testing.assert_array_equal(M[np.array([4, 1])].tensors, M.tensors[[4, 1]])
    mask = np.array([True, False, False, True, False, True])
    np.testing.assert_array_equal(M[mask].tensors, M.tensors[mask])
    np.testing.assert_array_equal(M[[5]].tensors, M.tensors[5:6])
    for rows in (np.array([[0, 1]]), np.array([0.0, 1.0]), ["a"]):
        with pytest.raises(TypeError, match=r"indexed by samples only \(M\[i0:i1\] or M\[indices\]\), got"):
            M[rows]


def test_to_dense_takes_up_to_20_qubits():
    M = small_mps(n_samples=1, n_qubits=20, reps=1)
    assert M.to_dense().shape == (1, 2**20)
    with pytest.raises(ValueError, match=r"2\*\*n amplitudes per sample; refusing n_qubits=21 > 20"):
        small_mps(n_samples=1, n_qubits=21, reps=1).to_dense()


def test_norms_are_the_square_root_of_the_self_overlap():
    M = small_mps(n_samples=3)
    t = M.tensors.copy()
    t[1, 2] *= 3.0  # one site of sample 1 scaled: its norm is 3
    t[2, 0] *= 0.25
    np.testing.assert_allclose(MPSStates(t).norms(), [1.0, 3.0, 0.25], rtol=1e-5)


def test_check_mps_names_the_operand_and_finds_nan_in_either_part():
    M = small_mps()
    assert check_mps(M, "A") is M
    with pytest.raises(TypeError, match=r"^B must be MPSStates \(FeatureMap.mps\) when the other operand is, "
                                        r"got ndarray$"):
        check_mps(M.tensors, "B")
    for value in (complex(np.nan, 0), complex(0, np.inf)):
        t = M.tensors.copy()
        t[2, 1, 0, 0, 0] = value
        with pytest.raises(ValueError, match=r"^A contains NaN or infinite MPS tensor entries$"):
            check_mps(MPSStates(t), "A")


@pytest.mark.parametrize("entanglement, n_qubits", [("linear", 1), ("linear", 2), ("linear", 5), ("circular", 5)])
def test_end_sites_use_only_bond_index_0(entanglement, n_qubits):
    """The padding MPSStates documents: site 0 only left index 0, site n-1 only right index 0 (the overlaps
    start from e_0 e_0^T and end at E[0, 0], so these entries are zero, never just unread)."""
    X = np.random.default_rng(n_qubits).uniform(-np.pi, np.pi, (3, n_qubits))
    t = FeatureMap(n_qubits=n_qubits, reps=2, entanglement=entanglement, bandwidth=0.9).mps(X).tensors
    assert t.shape[3] > 1
    assert not t[:, 0, :, 1:, :].any() and not t[:, -1, :, :, 1:].any()
    assert np.abs(t[:, 0, :, 0, :]).max() > 0.1 and np.abs(t[:, -1, :, :, 0]).max() > 0.1


# ---------------------------------------------------------------- overlaps: tables, zero states, batches
@pytest.mark.parametrize("reps", [1, 2, 3, 4])
def test_column_tables_count_bits_signs_and_differences_as_documented(reps):
    popcount, sign, last, hamming = column_tables(reps)
    for beta in range(2**reps):
        bits = [(beta >> (reps - 1 - layer)) & 1 for layer in range(reps)]  # layer 1 most significant
        assert popcount[beta] == sum(bits) and last[beta] == bits[-1]
        flips = sum(b * p for b, p in zip(bits, [0] + bits[:-1]))
        assert sign[beta] == (-1.0) ** flips
        for alpha in range(2**reps):
            assert hamming[alpha, beta] == bin(alpha ^ beta).count("1")


@pytest.mark.filterwarnings("error")  # log(0) is taken on purpose, with NumPy's divide warning silenced
def test_a_zero_state_has_zero_overlaps_not_nan():
    """A site of zeros makes the environment exactly 0: its scale is taken as 1 (log 0), never divided by."""
    M = small_mps(n_samples=3)
    t = M.tensors.copy()
    t[1, 2] = 0.0
    log_self = self_log_overlap(t)
    assert log_self[1] == -np.inf and np.isfinite(log_self[[0, 2]]).all()
    overlap, log_scale = paired_log_overlaps(t, t[::-1].copy())
    assert overlap[1] == 0 and np.isfinite(log_scale).all() and np.isfinite(overlap).all()
    out = np.full((3, 3), -1.0)
    cpu_blas.gram_mps(MPSStates(t), out=out, tile=2, n_threads=1)
    expected = dense_kernel(M)
    expected[1, :] = expected[:, 1] = 0.0
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_self_log_overlap_in_batches_equals_one_batch(monkeypatch):
    import qmlnb.kernels.mps as mps

    M = small_mps(n_samples=7)
    t = M.tensors.copy()
    t[:, 1] *= np.linspace(0.5, 2.0, 7, dtype=np.float32)[:, None, None, None]
    whole = self_log_overlap(t)
    np.testing.assert_allclose(whole, 2 * np.log(np.linspace(0.5, 2.0, 7)), atol=1e-5)
    per_sample = mps._self_overlap_batch(t.shape[3])[1]
    monkeypatch.setattr(mps, "SELF_OVERLAP_WORK_BYTES", 3 * per_sample)  # batches of 3, 3 and 1
    assert mps._self_overlap_batch(t.shape[3])[0] == 3
    np.testing.assert_array_equal(self_log_overlap(t), whole)
    monkeypatch.setattr(mps, "SELF_OVERLAP_WORK_BYTES", 1)  # less than one sample: still one at a time
    assert mps._self_overlap_batch(t.shape[3])[0] == 1
    np.testing.assert_array_equal(self_log_overlap(t), whole)


def test_self_log_overlap_batches_by_samples_within_the_budget(monkeypatch):
    """The batches hold as many samples as the budget allows (counted on axis 0, not the sites)."""
    import qmlnb.kernels.mps as mps

    t = small_mps(n_samples=7, n_qubits=2).tensors
    inner, sizes = mps._self_log_overlap, []

    def spy(batch):
        sizes.append(batch.shape[0])
        return inner(batch)

    monkeypatch.setattr(mps, "_self_log_overlap", spy)
    monkeypatch.setattr(mps, "SELF_OVERLAP_WORK_BYTES", 3 * mps._self_overlap_batch(t.shape[3])[1])
    self_log_overlap(t)
    assert sizes == [3, 3, 1]
    sizes.clear()
    self_log_overlap(t[:3])
    assert sizes == [3]


# ---------------------------------------------------------------- memory bounds checked before the work starts
@pytest.mark.parametrize("chi", [1, 4, 16, 256])
def test_self_overlap_work_is_the_documented_arrays(chi):
    """Per sample: two sites (2, chi, chi) and their half-contraction in complex128 (32 chi^2 each), the old and
    new environments and one product (16 chi^2 each); as many samples per batch as fit in the budget."""
    from qmlnb.kernels.mps import SELF_OVERLAP_WORK_BYTES

    per_sample = 3 * 32 * chi * chi + 3 * 16 * chi * chi
    rows = max(1, SELF_OVERLAP_WORK_BYTES // per_sample)
    assert self_overlap_work_bytes(10**6, chi) == min(10**6, rows) * per_sample
    assert self_overlap_work_bytes(2, chi) == min(2, rows) * per_sample


def documented_mps_peak(N, n, chi, columns, pairs):
    """``mps_peak_bytes`` from its docstring's arrays, one term per array (float64: 8 bytes, complex128: 16)."""
    gates = n + pairs
    features = 2 * N * n * 8  # X as given and its validated float64 copy, (N, n) each
    # computing the angles: the scaled copy (N, n); x_i, x_j and pi minus each (N, pairs); the stacked angles and
    # their double (N, gates)
    angles = 8 * N * n + 4 * 8 * N * pairs + 2 * 8 * N * gates
    # building the MPS: the angles still held (N, gates), the complex64 tensors (N, n, 2, chi, chi) stored as 8 bytes
    # per entry, and per sample one site's complex128 work: 6 (columns, columns), 2 (chi, chi) and 3 (columns,)
    held = 8 * N * gates
    tensors = 8 * N * n * 2 * chi * chi
    work = 16 * N * (6 * columns**2 + 2 * chi**2 + 3 * columns)
    return features + max(angles, held + tensors + work)


@pytest.mark.parametrize("N, n, chi, columns, pairs", [
    (3, 100, 1, 1, 99),      # no bond: the angles' phase is the larger
    (7, 5, 2, 2, 4),         # reps 1, linear: the MPS phase is the larger
    (11, 6, 4, 4, 6),        # reps 2, circular
    (2, 1000, 1, 2, 999),    # many qubits, a small bond: the angles' phase again
])
def test_mps_peak_bytes_is_the_larger_phase_of_the_documented_arrays(N, n, chi, columns, pairs):
    from qmlnb.kernels.mps import mps_peak_bytes

    expected = documented_mps_peak(N, n, chi, columns, pairs)
    assert mps_peak_bytes(N, n, chi, columns, pairs) == expected
    # each term counts: one sample more, a wider bond or more columns all change it as documented
    assert mps_peak_bytes(N + 1, n, chi, columns, pairs) == documented_mps_peak(N + 1, n, chi, columns, pairs)
    assert mps_peak_bytes(N, n, 2 * chi, columns, pairs) == documented_mps_peak(N, n, 2 * chi, columns, pairs)
    assert mps_peak_bytes(N, n, chi, 2 * columns, pairs) == documented_mps_peak(N, n, chi, 2 * columns, pairs)


def test_mps_peak_bytes_counts_the_circular_pairs_by_default():
    """``n_pairs`` defaults to ``n_qubits`` (the circular ring), not to the linear chain's ``n_qubits - 1``."""
    from qmlnb.kernels.mps import mps_peak_bytes

    for N, n, chi, columns in [(3, 100, 1, 1), (7, 5, 2, 2), (4, 8, 4, 4)]:
        assert mps_peak_bytes(N, n, chi, columns) == mps_peak_bytes(N, n, chi, columns, n)
        assert mps_peak_bytes(N, n, chi, columns) == documented_mps_peak(N, n, chi, columns, n)
        assert mps_peak_bytes(N, n, chi, columns, n - 1) < mps_peak_bytes(N, n, chi, columns)


@pytest.mark.parametrize("chi", [1, 2, 16, 64, 4096])
def test_cpu_mps_tile_keeps_one_tile_within_the_work_budget(chi):
    pair = (16 + 32 + 16 + 8 + 8) * chi * chi  # environment, half-contraction, next environment, moduli, slack
    assert cpu_blas.mps_pair_bytes(chi) == pair
    edge = cpu_blas.mps_tile(10**6, chi)
    assert edge >= 1 and (edge == 1 or edge**2 * pair <= cpu_blas.MPS_WORK_BYTES < (edge + 1) ** 2 * pair)
    assert cpu_blas.mps_tile(3, chi) == min(3, edge)
    ti, tj = min(edge, 5), min(edge, 10**6)
    assert cpu_blas.mps_work_bytes(10**6, 5, 10**6, chi) == ti * tj * pair + (ti + tj) * 2 * chi * chi * 16


# ---------------------------------------------------------------- the backends' MPS entry points
def test_kernel_from_log_squares_the_modulus_in_logs():
    dest = np.empty(3, dtype=np.float32)
    cpu_blas.kernel_from_log(np.array([0.5j, -2.0, 0.0]), np.array([0.0, -1.0, 5.0]), dest)
    np.testing.assert_allclose(dest, [0.25, 4.0 * np.exp(-2.0), 0.0], rtol=1e-6)
    dest64 = np.empty(2)  # exp(-700): below float32's range, within float64's; exp(-800): below its subnormals, 0
    cpu_blas.kernel_from_log(np.array([1.0, 1.0]), np.array([-350.0, -400.0]), dest64)
    np.testing.assert_allclose(dest64, [np.exp(-700.0), 0.0], rtol=1e-12, atol=0)


def test_cpu_mps_gram_without_mirror_leaves_the_lower_triangle_unwritten():
    M = small_mps(n_samples=6)
    out = np.full((6, 6), -7.0)
    cpu_blas.gram_mps(M, out=out, tile=2, n_threads=1, mirror=False)
    upper = np.triu_indices(6)
    np.testing.assert_allclose(out[upper], dense_kernel(M)[upper], atol=1e-6)
    # only upper tiles are computed (a diagonal tile whole): the entries of tiles below them stay as they were
    rows, cols = np.indices((6, 6))
    assert (out[rows // 2 > cols // 2] == -7.0).all()
    cpu_blas.gram_mps(M, out=out, tile=4, n_threads=1)
    np.testing.assert_allclose(out, dense_kernel(M), atol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "openmp"])
def test_mps_gram_of_two_operands_pairs_a_with_b(backend):
    """Rectangular Grams: fewer samples in B than in A but more than sites (4), tiles that divide neither count."""
    if backend == "openmp":
        pytest.importorskip("qmlnb._mps_openmp", reason="the native MPS extension is not built")
    from qmlnb.kernels.backends import openmp_native

    module = cpu_blas if backend == "cpu" else openmp_native
    A, B = small_mps(n_samples=7, seed=3), small_mps(n_samples=5, seed=4)
    out = np.full((7, 5), -1.0)
    module.gram_mps(A, B, out=out, tile=2, n_threads=1)
    np.testing.assert_allclose(out, dense_kernel(A, B), atol=1e-6)
    square = np.full((7, 7), -1.0)
    module.gram_mps(A, out=square, tile=3, n_threads=2)
    np.testing.assert_allclose(square, dense_kernel(A), atol=1e-6)


def test_cpu_mps_gram_caps_the_blas_threads(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="the BLAS thread cap is threadpoolctl's")
    seen = []
    inner = cpu_blas.mps_log_overlaps

    def spy(a, b):
        seen.extend(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
        return inner(a, b)

    monkeypatch.setattr(cpu_blas, "mps_log_overlaps", spy)
    cpu_blas.gram_mps(small_mps(n_samples=3), out=np.empty((3, 3)), tile=8, n_threads=1)
    if not seen:
        pytest.skip("no BLAS library that threadpoolctl can see")
    assert set(seen) == {1}


def test_numba_mps_gram_restores_the_thread_count_and_refuses_more_than_the_pool():
    numba = pytest.importorskip("numba", reason="the numba backend")
    from qmlnb.kernels.backends import numba_jit

    M = small_mps(n_samples=5)
    pool = numba.config.NUMBA_NUM_THREADS
    with pytest.raises(ValueError, match=rf"^n_threads={pool + 1} exceeds numba's thread pool of {pool}$"):
        numba_jit.gram_mps(M, out=np.empty((5, 5)), tile=2, n_threads=pool + 1)
    before = numba.get_num_threads()
    out = np.full((5, 5), -1.0)
    numba_jit.gram_mps(M, out=out, tile=2, n_threads=1)
    assert numba.get_num_threads() == before
    np.testing.assert_allclose(out, dense_kernel(M), atol=1e-6)
    rect = np.empty((2, 5))
    numba_jit.gram_mps(M[3:], M, out=rect, tile=2, n_threads=pool)
    np.testing.assert_allclose(rect, dense_kernel(M[3:], M), atol=1e-6)


def test_openmp_mps_gram_names_the_install_step_when_the_extension_is_missing(monkeypatch):
    import sys

    import qmlnb
    from qmlnb.kernels.backends import openmp_native
    from qmlnb.kernels.registry import BackendUnavailableError

    # the import fails as if the extension were not built (also when an earlier test imported it)
    monkeypatch.setitem(sys.modules, "qmlnb._mps_openmp", None)
    monkeypatch.delattr(qmlnb, "_mps_openmp", raising=False)
    with pytest.raises(BackendUnavailableError, match=r"qmlnb\._mps_openmp is not built \(.*\); to enable it: "
                                                      r"build the extension: pip install -e \."):
        openmp_native.gram_mps(small_mps(), out=np.empty((5, 5)), tile=2, n_threads=1)
