"""``cupy``: cuBLAS through CuPy, the GPU reference the other GPU backends are measured against.

The same tiling as the ``cpu`` backend, on the GPU: diagonal tiles of a
symmetric K are one ``cherk`` (half the multiply-adds), all other tiles one
``cgemm``, both called directly through CuPy's cuBLAS bindings so that no
conjugated or transposed copy of the states is made.  |.|^2 is one fused
elementwise kernel from the complex64 product into the output tile.  States
are copied to every GPU once; tiles are dealt round-robin over all visible
GPUs (``qmlnb.kernels.multi_gpu``).

Layout: cuBLAS is column-major, so the C-ordered (n, d) states are the
column-major (d, n) matrix X = A^T, and a C-ordered (rows, cols) tile is the
column-major (cols, rows) matrix.  The tile is therefore computed as
X_j^H X_i = conj(A_i B_j^H)^T, whose modulus is the tile we want.
"""
from __future__ import annotations

import functools
import numpy as np

from ..multi_gpu import gram_tiles_on_devices
from ..validation import InsufficientMemoryError

INSTALL = (
    'pip install cupy-cuda12x (or the gpu extra: pip install -e ".[gpu]") on a machine with an NVIDIA GPU '
    "and driver; see docs/gpu.md"
)
DEFAULT_TILE = 8192
CAPABILITIES = frozenset({"states", "out", "client"})  # qmlnb.kernels.registry.CAPABILITIES: no MPS kernel
DEVICE_MEMORY_FRACTION = 0.8

_ABS2_SOURCE = "k = (T)(z.real() * z.real() + z.imag() * z.imag())"


def probe() -> tuple[bool, str]:
    try:
        import cupy
    except ImportError as exc:
        return False, f"cupy is not installed ({exc})"
    except Exception as exc:  # a CuPy wheel for another CUDA version fails while importing
        return False, f"cupy cannot be imported ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"the CUDA runtime is not usable ({type(exc).__name__}: {exc})"
    if count == 0:
        return False, "the CUDA runtime sees no GPU"
    return True, f"CuPy {cupy.__version__} on {count} CUDA device(s)"


def _abs2_kernel():
    import cupy

    # squares in float32 like every other backend, then casts to the output type
    return cupy.ElementwiseKernel("complex64 z", "T k", _ABS2_SOURCE, "qmlnb_abs2")


def _work(A, B, out, tile, ordinal, pairs, advance) -> None:
    """Compute ``pairs`` on device ``ordinal`` into host ``out`` (runs in that device's thread)."""
    import cupy
    from cupy_backends.cuda.libs import cublas

    with cupy.cuda.Device(ordinal):
        symmetric = B is None
        free = cupy.cuda.runtime.memGetInfo()[0]
        needed = A.nbytes + (0 if symmetric else B.nbytes) + tile * tile * (8 + 2 * out.itemsize)
        if needed > DEVICE_MEMORY_FRACTION * free:
            raise InsufficientMemoryError(
                f"states {A.shape} plus a {tile} x {tile} tile need {needed / 2**30:.2f} GiB on CUDA device {ordinal} "
                f"but only {free / 2**30:.2f} GiB is free (limit {DEVICE_MEMORY_FRACTION:.0%} of it); use the "
                "torchcuda backend, which streams states that do not fit, or a smaller tile"
            )
        handle = cupy.cuda.device.get_cublas_handle()
        cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
        # host scalars for the host pointer mode; kept alive for the whole loop
        one_c, zero_c = np.ones(1, np.complex64), np.zeros(1, np.complex64)
        one_r, zero_r = np.ones(1, np.float32), np.zeros(1, np.float32)
        abs2 = _abs2_kernel()
        a_gpu = cupy.asarray(A)
        b_gpu = a_gpu if symmetric else cupy.asarray(B)
        d = A.shape[1]
        row_bytes = d * A.itemsize
        for i0, i1, j0, j1 in pairs:
            rows, cols = i1 - i0, j1 - j0
            a_ptr = a_gpu.data.ptr + i0 * row_bytes
            if symmetric and i0 == j0:
                # cherk fills the column-major lower triangle = the C-ordered upper one;
                # zeros elsewhere so the mirroring below is one exact add
                product = cupy.zeros((rows, rows), np.complex64)
                cublas.cherk(handle, cublas.CUBLAS_FILL_MODE_LOWER, cublas.CUBLAS_OP_C, rows, d,
                             one_r.ctypes.data, a_ptr, d, zero_r.ctypes.data, product.data.ptr, rows)
            else:
                product = cupy.empty((rows, cols), np.complex64)
                cublas.cgemm(handle, cublas.CUBLAS_OP_C, cublas.CUBLAS_OP_N, cols, rows, d,
                             one_c.ctypes.data, b_gpu.data.ptr + j0 * row_bytes, d, a_ptr, d,
                             zero_c.ctypes.data, product.data.ptr, cols)
            block = abs2(product, cupy.empty((rows, cols), out.dtype))
            del product
            if symmetric and i0 == j0:
                block += cupy.triu(block, 1).T
            out[i0:i1, j0:j1] = block.get()
            if symmetric and i0 != j0:
                out[j0:j1, i0:i1] = cupy.ascontiguousarray(block.T).get()
            advance(1)


def gram_on_devices(A, B, *, out, tile: int, devices) -> np.ndarray:
    """Fill host ``out`` with |A B^H|^2, tiles dealt round-robin over the CUDA device ordinals ``devices``.

    ``A``/``B``: validated C-contiguous complex64 arrays (B None: symmetric);
    ``out``: (N, M) float32 or float64 NumPy array.
    """
    gram_tiles_on_devices(A, B, tile, devices, functools.partial(_work, A, B, out, tile), desc="cupy Gram tiles")
    return out


def gram(A, B=None, *, out, tile, n_threads):
    """Registry entry point: every visible CUDA device; ``n_threads`` is unused (the GPUs do the work)."""
    import cupy

    return gram_on_devices(A, B, out=out, tile=tile, devices=range(cupy.cuda.runtime.getDeviceCount()))
