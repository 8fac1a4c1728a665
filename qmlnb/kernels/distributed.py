"""Gram tiles (and any other work items) as tasks on a Dask cluster.

``gram(S, backend="cpu", client=...)`` lands here.  ``client`` is

- a ``dask.distributed.Client`` you already hold (it is left open);
- ``"local"``: a ``LocalCluster`` of one single-threaded worker process per
  core of this machine, started for this call and closed after it;
- a scheduler address such as ``"tcp://10.0.0.5:8786"``: connected for this
  call (``SchedulerUnreachableError`` after ``timeout`` seconds if nothing
  answers there).

Each task computes one tile with the chosen backend and ``n_threads``
threads.  The states reach each worker once: through a file in shared memory
for the workers of a ``LocalCluster`` (``shared_memory``), scattered
(``broadcast=True``) to any other workers.  Where the tiles go:

- ``out=path``: each worker writes its tile (and its mirror) straight into
  the memory-mapped file and only the tile's index comes back, so **every
  worker must see ``path`` on a shared file system** (NFS, Lustre, GPFS, or
  one machine).  This process keeps the ledger.  Workers of a
  ``LocalCluster`` share this machine's page cache, so one ``fsync`` here
  per commit covers their tiles; other workers flush each tile themselves.
- no ``out``, workers of a ``LocalCluster``: the same, into a scratch file in
  shared memory that the returned array maps, so no tile crosses a socket
  and this process does no copying or mirroring (on two cores, that work
  took CPU from the workers and held two workers to about 1.6x one).
- no ``out``, other workers: the tiles come back over the network and are
  assembled here.

A worker that dies mid-run loses its running tasks and the results it held;
the scheduler reruns them on the remaining (or restarted) workers, and the
assembled matrix equals the single-machine one.  Tiles are idempotent, so a
tile written twice to the file is harmless.

Nothing here imports Dask until a function is called.
"""
from __future__ import annotations

import contextlib
import uuid

import numpy as np

from .._util import available_cores
from .out_of_core import compute_tile, open_output, tile_device
from .shared_memory import SharedArray, SharedMPS, scratch_output, share
from .validation import check_fits_in_memory

DEFAULT_TIMEOUT_S = 10.0


class SchedulerUnreachableError(ConnectionError):
    """No Dask scheduler answered at the given address in time."""


def check_client(client) -> None:
    """Refuse anything but a Client, "local" or a non-empty address string."""
    from distributed import Client

    if not isinstance(client, Client) and (not isinstance(client, str) or not client):
        raise ValueError(f"client must be a dask.distributed.Client, 'local' or a scheduler address, got {client!r}")


