"""qmlnb.data: official-format readers, splits, errors and the verified download.

Real subsets (Fashion-MNIST t10k, CIFAR-10 test_batch) come from the
``shared_data`` fixture; every reader and corruption error is also tested on
small files written here in the official formats.
"""
from __future__ import annotations

import dataclasses
import contextlib
import gzip
import hashlib
import http.server
import builtins
import io
import os
import pickle
import re
import socket
import struct
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from qmlnb.data import (DATASETS, ChecksumError, CorruptDataError, DataNotFoundError, DownloadError, Splits,
                        data_dir, download, load_splits, read_cifar_batch, read_dataset, read_idx, read_svhn_mat,
                        stratified_split)
from qmlnb.data import catalog
from qmlnb.data.download import check_url, fetch
from qmlnb.data.readers import read_cifar_label_names

FASHION_N = 4443
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------ file writers
def write_idx(path: Path, array: np.ndarray, *, gz: bool = True, magic: bytes | None = None) -> Path:
    """An IDX ubyte file: 0x00 0x00 0x08 ndim, big-endian uint32 sizes, payload."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = magic if magic is not None else bytes([0, 0, 8, array.ndim])
    data = head + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def toy_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel encodes the label (so a mix-up would show)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
    images.reshape(len(labels), -1)[:, 0] = labels * 20
    return images


def balanced_labels(n_per_class: int, n_classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), n_per_class))


def write_fashion(root: Path, *, train_per_class: int | None = 8, test_per_class: int | None = 4, gz=True):
    folder = root / "fashion-mnist"
    suffix = ".gz" if gz else ""
    out = {}
    for part, per_class, seed in (("train", train_per_class, 1), ("t10k", test_per_class, 2)):
        if per_class is None:
            continue
        labels = balanced_labels(per_class, seed=seed)
        images = toy_images(labels, (28, 28), seed)
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels, gz=gz)
        out[part] = (images, labels)
    return out


def write_cifar_batch(path: Path, data: np.ndarray, labels) -> Path:
    labels = [v.item() if isinstance(v, np.generic) else v for v in labels]  # Python ints, as in the official files
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"toy", b"labels": labels, b"data": data, b"filenames": []}, f)
    return path


def write_cifar(root: Path, *, per_class: int = 3, train: bool = True) -> dict:
    folder = root / "cifar-10-batches-py"
    out = {}
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"] if train else []
    for i, name in enumerate(names + ["test_batch"]):
        labels = balanced_labels(per_class, seed=10 + i)
        data = toy_images(labels, (3072,), 10 + i)
        write_cifar_batch(folder / name, data, labels)
        out[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in catalog.INFO["cifar10"].class_names]}, f)
    return out


def write_svhn(path: Path, labels_1_to_10: np.ndarray, seed: int) -> np.ndarray:
    """An SVHN .mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    X = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3, len(labels_1_to_10)), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": X, "y": labels_1_to_10.reshape(-1, 1).astype(np.uint8)})
    return X


def svhn_labels(per_class: int, seed: int) -> np.ndarray:
    return balanced_labels(per_class, seed=seed) + 1  # 1..10, 10 = digit 0


