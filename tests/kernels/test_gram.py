"""The Gram matrix: every usable backend against a float64 reference, and bad input."""
import numpy as np
import pytest

from qmlnb.kernels import (
    BackendUnavailableError,
    FeatureMap,
    InsufficientMemoryError,
    UnknownBackendError,
    available_backends,
    check_backend,
    gram,
)
from qmlnb.kernels import registry, validation
from qmlnb.kernels.tiling import mirror_upper_, tile_pairs

USABLE = [name for name, (usable, _) in available_backends().items() if usable]


def reference(A, B=None):
    A = A.astype(np.complex128)
    B = A if B is None else B.astype(np.complex128)
    return np.abs(A @ B.conj().T) ** 2


def random_states(n, n_qubits, seed=0):
    X = np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, n_qubits))
    return FeatureMap(n_qubits=n_qubits, reps=2, entanglement="full").states(X)


def test_cpu_backend_is_always_usable():
    assert available_backends()["cpu"][0]


@pytest.mark.parametrize("backend", USABLE)
@pytest.mark.parametrize("n, n_qubits, tile", [(1, 3, 8), (37, 5, 8), (64, 6, 16), (130, 7, 50)])
def test_symmetric_gram_matches_reference(backend, n, n_qubits, tile):
    S = random_states(n, n_qubits)
    K = gram(S, backend=backend, tile=tile)
    assert K.shape == (n, n) and K.dtype == np.float64
    np.testing.assert_allclose(K, reference(S), atol=1e-5)
    np.testing.assert_array_equal(K, K.T)
    np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-5)
    assert np.linalg.eigvalsh(K).min() > -1e-6


@pytest.mark.parametrize("backend", USABLE)
@pytest.mark.parametrize("n, m, tile", [(1, 1, 4), (1, 9, 4), (23, 41, 16), (40, 7, 128)])
def test_rectangular_gram_matches_reference(backend, n, m, tile):
    A, B = random_states(n, 5, seed=1), random_states(m, 5, seed=2)
    K = gram(A, B, backend=backend, tile=tile, dtype=np.float32)
    assert K.shape == (n, m) and K.dtype == np.float32
    np.testing.assert_allclose(K, reference(A, B), atol=1e-5)


@pytest.mark.parametrize("backend", USABLE)
def test_every_backend_agrees_with_cpu_and_threads_do_not_change_k(backend):
    S = random_states(101, 6, seed=3)
    expected = gram(S, backend="cpu", n_threads=1)
    for threads in (1, 2):
        np.testing.assert_allclose(gram(S, backend=backend, tile=32, n_threads=threads), expected, atol=1e-5)


def test_kernel_on_real_fashion_mnist(shared_data):
    """Fidelity kernel on real images: PCA to 6 features, then the ZZ map."""
    import gzip

    from sklearn.decomposition import PCA

    with gzip.open(shared_data / "fashion-mnist" / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:300] / 255.0
    with gzip.open(shared_data / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:300]
    X = PCA(6, random_state=0).fit_transform(images)
    X = X / np.abs(X).max(axis=0)  # features in [-1, 1]
    S = FeatureMap(n_qubits=6, reps=2, bandwidth=0.5).states(X)
    K = {name: gram(S, backend=name, tile=64) for name in USABLE}
    for name in USABLE:
        np.testing.assert_allclose(K[name], reference(S), atol=1e-5)
    # images of the same class are more alike under the kernel than images of different classes
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(labels), dtype=bool)
    Kc = K["cpu"]
    assert Kc[same & off_diag].mean() > Kc[~same].mean()


def test_tile_pairs_cover_upper_triangle_exactly_once():
    covered = np.zeros((10, 10), int)
    for i0, i1, j0, j1 in tile_pairs(10, None, 3):
        assert j0 >= i0
        covered[i0:i1, j0:j1] += 1
    # exactly the tiles on or above the diagonal, each once (tiles of 3: 0-2, 3-5, 6-8, 9)
    tile_of = np.arange(10) // 3
    np.testing.assert_array_equal(covered, (tile_of[None, :] >= tile_of[:, None]).astype(int))
    # rectangular: every entry exactly once
    covered = np.zeros((7, 10), int)
    for i0, i1, j0, j1 in tile_pairs(7, 10, 3):
        covered[i0:i1, j0:j1] += 1
    np.testing.assert_array_equal(covered, np.ones((7, 10), int))


@pytest.mark.parametrize("n, block", [(10, 3), (9, 3), (10, 4), (600, 256)])
def test_mirror_upper_copies_every_block_to_its_transposed_place(n, block):
    # distinct values everywhere (a symmetric result of zeros or of the wrong entries differs from this)
    full = np.random.default_rng(n).uniform(1.0, 2.0, (n, n))
    expected = np.triu(full) + np.triu(full, 1).T
    out = np.triu(full) - np.tril(np.ones((n, n)), -1)  # the lower triangle holds garbage (-1) to be overwritten
    mirror_upper_(out, block=block)
    np.testing.assert_array_equal(out, expected)


