"""gram(..., shots=, seed=, noise=, mitigate=, psd=): the kernel a device would estimate.

Statistics (mean and variance over many seeds against the binomial's), reproducibility (the same
matrix for every backend, tile, thread count, out-of-core and Dask layout), noise, mitigation and
PSD repair, and the optional comparison with Qiskit Aer's sampled all-zeros frequency.
"""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb.kernels import DeviceNoise, FeatureMap, available_backends, gram, repair_psd
from qmlnb.kernels.noise import mitigate_depolarising, outcome_map
from qmlnb.kernels.out_of_core import GramFileMismatchError, GramFileWarning
from qmlnb.kernels.shots import DeviceEstimate

pytestmark = pytest.mark.timeout(300)

# exact values across the range: near 0 and 1 (inversion), the middle (BTRS at large shots)
VALUES = np.array([0.0, 1e-4, 3e-3, 0.02, 0.2, 0.5, 0.77, 0.99, 0.9996, 1.0])
N_SEEDS = 400


@pytest.fixture(scope="module")
def fm():
    return FeatureMap(n_qubits=4, reps=2, bandwidth=0.8)


@pytest.fixture(scope="module")
def states(fm):
    return fm.states(np.random.default_rng(5).uniform(0, np.pi, (90, 4)))


def draws(value_map, shots: int, estimator: str = "fidelity", noise=None, mitigate=False) -> np.ndarray:
    """(N_SEEDS, len(VALUES)) estimates of VALUES, one row per seed."""
    rows = []
    for seed in range(N_SEEDS):
        block = np.array([value_map], dtype=np.float64)
        spec = DeviceEstimate(shots=shots, seed=seed, estimator=estimator, noise=noise, mitigate=mitigate,
                              n_qubits=4)
        rows.append(spec.apply_(block, np.array([7]), np.arange(100, 100 + block.shape[1]))[0])
    return np.array(rows)


def check_moments(samples: np.ndarray, p: np.ndarray, shots: int, scale: float, shift: float) -> None:
    """Mean and variance of ``scale * Binomial(shots, p) / shots + shift`` over the seeds, each within 4 sigma."""
    n = samples.shape[0]
    mean = scale * p + shift
    var = scale**2 * p * (1 - p) / shots
    z_mean = (samples.mean(axis=0) - mean) / np.sqrt(np.where(var > 0, var / n, 1.0))
    assert np.all(np.abs(z_mean) < 4), z_mean
    degenerate = var == 0
    assert np.all(samples[:, degenerate] == mean[degenerate])  # k = 0 or 1: no noise at all
    # the sample variance's standard error: sigma^4 (2 / (n - 1) + excess kurtosis / n)
    ok = ~degenerate
    kurtosis = (1 - 6 * p[ok] * (1 - p[ok])) / (shots * p[ok] * (1 - p[ok]))
    se = var[ok] * np.sqrt(2 / (n - 1) + kurtosis / n)
    z_var = (samples[:, ok].var(axis=0, ddof=1) - var[ok]) / se
    assert np.all(np.abs(z_var) < 4), z_var


@pytest.mark.parametrize("shots", [1, 37, 1000, 250_000])
def test_fidelity_estimate_has_the_binomial_mean_and_variance(shots):
    check_moments(draws(VALUES, shots), VALUES, shots, 1.0, 0.0)


@pytest.mark.parametrize("shots", [50, 20_000])
def test_swap_test_estimate_has_its_binomial_moments(shots):
    # P(ancilla 0) = (1 + k) / 2, reported as 2 P - 1: variance (1 - k^2) / shots
    check_moments(draws(VALUES, shots, "swap"), (1 + VALUES) / 2, shots, 2.0, -1.0)


def test_noisy_estimate_is_centred_on_the_model_and_mitigation_on_the_exact_kernel():
    noise = DeviceNoise(depolarising=0.03, layers=6, readout=0.02)
    a, b = outcome_map("fidelity", 4, noise)
    check_moments(draws(VALUES, 2000, noise=noise), a * VALUES + b, 2000, 1.0, 0.0)
    check_moments(draws(VALUES, 2000, noise=noise, mitigate=True), a * VALUES + b, 2000, 1 / a, -b / a)


