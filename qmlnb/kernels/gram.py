"""``gram``: the fidelity Gram matrix K[i, j] = |<a_i|b_j>|^2 of state rows."""
from __future__ import annotations

import numpy as np

from .._util import available_cores as default_threads
from .registry import get_backend
from .validation import MAX_THREADS, check_fits_in_memory, check_states, check_threads, check_unit_rows
from .._util import check_positive_int

OUTPUT_DTYPES = (np.float32, np.float64)


def gram(A, B=None, *, backend: str = "cpu", tile: int | None = None, n_threads: int | None = None,
         dtype=np.float64, out=None, client=None, verify: bool = True) -> np.ndarray:
    """Fidelity Gram matrix of state vectors.

    Parameters
    ----------
    A : array_like, shape (N, d), complex
        State vectors as rows (``FeatureMap.states``); converted to complex64.
        Each row must be a unit vector (norm 1 within 1e-3), else ValueError.
    B : array_like, shape (M, d), complex, optional
        Second set of unit states.  Omitted: the symmetric K = |A A^H|^2, of which
        only the upper tiles are computed.
    backend : str
        A name from ``available_backends()``.  A backend that cannot run here
        raises ``BackendUnavailableError`` (never a silent fallback).
    tile : int, optional
        Tile edge in rows (backend default if omitted).
    n_threads : int, optional
        Threads the backend uses (default: the cores of this process), at
        most ``validation.MAX_THREADS`` (1024; more is a ValueError).
    dtype : numpy.float32 or numpy.float64
        Output precision.
    out : str or PathLike, optional
        Write K tile by tile into this ``.npy`` file (memory-mapped, resumable,
        never N x N in RAM; see ``qmlnb.kernels.out_of_core``) and return the
        ``numpy.memmap``.  ``tile`` is then also the edge of the tiles on disk.
    client : dask.distributed.Client, "local" or a scheduler address, optional
        Compute the tiles as tasks on a Dask cluster (``qmlnb.kernels.distributed``);
        ``n_threads`` is then per task and defaults to 1.
    verify : bool
        With ``out``: when resuming, check every tile the ledger marks as
        written against its checksum first, and recompute (with a
        ``GramFileWarning``) any that changed on disk.  ``False`` trusts the
        ledger (skips reading the file back).

    Returns
    -------
    K : ndarray (numpy.memmap with ``out``), shape (N, N) or (N, M), ``dtype``
    """
    module = get_backend(backend)
    A = check_states(A, "A")
    if B is not None:
        B = check_states(B, "B")
        if B.shape[1] != A.shape[1]:
            raise ValueError(f"A and B have different state dimensions: {A.shape[1]} and {B.shape[1]}")
    tile = check_positive_int(module.DEFAULT_TILE if tile is None else tile, "tile")
    if client is not None and n_threads is None:
        n_threads = 1  # Dask workers run one task per worker thread
    n_threads = check_threads(min(default_threads(), MAX_THREADS) if n_threads is None else n_threads)
    dtype = np.dtype(dtype)
    if dtype not in [np.dtype(t) for t in OUTPUT_DTYPES]:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    n_cols = A.shape[0] if B is None else B.shape[0]
    if out is None and client is None:
        check_fits_in_memory(A.shape[0] * n_cols * dtype.itemsize, f"a {A.shape[0]} x {n_cols} {dtype} Gram matrix")
    # O(N d), so after the O(1) checks above
    check_unit_rows(A, "A")
    if B is not None:
        check_unit_rows(B, "B")
    if out is not None or client is not None:  # to disk and/or on a cluster: delegated
        from .distributed import gram_scaled

        return gram_scaled(A, B, backend=backend, tile=tile, n_threads=n_threads, dtype=dtype, out=out, client=client,
                           verify=verify)
    out = np.empty((A.shape[0], n_cols), dtype=dtype)
    return module.gram(A, B, out=out, tile=tile, n_threads=n_threads)
