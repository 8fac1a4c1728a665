"""Shared fixtures: the real data subset in ../shared/data and small seeds."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tests/<package>/ holds each package's tests; the cross-cutting tests here import their helpers (fabricated
# runs, a local HTTP server) by module name, as pytest does for the files of one folder
sys.path.extend(str(p) for p in sorted(Path(__file__).resolve().parent.iterdir())
                if p.is_dir() and p.name.isidentifier() and not p.name.startswith("_") and str(p) not in sys.path)
# CI clones the repository with shared/ beside it; QMLNB_SHARED_DATA overrides
SHARED_DATA = Path(os.environ.get("QMLNB_SHARED_DATA", REPO.parent / "shared" / "data"))


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
