"""Datasets in their official formats, cut into seeded, stratified, normalised splits.

``load_splits(name, classes=(3, 8), ...)`` is the entry point; ``DATASETS``
lists the names, ``data_dir()`` the folder the files are read from
(``$QMLNB_DATA_DIR``, default ``data/``). Loaders never download:
``download(name)`` fetches the official files, verified by their published
checksums, when online; ``docs/data.md`` says where to put them by hand.

    from qmlnb.data import load_splits
    splits = load_splits("fashion-mnist", classes=(3, 8), seed=0)
    splits.X_train  # float32 (N, 1, 28, 28), normalised with the training split's statistics
    splits.y_train  # int64 (N,), 0 = Dress, 1 = Bag
"""
from .catalog import CorruptDataError, DATASETS, DEFAULT_CLASSES, DataNotFoundError, data_dir, dataset_info
from .download import ChecksumError, DownloadError, download
from .readers import read_cifar_batch, read_dataset, read_idx, read_svhn_mat
from .splits import Splits, load_splits, stratified_split

__all__ = [
    "DATASETS", "DEFAULT_CLASSES", "ChecksumError", "CorruptDataError", "DataNotFoundError", "DownloadError",
    "Splits", "data_dir", "dataset_info", "download", "load_splits", "read_cifar_batch", "read_dataset",
    "read_idx", "read_svhn_mat", "stratified_split",
]
