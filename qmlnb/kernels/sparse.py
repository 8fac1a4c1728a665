"""``sparse_gram``: the fidelity kernel on each sample's k nearest neighbours only, as a SciPy CSR matrix.

At N = 10^5 samples a dense Gram is 10^10 entries (40 GB in float32); keeping
each sample's k most similar samples needs O(N k).  Two steps:

1. **Neighbours** (:func:`find_neighbours`): for every sample the k other
   samples of largest fidelity |<a_i|a_j>|^2.

   - ``"exact"``: every pair is computed, tile by tile, by the Gram backend
     (BLAS products of state tiles, or the MPS contraction); only tiles on or
     above the diagonal (each serves its rows and, transposed, its columns),
     and each tile is folded into a running top k per row right away, so
     memory is a few tiles plus O(N k), never N x N.  Time is still O(N^2 d):
     4 N^2 d flops, the tiles computed by ``n_threads`` worker threads.
   - ``"pynndescent"``, ``"faiss"`` (CPU) and ``"cuvs"`` (GPU): an approximate
     nearest-neighbour search in a real Euclidean space (below) returns
     ``candidates`` (default 4 k) per sample; their kernel values are
     computed (:func:`candidate_values`: blocks of samples against the union
     of their candidates, one BLAS product each) and the k largest kept.  The
     search is approximate, the values are not.

2. **Values**: the finders keep the kernel values of the pairs they rank
   (complex64 products, |.|^2 in float32, as a dense Gram's tile; for MPS
   candidates :func:`pair_kernel`, contracted site by site for a whole chunk
   of pairs at once), so no second pass over the pairs is made.  The graph is
   symmetrised (the union: (i, j) is kept if j is among i's neighbours or i
   among j's) and the diagonal added, so the result is a symmetric CSR matrix
   with between N (k + 1) and N (2 k + 1) stored entries.

Where the approximate search looks
----------------------------------
With a ``FeatureMap``, search its gate angles: ``features=search_features(fm, X)``
(:func:`search_features`).  The states are a smooth function of those angles,
and re-ranking 2 k of their Euclidean neighbours found 0.997 of the exact
fidelity neighbours at N = 100,000 (bench/results/sparse-100k-vm.json).

Without ``features=``: fidelity neighbours are the states with the largest |<a|b>|, which does not
depend on the states' global phases, while a Euclidean search sees
||a - b||^2 = 2 - 2 Re<a|b>.  The states' **real representation** is
therefore searched after fixing each state's phase against one reference
(the states' leading principal direction, estimated on a sample): if
b = e^{i t} a then both are rotated to the same vector, and for close states
the squared Euclidean distance is about 2 - 2 |<a|b>|.  The phase-fixed states are
projected on their ``dims`` leading principal directions (default 256 complex,
512 real coordinates): a search index over N x 2^n floats would cost as much
memory as the states themselves.  For MPS (no state vector) pass
``features=`` (the embeddings, or any (N, F) real array whose Euclidean
neighbours approximate the kernel's); the search then runs there.

Either way the search's metric is only a proxy for the kernel, so its quality
is measured against the kernel itself: :func:`neighbour_recall` compares the
neighbour lists with the exact finder's (recall@k: the fraction of each
sample's k exact fidelity neighbours that were found).
"""
from __future__ import annotations

import itertools

import numpy as np

from .._util import available_cores, check_option, check_positive_int
from .mps import MPSStates, check_mps, paired_log_overlaps
from .registry import get_backend
from .tiling import tile_pairs
from .validation import MAX_THREADS, check_embeddings, check_states, check_threads, check_unit_norms, row_norms

NEIGHBOUR_FINDERS = ("exact", "pynndescent", "faiss", "cuvs")
INSTALL_SPARSE = 'pip install "qmlnb[sparse]" (umap-learn, pynndescent, faiss-cpu)'
INSTALL_CUVS = ("pip install cuvs-cu12 cupy-cuda12x on a machine with an NVIDIA GPU and driver "
                "(see https://docs.rapids.ai/api/cuvs/stable/)")
