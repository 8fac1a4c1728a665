"""Class selection, seeded stratified train/validation/test splits, normalisation."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._util import Interval, check_int, check_positive_int, is_int
from .catalog import DEFAULT_CLASSES, dataset_info
from .readers import Part, read_dataset

# ITU-R BT.601 luma weights for R, G, B
LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True, repr=False, eq=False)  # arrays have no single truth value to compare
class Splits:
    """A dataset cut into normalised train / validation / test arrays.

    ``X_*`` are float32 (N, C, H, W), normalised per channel with the training
    split's ``mean`` and ``std`` (float32, shape (C,)); ``y_*`` are int64 (N,)
    in 0..k-1, where label i is original class ``classes[i]``. ``index_*``
    (int64) are the rows' positions among the chosen classes' samples of the
    official part they were drawn from (see ``source``), for provenance.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    name: str
    image_shape: tuple[int, int, int]
    source: str
    mean: np.ndarray
    std: np.ndarray
    seed: int
    index_train: np.ndarray
    index_val: np.ndarray
    index_test: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Splits({self.name!r}, classes={self.classes} {self.class_names}, image_shape={self.image_shape}, "
                f"train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)}, seed={self.seed})")


# ------------------------------------------------------------- validation
def _check_fraction(value, name: str) -> float:
    return Interval(float, 0, 1, closed="neither")(value, name)


def _check_classes(classes) -> tuple[int, ...] | None:
    """The requested class ids as a tuple of ints (None = all classes)."""
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise ValueError(f"classes must be a sequence of class ids such as (3, 8), or None for all; got {classes!r}")
    ids = tuple(classes)
    for c in ids:
        if not is_int(c):
            raise ValueError(f"class ids must be integers, got {c!r} in {classes!r}")
    ids = tuple(int(c) for c in ids)
    if len(ids) < 2:
        raise ValueError(f"classes needs at least two class ids to classify, got {ids}")
    duplicates = sorted({c for c in ids if ids.count(c) > 1})
    if duplicates:
        raise ValueError(f"classes contains duplicates {duplicates}: {ids}")
    return ids


