"""gram(..., client=...) on a local Dask cluster (loopback only), worker loss, run_on_dask."""
from __future__ import annotations

import contextlib
import os
import socket
import time

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap, gram
from qmlnb.kernels.distributed import SchedulerUnreachableError, connect
from qmlnb.lab.executor_dask import run_on_dask
from qmlnb.kernels.out_of_core import LEDGER_DTYPE, sidecar_paths

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(120)


def local_cluster():
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=":0")


@pytest.fixture(scope="module")
def client():
    with local_cluster() as cluster, distributed.Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def states():
    rng = np.random.default_rng(11)
    return FeatureMap(n_qubits=5, bandwidth=0.6).states(rng.uniform(0, np.pi, (120, 5)))


def test_symmetric_gram_on_dask_equals_single_machine(client, states):
    K = gram(states, client=client, tile=25)
    assert type(K) is np.ndarray and K.shape == (120, 120)
    np.testing.assert_allclose(K, gram(states), atol=1e-6)


def test_rectangular_float32_gram_on_dask(client, states):
    K = gram(states[:30], states, client=client, tile=16, dtype=np.float32)
    assert K.dtype == np.float32
    np.testing.assert_allclose(K, gram(states[:30], states), atol=1e-6)


def test_workers_write_tiles_into_the_file(client, states, tmp_path):
    path = tmp_path / "K.npy"
    K = gram(states, client=client, tile=32, out=path)
    assert isinstance(K, np.memmap)
    np.testing.assert_allclose(K, gram(states), atol=1e-6)
    assert set(np.frombuffer(sidecar_paths(path)[1].read_bytes(), dtype=LEDGER_DTYPE)["done"]) == {1}


