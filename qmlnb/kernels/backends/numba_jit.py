"""``numba``: a JIT-compiled tiled Gram kernel (``prange`` over tiles).

The output tiles (only those on or above the diagonal when ``B is None``)
form one flat list that ``prange`` hands out one tile at a time
(``parallel_chunksize(1)``), so threads stay balanced although diagonal
tiles are half work.  Per tile and per block of ``KC`` state entries, the
rows are packed into planar float32 real/imaginary arrays; a 4 x 2 block of
complex dot products is then accumulated in 16 scalar registers while LLVM
vectorises the loop over the state entries (``fastmath`` allows the
reordered sums).  Each finished tile is written to its place and, in the
symmetric case, to its mirror place.

numba is imported on the first ``probe``/``gram`` call, not with this
module; the compiled kernel is cached on disk (``cache=True``), so only the
first call in a fresh environment pays the compile time.
"""
from __future__ import annotations

import numpy as np

from ..tiling import tile_pairs

INSTALL = "pip install numba (part of the default install)"
DEFAULT_TILE = 128
# "upper": gram/gram_mps(..., mirror=False) leave a symmetric Gram's lower triangle to the caller (the shot-sampled
# estimate writes it)
CAPABILITIES = frozenset({"states", "mps", "out", "client", "upper"})  # qmlnb.kernels.registry.CAPABILITIES
# State entries per cache block: the packed rows of a tile (4 planar arrays of
# tile x KC float32, 1 MiB at tile 128) stay in L2.
KC = 512

_kernels = None
# The numba runtime's thread count and the ids of the threads that computed
# tiles in the last gram call (read by the tests).
LAST_CALL: dict = {"num_threads": 0, "thread_ids": []}


def probe() -> tuple[bool, str]:
    try:
        import numba
    except ImportError as exc:
        return False, f"numba is not importable: {exc}"
    return True, f"numba {numba.__version__} JIT, up to {numba.config.NUMBA_NUM_THREADS} threads"