# edge of the exact finder's tiles of the Gram: a float32 tile of 2048^2 is 16 MiB
EXACT_TILE = 2048
# work memory of one chunk of pair_kernel: the gathered neighbour states (state vectors) or the environments
PAIR_CHUNK_BYTES = 64 << 20
# rows of one re-ranking block of candidate_values: a block's product is (rows, union of their candidates)
RERANK_ROWS = 64
# complex principal directions of the phase-fixed states that the approximate CPU/GPU search indexes without
# features=: in a trial on N = 6,000 Fashion-MNIST-like states on 10 qubits, k = 32 (bandwidth 0.5, faiss HNSW),
# recall was 0.64 with 64 directions and 2 k candidates, 0.73 with 256 and 2 k, 0.77 with 256 and 4 k; more
# directions cost memory (8 bytes each per sample) and search time
DEFAULT_DIMS = 256
# cells of faiss's IVF index searched per query (of faiss_lists(N) cells)
FAISS_NPROBE = 8
# rows of the sample from which the reference phase and the principal directions are estimated
PCA_SAMPLE = 2048
# power iterations that estimate the reference direction of the phases
REFERENCE_ITERATIONS = 50


# ---------------------------------------------------------------- validation
def check_sparse_states(A):
    """Validated unit states: a C-contiguous (N, d) complex64 array or ``MPSStates``, else ValueError/TypeError."""
    return _checked_with_norms(A)[0]


def _checked_with_norms(A):
    """(validated states as :func:`check_sparse_states`, (N,) float64 norms of the states)."""
    if isinstance(A, MPSStates):
        A = check_mps(A, "A")
        norms = A.norms()
    else:
        A = check_states(A, "A")
        norms = row_norms(A)
    check_unit_norms(norms, "A")
    return A, norms


def check_k(k, n_samples: int) -> int:
    """``k`` as an int in [1, n_samples - 1] (each sample has n_samples - 1 others), else ValueError."""
    k = check_positive_int(k, "k")
    if k > n_samples - 1:
        raise ValueError(f"k={k} neighbours asked for, but each of the {n_samples} samples has only "
                         f"{n_samples - 1} others; use k <= {n_samples - 1}")
    return k


def check_neighbours(neighbours: str) -> str:
    return check_option(neighbours, "neighbours", NEIGHBOUR_FINDERS)


def _threads(n_threads) -> int:
    return check_threads(min(available_cores(), MAX_THREADS) if n_threads is None else n_threads)


