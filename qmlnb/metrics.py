"""Classification scores: accuracy, F1, ROC AUC and balanced accuracy, and a degenerate-predictor flag.

Binary problems (labels 0 and 1) score F1 of class 1 and ROC AUC from 1-D
scores (a decision function or P(class 1)); multiclass problems score macro
F1 and one-vs-rest macro ROC AUC from an (N, k) score matrix. ``roc_auc`` is
NaN when no scores are given or when ``y_true`` holds a single class, because
the area under the ROC curve is undefined without both positives and negatives.
``degenerate`` is True when every prediction is the same class: such a model
has learnt nothing about the inputs, whatever its accuracy on an unbalanced set.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from ._util import check_int


def _check_label_vector(y, name: str) -> np.ndarray:
    """A 1-D int64 array of non-negative integer labels (torch tensors and lists accepted)."""
    if hasattr(y, "detach"):  # torch tensor: no torch import needed
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise ValueError(f"{name} must hold integer class labels, got non-integer values")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"{name} has negative labels ({y.min()}); labels must be 0..k-1")
    return y


def _scores(scores, n: int) -> np.ndarray:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores)
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    scores = scores.astype(np.float64)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-D (n_samples,) for binary or 2-D (n_samples, n_classes), got shape {scores.shape}")
    if scores.shape[0] != n:
        raise ValueError(f"scores has {scores.shape[0]} rows but y_true has {n} samples")
    if not np.isfinite(scores).all():
        raise ValueError("scores contains NaN or infinite values")
    return scores


def classification_metrics(y_true, y_pred, scores=None, *, n_classes: int | None = None) -> dict[str, float]:
    """Accuracy, F1, ROC AUC and balanced accuracy of a classifier's predictions.

    Parameters
    ----------
    y_true, y_pred : (N,) integer labels in 0..k-1.
    scores : None, (N,) float scores of class 1 (binary: decision function or
        P(class 1)), or (N, k) per-class scores/probabilities (a binary (N, 2)
        matrix uses its column 1). Higher means more likely.
    n_classes : k; default: the scores' width if 2-D, else the largest label + 1
        (at least 2).

    Returns
    -------
    dict with float ``accuracy``, ``f1`` (class 1 if k == 2, else macro over the
    k classes), ``roc_auc`` (NaN if scores is None or y_true has one class;
    multiclass: one-vs-rest AUC averaged over the classes present in y_true)
    and ``balanced_accuracy`` (mean recall over the classes present in y_true);
    bool ``degenerate``: every prediction is the same class.
    """
    y_true = _check_label_vector(y_true, "y_true")
    y_pred = _check_label_vector(y_pred, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} samples but y_pred has {len(y_pred)}")
    if scores is not None:
        scores = _scores(scores, len(y_true))
    largest = int(max(y_true.max(), y_pred.max()))
    if n_classes is None:
        n_classes = scores.shape[1] if scores is not None and scores.ndim == 2 else max(2, largest + 1)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    if largest >= n_classes:
        raise ValueError(f"labels must be in 0..{n_classes - 1}, found {largest}")
    if scores is not None:
        if scores.ndim == 1 and n_classes != 2:
            raise ValueError(f"1-D scores only fit a binary problem, but there are {n_classes} classes; "
                             f"pass an (N, {n_classes}) score matrix")
        if scores.ndim == 2 and scores.shape[1] != n_classes:
            raise ValueError(f"scores has {scores.shape[1]} columns but there are {n_classes} classes")

    labels = list(range(n_classes))
    binary = n_classes == 2
    f1 = f1_score(y_true, y_pred, labels=labels, average="binary" if binary else "macro", pos_label=1,
                  zero_division=0)
    present = np.unique(y_true)
    roc_auc = math.nan
    if scores is not None and len(present) > 1:
        if binary:
            roc_auc = roc_auc_score(y_true, scores if scores.ndim == 1 else scores[:, 1])
        else:
            # one-vs-rest per class present; unlike sklearn's multi_class="ovr" this
            # accepts decision functions, not only rows of probabilities summing to 1
            roc_auc = float(np.mean([roc_auc_score(y_true == c, scores[:, c]) for c in present]))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1),
        "roc_auc": float(roc_auc),
        "balanced_accuracy": float(_balanced_accuracy(y_true, y_pred)),
        "degenerate": bool(is_degenerate(y_pred)),
    }


def is_degenerate(y_pred) -> bool:
    """True when the (N,) predictions hold a single class (a constant predictor)."""
    y_pred = np.asarray(y_pred)
    return bool(y_pred.size > 0 and (y_pred == y_pred.flat[0]).all())


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes in y_true (sklearn's, without its warning on extra predicted classes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return balanced_accuracy_score(y_true, y_pred)
