"""The distributed path as users run it: ``dask scheduler`` and ``dask worker`` in their own processes.

A scheduler and two workers (each under its nanny, one thread) are started on
127.0.0.1 as separate processes, with this checkout on their PYTHONPATH, and
reached only by address (``client="tcp://127.0.0.1:PORT"``, ``sweep --dask
ADDRESS``), as on a SLURM or Kubernetes cluster.  Unlike a ``LocalCluster``
client, nothing here shares this process's memory: the states are pickled to
the workers and the tiles travel back (or are written by the workers).

The cluster is started once for the module, within ``START_TIMEOUT_S``, and
stopped by process group in the fixture's finalizer, also when a test fails;
the finalizer fails if any of its processes (or their children) outlives it.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from qmlnb.kernels import FeatureMap, gram
from qmlnb.kernels.mps import MPSStates
from qmlnb.lab import executor, runs

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0  # scheduler file written and both workers registered (a loaded 2-core machine)
N_WORKERS = 2
CPU_BACKENDS = ["cpu", "numba", "openmp"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def checkout_env(**extra) -> dict:
    """This process's environment with the checkout under test first on PYTHONPATH (the workers import it)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _tail(path: Path, n: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


@dataclass
class DaskProcesses:
    """A running scheduler and its workers: each a ``Popen`` leading its own process group."""

    address: str
    processes: list
    logs: list

    def stop(self, grace: float = 10.0) -> list[int]:
        """SIGTERM, then SIGKILL after ``grace``, every group of the processes and of their descendants.

        Returns the PIDs still alive afterwards (none, unless something escaped its group).
        """
        tree = []
        for proc in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(proc.pid)
                tree += [root, *root.children(recursive=True)]
        executor.stop_process_trees([proc.pid for proc in self.processes], grace=grace)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        return [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@contextlib.contextmanager
def dask_processes(folder: Path, n_workers: int = N_WORKERS, timeout: float = START_TIMEOUT_S):
    """Start ``dask scheduler`` and ``n_workers`` x ``dask worker --nthreads 1`` on 127.0.0.1; yield DaskProcesses.

    Free ports are the scheduler's own choice (``--port 0``), read back from
    its ``--scheduler-file``.  Everything is stopped on exit, however the
    block ends; a start that takes longer than ``timeout`` seconds fails with
    the processes' last log lines.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    env = checkout_env()
    cluster = DaskProcesses("", [], [])

    def start(name: str, args: list[str]) -> None:
        log = folder / f"{name}.log"
        cluster.logs.append(log)
        with open(log, "wb") as sink:
            # its own session: the whole tree (nanny, worker, papermill) can be signalled by group
            cluster.processes.append(subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=sink,
                                                      stderr=subprocess.STDOUT, env=env, cwd=folder,
                                                      start_new_session=True))

    def fail(why: str):
        logs = "\n".join(f"--- {log.name}\n{_tail(log)}" for log in cluster.logs)
        raise RuntimeError(f"the Dask processes did not start: {why}\n{logs}")

    deadline = time.monotonic() + timeout
    try:
        # an idle scheduler and a worker without scheduler exit by themselves: a safety net should this
        # test process be SIGKILLed before its finalizer runs
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--scheduler-file", str(scheduler_file), "--idle-timeout", "900"])
        while not scheduler_file.is_file():
            if cluster.processes[0].poll() is not None:
                fail(f"the scheduler exited with status {cluster.processes[0].returncode}")
            if time.monotonic() > deadline:
                fail(f"no scheduler file after {timeout:g} s")
            time.sleep(0.1)
        for i in range(n_workers):
            start(f"worker-{i}", ["worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1",
                                  "--nthreads", "1", "--no-dashboard", "--name", f"worker-{i}",
                                  "--death-timeout", "60", "--local-directory", str(folder / f"worker-{i}")])
        with distributed.Client(scheduler_file=str(scheduler_file),
                                timeout=max(1.0, deadline - time.monotonic())) as client:
            cluster.address = client.scheduler.address
            try:
                client.wait_for_workers(n_workers, timeout=max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                fail(f"{len(client.nthreads())} of {n_workers} workers registered within {timeout:g} s")
        yield cluster
    finally:
        left = cluster.stop()
        if left:
            raise AssertionError(f"processes of the Dask cluster outlived it: {left}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dask_processes(tmp_path_factory.mktemp("dask-cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def client(cluster):
    """A client of the cluster by address (not a LocalCluster's: nothing is shared with this process)."""
    with distributed.Client(cluster.address, timeout=30) as dask_client:
        yield dask_client


def operands(kind: str, shape: str):
    """(A, B) small enough for a test: state vectors (4 qubits) or exact MPS (5 qubits, bond 4)."""
    rng = np.random.default_rng(39)
    X = rng.uniform(0, np.pi, (26, 5))
    fm = FeatureMap(n_qubits=5, reps=2, bandwidth=0.6)
    S = fm.mps(X) if kind == "mps" else FeatureMap(n_qubits=4, bandwidth=0.6).states(X[:, :4])
    return (S, None) if shape == "square" else (S[:11], S)


# ------------------------------------------------------------------ states arriving in another layout
def test_pickled_mps_states_are_validated_again_with_numpys_own_descriptor():
    M = FeatureMap(n_qubits=5, reps=2).mps(np.random.default_rng(0).uniform(0, np.pi, (4, 5)))
    raw = pickle.loads(pickle.dumps(M.tensors))
    assert raw.dtype == np.complex64 and raw.dtype is not np.dtype(np.complex64)  # what a worker receives
    copy = pickle.loads(pickle.dumps(M))
    assert copy.tensors.dtype is np.dtype(np.complex64)
    np.testing.assert_array_equal(copy.tensors, M.tensors)
    assert MPSStates(raw).tensors.dtype is np.dtype(np.complex64)  # a view, not a copy
    assert np.shares_memory(MPSStates(raw).tensors, raw)
    with pytest.raises(ValueError, match="C-contiguous complex64"):
        MPSStates(raw.astype(np.complex128))  # equal descriptors only: no silent conversion


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["states", "mps"])
def test_tiles_of_states_that_were_pickled_or_are_read_only(backend, kind):
    """``compute_tile`` (every tile on a worker) takes operands in whatever layout deserialising left them."""
    from qmlnb.kernels.out_of_core import compute_tile, tile_operand
    from qmlnb.kernels.registry import get_backend

    A, B = operands(kind, "rect")
    module = get_backend(backend)
    expected = gram(A, B, backend=backend)
    received = pickle.loads(pickle.dumps(A)), pickle.loads(pickle.dumps(B))
    if kind == "states":
        received[1].setflags(write=False)
        assert received[0].dtype is not np.dtype(np.complex64)
        assert tile_operand(received[0]).dtype is np.dtype(np.complex64)
    else:  # as a deserialiser that bypasses MPSStates.__init__ would leave them
        bypassed = object.__new__(MPSStates)
        object.__setattr__(bypassed, "tensors", pickle.loads(pickle.dumps(A.tensors)))
        assert bypassed.tensors.dtype is not np.dtype(np.complex64)
        assert tile_operand(bypassed).tensors.dtype is np.dtype(np.complex64)
        received = bypassed, received[1]
    block = compute_tile(module, *received, (0, 11, 5, 20), tile=4, n_threads=1, dtype=np.dtype(np.float64))
    np.testing.assert_allclose(block, expected[0:11, 5:20], atol=1e-6)


def test_native_extensions_accept_an_equal_descriptor_and_refuse_another_byte_order():
    pytest.importorskip("qmlnb._openmp", reason="the native extension is not built")
    from qmlnb import _mps_openmp, _openmp

    S, _ = operands("states", "square")
    M, _ = operands("mps", "square")
    out = np.empty((26, 26))
    _openmp.gram(pickle.loads(pickle.dumps(S)), None, pickle.loads(pickle.dumps(out)), 8, 1)
    for fn, tensors in ((_openmp.gram, S), (_mps_openmp.gram, M.tensors)):
        fn(pickle.loads(pickle.dumps(tensors)), None, out, 8, 1)
        np.testing.assert_allclose(out, gram(S if fn is _openmp.gram else M), atol=1e-6)
        with pytest.raises(ValueError, match="must have dtype complex64"):
            fn(tensors.astype(">c8"), None, out, 8, 1)


# ------------------------------------------------------------------ every backend through the cluster
@pytest.mark.parametrize("shape", ["square", "rect"])
@pytest.mark.parametrize("to_file", [False, True], ids=["memory", "file"])
@pytest.mark.parametrize("kind", ["states", "mps"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gram_on_workers_reached_by_address_equals_one_process(cluster, backend, kind, to_file, shape, tmp_path):
    A, B = operands(kind, shape)
    expected = gram(A, B, backend=backend)
    out = tmp_path / "K.npy" if to_file else None  # workers write it: one machine is one shared file system
    K = gram(A, B, backend=backend, client=cluster.address, tile=8, out=out)
    assert K.shape == expected.shape and K.dtype == np.float64
    assert isinstance(K, np.memmap) == to_file
    np.testing.assert_allclose(K, expected, atol=1e-6)
    if to_file:
        np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_a_worker_killed_mid_run_loses_nothing(cluster, client, gram_with_a_worker_killed):
    """SIGKILL one worker process mid-run: the scheduler reruns its tiles elsewhere, the result is exact;
    its nanny starts a new worker."""
    rng = np.random.default_rng(7)
    S = FeatureMap(n_qubits=5, bandwidth=0.5).states(rng.uniform(0, np.pi, (240, 5)))
    tile = 8  # 465 small tasks: long enough to kill a worker in the middle
    K, victim = gram_with_a_worker_killed(client, lambda: gram(S, client=cluster.address, tile=tile),
                                          tiles_left_below=350, timeout=180)
    np.testing.assert_allclose(K, gram(S, tile=tile), atol=1e-6)
    client.wait_for_workers(N_WORKERS, timeout=120)  # the nanny replaced it: the next tests have two again
    assert victim not in client.run(os.getpid).values()


# ------------------------------------------------------------------ sweep --dask ADDRESS stopped by a signal
PARAMS = "a = 1\nsleep = 0.0\nthreads = 0\n"
BODY = """
import os, pathlib, time
pathlib.Path("kernel.pid").write_text(str(os.getpid()))  # the kernel is running this point
time.sleep(sleep)
from qmlnb.lab import tasks
tasks.save_run(tasks.run_dir("toy"), dict(a=a, threads=threads), {"stage": "toy"})
"""


def sleepy_grid(folder: Path, points: list[int]) -> Path:
    nb = new_notebook(cells=[new_code_cell(PARAMS, metadata={"tags": ["parameters"]}), new_code_cell(BODY)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, folder / "sleepy.ipynb")
    grid = folder / "sleepy.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(folder / "sleepy.ipynb"), "name": "sleepy",
                                    "grid": {"a": points, "sleep": [120.0], "threads": [1]}}))
    return grid


def processes_under(folder: Path) -> list[int]:
    """PIDs of live processes whose command line names ``folder`` (papermill runs of a test's grid)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess):
            if any(str(folder) in arg for arg in proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_papermill_runs_on_the_workers(cluster, client, tmp_path, signum):
    grid = sleepy_grid(tmp_path, [1, 2, 3])  # two run (one per worker), the third waits
    runs_dir = tmp_path / "runs"
    sweep = subprocess.Popen([sys.executable, "-m", "qmlnb", "sweep", str(grid), "--runs-dir", str(runs_dir),
                              "--dask", cluster.address], cwd=tmp_path, env=checkout_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    folders = [runs_dir / "sleepy" / runs.run_name({"a": a, "sleep": 120.0, "threads": 1}) for a in (1, 2, 3)]
    try:
        deadline = time.monotonic() + 150
        while sum((f / "kernel.pid").is_file() for f in folders) < N_WORKERS:
            assert sweep.poll() is None, f"the sweep ended early: {sweep.communicate()[1]}"
            assert time.monotonic() < deadline, "the points never started on the workers"
            time.sleep(0.2)
        started = [f for f in folders if (f / "kernel.pid").is_file()]
        remote = [runs.read_status(f)["pid"] for f in started] + [int((f / "kernel.pid").read_text())
                                                                  for f in started]
        workers = set(client.run(os.getpid).values())
        assert all(psutil.Process(pid).ppid() in workers for pid in remote[:len(started)])  # papermill: a worker's child
        os.kill(sweep.pid, signum)
        _, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    assert sweep.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "marked interrupted" in err
    # when the sweep has returned, the runs on the workers are gone and say so
    assert [pid for pid in remote if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE] == []
    assert processes_under(tmp_path) == []
    for folder in started:
        record = runs.read_status(folder)
        assert record["status"] == runs.INTERRUPTED, record
        assert not runs.is_complete(folder) and not (folder / "sleepy.ipynb").exists()
    waiting = [f for f in folders if f not in started]
    assert all(not (f / "kernel.pid").exists() for f in waiting)  # the queued point never ran
    # the workers are free again: no task of the sweep is left on them
    deadline = time.monotonic() + 30
    while any(client.processing().values()):
        assert time.monotonic() < deadline, client.processing()
        time.sleep(0.1)
    assert client.submit(abs, -3, pure=False).result(timeout=30) == 3
