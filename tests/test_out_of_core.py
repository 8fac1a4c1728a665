"""gram(..., out=path): tiles in a memory-mapped .npy file, a resumable ledger, refusals."""
from __future__ import annotations

import errno
import json
import os
import subprocess
from collections import namedtuple

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap, gram
from qmlnb.kernels import out_of_core
from qmlnb.kernels.out_of_core import GramFile, GramFileError, GramFileMismatchError, sidecar_paths
from qmlnb.kernels.tiling import tile_pairs


@pytest.fixture(scope="module")
def states():
    rng = np.random.default_rng(7)
    return FeatureMap(n_qubits=4, bandwidth=0.7).states(rng.uniform(0, np.pi, (90, 4)))


@pytest.fixture(scope="module")
def exact(states):
    return gram(states)


@pytest.fixture
def count_tiles(monkeypatch):
    """Counts the tiles computed (wraps out_of_core.compute_tile)."""
    calls = []
    real = out_of_core.compute_tile

    def counting(module, A, B, pair, **kwargs):
        calls.append(pair)
        return real(module, A, B, pair, **kwargs)

    monkeypatch.setattr(out_of_core, "compute_tile", counting)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_symmetric_file_equals_in_memory_gram(tmp_path, states, exact, dtype, count_tiles):
    path = tmp_path / "K.npy"
    K = gram(states, out=path, tile=16, dtype=dtype)  # 90 is not a multiple of 16: ragged edge tiles
    assert isinstance(K, np.memmap) and K.shape == (90, 90) and K.dtype == dtype
    np.testing.assert_allclose(K, exact, atol=1e-6)
    np.testing.assert_array_equal(K, K.T)  # mirrored exactly
    # only the upper tiles were computed; the lower ones are their mirrors
    assert sorted(count_tiles) == sorted(tile_pairs(90, None, 16))
    # a plain .npy: readable without qmlnb
    np.testing.assert_array_equal(np.load(path), K)
    meta_path, ledger_path = sidecar_paths(path)
    meta = json.loads(meta_path.read_text())
    assert meta["shape"] == [90, 90] and meta["dtype"] == np.dtype(dtype).name and meta["state_dim"] == 16
    assert meta["tile"] == 16 and meta["symmetric"] is True
    assert ledger_path.read_bytes() == bytes([1]) * len(tile_pairs(90, None, 16))
    assert not list(tmp_path.glob("*.tmp"))


def test_rectangular_file_equals_in_memory_gram(tmp_path, states, exact):
    K = gram(states[:25], states, out=tmp_path / "R.npy", tile=8)
    assert K.shape == (25, 90)
    np.testing.assert_allclose(K, exact[:25], atol=1e-6)


def test_interrupted_run_resumes_without_recomputing(tmp_path, states, exact, monkeypatch, count_tiles):
    path = tmp_path / "K.npy"
    pairs = tile_pairs(90, None, 16)
    real_write = GramFile.write
    writes = []

    def failing_write(self, i0, j0, block, *, mirror):
        if len(writes) == 4:  # the disk fills up at the fifth tile
            raise out_of_core._file_error(self.path, OSError(errno.ENOSPC, "No space left on device"))
        writes.append((i0, j0))
        real_write(self, i0, j0, block, mirror=mirror)

    monkeypatch.setattr(GramFile, "write", failing_write)
    with pytest.raises(GramFileError, match="disk is full"):
        gram(states, out=path, tile=16)
    ledger = np.frombuffer(sidecar_paths(path)[1].read_bytes(), dtype=np.uint8)
    assert ledger.sum() == 4 and ledger[:4].all()  # flushed tiles are recorded, the failed one is not

    monkeypatch.setattr(GramFile, "write", real_write)
    count_tiles.clear()
    K = gram(states, out=path, tile=16)
    assert sorted(count_tiles) == sorted(pairs[4:])  # only the missing tiles
    np.testing.assert_allclose(K, exact, atol=1e-6)
    count_tiles.clear()
    gram(states, out=path, tile=16)  # complete: nothing to do
    assert count_tiles == []


