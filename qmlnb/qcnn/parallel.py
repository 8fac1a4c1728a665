"""Processes for training: a fold-parallel pool and data-parallel torch.distributed.

* fold-parallel: a ``spawn`` process pool (kept for later calls), one fold per process.  Each fold is
  seeded by its index and trained by the function the caller passes (:mod:`qmlnb.qcnn.train` passes its
  ``train_fold``, the one sequential mode calls), so the results are identical to sequential ones
  (given the same number of threads per process).
* data-parallel: ``W`` processes join a gloo process group on localhost.  Every
  optimiser step's batch is shared out (``batch[rank::W]``); each process
  back-propagates ``sum of its losses / global batch size`` and the gradients
  are summed by an all-reduce, so every process takes the step sequential
  training would take (up to the order of floating-point additions) and all
  models stay identical.  Rank 0 evaluates the validation split, broadcasts
  the metrics (all ranks make the same early-stopping decision), writes the
  checkpoints and hands the result back.

Both give every process the same threads and deterministic algorithms
(:func:`qmlnb.qcnn.determinism.apply_training_settings`), with processes x
threads never more than the cores.  The training function comes in as an
argument (pickled by name into the spawned processes), so this module does not
import :mod:`qmlnb.qcnn.train`, which imports it.
"""
from __future__ import annotations

import atexit
import datetime
import multiprocessing
import os
import signal
import socket
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from .determinism import apply_training_settings


class LocalSync:
    """Single-process training: nothing to synchronise."""

    def gradients(self, model) -> None:
        pass

    def total(self, value: torch.Tensor) -> float:
        return float(value)

    def from_rank0(self, fn):
        return fn()


class DistributedSync:
    """Gradient all-reduce and broadcasts over the default torch.distributed group."""

    def __init__(self, rank: int):
        self.rank = rank

    def gradients(self, model) -> None:
        import torch.distributed as dist

        grads = [p.grad for p in model.parameters()]
        # one flat buffer: one all-reduce per step instead of one per tensor
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def total(self, value: torch.Tensor) -> float:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return float(value)

    def from_rank0(self, fn):
        import torch.distributed as dist

        box = [fn() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


# ------------------------------------------------------------------ fold-parallel
def _init_pool_worker(threads: int) -> None:
    # An interrupt is the parent's to handle: Jupyter stops a kernel by first sending SIGINT to the kernel's
    # process group, idle pool workers included, and each would die printing a KeyboardInterrupt traceback.
    # The workers end when the parent shuts the pool down (atexit) or dies (their call queue closes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    apply_training_settings(threads)


# Pools are kept for the next train_qcnn call (a sweep, a notebook's next cell):
# starting a spawned worker costs seconds (it imports torch and scikit-learn),
# often more than training one fold of this small model.
_POOLS: dict[tuple[int, int], ProcessPoolExecutor] = {}


def fold_pool(processes: int, threads: int) -> ProcessPoolExecutor:
    """A spawn process pool with ``threads`` torch threads per worker, reused across calls."""
    key = (processes, threads)
    if key not in _POOLS:
        _POOLS[key] = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_init_pool_worker, initargs=(threads,))
    return _POOLS[key]


def shutdown_pools() -> None:
    """Stop the worker processes kept by :func:`fold_pool`."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True)


atexit.register(shutdown_pools)


def run_fold_parallel(train_fold, folds, cfg, threads: int) -> list[dict]:
    """``train_fold(data, cfg)`` for each of ``folds`` in a pool of min(workers, folds) spawned processes.

    ``train_fold`` must be a module-level function (it is pickled by name).  Results in fold order.
    """
    key = (cfg.processes(), threads)
    pool = fold_pool(*key)
    try:
        futures = [pool.submit(train_fold, data, cfg) for data in folds]
        return [future.result() for future in futures]
    except BrokenProcessPool:
        # a worker died (killed, out of memory): never hand this pool out again
        _POOLS.pop(key, None)
        raise


# ------------------------------------------------------------------ data-parallel
def free_port() -> int:
    """A TCP port on localhost that is free now (for the gloo rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data_parallel_rank(train_fold, rank: int, world: int, port: int, threads: int, folds, cfg,
                        out_dir: str) -> None:
    import torch.distributed as dist

    try:
        apply_training_settings(threads)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=5))
        sync = DistributedSync(rank)
        outcomes = [train_fold(data, cfg, rank=rank, world=world, sync=sync) for data in folds]
        if rank == 0:
            torch.save(outcomes, Path(out_dir) / "result.pt")
        dist.destroy_process_group()
    except BaseException:
        Path(out_dir, f"error-rank{rank}.txt").write_text(traceback.format_exc())
        raise


def run_data_parallel(train_fold, folds, cfg, threads: int) -> list[dict]:
    """Train ``folds`` one after another, each by ``cfg.workers`` gloo processes.

    Each process calls ``train_fold(data, cfg, rank=, world=, sync=)`` (a module-level function).
    """
    context = multiprocessing.get_context("spawn")
    world, port = cfg.workers, free_port()
    with tempfile.TemporaryDirectory(prefix="qmlnb-ddp-") as out_dir:
        procs = [context.Process(target=_data_parallel_rank, daemon=True,
                                 args=(train_fold, rank, world, port, threads, folds, cfg, out_dir))
                 for rank in range(world)]
        for p in procs:
            p.start()
        # a failed rank would leave the others waiting in a collective: stop them all
        while any(p.is_alive() for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
        errors = sorted(Path(out_dir).glob("error-rank*.txt"))
        if errors or any(p.exitcode != 0 for p in procs):
            detail = errors[0].read_text() if errors else f"exit codes {[p.exitcode for p in procs]}"
            raise RuntimeError(f"data-parallel training failed in a worker process:\n{detail}")
        return torch.load(os.path.join(out_dir, "result.pt"), weights_only=False)
