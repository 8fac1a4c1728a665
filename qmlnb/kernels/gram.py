"""``gram``: the fidelity Gram matrix K[i, j] = |<a_i|b_j>|^2 of state rows."""
from __future__ import annotations

import numpy as np

from .._util import aligned_empty
from .._util import available_cores as default_threads
from .mps import MPSStates, check_mps, refuse_non_finite, self_log_overlap, self_overlap_work_bytes
from .noise import PSD_METHODS, repair_psd
from .registry import get_backend
from .shots import check_ids, device_estimate
from .validation import (MAX_THREADS, check_fits_in_memory, check_states, check_threads, check_unit_norms,
                         check_unit_rows)
from .._util import check_option, check_positive_int

OUTPUT_DTYPES = (np.float32, np.float64)


def gram(A, B=None, *, backend: str = "cpu", tile: int | None = None, n_threads: int | None = None,
         dtype=np.float64, out=None, client=None, verify: bool = True, shots: int | None = None,
         seed: int | None = None, estimator: str = "fidelity", noise=None, mitigate: bool = False,
         psd: str | None = None, ids=None) -> np.ndarray:
    """Fidelity Gram matrix of state vectors or matrix-product states, exact or as a device estimates it.

    Parameters
    ----------
    A : array_like, shape (N, d), complex, or MPSStates
        State vectors as rows (``FeatureMap.states``); converted to complex64.
        Each row must be a unit vector (norm 1 within 1e-3), else ValueError.
        Or the exact MPS of N samples (``FeatureMap.mps``, any number of
        qubits; backends ``cpu``, ``numba`` and ``openmp``): each pair is
        contracted site by site with a rescaled environment, so values down
        to the output dtype's smallest subnormal (about 4.9e-324 in float64)
        are kept and only smaller ones become 0 (``qmlnb.kernels.mps``).
    B : array_like, shape (M, d), complex, or MPSStates (with an MPS ``A``), optional
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
    shots : int >= 1, optional
        Estimate every entry from this many shots as a device does
        (``qmlnb.kernels.shots``): Binomial(shots, P) / shots with P the
        probability of the counted outcome.  Needs ``seed``.  The draw of
        entry (i, j) depends only on (seed, i, j, estimator, noise): the same
        matrix for every tile size, thread count, out-of-core or Dask layout,
        and symmetric.  Omitted: exact (or, with ``noise``, its expectation).
    seed : int >= 0
        Key of the counter-based random numbers.
    estimator : "fidelity" or "swap"
        "fidelity": compute-uncompute, the frequency of the all-zeros string
        (variance k (1 - k) / shots); "swap": the swap test, 2 P(ancilla 0) - 1
        (variance (1 - k^2) / shots; can be negative).
    noise : qmlnb.kernels.DeviceNoise, optional
        Global depolarising noise per layer and readout error
        (``qmlnb.kernels.noise``): the probability measured is a * k + b.
    mitigate : bool
        Invert the noise model on the estimate (its mean is then the exact kernel).
    psd : "clip", "flip" or None
        Repair an estimated symmetric Gram to positive semi-definite
        (``noise.repair_psd``, whose ``info`` records the repair's size; call
        it yourself to keep that record).  Square in memory only.
    ids : (row_ids, col_ids), int arrays, optional
        Global sample ids that key the random numbers (default 0..N-1, 0..M-1).
        For test x train give ids distinct from the training ids, e.g.
        ``ids=(n_train + np.arange(n_test), np.arange(n_train))``.

    Returns
    -------
    K : ndarray (numpy.memmap with ``out``), shape (N, N) or (N, M), ``dtype``
    """
    module = get_backend(backend)
    mps = isinstance(A, MPSStates) or isinstance(B, MPSStates)
    if mps:
        A, B = check_mps_operands(A, B, backend, module)
        default_tile = module.MPS_DEFAULT_TILE
    else:
        A = check_states(A, "A")
        if B is not None:
            B = check_states(B, "B")
            if B.shape[1] != A.shape[1]:
                raise ValueError(f"A and B have different state dimensions: {A.shape[1]} and {B.shape[1]}")
        default_tile = module.DEFAULT_TILE
    tile = check_positive_int(default_tile if tile is None else tile, "tile")
    if client is not None and n_threads is None:
        n_threads = 1  # Dask workers run one task per worker thread
    n_threads = check_threads(min(default_threads(), MAX_THREADS) if n_threads is None else n_threads)
    dtype = np.dtype(dtype)
    if dtype not in [np.dtype(t) for t in OUTPUT_DTYPES]:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    n_cols = A.shape[0] if B is None else B.shape[0]
    device = device_estimate(shots, seed, estimator, noise, mitigate, n_qubits_of(A))
    if device is not None:
        device = (device, *check_ids(ids, A.shape[0], n_cols, B is None))
    elif ids is not None:
        raise ValueError("ids= key the random numbers of shots=/noise=; the exact Gram takes none")
    if psd is not None:
        check_option(psd, "psd", PSD_METHODS, none_ok=True)
        if B is not None or out is not None:
            raise ValueError("psd= repairs a square Gram held in memory (B omitted, no out=); for a file, load it "
                             "and call qmlnb.kernels.noise.repair_psd")
    if out is None and client is None:
        need, what = A.shape[0] * n_cols * dtype.itemsize, f"a {A.shape[0]} x {n_cols} {dtype} Gram matrix"
        if mps:  # the contraction's own work counts too: it grows with chi^2, the output does not
            chi = A.bond_dim
            norms_work = 0 if "mps_norms" in module.CAPABILITIES else \
                self_overlap_work_bytes(max(A.shape[0], n_cols), chi)  # a native check holds a few KiB per thread
            work = max(getattr(module, "mps_work_bytes", lambda *_: 0)(tile, A.shape[0], n_cols, chi), norms_work)
            need, what = need + work, f"{what} and the MPS contraction's work arrays (bond {chi})"
        check_fits_in_memory(need, what)
    # O(N d) (MPS: O(N n chi^3)), so after the O(1) checks above
    for name, states in (("A", A), ("B", B)):
        if states is None:
            continue
        if mps:
            check_unit_norms(np.exp(0.5 * mps_self_log_overlap(module, states, name, n_threads)), name)
        else:
            check_unit_rows(states, name)
    if client is not None:  # on a cluster (and maybe to disk): the Dask route
        from .distributed import gram_on_dask

        K = gram_on_dask(A, B, client=client, backend=backend, tile=tile, n_threads=n_threads, dtype=dtype, out=out,
                         verify=verify, device=device)
    elif out is not None:  # to disk on this machine: no Dask involved
        from .out_of_core import gram_to_file

        K = gram_to_file(A, B, out, backend=backend, tile=tile, n_threads=n_threads, dtype=dtype, verify=verify,
                         device=device)
    else:
        # the estimate of a symmetric Gram reads the upper triangle and writes the lower one itself
        skip = {"mirror": False} if device is not None and B is None and "upper" in module.CAPABILITIES \
            else {}
        K = (module.gram_mps if mps else module.gram)(A, B, out=aligned_empty((A.shape[0], n_cols), dtype),
                                                       tile=tile, n_threads=n_threads, **skip)
        if device is not None:
            spec, rows, cols = device
            spec.apply_(K, rows, cols, symmetric=B is None, n_threads=n_threads)
    if psd is not None:
        K = repair_psd(K, psd)[0].astype(dtype, copy=False)
    return K


