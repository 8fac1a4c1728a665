"""Arrays that the processes of one machine share through a file in ``/dev/shm``.

Dask moves data between processes over sockets: the states are pickled to
every worker and each tile comes back the same way.  When the workers run on
this machine (a ``LocalCluster``), that copying is avoidable work that takes
CPU from the workers.  Here a file in shared memory (tmpfs, i.e. RAM; the
temporary folder if ``/dev/shm`` lacks room) holds the array instead, and
every process maps the same pages:

- ``shared_copy(S)``: the states, written once, mapped read-only by each task
  (``SharedArray.open``);
- ``scratch_output(N, M, dtype)``: the Gram matrix, into which workers write
  their tiles (``GramFile.write``) while this process holds an array mapped
  onto it, so the result needs no transfer, copy or mirroring here.

Both files are removed when their ``with`` block ends.  A mapping outlives
its file's name, so the returned Gram array stays valid.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .out_of_core import GramFile, check_writable

SHARED_MEMORY = "/dev/shm"


@contextlib.contextmanager
def _scratch_file(nbytes: int):
    """Path of a new empty file with room for ``nbytes``, in shared memory if it has room; removed on exit."""
    room = os.path.isdir(SHARED_MEMORY) and shutil.disk_usage(SHARED_MEMORY).free > 2 * nbytes
    # a uuid in the name: a worker caches maps by path, so a path is never reused
    path = Path(SHARED_MEMORY if room else tempfile.gettempdir()) / f"qmlnb-{uuid.uuid4().hex}.bin"
    path.touch(mode=0o600)
    try:
        check_writable(path, nbytes)
        yield path
    finally:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class SharedArray:
    """A read-only array in a file on this machine; small and picklable (sent to Dask tasks instead of the data)."""

    path: str
    shape: tuple
    dtype: str

    def open(self) -> np.ndarray:
        """The array, mapped (not copied) from the file; the map is kept for the next task of this process."""
        return _mapped(self.path, self.shape, self.dtype)


@functools.lru_cache(maxsize=2)  # A and B of the current call; a stale map holds at most their memory
def _mapped(path: str, shape: tuple, dtype: str) -> np.ndarray:
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=shape))


@contextlib.contextmanager
def shared_copy(array: np.ndarray):
    """A ``SharedArray`` holding a copy of ``array`` for the duration of the block."""
    with _scratch_file(array.nbytes) as path:
        np.ascontiguousarray(array).tofile(path)
        yield SharedArray(str(path), tuple(array.shape), array.dtype.name)


@dataclass(frozen=True)
class SharedMPS:
    """``MPSStates`` whose site tensors lie in a ``SharedArray`` (sent to Dask tasks instead of the data)."""

    tensors: SharedArray

    def open(self):
        from .mps import MPSStates

        return MPSStates(self.tensors.open())


@contextlib.contextmanager
def share(states):
    """``shared_copy`` of a state matrix, or of the site tensors of ``MPSStates`` (as a ``SharedMPS``)."""
    from .mps import MPSStates

    if isinstance(states, MPSStates):
        with shared_copy(states.tensors) as tensors:
            yield SharedMPS(tensors)
        return
    with shared_copy(states) as shared:
        yield shared


@contextlib.contextmanager
def scratch_output(n_rows: int, n_cols: int, dtype):
    """A Gram file that processes on this machine write tiles into, and an array that sees them.

    Yields ``(target, K)``: the ``GramFile`` to send to the writers, and
    ``K``, an ndarray of shape (n_rows, n_cols) and ``dtype`` mapped onto the
    same file.  ``K`` stays valid after the block (the map keeps its memory).
    """
    dtype = np.dtype(dtype)
    with _scratch_file(n_rows * n_cols * dtype.itemsize) as path:
        K = np.asarray(np.memmap(path, dtype=dtype, mode="w+", shape=(n_rows, n_cols)))
        yield GramFile(str(path), 0, n_rows, n_cols, dtype.name), K
