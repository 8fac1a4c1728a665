"""The projected quantum kernel: Bloch features from state vectors and MPS, its Gram paths, sQUlearn's equal."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.kernels import (Circuit, CircuitFeatureMap, FeatureMap, MPSStates, bloch_features, bloch_features_mps,
                           projected_features, projected_gamma, projected_gram, rbf_gram)
from qmlnb.kernels.circuit import x, zz_circuit


def angles(n_samples, n, seed=0):
    return np.random.default_rng(seed).uniform(0, np.pi, (n_samples, n))


def product_states(theta, phi):
    """(N, 2**n) state vectors and chi=1 MPS of prod_k (cos(t_k/2)|0> + e^{i p_k} sin(t_k/2)|1>), and the Bloch vectors
    (sin t cos p, sin t sin p, cos t) they must have."""
    n_samples, n = theta.shape
    single = np.stack([np.cos(theta / 2), np.exp(1j * phi) * np.sin(theta / 2)], axis=-1)  # (N, n, 2)
    S = single[:, 0]
    for k in range(1, n):
        S = (S[:, :, None] * single[:, k, None, :]).reshape(n_samples, -1)  # wire 0 most significant
    tensors = np.ascontiguousarray(single[:, :, :, None, None].astype(np.complex64))
    bloch = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1)
    return S.astype(np.complex64), MPSStates(tensors), bloch.reshape(n_samples, 3 * n)


def test_product_states_have_their_closed_form_bloch_vectors():
    rng = np.random.default_rng(1)
    theta, phi = rng.uniform(0, np.pi, (7, 5)), rng.uniform(-np.pi, np.pi, (7, 5))
    S, M, expected = product_states(theta, phi)
    np.testing.assert_allclose(bloch_features(S), expected, atol=1e-6)
    np.testing.assert_allclose(bloch_features_mps(M), expected, atol=1e-6)


def test_projected_gram_is_the_frobenius_distance_of_reduced_density_matrices():
    """k = exp(-gamma sum_k ||rho_k - rho_k'||_F^2) with rho_k built as 2x2 matrices from the partial trace."""
    fm = FeatureMap(n_qubits=4, reps=2)
    S = fm.states(angles(6, 4)).astype(np.complex128)
    rhos = []
    for k in range(4):
        psi = S.reshape(6, 2**k, 2, 2 ** (3 - k))
        rhos.append(np.einsum("nasb,natb->nst", psi, psi.conj()))
    rho = np.stack(rhos, axis=1)  # (N, n, 2, 2)
    distance = np.sum(np.abs(rho[:, None] - rho[None, :]) ** 2, axis=(2, 3, 4))
    K = projected_gram(bloch_features(S), gamma=0.8)
    np.testing.assert_allclose(K, np.exp(-0.8 * distance), atol=1e-6)
    assert np.all(np.diag(K) == 1.0)


@pytest.mark.parametrize("entanglement", ["linear", "circular"])
@pytest.mark.parametrize("n", [3, 8, 12])
def test_mps_features_equal_state_vector_features(n, entanglement):
    fm = FeatureMap(n_qubits=n, reps=2, entanglement=entanglement, bandwidth=0.7)
    X = angles(9, n, seed=n)
    np.testing.assert_allclose(bloch_features_mps(fm.mps(X)), bloch_features(fm.states(X)), atol=1e-6)
    np.testing.assert_allclose(projected_features(fm, X, method="mps"),
                               projected_features(fm, X, method="statevector"), atol=1e-6)


def test_circuit_feature_map_mps_features_equal_state_vector_features():
    """An SVD-built MPS (circuit_mps, gauge not canonical in general) gives the same reduced density matrices."""
    layer = [("ry", k, x[k]) for k in range(7)] + [("cz", (k, k + 1)) for k in range(6)]
    chain = Circuit(7, layer + [("rx", k, 2 * x[k]) for k in range(7)] + [("cx", (k, k + 1)) for k in range(6)] + layer,
                    n_features=7, name="chain")
    for circuit in (chain, zz_circuit(6, reps=2)):
        fm = CircuitFeatureMap(circuit, bandwidth=0.9)
        X = angles(5, circuit.n_features, seed=3)
        np.testing.assert_allclose(projected_features(fm, X, method="mps"),
                                   projected_features(fm, X, method="statevector"), atol=1e-6)


def test_features_stream_in_batches_and_reach_hundreds_of_qubits():
    fm = FeatureMap(n_qubits=300, reps=2, bandwidth=0.05)
    X = angles(7, 300)
    F = projected_features(fm, X, method="mps")
    np.testing.assert_array_equal(projected_features(fm, X, method="mps", batch_size=2), F)
    assert F.shape == (7, 900) and np.isfinite(F).all()
    # Bloch vectors of a reduced state have length <= 1 (mixed: < 1 on entangled qubits)
    assert np.all(np.linalg.norm(F.reshape(7, 300, 3), axis=2) <= 1 + 1e-9)


def test_gram_paths_agree(tmp_path):
    F = projected_features(FeatureMap(n_qubits=6, reps=2), angles(23, 6))
    G = projected_features(FeatureMap(n_qubits=6, reps=2), angles(11, 6, seed=5))
    reference = np.exp(-0.3 * 0.5 * np.sum((F[:, None] - F[None]) ** 2, axis=2))
    K = projected_gram(F, gamma=0.3)
    np.testing.assert_allclose(K, reference, atol=1e-12)
    np.testing.assert_allclose(projected_gram(F, gamma=0.3, tile=5, n_threads=1), K, atol=1e-12)
    np.testing.assert_allclose(projected_gram(F, gamma=0.3, dtype=np.float32), K, atol=1e-6)
    np.testing.assert_allclose(projected_gram(G, F, gamma=0.3, tile=4), projected_gram(np.vstack([G, F]),
                                                                                       gamma=0.3)[:11, 11:],
                               atol=1e-12)
    on_disk = projected_gram(F, gamma=0.3, tile=6, out=tmp_path / "K.npy")
    np.testing.assert_allclose(np.asarray(on_disk), K, atol=1e-12)
    # a rerun resumes from the ledger (spot checks against the RBF, not the fidelity) and gives the same file
    np.testing.assert_allclose(np.asarray(projected_gram(F, gamma=0.3, tile=6, out=tmp_path / "K.npy")), K,
                               atol=1e-12)
    # another gamma is another computation: the file is refused, never mixed
    from qmlnb.kernels.out_of_core import GramFileMismatchError

    with pytest.raises(GramFileMismatchError):
        projected_gram(F, gamma=0.5, tile=6, out=tmp_path / "K.npy")


def test_projected_gamma_is_one_over_the_median_density_matrix_distance():
    F = projected_features(FeatureMap(n_qubits=5, reps=2), angles(30, 5))
    d2 = 0.5 * np.sum((F[:, None] - F[None]) ** 2, axis=2)[np.triu_indices(30, 1)]
    assert projected_gamma(F) == pytest.approx(1 / np.median(d2))
    assert projected_gamma(F, 3.0) == pytest.approx(3 / np.median(d2))
    K = projected_gram(F, gamma=projected_gamma(F))
    assert np.median(K[np.triu_indices(30, 1)]) == pytest.approx(np.exp(-1.0))


def test_bad_inputs_are_refused():
    F = np.ones((3, 6))
    with pytest.raises(ValueError, match="gamma"):
        projected_gram(F, gamma=0)
    with pytest.raises(ValueError, match="NaN"):
        rbf_gram(np.full((2, 3), np.nan), gamma=1.0)
    with pytest.raises(ValueError, match="features per sample"):
        rbf_gram(F, np.ones((2, 5)), gamma=1.0)
    with pytest.raises(ValueError, match="2\\*\\*n"):
        bloch_features(np.ones((2, 3), dtype=np.complex64))
    with pytest.raises(ValueError, match="all equal"):
        projected_gamma(F)
    with pytest.raises(ValueError, match="no bounded exact MPS"):
        projected_features(FeatureMap(n_qubits=4, kind="iqp"), angles(2, 4), method="mps")


@pytest.mark.parametrize("n", [2, 5, 8])
def test_equals_squlearn_projected_quantum_kernel(n):
    """sQUlearn 0.12's ProjectedQuantumKernel (XYZ, gaussian outer kernel exp(-g |f - f'|^2)) is ours at gamma = 2 g."""
    squlearn = pytest.importorskip("squlearn", reason="the optional peer sQUlearn (pip install squlearn)")
    from qiskit.circuit.library import zz_feature_map
    from squlearn.encoding_circuit import QiskitEncodingCircuit
    from squlearn.kernel import ProjectedQuantumKernel

    from qmlnb.kernels import from_qiskit

    circuit = zz_feature_map(n, reps=2, entanglement="linear")
    X, Y = angles(6, n, seed=n), angles(4, n, seed=n + 1)
    pqk = ProjectedQuantumKernel(QiskitEncodingCircuit(circuit), squlearn.Executor("pennylane"), measurement="XYZ",
                                 outer_kernel="gaussian", gamma=0.35)
    fm = from_qiskit(circuit)
    F, G = projected_features(fm, X), projected_features(fm, Y)
    np.testing.assert_allclose(projected_gram(F, gamma=0.7), pqk.evaluate(X), atol=1e-6)
    np.testing.assert_allclose(projected_gram(G, F, gamma=0.7), pqk.evaluate(Y, X), atol=1e-6)
    # and our own ZZ map's MPS gives the same features as the Qiskit circuit's state vectors
    np.testing.assert_allclose(projected_features(FeatureMap(n_qubits=n, reps=2), X, method="mps"), F, atol=1e-6)


def test_bench_projected_smoke(tmp_path):
    """`python -m qmlnb bench projected` on a small setting: its phases, the exactness check and the target flag."""
    import json

    from qmlnb.cli import main

    out = tmp_path / "projected.json"
    assert main(["bench", "projected", "--n-qubits", "30", "--n", "60", "--repeats", "1", "--allow-dirty",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["phases_median_s"]) == {"features", "gamma", "gram"}
    assert result["mps_vs_statevector_max_abs_difference"] < 1e-6
    assert result["kernel"]["shape"] == [60, 60] and 0 < result["kernel"]["off_diagonal_mean"] < 1
    assert result["under_target"] == (result["total_median_s"] < 60.0)
    assert result["provenance"]["allow_dirty"] is True


def test_gram_on_dask_equals_in_memory():
    """client=: each tile a Dask task on a local cluster; the same matrix as in memory, symmetric and rectangular."""
    distributed = pytest.importorskip("distributed", reason="dask.distributed (a dependency of qmlnb)")
    F = projected_features(FeatureMap(n_qubits=5, reps=2), angles(37, 5))
    G = F[:9] + 0.01
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        K = projected_gram(F, gamma=0.4, tile=10, client=client)
        R = projected_gram(G, F, gamma=0.4, tile=10, client=client)
    np.testing.assert_allclose(K, projected_gram(F, gamma=0.4), atol=1e-12)
    np.testing.assert_allclose(R, projected_gram(G, F, gamma=0.4), atol=1e-12)
    with pytest.raises(ValueError, match="not both"):
        projected_gram(F, gamma=0.4, client="local", out="K.npy")