def n_qubits_of(A) -> int:
    """Qubits of validated states: an MPS's sites, or log2 of the state dimension (0 if not a power of 2)."""
    if isinstance(A, MPSStates):
        return A.n_qubits
    d = A.shape[1]
    return d.bit_length() - 1 if d & (d - 1) == 0 else 0


def mps_self_log_overlap(module, M: MPSStates, name: str, n_threads: int) -> np.ndarray:
    """(N,) float64 log <psi_i|psi_i> of ``M`` for the norms' check: the backend's own routine where it has one
    (capability ``mps_norms``: ``mps_self_log_overlap``, which also finds non-finite entries: then a ValueError
    naming ``name``), else NumPy's :func:`self_log_overlap`."""
    if "mps_norms" not in module.CAPABILITIES:
        return self_log_overlap(M.tensors)
    logs = module.mps_self_log_overlap(M.tensors, n_threads)
    if np.isnan(logs).any():
        refuse_non_finite(name)
    return logs


def check_mps_operands(A, B, backend: str, module) -> tuple[MPSStates, MPSStates | None]:
    """Validated MPS operands with one bond dimension (the smaller padded with zeros: still exact).

    The entries' finiteness is checked here unless the backend's norms' check finds non-finite entries itself."""
    if "mps" not in module.CAPABILITIES:
        raise ValueError(f"backend={backend!r} has no MPS kernel; matrix-product states (FeatureMap.mps) work with "
                         "the backends 'cpu', 'numba' and 'openmp'")
    finite = "mps_norms" not in module.CAPABILITIES
    A = check_mps(A, "A", finite)
    if B is None:
        return A, None
    B = check_mps(B, "B", finite)
    if A.n_qubits != B.n_qubits:
        raise ValueError(f"A and B are MPS on different numbers of qubits: {A.n_qubits} and {B.n_qubits}")
    chi = max(A.bond_dim, B.bond_dim)
    return pad_bond(A, chi), pad_bond(B, chi)


def pad_bond(M: MPSStates, chi: int) -> MPSStates:
    """``M`` with bond dimension ``chi`` >= its own (zero rows and columns added)."""
    if M.bond_dim == chi:
        return M
    t = np.zeros(M.shape[:3] + (chi, chi), dtype=np.complex64)
    t[..., :M.bond_dim, :M.bond_dim] = M.tensors
    return MPSStates(t)