# ------------------------------------------------------------- real data
def test_fashion_subset_reads_with_known_first_label(shared_data):
    raw = read_dataset("fashion-mnist", shared_data)
    assert raw.train is None  # the shared subset has only the t10k files
    images, labels = raw.test.images, raw.test.labels
    assert images.shape == (FASHION_N, 1, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (FASHION_N,) and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9
    # read image 0 and its label independently of read_idx: header 8 / 16 bytes
    label_bytes = gzip.open(shared_data / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read()
    image_bytes = gzip.open(shared_data / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").read()
    assert labels[0] == label_bytes[8] == 9  # image 0 of the Fashion-MNIST test set is an ankle boot
    np.testing.assert_array_equal(images[0, 0].ravel(), np.frombuffer(image_bytes[16:16 + 784], np.uint8))


def test_fashion_default_pair_splits(shared_data):
    labels = read_dataset("fashion-mnist", shared_data).test.labels
    n_dress, n_bag = int((labels == 3).sum()), int((labels == 8).sum())
    s = load_splits("fashion-mnist", data_dir=shared_data)
    assert isinstance(s, Splits)
    assert s.classes == (3, 8) and s.class_names == ("Dress", "Bag") and s.name == "fashion-mnist"
    assert s.image_shape == (1, 28, 28)
    for X, y in ((s.X_train, s.y_train), (s.X_val, s.y_val), (s.X_test, s.y_test)):
        assert X.dtype == np.float32 and X.ndim == 4 and X.shape[1:] == (1, 28, 28)
        assert y.dtype == np.int64 and y.shape == (len(X),) and set(np.unique(y)) == {0, 1}
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == n_dress + n_bag
    assert len(s.y_test) == round(0.2 * (n_dress + n_bag)) and len(s.y_val) == round(0.2 * (n_dress + n_bag))
    # splits are disjoint and cover the chosen samples
    all_idx = np.concatenate([s.index_train, s.index_val, s.index_test])
    assert np.array_equal(np.sort(all_idx), np.arange(n_dress + n_bag))
    # stratified: class shares agree to within one sample per split
    share = n_bag / (n_dress + n_bag)
    for y in (s.y_train, s.y_val, s.y_test):
        assert abs(y.sum() - share * len(y)) <= 1
    # normalised with the training split's statistics
    np.testing.assert_allclose(s.X_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(s.X_train.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert "one part only" in s.source and "t10k-images-idx3-ubyte.gz" in s.source


def test_splits_are_reproducible_and_seed_dependent(shared_data):
    a = load_splits("fashion-mnist", data_dir=shared_data, seed=3)
    b = load_splits("fashion-mnist", data_dir=shared_data, seed=3)
    c = load_splits("fashion-mnist", data_dir=shared_data, seed=4)
    for field in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.index_test, c.index_test)


def test_n_train_subset_is_stratified_and_keeps_val_and_test(shared_data):
    full = load_splits("fashion-mnist", data_dir=shared_data)
    sub = load_splits("fashion-mnist", n_train=100, data_dir=shared_data)
    assert len(sub.y_train) == 100 and abs(sub.y_train.sum() - 100 * full.y_train.mean()) <= 1
    assert set(sub.index_train) <= set(full.index_train)
    np.testing.assert_array_equal(sub.index_val, full.index_val)
    np.testing.assert_array_equal(sub.index_test, full.index_test)
    assert "training subset of 100" in sub.source


def test_multiclass_and_class_order(shared_data):
    every = load_splits("fashion-mnist", classes=None, data_dir=shared_data)
    assert every.classes == tuple(range(10)) and every.n_classes == 10
    assert set(np.unique(every.y_train)) == set(range(10))
    assert len(every.y_train) + len(every.y_val) + len(every.y_test) == FASHION_N
    swapped = load_splits("fashion-mnist", classes=(8, 3), data_dir=shared_data)
    assert swapped.class_names == ("Bag", "Dress")
    raw = read_dataset("fashion-mnist", shared_data).test.labels
    chosen = raw[np.isin(raw, (3, 8))]
    np.testing.assert_array_equal(swapped.y_test, (chosen[swapped.index_test] == 3).astype(np.int64))


def test_cifar_subset_and_grayscale_luma(shared_data):
    s = load_splits("cifar10", data_dir=shared_data)
    assert s.class_names == ("cat", "ship") and s.image_shape == (3, 32, 32)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (1200, 400, 400)  # 1,000 per class in test_batch
    g = load_splits("cifar10", grayscale=True, data_dir=shared_data)
    assert g.image_shape == (1, 32, 32) and g.X_train.shape[1] == 1
    np.testing.assert_array_equal(g.index_train, s.index_train)
    # undo the normalisation and compare with ITU-R 601 luma computed from the pickle directly
    with open(shared_data / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    labels = np.asarray(batch[b"labels"])
    rgb = batch[b"data"][np.isin(labels, (3, 8))][g.index_train[:5]].reshape(5, 3, 32, 32) / 255.0
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    np.testing.assert_allclose(g.X_train[:5, 0] * g.std[0] + g.mean[0], luma, atol=1e-5)


# ---------------------------------------------------------- digits, dirs
def test_digits_is_the_embedded_default():
    s = load_splits()
    assert s.name == "digits" and s.classes == (3, 8) and s.class_names == ("3", "8")
    assert s.image_shape == (1, 8, 8) and "load_digits" in s.source
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 183 + 174  # 3s and 8s in sklearn's digits
    assert DATASETS == ("digits", "fashion-mnist", "cifar10", "svhn")


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("QMLNB_DATA_DIR", raising=False)
    # the default is the project's data/ whatever the working directory (a notebook's kernel runs in notebooks/)
    monkeypatch.chdir(REPO / "notebooks")
    assert data_dir() == REPO / "data"
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    write_fashion(tmp_path)
    assert load_splits("fashion-mnist").source.count(str(tmp_path)) == 4  # all four files from there


# ------------------------------------------------------- synthetic files
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_train_and_test_files_give_official_test(tmp_path, gz):
    written = write_fashion(tmp_path, gz=gz)
    raw = read_dataset("fashion-mnist", tmp_path)
    np.testing.assert_array_equal(raw.train.images[:, 0], written["train"][0])
    np.testing.assert_array_equal(raw.test.labels, written["t10k"][1])
    s = load_splits("fashion-mnist", classes=(3, 8), data_dir=tmp_path, val_fraction=0.25)
    test_images, test_labels = written["t10k"]
    chosen = np.isin(test_labels, (3, 8))
    assert len(s.y_test) == chosen.sum()  # the whole official test part, not a fraction
    np.testing.assert_array_equal(s.y_test, (test_labels[chosen] == 8).astype(np.int64))
    assert len(s.y_val) == 4 and len(s.y_train) == 12  # 25% of the 16 training samples of classes 3 and 8
    assert "official training files" in s.source and "official test files" in s.source
    # the first pixel encodes the label: unnormalise and check that images and labels stayed paired
    first = np.rint((s.X_train[:, 0, 0, 0] * s.std[0] + s.mean[0]) * 255)
    np.testing.assert_array_equal(first, np.where(s.y_train == 0, 3, 8) * 20)


def test_cifar_batches_layout_and_two_parts(tmp_path):
    written = write_cifar(tmp_path)
    part = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "data_batch_2")
    data, labels = written["data_batch_2"]
    assert part.images.shape == (30, 3, 32, 32)
    # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major
    i, c, h, w = 7, 2, 5, 9
    assert part.images[i, c, h, w] == data[i, c * 1024 + h * 32 + w]
    np.testing.assert_array_equal(part.labels, labels)
    s = load_splits("cifar10", classes=None, data_dir=tmp_path)
    assert len(s.y_test) == 30 and len(s.y_train) + len(s.y_val) == 150
    assert "data_batch_5" in s.source and s.class_names[3] == "cat"


def test_svhn_mat_layout_and_label_ten_is_zero(tmp_path):
    labels = svhn_labels(3, seed=5)
    X = write_svhn(tmp_path / "svhn" / "train_32x32.mat", labels, seed=5)
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", svhn_labels(2, seed=6), seed=6)
    part = read_svhn_mat(tmp_path / "svhn" / "train_32x32.mat")
    assert part.images.shape == (30, 3, 32, 32) and part.images.dtype == np.uint8
    assert part.images[4, 1, 7, 20] == X[7, 20, 1, 4]  # (H, W, C, N) -> (N, C, H, W)
    np.testing.assert_array_equal(part.labels, labels % 10)
    assert 0 in part.labels and part.labels.max() == 9
    s = load_splits("svhn", classes=(0, 8), data_dir=tmp_path, val_fraction=0.34)
    assert s.class_names == ("0", "8") and len(s.y_test) == 4 and len(s.y_val) == 2


def test_single_training_part_is_split_three_ways(tmp_path):
    write_fashion(tmp_path, test_per_class=None)
    s = load_splits("fashion-mnist", data_dir=tmp_path)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (10, 3, 3)
    assert "train-images-idx3-ubyte.gz" in s.source and "one part only" in s.source


def test_stratified_split_exact_counts():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    take, rest = stratified_split(y, 10, np.random.default_rng(0), "sample")
    assert len(take) == 10 and np.array_equal(np.bincount(y[take]), [5, 3, 2])
    assert np.array_equal(np.sort(np.concatenate([take, rest])), np.arange(100))
    with pytest.raises(ValueError, match="class 2 has 20 samples"):
        stratified_split(y, 2, np.random.default_rng(0), "sample")


# ------------------------------------------------------------- bad files
def test_missing_files_name_files_folder_and_env(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_splits("fashion-mnist", data_dir=tmp_path)
    message = str(err.value)
    for expected in ("t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", str(tmp_path / "fashion-mnist"),
                     "QMLNB_DATA_DIR", "download"):
        assert expected in message
    with pytest.raises(DataNotFoundError, match="test_32x32.mat"):
        load_splits("svhn", data_dir=tmp_path)


def test_incomplete_group_names_the_missing_files(tmp_path):
    write_cifar_batch(tmp_path / "cifar-10-batches-py" / "data_batch_1", np.zeros((2, 3072), np.uint8), [0, 1])
    with pytest.raises(DataNotFoundError, match="incomplete.*data_batch_2, data_batch_3, data_batch_4, data_batch_5"):
        load_splits("cifar10", data_dir=tmp_path)
    write_idx(tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load_splits("fashion-mnist", data_dir=tmp_path)


def test_idx_corruptions(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(CorruptDataError, match="bad magic number"):
        read_idx(write_idx(tmp_path / "a.gz", images, magic=b"\x1f\x8b\x08\x03"), 3)
    with pytest.raises(CorruptDataError, match="element type 0x0d"):
        read_idx(write_idx(tmp_path / "b.gz", images, magic=b"\x00\x00\x0d\x03"), 3)
    with pytest.raises(CorruptDataError, match="has 1 dimensions, expected 3"):
        read_idx(write_idx(tmp_path / "c.gz", np.zeros(3)), 3)
    # payload shorter than the header's shape says (a truncated download)
    path = write_idx(tmp_path / "d", images, gz=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptDataError, match="payload is 2252 bytes but the header's shape \\(3, 28, 28\\) needs 2352"):
        read_idx(path, 3)
    header_only = tmp_path / "e"
    header_only.write_bytes(bytes([0, 0, 8, 3, 0, 0]))  # cut inside the three sizes
    with pytest.raises(CorruptDataError, match="truncated: 6 bytes, shorter than its 16-byte header"):
        read_idx(header_only, 3)
    gz = write_idx(tmp_path / "f.gz", images)
    gz.write_bytes(gz.read_bytes()[:-30])
    with pytest.raises(CorruptDataError, match="not a complete gzip file"):
        read_idx(gz, 3)


def test_label_count_and_range_mismatch(tmp_path):
    folder = tmp_path / "fashion-mnist"
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    with pytest.raises(CorruptDataError, match="has 4 labels but .* has 5 images"):
        load_splits("fashion-mnist", data_dir=tmp_path)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 12]))
    with pytest.raises(CorruptDataError, match="labels range 0..12, expected 0..9"):
        load_splits("fashion-mnist", data_dir=tmp_path)


class RunsCode:
    """Pickles as a call of ``func(arg)``: what a crafted file would make a plain unpickler do."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def code_payloads(marker: Path) -> list:
    """Two pickled calls that would each create ``marker``: os.system and builtins.eval."""
    return [RunsCode(os.system, f"touch {marker}"), RunsCode(builtins.eval, f"open({str(marker)!r}, 'w').close()")]


@pytest.mark.parametrize("payload", [0, 1], ids=["os.system", "builtins.eval"])
def test_cifar_pickle_that_would_run_code_is_refused(tmp_path, payload):
    marker = tmp_path / "marker"
    evil = code_payloads(marker)[payload]
    batch = tmp_path / "test_batch"
    with open(batch, "wb") as f:
        pickle.dump({b"data": evil, b"labels": [0], b"batch_label": b"toy", b"filenames": []}, f)
    with pytest.raises(CorruptDataError) as refused:
        read_cifar_batch(batch)
    assert not marker.exists()  # the payload never ran
    assert re.search(f"{re.escape(str(batch))}.*(posix|os|builtins)\\.(system|eval).*could run code",
                     str(refused.value))
    meta = tmp_path / "batches.meta"
    with open(meta, "wb") as f:
        pickle.dump({b"label_names": [evil]}, f)
    with pytest.raises(CorruptDataError, match=f"{re.escape(str(meta))}.*could run code"):
        read_cifar_label_names(meta)
    assert not marker.exists()


def test_cifar_pickle_of_object_arrays_is_refused(tmp_path):
    path = write_cifar_batch(tmp_path / "objects", np.zeros((1, 3072), dtype=object), [0])
    with pytest.raises(CorruptDataError, match="object dtype"):
        read_cifar_batch(path)


def test_cifar_pickles_of_both_numpy_generations_load(tmp_path):
    # the official batches are Python 2 protocol-2 pickles naming numpy.core; NumPy 2 writes numpy._core
    data, labels = np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072), [4, 7]
    new = pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
    assert b"numpy._core.multiarray" in new
    for name, raw in (("new", new), ("old", new.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))):
        (tmp_path / name).write_bytes(raw)
        part = read_cifar_batch(tmp_path / name)
        assert np.array_equal(part.images.reshape(2, 3072), data) and part.labels.tolist() == labels


def test_real_cifar_files_load_with_the_restricted_unpickler(shared_data):
    folder = shared_data / "cifar-10-batches-py"
    part = read_cifar_batch(folder / "test_batch")
    assert part.images.shape == (10_000, 3, 32, 32) and part.images.dtype == np.uint8
    assert sorted(np.unique(part.labels)) == list(range(10))
    assert read_cifar_label_names(folder / "batches.meta") == catalog.INFO["cifar10"].class_names


def test_cifar_labels_that_are_not_class_ids(tmp_path):
    with pytest.raises(CorruptDataError, match="strings.*b'labels' holds \\|S3 values such as b'cat', expected int"):
        read_cifar_batch(write_cifar_batch(tmp_path / "strings", np.zeros((2, 3072), np.uint8), [b"cat", b"dog"]))
    with pytest.raises(CorruptDataError, match="floats.*b'labels' holds float64 values"):
        read_cifar_batch(write_cifar_batch(tmp_path / "floats", np.zeros((2, 3072), np.uint8), [0.5, 1.0]))
    with pytest.raises(CorruptDataError, match="ragged.*not a flat list of class ids"):
        read_cifar_batch(write_cifar_batch(tmp_path / "ragged", np.zeros((2, 3072), np.uint8), [[0, 1], [2]]))


def write_count_mismatch(tmp_path: Path, fmt: str, n_images: int, n_labels: int):
    """Files of format ``fmt`` with n_images images and n_labels labels, and a function reading them."""
    labels = np.arange(n_labels) % 2
    if fmt == "idx":
        folder = tmp_path / "fashion-mnist"
        write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((n_images, 28, 28)))
        write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
        return lambda: read_dataset("fashion-mnist", tmp_path)
    if fmt == "cifar":
        path = write_cifar_batch(tmp_path / "test_batch", np.zeros((n_images, 3072), np.uint8), labels.tolist())
        return lambda: read_cifar_batch(path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, n_images), np.uint8),
                                                   "y": (labels + 1).reshape(-1, 1)})
    return lambda: read_svhn_mat(tmp_path / "test_32x32.mat")


@pytest.mark.parametrize("fmt", ["idx", "cifar", "svhn"])
@pytest.mark.parametrize("n_labels", [4, 6], ids=["fewer-labels", "more-labels"])
def test_label_and_image_counts_must_match_both_ways(tmp_path, fmt, n_labels):
    read = write_count_mismatch(tmp_path, fmt, 5, n_labels)
    with pytest.raises(CorruptDataError, match=f"has {n_labels} labels but .*5 images"):
        read()


def test_svhn_labels_must_be_one_column(tmp_path):
    # four labels for four images, but as a 2x2 matrix: not SVHN's (N, 1) column
    scipy.io.savemat(tmp_path / "square.mat", {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((2, 2))})
    with pytest.raises(CorruptDataError, match=r"y has shape \(2, 2\), expected \(N, 1\)"):
        read_svhn_mat(tmp_path / "square.mat")


def test_cifar_corruptions(tmp_path):
    bad = tmp_path / "garbage"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(CorruptDataError, match="not a readable CIFAR-10 pickle batch"):
        read_cifar_batch(bad)
    truncated = write_cifar_batch(tmp_path / "trunc", np.zeros((4, 3072), np.uint8), [0, 1, 2, 3])
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(CorruptDataError, match="not a readable CIFAR-10 pickle batch"):
        read_cifar_batch(truncated)
    with open(tmp_path / "nokeys", "wb") as f:
        pickle.dump({b"pixels": 1}, f)
    with pytest.raises(CorruptDataError, match="lacks the b'data' and b'labels'"):
        read_cifar_batch(tmp_path / "nokeys")
    with pytest.raises(CorruptDataError, match=r"expected uint8 \(N, 3072\)"):
        read_cifar_batch(write_cifar_batch(tmp_path / "shape", np.zeros((4, 1024), np.uint8), [0, 1, 2, 3]))
    with pytest.raises(CorruptDataError, match="has 3 labels but 4 images"):
        read_cifar_batch(write_cifar_batch(tmp_path / "count", np.zeros((4, 3072), np.uint8), [0, 1, 2]))
    with open(tmp_path / "list", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(CorruptDataError, match="holds a list"):
        read_cifar_batch(tmp_path / "list")


def test_svhn_corruptions(tmp_path):
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, nonsense" * 3)
    with pytest.raises(CorruptDataError, match="not a readable MATLAB .mat file"):
        read_svhn_mat(bad)
    scipy.io.savemat(tmp_path / "noy.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    with pytest.raises(CorruptDataError, match="lacks the 'X' and 'y'"):
        read_svhn_mat(tmp_path / "noy.mat")
    scipy.io.savemat(tmp_path / "shape.mat", {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(CorruptDataError, match=r"expected \(32, 32, 3, N\)"):
        read_svhn_mat(tmp_path / "shape.mat")
    scipy.io.savemat(tmp_path / "count.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(CorruptDataError, match="has 3 labels but 2 images"):
        read_svhn_mat(tmp_path / "count.mat")
    scipy.io.savemat(tmp_path / "range.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(CorruptDataError, match="labels range 0..3, expected 1..10"):
        read_svhn_mat(tmp_path / "range.mat")


@pytest.mark.parametrize("X", [np.full((32, 32, 3, 2), 300, np.uint16), np.full((32, 32, 3, 2), -1.0),
                               np.full((32, 32, 3, 2), 0.5, np.float32)],
                         ids=["uint16-300", "float-minus-1", "float32"])
def test_svhn_pixels_that_are_not_bytes_are_refused(tmp_path, X):
    # a cast to uint8 would wrap them silently: 300 -> 44, -1 -> 255
    path = tmp_path / "pixels.mat"
    scipy.io.savemat(path, {"X": X, "y": np.ones((2, 1), np.uint8)})
    with pytest.raises(CorruptDataError, match=f"{re.escape(str(path))}: X is {X.dtype}, expected uint8 pixels"):
        read_svhn_mat(path)


def test_svhn_labels_must_be_whole_numbers(tmp_path):
    path = tmp_path / "half.mat"
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1.5], [2.0]])})
    with pytest.raises(CorruptDataError, match=f"{re.escape(str(path))}: y holds float64 values that are not all"):
        read_svhn_mat(path)
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1.0], [10.0]])})
    assert read_svhn_mat(path).labels.tolist() == [1, 0]  # MATLAB doubles holding whole labels are fine


# ------------------------------------------------------------ bad params
@pytest.mark.parametrize("kwargs, message", [
    (dict(name="mnist"), "unknown dataset 'mnist'; known datasets: digits, fashion-mnist, cifar10, svhn"),
    (dict(classes=(3, 11)), r"class ids \[11\] are not in digits"),
    (dict(classes=(3, 3)), r"duplicates \[3\]"),
    (dict(classes=(3,)), "at least two class ids"),
    (dict(classes="38"), "sequence of class ids"),
    (dict(classes=(3, 8.0)), "class ids must be integers"),
    (dict(n_train=10_000), "n_train=10000 is larger than the 215 training samples"),
    (dict(n_train=1), "cannot hold one sample of each of the 2 classes"),
    (dict(n_train=0), "n_train must be a positive integer"),
    (dict(val_fraction=0), r"val_fraction must be a number in \(0, 1\)"),
    (dict(val_fraction=1.0), r"val_fraction must be a number in \(0, 1\)"),
    (dict(test_fraction=-0.1), r"test_fraction must be a number in \(0, 1\)"),
    (dict(test_fraction=True), r"test_fraction must be a number in \(0, 1\)"),
    (dict(val_fraction=0.5, test_fraction=0.5), "val_fraction \\+ test_fraction must be below 1"),
    (dict(seed=-1), "seed must be a non-negative integer"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_splits(**kwargs)


def test_class_not_in_data_lists_present_classes(tmp_path):
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", np.array([1, 2, 3, 1, 2, 3] * 3), seed=1)
    with pytest.raises(ValueError, match=r"class ids \[8\] are not in svhn; its data has classes \[1, 2, 3\]"):
        load_splits("svhn", classes=(3, 8), data_dir=tmp_path)


def test_too_small_class_is_named_by_its_original_id(tmp_path):
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", np.array([1] * 10 + [2] * 2), seed=1)
    with pytest.raises(ValueError, match="class 2 has 2 samples, too few to split 2 of 12 off as the test split"):
        load_splits("svhn", classes=(2, 1), data_dir=tmp_path)


def test_class_missing_from_official_training_files(tmp_path):
    write_svhn(tmp_path / "svhn" / "train_32x32.mat", np.array([1, 2] * 5), seed=1)
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", np.array([1, 2, 3] * 2), seed=2)
    with pytest.raises(ValueError, match=r"class ids \[3\] have no samples in the official training files"):
        load_splits("svhn", classes=(1, 3), data_dir=tmp_path)


def test_data_with_a_single_class_has_nothing_to_classify(tmp_path):
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", np.array([1] * 6), seed=1)
    with pytest.raises(ValueError, match="fewer than two classes"):
        load_splits("svhn", classes=None, data_dir=tmp_path)


# -------------------------------------------------------------- download
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with-block ends


def test_download_refused_connection_is_a_quick_clear_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/train_32x32.mat"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="could not download .*offline"):
        fetch(url, tmp_path / "x.mat", "0" * 32, timeout=2, progress=False)
    assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []


def test_download_stalled_server_times_out(tmp_path):
    # a listening socket that never answers: the connection opens, the read must time out
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/file"
        start = time.monotonic()
        with pytest.raises(DownloadError, match="timeout 0.5 s"):
            fetch(url, tmp_path / "file", "0" * 32, timeout=0.5, progress=False)
        assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def local_server(tmp_path):
    """An http.server on 127.0.0.1 serving tmp_path/served; stopped after the test."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    with _serve(Quiet) as url:
        yield served, url


@contextlib.contextmanager
def _serve(handler):
    """A threaded http.server on 127.0.0.1 with ``handler``; yields its base URL, stops it on exit."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_fetch_verifies_checksum(local_server, tmp_path):
    served, url = local_server
    payload = b"qmlnb" * 1000
    (served / "file.bin").write_bytes(payload)
    out = tmp_path / "out"
    assert fetch(url + "file.bin", out / "file.bin", _md5(payload), progress=False).read_bytes() == payload
    with pytest.raises(ChecksumError, match=f"md5 {_md5(payload)} does not match the published {'f' * 32}"):
        fetch(url + "file.bin", out / "other.bin", "f" * 32, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["file.bin"]  # no partial or temporary file left
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(url + "missing.bin", out / "missing.bin", "f" * 32, progress=False)


def test_download_svhn_from_local_server(local_server, tmp_path, monkeypatch):
    served, url = local_server
    sources = []
    for name, per_class, seed in (("train_32x32.mat", 2, 1), ("test_32x32.mat", 2, 2)):
        write_svhn(served / name, svhn_labels(per_class, seed), seed)
        sources.append(catalog.Source(url + name, name, _md5((served / name).read_bytes())))
    monkeypatch.setitem(catalog.INFO, "svhn", dataclasses.replace(catalog.INFO["svhn"], sources=tuple(sources)))
    root = tmp_path / "data"
    paths = download("svhn", root, timeout=5, progress=False)
    assert [p.name for p in paths] == ["train_32x32.mat", "test_32x32.mat"]
    assert load_splits("svhn", classes=None, data_dir=root, val_fraction=0.5).n_classes == 10
    assert download("digits", root) == []
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        download("svhn", root, timeout=0)


def test_download_cifar_archive_from_local_server(local_server, tmp_path, monkeypatch):
    served, url = local_server
    staged = tmp_path / "staged"
    write_cifar(staged, per_class=1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(staged / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (served / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    source = catalog.Source(url + "cifar-10-python.tar.gz", "cifar-10-python.tar.gz", _md5(buffer.getvalue()))
    monkeypatch.setitem(catalog.INFO, "cifar10", dataclasses.replace(catalog.INFO["cifar10"], sources=(source,)))
    root = tmp_path / "data"
    paths = download("cifar10", root, progress=False)
    assert len(paths) == 6 and not (root / "cifar-10-python.tar.gz").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # no temporary folder left
    s = load_splits("cifar10", classes=None, data_dir=root, val_fraction=0.5)
    assert len(s.y_test) == 10 and len(s.y_train) + len(s.y_val) == 50


def test_download_command_line(local_server, tmp_path, monkeypatch, capsys):
    from qmlnb.cli import main

    served, url = local_server
    write_svhn(served / "train_32x32.mat", svhn_labels(1, 1), 1)
    write_svhn(served / "test_32x32.mat", svhn_labels(1, 2), 2)
    sources = tuple(catalog.Source(url + n, n, _md5((served / n).read_bytes()))
                    for n in ("train_32x32.mat", "test_32x32.mat"))
    monkeypatch.setitem(catalog.INFO, "svhn", dataclasses.replace(catalog.INFO["svhn"], sources=sources))
    assert main(["download", "svhn", "--data-dir", str(tmp_path / "data"), "--timeout", "5"]) == 0
    assert str(tmp_path / "data" / "svhn" / "test_32x32.mat") in capsys.readouterr().out
    closed = tuple(dataclasses.replace(s, url=f"http://127.0.0.1:{_closed_port()}/{s.filename}") for s in sources)
    monkeypatch.setitem(catalog.INFO, "svhn", dataclasses.replace(catalog.INFO["svhn"], sources=closed))
    assert main(["download", "svhn", "--data-dir", str(tmp_path / "other"), "--timeout", "2"]) == 1
    assert "could not download" in capsys.readouterr().err


def test_catalogue_downloads_are_https_with_known_sizes():
    sources = [s for name in DATASETS for s in catalog.INFO[name].sources]
    assert len(sources) == 7
    for source in sources:
        assert source.url.startswith("https://"), source.url
        assert check_url(source.url)
        assert source.size > 0 and source.size < source.max_bytes < 1.1 * source.size + 70_000


@pytest.mark.parametrize("url", ["http://example.org/train_32x32.mat", "ftp://example.org/x", "file:///etc/passwd",
                                 "https:///no-host", "example.org/x"])
def test_fetch_refuses_urls_that_are_not_https(tmp_path, monkeypatch, url):
    def no_network(*args, **kwargs):
        raise AssertionError("the URL was not refused before the network was used")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(DownloadError, match=f"refusing to download {re.escape(url)}: only https URLs"):
        fetch(url, tmp_path / "out" / "file", "0" * 32, progress=False)
    assert not (tmp_path / "out").exists()
    # plain http is accepted only from this machine's loopback (local mirrors, these tests)
    assert check_url("http://127.0.0.1:8000/x") == "127.0.0.1" and check_url("https://EXAMPLE.org/x") == "example.org"


PAYLOAD = bytes(range(256)) * 20  # 5,120 bytes


@pytest.fixture
def tricky_server():
    """A server on 127.0.0.1 that redirects, and sends bodies with and without Content-Length."""

    class Tricky(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            port = self.server.server_address[1]
            if self.path == "/elsewhere":  # another host name (for this same machine: nothing leaves it)
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/payload")
                self.end_headers()
            elif self.path == "/same-host":
                self.send_response(302)
                self.send_header("Location", "/payload")
                self.end_headers()
            elif self.path == "/payload":
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD)
            elif self.path == "/endless":  # 16 MiB, no Content-Length: only the cap stops it early
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(256):
                        self.wfile.write(bytes(1 << 16))
                except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
                    pass
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    with _serve(Tricky) as url:
        yield url


def test_fetch_refuses_a_redirect_to_another_host(tricky_server, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="redirect .* from host 127.0.0.1 to another host, localhost"):
        fetch(tricky_server + "elsewhere", out / "file", _md5(PAYLOAD), timeout=5, progress=False)
    assert list(out.iterdir()) == []
    # a redirect on the same host is followed
    assert fetch(tricky_server + "same-host", out / "file", _md5(PAYLOAD), timeout=5,
                 progress=False).read_bytes() == PAYLOAD


def test_fetch_stops_at_the_size_cap_and_leaves_no_file(tricky_server, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="larger than the 5,119 bytes allowed for file: it announces 5,120 bytes"):
        fetch(tricky_server + "payload", out / "file", _md5(PAYLOAD), timeout=5, progress=False, max_bytes=5119)
    with pytest.raises(DownloadError, match="larger than the 1,048,577 bytes allowed for file: stopped after"):
        fetch(tricky_server + "endless", out / "file", "0" * 32, timeout=5, progress=False, max_bytes=(1 << 20) + 1)
    assert list(out.iterdir()) == []
    assert fetch(tricky_server + "payload", out / "file", _md5(PAYLOAD), timeout=5, progress=False,
                 max_bytes=5120).read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
        fetch(tricky_server + "payload", out / "other", _md5(PAYLOAD), progress=False, max_bytes=0)


def test_download_caps_each_file_a_little_above_its_known_size(tricky_server, tmp_path, monkeypatch):
    # the catalogue knows the file as 100,000 bytes; the server sends 16 MiB: stopped at size + 5% + 64 KiB
    source = catalog.Source(tricky_server + "endless", "test_32x32.mat", "0" * 32, size=100_000)
    assert source.max_bytes == 100_000 + 5_000 + 65_536
    monkeypatch.setitem(catalog.INFO, "svhn", dataclasses.replace(catalog.INFO["svhn"], sources=(source,)))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="larger than the 170,536 bytes allowed for test_32x32.mat"):
        download("svhn", root, timeout=5, progress=False)
    assert list((root / "svhn").iterdir()) == []
