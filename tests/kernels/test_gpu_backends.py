"""GPU Gram backends (torchcuda, pycuda, cupy), states on a torch device, several GPUs.

Without a GPU: the device-generic torch algorithm runs on torch's CPU device,
the tile scheduling over several "devices" runs with CPU devices, the CUDA
kernel is compiled with nvcc, and the availability reasons are checked.  The
tests that need a GPU are skipped with the reason ``probe()`` gives.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from qmlnb.kernels import BackendUnavailableError, FeatureMap, available_backends, gram
from qmlnb.kernels.backends import cupy_blas, pycuda_kernel, torch_cuda
from qmlnb.kernels.multi_gpu import deal_round_robin, run_on_devices
from qmlnb.kernels.states_torch import states_torch

CPU = torch.device("cpu")
TORCH_CUDA, TORCH_CUDA_REASON = torch_cuda.probe()
PYCUDA, PYCUDA_REASON = pycuda_kernel.probe()
CUPY, CUPY_REASON = cupy_blas.probe()
N_CUDA = torch.cuda.device_count() if TORCH_CUDA else 0
NVCC = shutil.which("nvcc") or shutil.which("/usr/local/cuda/bin/nvcc")

needs_torch_cuda = pytest.mark.skipif(not TORCH_CUDA, reason=f"torchcuda: {TORCH_CUDA_REASON}")
needs_pycuda = pytest.mark.skipif(not PYCUDA, reason=f"pycuda: {PYCUDA_REASON}")
needs_cupy = pytest.mark.skipif(not CUPY, reason=f"cupy: {CUPY_REASON}")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not found on PATH or in /usr/local/cuda/bin")


def random_states(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) complex64 unit rows."""
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n, d)) + 1j * rng.normal(size=(n, d))
    return (S / np.linalg.norm(S, axis=1, keepdims=True)).astype(np.complex64)


def reference(A, B=None) -> np.ndarray:
    """|A B^H|^2 in float64 from the complex64 states."""
    A = A.astype(np.complex128)
    B = A if B is None else B.astype(np.complex128)
    return np.abs(A @ B.conj().T) ** 2


@pytest.fixture(scope="module")
def states():
    return random_states(45, 32, 0), random_states(13, 32, 1)


# ---------------------------------------------------------------- states on a torch device
@pytest.mark.parametrize("kind", ["zz", "iqp"])
@pytest.mark.parametrize("n_qubits, reps, entanglement", [(1, 1, "linear"), (3, 3, "circular"), (6, 2, "full")])
def test_states_torch_equal_numpy_states(kind, n_qubits, reps, entanglement):
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=0.8, kind=kind)
    X = np.random.default_rng(2).uniform(-np.pi, np.pi, (23, n_qubits))
    S = states_torch(fm, X, CPU, batch_size=7)  # batches that do not divide N
    assert isinstance(S, torch.Tensor) and S.dtype == torch.complex64 and S.device == CPU
    assert S.shape == (23, 2**n_qubits)
    np.testing.assert_allclose(S.numpy(), fm.states(X), atol=1e-5, rtol=0)
    np.testing.assert_allclose(torch.linalg.vector_norm(S, dim=1).numpy(), 1.0, atol=1e-5)


def test_states_torch_match_pennylane():
    fm = FeatureMap(n_qubits=3, reps=2, entanglement="linear", kind="zz")
    X = np.random.default_rng(3).uniform(-2, 2, (3, 3))
    S = states_torch(fm, X, "cpu").numpy()
    qnode = fm.qnode()
    for x, s in zip(X, S):
        np.testing.assert_allclose(s, np.asarray(qnode(x)), atol=1e-5)


@pytest.mark.parametrize(
    "X, kwargs, message",
    [
        (np.zeros((4, 3)), {}, "features per sample"),
        (np.zeros(2), {}, "must be 2-D"),
        (np.full((2, 2), np.nan), {}, "NaN"),
        (np.zeros((2, 2)), {"batch_size": 0}, "batch_size"),
        (np.zeros((2, 2)), {"batch_size": 1.5}, "batch_size"),
    ],
)
def test_states_torch_rejects_bad_input(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        states_torch(FeatureMap(n_qubits=2), X, CPU, **kwargs)


def test_states_torch_needs_a_feature_map():
    with pytest.raises(TypeError, match="FeatureMap"):
        states_torch("zz", np.zeros((2, 2)), CPU)


# ---------------------------------------------------------------- the torch algorithm on the CPU device
@pytest.mark.parametrize("tile", [1, 7, 16, 64])
def test_gram_device_symmetric(states, tile):
    A, _ = states
    K = torch_cuda.gram_device(A, device=CPU, tile=tile)
    assert isinstance(K, torch.Tensor) and K.device == CPU and K.dtype == torch.float64
    np.testing.assert_allclose(K.numpy(), reference(A), atol=1e-5, rtol=0)
    assert torch.equal(K, K.T)  # mirrored, not recomputed


@pytest.mark.parametrize("tile", [4, 13, 100])
def test_gram_device_rectangular(states, tile):
    A, B = states
    K = torch_cuda.gram_device(A, B, device=CPU, tile=tile)
    assert K.shape == (45, 13)
    np.testing.assert_allclose(K.numpy(), reference(A, B), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype, expected", [(np.float32, torch.float32), (torch.float32, torch.float32),
                                             ("float64", torch.float64), (torch.float64, torch.float64)])
