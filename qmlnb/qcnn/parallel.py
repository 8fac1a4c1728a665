"""Processes for training: a fold-parallel pool and data-parallel torch.distributed.

* fold-parallel: a ``spawn`` process pool (kept for later calls), one fold per process.  Each fold is
  seeded by its index and trained by the function the caller passes (:mod:`qmlnb.qcnn.train` passes its
  ``train_fold``, the one sequential mode calls), so the results are identical to sequential ones
  (given the same number of threads per process).
* data-parallel: ``W`` spawned processes join a gloo process group on localhost
  once and are kept for later calls (:class:`DataParallelGroup`), each call
  sending them the training function, folds and configuration.  Every
  optimiser step's batch is shared out (``batch[rank::W]``); each process
  back-propagates ``sum of its losses / global batch size`` and the gradients
  are summed by an all-reduce, so every process takes the step sequential
  training would take (up to the order of floating-point additions) and all
  models stay identical.  Rank 0 evaluates the validation split, broadcasts
  the metrics (all ranks make the same early-stopping decision), writes the
  checkpoints and hands the result back.

Starting the processes costs seconds (each imports torch and scikit-learn), more
than training this small model, so the first call of a (processes, threads)
pair pays it and later calls reuse them; :func:`shutdown_pools` stops them all
(also at exit).  A data-parallel call that fails or is interrupted stops its
group (a rank may be stuck in a collective); the next call starts a new one.

Both give every process the same threads and deterministic algorithms
(:func:`qmlnb.qcnn.determinism.apply_training_settings`), with processes x
threads never more than the cores.  The training function comes in as an
argument (pickled by name into the spawned processes), so this module does not
import :mod:`qmlnb.qcnn.train`, which imports it.
"""
from __future__ import annotations

import atexit
import datetime
import io
import multiprocessing
import pickle
import queue
import signal
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

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
    """Stop the worker processes kept by :func:`fold_pool` and :func:`data_parallel_group`."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True)
    while _GROUPS:
        _GROUPS.popitem()[1].close()


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


def _data_parallel_worker(rank: int, world: int, port: int, threads: int, jobs, results) -> None:
    """Rank ``rank`` of a :class:`DataParallelGroup`: join the gloo group once, then train each job it is sent.

    A job is ``(train_fold, folds, cfg)`` pickled; ``None`` ends the loop.  Each job's reply on ``results`` is
    ``(rank, None, payload)``: rank 0's payload is the outcomes saved by ``torch.save``, the others' None.
    An error is replied as ``(rank, traceback text, None)`` and ends the process: its peers may be stuck
    in a collective, so the parent stops them and the group is not used again.
    """
    import torch.distributed as dist

    # as the fold pool's workers: an interrupt of the kernel's process group is the parent's to handle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    try:
        apply_training_settings(threads)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=5))
        sync = DistributedSync(rank)
        while True:
            try:
                job = jobs.get(timeout=1.0)
            except queue.Empty:
                # a parent killed without running its atexit hooks leaves no one to stop us: look for it
                if not parent.is_alive():
                    results.cancel_join_thread()  # nobody will read an unsent reply: do not wait for it at exit
                    return
                continue
            if job is None:
                break
            train_fold, folds, cfg = pickle.loads(job)
            outcomes = [train_fold(data, cfg, rank=rank, world=world, sync=sync) for data in folds]
            payload = None
            if rank == 0:
                buffer = io.BytesIO()
                torch.save(outcomes, buffer)
                payload = buffer.getvalue()
            results.put((rank, None, payload))
        dist.destroy_process_group()
    except BaseException:
        results.put((rank, traceback.format_exc(), None))


class DataParallelGroup:
    """``world`` spawned processes in one gloo process group, each with ``threads`` torch threads.

    The processes start (and join the group) when the object is made and then wait for
    :meth:`run` calls; :func:`data_parallel_group` keeps one per (world, threads) for later calls.
    A group whose call failed or was interrupted is closed: its ranks may be stuck in a collective.
    """

    def __init__(self, world: int, threads: int):
        context = multiprocessing.get_context("spawn")
        self.world, self.threads = world, threads
        self.jobs = [context.Queue() for _ in range(world)]  # one per rank: each rank takes every job
        self.results = context.Queue()
        port = free_port()
        self.processes = [context.Process(target=_data_parallel_worker, daemon=True,
                                          args=(rank, world, port, threads, self.jobs[rank], self.results))
                          for rank in range(world)]
        for p in self.processes:
            p.start()

    def run(self, train_fold, folds, cfg) -> list[dict]:
        """``train_fold(data, cfg, rank=, world=, sync=)`` for each of ``folds`` on every rank; rank 0's outcomes.

        Raises RuntimeError with the failing rank's traceback (or the exit codes of a rank that died
        without one); the caller then closes the group.
        """
        # pickled here, not by the queues' feeder threads: an object that cannot be pickled raises now
        # instead of being dropped with a printed traceback while we wait for the replies
        job = pickle.dumps((train_fold, folds, cfg))
        for jobs in self.jobs:
            jobs.put(job)
        outcomes, pending = None, set(range(self.world))
        while pending:
            try:
                rank, error, payload = self.results.get(timeout=0.05)
            except queue.Empty:
                # a failed rank would leave the others waiting in a collective: watch for a dead one
                if all(p.is_alive() for p in self.processes):
                    continue
                try:  # its last word may still be in the pipe
                    rank, error, payload = self.results.get(timeout=1.0)
                except queue.Empty:
                    error = f"exit codes {[p.exitcode for p in self.processes]}"
            if error is not None:
                raise RuntimeError(f"data-parallel training failed in a worker process:\n{error}")
            pending.discard(rank)
            if rank == 0:
                outcomes = torch.load(io.BytesIO(payload), weights_only=False)
        return outcomes

    def pids(self) -> list[int]:
        """The worker processes' ids, by rank."""
        return [p.pid for p in self.processes]

    def close(self, timeout: float = 5.0) -> None:
        """Stop the processes: ask them to leave, then terminate those still running after ``timeout`` s."""
        for jobs in self.jobs:
            jobs.put(None)
        deadline = time.monotonic() + timeout
        for p in self.processes:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.processes:
            if p.is_alive():
                p.terminate()
            p.join()
        for q in (*self.jobs, self.results):
            q.cancel_join_thread()  # a job no dead rank will read must not hold up our exit
            q.close()


# Kept for the next call, as the fold pools: spawning the ranks and joining the group costs seconds,
# more than a whole training of this small model.
_GROUPS: dict[tuple[int, int], DataParallelGroup] = {}


def data_parallel_group(world: int, threads: int) -> DataParallelGroup:
    """The :class:`DataParallelGroup` of ``world`` processes x ``threads`` threads, started on first use."""
    key = (world, threads)
    if key not in _GROUPS:
        _GROUPS[key] = DataParallelGroup(world, threads)
    return _GROUPS[key]


def run_data_parallel(train_fold, folds, cfg, threads: int) -> list[dict]:
    """Train ``folds`` one after another, each by the ``cfg.workers`` processes of a kept gloo group.

    Each process calls ``train_fold(data, cfg, rank=, world=, sync=)`` (a module-level function).  The
    first call for a (workers, threads) pair starts the group; a failed or interrupted call closes it,
    and the next call starts a new one.
    """
    key = (cfg.workers, threads)
    group = data_parallel_group(*key)
    try:
        return group.run(train_fold, folds, cfg)
    except BaseException:
        _GROUPS.pop(key, None)
        group.close(timeout=0.0)
        raise