def test_cpu_backend_mirrors_off_diagonal_blocks():
    # N > 256, mirror_upper_'s block: the symmetric path mirrors several blocks, not only a diagonal one
    S = random_states(300, 3, seed=4)
    np.testing.assert_allclose(gram(S, backend="cpu", tile=64), reference(S), atol=1e-5)


# ---------------------------------------------------------------- bad input
def test_unknown_backend_lists_known_ones():
    with pytest.raises(UnknownBackendError, match="known backends: cpu"):
        gram(random_states(2, 2), backend="tpu")


def test_unusable_backend_gives_reason_and_install_step(monkeypatch):
    from qmlnb.kernels.backends import cpu_blas

    monkeypatch.setattr(cpu_blas, "probe", lambda: (False, "BLAS went missing"))
    with pytest.raises(BackendUnavailableError, match="BLAS went missing.*To enable it: pip install"):
        gram(random_states(2, 2), backend="cpu")
    assert available_backends()["cpu"] == (False, "BLAS went missing")


def test_check_backend_is_the_one_answer_to_can_it_run_here(monkeypatch):
    from qmlnb.kernels.backends import cpu_blas

    usable, reason = check_backend("cpu")
    assert usable is True and isinstance(reason, str) and reason
    with pytest.raises(UnknownBackendError, match="unknown Gram backend 'tpu'; known backends: cpu"):
        check_backend("tpu")
    # get_backend and available_backends ask check_backend: a backend it calls unusable is refused by both
    monkeypatch.setattr(registry, "check_backend", lambda name: (False, f"{name} switched off"))
    assert available_backends()["cpu"] == (False, "cpu switched off")
    with pytest.raises(BackendUnavailableError, match="cpu switched off"):
        registry.get_backend("cpu")
    monkeypatch.undo()
    monkeypatch.setattr(cpu_blas, "probe", lambda: (False, "BLAS went missing"))
    assert check_backend("cpu") == (False, "BLAS went missing")


