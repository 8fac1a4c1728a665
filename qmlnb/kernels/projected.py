"""The projected quantum kernel: an RBF on the one-qubit reduced density matrices of a feature map's states.

Huang et al. 2021 ("Power of data in quantum machine learning", Nat. Commun.
12, 2631, eq. 9) project each state onto its n one-qubit reduced density
matrices rho_k(x) and compare those classically:

    k(x, x') = exp(-gamma * sum_k ||rho_k(x) - rho_k(x')||_F^2).

A one-qubit density matrix is ``(I + r . sigma) / 2`` with its Bloch vector
``r = (<X>, <Y>, <Z>)``, so ``||rho - rho'||_F^2 = |r - r'|^2 / 2`` and the
kernel is an ordinary RBF, ``exp(-(gamma / 2) |f(x) - f(x')|^2)``, on the 3n
real features ``f(x) = (<X_0>, <Y_0>, <Z_0>, <X_1>, ...)``.  (sQUlearn's
``ProjectedQuantumKernel(measurement="XYZ", outer_kernel="gaussian", gamma=g)``
is ``exp(-g |f - f'|^2)``: the same kernel at ``g = gamma / 2``.)

Where the time goes: the features cost one pass over the states (state
vectors: a reshape per qubit, no loop over samples) or, for matrix-product
states, O(n chi^3) per sample: the right environments of a sample are built
once, then one sweep from the left reads every rho_k (a numba kernel, one
sample per thread).  The samples are streamed in batches, so at most one
batch of states is ever held.  The Gram is then an RBF on (N, 3n) real
features: BLAS tiles (``rbf_gram``), only the upper tiles when symmetric,
optionally written to a resumable ``.npy`` file (``out=``, the ledger of
``qmlnb.kernels.out_of_core``) or computed as Dask tasks (``client=``).

>>> F = projected_features(FeatureMap(n_qubits=784), X, method="mps")   # (N, 2352) float64
>>> gamma = projected_gamma(F)                                          # 1 / median sum_k ||rho_k - rho_k'||^2
>>> K = projected_gram(F, gamma=gamma)                                  # (N, N) float64
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .._util import available_cores, check_positive_int, check_real
from .mps import MPSStates, check_mps
from .tiling import mirror_upper_, tile_pairs
from .validation import MAX_THREADS, check_fits_in_memory, check_states, check_threads

DEFAULT_TILE = 2048
# features of one batch of samples are computed from at most about this many bytes of states at once
FEATURE_BATCH_BYTES = 256 << 20
# pairs whose distances give projected_gamma's median (a seeded subset beyond this many samples)
GAMMA_MAX_SAMPLES = 2000


# ---------------------------------------------------------------- features
def bloch_features(S) -> np.ndarray:
    """(N, 3n) float64 Bloch vectors (<X_k>, <Y_k>, <Z_k>) of every qubit k of state-vector rows.

    S : (N, 2**n) complex, rows unit vectors in PennyLane's order (wire 0 the
    most significant bit), e.g. ``FeatureMap.states``.  Columns 3k, 3k+1,
    3k+2 are qubit k's X, Y and Z expectations, each rho_k normalised by its
    trace (so a row's complex64 rounding of the norm does not enter).
    Work: one pass over S per qubit in float64 blocks, no loop over samples.
    """
    S = check_states(S, "S")
    d = S.shape[1]
    n = d.bit_length() - 1
    if d != 1 << n or n < 1:
        raise ValueError(f"S has rows of length {d}; state vectors of n qubits have 2**n >= 2 amplitudes")
    out = np.empty((S.shape[0], 3 * n))
    rows = max(1, (32 << 20) // (16 * d))
    for start in range(0, S.shape[0], rows):
        block = S[start:start + rows].astype(np.complex128)
        for k in range(n):
            # amplitude index = (bits before wire k, bit of wire k, bits after)
            view = block.reshape(len(block), 1 << k, 2, d >> (k + 1))
            a0, a1 = view[:, :, 0, :], view[:, :, 1, :]
            p0 = np.einsum("nij,nij->n", a0.real, a0.real) + np.einsum("nij,nij->n", a0.imag, a0.imag)
            p1 = np.einsum("nij,nij->n", a1.real, a1.real) + np.einsum("nij,nij->n", a1.imag, a1.imag)
            rho01 = np.einsum("nij,nij->n", a0, a1.conj())
            out[start:start + rows, 3 * k:3 * k + 3] = _bloch(p0, p1, rho01)
    return out


def _bloch(p0, p1, rho01) -> np.ndarray:
    """(..., 3) Bloch vectors of rho = [[p0, rho01], [conj(rho01), p1]] / (p0 + p1)."""
    trace = p0 + p1
    # rho = (I + x X + y Y + z Z) / 2: rho01 = (x - i y) / 2, rho00 - rho11 = z
    return np.stack([2 * rho01.real / trace, -2 * rho01.imag / trace, (p0 - p1) / trace], axis=-1)


@functools.lru_cache(maxsize=1)
def _compile_mps_bloch():
    """The numba kernel of :func:`bloch_features_mps` (compiled on first use, cached on disk)."""
    import numba
    from numba import prange

    @numba.njit(cache=True)
    def rescale(m):
        top = 0.0
        for a in range(m.shape[0]):
            for b in range(m.shape[1]):
                top = max(top, abs(m[a, b]))
        if top > 0:
            m /= top

    def small_product(transpose_a: bool, op_b: str, accumulate: bool):
        """dest (+)= op(a) op(b) for small chi x chi matrices, op(a) = a or a^T, op(b) = b, b^H ("h") or conj(b)
        ("c"); the flags are constants of each compiled function, so its loops carry no branches."""

        @numba.njit(cache=True)
        def product(dest, a, b):
            for x in range(dest.shape[0]):
                for y in range(dest.shape[1]):
                    acc = 0j
                    for z in range(a.shape[0]):
                        left = a[z, x] if transpose_a else a[x, z]
                        if op_b == "h":
                            right = np.conj(b[y, z])
                        elif op_b == "c":
                            right = np.conj(b[z, y])
                        else:
                            right = b[z, y]
                        acc += left * right
                    dest[x, y] = dest[x, y] + acc if accumulate else acc

        return product

    a_b = small_product(False, "", False)  # dest = a b
    add_a_bh = small_product(False, "h", True)  # dest += a b^H
    at_b = small_product(True, "", False)  # dest = a^T b
    add_at_conjb = small_product(True, "c", True)  # dest += a^T conj(b)

    @numba.njit(cache=True)
    def one_sample(t, out, right, env, new, tmp, la):
        """Bloch vectors of one sample's sites t (n, 2, chi, chi) into out (3n,); the rest is work space."""
        n = t.shape[0]
        # right environments R_k = sum_s A_s R_k+1 A_s^H over the sites after k, each rescaled to max 1 (the
        # final rho is divided by its trace, so only ratios matter and nothing under- or overflows)
        env[:] = 0
        env[0, 0] = 1.0
        for k in range(n - 1, -1, -1):
            right[k] = env
            if k == 0:
                break
            new[:] = 0
            for s in range(2):
                a_b(tmp, t[k, s], env)
                add_a_bh(new, tmp, t[k, s])
            rescale(new)
            env[:] = new
        # sweep from the left: L_k from the sites before k;
        # rho_k[s, s'] = sum_(a', b') (L^T A_s R_k)[a', b'] conj(A_s'[a', b'])
        env[:] = 0
        env[0, 0] = 1.0
        for k in range(n):
            for s in range(2):
                at_b(la[s], env, t[k, s])
            rho00 = rho11 = rho01 = 0j
            a_b(tmp, la[0], right[k])
            for x in range(tmp.shape[0]):
                for y in range(tmp.shape[1]):
                    rho00 += tmp[x, y] * np.conj(t[k, 0, x, y])
                    rho01 += tmp[x, y] * np.conj(t[k, 1, x, y])
            a_b(tmp, la[1], right[k])
            for x in range(tmp.shape[0]):
                for y in range(tmp.shape[1]):
                    rho11 += tmp[x, y] * np.conj(t[k, 1, x, y])
            trace = (rho00 + rho11).real
            # rho = (I + x X + y Y + z Z) / 2: rho01 = (x - i y) / 2, rho00 - rho11 = z
            out[3 * k] = 2.0 * rho01.real / trace
            out[3 * k + 1] = -2.0 * rho01.imag / trace
            out[3 * k + 2] = (rho00 - rho11).real / trace
            # L_k+1[b, b'] = sum_s sum_a' (L^T A_s)[a', b] conj(A_s[a', b'])
            new[:] = 0
            for s in range(2):
                add_at_conjb(new, la[s], t[k, s])
            rescale(new)
            env[:] = new

    @numba.njit(parallel=True, cache=True)
    def mps_bloch(t, out):
        n_samples, n, _, chi, _ = t.shape
        for i in prange(n_samples):
            one_sample(t[i], out[i], np.empty((n, chi, chi), dtype=np.complex128),
                       np.empty((chi, chi), dtype=np.complex128), np.empty((chi, chi), dtype=np.complex128),
                       np.empty((chi, chi), dtype=np.complex128), np.empty((2, chi, chi), dtype=np.complex128))

    return mps_bloch


def bloch_features_mps(M: MPSStates, *, n_threads: int | None = None) -> np.ndarray:
    """(N, 3n) float64 Bloch vectors of every qubit of matrix-product states, O(n chi^3) per sample.

    M : ``MPSStates`` (``FeatureMap.mps``, ``CircuitFeatureMap.mps``), any
    gauge (no canonical form is assumed): each sample's right environments
    are contracted once (n chi^2 complex128 of work per thread), then one
    sweep from the left reads rho_k = tr_{not k} |psi><psi| / <psi|psi> at
    every site.  Environments are rescaled per site, so any n works.
    Column layout as :func:`bloch_features`.  ``n_threads``: numba threads
    (default: the cores of this process).
    """
    M = check_mps(M, "M")
    n_threads = check_threads(min(available_cores(), MAX_THREADS) if n_threads is None else n_threads)
    import numba

    kernel = _compile_mps_bloch()
    out = np.empty((M.n_samples, 3 * M.n_qubits))
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        kernel(M.tensors, out)
    finally:
        numba.set_num_threads(previous)
    if not np.isfinite(out).all():
        raise ValueError("M holds a state of zero norm: its reduced density matrices are undefined")
    return out


def projected_features(fm, X, *, method: str = "auto", batch_size: int | None = None,
                       n_threads: int | None = None) -> np.ndarray:
    """(N, 3n) float64 one-qubit Bloch vectors of ``fm``'s states of every row of X, streamed in batches.

    fm : ``FeatureMap`` or ``CircuitFeatureMap`` (any map with ``resolve_method``,
        ``states`` and ``mps``).
    X : (N, n_features) real features (scaled by the map's bandwidth inside it).
    method : "auto", "statevector" or "mps", resolved once for all N
        (``FeatureMap.resolve_method``); "mps" works at any number of qubits.
    batch_size : samples simulated at once (default: about
        ``FEATURE_BATCH_BYTES`` of states or site tensors per batch), so the
        states of all N samples are never held together.
    n_threads : threads of the MPS contraction.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
    chosen = fm.resolve_method(X.shape[0], method)
    if batch_size is None:
        if chosen == "mps":
            per_sample = fm.n_qubits * 2 * _mps_bond_bound(fm) ** 2 * 8
        else:
            per_sample = 8 * fm.dim
        batch_size = max(1, FEATURE_BATCH_BYTES // per_sample)
    batch_size = check_positive_int(batch_size, "batch_size")
    out = np.empty((X.shape[0], 3 * fm.n_qubits))
    for start in range(0, X.shape[0], batch_size):
        block = X[start:start + batch_size]
        if chosen == "mps":
            out[start:start + len(block)] = bloch_features_mps(fm.mps(block), n_threads=n_threads)
        else:
            out[start:start + len(block)] = bloch_features(fm.states(block))
    return out


def _mps_bond_bound(fm) -> int:
    """The padded bond dimension ``fm.mps`` builds at most (ValueError if the map has no MPS)."""
    if hasattr(fm, "mps_bond_dim"):  # FeatureMap: exact, 2**reps or 4**reps
        return fm.mps_bond_dim
    from .circuit_map import DEFAULT_MAX_BOND
    from .circuit_mps import check_mps_circuit

    return check_mps_circuit(fm.circuit, fm.max_bond or DEFAULT_MAX_BOND, fm.truncate)


# ---------------------------------------------------------------- kernel
def check_features(F, name: str, width: int | None = None) -> np.ndarray:
    """F as a C-contiguous (N, F) float64 array of finite values (``width`` columns if given)."""
    F = np.asarray(F)
    if F.ndim != 2 or F.shape[0] == 0 or F.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D feature matrix (n_samples, n_features), "
                         f"got shape {F.shape}")
    if not np.issubdtype(F.dtype, np.number) or np.iscomplexobj(F):
        raise ValueError(f"{name} must hold real numbers, got dtype {F.dtype}")
    if width is not None and F.shape[1] != width:
        raise ValueError(f"{name} has {F.shape[1]} features per sample but the other operand has {width}")
    F = np.ascontiguousarray(F, dtype=np.float64)
    if not np.isfinite(F).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return F


def check_gamma(gamma) -> float:
    return check_real(gamma, "gamma", 0, math.inf, closed="neither")


def _rbf_tile(a: np.ndarray, b: np.ndarray | None, sq_a: np.ndarray, sq_b: np.ndarray, dest: np.ndarray) -> None:
    """dest = exp(-|a_i - b_j|^2) of (pre-scaled) rows, one BLAS product (``b`` None: a's own symmetric tile)."""
    product = a @ (a if b is None else b).T
    d2 = np.subtract(sq_a[:, None] + sq_b[None, :], 2.0 * product, out=product)
    np.maximum(d2, 0.0, out=d2)  # rounding can make a tiny distance negative
    if b is None:
        np.fill_diagonal(d2, 0.0)  # exactly 1 on the diagonal, as the expansion may leave 1e-16
    np.exp(-d2, out=dest, casting="same_kind")


def rbf_gram(A, B=None, *, gamma: float, tile: int | None = None, n_threads: int | None = None,
             dtype=np.float64, out=None, verify: bool = True, client=None) -> np.ndarray:
    """K[i, j] = exp(-gamma |a_i - b_j|^2) of real feature rows, in BLAS tiles.

    A : (N, F) real;  B : (M, F) real, optional (omitted: the symmetric Gram
    of A, of which only the tiles on and above the diagonal are computed and
    then mirrored).  gamma > 0.  tile : tile edge (default 2048).
    n_threads : BLAS threads (default: the cores of this process).
    dtype : float32 or float64 output (computed in float64).
    out : ``.npy`` path: the tiles are written into that file, resumably
        (``qmlnb.kernels.out_of_core``'s metadata and ledger; a rerun skips
        the tiles written, after checking them when ``verify``), and the
        ``numpy.memmap`` is returned.
    client : a ``dask.distributed.Client``, "local" or a scheduler address
        (``kernels.distributed.connect``): each tile is a task (``n_threads``
        BLAS threads each, default 1), the features are scattered to every
        worker once and the tiles assembled here (not with ``out=``).
    Returns (N, N) or (N, M) ``dtype``.
    """
    from .backends.cpu_blas import blas_threads

    A = check_features(A, "A")
    B = None if B is None else check_features(B, "B", A.shape[1])
    gamma = check_gamma(gamma)
    tile = check_positive_int(DEFAULT_TILE if tile is None else tile, "tile")
    if client is not None and n_threads is None:
        n_threads = 1  # Dask workers run one task per worker thread
    n_threads = check_threads(min(available_cores(), MAX_THREADS) if n_threads is None else n_threads)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    # exp(-gamma |a - b|^2) = exp(-|a' - b'|^2) with rows scaled by sqrt(gamma): the tiles need no gamma, and a
    # file's fingerprint (of the scaled rows) changes with gamma, so a resume never mixes two bandwidths
    scale = math.sqrt(gamma)
    A = A * scale
    B = None if B is None else B * scale
    sq_a = np.einsum("ij,ij->i", A, A)
    sq_b = sq_a if B is None else np.einsum("ij,ij->i", B, B)
    n_rows, n_cols = A.shape[0], (A.shape[0] if B is None else B.shape[0])
    pairs = tile_pairs(n_rows, None if B is None else n_cols, tile)

    def block(pair):
        return rbf_tile(A, B, pair, dtype, sq_a, sq_b)

    if client is not None:
        if out is not None:
            raise ValueError("rbf_gram writes to out= from this process only; pass out= or client=, not both")
        check_fits_in_memory(n_rows * n_cols * dtype.itemsize, f"a {n_rows} x {n_cols} {dtype} Gram matrix")
        K = _rbf_on_dask(A, B, pairs, client=client, dtype=dtype, n_threads=n_threads)
        if B is None:
            mirror_upper_(K)
        return K
    if out is not None:
        return _rbf_to_file(A, B, out, pairs, block, tile=tile, dtype=dtype, verify=verify, n_threads=n_threads)
    check_fits_in_memory(n_rows * n_cols * dtype.itemsize + 3 * tile * tile * 8,
                         f"a {n_rows} x {n_cols} {dtype} Gram matrix and its tiles")
    K = np.empty((n_rows, n_cols), dtype=dtype)
    with blas_threads().limit(limits=n_threads, user_api="blas"):
        for pair in pairs:
            i0, i1, j0, j1 = pair
            K[i0:i1, j0:j1] = block(pair)
    if B is None:
        mirror_upper_(K)
    return K


def rbf_tile(A, B, pair, dtype, sq_a=None, sq_b=None) -> np.ndarray:
    """Tile ``pair`` = (i0, i1, j0, j1) of exp(-|a - b|^2) of pre-scaled rows (B None: A's symmetric Gram), in
    ``dtype``; the squared row norms are computed for the tile's rows when not given."""
    i0, i1, j0, j1 = pair
    other = A if B is None else B
    sq_a = np.einsum("ij,ij->i", A[i0:i1], A[i0:i1]) if sq_a is None else sq_a[i0:i1]
    sq_b = np.einsum("ij,ij->i", other[j0:j1], other[j0:j1]) if sq_b is None else sq_b[j0:j1]
    dest = np.empty((i1 - i0, j1 - j0), dtype=dtype)
    _rbf_tile(A[i0:i1], None if B is None and i0 == j0 else other[j0:j1], sq_a, sq_b, dest)
    return dest


def _rbf_dask_task(A, B, pair, dtype: str, n_threads: int) -> np.ndarray:
    """Run on a Dask worker: one tile with ``n_threads`` BLAS threads."""
    from .backends.cpu_blas import blas_threads

    with blas_threads().limit(limits=n_threads, user_api="blas"):
        return rbf_tile(A, B, pair, np.dtype(dtype))


def _rbf_on_dask(A, B, pairs, *, client, dtype, n_threads: int) -> np.ndarray:
    """``rbf_gram``'s ``client=``: the tiles as tasks, assembled into one array here (upper tiles if symmetric)."""
    import uuid

    from distributed import as_completed

    from .distributed import connect

    K = np.empty((A.shape[0], A.shape[0] if B is None else B.shape[0]), dtype=dtype)
    with connect(client) as dask_client:
        # hash=False: a key per call, as kernels.distributed does (a repeated call never races a released key)
        a, b = (None if X is None else dask_client.scatter(X, broadcast=True, hash=False) for X in (A, B))
        run = uuid.uuid4().hex[:8]
        futures = {dask_client.submit(_rbf_dask_task, a, b, pair, dtype.name, n_threads,
                                      key=f"qmlnb-rbf-tile-{run}-{k}"): pair for k, pair in enumerate(pairs)}
        for future in as_completed(futures, loop=dask_client.loop):
            i0, i1, j0, j1 = futures[future]
            K[i0:i1, j0:j1] = future.result()
            future.release()
    return K


def _rbf_to_file(A, B, path, pairs, block, *, tile: int, dtype, verify: bool, n_threads: int):
    """``rbf_gram``'s ``out=``: tiles into a resumable ``.npy`` file (``out_of_core``'s file and ledger)."""
    from tqdm.auto import tqdm

    from .backends.cpu_blas import blas_threads
    from .out_of_core import open_output

    def exact(rows, cols):  # what a resume's spot checks compare stored entries with
        other = A if B is None else B
        return np.exp(-np.sum((A[rows] - other[cols]) ** 2, axis=1))

    target, ledger, file_pairs = open_output(A, B, path, tile=tile, dtype=dtype, verify=verify, exact=exact)
    assert file_pairs == pairs  # the same tiling rule (tile_pairs): a ledger index is a tile of ours
    pending = ledger.pending()
    with blas_threads().limit(limits=n_threads, user_api="blas"), \
            tqdm(total=len(pairs), initial=len(pairs) - len(pending), desc="RBF tiles to disk", unit="tile") as bar:
        try:
            for k in pending:
                checksum = target.write(pairs[k][0], pairs[k][2], block(pairs[k]), mirror=B is None)
                ledger.add(k, checksum, target.sync)
                bar.update()
        finally:  # also when interrupted: keep what is done
            ledger.commit(target.sync)
    return target.open("r+")


def projected_gram(F, G=None, *, gamma: float, **options) -> np.ndarray:
    """The projected quantum kernel exp(-gamma sum_k ||rho_k(x) - rho_k(x')||_F^2) from Bloch features.

    F : (N, 3n), G : (M, 3n) float64 from :func:`projected_features` (or
    ``bloch_features``/``bloch_features_mps``); ``||rho - rho'||_F^2`` is
    half the squared distance of Bloch vectors, so this is ``rbf_gram`` at
    gamma / 2.  ``options``: ``rbf_gram``'s tile, n_threads, dtype, out, verify.
    """
    return rbf_gram(F, G, gamma=check_gamma(gamma) / 2, **options)


def projected_gamma(F, factor: float = 1.0, *, max_samples: int = GAMMA_MAX_SAMPLES, seed: int = 0) -> float:
    """``factor / median_{i<j} sum_k ||rho_k(x_i) - rho_k(x_j)||_F^2``: the projected kernel's gamma scale.

    The same rule as the RBF control's (``qsvm.baselines.fit_rbf_alignment``:
    gamma = factor / median squared distance), on the density-matrix distance.
    F : (N, 3n) Bloch features; beyond ``max_samples`` rows the median is taken over a seeded subset.
    """
    F = check_features(F, "F")
    if F.shape[0] > max_samples:
        F = F[np.sort(np.random.default_rng(seed).choice(F.shape[0], max_samples, replace=False))]
    sq = np.einsum("ij,ij->i", F, F)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * F @ F.T, 0.0)[np.triu_indices(len(F), 1)]
    median = 0.5 * float(np.median(d2)) if d2.size else 0.0
    if not median > 0:
        raise ValueError("the reduced density matrices of these samples are all equal (median distance 0): "
                         "the projected kernel cannot tell them apart")
    return check_gamma(factor) / median