@pytest.mark.parametrize("shots", [1, 100, 4096, 10**6])
def test_an_entry_is_drawn_the_same_whatever_shares_its_chunk(shots):
    # the sampler works on chunks of a row in passes (inversion and BTRS lists, rounds of rejection): an
    # entry's estimate must not depend on its neighbours, its place in the chunk or the chunk's length
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.exponential(0.002, 150), rng.uniform(0, 1, 60), [0.0, 1.0, 0.5, 1e-12, 1 - 1e-9]])
    rng.shuffle(values)
    ids = np.arange(500, 500 + values.size)
    spec = DeviceEstimate(shots=shots, seed=8, estimator="fidelity", noise=None, mitigate=False, n_qubits=4)
    whole = spec.apply_(values[None, :].copy(), np.array([7]), ids)[0]
    alone = [spec.apply_(values[None, [j]].copy(), np.array([7]), ids[[j]])[0, 0] for j in range(values.size)]
    assert np.array_equal(whole, alone)
    order = rng.permutation(values.size)
    shuffled = spec.apply_(values[None, order].copy(), np.array([7]), ids[order])[0]
    assert np.array_equal(shuffled, whole[order])


def test_an_entry_keeps_its_draw_when_the_ids_are_permuted():
    # the key of (i, j) is built from the smaller id's mix, looked up per id: with the ids shuffled, the
    # smaller id sits on either side of the diagonal, and every entry must still get the same estimate
    rng = np.random.default_rng(6)
    values = rng.exponential(0.01, (300, 300))
    values = np.minimum((values + values.T) / 2, 1.0)
    np.fill_diagonal(values, 1.0)
    ids = np.arange(300)
    perm = rng.permutation(300)
    for shots in (100, 4096, 10**6):
        spec = DeviceEstimate(shots=shots, seed=3, estimator="fidelity", noise=None, mitigate=False, n_qubits=4)
        whole = spec.apply_(values.copy(), ids, ids, symmetric=True)
        shuffled = spec.apply_(values[np.ix_(perm, perm)].copy(), perm, perm, symmetric=True)
        assert np.array_equal(shuffled, whole[np.ix_(perm, perm)])
        block = spec.apply_(values[np.ix_(perm[:70], perm[70:])].copy(), perm[:70], perm[70:])
        assert np.array_equal(block, whole[np.ix_(perm[:70], perm[70:])])


def test_a_seed_gives_one_matrix_on_every_tile_size_thread_count_and_out_of_core(states, tmp_path):
    K = gram(states, shots=3000, seed=11)
    assert np.array_equal(K, K.T)
    for tile, threads in [(7, 1), (32, 2), (200, 1)]:
        assert np.array_equal(gram(states, shots=3000, seed=11, tile=tile, n_threads=threads), K)
    assert np.array_equal(np.asarray(gram(states, shots=3000, seed=11, tile=16, out=tmp_path / "K.npy")), K)
    assert not np.array_equal(gram(states, shots=3000, seed=12), K)


def test_backends_draw_the_same_numbers(states):
    K = gram(states, shots=500, seed=2)
    exact = gram(states)
    for name, (usable, _) in available_backends().items():
        if not usable or name not in ("numba", "openmp"):
            continue
        # the same draw wherever the exact values agree; a float32 difference of ~1e-7 can move a count
        # only where it straddles a step of the sampler
        same_exact = gram(states, backend=name) == exact
        other = gram(states, shots=500, seed=2, backend=name)
        assert np.array_equal(other[same_exact], K[same_exact]), name
        assert np.mean(other != K) < 0.01, name


def test_a_rectangular_block_with_global_ids_is_the_block_of_the_whole(states):
    K = gram(states, shots=700, seed=4, noise=DeviceNoise(depolarising=0.01, layers=4))
    rows, cols = np.arange(60, 90), np.arange(0, 60)
    block = gram(states[60:], states[:60], shots=700, seed=4, noise=DeviceNoise(depolarising=0.01, layers=4),
                 ids=(rows, cols))
    assert np.array_equal(block, K[60:, :60])
    # default ids 0..29 would reuse the training entries' random numbers: different values
    assert not np.array_equal(gram(states[60:], states[:60], shots=700, seed=4), block)


