"""What each dataset is: its folder, files, class names, download sources.

Everything the readers, the splitter and the downloader need to know about a
dataset lives here, in one table, so that adding a dataset is one entry.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import _util

DATASETS = ("digits", "fashion-mnist", "cifar10", "svhn")
DEFAULT_CLASSES = (3, 8)  # the seed project's pairs: 3 vs 8, Dress vs Bag, cat vs ship
ENV_VAR = "QMLNB_DATA_DIR"  # the data folder; unset: DEFAULT_DATA_DIR (relative to the working directory)
DEFAULT_DATA_DIR = "data"


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not in the data directory."""


class CorruptDataError(ValueError):
    """A dataset file exists but its content is not what its format says."""


@dataclass(frozen=True)
class Source:
    """One downloadable file: https URL, name on disk, its published checksum and its size.

    ``size`` is the file's known size in bytes: the download stops a little
    above it (see :attr:`max_bytes`), so a wrong or hostile server cannot fill
    the disk.  None: only the downloader's global cap applies.
    """

    url: str
    filename: str
    md5: str
    size: int | None = None

    @property
    def max_bytes(self) -> int | None:
        """The most bytes a download of this file may take: its size plus 5% and 64 KiB."""
        return None if self.size is None else self.size + self.size // 20 + (1 << 16)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset.

    ``train_files`` / ``test_files`` are paths relative to ``<data_dir>/<folder>``;
    either group may be absent on disk (then the other one is split three ways).
    """

    name: str
    folder: str
    class_names: tuple[str, ...]
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    sources: tuple[Source, ...]
    archive_folder: str | None = None  # a downloaded archive unpacks this folder into data_dir


# https endpoints only: the bucket's REST endpoint in its own region (its website
# endpoint, the URL the fashion-mnist README gives, speaks plain http only)
FASHION_URL = "https://fashion-mnist.s3.eu-central-1.amazonaws.com/"
SVHN_URL = "https://ufldl.stanford.edu/housenumbers/"

INFO = {
    "digits": DatasetInfo(
        name="digits",
        folder="",
        class_names=tuple(str(d) for d in range(10)),
        train_files=(),
        test_files=(),
        sources=(),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        folder="fashion-mnist",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        train_files=("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        test_files=("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        # md5s published by Zalando Research (fashion-mnist README); sizes in bytes
        sources=(
            Source(FASHION_URL + "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz",
                   "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26_421_880),
            Source(FASHION_URL + "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz",
                   "25c81989df183df01b3e8a0aad5dffbe", 29_515),
            Source(FASHION_URL + "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                   "bef4ecab320f06d8554ea6380940ec79", 4_422_102),
            Source(FASHION_URL + "t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                   "bb300cfdad3c16e7a12a480ee83cd310", 5_148),
        ),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        folder="cifar-10-batches-py",
        class_names=("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"),
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        # md5 published on https://www.cs.toronto.edu/~kriz/cifar.html
        sources=(Source("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170_498_071),),
        archive_folder="cifar-10-batches-py",
    ),
    "svhn": DatasetInfo(
        name="svhn",
        folder="svhn",
        class_names=tuple(str(d) for d in range(10)),
        train_files=("train_32x32.mat",),
        test_files=("test_32x32.mat",),
        # md5s published on https://ufldl.stanford.edu/housenumbers/; sizes in bytes
        sources=(
            Source(SVHN_URL + "train_32x32.mat", "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373",
                   182_040_794),
            Source(SVHN_URL + "test_32x32.mat", "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3",
                   64_275_384),
        ),
    ),
}


def data_dir() -> Path:
    """The data directory: ``$QMLNB_DATA_DIR`` if set, else ``data/`` in the project folder.

    The default is absolute (:func:`qmlnb._util.project_root`), so a notebook finds the
    same folder whatever its working directory; a relative ``$QMLNB_DATA_DIR`` is
    relative to the working directory, as any path in the environment
    (``make lab`` makes it absolute before the notebooks' kernels start elsewhere).
    """
    return Path(os.environ.get(ENV_VAR) or _util.project_root() / DEFAULT_DATA_DIR)


def dataset_info(name: str) -> DatasetInfo:
    """The catalogue entry of ``name``, or a ValueError listing the known names."""
    if name not in INFO:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return INFO[name]


def dataset_folder(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<data_dir>/<folder>`` of dataset ``name`` (root defaults to :func:`data_dir`)."""
    info = dataset_info(name)
    return Path(root if root is not None else data_dir()) / info.folder
