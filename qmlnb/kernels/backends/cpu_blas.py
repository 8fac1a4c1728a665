"""``cpu``: tiles of the Gram matrix as BLAS complex products (SciPy's BLAS).

Diagonal tiles use ``cherk`` (half the work), off-diagonal tiles ``cgemm``;
|.|^2 is taken in place on the tile's float32 view before it is stored.
The tile loop is serial: BLAS threads every product, and ``n_threads``
sets those threads for the duration of the call (threadpoolctl).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..tiling import mirror_upper_, tile_pairs

INSTALL = "pip install scipy threadpoolctl (part of the default install)"
DEFAULT_TILE = 2048
CAPABILITIES = frozenset({"states", "mps", "out", "client"})  # qmlnb.kernels.registry.CAPABILITIES


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


# MPS states: a tile of pairs at a time, batched einsum over the tile
MPS_DEFAULT_TILE = 128
# most work memory one tile of MPS pairs may hold: a tile's environments grow as tile^2 chi^2 (a bond of 64 at
# the default tile would take 5 GiB for a 128 KiB output), so the tile shrinks with the bond to stay under it
MPS_WORK_BYTES = 256 << 20


def mps_pair_bytes(chi: int) -> int:
    """Work bytes per pair of a tile in :func:`mps_log_overlaps`: complex128 environment, its half-contracted
    (2, chi, chi) form and the next environment, the float64 moduli, and slack for einsum's temporaries."""
    return (16 + 32 + 16 + 8 + 8) * chi * chi


def mps_tile(tile: int, chi: int) -> int:
    """The tile edge :func:`gram_mps` uses: ``tile``, made smaller (at least 1) so one tile's work stays within
    ``MPS_WORK_BYTES``."""
    return max(1, min(tile, math.isqrt(MPS_WORK_BYTES // mps_pair_bytes(chi))))


def mps_work_bytes(tile: int, n_rows: int, n_cols: int, chi: int) -> int:
    """Most work memory :func:`gram_mps` holds for an (n_rows, n_cols) Gram of bond ``chi`` (bytes): one tile's
    pair environments and the two blocks' site tensors in complex128."""
    t = mps_tile(tile, chi)
    ti, tj = min(t, n_rows), min(t, n_cols)
    return ti * tj * mps_pair_bytes(chi) + (ti + tj) * 2 * chi * chi * 16


def mps_log_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """<a_i|b_j> for all pairs of two blocks of MPS tensors, as (mantissa, log scale).

    Parameters
    ----------
    a : ndarray, shape (ti, n, 2, chi, chi), complex64
    b : ndarray, shape (tj, n, 2, chi, chi), complex64

    Returns
    -------
    (overlap, log_scale) : (ti, tj) complex128 and (ti, tj) float64 with
    <a_i|b_j> = overlap * exp(log_scale).  The environment is divided by its
    largest modulus after every site (so it cannot underflow) and the log of
    that factor accumulated.
    """
    ti, tj, chi = a.shape[0], b.shape[0], a.shape[3]
    env = np.zeros((ti, tj, chi, chi), dtype=np.complex128)
    env[:, :, 0, 0] = 1.0
    log_scale = np.zeros((ti, tj))
    for k in range(a.shape[1]):
        ak, bk = a[:, k].astype(np.complex128).conj(), b[:, k].astype(np.complex128)
        # E'[b, b'] = sum_s sum_{x, y} conj(A_s[x, b]) E[x, y] B_s[y, b']
        half = np.einsum("ijxy,jsyc->ijsxc", env, bk)
        env = np.einsum("isxb,ijsxc->ijbc", ak, half)
        scale = np.abs(env).max(axis=(2, 3))
        scale[scale == 0] = 1.0
        env /= scale[:, :, None, None]
        log_scale += np.log(scale)
    return env[:, :, 0, 0], log_scale


def kernel_from_log(overlap: np.ndarray, log_scale: np.ndarray, dest: np.ndarray) -> None:
    """dest[...] = |overlap|^2 exp(2 log_scale), computed in logs (0 where it underflows the dtype)."""
    with np.errstate(divide="ignore"):
        log_k = 2.0 * (np.log(np.abs(overlap)) + log_scale)
    np.exp(log_k, out=dest, casting="unsafe")


def gram_mps(A, B=None, *, out, tile, n_threads):
    """Fill ``out`` with |<A_i|B_j>|^2 of validated ``MPSStates`` (upper tiles only when ``B is None``).

    NumPy's einsum does the contraction for a whole tile of pairs per site;
    ``n_threads`` caps the BLAS threads (einsum itself is single-threaded).
    """
    a = A.tensors
    b = a if B is None else B.tensors
    tile = mps_tile(tile, a.shape[3])
    with blas_threads().limit(limits=n_threads, user_api="blas"):
        for i0, i1, j0, j1 in tile_pairs(a.shape[0], None if B is None else b.shape[0], tile):
            overlap, log_scale = mps_log_overlaps(a[i0:i1], b[j0:j1])
            kernel_from_log(overlap, log_scale, out[i0:i1, j0:j1])
    if B is None:
        mirror_upper_(out)
    return out
