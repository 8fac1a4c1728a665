"""``cpu``: tiles of the Gram matrix as BLAS complex products (SciPy's BLAS).

Diagonal tiles use ``cherk`` (half the work), off-diagonal tiles ``cgemm``;
|.|^2 is taken in place on the tile's float32 view before it is stored.
The tile loop is serial: BLAS threads every product, and ``n_threads``
sets those threads for the duration of the call (threadpoolctl).
"""
from __future__ import annotations

import functools

import numpy as np

from ..tiling import mirror_upper_, tile_pairs

INSTALL = "pip install scipy threadpoolctl (part of the default install)"
DEFAULT_TILE = 2048


def probe() -> tuple[bool, str]:
    try:
        import scipy.linalg.blas  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError as exc:  # pragma: no cover - both are hard dependencies
        return False, f"import failed: {exc}"
    return True, "NumPy/SciPy BLAS"


def abs2_into(product: np.ndarray, dest: np.ndarray) -> None:
    """dest[...] = |product|^2 for a C-contiguous complex64 block, squaring in place."""
    parts = product.view(np.float32).reshape(*product.shape, 2)
    np.square(parts, out=parts)
    np.add(parts[..., 0], parts[..., 1], out=dest)


@functools.lru_cache(maxsize=1)
def blas_threads():
    """A threadpoolctl controller of the loaded BLAS libraries, made once.

    ``threadpool_limits`` rescans every loaded shared library on each call
    (milliseconds, more with torch loaded), which dominated small Grams.
    """
    from scipy.linalg import blas  # noqa: F401  (load SciPy's BLAS before the scan)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def gram(A, B=None, *, out, tile, n_threads):
    from scipy.linalg import blas

    # BLAS sees a C-ordered (t, d) row block as the Fortran (d, t) matrix
    # X = block^T.  X_j^H X_i is then a Fortran (t_j, t_i) array whose memory,
    # read in C order, is the (t_i, t_j) block of conj(A_i A_j^H): rows land
    # contiguously in ``out`` and the conjugate has the same modulus.
    with blas_threads().limit(limits=n_threads, user_api="blas"):
        for i0, i1, j0, j1 in tile_pairs(A.shape[0], None if B is None else B.shape[0], tile):
            xi = A[i0:i1].T
            if B is None and i0 == j0:
                # Fortran lower triangle = C-order upper triangle; mirror_upper_ fills the rest
                block = blas.cherk(1.0, xi, trans=2, lower=1)
            else:
                xj = (A if B is None else B)[j0:j1].T
                block = blas.cgemm(1.0, xj, xi, trans_a=2)
            abs2_into(block.T, out[i0:i1, j0:j1])
    if B is None:
        mirror_upper_(out)
    return out
