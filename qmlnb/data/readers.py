"""Readers of the datasets' own distribution formats.

Each reader returns uint8 (or, for digits, small-integer) images as
(N, C, H, W) and int64 labels as (N,), and checks that the file says what its
format promises (magic numbers, lengths, counts, keys) before trusting it, so
a truncated download is an error that says so rather than a reshape failure.
Values are never cast silently (a uint16 or float pixel is an error, not a
wrapped byte), and CIFAR-10's pickles are read by an unpickler that can only
build what the official batches contain, so a crafted batch cannot run code.
"""
from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _util
from .catalog import CorruptDataError, DataNotFoundError, ENV_VAR, dataset_folder, dataset_info

IDX_UBYTE = 0x08  # the only IDX element type Fashion-MNIST uses


@dataclass(frozen=True)
class Part:
    """One official split as read from disk: images (N, C, H, W), labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray
    files: tuple[str, ...]


@dataclass(frozen=True)
class RawDataset:
    """A dataset's official train and/or test parts (either may be None)."""

    name: str
    train: Part | None
    test: Part | None
    class_names: tuple[str, ...]
    max_value: float  # pixel scale: 255 for uint8 images, 16 for sklearn digits


# --------------------------------------------------------------------- IDX
def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise CorruptDataError(f"{path} is not a complete gzip file ({exc}); download it again") from exc


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes as a uint8 array of ``ndim`` dimensions.

    Format (http://yann.lecun.com/exdb/mnist/): magic 0x00 0x00 <type> <ndim>,
    then ``ndim`` big-endian uint32 sizes, then the payload in C order.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CorruptDataError(f"{path} is not an IDX file: bad magic number {data[:4].hex() or 'empty file'}")
    if data[2] != IDX_UBYTE:
        raise CorruptDataError(f"{path}: IDX element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    if data[3] != ndim:
        raise CorruptDataError(f"{path}: IDX file has {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDataError(f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    # Python ints: a forged header's sizes (up to 2**32 - 1 each) would overflow int64 and wrap, e.g. to 0
    expected = math.prod(shape)
    if len(data) - header != expected:
        raise CorruptDataError(
            f"{path}: payload is {len(data) - header} bytes but the header's shape {shape} needs {expected} "
            "(truncated or corrupt file; download it again)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name`` or its un-gzipped twin, whichever exists."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_pair(folder: Path, images_name: str, labels_name: str) -> Part:
    images_path, labels_path = _find(folder, images_name), _find(folder, labels_name)
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if len(labels) != len(images):
        raise CorruptDataError(
            f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} images"
        )
    return Part(images[:, None, :, :], labels.astype(np.int64), (str(images_path), str(labels_path)))


# ------------------------------------------------------------------ CIFAR
try:  # NumPy >= 2, where numpy.core (the name in older pickles) is a deprecated alias of numpy._core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


def _dtype(*args) -> np.dtype:
    """``numpy.dtype`` for the unpickler, refusing object dtypes (their elements could be anything)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dtype} is not allowed")
    return dtype


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it to store bytes: latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed as encode(str, 'latin1'), got {encoding!r}")
    return text.encode("latin-1")


# Everything the official CIFAR-10 pickles name (Python 2 protocol 2: numpy.core;
# re-pickled by NumPy 2: numpy._core; bytes pickled by Python 3: _codecs.encode).
# Nothing else is looked up, so a crafted batch cannot call os.system, eval, ...
CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, bytes, str, numbers and NumPy arrays, and nothing else."""

    def find_class(self, module: str, name: str):
        try:
            return CIFAR_PICKLE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never contains "
                                         "(refused: unpickling it could run code)") from None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, MemoryError) as exc:
        raise CorruptDataError(f"{path} is not a readable CIFAR-10 pickle batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{path} holds {_util.a_or_an(type(obj).__name__)}, not the dict of a CIFAR-10 batch")
    return obj


def read_cifar_batch(path: str | Path) -> Part:
    """One CIFAR-10 python batch: images (N, 3, 32, 32) uint8, labels (N,) int64."""
    path = Path(path)
    batch = _unpickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise CorruptDataError(f"{path} lacks the b'data' and b'labels' entries of a CIFAR-10 batch "
                               f"(keys: {sorted(batch)})")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CorruptDataError(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    try:
        labels = np.asarray(batch[b"labels"])
    except ValueError as exc:  # a ragged list
        raise CorruptDataError(f"{path}: b'labels' is not a flat list of class ids ({exc})") from exc
    if labels.ndim != 1 or len(labels) != len(data):
        raise CorruptDataError(f"{path} has {labels.size} labels but {len(data)} images")
    if len(labels) and labels.dtype.kind not in "iu":  # e.g. class names instead of ids
        raise CorruptDataError(f"{path}: b'labels' holds {labels.dtype} values such as {labels[:1].tolist()[0]!r}, "
                               "expected integer class ids")
    # rows are the R, G, B planes of 32x32 pixels each, row-major: already NCHW
    return Part(data.reshape(-1, 3, 32, 32), labels.astype(np.int64), (str(path),))


def read_cifar_label_names(path: str | Path) -> tuple[str, ...]:
    """The class names in ``batches.meta``."""
    path = Path(path)
    meta = _unpickle(path)
    if b"label_names" not in meta:
        raise CorruptDataError(f"{path} lacks b'label_names' (keys: {sorted(meta)})")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"])


def _concat(parts: list[Part]) -> Part:
    return Part(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                tuple(f for p in parts for f in p.files))


# ------------------------------------------------------------------- SVHN
def read_svhn_mat(path: str | Path) -> Part:
    """An SVHN ``*_32x32.mat``: images (N, 3, 32, 32) uint8, labels (N,) int64 with 10 -> 0."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, MatReadError, TypeError... on bad bytes
        raise CorruptDataError(f"{path} is not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise CorruptDataError(f"{path} lacks the 'X' and 'y' variables of SVHN "
                               f"(variables: {sorted(k for k in mat if not k.startswith('__'))})")
    X, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise CorruptDataError(f"{path}: X has shape {X.shape}, expected (32, 32, 3, N)")
    if X.dtype != np.uint8:  # a cast would wrap other values silently (300 -> 44, -1 -> 255)
        raise CorruptDataError(f"{path}: X is {X.dtype}, expected uint8 pixels")
    if y.ndim > 2 or (y.ndim == 2 and 1 not in y.shape):  # MATLAB stores the N labels as (N, 1)
        raise CorruptDataError(f"{path}: y has shape {y.shape}, expected (N, 1)")
    y = y.reshape(-1)
    if len(y) != X.shape[3]:
        raise CorruptDataError(f"{path} has {len(y)} labels but {X.shape[3]} images")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.array_equal(y, np.round(y))):
        raise CorruptDataError(f"{path}: y holds {y.dtype} values that are not all whole numbers, "
                               "expected integer labels 1..10")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise CorruptDataError(f"{path}: labels range {y.min()}..{y.max()}, expected 1..10")
    images = np.ascontiguousarray(X.transpose(3, 2, 0, 1))  # (H, W, C, N) -> NCHW
    labels = y.astype(np.int64) % 10  # SVHN writes the digit 0 as label 10
    return Part(images, labels, (str(path),))


# ----------------------------------------------------------------- digits
def read_digits() -> RawDataset:
    """scikit-learn's embedded 8x8 digits (1,797 images, values 0..16), one part."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    part = Part(bunch.images.astype(np.uint8)[:, None, :, :], bunch.target.astype(np.int64),
                ("sklearn.datasets.load_digits",))
    return RawDataset("digits", None, part, dataset_info("digits").class_names, 16.0)


# ---------------------------------------------------------------- dispatch
def _present(folder: Path, names: tuple[str, ...]) -> list[bool]:
    return [_find(folder, n) is not None for n in names]


def _missing_error(name: str, folder: Path, missing: list[str], why: str) -> DataNotFoundError:
    info = dataset_info(name)
    expected = ", ".join(info.train_files + info.test_files)
    return DataNotFoundError(
        f"{name}: {why}: missing {', '.join(missing)} in {folder.resolve()}. "
        f"Put the official files ({expected}) in that folder, point {ENV_VAR} at the folder that "
        f"contains {info.folder}/, or run qmlnb.data.download({name!r}) on a machine that is online."
    )


def _check_group(name: str, folder: Path, names: tuple[str, ...], group: str) -> bool:
    """True if every file of the group is there, False if none is; a partial group is an error."""
    present = _present(folder, names)
    if all(present):
        return True
    if any(present):
        missing = [n for n, p in zip(names, present) if not p]
        raise _missing_error(name, folder, missing, f"the official {group} files are incomplete")
    return False


def read_dataset(name: str, root: str | Path | None = None) -> RawDataset:
    """Read every official part of dataset ``name`` found under ``root``.

    Raises DataNotFoundError (naming the expected files and folder) when neither
    the train nor the test files are complete, CorruptDataError on bad content.
    """
    info = dataset_info(name)
    if name == "digits":
        return read_digits()
    folder = dataset_folder(name, root)
    has_train = _check_group(name, folder, info.train_files, "training")
    has_test = _check_group(name, folder, info.test_files, "test")
    if not (has_train or has_test):
        raise _missing_error(name, folder, list(info.train_files + info.test_files), "no data found")

    def read(files: tuple[str, ...]) -> Part:
        if name == "fashion-mnist":
            return _read_idx_pair(folder, *files)
        if name == "cifar10":
            return _concat([read_cifar_batch(folder / f) for f in files])
        return read_svhn_mat(folder / files[0])

    class_names = info.class_names
    if name == "cifar10" and (folder / "batches.meta").is_file():
        class_names = read_cifar_label_names(folder / "batches.meta")
    parts = [read(info.train_files) if has_train else None, read(info.test_files) if has_test else None]
    for part in parts:
        if part is not None and len(part.labels) and not 0 <= part.labels.min() <= part.labels.max() < len(class_names):
            raise CorruptDataError(f"{', '.join(part.files)}: labels range {part.labels.min()}..{part.labels.max()}, "
                                   f"expected 0..{len(class_names) - 1}")
    return RawDataset(name, parts[0], parts[1], class_names, 255.0)
