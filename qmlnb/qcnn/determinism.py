"""Torch threads and deterministic algorithms for training, set in one place.

Every process that trains sets the same two things: the sequential run in the
caller's process (for the duration of the call, :func:`training_settings`),
each fold-parallel pool worker and each data-parallel rank (for the process's
life, :func:`apply_training_settings`).  With the same number of threads per
process the three modes then run the same kernels in the same order, which is
what makes a fold-parallel fold equal to the same fold trained sequentially.

:func:`set_threads` sets a whole process's thread count at once (torch, BLAS,
numba; the environment variables :data:`THREAD_ENV_VARS` that a sweep also
exports to each kernel before it starts).  torch is imported when a function
needs it, so a sweep process can read :data:`THREAD_ENV_VARS` without it.
"""
from __future__ import annotations

import contextlib
import os
import sys

from .._util import Interval, available_cores, check_positive_int

# the variables OpenMP, MKL, OpenBLAS and numba read once, when they start: set before a process imports them
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def set_threads(threads: int) -> int:
    """Use ``threads`` threads in torch, BLAS (threadpoolctl) and numba; 0 means all cores.

    The sweep already exports :data:`THREAD_ENV_VARS` before the kernel
    starts (the only moment some libraries read them); this sets the libraries
    that can change at run time, so an interactive notebook obeys ``threads`` too,
    and the variables for the libraries loaded later (numba's only while numba
    is not imported: then its running pool is set, at most its size).
    Returns the thread count in effect.
    """
    threads = Interval(int, 0)(threads, "threads") or available_cores()  # 0: all cores
    numba = sys.modules.get("numba")
    for var in THREAD_ENV_VARS:
        # numba reads its variable again at each compilation and refuses any value but its pool's (the
        # pool starts at numba's first parallel call): once it is imported, its threads are set below instead
        if var != "NUMBA_NUM_THREADS" or numba is None:
            os.environ[var] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    import torch

    torch.set_num_threads(threads)
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return threads


def apply_training_settings(threads: int) -> None:
    """This process: ``threads`` torch intra-op threads and deterministic algorithms.

    ``warn_only=True``: an op without a deterministic implementation warns
    instead of stopping a run; the model's ops all have one on the CPU.
    """
    import torch

    torch.set_num_threads(check_positive_int(threads, "threads"))
    torch.use_deterministic_algorithms(True, warn_only=True)


@contextlib.contextmanager
def training_settings(threads: int):
    """:func:`apply_training_settings` inside the ``with`` block; the previous settings restored after it."""
    import torch

    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    apply_training_settings(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])