def test_gram_device_output_dtype(states, dtype, expected):
    A, B = states
    K = torch_cuda.gram_device(A, B, device=CPU, tile=8, dtype=dtype)
    assert K.dtype == expected
    np.testing.assert_allclose(K.numpy(), reference(A, B), atol=1e-5, rtol=0)


def test_gram_device_single_state():
    A = random_states(1, 8, 4)
    K = torch_cuda.gram_device(A, device=CPU)
    assert K.shape == (1, 1)
    assert abs(K.item() - 1.0) < 1e-5


def test_gram_device_takes_states_already_on_the_device():
    fm = FeatureMap(n_qubits=4, reps=2)
    X = np.random.default_rng(5).uniform(-1, 1, (30, 4))
    S = states_torch(fm, X, CPU)
    K = torch_cuda.gram_device(S, device=CPU, tile=8, dtype=np.float32)
    np.testing.assert_allclose(K.numpy(), reference(fm.states(X)), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.diag(K.numpy()), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((np.zeros((3, 4), np.complex64), np.zeros((2, 8), np.complex64)), {}, ValueError, "different state dimensions"),
        ((np.zeros((3, 4), np.complex64),), {"tile": 0}, ValueError, "tile"),
        ((np.zeros((3, 4), np.complex64),), {"dtype": np.int32}, ValueError, "float32 or float64"),
        ((np.zeros((3, 4), np.complex64),), {"dtype": torch.complex64}, ValueError, "float32 or float64"),
        ((np.zeros(4, np.complex64),), {}, ValueError, "2-D"),
        ((torch.zeros(4, dtype=torch.complex64),), {}, ValueError, "2-D"),
        ((torch.zeros((0, 4), dtype=torch.complex64),), {}, ValueError, "empty"),
        ((torch.zeros((2, 4), dtype=torch.bool),), {}, ValueError, "numeric"),
        ((torch.full((2, 4), float("nan")),), {}, ValueError, "NaN"),
    ],
)
def test_gram_device_rejects_bad_input(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        torch_cuda.gram_device(*args, device=CPU, **kwargs)


def test_abs2_squares_in_place_and_symmetrize_copies_the_upper_triangle():
    z = torch.tensor([[3 + 4j, 1j], [2 + 0j, 0j]], dtype=torch.complex64)
    np.testing.assert_array_equal(torch_cuda.abs2(z).numpy(), [[25, 1], [4, 0]])
    block = torch.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(torch_cuda.symmetrize_upper(block).numpy(), [[0, 1, 2], [1, 4, 5], [2, 5, 8]])


# ---------------------------------------------------------------- several devices (CPU devices stand in)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rectangular", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_tiles_over_several_devices_equal_one_device(states, dtype, rectangular, threads):
    # the device threads compute with the caller's torch threads (a worker thread would start with
    # OpenMP's default and round its sums differently from the one-device run in the calling thread)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _tiles_over_several_devices_equal_one_device(states, dtype, rectangular)
    finally:
        torch.set_num_threads(previous)


def _tiles_over_several_devices_equal_one_device(states, dtype, rectangular):
    A, B = states
    B = B if rectangular else None
    shape = (A.shape[0], (A if B is None else B).shape[0])
    one, three = np.full(shape, -1.0, dtype), np.full(shape, -1.0, dtype)
    torch_cuda.gram_on_devices(A, B, out=one, tile=8, devices=[CPU])
    torch_cuda.gram_on_devices(A, B, out=three, tile=8, devices=[CPU, CPU, CPU])
    np.testing.assert_array_equal(one, three)
    np.testing.assert_allclose(three, reference(A, B), atol=1e-5, rtol=0)


def test_deal_round_robin():
    assert deal_round_robin(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert deal_round_robin([1], 2) == [[1], []]
    with pytest.raises(ValueError, match="n_workers"):
        deal_round_robin([1], 0)


def test_run_on_devices_uses_one_thread_per_device_and_covers_every_tile():
    seen, threads, lock = [], {}, threading.Lock()
    all_started = threading.Barrier(3, timeout=10)  # breaks unless the 3 workers run at once

    def work(device, tiles, advance):
        with lock:
            seen.extend(tiles)
            threads[device] = threading.get_ident()
        all_started.wait()
        advance(len(tiles))

    run_on_devices(["gpu0", "gpu1", "gpu2"], list(range(20)), work)
    assert sorted(seen) == list(range(20))
    assert len(set(threads.values())) == 3


def test_run_on_devices_reraises_a_worker_error():
    def work(device, tiles, advance):
        if device == "bad":
            raise RuntimeError("device bad failed")

    with pytest.raises(RuntimeError, match="device bad failed"):
        run_on_devices(["good", "bad"], list(range(4)), work)
    with pytest.raises(ValueError, match="no devices"):
        run_on_devices([], [1], work)


# ---------------------------------------------------------------- availability on this machine
def test_available_backends_lists_the_gpu_backends_with_reasons():
    import importlib.util

    from qmlnb.kernels.registry import get_backend

    report = available_backends()
    assert list(report) == ["cpu", "numba", "openmp", "torchcuda", "pycuda", "cupy"]
    # torchcuda: usable exactly when this torch is a CUDA build that sees a GPU, asked of torch itself
    usable, reason = report["torchcuda"]
    assert usable is (torch.version.cuda is not None and torch.cuda.is_available())
    if usable:
        assert reason.startswith(f"torch {torch.__version__} on {torch.cuda.device_count()} CUDA device(s): ")
    elif torch.version.cuda is None:
        assert reason == f"torch has no CUDA device here (torch {torch.__version__} is a CPU-only build)"
    else:
        assert reason == (f"torch has no CUDA device here (torch {torch.__version__}, built for CUDA "
                          f"{torch.version.cuda}, finds no GPU or driver)")
    # pycuda and cupy: not installed -> said so, with Python's own import error
    for name, package in (("pycuda", "pycuda"), ("cupy", "cupy")):
        usable, reason = report[name]
        if importlib.util.find_spec(package) is None:
            assert (usable, reason) == (False, f"{package} is not installed (No module named '{package}')")
        else:
            assert "CUDA" in reason
    # an unusable GPU backend's error carries the reason and the install step
    install = {"torchcuda": "install a CUDA build of torch", "pycuda": 'pip install -e ".[gpu]"',
               "cupy": "pip install cupy-cuda12x"}
    for name, step in install.items():
        usable, reason = report[name]
        if not usable:
            with pytest.raises(BackendUnavailableError) as info:
                get_backend(name)
            message = str(info.value)
            assert message.startswith(f"Gram backend {name!r} cannot run here: {reason}. To enable it: ")
            assert step in message


def test_backends_import_their_dependency_only_when_probed():
    code = (
        "import sys; from qmlnb.kernels import available_backends\n"
        "heavy = ('torch', 'numba', 'qmlnb._openmp', 'pycuda', 'cupy')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
        "available_backends()\n"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = result.stdout.split("\n")[:2]
    assert before == ""  # importing the kernels imports no backend's dependency
    # probing really asks each installed dependency (torch is a hard dependency, numba and the extension are built)
    assert {"torch", "numba", "qmlnb._openmp"} <= set(after.split())


@pytest.mark.skipif(PYCUDA, reason="pycuda is usable here")
def test_pycuda_unavailable_raises_with_reason_and_install_step(states):
    with pytest.raises(BackendUnavailableError) as info:
        gram(states[0], backend="pycuda")
    message = str(info.value)
    assert PYCUDA_REASON in message and 'pip install -e ".[gpu]"' in message and "CUDA_ROOT" in message


@pytest.mark.skipif(CUPY, reason="cupy is usable here")
def test_cupy_unavailable_raises_with_reason_and_install_step(states):
    with pytest.raises(BackendUnavailableError) as info:
        gram(states[0], backend="cupy")
    assert CUPY_REASON in str(info.value) and "cupy-cuda12x" in str(info.value)


@pytest.mark.skipif(TORCH_CUDA, reason="torch has a CUDA device here")
def test_torchcuda_unavailable_raises_with_reason(states):
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        gram(states[0], backend="torchcuda")
    with pytest.raises(BackendUnavailableError, match="CUDA build of torch"):
        torch_cuda.gram_device(states[0])  # default device: CUDA


def test_backend_modules_import_without_their_heavy_dependency():
    code = (
        "import sys; import qmlnb.kernels.backends.torch_cuda, qmlnb.kernels.backends.pycuda_kernel, "
        "qmlnb.kernels.backends.cupy_blas, qmlnb.kernels.multi_gpu; "
        "print(sorted(m for m in ('torch', 'pycuda', 'cupy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- the CUDA kernel, compiled without a GPU
def test_kernel_source_is_package_data():
    assert pycuda_kernel.KERNEL_SOURCE.is_file()
    source = pycuda_kernel.kernel_source()
    assert 'extern "C" __global__' in source and "gram_abs2_f32" in source and "gram_abs2_f64" in source
    assert f"#define GRAM_TILE {pycuda_kernel.BLOCK_EDGE}" in source  # host grid and kernel agree


@needs_nvcc
def test_kernel_compiles_cleanly_with_nvcc(tmp_path):
    result = subprocess.run(
        [NVCC, "--cubin", "-arch=sm_90", "-O3", "-Werror", "all-warnings", "-Xptxas", "-v",
         str(pycuda_kernel.KERNEL_SOURCE), "-o", str(tmp_path / "gram_kernel.cubin")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "gram_abs2_f32" in result.stderr and "gram_abs2_f64" in result.stderr
    assert "spill" in result.stderr and "bytes spill stores" in result.stderr
    for line in result.stderr.splitlines():  # register spills would wreck the inner loop
        if "spill stores" in line:
            assert line.strip().startswith("0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"), line


UPPER_BLOCK_CHECK = r"""
#include <cstdio>
#include <vector>
#include "%s"
int main() {
    // a launch of nt (nt + 1) / 2 blocks visits every block (bi <= bj < nt) exactly once
    for (long long nt = 1; nt <= 300; ++nt) {
        std::vector<int> hits(nt * nt, 0);
        for (long long t = 0; t < nt * (nt + 1) / 2; ++t) {
            int bi, bj;
            gram_upper_block(t, &bi, &bj);
            if (bi < 0 || bi > bj || bj >= nt) { printf("nt=%%lld t=%%lld -> (%%d, %%d)\n", nt, t, bi, bj); return 1; }
            hits[bi * nt + bj] += 1;
        }
        for (long long bi = 0; bi < nt; ++bi)
            for (long long bj = bi; bj < nt; ++bj)
                if (hits[bi * nt + bj] != 1) { printf("nt=%%lld block (%%lld, %%lld) hit %%d times\n", nt, bi, bj, hits[bi * nt + bj]); return 2; }
    }
    // the exact inverse of t = r (r + 1) / 2 + c, far beyond any real grid (double sqrt rounding)
    for (long long r = 0; r < 70000; r += 7)
        for (long long c = 0; c <= r; c += r / 5 + 1) {
            int bi, bj;
            gram_upper_block(r * (r + 1) / 2 + c, &bi, &bj);
            if (bi != c || bj != r) { printf("r=%%lld c=%%lld -> (%%d, %%d)\n", r, c, bi, bj); return 3; }
        }
    printf("ok\n");
    return 0;
}
"""


@needs_nvcc
def test_upper_block_mapping_covers_each_upper_block_once(tmp_path):
    harness = tmp_path / "check.cu"
    harness.write_text(UPPER_BLOCK_CHECK % pycuda_kernel.KERNEL_SOURCE)
    build = subprocess.run([NVCC, "-arch=sm_90", "-o", str(tmp_path / "check"), str(harness)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(tmp_path / "check")], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout


# The kernel run on the CPU: every CUDA thread of a block is a std::thread, __syncthreads is a
# barrier, __shared__ arrays are statics (blocks run one after another).  This checks the
# kernel's indexing, staging, bounds, triangular block mapping and mirrored stores against
# a float64 reference; it says nothing about speed.
EMULATION_SHIM = r"""
#include <barrier>
#include <cmath>
#include <thread>
#include <vector>
struct float2 { float x, y; };
struct dim3 { unsigned x = 0, y = 0, z = 0; };
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
thread_local dim3 threadIdx, blockIdx;
static std::barrier<> *block_barrier;
static inline void __syncthreads() { block_barrier->arrive_and_wait(); }
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#include "%s"
extern "C" void emulate(const float2 *A, const float2 *B, void *out, void *out_t, int n_rows, int n_cols,
                        int d, int triangular, int grid_x, int grid_y, int f64)
{
    const int threads = GRAM_THREADS * GRAM_THREADS;
    for (int by = 0; by < grid_y; ++by)
        for (int bx = 0; bx < grid_x; ++bx) {
            std::barrier<> barrier(threads);
            block_barrier = &barrier;
            std::vector<std::thread> pool;
            for (int t = 0; t < threads; ++t)
                pool.emplace_back([=] {
                    threadIdx = dim3{(unsigned)(t %% GRAM_THREADS), (unsigned)(t / GRAM_THREADS), 0};
                    blockIdx = dim3{(unsigned)bx, (unsigned)by, 0};
                    if (f64) gram_abs2_f64(A, B, (double *)out, (double *)out_t, n_rows, n_cols, d, triangular);
                    else gram_abs2_f32(A, B, (float *)out, (float *)out_t, n_rows, n_cols, d, triangular);
                });
            for (auto &th : pool) th.join();
        }
}
"""
CXX = shutil.which("g++")


@pytest.fixture(scope="module")
def kernel_emulation(tmp_path_factory):
    """ctypes library whose ``emulate(...)`` runs the CUDA kernel's launch on the CPU."""
    import ctypes

    if CXX is None:
        pytest.skip("g++ not found: cannot build the CPU emulation of the CUDA kernel")
    folder = tmp_path_factory.mktemp("kernel_emulation")
    (folder / "emulate.cpp").write_text(EMULATION_SHIM % pycuda_kernel.KERNEL_SOURCE)
    build = subprocess.run([CXX, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wall", "-Werror",
                            "-Wno-unknown-pragmas", str(folder / "emulate.cpp"), "-o", str(folder / "emulate.so")],
                           capture_output=True, text=True)
    if build.returncode != 0 and "barrier" in build.stderr:
        pytest.skip(f"{CXX} has no C++20 <barrier>: {build.stderr[:200]}")
    assert build.returncode == 0, build.stderr
    library = ctypes.CDLL(str(folder / "emulate.so"))
    library.emulate.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 7
    return library


@pytest.fixture(scope="module")
def emulated_kernel(kernel_emulation):
    """``run(A, B, dtype, triangular, with_transpose) -> (out, out_t)``: the CUDA kernel run on the CPU."""
    import ctypes

    def run(A, B, dtype, triangular, with_transpose=False):
        n, m, d = A.shape[0], B.shape[0], A.shape[1]
        out = np.full((n, m), np.nan, dtype)
        out_t = np.full((m, n), np.nan, dtype) if with_transpose else None
        pointer = lambda a: None if a is None else a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
        grid_x, grid_y = pycuda_kernel.launch_grid(n, m, triangular)
        kernel_emulation.emulate(pointer(A), pointer(B), pointer(out), pointer(out_t), n, m, d, int(triangular),
                                 grid_x, grid_y, int(dtype == np.float64))
        return out, out_t

    return run


@pytest.mark.parametrize("n, d", [(1, 2), (64, 4), (70, 40), (130, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_kernel_symmetric_launch(emulated_kernel, n, d, dtype):
    A = random_states(n, d, n + d)
    K, _ = emulated_kernel(A, A, dtype, triangular=True)
    assert not np.isnan(K).any()  # every entry written, upper blocks and their mirrors
    np.testing.assert_allclose(K, reference(A), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(K, K.T)


@pytest.mark.parametrize("n, m, d", [(70, 33, 40), (5, 130, 8), (64, 64, 16)])
def test_emulated_kernel_rectangular_launch_and_transposed_copy(emulated_kernel, n, m, d):
    A, B = random_states(n, d, 1), random_states(m, d, 2)
    K, K_t = emulated_kernel(A, B, np.float32, triangular=False, with_transpose=True)
    np.testing.assert_allclose(K, reference(A, B), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(K_t, K.T)
    K_only, _ = emulated_kernel(A, B, np.float64, triangular=False)  # out_t null: not written
    np.testing.assert_allclose(K_only, reference(A, B), atol=1e-5, rtol=0)


def fake_pycuda(emulation, n_devices: int, launches: list):
    """Modules standing in for pycuda: host arrays as device memory, the emulated kernel as launches."""
    import types

    current = threading.local()
    # the emulation's __shared__ statics and barrier are process-wide: one launch at a
    # time (the device threads still interleave their tiles)
    one_launch = threading.Lock()

    class Context:
        def __init__(self, ordinal):
            self.ordinal = ordinal

        def push(self):
            current.ordinal = self.ordinal

        def pop(self):
            current.ordinal = None

    class Device:
        def __init__(self, ordinal):
            assert 0 <= ordinal < n_devices
            self.ordinal = ordinal

        count = staticmethod(lambda: n_devices)
        name = lambda self: "Emulated GPU"  # noqa: E731
        retain_primary_context = lambda self: Context(self.ordinal)  # noqa: E731

    class Pointer:
        def __init__(self, array):
            self.array = array  # keeps the memory alive

        def __int__(self):
            return self.array.ctypes.data

    class GPUArray:
        def __init__(self, array):
            self.host = array
            self.gpudata = Pointer(array)

        def get(self):
            return self.host.copy()

    def launch(name):
        def kernel(a, b, out, out_t, n_rows, n_cols, d, triangular, *, block, grid):
            assert block == (16, 16, 1) and current.ordinal is not None  # inside a pushed context
            launches.append((current.ordinal, threading.get_ident(), grid))
            with one_launch:
                emulation.emulate(int(a), int(b), int(out), int(out_t) or None, int(n_rows), int(n_cols), int(d),
                                  int(triangular), grid[0], grid[1], int(name == "gram_abs2_f64"))
        return kernel

    class SourceModule:
        def __init__(self, source, no_extern_c=False, options=()):
            assert no_extern_c and "gram_abs2_f32" in source

        get_function = staticmethod(launch)

    driver = types.SimpleNamespace(init=lambda: None, Device=Device, mem_get_info=lambda: (8 << 30, 8 << 30))
    gpuarray = types.SimpleNamespace(to_gpu=lambda a: GPUArray(np.array(a)),
                                     empty=lambda shape, dtype: GPUArray(np.full(shape, np.nan, dtype)))
    compiler = types.SimpleNamespace(SourceModule=SourceModule)
    package = types.SimpleNamespace(VERSION_TEXT="emulated", driver=driver, gpuarray=gpuarray, compiler=compiler)
    return {"pycuda": package, "pycuda.driver": driver, "pycuda.gpuarray": gpuarray, "pycuda.compiler": compiler}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n_devices", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pycuda_host_code_with_the_emulated_kernel(kernel_emulation, monkeypatch, n_devices, dtype):
    """pycuda_kernel's tiling, pointer offsets, grids, mirrors and device threads, kernel emulated."""
    launches = []
    for name, module in fake_pycuda(kernel_emulation, n_devices, launches).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(pycuda_kernel, "_modules", {})
    assert pycuda_kernel.probe() == (True, f"PyCUDA emulated on {n_devices} CUDA device(s): Emulated GPU")
    A, B = random_states(75, 16, 10), random_states(40, 16, 11)
    K = gram(A, backend="pycuda", tile=32, dtype=dtype)  # 3 x 3 tiles, 6 computed, 2 of them ragged
    assert K.dtype == dtype
    np.testing.assert_allclose(K, reference(A), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(K, K.T)
    assert len(launches) == 6 and {ordinal for ordinal, _, _ in launches} == set(range(n_devices))
    assert len({thread for _, thread, _ in launches}) == n_devices
    K = gram(A, B, backend="pycuda", tile=32, dtype=dtype)
    np.testing.assert_allclose(K, reference(A, B), atol=1e-5, rtol=0)


def test_launch_grid():
    assert pycuda_kernel.launch_grid(64, 64, True) == (1, 1)
    assert pycuda_kernel.launch_grid(65, 65, True) == (3, 1)  # 2 block rows: (0,0) (0,1) (1,1)
    assert pycuda_kernel.launch_grid(100, 300, False) == (5, 2)


# ---------------------------------------------------------------- on a GPU (skipped without one)
GPU_BACKENDS = [
    pytest.param("torchcuda", marks=needs_torch_cuda),
    pytest.param("pycuda", marks=needs_pycuda),
    pytest.param("cupy", marks=needs_cupy),
]


@pytest.fixture(scope="module")
def gpu_states():
    return random_states(300, 256, 6), random_states(77, 256, 7)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("tile", [None, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_backend_equals_cpu_backend(backend, tile, dtype, gpu_states):
    A, B = gpu_states
    for args in [(A,), (A, B)]:
        expected = gram(*args, backend="cpu", dtype=dtype)
        K = gram(*args, backend=backend, tile=tile, dtype=dtype)
        assert K.dtype == dtype and K.shape == expected.shape
        np.testing.assert_allclose(K, expected, atol=1e-5, rtol=0)
        if len(args) == 1:
            np.testing.assert_array_equal(K, K.T)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_backend_small_and_odd_shapes(backend):
    for n, d in [(1, 2), (3, 2), (67, 8), (129, 64)]:
        A = random_states(n, d, n)
        np.testing.assert_allclose(gram(A, backend=backend), reference(A), atol=1e-5, rtol=0)


@needs_torch_cuda
def test_states_torch_on_cuda_equal_numpy_states():
    fm = FeatureMap(n_qubits=10, reps=2, entanglement="full")
    X = np.random.default_rng(8).uniform(-np.pi, np.pi, (200, 10))
    np.testing.assert_allclose(states_torch(fm, X, "cuda").cpu().numpy(), fm.states(X), atol=1e-5, rtol=0)


@needs_torch_cuda
def test_gram_device_on_cuda_stays_on_the_device(gpu_states):
    A, B = gpu_states
    K = torch_cuda.gram_device(torch.from_numpy(A).cuda(), torch.from_numpy(B).cuda(), tile=64)
    assert K.is_cuda and K.dtype == torch.float64
    np.testing.assert_allclose(K.cpu().numpy(), reference(A, B), atol=1e-5, rtol=0)


@needs_torch_cuda
def test_torchcuda_streams_states_that_do_not_fit(gpu_states, monkeypatch):
    A, B = gpu_states
    monkeypatch.setattr(torch_cuda, "_place", lambda *args: "streamed")  # as if the GPU were full
    for args in [(A,), (A, B)]:
        np.testing.assert_allclose(gram(*args, backend="torchcuda", tile=64), reference(*args), atol=1e-5, rtol=0)
        K = torch_cuda.gram_device(*args, tile=64)
        np.testing.assert_allclose(K.cpu().numpy(), reference(*args), atol=1e-5, rtol=0)


@pytest.mark.skipif(N_CUDA < 2, reason=f"needs 2 CUDA devices, torch sees {N_CUDA} ({TORCH_CUDA_REASON})")
@pytest.mark.parametrize("module", [torch_cuda, pytest.param(pycuda_kernel, marks=needs_pycuda),
                                    pytest.param(cupy_blas, marks=needs_cupy)])
def test_several_gpus_equal_one_gpu(module, gpu_states):
    A, B = gpu_states
    one_device = [torch.device("cuda", 0)] if module is torch_cuda else [0]
    all_devices = [torch.device("cuda", k) for k in range(N_CUDA)] if module is torch_cuda else range(N_CUDA)
    for b in (None, B):
        shape = (A.shape[0], A.shape[0] if b is None else b.shape[0])
        one, many = np.empty(shape), np.empty(shape)
        module.gram_on_devices(A, b, out=one, tile=64, devices=one_device)
        module.gram_on_devices(A, b, out=many, tile=64, devices=all_devices)
        np.testing.assert_allclose(many, one, atol=1e-6, rtol=0)
        np.testing.assert_allclose(many, reference(A, b), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the GPU benchmark harness (CPU smoke run)
def test_matmul_baseline_reports_the_product_throughput():
    from qmlnb.bench.gpu_baseline import matmul_baseline

    row = matmul_baseline(random_states(40, 16, 9), CPU, repeats=2, min_time=0.0)
    assert row["shape"] == [40, 16] and row["device"] == "cpu" and len(row["all_seconds"]) == 2
    assert row["seconds"] > 0 and row["gflops"] == pytest.approx(8 * 40 * 40 * 16 / row["seconds"] / 1e9)
    # the timing discipline: warm-up apart, the median of the recorded times, load and noisy recorded
    stats = row["timing"]
    assert stats["n"] == 2 and stats["times_s"] == row["all_seconds"] and stats["compile_s"] > 0
    assert stats["median_s"] == row["seconds"] and isinstance(stats["noisy"], bool) and stats["load_before"] >= 0
    more = matmul_baseline(random_states(40, 16, 9), CPU, repeats=2, min_time=0.05)
    assert sum(more["all_seconds"]) >= 0.05


def test_bench_gpu_smoke_run_on_the_cpu_device(tmp_path, capsys):
    import json

    from qmlnb.cli import main

    path = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--device", "cpu", "--cases", "40x4:60,9x3", "--repeats", "1", "--min-time", "0",
                 "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["device"] == "cpu" and "environment" in result
    first, second = result["cases"]
    assert (first["n"], first["n_qubits"], second["n"]) == (40, 4, 9)
    assert first["torch_on_device"]["max_abs_difference_vs_cpu"] < 1e-5
    assert first["targets"]["seconds_allowed"] == 60 and second["targets"]["seconds_allowed"] is None
    assert first["matmul_baseline"]["shape"] == [40, 16]
    assert set(first["host_backends"]) == {"torchcuda", "pycuda", "cupy"}
    for name, row in first["host_backends"].items():
        assert row["usable"] == available_backends()[name][0]


def test_bench_gpu_rejects_bad_options():
    from qmlnb.bench.gpu_baseline import parse_cases
    from qmlnb.cli import main

    assert parse_cases("20000x14:1,1000x16") == [(20000, 14, 1.0), (1000, 16, float("inf"))]
    with pytest.raises(ValueError, match="NxQUBITS"):
        parse_cases("20000-14")
    with pytest.raises(ValueError, match="not GPU backends"):
        main(["bench", "gpu", "--device", "cpu", "--backends", "cpu"])


@pytest.mark.skipif(TORCH_CUDA, reason="torch has a CUDA device here")
def test_bench_gpu_without_cuda_says_why(capsys):
    from qmlnb.cli import main

    assert main(["bench", "gpu"]) == 1
    assert "no CUDA device" in capsys.readouterr().out


# ---------------------------------------------------------------- cupy's elementwise kernel, compiled on the CPU
# CuPy pastes an ElementwiseKernel's operation into a loop over the elements, with each input a
# const value, each output a reference and each type placeholder (T) a typedef; complex64 is
# CuPy's thrust-like complex<float> (z.real(), z.imag(), real(z), abs(z), norm(z), conj(z)), which
# std::complex<float> matches.  The same loop compiled with g++ runs the backend's own source.
ELEMENTWISE_HARNESS = """
#include <complex>
#include <cstddef>
using std::abs; using std::conj; using std::imag; using std::norm; using std::real;
template <typename T>
static void elementwise(const std::complex<float> *in, T *out, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) {
        const std::complex<float> z = in[i];
        T &k = out[i];
        %s;
    }
}
extern "C" void abs2_f32(const void *in, void *out, std::size_t n)
{ elementwise((const std::complex<float> *)in, (float *)out, n); }
extern "C" void abs2_f64(const void *in, void *out, std::size_t n)
{ elementwise((const std::complex<float> *)in, (double *)out, n); }
"""


@pytest.fixture(scope="module")
def compile_elementwise(tmp_path_factory):
    """``compile(source) -> kernel(z, k)``: a ``complex64 z -> T k`` ElementwiseKernel operation, built with g++."""
    import ctypes

    if CXX is None:
        pytest.skip("g++ not found: cannot build cupy's elementwise kernel on the CPU")
    folder = tmp_path_factory.mktemp("elementwise")
    built = {}

    def compile_source(source: str):
        if source not in built:
            cpp, library = folder / f"abs2_{len(built)}.cpp", folder / f"abs2_{len(built)}.so"
            cpp.write_text(ELEMENTWISE_HARNESS % source)
            # no FMA contraction: float32 squares and their sum rounded as the source says
            build = subprocess.run([CXX, "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-Wall",
                                    "-Werror", str(cpp), "-o", str(library)], capture_output=True, text=True)
            assert build.returncode == 0, f"the elementwise source does not compile:\n{build.stderr}"
            built[source] = ctypes.CDLL(str(library))
        lib = built[source]

        def kernel(z, k):
            assert z.dtype == np.complex64 and z.shape == k.shape
            assert z.flags.c_contiguous and k.flags.c_contiguous
            run = {np.dtype(np.float32): lib.abs2_f32, np.dtype(np.float64): lib.abs2_f64}[k.dtype]
            run(ctypes.c_void_p(z.ctypes.data), ctypes.c_void_p(k.ctypes.data), ctypes.c_size_t(z.size))
            return k
        return kernel

    return compile_source


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_abs2_source_squares_the_modulus_in_float32(compile_elementwise, dtype):
    rng = np.random.default_rng(5)
    z = (rng.normal(size=(7, 9)) + 1j * rng.normal(size=(7, 9))).astype(np.complex64)
    z[0, :3] = [3 + 4j, -2j, 0]  # |z|^2 = 25, 4, 0
    k = compile_elementwise(cupy_blas._ABS2_SOURCE)(z, np.full(z.shape, np.nan, dtype))
    # float32 squares and sum (as every other backend), then cast to the output type
    expected = (z.real * z.real + z.imag * z.imag).astype(np.float32).astype(dtype)
    np.testing.assert_array_equal(k, expected)
    np.testing.assert_array_equal(k[0, :3], [25, 4, 0])


def test_elementwise_harness_fails_a_wrong_source(compile_elementwise):
    z = np.array([[1 + 2j, 3 - 1j]], np.complex64)
    wrong = compile_elementwise("k = (T)(z.real() * z.real() - z.imag() * z.imag())")(z, np.zeros(z.shape, np.float32))
    assert not np.array_equal(wrong, np.abs(z) ** 2)
    with pytest.raises(AssertionError, match="does not compile"):
        compile_elementwise("k = (T)(z.re * z.re)")


# ---------------------------------------------------------------- cupy host code against a BLAS-spec cuBLAS
def fake_cupy(n_devices: int, calls: list, compile_elementwise):
    """Modules standing in for cupy: host arrays as device memory, cuBLAS cgemm/cherk written
    from the BLAS definitions (column-major, leading dimensions, op flags, only the ``uplo``
    triangle written), so the backend's argument choices are checked independently, and
    ElementwiseKernel compiling the backend's own operation source with g++."""
    import contextlib
    import ctypes
    import types

    def column_major(pointer, rows, cols, ld, dtype):
        itemsize = np.dtype(dtype).itemsize
        buffer = (ctypes.c_char * ((ld * (cols - 1) + rows) * itemsize)).from_address(pointer)
        return np.ndarray((rows, cols), dtype, buffer=buffer, strides=(itemsize, ld * itemsize))

    def scalar(pointer, dtype):
        return np.frombuffer((ctypes.c_char * np.dtype(dtype).itemsize).from_address(pointer), dtype)[0]

    def op(matrix, trans):
        return {0: matrix, 1: matrix.T, 2: matrix.conj().T}[trans]

    def cgemm(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        calls.append("cgemm")
        a = column_major(A, *((m, k) if transa == 0 else (k, m)), lda, np.complex64)
        b = column_major(B, *((k, n) if transb == 0 else (n, k)), ldb, np.complex64)
        c = column_major(C, m, n, ldc, np.complex64)
        assert scalar(beta, np.complex64) == 0
        c[...] = scalar(alpha, np.complex64) * (op(a, transa) @ op(b, transb))

    def cherk(handle, uplo, trans, n, k, alpha, A, lda, beta, C, ldc):
        calls.append("cherk")
        assert trans in (0, 2)
        a = column_major(A, *((n, k) if trans == 0 else (k, n)), lda, np.complex64)
        c = column_major(C, n, n, ldc, np.complex64)
        assert scalar(beta, np.float32) == 0
        full = scalar(alpha, np.float32) * (a @ a.conj().T if trans == 0 else a.conj().T @ a)
        rows, cols = np.indices((n, n))
        triangle = rows >= cols if uplo == 0 else rows <= cols  # cuBLAS writes only this part
        c[triangle] = full[triangle]

    class DeviceArray(np.ndarray):
        @property
        def data(self):
            return types.SimpleNamespace(ptr=self.ctypes.data)

        def get(self):
            return np.array(self)

    device_array = lambda a: np.array(a).view(DeviceArray)  # noqa: E731

    def elementwise_kernel(in_params, out_params, source, name):
        assert in_params == "complex64 z" and out_params == "T k"
        return compile_elementwise(source)

    runtime = types.SimpleNamespace(getDeviceCount=lambda: n_devices, memGetInfo=lambda: (8 << 30, 8 << 30))
    cuda = types.SimpleNamespace(Device=lambda ordinal: contextlib.nullcontext(), runtime=runtime,
                                 device=types.SimpleNamespace(get_cublas_handle=lambda: 1))
    cupy = types.SimpleNamespace(
        __version__="emulated", cuda=cuda, ElementwiseKernel=elementwise_kernel,
        asarray=device_array, zeros=lambda shape, dtype: device_array(np.zeros(shape, dtype)),
        empty=lambda shape, dtype: device_array(np.full(shape, np.nan, dtype)),
        triu=lambda a, k=0: device_array(np.triu(a, k)), ascontiguousarray=device_array,
    )
    cublas = types.SimpleNamespace(
        cgemm=cgemm, cherk=cherk, setPointerMode=lambda handle, mode: None, CUBLAS_POINTER_MODE_HOST=0,
        CUBLAS_OP_N=0, CUBLAS_OP_T=1, CUBLAS_OP_C=2, CUBLAS_FILL_MODE_LOWER=0, CUBLAS_FILL_MODE_UPPER=1,
    )
    libs = types.SimpleNamespace(cublas=cublas)
    backends = types.SimpleNamespace(cuda=types.SimpleNamespace(libs=libs))
    return {"cupy": cupy, "cupy_backends": backends, "cupy_backends.cuda": backends.cuda,
            "cupy_backends.cuda.libs": libs, "cupy_backends.cuda.libs.cublas": cublas}


@pytest.mark.parametrize("n_devices", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_host_code_with_blas_spec_cublas(monkeypatch, compile_elementwise, n_devices, dtype):
    calls = []
    for name, module in fake_cupy(n_devices, calls, compile_elementwise).items():
        monkeypatch.setitem(sys.modules, name, module)
    assert cupy_blas.probe() == (True, f"CuPy emulated on {n_devices} CUDA device(s)")
    A, B = random_states(75, 16, 12), random_states(40, 16, 13)
    K = gram(A, backend="cupy", tile=32, dtype=dtype)
    assert K.dtype == dtype and sorted(calls) == ["cgemm"] * 3 + ["cherk"] * 3
    np.testing.assert_allclose(K, reference(A), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(K, K.T)
    K = gram(A, B, backend="cupy", tile=32, dtype=dtype)
    np.testing.assert_allclose(K, reference(A, B), atol=1e-5, rtol=0)
