"""The numba and openmp Gram backends: exact agreement with a float64 reference,
thread control that reaches the runtime, and clear errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from qmlnb.kernels import BackendUnavailableError, FeatureMap, gram
from qmlnb.kernels.registry import get_backend

BACKENDS = ["numba", "openmp"]


def random_states(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) complex64 unit rows."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((n, d)) + 1j * rng.standard_normal((n, d))
    return (S / np.linalg.norm(S, axis=1, keepdims=True)).astype(np.complex64)


def reference(A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
    """|A B^H|^2 in float64 from the complex64 inputs."""
    A64 = A.astype(np.complex128)
    B64 = A64 if B is None else B.astype(np.complex128)
    return np.abs(A64 @ B64.conj().T) ** 2


def run(backend: str, A, B=None, *, tile: int, n_threads: int = 2, dtype=np.float64) -> np.ndarray:
    """The backend module's own gram, with a NaN-filled out so unwritten entries show."""
    module = get_backend(backend)
    out = np.full((A.shape[0], (A if B is None else B).shape[0]), np.nan, dtype=dtype)
    result = module.gram(A, B, out=out, tile=tile, n_threads=n_threads)
    assert result is out
    return out


# (n_rows, n_cols or None for symmetric, d, tile): tiles, SIMD widths (16/32
# columns, 6 rows, 4 x 2 blocks) and d blocks (256/512) that do not divide
CASES = [
    (1, None, 8, 4),
    (1, 5, 8, 4),
    (37, None, 16, 8),
    (45, None, 24, 16),
    (50, None, 1000, 16),
    (70, None, 1024, 64),
    (13, 29, 32, 8),
    (29, 13, 3, 5),
    (33, 40, 600, 32),
    (8, None, 2, 3),
    (6, 7, 4, 256),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_rows, n_cols, d, tile", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_float64_reference(backend, n_rows, n_cols, d, tile, dtype):
    A = random_states(n_rows, d, seed=1)
    B = None if n_cols is None else random_states(n_cols, d, seed=2)
    K = run(backend, A, B, tile=tile, dtype=dtype)
    assert K.dtype == dtype
    np.testing.assert_allclose(K, reference(A, B), rtol=0, atol=1e-5)
    if B is None:
        assert np.array_equal(K, K.T)


@pytest.mark.parametrize("tile", [16, 20, 24, 128])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_openmp_mirror_on_rows_that_start_cache_lines_or_not(tile, dtype):
    """float64 rows on 64-byte boundaries take streaming stores for the mirror where a tile starts at a
    multiple of 8 (tile 20: every other tile does not), others regular ones: the same matrix either way."""
    from qmlnb._util import aligned_empty

    pytest.importorskip("qmlnb._openmp", reason="the openmp backend is not built (setup.py build_ext)")
    A = random_states(136, 32, seed=6)
    expected = reference(A)
    aligned = aligned_empty((136, 136), dtype)
    shifted = aligned_empty((136 * 136 + 1,), dtype)[1:].reshape(136, 136)  # rows past a line's start
    for out in (aligned, shifted):
        out[...] = np.nan
        get_backend("openmp").gram(A, None, out=out, tile=tile, n_threads=2)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
        assert np.array_equal(out, out.T)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_qubits", [1, 2, 5])
def test_feature_map_states_through_public_gram(backend, n_qubits):
    X = np.random.default_rng(n_qubits).uniform(0, np.pi, size=(23, n_qubits))
    S = FeatureMap(n_qubits=n_qubits, reps=2).states(X)
    K = gram(S, backend=backend, tile=7)
    np.testing.assert_allclose(K, reference(S), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-5)
    assert np.linalg.eigvalsh(K).min() > -1e-6
    K_rect = gram(S[:9], S[9:], backend=backend, dtype=np.float32)
    np.testing.assert_allclose(K_rect, K[:9, 9:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_and_two_threads_agree_exactly(backend):
    A = random_states(90, 64, seed=3)
    # each tile's arithmetic does not depend on which thread runs it
    assert np.array_equal(run(backend, A, tile=16, n_threads=1), run(backend, A, tile=16, n_threads=2))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_openmp_threads_reach_the_runtime(n_threads):
    from qmlnb import _openmp

    run("openmp", random_states(64, 32, seed=4), tile=8, n_threads=n_threads)
    assert _openmp.last_num_threads() == n_threads


@pytest.mark.parametrize("n_threads", [1, 2])
def test_numba_threads_reach_the_runtime_and_are_restored(n_threads):
    import numba

    from qmlnb.kernels.backends import numba_jit

    before = numba.get_num_threads()
    run("numba", random_states(64, 32, seed=4), tile=8, n_threads=n_threads)
    assert numba_jit.LAST_CALL["num_threads"] == n_threads
    assert set(numba_jit.LAST_CALL["thread_ids"]) <= set(range(n_threads))
    assert numba.get_num_threads() == before


def test_numba_refuses_more_threads_than_its_pool():
    import numba

    from qmlnb.kernels.backends import numba_jit

    A = random_states(4, 8, seed=5)
    too_many = numba.config.NUMBA_NUM_THREADS + 1
    out = np.full((4, 4), np.nan)
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        numba_jit.gram(A, None, out=out, tile=2, n_threads=too_many)
    assert np.isnan(out).all()


def test_openmp_writes_into_a_memmap(tmp_path):
    A = random_states(40, 32, seed=6)
    out = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=np.float32, shape=(40, 40))
    get_backend("openmp").gram(A, None, out=out, tile=16, n_threads=2)
    out.flush()
    np.testing.assert_allclose(np.load(tmp_path / "K.npy"), reference(A), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, out: (a.astype(np.complex128), out), "complex64"),
        (lambda a, out: (a[:, ::2], out), "C-contiguous"),
        (lambda a, out: (a, out.astype(np.int32)), "float32 or float64"),
        (lambda a, out: (a, out[:, :3]), "shape"),
        (lambda a, out: (a, np.asfortranarray(out)), "C-contiguous"),
    ],
)
def test_openmp_extension_rejects_bad_arrays(change, message):
    from qmlnb import _openmp

    A, out = change(random_states(4, 8, seed=7), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=message):
        _openmp.gram(A, None, out, 2, 1)