def test_mps_path_estimates_the_same_matrix(fm):
    X = np.random.default_rng(1).uniform(0, np.pi, (40, 4))
    K_states = gram(fm.states(X), shots=900, seed=9, dtype=np.float64)
    K_mps = gram(fm.mps(X), shots=900, seed=9)
    exact_same = gram(fm.states(X)) == gram(fm.mps(X))
    assert np.array_equal(K_mps[exact_same], K_states[exact_same])
    assert np.mean(K_mps != K_states) < 0.02


@pytest.mark.slow  # worker processes start and compile the sampler: minutes on a loaded 2-core machine
def test_dask_layout_gives_the_same_matrix(states, tmp_path):
    distributed = pytest.importorskip("distributed")
    K = gram(states, shots=800, seed=5, tile=25)
    # worker processes: the estimate's spec travels pickled and each worker compiles its own sampler
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as c, distributed.Client(c) as client:
        assert np.array_equal(gram(states, shots=800, seed=5, client=client, tile=13), K)
        on_disk = gram(states, shots=800, seed=5, client=client, tile=40, out=tmp_path / "K.npy")
        assert np.array_equal(np.asarray(on_disk), K)


def test_resuming_a_file_with_another_estimate_is_refused(states, tmp_path):
    path = tmp_path / "K.npy"
    gram(states, shots=np.int64(100), seed=np.int64(1), tile=30, out=path)  # NumPy ints: JSON metadata still
    gram(states, shots=100, seed=1, tile=30, out=path)  # the same estimate: resumed
    with pytest.raises(GramFileMismatchError, match="device"):
        gram(states, shots=100, seed=2, tile=30, out=path)
    with pytest.raises(GramFileMismatchError, match="device"):
        gram(states, tile=30, out=path)


def test_noise_expectation_matches_the_closed_form_and_mitigation_inverts_it(fm, states):
    exact = gram(states)
    noise = DeviceNoise.for_map(fm, depolarising=0.05)
    assert noise.layers == 2 * fm.layers == 4
    f = 0.95**4
    np.testing.assert_allclose(gram(states, noise=noise), f * exact + (1 - f) / 16, atol=1e-12)
    np.testing.assert_allclose(gram(states, noise=noise, mitigate=True), exact, atol=1e-12)
    # sQUlearn-style: the survival estimated from the measured diagonal
    K_mit, survival = mitigate_depolarising(gram(states, noise=noise), 4)
    assert survival == pytest.approx(f, abs=1e-6)  # the exact diagonal is 1 to float32 precision
    np.testing.assert_allclose(K_mit, exact, atol=1e-6)


def test_readout_error_maps_swap_and_fidelity_probabilities():
    noise = DeviceNoise(readout=0.1)
    a, b = outcome_map("swap", 3, noise)  # one ancilla bit: P -> 0.9 P + 0.1 (1 - P)
    assert (a * 1 + b, a * -1 + b) == pytest.approx((0.9, 0.1))
    a, b = outcome_map("fidelity", 2, noise)
    assert a * 1 + b == pytest.approx(0.81)  # k = 1: every bit read right
    assert a * 0 + b == pytest.approx((1 - 0.81) / 3)  # k = 0: the mass on the other 3 strings, spread evenly


def test_psd_repair_clips_or_flips_negative_eigenvalues(states):
    K = gram(states, shots=30, seed=0, estimator="swap")
    assert np.linalg.eigvalsh(K).min() < -1e-3  # few shots of the swap test: far from PSD
    clipped, info = repair_psd(K, "clip")
    assert np.linalg.eigvalsh(clipped).min() > -1e-9
    assert info["n_negative"] > 0 and info["min_eigenvalue"] < 0 and 0 < info["relative_change"] < 1
    flipped, info_flip = repair_psd(K, "flip")
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(flipped)), np.sort(np.abs(np.linalg.eigvalsh(K))),
                               atol=1e-9)
    assert info_flip["relative_change"] > info["relative_change"]  # clip is the nearest PSD matrix
    assert np.array_equal(gram(states, shots=30, seed=0, estimator="swap", psd="clip"), clipped)
    exact = gram(states, dtype=np.float64)
    _, info_exact = repair_psd(exact + 1e-3 * np.eye(len(exact)), "clip")
    assert info_exact["n_negative"] == 0 and info_exact["relative_change"] == 0


