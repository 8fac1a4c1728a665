"""Torch threads and deterministic algorithms for training, set in one place.

Every process that trains sets the same two things: the sequential run in the
caller's process (for the duration of the call, :func:`training_settings`),
each fold-parallel pool worker and each data-parallel rank (for the process's
life, :func:`apply_training_settings`).  With the same number of threads per
process the three modes then run the same kernels in the same order, which is
what makes a fold-parallel fold equal to the same fold trained sequentially.
"""
from __future__ import annotations

import contextlib

import torch

from .._util import check_positive_int


def apply_training_settings(threads: int) -> None:
    """This process: ``threads`` torch intra-op threads and deterministic algorithms.

    ``warn_only=True``: an op without a deterministic implementation warns
    instead of stopping a run; the model's ops all have one on the CPU.
    """
    torch.set_num_threads(check_positive_int(threads, "threads"))
    torch.use_deterministic_algorithms(True, warn_only=True)


@contextlib.contextmanager
def training_settings(threads: int):
    """:func:`apply_training_settings` inside the ``with`` block; the previous settings restored after it."""
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    apply_training_settings(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])
