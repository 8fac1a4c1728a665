"""A test leaves no thread setting behind: the tasks' ``set_threads`` in one test never reaches the next.

The two tests run in this order in one process (pytest keeps a file's order). ``set_threads`` sets BLAS's
and torch's threads for the whole process, as a notebook wants; without the restoring fixtures of
``conftest.py`` the second test would start with the first one's single thread. numba's running pool is
set through numba itself, never through NUMBA_NUM_THREADS: numba reads that variable again at each
compilation and raises on any value but its pool's.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from qmlnb._util import available_cores
from qmlnb.qcnn.determinism import THREAD_ENV_VARS, set_threads

numba = pytest.importorskip("numba", reason="numba is the library whose pool a leaked variable breaks")
torch = pytest.importorskip("torch", reason="set_threads sets torch's threads")
threadpoolctl = pytest.importorskip("threadpoolctl")

SEEN: dict = {}


def _parallel_sum(a):
    return numba.njit(parallel=True)(lambda v: v.sum())(a)


def _settings():
    return ({name: os.environ.get(name) for name in THREAD_ENV_VARS}, torch.get_num_threads(),
            sorted(lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"),
            numba.get_num_threads())


def test_a_task_sets_one_thread_for_its_whole_process():
    if available_cores() < 2 or "NUMBA_NUM_THREADS" in os.environ:
        pytest.skip("needs 2 cores and numba's default pool to show a leaked single thread")
    assert _parallel_sum(np.ones(64)) == 64  # numba's pool now runs with every core
    SEEN["before"] = _settings()
    set_threads(1)
    env, torch_threads, blas, numba_threads = _settings()
    assert env["NUMBA_NUM_THREADS"] is None and numba_threads == 1
    assert env["OMP_NUM_THREADS"] == "1" and torch_threads == 1 and set(blas) <= {1}
    # a notebook goes on after set_threads: numba compiles again in the same process
    assert _parallel_sum(np.ones(16, dtype=np.int64)) == 16


def test_the_next_test_starts_with_the_settings_from_before():
    if "before" not in SEEN:
        pytest.skip("the first test did not run in this process (run the whole file)")
    assert _settings() == SEEN["before"]
    # a new numba compilation reads NUMBA_NUM_THREADS again: it must agree with the running pool
    assert _parallel_sum(np.ones(32, dtype=np.float32)) == 32