def _compile():
    """(Gram kernel, thread-count probe), jitted (or loaded from numba's cache) on first use."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import numba
    from numba import prange

    f32 = np.float32

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def gram_tiles(A, B, tiles, symmetric, mirror, kc_block, out, owner):
        """Fill out with |A B^H|^2 tile by tile.

        A (N, 2d), B (M, 2d): float32 views of complex64 states (re, im
        interleaved).  tiles (T, 4) int64 rows (i0, i1, j0, j1).  symmetric:
        B is A and only upper tiles are listed; each is also written to its
        mirror if ``mirror``.  owner[t] receives the id of the thread that computed tile t.
        """
        d = A.shape[1] // 2
        for t in prange(tiles.shape[0]):
            owner[t] = numba.get_thread_id()
            i0, i1, j0, j1 = tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3]
            m, n = i1 - i0, j1 - j0
            diagonal = symmetric and i0 == j0
            ar = np.empty((m, kc_block), f32)
            ai = np.empty((m, kc_block), f32)
            br = np.empty((n, kc_block), f32)
            bi = np.empty((n, kc_block), f32)
            cre = np.zeros((m, n), f32)
            cim = np.zeros((m, n), f32)
            for k0 in range(0, d, kc_block):
                kc = min(kc_block, d - k0)
                for r in range(m):
                    for k in range(kc):
                        ar[r, k] = A[i0 + r, 2 * (k0 + k)]
                        ai[r, k] = A[i0 + r, 2 * (k0 + k) + 1]
                for c in range(n):
                    for k in range(kc):
                        br[c, k] = B[j0 + c, 2 * (k0 + k)]
                        bi[c, k] = B[j0 + c, 2 * (k0 + k) + 1]
                for r0 in range(0, m, 4):
                    # Rows past the tile edge repeat the last row: computed, never stored.
                    r1, r2, r3 = min(r0 + 1, m - 1), min(r0 + 2, m - 1), min(r0 + 3, m - 1)
                    for c0 in range(0, n, 2):
                        if diagonal and r0 > c0 + 1:
                            continue  # wholly below the diagonal: the mirror fills it
                        c1 = min(c0 + 1, n - 1)
                        re00 = re01 = re10 = re11 = re20 = re21 = re30 = re31 = f32(0.0)
                        im00 = im01 = im10 = im11 = im20 = im21 = im30 = im31 = f32(0.0)
                        for k in range(kc):
                            x0r, x0i, x1r, x1i = ar[r0, k], ai[r0, k], ar[r1, k], ai[r1, k]
                            x2r, x2i, x3r, x3i = ar[r2, k], ai[r2, k], ar[r3, k], ai[r3, k]
                            y0r, y0i, y1r, y1i = br[c0, k], bi[c0, k], br[c1, k], bi[c1, k]
                            # a . conj(b): Re = ar br + ai bi, Im = ai br - ar bi
                            re00 += x0r * y0r + x0i * y0i
                            im00 += x0i * y0r - x0r * y0i
                            re01 += x0r * y1r + x0i * y1i
                            im01 += x0i * y1r - x0r * y1i
                            re10 += x1r * y0r + x1i * y0i
                            im10 += x1i * y0r - x1r * y0i
                            re11 += x1r * y1r + x1i * y1i
                            im11 += x1i * y1r - x1r * y1i
                            re20 += x2r * y0r + x2i * y0i
                            im20 += x2i * y0r - x2r * y0i
                            re21 += x2r * y1r + x2i * y1i
                            im21 += x2i * y1r - x2r * y1i
                            re30 += x3r * y0r + x3i * y0i
                            im30 += x3i * y0r - x3r * y0i
                            re31 += x3r * y1r + x3i * y1i
                            im31 += x3i * y1r - x3r * y1i
                        block_re = ((re00, re01), (re10, re11), (re20, re21), (re30, re31))
                        block_im = ((im00, im01), (im10, im11), (im20, im21), (im30, im31))
                        for x in range(4):
                            if r0 + x < m:
                                for y in range(2):
                                    if c0 + y < n:
                                        cre[r0 + x, c0 + y] += block_re[x][y]
                                        cim[r0 + x, c0 + y] += block_im[x][y]
            for r in range(m):
                for c in range(r if diagonal else 0, n):
                    out[i0 + r, j0 + c] = cre[r, c] * cre[r, c] + cim[r, c] * cim[r, c]
            if symmetric and mirror:
                for c in range(n):
                    for r in range(c if diagonal else m):
                        out[j0 + c, i0 + r] = cre[r, c] * cre[r, c] + cim[r, c] * cim[r, c]

    @numba.njit
    def runtime_threads():
        return numba.get_num_threads()

    _kernels = gram_tiles, runtime_threads
    return _kernels


def gram(A, B=None, *, out, tile, n_threads, mirror=True):
    import numba

    if n_threads > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"n_threads={n_threads} exceeds numba's thread pool of {numba.config.NUMBA_NUM_THREADS} "
            "(set the environment variable NUMBA_NUM_THREADS before numba is imported to allow more)"
        )
    kernel, runtime_threads = _compile()
    tiles = np.array(tile_pairs(A.shape[0], None if B is None else B.shape[0], tile), dtype=np.int64)
    a = A.view(np.float32)
    b = a if B is None else B.view(np.float32)
    owner = np.zeros(len(tiles), dtype=np.int64)
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        # What the parallel runtime itself sees (a kernel that calls
        # get_num_threads could not be cached on disk, so a tiny one asks).
        LAST_CALL["num_threads"] = int(runtime_threads())
        # chunks of one tile: dynamic hand-out, balanced over the triangle
        with numba.parallel_chunksize(1):
            kernel(a, b, tiles, B is None, mirror, KC, out, owner)
    finally:
        numba.set_num_threads(previous)
    LAST_CALL["thread_ids"] = sorted(set(owner.tolist()))
    return out


# ---------------------------------------------------------------- MPS states
MPS_DEFAULT_TILE = 32
_mps_kernel = None


def _compile_mps():
    """The MPS pair kernel, jitted (or loaded from numba's cache) on first use."""
    global _mps_kernel
    if _mps_kernel is not None:
        return _mps_kernel
    import numba
    from numba import prange

    @numba.njit(parallel=True, fastmath=False, cache=True)
    def mps_tiles(a, b, tiles, symmetric, out):
        """Fill out[i, j] = |<a_i|b_j>|^2 for the pairs of each tile.

        a (N, n, 2, chi, chi), b (M, n, 2, chi, chi) complex64 site tensors;
        tiles (T, 4) int64 rows (i0, i1, j0, j1); symmetric: b is a, only
        upper tiles are listed and pairs below the diagonal are skipped
        (the caller mirrors them).  Per pair the chi x chi environment is
        contracted in complex128, divided by its largest modulus after every
        site, and the log of the factors is summed.
        """
        n_sites, chi = a.shape[1], a.shape[3]
        for t in prange(tiles.shape[0]):
            i0, i1, j0, j1 = tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3]
            env = np.empty((chi, chi), np.complex128)
            half = np.empty((2, chi, chi), np.complex128)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    if symmetric and j < i:
                        continue
                    env[:, :] = 0.0
                    env[0, 0] = 1.0
                    log_scale = 0.0
                    for k in range(n_sites):
                        for s in range(2):
                            for x in range(chi):
                                for c in range(chi):
                                    acc = 0j
                                    for y in range(chi):
                                        acc += env[x, y] * b[j, k, s, y, c]
                                    half[s, x, c] = acc
                        largest = 0.0
                        for p in range(chi):
                            for c in range(chi):
                                acc = 0j
                                for s in range(2):
                                    for x in range(chi):
                                        acc += np.conj(a[i, k, s, x, p]) * half[s, x, c]
                                env[p, c] = acc
                                largest = max(largest, abs(acc.real), abs(acc.imag))
                        if largest > 0.0:
                            env[:, :] /= largest
                            log_scale += np.log(largest)
                    value = abs(env[0, 0])
                    if value == 0.0:
                        out[i, j] = 0.0
                    else:
                        out[i, j] = np.exp(2.0 * (np.log(value) + log_scale))

    _mps_kernel = mps_tiles
    return _mps_kernel


def gram_mps(A, B=None, *, out, tile, n_threads, mirror=True):
    """Fill ``out`` with |<A_i|B_j>|^2 of validated ``MPSStates`` (``prange`` over tiles of pairs)."""
    import numba

    from ..tiling import mirror_upper_

    if n_threads > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"n_threads={n_threads} exceeds numba's thread pool of {numba.config.NUMBA_NUM_THREADS}")
    kernel = _compile_mps()
    a = A.tensors
    b = a if B is None else B.tensors
    tiles = np.array(tile_pairs(a.shape[0], None if B is None else b.shape[0], tile), dtype=np.int64)
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        with numba.parallel_chunksize(1):
            kernel(a, b, tiles, B is None, out)
    finally:
        numba.set_num_threads(previous)
    if B is None and mirror:
        mirror_upper_(out)
    return out