def test_check_backend_probes_only_the_backend_asked_for():
    import subprocess
    import sys

    code = ("import sys; from qmlnb.kernels import check_backend\n"
            "check_backend('cpu')\n"
            "print(' '.join(m for m in ('torch', 'numba', 'qmlnb._openmp', 'pycuda', 'cupy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_unknown_backend_in_registry_error_is_also_a_value_error():
    with pytest.raises(ValueError):
        registry.get_backend("nope")


@pytest.mark.parametrize(
    "A, B, message",
    [
        (np.zeros(4, np.complex64), None, "2-D"),
        (np.full((2, 4), np.nan, np.complex64), None, "NaN or infinite"),
        (np.zeros((2, 4), np.complex64), np.zeros((2, 8), np.complex64), "different state dimensions: 4 and 8"),
        (np.zeros((0, 4), np.complex64), None, "empty"),
        (np.array([["a", "b"]]), None, "numeric"),
    ],
)
def test_bad_states_are_refused(A, B, message):
    with pytest.raises(ValueError, match=message):
        gram(A, B)


@pytest.mark.parametrize("kwargs, message", [
    ({"tile": 0}, "tile must be a positive integer"),
    ({"tile": -4}, "tile must be a positive integer"),
    ({"n_threads": 0}, "n_threads must be a positive integer"),
    ({"n_threads": 1.5}, "n_threads must be a positive integer"),
    ({"dtype": np.int32}, "float32 or float64"),
])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gram(random_states(3, 2), **kwargs)


def test_gram_too_large_for_memory_is_refused_with_numbers():
    # a broadcast view: a huge N without allocating the states
    A = np.broadcast_to(np.complex64(0.5), (2_000_000, 2))
    with pytest.raises(InsufficientMemoryError, match=r"2000000 x 2000000 float64 Gram matrix needs \d+\.\d+ GiB"):
        gram(A)


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_backend_sets_the_blas_threads_for_the_call(monkeypatch, threads):
    """n_threads reaches SciPy's BLAS and every other one loaded before while the products run, each at what
    it can run (a BLAS built for one thread, as Qiskit Aer bundles, stays at 1), and is restored after."""
    from scipy.linalg import blas
    from threadpoolctl import threadpool_info, threadpool_limits

    from qmlnb.kernels.backends.cpu_blas import blas_threads

    def counts():
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    held = {lib.filepath for lib in blas_threads().lib_controllers if lib.user_api == "blas"}
    assert held  # SciPy's BLAS at least: the controller is made after it loads
    with threadpool_limits(limits=threads, user_api="blas"):
        can = {path: n for path, n in counts().items() if path in held}
    seen, cherk = [], blas.cherk

    def spy(*args, **kwargs):
        seen.append({path: n for path, n in counts().items() if path in held})
        return cherk(*args, **kwargs)

    monkeypatch.setattr(blas, "cherk", spy)
    # every BLAS starts at another count, so a call that sets nothing fails
    with threadpool_limits(limits=3 - threads, user_api="blas"):
        before = counts()
        gram(random_states(10, 3), backend="cpu", n_threads=threads)
        assert seen == [can]
        assert counts() == before


# ---------------------------------------------------------------- states that are not unit vectors
def dense_unit_states(n, d, seed):
    """(n, d) complex64 rows with every amplitude non-zero, normalised."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((n, d)) + 1j * rng.standard_normal((n, d))
    return (S / np.linalg.norm(S, axis=1, keepdims=True)).astype(np.complex64)


@pytest.mark.parametrize("backend", USABLE)
def test_states_that_are_not_unit_vectors_are_refused(backend):
    """2 S would give kernel values up to 16: refused before any work, naming the row and its norm."""
    S = dense_unit_states(30, 64, seed=4)
    with pytest.raises(ValueError, match=r"A has 30 of 30 rows that are not unit vectors \(row 0 has norm 2,"):
        gram(2 * S, backend=backend)
    scaled = S.copy()
    scaled[17] *= 1.01
    with pytest.raises(ValueError, match=r"B has 1 of 30 rows that are not unit vectors \(row 17 has norm 1.01,"):
        gram(S, scaled, backend=backend)


def test_unit_norm_tolerance_suits_complex64():
    """Rounding of complex64 states (1e-7 per amplitude) passes; 1e-3 off does not."""
    S = dense_unit_states(40, 4096, seed=5)
    K = gram(S * np.float32(1 + 1e-4))
    np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="not unit vectors"):
        gram(S * np.float32(1 - 2e-3))
    with pytest.raises(ValueError, match="row 0 has norm 0"):
        gram(np.zeros((2, 4), np.complex64))


def test_non_unit_states_are_refused_on_every_route(tmp_path):
    """To a file (nothing is created), and in the Nystrom error that computes K tile by tile."""
    from qmlnb.kernels.nystrom import relative_frobenius_error

    S = 2 * dense_unit_states(12, 16, seed=6)
    with pytest.raises(ValueError, match="not unit vectors"):
        gram(S, out=tmp_path / "K.npy")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="S has 12 of 12 rows that are not unit vectors"):
        relative_frobenius_error(S, np.zeros((12, 3)))


# ---------------------------------------------------------------- thread counts
CPU_BACKENDS = [name for name in ("cpu", "numba", "openmp") if name in USABLE]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n_threads", [validation.MAX_THREADS + 1, 100_000])
def test_thread_counts_above_the_limit_are_refused_for_every_backend(backend, n_threads):
    with pytest.raises(ValueError, match=f"n_threads={n_threads} is more than the 1024 threads a call may use"):
        gram(random_states(5, 2), backend=backend, n_threads=n_threads)


def test_openmp_with_100000_threads_is_an_error_not_a_crash():
    """The OpenMP runtime asked for ~70,000 threads killed the process with SIGSEGV (in a subprocess here)."""
    import subprocess
    import sys

    if "openmp" not in USABLE:
        pytest.skip("the openmp backend is not built")
    code = ("import numpy as np; from qmlnb.kernels import gram\n"
            "try:\n"
            "    gram(np.eye(3000, 16, dtype=np.complex64), backend='openmp', tile=8, n_threads=100_000)\n"
            "except ValueError as exc:\n"
            "    print('refused:', exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "refused: n_threads=100000 is more than the 1024 threads" in result.stdout


def test_nystrom_error_refuses_too_many_threads():
    from qmlnb.kernels.nystrom import relative_frobenius_error

    S = random_states(6, 2)
    with pytest.raises(ValueError, match="n_threads=2000 is more than the 1024 threads"):
        relative_frobenius_error(S, np.zeros((6, 2)), n_threads=2000)


def test_gram_device_refuses_non_unit_states_on_host_and_on_the_device():
    """torch_cuda.gram_device, the other public entry point, checks norms where the states are (CPU device here)."""
    torch = pytest.importorskip("torch")
    from qmlnb.kernels.backends import torch_cuda

    S = dense_unit_states(9, 16, seed=7)
    np.testing.assert_allclose(torch_cuda.gram_device(S, device="cpu").numpy(), reference(S), atol=1e-5)
    with pytest.raises(ValueError, match="A has 9 of 9 rows that are not unit vectors"):
        torch_cuda.gram_device(2 * S, device="cpu")
    with pytest.raises(ValueError, match=r"B has 1 of 9 rows .*row 4 has norm 0\.5,"):
        torch_cuda.gram_device(S, torch.from_numpy(S) * torch.tensor([1] * 4 + [0.5] + [1] * 4)[:, None],
                               device="cpu")


def test_the_default_thread_count_never_exceeds_the_limit(monkeypatch):
    """On a machine with more cores than MAX_THREADS, the default is capped rather than refused."""
    import importlib

    from qmlnb.kernels.backends import cpu_blas

    gram_module = importlib.import_module("qmlnb.kernels.gram")  # the module, not the function of that name
    seen = []
    real = cpu_blas.gram

    def recording(*args, **kwargs):
        seen.append(kwargs["n_threads"])
        return real(*args, **kwargs)

    monkeypatch.setattr(gram_module, "default_threads", lambda: 4096)
    monkeypatch.setattr(cpu_blas, "gram", recording)
    gram(random_states(4, 2), backend="cpu")
    assert seen == [validation.MAX_THREADS]
