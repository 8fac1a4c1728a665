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
from qmlnb.kernels.out_of_core import (
    LEDGER_DTYPE,
    GramFile,
    GramFileError,
    GramFileMismatchError,
    GramFileWarning,
    TileLedger,
    sidecar_paths,
)
from qmlnb.kernels.tiling import tile_pairs


@pytest.fixture(scope="module")
def states():
    rng = np.random.default_rng(7)
    return FeatureMap(n_qubits=4, bandwidth=0.7).states(rng.uniform(0, np.pi, (90, 4)))


@pytest.fixture(scope="module")
def exact(states):
    return gram(states)


def done_flags(path) -> np.ndarray:
    """The ledger's written flags (one per tile) of the output ``path``."""
    return np.frombuffer(sidecar_paths(path)[1].read_bytes(), dtype=LEDGER_DTYPE)["done"]


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
    ledger = TileLedger.load(ledger_path, 21)  # 6 x 6 tiles, 21 on or above the diagonal
    assert ledger.records["done"].tolist() == [1] * 21
    # each tile's checksum is of the tile as stored
    for k, (i0, i1, j0, j1) in enumerate(tile_pairs(90, None, 16)):
        assert ledger.records["checksum"][k] == out_of_core.tile_checksum(np.ascontiguousarray(K[i0:i1, j0:j1]))
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
        return real_write(self, i0, j0, block, mirror=mirror)

    monkeypatch.setattr(GramFile, "write", failing_write)
    with pytest.raises(GramFileError, match="disk is full"):
        gram(states, out=path, tile=16)
    ledger = done_flags(path)
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
        seen_at_sync.append(done_flags(path).sum() if ledger_path.exists() else 0)
        real_sync(self)

    monkeypatch.setattr(out_of_core, "COMMIT_INTERVAL_S", interval)
    monkeypatch.setattr(GramFile, "sync", recording_sync)
    gram(states, out=path, tile=16)  # 6 x 6 tiles, 21 of them on or above the diagonal
    assert len(seen_at_sync) == commits
    assert seen_at_sync == sorted(seen_at_sync) and seen_at_sync[-1] < 21  # the last sync precedes the last save
    assert done_flags(path).sum() == 21


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


# ------------------------------------------------- what a resume cannot trust
def test_changing_one_row_of_a_anywhere_is_refused(tmp_path, states):
    """The fingerprint hashes every row, also one that a sample of 64 evenly spaced rows would skip."""
    path = tmp_path / "K.npy"
    gram(states, out=path, tile=16)
    sampled = set(np.linspace(0, 89, 64).astype(int).tolist())  # the rows a 64-row sample hashes
    row = next(r for r in range(90) if r not in sampled)
    changed = states.copy()
    changed[row] = states[0]  # still unit states, so only the fingerprint can tell
    with pytest.raises(GramFileMismatchError, match="fingerprint"):
        gram(changed, out=path, tile=16)


@pytest.mark.parametrize("change", ["all rows", "one row"])
def test_changing_only_b_is_refused(tmp_path, states, change):
    """A rectangular output belongs to its A and its B: other B data is never mixed with old tiles."""
    path = tmp_path / "R.npy"
    A, B = states[:20], states[20:]
    gram(A, B, out=path, tile=16)
    other = B.copy()
    if change == "all rows":
        other = FeatureMap(n_qubits=4, bandwidth=0.7).states(np.random.default_rng(8).uniform(0, np.pi, (70, 4)))
    else:
        sampled = set(np.linspace(0, len(B) - 1, 64).astype(int).tolist())  # what a 64-row sample hashes
        other[next(r for r in range(len(B)) if r not in sampled)] = B[0]
    with pytest.raises(GramFileMismatchError, match="fingerprint"):
        gram(A, other, out=path, tile=16)


