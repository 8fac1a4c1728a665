"""Shared fixtures: the real data subset in ../shared/data and small seeds."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tests/<package>/ holds each package's tests; the cross-cutting tests here import their helpers (fabricated
# runs, a local HTTP server) by module name, as pytest does for the files of one folder
sys.path.extend(str(p) for p in sorted(Path(__file__).resolve().parent.iterdir())
                if p.is_dir() and p.name.isidentifier() and not p.name.startswith("_") and str(p) not in sys.path)
# test files import nbformat: as `python -m qmlnb` and papermill's process do (qmlnb._util.skip_unused_schema_format),
# keep jsonschema from building its "iri" parser (2 to 5 s), which no notebook schema uses, in each tier's process
sys.modules.setdefault("rfc3987_syntax", None)
# CI clones the repository with shared/ beside it; QMLNB_SHARED_DATA overrides
SHARED_DATA = Path(os.environ.get("QMLNB_SHARED_DATA", REPO.parent / "shared" / "data"))


# the variables OpenMP, MKL, OpenBLAS and numba read when they start (qmlnb.qcnn.determinism.THREAD_ENV_VARS,
# spelled here so that collecting the tests imports nothing of the package)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


class _ThreadPools:
    """threadpoolctl's controllers of the loaded BLAS and OpenMP libraries, found again after imports."""

    def __init__(self):
        self.modules, self.libs = -1, []

    def loaded(self) -> list:
        if len(sys.modules) != self.modules:  # a library may have come with the new modules (1 ms to look)
            from threadpoolctl import ThreadpoolController

            self.libs, self.modules = ThreadpoolController().lib_controllers, len(sys.modules)
        return self.libs


def _default_threads(name: str, env: dict) -> int:
    """What a library loaded during a test starts with: its thread variable ``name`` before the test, else all cores."""
    value = env.get(name)
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _thread_settings_restored(pools: _ThreadPools):
    saved = {name: os.environ.get(name) for name in THREAD_ENV_VARS}
    threads = {lib.filepath: lib.num_threads for lib in pools.loaded()}
    torch, numba = sys.modules.get("torch"), sys.modules.get("numba")
    torch_threads = torch.get_num_threads() if torch is not None else None
    numba_threads = numba.get_num_threads() if numba is not None else None
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for lib in pools.loaded():
        variable = {"openblas": "OPENBLAS_NUM_THREADS", "mkl": "MKL_NUM_THREADS"}.get(lib.internal_api,
                                                                                       "OMP_NUM_THREADS")
        n = threads.get(lib.filepath) or _default_threads(variable, saved)
        if lib.num_threads != n:
            lib.set_num_threads(n)
    torch = sys.modules.get("torch")
    if torch is not None:  # torch imported during the test read the leaked OMP_NUM_THREADS
        torch.set_num_threads(torch_threads or _default_threads("OMP_NUM_THREADS", saved))
    numba = sys.modules.get("numba")
    if numba is not None:  # its whole pool unless the test began with fewer
        numba.set_num_threads(numba_threads or numba.config.NUMBA_NUM_THREADS)


# Undo what ``set_threads`` (every task calls it) sets for the whole test process, as it does for a notebook's:
# the thread variables, BLAS's, torch's and numba's thread counts. Left set, they made the tests depend on their
# order: a pool started after it had 1 thread, or a later test timed or checked BLAS at the wrong count. Once per
# test and once around each module, whose module-scoped fixtures (set up before any test's own) may call the
# tasks too.
@pytest.fixture(scope="session")
def _thread_pools() -> _ThreadPools:
    return _ThreadPools()


@pytest.fixture(autouse=True, scope="module")
def _restore_thread_settings_after_the_module(_thread_pools):
    with _thread_settings_restored(_thread_pools):
        yield


@pytest.fixture(autouse=True)
def _restore_thread_settings(_thread_pools):
    with _thread_settings_restored(_thread_pools):
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real Fashion-MNIST and CIFAR-10 subsets, or skip."""
    if not (SHARED_DATA / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real data subset not found at {SHARED_DATA} (set QMLNB_SHARED_DATA to its folder)")
    return SHARED_DATA


def _gram_with_a_worker_killed(dask_client, compute, *, tiles_left_below: int, timeout: float = 120.0):
    """Run ``compute()`` (a Gram on ``dask_client``'s cluster) in a thread and SIGKILL one worker process once
    fewer than ``tiles_left_below`` of its tile tasks remain; return (its result, the killed worker's PID).

    Fails if the Gram finished before a worker could be killed, or raised.
    """
    import signal
    import threading
    import time

    pids = dask_client.run(os.getpid)
    outcome = {}

    def run():
        try:
            outcome["K"] = compute()
        except BaseException as exc:  # reported in the main thread
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    deadline, left = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:  # wait until a good part of the tiles are done
        left = dask_client.run_on_scheduler(
            lambda dask_scheduler: sum(str(k).startswith("qmlnb-gram-tile") for k in dask_scheduler.tasks))
        if 0 < left < tiles_left_below:
            break
        time.sleep(0.02)
    victim = sorted(pids.items())[0][1]
    assert runner.is_alive() and left > 0, "the run finished before a worker could be killed"
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout)
    assert not runner.is_alive(), f"the Gram did not finish within {timeout:g} s of the worker's loss"
    assert "error" not in outcome, outcome.get("error")
    return outcome["K"], victim


@pytest.fixture
def gram_with_a_worker_killed():
    """``_gram_with_a_worker_killed``: a Gram on Dask that loses one of its worker processes mid-run."""
    return _gram_with_a_worker_killed
