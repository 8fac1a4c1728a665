"""Exact MPS of the ZZ map and their Gram: against state vectors, closed forms, out-of-core and Dask."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap, available_backends, gram
from qmlnb.kernels.mps import MPSStates

MPS_BACKENDS = [name for name in ("cpu", "numba", "openmp") if available_backends()[name][0]]


def dense_reference(S, T=None):
    S = S.astype(np.complex128)
    T = S if T is None else T.astype(np.complex128)
    return np.abs(S @ T.conj().T) ** 2


def features(kind, n, n_qubits, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.uniform(-np.pi, np.pi, (n, n_qubits))
    # real data: sklearn digits, PCA to n_qubits features scaled into [-pi, pi]
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    pixels = load_digits().data[:n]
    reduced = PCA(n_qubits, random_state=seed).fit_transform(pixels)
    return np.pi * reduced / np.abs(reduced).max(axis=0)


@pytest.mark.parametrize("entanglement", ["linear", "circular"])
@pytest.mark.parametrize("reps", [1, 2, 3])
@pytest.mark.parametrize("n_qubits", [1, 2, 3, 6])
def test_mps_contracts_to_the_state_vector(entanglement, reps, n_qubits):
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=0.8)
    X = features("random", 5, n_qubits, seed=n_qubits + reps)
    M = fm.mps(X)
    chi = 4**reps if entanglement == "circular" and n_qubits > 2 else 2**reps
    assert M.shape == (5, n_qubits, 2, chi, chi) and M.tensors.dtype == np.complex64
    np.testing.assert_allclose(M.to_dense(), fm.states(X), atol=3e-6)
    np.testing.assert_allclose(M.norms(), 1.0, atol=1e-6)


@pytest.mark.parametrize("backend", MPS_BACKENDS)
@pytest.mark.parametrize("data", ["random", "digits"])
@pytest.mark.parametrize("entanglement, reps, n_qubits, n", [
    ("linear", 1, 12, 23), ("linear", 2, 14, 23), ("linear", 3, 12, 23), ("linear", 2, 16, 23),
    ("circular", 1, 12, 23), ("circular", 2, 12, 23),
    # bond 64: 13 samples still make a full and a partial tile of 8 (and of 4 in the rectangular Gram), at a
    # third of the pairs (the cpu and numba MPS Grams took 15 s per case at 23 on a quiet 2-core machine)
    ("circular", 3, 9, 13),
])
def test_mps_gram_equals_the_state_vector_gram(backend, data, entanglement, reps, n_qubits, n):
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=0.7)
    X = features(data, n, n_qubits, seed=reps)
    S, M = fm.states(X), fm.mps(X)
    K = gram(M, backend=backend, tile=8)
    assert K.shape == (n, n) and K.dtype == np.float64
    np.testing.assert_allclose(K, dense_reference(S), atol=1e-5)
    np.testing.assert_array_equal(K, K.T)
    Kr = gram(M[:7], M[5:], backend=backend, tile=4, dtype=np.float32)
    assert Kr.shape == (7, n - 5) and Kr.dtype == np.float32
    np.testing.assert_allclose(Kr, dense_reference(S[:7], S[5:]), atol=1e-5)


@pytest.mark.parametrize("backend", MPS_BACKENDS)
def test_product_state_closed_form_at_many_qubits(backend):
    """reps=1 with x_k = pi: every pair angle is 0, the state is a product and the kernel a closed form.

    x_k = pi + d_k: (pi - x_k)(pi - x_k+1) = d_k d_k+1, so with d on every
    other wire only the single-wire phases remain and
    k(x, y) = prod_k cos^2(x_k - y_k) (P(2x) on |+> per wire).
    """
    n = 300
    rng = np.random.default_rng(3)
    X = np.full((6, n), np.pi)
    X[:, ::2] += rng.uniform(-0.3, 0.3, (6, (n + 1) // 2))
    fm = FeatureMap(n_qubits=n, reps=1)
    K = gram(fm.mps(X), backend=backend, tile=4)
    expected = np.prod(np.cos(X[:, None, :] - X[None, :, :]) ** 2, axis=2)
    np.testing.assert_allclose(K, expected, rtol=2e-4, atol=0)


@pytest.mark.parametrize("backend", MPS_BACKENDS)
def test_tiny_kernels_do_not_underflow_on_long_chains(backend):
    """Values far below float32's range (about 1e-80 here) keep their relative accuracy."""
    n = 400
    X = np.full((2, n), np.pi)
    X[1, ::2] += 0.7  # every other wire differs: k = cos^2(0.7)^200
    K = gram(FeatureMap(n_qubits=n, reps=1).mps(X), backend=backend)
    expected = np.cos(0.7) ** (2 * 200)
    assert expected < 1e-40
    np.testing.assert_allclose(K[0, 1], expected, rtol=1e-3)
    # complex64 site tensors: the norm drifts by about 1e-7 per site
    np.testing.assert_allclose(np.diag(K), 1.0, atol=n * 2e-7)