@pytest.mark.parametrize("where", [(3, 50), (50, 3), (40, 40)])
def test_a_flipped_value_in_a_complete_file_is_recomputed_with_a_warning(tmp_path, states, exact, count_tiles,
                                                                          where):
    """Upper, mirrored (lower) and diagonal-tile entries: the tile holding it fails verification."""
    path = tmp_path / "K.npy"
    gram(states, out=path, tile=16)
    K = np.load(path, mmap_mode="r+")
    K[where] = 0.0 if K[where] > 0.5 else 0.9
    K.flush()
    del K
    count_tiles.clear()
    with pytest.warns(GramFileWarning, match=r"1 of 21 tiles of .*K\.npy do not match"):
        K = gram(states, out=path, tile=16)
    i, j = min(where), max(where)
    assert count_tiles == [(i // 16 * 16, i // 16 * 16 + 16, j // 16 * 16, j // 16 * 16 + 16)]  # that tile only
    np.testing.assert_allclose(K, exact, atol=1e-6)
    count_tiles.clear()
    gram(states, out=path, tile=16)  # repaired: verified, nothing to do
    assert count_tiles == []


def test_a_flipped_value_in_a_rectangular_file_is_recomputed(tmp_path, states, exact, count_tiles):
    path = tmp_path / "R.npy"
    gram(states[:25], states, out=path, tile=8)
    K = np.load(path, mmap_mode="r+")
    K[20, 70] += 0.25
    K.flush()
    del K
    count_tiles.clear()
    with pytest.warns(GramFileWarning, match="1 of 48 tiles"):
        K = gram(states[:25], states, out=path, tile=8)
    assert count_tiles == [(16, 24, 64, 72)]
    np.testing.assert_allclose(K, exact[:25], atol=1e-6)


def test_a_ledger_forged_to_all_done_does_not_return_zeros(tmp_path, states, exact, monkeypatch, count_tiles):
    path = tmp_path / "K.npy"
    real_write = GramFile.write
    writes = []

    def failing_write(self, *args, **kwargs):
        if len(writes) == 4:
            raise KeyboardInterrupt
        writes.append(args)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(GramFile, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        gram(states, out=path, tile=16)
    monkeypatch.setattr(GramFile, "write", real_write)
    ledger_path = sidecar_paths(path)[1]
    forged = np.frombuffer(ledger_path.read_bytes(), dtype=LEDGER_DTYPE).copy()
    forged["done"] = 1  # 17 tiles never written (zeros in the file) claimed as done
    ledger_path.write_bytes(forged.tobytes())
    count_tiles.clear()
    with pytest.warns(GramFileWarning, match="17 of 21 tiles"):
        K = gram(states, out=path, tile=16)
    assert sorted(count_tiles) == sorted(tile_pairs(90, None, 16)[4:])
    np.testing.assert_allclose(K, exact, atol=1e-6)


def test_verify_false_trusts_the_ledger(tmp_path, states, count_tiles):
    """verify=False skips reading the file back: documented, and nothing is recomputed."""
    path = tmp_path / "K.npy"
    gram(states, out=path, tile=16)
    K = np.load(path, mmap_mode="r+")
    K[3, 50] = 0.125
    K.flush()
    del K
    count_tiles.clear()
    assert gram(states, out=path, tile=16, verify=False)[3, 50] == 0.125
    assert count_tiles == []
    with pytest.raises(TypeError, match="verify must be True or False"):
        gram(states, out=path, tile=16, verify="no")


@pytest.mark.parametrize("keep_bytes", [20, 200, 40000])
def test_truncated_output_is_a_gram_file_error_naming_it(tmp_path, states, keep_bytes):
    """Cut inside the header (20), just after it (200) or inside the data (40000 of 64928 bytes)."""
    path = tmp_path / "K.npy"
    gram(states, out=path, tile=16)
    os.truncate(path, keep_bytes)
    with pytest.raises(GramFileError, match=r"K\.npy is not a readable \.npy file .*truncated"):
        gram(states, out=path, tile=16)


def test_a_corrupt_or_cut_ledger_says_what_is_wrong(tmp_path, states):
    path = tmp_path / "K.npy"
    gram(states, out=path, tile=16)
    ledger_path = sidecar_paths(path)[1]
    records = np.frombuffer(ledger_path.read_bytes(), dtype=LEDGER_DTYPE).copy()
    records["done"][5] = 7
    ledger_path.write_bytes(records.tobytes())
    with pytest.raises(GramFileError, match="ledger .* is corrupt: the written flag of tile 5 is 7"):
        gram(states, out=path, tile=16)
    ledger_path.write_bytes(records.tobytes()[:100])
    with pytest.raises(GramFileMismatchError, match=r"has 100 bytes but .* needs 189 \(21 tiles of 9 bytes\)"):
        gram(states, out=path, tile=16)
