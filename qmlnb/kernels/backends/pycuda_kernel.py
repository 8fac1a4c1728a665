"""``pycuda``: a custom CUDA kernel (``gram_kernel.cu``) compiled at run time by PyCUDA.

Each thread block computes a 64 x 64 block of K from A and B rows staged in
shared memory, with the complex multiply-adds in registers and |.|^2 fused
into the store (see the comments in ``gram_kernel.cu``).  For a symmetric K
the launch covers only the blocks on or above the diagonal and stores each
value at both (i, j) and (j, i).

The host side works in tiles of ``tile`` rows (``DEFAULT_TILE`` = 8192, so a
20,000-state matrix is 3 x 3 tiles): the states are copied to every GPU once,
each tile is one kernel launch into a device buffer that is then copied into
the NumPy output (off-diagonal tiles of a symmetric K also get their
transposed copy from the same launch).  Several GPUs share the tiles
round-robin (``qmlnb.kernels.multi_gpu``), each in its own thread with the
device's primary context.
"""
from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from ..multi_gpu import gram_tiles_on_devices
from ..validation import InsufficientMemoryError

INSTALL = (
    'pip install -e ".[gpu]" on a machine with an NVIDIA GPU, its driver and the full CUDA toolkit '
    "(PyCUDA builds from source and needs cuda.h and curand.h: set CUDA_ROOT, e.g. "
    "CUDA_ROOT=/usr/local/cuda, and put nvcc on PATH); see docs/gpu.md"
)
DEFAULT_TILE = 8192
CAPABILITIES = frozenset({"states", "out", "client"})  # qmlnb.kernels.registry.CAPABILITIES: no MPS kernel
KERNEL_SOURCE = Path(__file__).with_name("gram_kernel.cu")
BLOCK_EDGE = 64  # GRAM_TILE in gram_kernel.cu: K rows/columns per thread block
THREADS = (16, 16, 1)  # GRAM_THREADS x GRAM_THREADS
DEVICE_MEMORY_FRACTION = 0.8

_modules: dict[int, object] = {}  # device ordinal -> SourceModule loaded in its primary context
_modules_lock = threading.Lock()


def probe() -> tuple[bool, str]:
    try:
        import pycuda
        import pycuda.driver as cuda
    except ImportError as exc:
        return False, f"pycuda is not installed ({exc})"
    except Exception as exc:  # e.g. libcuda.so missing: PyCUDA fails while importing
        return False, f"pycuda cannot load the CUDA driver ({type(exc).__name__}: {exc})"
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:
        return False, f"the CUDA driver is not usable ({type(exc).__name__}: {exc})"
    if count == 0:
        return False, "the CUDA driver sees no GPU"
    names = sorted({cuda.Device(k).name() for k in range(count)})
    return True, f"PyCUDA {pycuda.VERSION_TEXT} on {count} CUDA device(s): {', '.join(names)}"


def kernel_source() -> str:
    """The CUDA C++ source of the Gram kernel (package data)."""
    return KERNEL_SOURCE.read_text()


def _kernel(ordinal: int, dtype: np.dtype):
    """The compiled kernel for ``dtype`` output, in the (current) context of device ``ordinal``."""
    from pycuda.compiler import SourceModule

    with _modules_lock:
        if ordinal not in _modules:
            # no_extern_c: the source declares its own extern "C" entry points around a
            # template; PyCUDA caches the cubin on disk, so later processes skip nvcc
            _modules[ordinal] = SourceModule(kernel_source(), no_extern_c=True, options=["-O3"])
        module = _modules[ordinal]
    return module.get_function("gram_abs2_f32" if dtype == np.float32 else "gram_abs2_f64")


def launch_grid(n_rows: int, n_cols: int, triangular: bool) -> tuple[int, int]:
    """Grid of thread blocks for an (n_rows, n_cols) launch (triangular: upper blocks only)."""
    rows = -(-n_rows // BLOCK_EDGE)
    if triangular:
        return rows * (rows + 1) // 2, 1
    return -(-n_cols // BLOCK_EDGE), rows


def _check_device_memory(needed: int, ordinal: int, what: str) -> None:
    import pycuda.driver as cuda

    free, _total = cuda.mem_get_info()
    if needed > DEVICE_MEMORY_FRACTION * free:
        raise InsufficientMemoryError(
            f"{what} needs {needed / 2**30:.2f} GiB on CUDA device {ordinal} but only {free / 2**30:.2f} GiB is free "
            f"(limit {DEVICE_MEMORY_FRACTION:.0%} of it); use the torchcuda backend, which streams states "
            "that do not fit, or a smaller tile"
        )


def _work(A, B, out, tile, ordinal, pairs, advance) -> None:
    """Compute ``pairs`` on device ``ordinal`` into host ``out`` (runs in that device's thread)."""
    import pycuda.driver as cuda
    import pycuda.gpuarray as gpuarray

    cuda.init()  # idempotent; gram_on_devices may be called without gram
    context = cuda.Device(ordinal).retain_primary_context()
    context.push()
    try:
        symmetric = B is None
        tile_bytes = tile * tile * out.itemsize * (1 if B is not None else 2)
        _check_device_memory(A.nbytes + (0 if symmetric else B.nbytes) + tile_bytes, ordinal,
                             f"states {A.shape} plus a {tile} x {tile} tile")
        kernel = _kernel(ordinal, out.dtype)
        a_gpu = gpuarray.to_gpu(A)
        b_gpu = a_gpu if symmetric else gpuarray.to_gpu(B)
        d = A.shape[1]
        row_bytes = d * A.itemsize
        for i0, i1, j0, j1 in pairs:
            rows, cols = i1 - i0, j1 - j0
            triangular = symmetric and i0 == j0
            block = gpuarray.empty((rows, cols), out.dtype)
            mirror = gpuarray.empty((cols, rows), out.dtype) if symmetric and not triangular else None
            kernel(np.intp(int(a_gpu.gpudata) + i0 * row_bytes), np.intp(int(b_gpu.gpudata) + j0 * row_bytes),
                   block.gpudata, mirror.gpudata if mirror is not None else np.intp(0),
                   np.int32(rows), np.int32(cols), np.int32(d), np.int32(triangular),
                   block=THREADS, grid=launch_grid(rows, cols, triangular))
            out[i0:i1, j0:j1] = block.get()
            if mirror is not None:
                out[j0:j1, i0:i1] = mirror.get()
            advance(1)
    finally:
        context.pop()


def gram_on_devices(A, B, *, out, tile: int, devices) -> np.ndarray:
    """Fill host ``out`` with |A B^H|^2, tiles dealt round-robin over the CUDA device ordinals ``devices``.

    ``A``/``B``: validated C-contiguous complex64 arrays (B None: symmetric);
    ``out``: (N, M) float32 or float64 NumPy array.
    """
    gram_tiles_on_devices(A, B, tile, devices, functools.partial(_work, A, B, out, tile), desc="pycuda Gram tiles")
    return out


def gram(A, B=None, *, out, tile, n_threads):
    """Registry entry point: every visible CUDA device; ``n_threads`` is unused (the GPUs do the work)."""
    import pycuda.driver as cuda

    cuda.init()
    return gram_on_devices(A, B, out=out, tile=tile, devices=range(cuda.Device.count()))