@pytest.mark.parametrize("backend", MPS_BACKENDS)
def test_mps_gram_at_784_qubits_has_unit_diagonal_and_is_symmetric(backend):
    X = features("random", 9, 784, seed=1) * 0.05  # small angles: kernel values that are not all 0
    K = gram(FeatureMap(n_qubits=784, reps=2).mps(X), backend=backend, tile=4)
    np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-4)
    np.testing.assert_array_equal(K, K.T)
    assert np.all(K >= 0) and np.all(K <= 1 + 1e-4)


def test_backends_agree_on_large_n():
    X = features("random", 20, 120, seed=4) * 0.2
    M = FeatureMap(n_qubits=120, reps=2, entanglement="circular").mps(X)
    reference = gram(M, backend="cpu")
    for backend in MPS_BACKENDS:
        np.testing.assert_allclose(gram(M, backend=backend, tile=6), reference, rtol=1e-3, atol=1e-9)


@pytest.mark.parametrize("backend", MPS_BACKENDS)
def test_mps_gram_to_file_resumes(backend, tmp_path):
    fm = FeatureMap(n_qubits=10, reps=2)
    X = features("random", 30, 10, seed=6)
    M = fm.mps(X)
    path = tmp_path / "K.npy"
    K = gram(M, backend=backend, tile=8, out=path)
    assert isinstance(K, np.memmap)
    np.testing.assert_allclose(K, dense_reference(fm.states(X)), atol=1e-5)
    again = gram(M, backend=backend, tile=8, out=path)  # resumes: nothing pending, same file
    np.testing.assert_array_equal(again, K)
    other = fm.mps(X + 0.1)
    with pytest.raises(ValueError, match="different Gram matrix"):
        gram(other, backend=backend, tile=8, out=path)


def test_mps_gram_on_dask():
    distributed = pytest.importorskip("distributed")
    fm = FeatureMap(n_qubits=9, reps=2, entanglement="circular")
    X = features("random", 40, 9, seed=8)
    M = fm.mps(X)
    expected = dense_reference(fm.states(X))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        np.testing.assert_allclose(gram(M, client=client, tile=9), expected, atol=1e-5)
        np.testing.assert_allclose(gram(M[:10], M, client=client, tile=9, dtype=np.float32), expected[:10],
                                   atol=1e-5)
        with distributed.Client(cluster.scheduler_address) as remote:  # tiles travel back over the network
            np.testing.assert_allclose(gram(M, client=remote, tile=16), expected, atol=1e-5)


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "iqp"}, r"kind='iqp'.*state vectors, at most 30 qubits"),
    ({"entanglement": "full"}, r"entanglement='full'.*at most 30 qubits"),
    ({"reps": 5, "entanglement": "circular"}, "bond dimension 1024"),
])
def test_maps_without_a_bounded_mps_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureMap(n_qubits=6, **kwargs).mps(np.zeros((2, 6)))


def test_state_vectors_refuse_many_qubits_and_point_to_mps():
    fm = FeatureMap(n_qubits=31)
    with pytest.raises(ValueError, match=r"state-vector limit of 30 qubits.*FeatureMap\.mps"):
        fm.states(np.zeros((1, 31)))
    assert fm.mps(np.zeros((2, 31))).shape == (2, 31, 2, 4, 4)
    FeatureMap(n_qubits=100_000)  # allowed: only the MPS is built at that size
    with pytest.raises(ValueError, match="n_qubits"):
        FeatureMap(n_qubits=100_001)


def test_bad_mps_operands_are_refused():
    M = FeatureMap(n_qubits=5).mps(np.zeros((3, 5)))
    S = FeatureMap(n_qubits=5).states(np.zeros((3, 5)))
    with pytest.raises(TypeError, match="B must be MPSStates"):
        gram(M, S)
    with pytest.raises(ValueError, match="different numbers of qubits"):
        gram(M, FeatureMap(n_qubits=6).mps(np.zeros((3, 6))))
    from types import SimpleNamespace

    from qmlnb.kernels.gram import check_mps_operands

    with pytest.raises(ValueError, match="backend='torchcuda' has no MPS kernel"):
        check_mps_operands(M, None, "torchcuda", SimpleNamespace(gram=None, CAPABILITIES=frozenset({"states"})))  # dense only
    bad = M.tensors.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        gram(MPSStates(bad))
    scaled = M.tensors.copy()
    scaled[1, 2] *= 2
    with pytest.raises(ValueError, match="not unit vectors"):
        gram(MPSStates(scaled))
    with pytest.raises(ValueError, match="complex64"):
        MPSStates(M.tensors.astype(np.complex128))
    with pytest.raises(ValueError, match=r"shape \(N, n, 2, chi, chi\)"):
        MPSStates(np.zeros((3, 5, 3, 2, 2), dtype=np.complex64))


def test_different_bond_dimensions_are_padded_exactly():
    """A reps=1 and a reps=2 state have different bond dimensions; their overlap is still exact."""
    X = features("random", 4, 7, seed=2)
    one, two = FeatureMap(n_qubits=7, reps=1), FeatureMap(n_qubits=7, reps=2)
    K = gram(one.mps(X), two.mps(X))
    np.testing.assert_allclose(K, dense_reference(one.states(X), two.states(X)), atol=1e-5)
