"""qmlnb.metrics.classification_metrics against hand-computed values and sklearn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from qmlnb.metrics import classification_metrics


def test_binary_closed_form():
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 1, 1, 0]
    scores = [0.1, 0.2, 0.3, 0.8, 0.9, 0.25]
    m = classification_metrics(y_true, y_pred, scores)
    assert set(m) == {"accuracy", "f1", "roc_auc", "balanced_accuracy", "degenerate"}
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 1: TP = 1, FP = 1, FN = 1 -> precision = recall = 1/2 -> F1 = 1/2
    assert m["f1"] == pytest.approx(0.5)
    # recalls 3/4 and 1/2
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    # positive/negative pairs ranked right: 0.9 beats all 4 negatives, 0.25 beats 0.1 and 0.2 -> 6 of 8
    assert m["roc_auc"] == pytest.approx(6 / 8)
    assert m["degenerate"] is False


def test_a_constant_predictor_is_flagged_degenerate():
    y_true = [0, 1, 1, 1, 0, 1]
    m = classification_metrics(y_true, [1] * 6, [0.7] * 6)
    assert m["degenerate"] is True and m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.8)  # F1 of class 1 rewards it: why model selection must not use it
    assert classification_metrics([0, 1, 2], [2, 2, 2], n_classes=3)["degenerate"] is True
    assert classification_metrics([0, 1, 2], [2, 1, 2], n_classes=3)["degenerate"] is False


def test_binary_probability_matrix_and_decision_function_agree():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    decision = y + rng.normal(0, 0.8, 200)
    p1 = 1 / (1 + np.exp(-decision))
    pred = (decision > 0.5).astype(int)
    a = classification_metrics(y, pred, decision)
    b = classification_metrics(y, pred, np.column_stack([1 - p1, p1]))
    assert a == pytest.approx(b)
    assert a["roc_auc"] == pytest.approx(roc_auc_score(y, decision))


def test_multiclass_matches_sklearn_macro():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 2 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    m = classification_metrics(y, pred, proba)
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    # raw decision scores (rows not summing to 1) give the same one-vs-rest AUC as their softmax
    # only if each column is ranked the same; logits shifted per column keep every column's ranking
    assert classification_metrics(y, pred, logits + [0, 5, -3, 1])["roc_auc"] == pytest.approx(
        np.mean([roc_auc_score(y == c, logits[:, c]) for c in range(4)]))


def test_roc_auc_is_nan_without_scores_or_with_one_class():
    assert math.isnan(classification_metrics([0, 1, 1], [0, 1, 0])["roc_auc"])
    m = classification_metrics([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.8])
    assert math.isnan(m["roc_auc"]) and m["accuracy"] == pytest.approx(2 / 3)


def test_multiclass_f1_counts_every_class_and_torch_inputs():
    # class 2 is never predicted: its F1 of 0 pulls the macro mean down (no silent dropping)
    y_true = torch.tensor([0, 1, 2, 2])
    y_pred = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(y_true, y_pred, torch.eye(3)[y_pred], n_classes=3)
    # F1: class 0 = 1; class 1: precision 1/3, recall 1 -> 1/2; class 2 = 0
    assert m["f1"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0) / 3)


@pytest.mark.parametrize("args, kwargs, message", [
    (([0, 1], [0, 1, 1]), {}, "y_true has 2 samples but y_pred has 3"),
    (([[0, 1]], [0, 1]), {}, r"y_true must be 1-D \(n_samples,\)"),
    (([], []), {}, "y_true is empty"),
    (([0, 1], ["a", "b"]), {}, "y_pred must hold integer class labels"),
    (([0, 1.5], [0, 1]), {}, "non-integer values"),
    (([0, -1], [0, 1]), {}, "negative labels"),
    (([0, 1], [0, 1], [0.2]), {}, "scores has 1 rows but y_true has 2 samples"),
    (([0, 1], [0, 1], [0.2, np.nan]), {}, "NaN or infinite"),
    (([0, 1, 2], [0, 1, 2], [0.1, 0.2, 0.3]), {}, "1-D scores only fit a binary problem"),
    (([0, 1, 2], [0, 1, 2], np.eye(4)[:3]), {"n_classes": 3}, "scores has 4 columns but there are 3 classes"),
    (([0, 1, 3], [0, 1, 2]), {"n_classes": 3}, r"labels must be in 0..2, found 3"),
    (([0, 1], [0, 1]), {"n_classes": 1}, "n_classes must be an integer >= 2"),
    (([0, 1], [0, 1], np.zeros((2, 2, 1))), {}, "scores must be 1-D"),
])
def test_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(*args, **kwargs)