@contextlib.contextmanager
def connect(client, *, timeout: float | None = None, n_workers: int | None = None):
    """A connected ``dask.distributed.Client`` for the duration of a ``with`` block.

    Parameters
    ----------
    client : Client, "local" or str
        An existing client (yielded as is, not closed), ``"local"`` (a new
        ``LocalCluster`` of ``n_workers`` single-threaded processes, default:
        the cores of this process, closed on exit) or a scheduler address.
    timeout : float, optional
        Seconds to wait for a scheduler at an address (default ``DEFAULT_TIMEOUT_S``).
    """
    from distributed import Client, LocalCluster

    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    check_client(client)
    if isinstance(client, Client):
        yield client
        return
    if client == "local":
        with LocalCluster(n_workers=n_workers or available_cores(), threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as local:
            yield local
        return
    try:
        remote = Client(client, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachableError(f"no Dask scheduler answered at {client!r} within {timeout:g} s ({exc}); "
                                        "check the address and that the scheduler is running") from exc
    with remote:
        yield remote


def on_this_machine(client) -> bool:
    """True for the client of a ``LocalCluster``: its workers share this machine's memory and page cache."""
    from distributed import LocalCluster

    return isinstance(getattr(client, "cluster", None), LocalCluster)


def _tile_task(backend: str, A: np.ndarray, B: np.ndarray | None, pair, tile: int, n_threads: int, dtype: str,
               target=None, flush: bool = False, device=None):
    """Run on a worker: one tile as an array, or written to ``target`` (a GramFile) and its checksum returned.

    ``A`` and ``B`` are arrays or ``MPSStates`` (scattered), or ``SharedArray``/``SharedMPS`` files on this machine.
    """
    from .registry import get_backend

    A, B = (x.open() if isinstance(x, (SharedArray, SharedMPS)) else x for x in (A, B))
    block = compute_tile(get_backend(backend), A, B, pair, tile=tile, n_threads=n_threads, dtype=np.dtype(dtype),
                         device=device)
    if target is None:
        return block
    return target.write(pair[0], pair[2], block, mirror=B is None, flush=flush)


def _tile_cost(pair, *, symmetric: bool) -> int:
    """Entries computed for tile ``pair``: a diagonal tile of the symmetric Gram needs only its upper half."""
    i0, i1, j0, j1 = pair
    return (i1 - i0) * (j1 - j0) // (2 if symmetric and i0 == j0 else 1)


def _run_tiles(dask_client, A, B, pairs, pending, on_done, *, shared, backend, tile, n_threads, dtype,
               target=None, flush=False, device=None) -> None:
    """Tiles ``pairs[k]`` for k in ``pending`` as tasks; ``on_done(k, value)`` in this process as each finishes.

    ``value`` is the tile (``target`` None) or its checksum (written to ``target``).
    ``shared``: the workers are on this machine, so the states go to them
    through shared memory rather than being scattered.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    with contextlib.ExitStack() as stack:
        if shared:
            a, b = (None if X is None else stack.enter_context(share(X)) for X in (A, B))
        else:
            # hash=False: a key per call.  Content-hashed keys would let a
            # repeated call on the same states re-scatter a key the previous
            # call is still releasing, and the scheduler may then drop it.
            a, b = (None if X is None else dask_client.scatter(X, broadcast=True, hash=False) for X in (A, B))
        run = uuid.uuid4().hex[:8]
        # largest tiles first: the last tasks are small, so the workers finish together
        futures = [dask_client.submit(_tile_task, backend, a, b, pairs[k], tile, n_threads, dtype.name, target,
                                      flush, tile_device(device, pairs[k]), key=f"qmlnb-gram-tile-{run}-{k}",
                                      priority=_tile_cost(pairs[k], symmetric=B is None)) for k in pending]
        index = {future.key: k for future, k in zip(futures, pending)}
        with tqdm(total=len(pairs), initial=len(pairs) - len(pending), desc="Gram tiles on Dask",
                  unit="tile") as bar:
            for future in as_completed(futures, loop=dask_client.loop):  # not the default client's loop
                on_done(index[future.key], future.result())
                future.release()  # free the result on its worker as soon as it is stored
                bar.update()


def gram_on_dask(A: np.ndarray, B: np.ndarray | None, *, client, backend: str, tile: int, n_threads: int, dtype,
                 out=None, timeout: float | None = None, verify: bool = True, device=None):
    """The Gram matrix of validated states with its tiles as Dask tasks.

    Parameters
    ----------
    A : ndarray, shape (N, d), complex64 (validated by ``gram``)
    B : ndarray, shape (M, d), complex64, or None (symmetric: upper tiles only, mirrored)
    client : see ``connect``
    backend, tile, n_threads : backend name, tile edge, backend threads per task
    dtype : float32 or float64
    out : optional ``.npy`` path on a file system that every worker shares
    verify : with ``out``, check tiles already written before trusting them (``out_of_core.open_output``)
    device : (``shots.DeviceEstimate``, row ids, column ids), optional: each task estimates its tile as a device would

    Returns
    -------
    K : ndarray (numpy.memmap if ``out``), shape (N, N) or (N, M), ``dtype``
    """
    from .registry import get_backend
    from .tiling import mirror_upper_, tile_pairs

    get_backend(backend)  # fail here, not in every task, if it cannot run on this machine
    check_client(client)  # before the output file is created
    dtype = np.dtype(dtype)
    n_rows, n_cols = A.shape[0], (A.shape[0] if B is None else B.shape[0])
    if out is None:
        check_fits_in_memory(n_rows * n_cols * dtype.itemsize, f"a {n_rows} x {n_cols} {dtype} Gram matrix")
        pairs = tile_pairs(n_rows, None if B is None else n_cols, tile)
    else:
        target, ledger, pairs = open_output(A, B, out, tile=tile, dtype=dtype, verify=verify, device=device)

    with connect(client, timeout=timeout) as dask_client:
        local = on_this_machine(dask_client)
        options = dict(shared=local, backend=backend, tile=tile, n_threads=n_threads, dtype=dtype, device=device)
        if out is not None:
            sync = target.sync if local else None  # remote workers flushed their own tiles
            try:
                _run_tiles(dask_client, A, B, pairs, ledger.pending(),
                           lambda k, checksum: ledger.add(k, checksum, sync), target=target, flush=not local, **options)
            finally:  # also when interrupted: keep what is done
                ledger.commit(sync)
            return target.open("r+")
        if local:
            with scratch_output(n_rows, n_cols, dtype) as (scratch, K):
                _run_tiles(dask_client, A, B, pairs, range(len(pairs)), lambda k, _: None, target=scratch,
                           **options)
            return K
        K = np.empty((n_rows, n_cols), dtype=dtype)

        def store(k, block):
            i0, i1, j0, j1 = pairs[k]
            K[i0:i1, j0:j1] = block

        _run_tiles(dask_client, A, B, pairs, range(len(pairs)), store, **options)
    if B is None:
        mirror_upper_(K, tile)
    return K