def test_dask_resumes_a_file_started_on_one_machine(client, states, tmp_path, monkeypatch):
    from qmlnb.kernels import out_of_core

    path = tmp_path / "K.npy"
    real_add = out_of_core.TileLedger.add

    def stop_after_three(self, k, checksum, sync=None):
        real_add(self, k, checksum, sync)
        if len(self.written) + self.n_done == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(out_of_core.TileLedger, "add", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        gram(states, out=path, tile=32)
    monkeypatch.undo()
    ledger = np.frombuffer(sidecar_paths(path)[1].read_bytes(), dtype=LEDGER_DTYPE)
    assert ledger["done"].sum() == 3  # committed on the way out
    K = gram(states, client=client, tile=32, out=path)
    np.testing.assert_allclose(K, gram(states), atol=1e-6)


def test_local_cluster_tiles_go_through_shared_memory_and_nothing_is_left(client, states, monkeypatch):
    from qmlnb.kernels import distributed as qdist

    made = []
    real_scratch = qdist.scratch_output

    def recording_scratch(*args):
        with real_scratch(*args) as (target, K):
            made.append(target.path)
            yield target, K

    monkeypatch.setattr(qdist, "scratch_output", contextlib.contextmanager(recording_scratch))
    K = gram(states, client=client, tile=25)
    assert len(made) == 1 and not os.path.exists(made[0])  # used, then removed
    assert type(K) is np.ndarray
    np.testing.assert_allclose(K, gram(states), atol=1e-6)


def test_workers_elsewhere_send_tiles_back_and_flush_their_own_writes(client, states, tmp_path, monkeypatch):
    """A client by scheduler address is not known to share this machine: tiles travel, files are flushed per tile."""
    from qmlnb.kernels import distributed as qdist
    from qmlnb.kernels import out_of_core

    monkeypatch.setattr(qdist, "scratch_output", None)  # must not be used
    synced, runs = [], []
    monkeypatch.setattr(out_of_core.GramFile, "sync", lambda self: synced.append(self.path))
    real_run_tiles = qdist._run_tiles

    def recording_run_tiles(*args, **kwargs):
        runs.append((kwargs.get("target"), kwargs.get("flush", False)))
        return real_run_tiles(*args, **kwargs)

    monkeypatch.setattr(qdist, "_run_tiles", recording_run_tiles)
    with distributed.Client(client.scheduler.address) as remote:
        assert not qdist.on_this_machine(remote) and qdist.on_this_machine(client)
        np.testing.assert_allclose(gram(states, client=remote, tile=25), gram(states), atol=1e-6)
        np.testing.assert_allclose(gram(states[:40], states, client=remote, tile=16), gram(states[:40], states),
                                   atol=1e-6)
        K = gram(states, client=remote, tile=32, out=tmp_path / "K.npy")
    assert [target is None for target, _ in runs] == [True, True, False]  # tiles came back, then went to the file
    assert runs[-1][1] is True and synced == []  # workers flush: an fsync here would miss another host's cache
    np.testing.assert_allclose(K, gram(states), atol=1e-6)
    assert set(np.frombuffer(sidecar_paths(tmp_path / "K.npy")[1].read_bytes(), dtype=LEDGER_DTYPE)["done"]) == {1}


def test_lost_worker_is_recovered(states, gram_with_a_worker_killed):
    """SIGKILL one of two worker processes mid-run: its tiles are recomputed, the result is exact."""
    rng = np.random.default_rng(5)
    S = FeatureMap(n_qubits=6, bandwidth=0.5).states(rng.uniform(0, np.pi, (600, 6)))
    tile = 10  # 1,830 small tasks: long enough to kill a worker in the middle
    with local_cluster() as cluster, distributed.Client(cluster) as dask_client:
        K, victim_pid = gram_with_a_worker_killed(dask_client, lambda: gram(S, client=dask_client, tile=tile),
                                                  tiles_left_below=1500, timeout=90)
        assert victim_pid not in dask_client.run(os.getpid).values()  # the worker really died
    np.testing.assert_allclose(K, gram(S, tile=tile), atol=1e-6)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_scheduler_is_a_clear_error_within_the_timeout(states):
    address = f"tcp://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(SchedulerUnreachableError, match="no Dask scheduler answered at .* within 2 s"):
        with connect(address, timeout=2):
            pass
    assert time.monotonic() - start < 30


def test_gram_with_unreachable_scheduler_fails(states, monkeypatch):
    from qmlnb.kernels import distributed as qdist

    monkeypatch.setattr(qdist, "DEFAULT_TIMEOUT_S", 2.0)
    with pytest.raises(SchedulerUnreachableError):
        gram(states, client=f"tcp://127.0.0.1:{closed_port()}")


@pytest.mark.parametrize("bad", [42, "", ["local"]])
def test_bad_client_is_refused(states, bad, tmp_path):
    with pytest.raises(ValueError, match="client must be"):
        gram(states, client=bad)
    with pytest.raises(ValueError, match="client must be"):
        gram(states, client=bad, out=tmp_path / "K.npy")
    assert list(tmp_path.iterdir()) == []  # refused before the file was created


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise RuntimeError("point 3 failed")
    return x


def test_run_on_dask_keeps_order(client):
    assert run_on_dask(square, range(12), client) == [x * x for x in range(12)]


def test_run_on_dask_failures(client):
    results = run_on_dask(fail_on_three, range(5), client, return_exceptions=True)
    assert results[:3] == [0, 1, 2] and results[4] == 4
    assert isinstance(results[3], RuntimeError) and "point 3 failed" in str(results[3])
    with pytest.raises(RuntimeError, match="point 3 failed"):
        run_on_dask(fail_on_three, range(5), client)
    with pytest.raises(TypeError, match="fn must be callable"):
        run_on_dask(None, range(3), client)


def test_repeated_grams_on_the_same_states_do_not_lose_the_scattered_data(client, states):
    """Back-to-back calls scatter the same array; each must keep its own copy alive."""
    expected = gram(states[:60])
    for _ in range(6):
        np.testing.assert_allclose(gram(states[:60], client=client, tile=20), expected, atol=1e-6)


def test_a_second_client_does_not_slow_this_one(client, states, monkeypatch):
    """as_completed must wait on this client's event loop, not the default client's (the newest one).

    Waiting on another client's loop stalled each call by seconds once a user had opened a second client.
    """
    loops = []
    real = distributed.as_completed

    def recording(futures, *args, loop=None, **kwargs):
        loops.append(loop)
        return real(futures, *args, loop=loop, **kwargs)

    monkeypatch.setattr(distributed, "as_completed", recording)
    with distributed.Client(client.scheduler.address) as newest:
        assert distributed.default_client() is newest
        np.testing.assert_allclose(gram(states, client=client, tile=40), gram(states), atol=1e-6)
        assert run_on_dask(square, [3], client) == [9]
    assert loops == [client.loop, client.loop]


def test_tiles_are_queued_by_their_cost():
    from qmlnb.kernels.distributed import _tile_cost

    assert _tile_cost((0, 10, 0, 10), symmetric=True) == 50  # upper half of a diagonal tile
    assert _tile_cost((0, 10, 10, 20), symmetric=True) == 100
    assert _tile_cost((0, 10, 0, 10), symmetric=False) == 100
    assert _tile_cost((20, 25, 0, 10), symmetric=True) == 50  # a ragged edge tile
