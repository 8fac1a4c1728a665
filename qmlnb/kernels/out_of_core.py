"""Gram matrices larger than memory: tiles written into a memory-mapped file.

``gram(S, out="K.npy")`` lands here.  The output is an ordinary ``.npy`` file
(``np.load(path, mmap_mode="r")`` reads it back) filled tile by tile, so RAM
holds the states and a few tiles, never N x N.  Two small files sit next to it:

``<path>.meta.json``
    N, M, dtype, state dimension, tile edge, symmetry and a fingerprint of
    the states (shape + a blake2b hash of every amplitude of A and of B).
    An existing output whose metadata differs (other N, other data or
    feature map, other tile) is refused, never mixed with new tiles.
``<path>.tiles``
    The ledger: one 9-byte record per tile (in ``tile_pairs`` order): a
    written flag (1 = written and flushed) and a blake2b checksum of the
    tile as stored.  Tiles are committed in groups: every
    ``COMMIT_INTERVAL_S`` seconds (and at the end, or when a run fails) the
    data file is flushed with one ``fsync`` and only then is the ledger
    replaced atomically (temp file + ``os.replace``), so after a crash every
    tile it marks is on disk; a rerun of the same call skips those tiles and
    recomputes at most about a second of work.  A flush per tile waited on
    the disk 20 to 40 ms per 1000 x 1000 tile, a third of that tile's
    compute on one core.

On a rerun every tile the ledger marks is first read back and checked
against its checksum, against what every fidelity Gram holds (finite, 0 <= k
<= 1; in the symmetric case a unit, symmetric diagonal) and, in the symmetric
case, against its mirror, so a file changed or damaged since (a flipped
value, a stale ledger, a file zeroed together with a ledger rewritten to its
checksums) is not trusted: the tiles that fail are recomputed, with a
``GramFileWarning`` naming them.  Three entries of each tile, drawn at random
on each resume, are also recomputed from the states.  The checksums are not
signatures: whoever can write the file and the ledger can rewrite both; the
invariants and spot checks catch a crude or wholesale forgery, not a few
changed entries.  Keep outputs where only their owner can write.  Reading a tile back costs a small
fraction of computing it (tile^2 values against tile^2 * d products).

Each tile is computed by the chosen backend on sub-blocks of the states
(``get_backend(name).gram(A_i, B_j, out=buffer, ...)``), so every backend
works here.  In the symmetric case only tiles on or above the diagonal are
computed and each is mirrored into the lower block as it is written, so no
second pass over the file is needed.

Tiles are written with ``pwrite``, not through a memory map: mapped file
pages count towards a process's resident set (one map of a 10 GB file shows
up as 10 GB of RSS once written), and a page fault on a full disk is a
SIGBUS rather than an error.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._util import atomic_write_bytes
from .tiling import tile_pairs
from .validation import check_fits_in_memory

FORMAT = "qmlnb-gram-memmap"
FORMAT_VERSION = 2  # 2: the fingerprint hashes all amplitudes; the ledger holds a checksum per tile
HASH_CHUNK_BYTES = 64 << 20  # states are hashed in blocks of rows of about this size
COMMIT_INTERVAL_S = 1.0  # at most this much finished work is redone after a crash; each commit is one fsync
# one ledger record per tile: written flag, then the tile's checksum (packed: 9 bytes)
LEDGER_DTYPE = np.dtype([("done", "u1"), ("checksum", "<u8")])


class GramFileError(OSError):
    """The output file or its ledger cannot be written or read back (read-only, full disk, truncated, corrupt)."""


class GramFileMismatchError(ValueError):
    """An existing output file belongs to a different computation."""


class GramFileWarning(UserWarning):
    """Tiles the ledger marks as written failed their checksum on resume and are computed again."""


def states_fingerprint(S: np.ndarray) -> str:
    """Hex digest of a state matrix's shape, dtype and every amplitude.

    Parameters
    ----------
    S : ndarray, shape (N, d), complex64

    blake2b over blocks of about ``HASH_CHUNK_BYTES`` (each hashed in place,
    no copy for a C-contiguous S): about a second per GB of states, so a
    change anywhere (one amplitude of one row) gives another fingerprint.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((S.shape, str(S.dtype))).encode())
    rows = max(1, HASH_CHUNK_BYTES // max(1, S[:1].nbytes))
    for start in range(0, S.shape[0], rows):
        h.update(np.ascontiguousarray(S[start:start + rows]))
    return h.hexdigest()


def tile_checksum(block: np.ndarray) -> int:
    """64-bit blake2b checksum of a C-contiguous tile's bytes (as stored in the file)."""
    return int.from_bytes(hashlib.blake2b(block, digest_size=8).digest(), "little")


def sidecar_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(metadata path, ledger path) that belong to the output ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json"), path.with_name(path.name + ".tiles")


def _file_error(path, exc: OSError) -> GramFileError:
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only"}.get(exc.errno, exc.strerror or str(exc))
    return GramFileError(exc.errno, f"cannot write the Gram matrix to {path}: {reason} ({exc}); "
                                    "free some space or choose another out= path; "
                                    "rerunning the same call resumes from the tiles already written")


@dataclass(frozen=True)
class GramFile:
    """Where a Gram matrix lives on disk; small and picklable (sent to Dask workers).

    ``offset`` is the byte offset of element [0, 0] (after the ``.npy`` header).
    """

    path: str
    offset: int
    n_rows: int
    n_cols: int
    dtype: str

    def write(self, i0: int, j0: int, block: np.ndarray, *, mirror: bool, flush: bool = False) -> int:
        """Store ``block`` at [i0:, j0:] (and its transpose at [j0:, i0:] if ``mirror``); return its checksum.

        One ``pwrite`` per row: the data goes to the page cache without
        mapping the file, so nothing counts towards this process's resident
        set, and a full disk is an ``OSError`` (a write through a memory map
        of a sparse file would be killed by SIGBUS instead).  ``flush=True``
        also waits until it is on disk (needed where no ``sync()`` on this
        machine follows, e.g. a Dask worker on another host of a shared file
        system).  The checksum (``tile_checksum``) is of ``block`` in the
        file's dtype, for the ledger.
        """
        itemsize = np.dtype(self.dtype).itemsize
        block = np.ascontiguousarray(block, dtype=self.dtype)
        targets = [(i0, j0, block)]
        if mirror and i0 != j0:
            targets.append((j0, i0, block.T))
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                for r0, c0, data in targets:
                    data = np.ascontiguousarray(data, dtype=self.dtype)
                    for r, row in enumerate(data):
                        os.pwrite(fd, row, self.offset + ((r0 + r) * self.n_cols + c0) * itemsize)
                if flush:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _file_error(self.path, exc) from exc
        return tile_checksum(block)

    def read(self, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
        """The stored block [i0:i1, j0:j1], shape (i1 - i0, j1 - j0), read with ``preadv`` (no memory map)."""
        itemsize = np.dtype(self.dtype).itemsize
        block = np.empty((i1 - i0, j1 - j0), dtype=self.dtype)
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                for r, row in enumerate(block):
                    got = os.preadv(fd, [row], self.offset + ((i0 + r) * self.n_cols + j0) * itemsize)
                    if got != row.nbytes:
                        raise GramFileError(errno.EIO, f"{self.path} is shorter than its shape says "
                                                       f"(row {i0 + r} cut off); delete it to start over")
            finally:
                os.close(fd)
        except GramFileError:
            raise
        except OSError as exc:
            raise GramFileError(exc.errno, f"cannot read the Gram matrix back from {self.path}: {exc}") from exc
        return block

    def sync(self) -> None:
        """Wait until every tile written on this machine (by any process) is on disk: one ``fsync``."""
        try:
            fd = os.open(self.path, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _file_error(self.path, exc) from exc

    def open(self, mode: str = "r+") -> np.memmap:
        """The whole matrix as a memmap of shape (n_rows, n_cols)."""
        return np.load(self.path, mmap_mode=mode)


class TileLedger:
    """Which tiles are on disk, with their checksums: saved atomically, committed in groups.

    ``records`` is a (n_tiles,) ``LEDGER_DTYPE`` array: ``done`` 1 for a tile
    written and flushed, ``checksum`` its ``tile_checksum``.
    """

    def __init__(self, path: Path, n_tiles: int, records: np.ndarray | None = None):
        self.path = Path(path)
        self.records = np.zeros(n_tiles, dtype=LEDGER_DTYPE) if records is None else records
        self.written: list[tuple[int, int]] = []  # (tile, checksum) written, not yet committed
        self.last_commit = time.monotonic()

    @classmethod
    def load(cls, path: Path, n_tiles: int) -> TileLedger:
        """The saved ledger, or an empty one if none was saved.

        Raises ``GramFileMismatchError`` if its size does not fit ``n_tiles``
        and ``GramFileError`` if a record's written flag is neither 0 nor 1.
        """
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            return cls(path, n_tiles)
        except OSError as exc:
            raise GramFileError(exc.errno, f"cannot read the tile ledger {path}: {exc}") from exc
        expected = n_tiles * LEDGER_DTYPE.itemsize
        if len(raw) != expected:
            raise GramFileMismatchError(f"the tile ledger {path} has {len(raw)} bytes but the output's metadata "
                                        f"needs {expected} ({n_tiles} tiles of {LEDGER_DTYPE.itemsize} bytes): it was "
                                        "cut short or belongs to another output; delete the output and its sidecar "
                                        "files to start over")
        records = np.frombuffer(raw, dtype=LEDGER_DTYPE).copy()
        flags = np.flatnonzero(records["done"] > 1)
        if flags.size:
            k = int(flags[0])
            raise GramFileError(errno.EINVAL, f"the tile ledger {path} is corrupt: the written flag of tile {k} is "
                                              f"{records['done'][k]} ({flags.size} tiles have a flag other than 0 "
                                              "or 1); delete the output and its sidecar files to start over")
        return cls(path, n_tiles, records)

    def add(self, k: int, checksum: int, sync=None) -> None:
        """Record tile ``k`` as written with ``checksum``; commit if ``COMMIT_INTERVAL_S`` passed since the last."""
        self.written.append((k, checksum))
        if time.monotonic() - self.last_commit >= COMMIT_INTERVAL_S:
            self.commit(sync)

    def commit(self, sync=None) -> None:
        """Make the written tiles durable: ``sync()`` (flush their data, if given), then save the ledger."""
        if not self.written:
            return
        if sync is not None:
            sync()
        for k, checksum in self.written:
            self.records[k] = (1, checksum)
        try:
            atomic_write_bytes(self.path, self.records.tobytes())
        except OSError as exc:
            raise _file_error(self.path, exc) from exc
        self.written.clear()
        self.last_commit = time.monotonic()

    @property
    def n_done(self) -> int:
        return int(self.records["done"].sum())

    def pending(self) -> list[int]:
        return np.flatnonzero(self.records["done"] == 0).tolist()

    def verify(self, target: GramFile, pairs: list, *, symmetric: bool, exact=None, estimated: bool = False,
               spot_tolerance: float = None) -> None:
        """Read back every tile marked as written; forget (so recompute) those that fail, with a warning.

        A tile fails if its checksum differs from the ledger's, if it breaks
        what every fidelity Gram holds (:func:`tile_is_plausible`: finite,
        0 <= k <= 1, and in the symmetric case a symmetric diagonal tile with
        a unit diagonal) or, in the symmetric case, if its mirror is not its
        exact transpose.  The checksums find a file changed behind the
        ledger's back; they cannot find a file and ledger forged together
        (rewritten with the checksums of forged tiles): the invariants catch
        the crude forgeries (zeros, values out of range), not a plausible one.
        With ``exact`` (``exact(rows, cols)`` -> those entries computed from
        the states), ``SPOT_CHECKS`` entries of each tile, drawn at random
        anew on each resume, must also match: a forger who cannot guess which
        would have to forge every entry right, that is, compute the Gram.
        ``estimated``: the tiles hold a device's estimates (shots, noise, mitigation), which need not lie in
        [0, 1] nor have a unit diagonal: only finiteness and the symmetry of diagonal tiles are checked, and
        the spot checks compare with ``exact``'s estimates within ``spot_tolerance`` (default
        ``SPOT_TOLERANCE``).
        """
        spot_tolerance = SPOT_TOLERANCE if spot_tolerance is None else spot_tolerance
        rng = np.random.default_rng()  # fresh entropy: the entries checked cannot be known in advance
        from tqdm.auto import tqdm

        failed = []
        for k in tqdm(np.flatnonzero(self.records["done"]).tolist(), desc="Verifying Gram tiles", unit="tile",
                      leave=False):
            i0, i1, j0, j1 = pairs[k]
            block = target.read(i0, i1, j0, j1)
            ok = tile_checksum(block) == int(self.records["checksum"][k]) and \
                tile_is_plausible(block, diagonal=symmetric and i0 == j0, estimated=estimated)
            if ok and exact is not None:
                rows, cols = rng.integers(0, i1 - i0, SPOT_CHECKS), rng.integers(0, j1 - j0, SPOT_CHECKS)
                ok = bool(np.allclose(block[rows, cols], exact(i0 + rows, j0 + cols), rtol=0, atol=spot_tolerance))
            if ok and symmetric and i0 != j0:
                ok = np.array_equal(target.read(j0, j1, i0, i1), block.T)
            if not ok:
                failed.append(k)
        if failed:
            self.records[failed] = (0, 0)
            where = ", ".join(f"[{pairs[k][0]}:{pairs[k][1]}, {pairs[k][2]}:{pairs[k][3]}]" for k in failed[:3])
            warnings.warn(f"{len(failed)} of {len(pairs)} tiles of {target.path} do not match the checksums in its "
                          f"ledger {self.path.name} ({where}{', ...' if len(failed) > 3 else ''}): the file was "
                          "changed or damaged after they were written; computing them again", GramFileWarning,
                          stacklevel=2)


# how far a stored kernel value may stray from the invariants of a fidelity Gram: the states are unit vectors to
# 1e-3 (validation.UNIT_NORM_TOLERANCE), so a diagonal value |<s|s>|^2 = |s|^4 lies within about 4e-3 of 1
PLAUSIBLE_TOLERANCE = 5e-3


def tile_is_plausible(block: np.ndarray, *, diagonal: bool, estimated: bool = False) -> bool:
    """Does a stored tile hold what a fidelity Gram's tile must: finite values in [0, 1] (within
    ``PLAUSIBLE_TOLERANCE``) and, for a tile on the diagonal of a symmetric Gram, symmetry and a unit diagonal?
    ``estimated`` (a device's estimates: the swap test's can be negative, noise moves the diagonal off 1,
    mitigation can leave [0, 1]): finite values and, on the diagonal, exact symmetry (estimates are mirrored)."""
    values = np.asarray(block, dtype=np.float64)
    if estimated:
        return bool(np.isfinite(values).all() and (not diagonal or np.array_equal(values, values.T)))
    if not np.isfinite(values).all() or values.min(initial=0.0) < 0 or \
            values.max(initial=0.0) > 1 + PLAUSIBLE_TOLERANCE:
        return False
    if diagonal:
        return bool(np.allclose(values, values.T, rtol=0, atol=1e-6)
                    and np.all(np.abs(np.diagonal(values) - 1) <= PLAUSIBLE_TOLERANCE))
    return True


SPOT_CHECKS = 3  # entries of each tile recomputed from the states when a resume verifies the file
SPOT_TOLERANCE = 1e-4  # every backend gives K to 1e-5 from complex64 states; float32 output adds ~6e-8


def estimated_entries(device, exact):
    """(entries, tolerance) for the spot checks of a file of device estimates.

    ``entries(rows, cols)`` estimates ``exact(rows, cols)`` as the device did, each entry keyed by its global
    ids (``device``: (``shots.DeviceEstimate``, row ids, column ids)), so a stored estimate is reproduced
    entry by entry.  The tolerance allows two steps of the estimate (2 |g| / shots, g the slope from the
    observed frequency to the estimate: 2 for the swap test, the inverse of the noise for a mitigated one):
    the exact value recomputed here may differ from the tile's by float rounding, and the rare draw whose
    exact value sits on a step of the sampler can land one step over.
    """
    spec, row_ids, col_ids = device
    _, _, g, _ = spec.maps
    scale = abs(g)
    tolerance = SPOT_TOLERANCE * max(1.0, scale) + (2.0 * scale / spec.shots if spec.shots else 0.0)

    def entries(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        values = np.asarray(exact(rows, cols), dtype=np.float64)
        for k, (i, j) in enumerate(zip(rows, cols)):
            one = values[k:k + 1].reshape(1, 1).copy()
            spec.apply_(one, row_ids[i:i + 1], col_ids[j:j + 1])
            values[k] = one[0, 0]
        return values

    return entries, tolerance


def exact_entries(A, B, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """K[rows[k], cols[k]] = |<A_rows[k]|B_cols[k]>|^2 (B None: A), float64, one pair at a time (O(d) or, for
    MPS, O(n chi^3) each): what :meth:`TileLedger.verify` compares a few stored entries with."""
    from .mps import MPSStates

    B = A if B is None else B
    if isinstance(A, MPSStates):
        from .backends.cpu_blas import kernel_from_log, mps_log_overlaps

        out = np.empty(len(rows))
        for k, (i, j) in enumerate(zip(rows, cols)):
            overlap, log_scale = mps_log_overlaps(A.tensors[i:i + 1], B.tensors[j:j + 1])
            kernel_from_log(overlap, log_scale, out[k:k + 1].reshape(1, 1))
        return out
    a, b = np.asarray(A)[rows].astype(np.complex128), np.asarray(B)[cols].astype(np.complex128)
    return np.abs(np.einsum("kd,kd->k", a.conj(), b)) ** 2


def _allocated_bytes(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except (FileNotFoundError, AttributeError):
        return 0


def _size(nbytes: int) -> str:
    """'1000 B', '63.3 KiB', '9.31 GiB': readable sizes for error messages."""
    if nbytes < 1024:
        return f"{nbytes} B"
    for unit in ("KiB", "MiB", "GiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.3g} {unit}" if nbytes < 1000 else f"{nbytes:.0f} {unit}"


def check_writable(path: Path, nbytes: int) -> None:
    """Refuse, before any work, a directory that cannot be written or lacks ``nbytes`` of free space."""
    folder = path.parent
    if not folder.is_dir():
        raise GramFileError(errno.ENOENT, f"cannot write the Gram matrix to {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise GramFileError(errno.EACCES, f"cannot write the Gram matrix to {path}: {folder} is read-only "
                                          "(or not writable by this user); choose another out= path")
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise GramFileError(errno.ENOSPC, f"the Gram matrix needs {_size(nbytes)} more on disk at {path} "
                                          f"but only {_size(free)} is free; free space or choose another out= path")


def open_output(A: np.ndarray, B: np.ndarray | None, path, *, tile: int, dtype,
                verify: bool = True, device=None, exact=None) -> tuple[GramFile, TileLedger, list]:
    """Create, or reopen to resume, the output file of the Gram of A (and B).

    Parameters
    ----------
    A : ndarray, shape (N, d), complex64 (validated)
    B : ndarray, shape (M, d), complex64 (validated), or None for the symmetric Gram
    path : output ``.npy`` path
    tile : tile edge in rows
    dtype : float32 or float64
    verify : when resuming, check the tiles the ledger marks as written
        (``TileLedger.verify``); those that fail become pending again
    device : (``shots.DeviceEstimate``, row ids, column ids), optional: recorded in
        the metadata, so that a resume never mixes tiles of two estimates
    exact : ``exact(rows, cols)`` -> those entries, what a resume's spot checks compare with
        (default: the fidelity of A's and B's states, :func:`exact_entries`; another kernel on
        these tiles, e.g. ``projected.rbf_gram``'s, passes its own)

    Returns
    -------
    (GramFile, TileLedger, pairs) where ``pairs[k]`` is tile k's (i0, i1, j0, j1).

    Raises ``GramFileMismatchError`` if ``path`` holds another computation's
    output, and ``GramFileError`` if it cannot be written or read back
    (truncated, corrupt ledger), all before any tile is computed.
    """
    path = Path(path).expanduser().absolute()
    dtype = np.dtype(dtype)
    n_rows, n_cols = A.shape[0], (A.shape[0] if B is None else B.shape[0])
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "shape": [n_rows, n_cols], "dtype": dtype.name,
        "state_dim": A.shape[1], "tile": tile, "symmetric": B is None,
        # MPSStates: their site tensors (N, n, 2, chi, chi) are hashed
        "fingerprint": [states_fingerprint(getattr(A, "tensors", A)),
                        None if B is None else states_fingerprint(getattr(B, "tensors", B))],
    }
    if device is not None:  # only then: outputs of the exact Gram keep their metadata
        spec, rows, cols = device
        meta["device"] = dict(spec.describe(), ids=[states_fingerprint(rows), states_fingerprint(cols)])
    meta_path, ledger_path = sidecar_paths(path)
    pairs = tile_pairs(n_rows, None if B is None else n_cols, tile)
    nbytes = n_rows * n_cols * dtype.itemsize
    check_fits_in_memory(2 * tile * tile * 16, f"two {tile} x {tile} tiles (lower tile= to use less memory)")

    if path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            raise GramFileMismatchError(f"{path} exists but is not a qmlnb Gram output (no valid {meta_path.name}); "
                                        "refusing to overwrite it: delete it or choose another out= path") from None
        # both sides' keys: a file of estimates ("device") is not the exact Gram either
        differing = [key for key in {**old, **meta} if old.get(key) != meta.get(key)]
        if differing:
            detail = ", ".join(f"{k}: file has {old.get(k)!r}, this call {meta.get(k)!r}" for k in differing)
            raise GramFileMismatchError(f"{path} holds a different Gram matrix ({detail}); refusing to mix them: "
                                        "delete it (and its .meta.json/.tiles files) or choose another out= path")
        ledger = TileLedger.load(ledger_path, len(pairs))
        check_writable(path, max(0, nbytes - _allocated_bytes(path)))
        try:
            header = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:  # a cut-off header or data: numpy's own messages
            raise GramFileError(errno.EIO, f"{path} is not a readable .npy file of its metadata's shape "
                                           f"{(n_rows, n_cols)} {dtype.name} (truncated or damaged: {exc}); delete it "
                                           "and its .meta.json/.tiles files to start over") from exc
        if header.shape != (n_rows, n_cols) or header.dtype != dtype:
            raise GramFileMismatchError(f"{path} has shape {header.shape} {header.dtype}, its metadata says "
                                        f"{(n_rows, n_cols)} {dtype}; delete it to start over")
        target = GramFile(str(path), header.offset, n_rows, n_cols, dtype.name)
        del header
        if verify:
            exact = exact or (lambda i, j: exact_entries(A, B, i, j))
            spot_tolerance = None
            if device is not None:
                exact, spot_tolerance = estimated_entries(device, exact)
            ledger.verify(target, pairs, symmetric=B is None, exact=exact, estimated=device is not None,
                          spot_tolerance=spot_tolerance)
        return target, ledger, pairs

    check_writable(path, nbytes)
    try:
        # a fresh (sparse) file: blocks are allocated as tiles are written
        created = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_rows, n_cols))
        offset = created.offset
        del created
        ledger_path.unlink(missing_ok=True)  # a ledger without its file is stale
        atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    except OSError as exc:
        raise _file_error(path, exc) from exc
    return GramFile(str(path), offset, n_rows, n_cols, dtype.name), TileLedger(ledger_path, len(pairs)), pairs


def tile_operand(X):
    """States as every backend takes them, however they reached this process (None stays None).

    On a Dask worker the states arrive deserialised: an array may be
    read-only (mapped or received into an immutable buffer) or carry its own
    copy of the complex64 descriptor, and ``MPSStates`` are rebuilt by
    unpickling.  Returns a C-contiguous complex64 array with NumPy's own
    descriptor, or ``MPSStates`` validated again (``MPSStates.__post_init__``);
    both without copying data that is already in that layout.
    """
    from .mps import MPSStates

    if X is None:
        return None
    if isinstance(X, MPSStates):
        return MPSStates(X.tensors)
    return np.ascontiguousarray(X, dtype=np.complex64)


def compute_tile(module, A: np.ndarray, B: np.ndarray | None, pair, *, tile: int, n_threads: int, dtype,
                 device=None) -> np.ndarray:
    """One tile of the Gram matrix, shape (i1 - i0, j1 - j0), computed by backend ``module``.

    A diagonal tile of the symmetric Gram is passed to the backend as one
    state block (B=None), so that it uses its symmetric product.  ``device``:
    (``shots.DeviceEstimate``, row ids, column ids) of this tile's rows and
    columns; the tile's exact values are then replaced by their estimates,
    keyed by those global ids, so they do not depend on the tiling.
    """
    from .mps import MPSStates

    A, B = tile_operand(A), tile_operand(B)
    i0, i1, j0, j1 = pair
    buffer = np.empty((i1 - i0, j1 - j0), dtype=dtype)
    kernel = module.gram_mps if isinstance(A, MPSStates) else module.gram
    if B is None and i0 == j0:
        block = kernel(A[i0:i1], None, out=buffer, tile=tile, n_threads=n_threads)
    else:
        block = kernel(A[i0:i1], (A if B is None else B)[j0:j1], out=buffer, tile=tile, n_threads=n_threads)
    if device is not None:
        spec, rows, cols = device
        spec.apply_(block, rows, cols, n_threads=n_threads)
    return block


def tile_device(device, pair):
    """``device`` (spec, row ids, column ids) cut to tile ``pair``'s rows and columns."""
    if device is None:
        return None
    spec, rows, cols = device
    i0, i1, j0, j1 = pair
    return spec, rows[i0:i1], cols[j0:j1]


def gram_to_file(A: np.ndarray, B: np.ndarray | None, path, *, backend: str, tile: int, n_threads: int,
                 dtype, verify: bool = True, device=None) -> np.memmap:
    """Write the Gram matrix of validated states to ``path`` tile by tile; resume if started before.

    Parameters
    ----------
    A : ndarray, shape (N, d), complex64 (validated by ``gram``)
    B : ndarray, shape (M, d), complex64, or None (symmetric)
    path : str or PathLike, the ``.npy`` output
    backend : registry name; tile: tile edge; n_threads: backend threads
    dtype : float32 or float64
    verify : check the tiles already written before trusting them (see ``open_output``)
    device : (``shots.DeviceEstimate``, row ids, column ids), optional: estimate each tile as a device would

    Returns
    -------
    K : numpy.memmap, shape (N, N) or (N, M), ``dtype``, opened read-write
    """
    from tqdm.auto import tqdm

    from .registry import get_backend

    module = get_backend(backend)
    target, ledger, pairs = open_output(A, B, path, tile=tile, dtype=dtype, verify=verify, device=device)
    pending = ledger.pending()
    with tqdm(total=len(pairs), initial=len(pairs) - len(pending), desc="Gram tiles to disk", unit="tile") as bar:
        try:
            for k in pending:
                block = compute_tile(module, A, B, pairs[k], tile=tile, n_threads=n_threads, dtype=dtype,
                                     device=tile_device(device, pairs[k]))
                checksum = target.write(pairs[k][0], pairs[k][2], block, mirror=B is None)
                ledger.add(k, checksum, target.sync)
                bar.update()
        finally:  # also when interrupted: keep what is done
            ledger.commit(target.sync)
    return target.open("r+")