# --------------------------------------------------------------- splitting
def stratified_split(y: np.ndarray, n_take: int, rng: np.random.Generator, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (take, rest) with exactly ``n_take`` in ``take``, each class in proportion.

    Per-class counts are the proportional quotas rounded by largest remainder
    (ties to the lower class), so the total is exact. Every class must end up
    on both sides; otherwise a ValueError names the class. Both index arrays
    are sorted, i.e. keep the file's order.
    """
    labels, counts = np.unique(y, return_counts=True)
    quota = counts * (n_take / len(y))
    take_counts = np.floor(quota).astype(np.int64)
    short = n_take - int(take_counts.sum())
    order = np.argsort(-(quota - take_counts), kind="stable")
    take_counts[order[:short]] += 1
    for label, k, n in zip(labels, take_counts, counts):
        if k == 0 or k == n:
            empty = f"the {what}" if k == 0 else f"what remains after the {what}"
            raise ValueError(
                f"class {label} has {n} samples, too few to split {n_take} of {len(y)} off as the {what}: "
                f"{empty} would hold none of them. Use more data or other fractions/sizes."
            )
    take = [rng.permutation(np.flatnonzero(y == label))[:k] for label, k in zip(labels, take_counts)]
    take = np.sort(np.concatenate(take))
    rest = np.setdiff1d(np.arange(len(y)), take, assume_unique=True)
    return take, rest


def _select_classes(part: Part, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Images of the chosen classes and their labels remapped to 0..k-1 in the order of ``classes``."""
    lookup = np.full(max(max(classes), int(part.labels.max())) + 1, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    mapped = lookup[part.labels]
    keep = mapped >= 0
    return part.images[keep], mapped[keep]


def _to_float(images: np.ndarray, max_value: float, grayscale: bool) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 in [0, 1], optionally RGB -> luma (N, 1, H, W)."""
    X = images.astype(np.float32)
    X /= np.float32(max_value)  # in place: a CIFAR-10 training set is 600 MB as float32
    if grayscale and X.shape[1] == 3:
        X = np.einsum("nchw,c->nhw", X, LUMA_601)[:, None]
    return X


# -------------------------------------------------------------------- API
def load_splits(name: str = "digits", classes=DEFAULT_CLASSES, n_train: int | None = None,
                val_fraction: float = 0.2, test_fraction: float = 0.2, grayscale: bool = False,
                seed: int = 0, data_dir: str | os.PathLike | None = None) -> Splits:
    """Load dataset ``name`` and cut it into normalised, stratified, seeded splits.

    Parameters
    ----------
    name : one of ``DATASETS`` ("digits" is embedded and needs no files).
    classes : original class ids to keep, in the order that defines labels
        0..k-1 (default (3, 8)); None keeps every class present in the data.
    n_train : size of a stratified random subset of the training split
        (None = all of it). Validation and test do not depend on it.
    val_fraction : share of the training data held out for validation
        (of the official training files when they exist, else of all data).
    test_fraction : share of all data used as test set, only when the
        dataset has a single official part (digits, or only the test files on
        disk); with both official parts the official test files are the test set.
    grayscale : convert RGB to one channel with ITU-R 601 luma weights.
    seed : seeds every random choice; the same seed gives identical arrays.
    data_dir : folder holding ``fashion-mnist/``, ``cifar-10-batches-py/``,
        ``svhn/`` (default :func:`qmlnb.data.data_dir`, i.e. $QMLNB_DATA_DIR or the project's ``data/``).

    Returns
    -------
    Splits with float32 X_* (N, C, H, W) normalised by the training split's
    per-channel mean and std, and int64 y_* (N,).
    """
    info = dataset_info(name)
    wanted = _check_classes(classes)
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    n_train = check_positive_int(n_train, "n_train", none_ok=True)
    seed = check_int(seed, "seed", minimum=0)

    raw = read_dataset(name, Path(data_dir) if data_dir is not None else None)
    single = raw.train is None or raw.test is None
    if single and val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be below 1 when one part is split three ways, "
                         f"got {val_fraction} + {test_fraction}")
    present = np.unique(np.concatenate([p.labels for p in (raw.train, raw.test) if p is not None]))
    if wanted is None:
        wanted = tuple(int(c) for c in present)
        if len(wanted) < 2:
            raise ValueError(f"{name} data holds fewer than two classes ({list(wanted)}); nothing to classify")
    absent = [c for c in wanted if c not in present]
    if absent:
        raise ValueError(f"class ids {absent} are not in {name}; its data has classes "
                         f"{[int(c) for c in present]} ({', '.join(raw.class_names)})")

    ids = np.asarray(wanted)
    # separate streams so that e.g. n_train never changes which samples are val or test
    rng_test, rng_val, rng_subset = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    if single:
        part = raw.train if raw.train is not None else raw.test
        images, y = _select_classes(part, wanted)
        strata = ids[y]  # original class ids, so that an error names the class the user knows
        test_idx, rest = stratified_split(strata, round(test_fraction * len(y)), rng_test, "test split")
        val_pos, train_pos = stratified_split(strata[rest], round(val_fraction * len(y)), rng_val, "validation split")
        val_idx, train_idx = rest[val_pos], rest[train_pos]
        images_train = images_val = images_test = images
        y_train_all, y_val_all, y_test_all = y, y, y
        how = (f"one part only ({', '.join(part.files)}), split stratified into "
               f"train/val/test = {1 - val_fraction - test_fraction:.0%}/{val_fraction:.0%}/{test_fraction:.0%}")
    else:
        images_train, y_train_all = _select_classes(raw.train, wanted)
        untrained = [c for i, c in enumerate(wanted) if not (y_train_all == i).any()]
        if untrained:
            raise ValueError(f"class ids {untrained} have no samples in the official training files of {name} "
                             f"({', '.join(raw.train.files)})")
        images_test, y_test_all = _select_classes(raw.test, wanted)
        images_val, y_val_all = images_train, y_train_all
        val_idx, train_idx = stratified_split(ids[y_train_all], round(val_fraction * len(y_train_all)), rng_val,
                                              "validation split")
        test_idx = np.arange(len(y_test_all))
        how = (f"train/val from the official training files ({', '.join(raw.train.files)}), val stratified "
               f"{val_fraction:.0%}; test = the official test files ({', '.join(raw.test.files)}); "
               f"test_fraction unused")

    if n_train is not None:
        if n_train > len(train_idx):
            raise ValueError(f"n_train={n_train} is larger than the {len(train_idx)} training samples available "
                             f"for classes {wanted} of {name}")
        if n_train < len(wanted):
            raise ValueError(f"n_train={n_train} cannot hold one sample of each of the {len(wanted)} classes")
        if n_train < len(train_idx):
            sub, _ = stratified_split(ids[y_train_all[train_idx]], n_train, rng_subset, f"n_train={n_train} subset")
            train_idx = train_idx[sub]
        how += f"; training subset of {n_train} (stratified)"

    X_train = _to_float(images_train[train_idx], raw.max_value, grayscale)
    mean = X_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = X_train.std(axis=(0, 2, 3), dtype=np.float64)
    std[std == 0] = 1.0  # a constant channel carries no information; leave it centred, not divided by 0
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)

    def normalise(X: np.ndarray) -> np.ndarray:
        X -= mean32[None, :, None, None]
        X /= std32[None, :, None, None]
        return X

    X_train = normalise(X_train)
    X_val = normalise(_to_float(images_val[val_idx], raw.max_value, grayscale))
    X_test = normalise(_to_float(images_test[test_idx], raw.max_value, grayscale))
    return Splits(
        X_train=X_train, y_train=y_train_all[train_idx],
        X_val=X_val, y_val=y_val_all[val_idx],
        X_test=X_test, y_test=y_test_all[test_idx],
        classes=wanted, class_names=tuple(raw.class_names[c] for c in wanted), name=info.name,
        image_shape=tuple(int(d) for d in X_train.shape[1:]),
        source=f"{name} classes {wanted}{' grayscale' if grayscale else ''}, seed {seed}: {how}",
        mean=mean32, std=std32, seed=int(seed),
        index_train=train_idx, index_val=val_idx, index_test=test_idx,
    )
