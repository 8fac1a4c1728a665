"""The BLAS limit of a Gram matrix: SciPy's ``cherk`` on the same states, and GFLOP/s counted as it counts them.

The Gram step is one Hermitian product S S^H of the (N, 2**n) complex64 state
matrix; ``cherk`` computes that product's triangle and is the throughput a
Gram backend can hope to reach on a CPU.  GFLOP/s are counted for the full
matrix, 8 N M 2**n real flops (a complex multiply-add is 8), also for the
symmetric case where only a triangle is computed, so that every backend's
number compares directly with ``cherk``'s.
"""
from __future__ import annotations

import numpy as np


def gram_gflops(n: int, m: int, dim: int, seconds: float) -> float:
    """GFLOP/s of an (n, m) Gram of ``dim``-amplitude states computed in ``seconds`` (full-matrix count)."""
    return 8.0 * n * m * dim / seconds / 1e9


def gram_throughput(seconds: float, n: int, m: int, dim: int) -> dict:
    """``seconds``, ``pairs_per_s`` (kernel entries per second) and ``gflops`` (:func:`gram_gflops`) of an (n, m)
    Gram of ``dim``-amplitude states computed in ``seconds``: the one throughput every Gram benchmark reports."""
    return {"seconds": seconds, "pairs_per_s": n * m / seconds, "gflops": gram_gflops(n, m, dim, seconds)}


def cherk_call(S: np.ndarray, threads: int):
    """A callable running SciPy's BLAS ``cherk`` (S S^H, one triangle) on ``threads`` BLAS threads.

    ``S`` is the (N, d) complex64 state matrix the Gram backends get; the
    callable returns cherk's (N, N) triangle.
    """
    from scipy.linalg import blas

    from .backends.cpu_blas import blas_threads

    S = np.ascontiguousarray(S, dtype=np.complex64)

    def call():
        with blas_threads().limit(limits=threads, user_api="blas"):
            return blas.cherk(1.0, S.T, trans=2)

    return call