# ---------------------------------------------------------------- pair values
def pair_kernel(A, rows, cols) -> np.ndarray:
    """|<a_i|a_j>|^2 for the pairs (rows[p], cols[p]) of validated states, batched: (P,) float64.

    A : (N, d) complex64 state vectors, or ``MPSStates``
    rows, cols : (P,) int arrays of sample indices

    State vectors: each chunk of pairs gathers both states and takes the
    row-wise product in complex128 (O(P d)).  MPS: each chunk's pairs are
    contracted together site by site (``mps.paired_log_overlaps``, O(P n
    chi^3)), in logs so that tiny values do not underflow before the end.
    The value of (i, j) is bitwise the value of (j, i).
    """
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    # the smaller index first: conj(a) b and conj(b) a round differently, so ordering makes the pair's
    # value one number whichever way round it was asked for
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    out = np.empty(len(rows))
    if isinstance(A, MPSStates):
        per_pair = 2 * A.n_qubits * 2 * A.bond_dim**2 * 16 + 4 * 2 * A.bond_dim**2 * 16
    else:
        per_pair = 2 * A.shape[1] * 16
    chunk = max(1, PAIR_CHUNK_BYTES // per_pair)
    for p0 in range(0, len(rows), chunk):
        i, j = lo[p0:p0 + chunk], hi[p0:p0 + chunk]
        if isinstance(A, MPSStates):
            overlap, log_scale = paired_log_overlaps(A.tensors[i], A.tensors[j])
            with np.errstate(divide="ignore"):
                out[p0:p0 + chunk] = np.exp(2.0 * (np.log(np.abs(overlap)) + log_scale))
        else:
            a, b = A[i].astype(np.complex128), A[j].astype(np.complex128)
            out[p0:p0 + chunk] = np.abs(np.einsum("pd,pd->p", a.conj(), b)) ** 2
    return out


# ---------------------------------------------------------------- exact finder
def _merge_top_k(best_val: np.ndarray, best_idx: np.ndarray, r0: int, block: np.ndarray, c0: int) -> None:
    """Fold a tile's values into the running top k of its rows, in place.

    best_val, best_idx : (N, k) float32 / int64, each row's k best so far (unordered; -inf / -1 when empty)
    block : (t_r, t_c) float32, kernel values of rows r0.. against columns c0..

    Only entries above the row's current k-th value can enter; once a few
    tiles are in, most rows have none, and the comparison is all that is paid.
    """
    k = best_val.shape[1]
    rows = slice(r0, r0 + block.shape[0])
    kth = best_val[rows].min(axis=1)
    above = block > kth[:, None]
    n_above = int(np.count_nonzero(above))
    if n_above == 0:
        return
    if n_above > block.shape[0] * k:  # many: cut each row to its own k best first
        kk = min(k, block.shape[1])
        part = np.argpartition(block, block.shape[1] - kk, axis=1)[:, -kk:]
        r = np.repeat(np.arange(block.shape[0]), kk)
        c = part.ravel()
    else:
        r, c = np.nonzero(above)
    touched = np.unique(r)
    # the touched rows' current entries and the candidates, sorted by row then decreasing value
    cur_r = np.repeat(touched, k)
    all_r = np.concatenate([cur_r, r])
    all_v = np.concatenate([best_val[r0 + touched].ravel(), block[r, c]])
    all_i = np.concatenate([best_idx[r0 + touched].ravel(), c0 + c.astype(np.int64)])
    order = np.lexsort((-all_v, all_r))
    all_r, all_v, all_i = all_r[order], all_v[order], all_i[order]
    start = np.searchsorted(all_r, all_r, side="left")
    keep = (np.arange(len(all_r)) - start) < k  # every touched row had k entries: exactly k kept per row
    best_val[r0 + touched] = all_v[keep].reshape(-1, k)
    best_idx[r0 + touched] = all_i[keep].reshape(-1, k)


def exact_neighbours(A, k: int, *, backend: str = "cpu", tile: int = EXACT_TILE, n_threads: int | None = None,
                     rows=None):
    """The k other samples of largest fidelity for every sample, over all pairs: ((N, k) int64, (N, k) float32).

    A : validated (N, d) complex64 states or ``MPSStates`` (:func:`check_sparse_states`)
    rows : (R,) int sample indices, optional: only their neighbours ((R, k) results), against all N samples
        (R N pairs instead of N^2 / 2: how a recall is checked on a sample of rows at large N)

    Tiles (i, j) with j >= i are computed by ``backend``'s own ``gram``
    (``gram_mps`` for MPS) into a float32 (tile, tile) array and folded into
    the running top k of rows i (and, transposed, of rows j), by ``n_threads``
    worker threads with one BLAS thread each (:func:`in_parallel`).  Memory: at
    most 2 ``n_threads`` tiles and the (N, k) results.  Rows are ordered by decreasing value; ties
    (equal float32 values) are in no particular order.
    """
    module = get_backend(backend)
    mps = isinstance(A, MPSStates)
    if mps and not hasattr(module, "gram_mps"):
        raise ValueError(f"backend={backend!r} has no MPS kernel; MPS work with 'cpu', 'numba' and 'openmp'")
    compute = module.gram_mps if mps else module.gram
    inner = module.MPS_DEFAULT_TILE if mps else module.DEFAULT_TILE
    n_threads = _threads(n_threads)
    tile = check_positive_int(tile, "tile")
    n = A.shape[0]
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or rows.size == 0 or rows.min() < 0 or rows.max() >= n:
            raise ValueError(f"rows must be a non-empty 1-D array of sample indices in [0, {n})")
    best_val = np.full((n if rows is None else len(rows), k), -np.inf, dtype=np.float32)
    best_idx = np.full(best_val.shape, -1, dtype=np.int64)

    def tile_values(pair):
        i0, i1, j0, j1 = pair
        block = np.empty((i1 - i0, j1 - j0), dtype=np.float32)
        if rows is not None:
            compute(A[rows[i0:i1]], A[j0:j1], out=block, tile=inner, n_threads=1)
            mine = np.flatnonzero((rows[i0:i1] >= j0) & (rows[i0:i1] < j1))
            block[mine, rows[i0:i1][mine] - j0] = -np.inf  # a sample is not its own neighbour
        elif i0 == j0:
            compute(A[i0:i1], None, out=block, tile=inner, n_threads=1)
            np.fill_diagonal(block, -np.inf)  # a sample is not its own neighbour (the diagonal is added apart)
        else:
            compute(A[i0:i1], A[j0:j1], out=block, tile=inner, n_threads=1)
        return pair, block

    # the tiles are computed by n_threads workers, one BLAS thread each, and folded in by this thread in order
    # (the fold is a comparison per entry, a few ms a tile against the product's second)
    for (i0, i1, j0, j1), block in in_parallel(tile_values, tile_pairs(n if rows is None else len(rows),
                                                                        None if rows is None else n, tile),
                                               n_threads):
        _merge_top_k(best_val, best_idx, i0, block, j0)
        if rows is None and i0 != j0:
            _merge_top_k(best_val, best_idx, j0, block.T, i0)
    order = np.argsort(-best_val, axis=1, kind="stable")
    return np.take_along_axis(best_idx, order, axis=1), np.take_along_axis(best_val, order, axis=1)


# ---------------------------------------------------------------- approximate finders
def search_representation(A, features=None, *, dims: int = DEFAULT_DIMS, seed: int = 0) -> np.ndarray:
    """The (N, F) float32 points the approximate finders search with Euclidean distance.

    ``features`` given: those (e.g. the embeddings), validated (N rows, finite).
    Else, for state vectors: each state's phase fixed against the states'
    leading principal direction v (a_i e^{-i arg <v|a_i>}), projected on the
    ``dims`` leading principal directions of the phase-fixed states (both
    estimated on at most ``PCA_SAMPLE`` rows), as [real, imaginary] parts:
    F = 2 min(dims, d).  MPS need ``features`` (their vectors are never formed).
    """
    n = A.shape[0]
    if features is not None:
        F = np.asarray(features)
        if F.ndim != 2 or F.shape[0] != n:
            raise ValueError(f"features must be a 2-D array with one row per sample ({n}), got shape {F.shape}")
        if not np.issubdtype(F.dtype, np.number) or np.iscomplexobj(F):
            raise ValueError(f"features must be real numbers, got dtype {F.dtype}")
        F = np.ascontiguousarray(F, dtype=np.float32)
        if not np.isfinite(F).all():
            raise ValueError("features contain NaN or infinite values")
        return F
    if isinstance(A, MPSStates):
        raise ValueError("an approximate neighbour search on MPS needs features= (the embeddings, or any real "
                         "(N, F) array whose Euclidean neighbours approximate the kernel's): the MPS's state "
                         "vectors are never formed; or use neighbours='exact'")
    dims = check_positive_int(dims, "dims")
    rng = np.random.default_rng(seed)
    sample = A[np.sort(rng.choice(n, min(n, PCA_SAMPLE), replace=False))].astype(np.complex128)
    # the leading right singular vector by power iteration on sample^H sample from a fixed start: it depends on
    # the states only through that product, which the states' own phases do not change
    reference = np.ones(A.shape[1], dtype=np.complex128)
    for _ in range(REFERENCE_ITERATIONS):
        reference = sample.conj().T @ (sample @ reference)
        reference /= np.linalg.norm(reference)
    reference = reference.conj()

    def phase_fixed(block):
        p = block @ reference.conj()
        mag = np.abs(p)
        rot = np.where(mag > 0, p.conj() / np.where(mag > 0, mag, 1.0), 1.0)
        return block * rot[:, None]

    basis = leading_directions(phase_fixed(sample), dims, rng)  # (d, r)
    r = basis.shape[1]
    out = np.empty((n, 2 * r), dtype=np.float32)
    rows = max(1, PAIR_CHUNK_BYTES // (16 * A.shape[1]))
    for s in range(0, n, rows):
        c = phase_fixed(A[s:s + rows].astype(np.complex128)) @ basis
        out[s:s + rows, :r], out[s:s + rows, r:] = c.real, c.imag
    return out


def search_features(feature_map, X) -> np.ndarray:
    """(N, G) float32: the gate angles of ``feature_map`` (a ``FeatureMap``) on embeddings ``X`` (N, n_qubits),
    as the points of an approximate search (``features=``).

    The states are a smooth function of these G = n + pairs angles (2 x_i and 2 (pi - x_i)(pi - x_j) for the
    ZZ map, after the bandwidth), so Euclidean neighbours in angle space are the fidelity's neighbours far
    better than in the embeddings themselves, where the pair terms weigh features unevenly (x_j's weight
    in the pair angles is 2 (pi - x_i)).  On 20,000 Fashion-MNIST-like samples at bandwidth 0.1 (n = 10,
    k = 32) re-ranking 64 angle-space candidates recovered 1.000 of the exact fidelity neighbours, 64
    embedding-space ones 0.867; at bandwidth 0.2, 0.991 and 0.838.
    """
    from .feature_map import FeatureMap

    if not isinstance(feature_map, FeatureMap):
        raise TypeError(f"search_features needs a FeatureMap (its gate angles are known), got "
                        f"{type(feature_map).__name__}; for another circuit pass features= yourself (e.g. the "
                        "embeddings)")
    return np.ascontiguousarray(feature_map._angles(check_embeddings(X, feature_map.n_qubits)), dtype=np.float32)


def leading_directions(M: np.ndarray, r: int, rng) -> np.ndarray:
    """(d, min(r, m, d)) complex128 orthonormal columns spanning about the r leading right singular vectors of
    the (m, d) matrix ``M``: a randomised range finder with two power iterations (Halko et al. 2011),
    O(m d r) instead of a full SVD's O(m d^2)."""
    r = min(r, *M.shape)
    width = min(M.shape[0], r + 10)
    G = rng.standard_normal((M.shape[0], width)) + 1j * rng.standard_normal((M.shape[0], width))
    Q = np.linalg.qr(M.conj().T @ G)[0]  # (d, width): the row space of M, as columns
    for _ in range(2):
        Q = np.linalg.qr(M.conj().T @ (M @ Q))[0]
    # the leading directions within that space, from the small (m, width) projection's SVD
    V = np.linalg.svd(M @ Q, full_matrices=False)[2].conj().T  # (width, width)
    return Q @ V[:, :r]


def probe_cuvs() -> tuple[bool, str]:
    """(usable, reason): can cuVS search on a GPU here?  Cheap; never raises."""
    try:
        import cupy
        from cuvs.neighbors import cagra  # noqa: F401
    except ImportError as exc:
        return False, f"cuvs or cupy is not installed ({exc})"
    except Exception as exc:  # a wheel for another CUDA version fails while importing
        return False, f"cuvs cannot be imported ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA device ({type(exc).__name__}: {exc})"
    return (True, f"cuVS CAGRA on {count} GPU(s)") if count else (False, "no CUDA device")


def _import_cpu_finder(name: str):
    try:
        if name == "pynndescent":
            import pynndescent as module
        else:
            import faiss as module
    except ImportError as exc:
        raise ImportError(f"neighbours={name!r} needs the {'faiss-cpu' if name == 'faiss' else name} package, "
                          f"which is not installed ({exc}); {INSTALL_SPARSE}, or use neighbours='exact'") from exc
    return module


def faiss_lists(n: int) -> int:
    """Cells of the faiss IVF index for n points: about 2 sqrt(n) (632 at 100,000), with at least 39 training
    points per cell (faiss's own minimum for a stable k-means)."""
    return max(1, min(int(2 * np.sqrt(n)), n // 39))


def search_candidates(points: np.ndarray, m: int, neighbours: str, *, n_threads: int, seed: int) -> np.ndarray:
    """(N, m) int64: each point's m approximate Euclidean nearest other points (-1 where fewer were found)."""
    n = points.shape[0]
    want = min(n, m + 1)  # the search returns the point itself too
    if neighbours == "pynndescent":
        pynndescent = _import_cpu_finder(neighbours)
        import numba

        # pynndescent sets numba's thread count to n_jobs, which numba refuses above the pool it started with
        # (NUMBA_NUM_THREADS, e.g. 1 in a run that asked for one thread)
        jobs = min(n_threads, numba.config.NUMBA_NUM_THREADS)
        index = pynndescent.NNDescent(points, n_neighbors=want, random_state=seed, n_jobs=jobs,
                                      low_memory=True, compressed=True)
        found = index.neighbor_graph[0]
    elif neighbours == "faiss":
        faiss = _import_cpu_finder(neighbours)
        faiss.omp_set_num_threads(n_threads)
        # IVF-Flat: k-means cells, exact distances within the FAISS_NPROBE cells nearest each query.  On the
        # 19 gate angles of 100,000 Fashion-MNIST-like samples (64 neighbours) it found 0.998 of the exact
        # Euclidean neighbours in 16 s (loaded 2-core machine), where HNSW (M 16, efSearch 80) took 39 s
        lists = faiss_lists(n)
        quantizer = faiss.IndexFlatL2(points.shape[1])
        index = faiss.IndexIVFFlat(quantizer, points.shape[1], lists)
        index.cp.seed = seed
        index.train(points)
        index.add(points)
        index.nprobe = min(lists, FAISS_NPROBE)
        found = index.search(points, want)[1]
    else:
        usable, reason = probe_cuvs()
        if not usable:
            raise RuntimeError(f"neighbours='cuvs' cannot run here: {reason}. To enable it: {INSTALL_CUVS}")
        import cupy
        from cuvs.neighbors import cagra

        data = cupy.asarray(points)
        index = cagra.build(cagra.IndexParams(metric="sqeuclidean", graph_degree=max(32, want)), data)
        found = cupy.asarray(cagra.search(cagra.SearchParams(itopk_size=max(64, 2 * want)), index, data,
                                          want)[0]).get()
    found = np.asarray(found, dtype=np.int64)
    # drop each point itself (wherever it landed; duplicates of a point may come first), keep m others
    found = np.where(found == np.arange(n)[:, None], -1, found)
    order = np.argsort(found < 0, axis=1, kind="stable")
    return np.take_along_axis(found, order, axis=1)[:, :m]


def approximate_neighbours(A, k: int, neighbours: str, *, features=None, candidates: int | None = None,
                           dims: int = DEFAULT_DIMS, n_threads: int | None = None, seed: int = 0):
    """Like :func:`exact_neighbours` through an approximate search: ((N, k) int64, (N, k) float32).

    ``candidates`` (default 4 k, at least k) per sample are searched
    (:func:`search_representation`, :func:`search_candidates`), their exact
    kernel values computed (:func:`pair_kernel`) and the k largest kept.  A
    sample left with fewer than k candidates (the search found fewer) gets
    index -1 and value -inf in the missing places.
    """
    n = A.shape[0]
    m = min(n - 1, 4 * k if candidates is None else check_positive_int(candidates, "candidates"))
    if m < k:
        raise ValueError(f"candidates={candidates} is fewer than k={k}; the best k are chosen among the candidates")
    n_threads = _threads(n_threads)
    points = search_representation(A, features, dims=dims, seed=seed)
    found = search_candidates(points, m, neighbours, n_threads=n_threads, seed=seed)
    values = candidate_values(A, found, n_threads=n_threads)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(found, order, axis=1), np.take_along_axis(values, order, axis=1)


def locality_order(found: np.ndarray) -> np.ndarray:
    """(N,) int32: an order of the samples in which consecutive ones share candidates (reverse Cuthill-McKee
    on the candidate graph ``found`` (N, m), -1 entries ignored).

    :func:`candidate_values` computes a block of consecutive rows against the union of their candidates;
    in this order the union of 64 rows' 64 candidates each was 8 to 10 times the candidates of one row at
    N = 100,000 (Fashion-MNIST-like, gate-angle search), in a random order 60 times.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n, m = found.shape
    ok = found >= 0
    G = sparse.csr_matrix((np.ones(int(ok.sum()), dtype=np.int8), (np.repeat(np.arange(n), m)[ok.ravel()],
                                                                   found[ok])), shape=(n, n))
    return reverse_cuthill_mckee((G + G.T).tocsr(), symmetric_mode=True)


def candidate_values(A, found: np.ndarray, *, n_threads: int = 1) -> np.ndarray:
    """(N, m) float32 |<a_i|a_found[i, c]>|^2 for candidate lists ``found`` (N, m) int (-1: none, value -inf).

    State vectors: the rows are taken in :func:`locality_order`, ``RERANK_ROWS`` at a time, and each block
    is one BLAS product (``cgemm``) against the union of its rows' candidates, from which the pairs asked
    for are picked: the work is the union's size (about 10 m per row) times 8 d flops at BLAS speed,
    instead of gathering m states of d amplitudes per row from memory (8 m d bytes per row, memory bound).
    The values are those of a dense Gram's tile (complex64 products, |.|^2 in float32).
    MPS: :func:`pair_kernel` on the pairs (float64, rounded to float32).
    """
    n, m = found.shape
    values = np.full((n, m), -np.inf, dtype=np.float32)
    valid = found >= 0
    if isinstance(A, MPSStates):
        values[valid] = pair_kernel(A, np.broadcast_to(np.arange(n)[:, None], found.shape)[valid], found[valid])
        return values
    from scipy.linalg import blas

    from .backends.cpu_blas import abs2_into

    order = locality_order(found)

    def rerank(start):
        rows = order[start:start + RERANK_ROWS]
        cand, ok = found[rows], valid[rows]
        union, position = np.unique(cand[ok], return_inverse=True)
        if union.size:
            # BLAS sees the C-ordered (u, d) gathered union as the Fortran (d, u) matrix (cpu backend's notes):
            # the product's memory read in C order is the (rows, union) block of conj(A_r A_u^H)
            product = blas.cgemm(1.0, A[union].T, A[rows].T, trans_a=2)
            block = np.empty((len(rows), union.size), dtype=np.float32)
            abs2_into(product.T, block)
            r, c = np.nonzero(ok)
            values[rows[r], c] = block[r, position]  # the blocks' rows are disjoint: no two workers meet

    for _ in in_parallel(rerank, range(0, n, RERANK_ROWS), n_threads):
        pass
    return values


def in_parallel(fn, items, workers: int):
    """``fn(item)`` for each of ``items`` by ``workers`` threads, each with one BLAS thread; the results in
    order, at most 2 ``workers`` of them computed ahead (so that memory stays a few results).

    Why not one call with ``workers`` BLAS threads: on a loaded machine OpenBLAS's threads wait on each
    other at every product; a (64, 1024) x (1024, 520) complex product ran at 2.2 GFLOP/s with 2 BLAS threads
    and 10.6 with one (load 10 on 2 cores), a 2048^2 tile at 21 against 26.  SciPy's BLAS calls and NumPy's
    large array operations release the GIL, so threads share the work.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from .backends.cpu_blas import blas_threads

    items = iter(items)
    with blas_threads().limit(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(fn, item) for item in itertools.islice(items, 2 * workers))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(items, 1):
                pending.append(pool.submit(fn, item))
            yield result


def find_neighbours(A, k: int, neighbours: str = "exact", *, features=None, candidates: int | None = None,
                    dims: int = DEFAULT_DIMS, backend: str = "cpu", tile: int = EXACT_TILE,
                    n_threads: int | None = None, seed: int = 0) -> np.ndarray:
    """(N, k) int64: each sample's k other samples of largest fidelity, best first (see the module's notes).

    A : (N, 2**n) complex unit state vectors (``FeatureMap.states``) or ``MPSStates``
    neighbours : "exact" (every pair, tiles by ``backend``), "pynndescent", "faiss" or "cuvs" (approximate)
    """
    neighbours = check_neighbours(neighbours)
    A = check_sparse_states(A)
    return _neighbours(A, check_k(k, A.shape[0]), neighbours, features=features, candidates=candidates, dims=dims,
                       backend=backend, tile=tile, n_threads=n_threads, seed=seed)[0]


def _neighbours(A, k, neighbours, *, features, candidates, dims, backend, tile, n_threads, seed):
    """(indices (N, k) int64, kernel values (N, k) float32) of :func:`find_neighbours`, on validated arguments."""
    if neighbours == "exact":
        return exact_neighbours(A, k, backend=backend, tile=tile, n_threads=n_threads)
    return approximate_neighbours(A, k, neighbours, features=features, candidates=candidates, dims=dims,
                                  n_threads=n_threads, seed=seed)


def neighbour_recall(found, exact) -> float:
    """Recall@k: the mean over samples of |found_i & exact_i| / k, for two (N, k) int neighbour lists.

    ``exact`` is the exact finder's answer (:func:`exact_neighbours`); -1 in
    ``found`` (nothing found) never matches.
    """
    found, exact = np.asarray(found), np.asarray(exact)
    if found.ndim != 2 or found.shape != exact.shape or found.size == 0:
        raise ValueError(f"found and exact must be non-empty (N, k) arrays of one shape, got {found.shape} and "
                         f"{exact.shape}")
    n, k = exact.shape
    # one key per (row, index): a found neighbour is a hit if its key is among the exact keys
    span = int(max(found.max(), exact.max())) + 2
    row = np.arange(n, dtype=np.int64)[:, None] * span
    hits = np.isin(found.astype(np.int64) + 1 + row, exact.astype(np.int64) + 1 + row) & (found >= 0)
    return float(hits.sum() / (n * k))


# ---------------------------------------------------------------- the sparse Gram
def sparse_gram(A, *, k: int, neighbours: str = "exact", features=None, candidates: int | None = None,
                dims: int = DEFAULT_DIMS, backend: str = "cpu", tile: int = EXACT_TILE, n_threads: int | None = None,
                seed: int = 0, return_neighbours: bool = False):
    """The fidelity Gram restricted to each sample's k nearest neighbours, symmetric, as a CSR matrix.

    Parameters
    ----------
    A : array_like, shape (N, d), complex, or MPSStates
        Unit state vectors as rows (``FeatureMap.states``; complex64) or the
        exact MPS of N samples (``FeatureMap.mps``).
    k : int in [1, N - 1]
        Neighbours per sample (the sample itself not counted).
    neighbours : "exact", "pynndescent", "faiss" or "cuvs"
        How neighbours are found (module notes): every pair over tiles of
        ``backend`` (memory O(N k), time O(N^2)), or an approximate search
        (needs the ``sparse`` extra; cuVS needs a GPU) whose ``candidates``
        are ranked by their exact kernel values.
    features : array_like (N, F), real, optional
        Points the approximate search runs on instead of the states' phase-fixed
        real representation (required for approximate search on MPS); with a
        ``FeatureMap``, ``search_features(fm, X)`` (its gate angles) is the one to use.
    candidates : int, optional
        Candidates per sample of the approximate search (default 4 k).
    dims : int
        Complex principal directions of the states' search representation.
    backend, tile, n_threads
        Gram backend, tile edge and threads of the exact finder; ``n_threads``
        also of the approximate search.
    seed : int
        Seed of the approximate search and of the sample its representation is estimated on.
    return_neighbours : bool
        Also return the (N, k) int64 neighbour lists (best first).

    Returns
    -------
    K : scipy.sparse.csr_matrix, shape (N, N), float64
        K[i, j] = |<a_i|a_j>|^2 where j is among i's k neighbours or i among
        j's, and on the diagonal; symmetric (K[i, j] and K[j, i] are one
        number); sorted indices.  Entries absent are not computed (they are
        not zero kernel values).
    neighbours : (N, k) int64, with ``return_neighbours``
    """
    from scipy import sparse

    neighbours = check_neighbours(neighbours)
    if not isinstance(return_neighbours, bool):
        raise TypeError(f"return_neighbours must be True or False, got {return_neighbours!r}")
    A, norms = _checked_with_norms(A)
    idx, values = _neighbours(A, check_k(k, A.shape[0]), neighbours, features=features, candidates=candidates,
                              dims=dims, backend=backend, tile=tile, n_threads=n_threads, seed=seed)
    # the finders' values are the kernel's (a dense Gram tile's products): no second pass over the pairs
    K = neighbour_graph(idx, values, diagonal=norms**4)  # |<a|a>|^2 = ||a||^4, exactly as computed in float64
    return (K, idx) if return_neighbours else K


def neighbour_graph(idx: np.ndarray, pair_values, *, diagonal=1.0):
    """A symmetric CSR kernel matrix on the neighbour pairs of ``idx`` (both directions) and the diagonal.

    idx : (N, k) int neighbour lists (-1: none)
    pair_values : callable (i, j) -> (P,) float values of the pairs, called once with i <= j (int64 arrays);
        or an (N, k) float array: the value of (r, idx[r, c]) already computed.  A pair found from both ends
        then takes the value found from its smaller index, so that K[i, j] and K[j, i] are one number; the
        diagonal is ``diagonal``, a number or (N,) values (unit states: 1).
    Returns ``scipy.sparse.csr_matrix`` (N, N) float64 with sorted indices; K[i, j] and K[j, i] are one number.
    """
    from scipy import sparse

    n = idx.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    cols = idx.ravel().astype(np.int64)
    ok = cols >= 0
    # the union of both directions and the diagonal, each unordered pair once (key i * n + j with i <= j)
    lo, hi = np.minimum(rows[ok], cols[ok]), np.maximum(rows[ok], cols[ok])
    if callable(pair_values):
        keys = np.unique(np.concatenate([lo * n + hi, np.arange(n, dtype=np.int64) * (n + 1)]))
        i, j = keys // n, keys % n
        values = np.asarray(pair_values(i, j), dtype=np.float64)
    else:
        given = np.asarray(pair_values)
        if given.shape != idx.shape:
            raise ValueError(f"pair_values must be a callable or an array of the neighbour lists' shape "
                             f"{idx.shape}, got shape {given.shape}")
        # sorted by key, the entry found from the smaller index first: np.unique's first index picks it; a
        # sample listed as its own neighbour is left to the diagonal (stored once)
        found, off_diagonal = given.ravel()[ok], lo != hi
        keys, from_row = lo[off_diagonal] * n + hi[off_diagonal], (rows[ok] == lo)[off_diagonal]
        first = np.lexsort((~from_row, keys))
        keys, where = np.unique(keys[first], return_index=True)
        keys = np.concatenate([keys, np.arange(n, dtype=np.int64) * (n + 1)])
        values = np.concatenate([found[off_diagonal][first][where].astype(np.float64),
                                 np.broadcast_to(np.asarray(diagonal, dtype=np.float64), (n,))])
        i, j = keys // n, keys % n
    off = i != j
    K = sparse.coo_matrix((np.concatenate([values, values[off]]),
                           (np.concatenate([i, j[off]]), np.concatenate([j, i[off]]))), shape=(n, n)).tocsr()
    K.sort_indices()
    return K