def test_openmp_extension_rejects_read_only_out_and_bad_counts():
    from qmlnb import _openmp

    A = random_states(4, 8, seed=7)
    out = np.zeros((4, 4))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _openmp.gram(A, None, out, 2, 1)
    with pytest.raises(ValueError, match="tile"):
        _openmp.gram(A, None, np.zeros((4, 4)), 0, 1)
    with pytest.raises(ValueError, match="n_threads"):
        _openmp.gram(A, None, np.zeros((4, 4)), 2, 0)
    with pytest.raises(ValueError, match="state dimensions"):
        _openmp.gram(A, random_states(4, 4, seed=8), np.zeros((4, 4)), 2, 1)


def test_unbuilt_extension_is_reported_with_the_install_step(monkeypatch):
    import qmlnb
    from qmlnb.kernels.backends import openmp_native

    # as if never built: the import finds neither a loaded module nor the attribute
    monkeypatch.setitem(sys.modules, "qmlnb._openmp", None)
    monkeypatch.delattr(qmlnb, "_openmp", raising=False)
    usable, reason = openmp_native.probe()
    assert not usable and "qmlnb._openmp is not built" in reason
    with pytest.raises(BackendUnavailableError, match="pip install -e"):
        gram(random_states(3, 4, seed=9), backend="openmp")


def test_missing_numba_is_reported_with_the_install_step(monkeypatch):
    from qmlnb.kernels.backends import numba_jit

    monkeypatch.setitem(sys.modules, "numba", None)
    usable, reason = numba_jit.probe()
    assert not usable and "numba is not importable" in reason
    with pytest.raises(BackendUnavailableError, match="pip install numba"):
        gram(random_states(3, 4, seed=9), backend="numba")


def test_backend_modules_import_without_their_heavy_dependency():
    code = (
        "import sys, qmlnb.kernels.backends.numba_jit, qmlnb.kernels.backends.openmp_native; "
        "print('numba' in sys.modules, 'qmlnb._openmp' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", BACKENDS)
def test_without_its_mirror_a_backend_leaves_the_lower_triangle_to_the_caller(name, dtype):
    # the "upper" capability: gram(S, shots=...) lets the estimate write the lower triangle, once
    backend = get_backend(name)
    assert "upper" in backend.CAPABILITIES
    S = random_states(300, 32, 5)  # tiles of 64: diagonal and off-diagonal tiles, one partial
    whole = backend.gram(S, out=np.empty((300, 300), dtype=dtype), tile=64, n_threads=2)
    upper = backend.gram(S, out=np.full((300, 300), -7.0, dtype=dtype), tile=64, n_threads=2, mirror=False)
    above = np.triu_indices(300)
    np.testing.assert_array_equal(upper[above], whole[above])
    assert np.all(upper[np.tril_indices(300, -1)] == -7.0)
    np.testing.assert_allclose(whole, whole.T, rtol=0, atol=0)
