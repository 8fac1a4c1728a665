"""Data-parallel training's kept gloo group: reused, same results, replaced after a failure, stopped at shutdown.

Starting the ranks (spawn, import torch, join the group) costs seconds, more
than training this small model, so the processes are kept for the next call
as the fold-parallel pool's are (qmlnb.qcnn.parallel.DataParallelGroup).
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from qmlnb.data import load_splits
from qmlnb.qcnn import parallel
from qmlnb.qcnn.train import TrainConfig, available_cores, fold_data, train_fold, train_qcnn

pytestmark = pytest.mark.skipif(available_cores() < 2, reason="data-parallel training needs 2 cores")
CFG = TrainConfig(n_qubits=4, epochs=2, batch_size=16, threads=1, progress=False, patience=None,
                  mode="data-parallel", workers=2)


@pytest.fixture(scope="module")
def small():
    return load_splits("digits", classes=(3, 8), n_train=48, seed=0)


@pytest.fixture(autouse=True)
def own_processes():
    """Each test starts without kept workers and must leave none behind."""
    parallel.shutdown_pools()
    yield
    parallel.shutdown_pools()
    assert multiprocessing.active_children() == []


def fail_on_rank_1(data, cfg, *, rank, world, sync):
    """A train_fold whose rank 1 fails at once while rank 0 trains (and waits for it in the first all-reduce)."""
    if rank == 1:
        raise ValueError("rank 1 fails on purpose")
    return train_fold(data, cfg, rank=rank, world=world, sync=sync)


def same_training(a, b) -> bool:
    """Same weights bit for bit, same metrics and history (but for the epochs' durations)."""
    def history(r):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in r.history]

    weights = all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    return weights and a.fold_metrics == b.fold_metrics and history(a) == history(b)


def gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_second_call_reuses_the_processes_and_trains_as_a_fresh_group(small):
    first = train_qcnn(small, CFG)  # starts the group: what every call did before the group was kept
    pids = parallel.data_parallel_group(2, 1).pids()
    other = train_qcnn(small, dataclasses.replace(CFG, seed=1))  # another job in between leaves nothing behind
    again = train_qcnn(small, CFG)
    assert parallel.data_parallel_group(2, 1).pids() == pids
    assert same_training(again, first) and not same_training(other, first)

    parallel.shutdown_pools()
    assert multiprocessing.active_children() == [] and all(gone(pid) for pid in pids)
    fresh = train_qcnn(small, CFG)
    assert not set(parallel.data_parallel_group(2, 1).pids()) & set(pids)
    assert same_training(fresh, first)


def test_a_failing_rank_raises_its_traceback_and_the_next_call_starts_a_new_group(small):
    folds = fold_data(small, CFG)
    pids = parallel.data_parallel_group(2, 1).pids()
    with pytest.raises(RuntimeError, match=r"(?s)failed in a worker process:.*Traceback.*"
                                           r"ValueError: rank 1 fails on purpose"):
        parallel.run_data_parallel(fail_on_rank_1, folds, CFG, 1)
    # rank 0 was left in a collective: stopped with the group, which is not handed out again
    assert multiprocessing.active_children() == [] and all(gone(pid) for pid in pids)
    result = train_qcnn(small, CFG)
    assert result.history and not set(parallel.data_parallel_group(2, 1).pids()) & set(pids)


CHILD = textwrap.dedent("""
    import os, signal, time
    from qmlnb.data import load_splits
    from qmlnb.qcnn import parallel
    from qmlnb.qcnn.train import TrainConfig, train_qcnn

    got = []
    signal.signal(signal.SIGINT, lambda *_: got.append(1))  # the kernel: survives the interrupt (not inherited)
    splits = load_splits("digits", classes=(3, 8), n_train=48, seed=0)
    cfg = TrainConfig(n_qubits=4, epochs=1, batch_size=16, threads=1, progress=False, mode="data-parallel",
                      workers=2)
    train_qcnn(splits, cfg)
    os.killpg(os.getpgrp(), signal.SIGINT)  # what jupyter_client's shutdown_kernel does first
    time.sleep(2)
    assert got, "the parent did not see the interrupt"
    train_qcnn(splits, cfg)  # the same workers, still there
    print(*parallel.data_parallel_group(2, 1).pids(), flush=True)
    os._exit(0)  # no atexit hooks: nobody stops the workers, they must see that their parent is gone
""")


@pytest.mark.timeout(180)
def test_the_workers_ignore_interrupts_and_leave_when_their_parent_dies(tmp_path):
    # output to files, not pipes: the workers inherit them, and a pipe would stay open as long as they live
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.run([sys.executable, "-c", CHILD], stdout=stdout, stderr=stderr, timeout=170,
                              start_new_session=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    stderr = err.read_text()
    assert proc.returncode == 0, stderr
    assert "KeyboardInterrupt" not in stderr and "Traceback" not in stderr, stderr
    pids = [int(pid) for pid in out.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in pids if not gone(pid)]
    for pid in left:  # leave no process behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent"