def test_exponential_concentration_leaves_zeros_at_few_shots():
    # off-diagonal values ~1e-4: with 1000 shots most entries are estimated as exactly 0
    block = np.full((50, 50), 1e-4)
    DeviceEstimate(shots=1000, seed=0, estimator="fidelity", noise=None, mitigate=False,
                   n_qubits=10).apply_(block, np.arange(50), np.arange(50, 100))
    assert 0.85 < np.mean(block == 0) < 0.95  # (1 - 1e-4)^1000 = 0.905


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(shots=100), ValueError, "seed"),
    (dict(shots=0, seed=1), ValueError, "shots"),
    (dict(shots=10, seed=-1), ValueError, "seed"),
    (dict(mitigate=True), ValueError, "noise model"),
    (dict(shots=10, seed=1, mitigate=True), ValueError, "noise model"),
    (dict(shots=10, seed=1, estimator="hadamard"), ValueError, "estimator"),
    (dict(estimator="swap"), ValueError, "needs shots"),
    (dict(psd="nearest"), ValueError, "psd"),
    (dict(ids=(np.arange(90), np.arange(90))), ValueError, "exact Gram"),
    (dict(shots=10, seed=1, ids=(np.arange(5), np.arange(90))), ValueError, "length 90"),
    (dict(shots=10, seed=1, ids=(np.arange(90), np.arange(1, 91))), ValueError, "same row and column ids"),
    (dict(noise=0.1), TypeError, "DeviceNoise"),
])
def test_bad_arguments_are_refused(states, kwargs, error, match):
    with pytest.raises(error, match=match):
        gram(states, **kwargs)