@pytest.mark.parametrize("interval, commits", [(0.0, 21), (3600.0, 1)])
def test_tiles_are_committed_in_groups_data_first(tmp_path, states, monkeypatch, interval, commits):
    """Each commit syncs the data file before the ledger names its tiles; a long interval means one commit."""
    path = tmp_path / "K.npy"
    ledger_path = sidecar_paths(path)[1]
    seen_at_sync = []  # tiles the saved ledger named when each sync began
    real_sync = GramFile.sync

    def recording_sync(self):
        seen_at_sync.append(sum(ledger_path.read_bytes()) if ledger_path.exists() else 0)
        real_sync(self)

    monkeypatch.setattr(out_of_core, "COMMIT_INTERVAL_S", interval)
    monkeypatch.setattr(GramFile, "sync", recording_sync)
    gram(states, out=path, tile=16)  # 6 x 6 tiles, 21 of them on or above the diagonal
    assert len(seen_at_sync) == commits
    assert seen_at_sync == sorted(seen_at_sync) and seen_at_sync[-1] < 21  # the last sync precedes the last save
    assert sum(ledger_path.read_bytes()) == 21


def test_other_n_or_feature_map_or_tile_is_refused(tmp_path, states):
    path = tmp_path / "K.npy"
    gram(states, out=path, tile=16)
    before = path.read_bytes()
    other_map = FeatureMap(n_qubits=4, bandwidth=0.3).states(np.random.default_rng(7).uniform(0, np.pi, (90, 4)))
    with pytest.raises(GramFileMismatchError, match="shape"):
        gram(states[:60], out=path, tile=16)
    with pytest.raises(GramFileMismatchError, match="fingerprint"):
        gram(other_map, out=path, tile=16)
    with pytest.raises(GramFileMismatchError, match="dtype"):
        gram(states, out=path, tile=16, dtype=np.float32)
    with pytest.raises(GramFileMismatchError, match="tile"):
        gram(states, out=path, tile=32)
    with pytest.raises(GramFileMismatchError, match="symmetric"):
        gram(states, states, out=path, tile=16)
    assert path.read_bytes() == before  # untouched


def test_foreign_file_is_not_overwritten(tmp_path, states):
    path = tmp_path / "K.npy"
    path.write_bytes(b"someone else's data")
    with pytest.raises(GramFileMismatchError, match="not a qmlnb Gram output"):
        gram(states, out=path)
    assert path.read_bytes() == b"someone else's data"


def test_missing_folder_is_refused(tmp_path, states):
    with pytest.raises(GramFileError, match="does not exist"):
        gram(states, out=tmp_path / "nope" / "K.npy")


def test_not_enough_disk_space_is_refused_before_work(tmp_path, states, monkeypatch, count_tiles):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(out_of_core.shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(GramFileError, match=r"needs 63.3 KiB more on disk .* only 1000 B is free"):
        gram(states, out=tmp_path / "K.npy")
    assert count_tiles == [] and not (tmp_path / "K.npy").exists()


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write to (root ignores chmod, so root makes it immutable)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not available to make a read-only folder")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_folder_is_refused_before_work(read_only_dir, states, count_tiles):
    with pytest.raises(GramFileError, match="read-only"):
        gram(states, out=read_only_dir / "K.npy")
    assert count_tiles == [] and list(read_only_dir.iterdir()) == []


def test_write_error_mid_run_names_the_path(tmp_path, states, monkeypatch):
    def no_map(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(out_of_core.np, "memmap", no_map)
    with pytest.raises(GramFileError, match="read-only") as info:
        gram(states, out=tmp_path / "K.npy", tile=32)
    assert "K.npy" in str(info.value) and info.value.errno == errno.EROFS


def test_without_out_behaviour_is_unchanged(states, exact):
    K = gram(states)
    assert type(K) is np.ndarray and K.dtype == np.float64
    np.testing.assert_array_equal(K, exact)


@pytest.mark.parametrize("backend", ["numba", "openmp"])
def test_other_backends_write_the_same_file(tmp_path, states, exact, backend):
    from qmlnb.kernels import available_backends

    usable, reason = available_backends()[backend]
    if not usable:
        pytest.skip(f"{backend}: {reason}")
    K = gram(states, backend=backend, out=tmp_path / "K.npy", tile=16, n_threads=1)
    np.testing.assert_allclose(K, exact, atol=1e-5)