def test_bad_noise_is_refused(states):
    with pytest.raises(ValueError, match="layer count"):
        DeviceNoise(depolarising=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DeviceNoise(readout=1.0)
    with pytest.raises(ValueError, match="square"):
        gram(states[:5], states, psd="clip")


def zz_circuit(fm, x):
    """The ZZ feature map U(x) as a Qiskit circuit (DESIGN.md's definition)."""
    from qiskit import QuantumCircuit

    x = fm.bandwidth * np.asarray(x)
    qc = QuantumCircuit(fm.n_qubits)
    for _ in range(fm.reps):
        qc.h(range(fm.n_qubits))
        for i in range(fm.n_qubits):
            qc.p(2 * x[i], i)
        for i, j in fm.pairs:
            qc.cx(i, j)
            qc.p(2 * (np.pi - x[i]) * (np.pi - x[j]), j)
            qc.cx(i, j)
    return qc


def test_qiskit_aer_sampler_gives_the_same_all_zeros_distribution(fm):
    """The all-zeros count of the compute-uncompute circuit on Aer against ours, over many repetitions."""
    pytest.importorskip("qiskit_aer", reason="the Aer comparison needs the `compare` extra (qiskit-aer)")
    from qiskit_aer.primitives import SamplerV2
    from scipy.stats import chi2_contingency

    X = np.array([[0.3, 1.1, 2.0, 0.4], [0.5, 0.9, 2.2, 0.1]])
    psi = fm.states(X)
    k = float(gram(psi[:1], psi[1:])[0, 0])
    shots, reps = 200, 600
    qc = zz_circuit(fm, X[0]).compose(zz_circuit(fm, X[1]).inverse())
    qc.measure_all()
    # one run of shots * reps i.i.d. shots, cut into reps estimates of `shots` shots each
    bits = SamplerV2(seed=3).run([qc], shots=shots * reps).result()[0].data.meas.get_bitstrings()
    aer = (np.array(bits) == "0" * fm.n_qubits).reshape(reps, shots).mean(axis=1)
    ours = np.array([gram(psi[:1], psi[1:], shots=shots, seed=s)[0, 0] for s in range(reps)])
    var = k * (1 - k) / shots
    assert abs(aer.mean() - k) < 4 * np.sqrt(var / reps)  # the circuit is the kernel's
    assert abs(aer.mean() - ours.mean()) < 4 * np.sqrt(2 * var / reps)
    assert abs(aer.var(ddof=1) - ours.var(ddof=1)) < 4 * var * np.sqrt(2 * 2 / (reps - 1))
    # the whole distribution: counts binned at the pooled quintiles, two-sample chi-square
    edges = np.unique(np.quantile(np.concatenate([aer, ours]), [0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    table = np.array([np.histogram(aer, edges)[0], np.histogram(ours, edges)[0]])
    assert chi2_contingency(table)[1] > 1e-3


@pytest.mark.parametrize("options", [{"shots": 100}, {"shots": 100, "estimator": "swap"},
                                     {"shots": 4096, "noise": "depolarising", "mitigate": True},
                                     {"noise": "depolarising"}])
def test_a_file_of_estimates_resumes_without_recomputing_its_tiles(fm, states, tmp_path, options):
    """A resumed file of estimates keeps its tiles: its spot checks compare with the same estimates (the swap
    test's negative values, a noisy diagonal and mitigated values outside [0, 1] are not taken for damage)."""
    import warnings

    if options.get("noise"):
        options = {**options, "noise": DeviceNoise.for_map(fm, depolarising=0.2)}
    path = tmp_path / "K.npy"
    first = np.array(gram(states, seed=3, tile=30, out=path, **options))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a GramFileWarning (tiles recomputed) fails the test
        again = np.array(gram(states, seed=3, tile=30, out=path, **options))
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(first, gram(states, seed=3, tile=30, **options))


def test_a_damaged_tile_of_estimates_is_still_found_and_recomputed(states, tmp_path):
    path = tmp_path / "K.npy"
    first = np.array(gram(states, shots=100, seed=3, tile=30, out=path))
    damaged = np.load(path, mmap_mode="r+")
    damaged[0, 40] = damaged[40, 0] = 0.5 + first[0, 40]  # checksum, mirror and spot checks would all catch it
    damaged.flush()
    del damaged
    with pytest.warns(GramFileWarning, match="1 of 6 tiles"):
        again = np.array(gram(states, shots=100, seed=3, tile=30, out=path))
    np.testing.assert_array_equal(again, first)


# ---- the two samplers: native (qmlnb._shots_openmp) and numba, the same numbers bit for bit ----------------

def sampler_values(rng, n: int) -> np.ndarray:
    """(n, n) symmetric exact values over the whole range: near 0 (inversion at every shot count), the middle
    (BTRS), above 1/2 (q = 1 - P), exactly 0 and 1 (settled), and values that p = a k + b clips."""
    K = np.concatenate([rng.exponential(0.002, n * n // 3), rng.uniform(0, 1, n * n // 3),
                        1 - rng.exponential(0.001, n * n - 2 * (n * n // 3))])
    K = rng.permutation(np.clip(K, 0, 1)).reshape(n, n)
    K[::7, ::5] = 0.0
    K[::11, ::3] = 1.0
    K = np.triu(K) + np.triu(K, 1).T
    np.fill_diagonal(K, 1.0)
    return K


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shots", [None, 1, 7, 100, 4096, 10**6, 2**27])
def test_the_native_and_numba_samplers_give_the_same_bits(dtype, shots):
    pytest.importorskip("qmlnb._shots_openmp", reason="the native sampler is not built (setup.py build_ext)")
    rng = np.random.default_rng(0 if shots is None else shots % 1000)
    K = sampler_values(rng, 150).astype(dtype)
    ids = rng.permutation(10_000)[:150].astype(np.int64)  # global ids in any order, not 0..N-1
    noise = DeviceNoise(depolarising=0.02, readout=0.01, layers=4)
    settings = [dict(estimator="fidelity", noise=None, mitigate=False),
                dict(estimator="swap", noise=None, mitigate=False),
                dict(estimator="fidelity", noise=noise, mitigate=True),
                dict(estimator="swap", noise=noise, mitigate=False)]
    for setting in settings:
        if shots is None and setting["noise"] is None:
            continue  # the exact Gram: nothing to estimate
        spec = DeviceEstimate(shots=shots, seed=3, n_qubits=4, **setting)
        native = spec.apply_(K.copy(), ids, ids, symmetric=True, n_threads=2, sampler="native")
        numba = spec.apply_(K.copy(), ids, ids, symmetric=True, n_threads=2, sampler="numba")
        np.testing.assert_array_equal(native, numba, err_msg=str(setting))
        assert np.array_equal(native, native.T)
        # a block with rows and columns of their own (ragged chunks: 150 - 37 columns)
        rows, cols = ids[:41], ids[37:]
        native = spec.apply_(K[:41, 37:].copy(), rows, cols, n_threads=2, sampler="native")
        numba = spec.apply_(K[:41, 37:].copy(), rows, cols, n_threads=2, sampler="numba")
        np.testing.assert_array_equal(native, numba, err_msg=str(setting))
    if shots is not None:  # the estimate is not the exact value: the test compares estimates
        assert not np.array_equal(native, K[:41, 37:])


def test_the_native_sampler_does_not_depend_on_threads_or_what_shares_a_chunk():
    pytest.importorskip("qmlnb._shots_openmp", reason="the native sampler is not built (setup.py build_ext)")
    rng = np.random.default_rng(4)
    K = sampler_values(rng, 300)
    ids = np.arange(300, dtype=np.int64)
    spec = DeviceEstimate(shots=5000, seed=1, estimator="fidelity", noise=None, mitigate=False, n_qubits=4)
    whole = spec.apply_(K.copy(), ids, ids, symmetric=True, n_threads=2, sampler="native")
    assert np.array_equal(spec.apply_(K.copy(), ids, ids, symmetric=True, n_threads=1, sampler="native"), whole)
    # each entry alone (a chunk of one), and the rows in reverse with their columns shuffled
    for i, j in [(0, 0), (3, 250), (120, 121), (299, 7)]:
        alone = spec.apply_(K[i:i + 1, j:j + 1].copy(), ids[i:i + 1], ids[j:j + 1], sampler="native")
        assert alone[0, 0] == whole[i, j]
    order = rng.permutation(300)
    shuffled = spec.apply_(K[::-1][:, order].copy(), ids[::-1].copy(), ids[order], sampler="native")
    assert np.array_equal(shuffled, whole[::-1][:, order])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_native_mirror_is_the_same_on_rows_that_start_cache_lines_or_not(dtype):
    """float64 rows on 64-byte boundaries take streaming stores for the mirror, others regular ones."""
    pytest.importorskip("qmlnb._shots_openmp", reason="the native sampler is not built (setup.py build_ext)")
    from qmlnb._util import aligned_empty

    N = 264  # two whole 128-blocks and an edge; 8 x 8 transposes and the values at the diagonal and edges
    K = sampler_values(np.random.default_rng(5), N).astype(dtype)
    ids = np.arange(N, dtype=np.int64)
    spec = DeviceEstimate(shots=4096, seed=2, estimator="fidelity", noise=None, mitigate=False, n_qubits=4)
    numba = spec.apply_(K.copy(), ids, ids, symmetric=True, n_threads=2, sampler="numba")
    aligned = aligned_empty((N, N), dtype)
    shifted = aligned_empty((N * N + 1,), dtype)[1:].reshape(N, N)  # rows 4 or 8 bytes past a line's start
    for out in (aligned, shifted):
        out[...] = K
        spec.apply_(out, ids, ids, symmetric=True, n_threads=2, sampler="native")
        np.testing.assert_array_equal(out, numba)


@pytest.mark.parametrize("sampler", ["native", "numba"])
def test_an_exact_value_that_is_nan_gives_nan_and_the_others_their_estimates(sampler):
    if sampler == "native":
        pytest.importorskip("qmlnb._shots_openmp", reason="the native sampler is not built (setup.py build_ext)")
    K = sampler_values(np.random.default_rng(2), 40)
    ids = np.arange(40, dtype=np.int64)
    spec = DeviceEstimate(shots=300, seed=0, estimator="fidelity", noise=None, mitigate=False, n_qubits=4)
    clean = spec.apply_(K[:5].copy(), ids[:5], ids, sampler=sampler)
    K[2, 9] = np.nan
    out = spec.apply_(K[:5].copy(), ids[:5], ids, sampler=sampler)
    assert np.isnan(out[2, 9]) and np.isnan(out).sum() == 1
    out[2, 9] = clean[2, 9]
    assert np.array_equal(out, clean)


def test_the_sampler_choice_is_checked(monkeypatch):
    from qmlnb.kernels import shots

    spec = DeviceEstimate(shots=10, seed=0, estimator="fidelity", noise=None, mitigate=False, n_qubits=4)
    K, ids = np.full((3, 3), 0.5), np.arange(3, dtype=np.int64)
    with pytest.raises(ValueError, match="sampler"):
        spec.apply_(K.copy(), ids, ids, sampler="cuda")
    monkeypatch.setattr(shots, "_native", lambda: None)  # as where the extension is not built
    assert shots.pick_sampler(None) == "numba"
    with pytest.raises(ImportError, match="build_ext"):
        spec.apply_(K.copy(), ids, ids, sampler="native")
    assert np.all(np.isin(spec.apply_(K.copy(), ids, ids), np.arange(11) / 10))  # numba, counts / shots


def test_the_seed_key_is_splitmix_of_the_seed():
    from qmlnb.kernels import shots

    mix = shots._compile()[2]
    for seed in (0, 1, 12345, 2**63 - 1):
        spec = DeviceEstimate(shots=1, seed=seed, estimator="fidelity", noise=None, mitigate=False, n_qubits=1)
        assert spec.seed_key() == mix(np.uint64(seed) ^ np.uint64(0x6A09E667F3BCC909))


def test_the_btrs_squeezes_bracket_the_binomial_ratio_to_its_mode():
    """log_ratio_bounds' (lo, hi) hold the exact log f(k) / f(m) (mpmath, 30 digits) from the smallest BTRS
    mean to 2^50 shots, at both ends of [0, n] and across the bulk; pow64 turns them into bounds of exp."""
    mpmath = pytest.importorskip("mpmath", reason="mpmath gives the exact log-gamma the bounds are checked on")
    from qmlnb.kernels import shots

    log_ratio_bounds, pow64 = shots._compile()[3:5]
    mpmath.mp.dps = 30
    checked = 0
    for n, q in [(20, 0.5), (100, 0.1), (1000, 0.0101), (4096, 0.3), (10**5, 0.002), (10**6, 0.5),
                 (10**8, 1e-4), (2**50, 1e-6)]:
        nf, oq = float(n), 1.0 - q
        m = np.floor((nf + 1.0) * q)
        spread = np.sqrt(nf * q * oq)
        ks = {0.0, 1.0, m - 1, m, m + 1, nf - 1, nf} | {float(np.clip(np.floor(m + z * spread), 0, nf))
                                                         for z in np.linspace(-9, 9, 37)}
        exact_log_f = lambda x: (-mpmath.loggamma(x + 1) - mpmath.loggamma(n - x + 1) + x * mpmath.log(q)
                                 + (n - x) * mpmath.log(1 - mpmath.mpf(q)))
        for k in sorted(ks):
            lo, hi = log_ratio_bounds(q, k, m, nf - m + 1.0, nf - k + 1.0, oq)
            exact = float(exact_log_f(int(k)) - exact_log_f(int(m)))
            slack = 1e-12 * (1.0 + abs(exact))  # rounding of the bounds themselves (SQUEEZE_SAFETY covers it)
            assert lo <= exact + slack and exact <= hi + slack, (n, q, k, lo, exact, hi)
            if abs(k - m) <= spread:  # where the mass is, both are close: the squeezes decide most candidates
                assert hi - lo < 2.0 * (abs(k - m) + 1) / spread, (n, q, k, lo, hi)
            checked += 1
    assert checked > 250
    for x in (-63.9, -20.0, -3.0, -0.5, -1e-3, 0.0, 1e-3, 0.5):
        assert pow64(max(1.0 + x / 64, 0.0)) <= np.exp(x) * (1 + 1e-14)
        assert 1.0 / pow64(1.0 - x / 64) >= np.exp(x) * (1 - 1e-14)
