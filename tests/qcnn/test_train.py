"""train_qcnn: learning, checkpoints and resume, parallel modes, bad input."""
from __future__ import annotations

import builtins
import collections
import dataclasses
import os
import re

import numpy as np
import pytest
import torch

from qmlnb.data import load_splits
from qmlnb.qcnn.train import (CheckpointMismatchError, TrainConfig, available_cores, evaluate, load_checkpoint,
                              save_checkpoint, selection_key, train_qcnn)

# 8x8 digits, 3 vs 8: tiny, real, and embedded (no files needed)
TINY = dict(n_qubits=4, epochs=3, batch_size=16, threads=1, progress=False)
needs_two_cores = pytest.mark.skipif(available_cores() < 2, reason="parallel modes need 2 cores")


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", classes=(3, 8), seed=0)


@pytest.fixture(scope="module")
def small(digits):
    return load_splits("digits", classes=(3, 8), n_train=48, seed=0)


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_learns_digits_and_reports_test_metrics(digits):
    result = train_qcnn(digits, TrainConfig(n_qubits=4, epochs=6, batch_size=32, threads=1, progress=False))
    assert set(result.metrics) == {"accuracy", "f1", "roc_auc", "balanced_accuracy", "degenerate"}
    assert result.metrics["balanced_accuracy"] >= 0.85
    assert [h["epoch"] for h in result.history] == list(range(len(result.history)))
    assert {"train_loss", "val_f1", "lr", "seconds"} <= set(result.history[0])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.timings["total"] > 0 and len(result.timings["folds"]) == 1
    assert evaluate(result.model, digits.X_test, digits.y_test) == result.metrics
    emb = result.model.embed(torch.from_numpy(digits.X_test[:5]))
    assert emb.shape == (5, 4) and emb.dtype == torch.float32


def test_quantum_weights_get_gradients_and_change_in_training(small):
    result = train_qcnn(small, TrainConfig(**{**TINY, "epochs": 1, "patience": None}))
    from qmlnb.qcnn.train import build_model, fold_data

    initial = build_model(fold_data(small, result.config)[0], result.config)
    for name in ("conv", "pool"):
        before, after = getattr(initial.quantum, name), getattr(result.model.quantum, name)
        assert (before - after).abs().max() > 1e-4, name


def test_pennylane_simulator_trains_the_same_model(small):
    cfg = TrainConfig(**{**TINY, "epochs": 1, "patience": None})
    fast = train_qcnn(small, cfg)
    reference = train_qcnn(small, dataclasses.replace(cfg, simulator="pennylane"))
    assert reference.model.simulator == "pennylane"
    for (name, a), b in zip(fast.model.state_dict().items(), reference.model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)


def test_learning_rate_is_annealed(small):
    result = train_qcnn(small, TrainConfig(**{**TINY, "patience": None, "lr": 0.02}))
    lrs = [h["lr"] for h in result.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.02


def test_early_stopping_keeps_the_best_epoch(small, monkeypatch):
    from qmlnb.qcnn import train

    # scripted validation F1: the best epoch (3) is unique and neither the first nor the last; with patience 2
    # the dip at epoch 1 is forgiven by epoch 2's improvement, and training stops after epoch 5, before
    # epoch 6's higher score
    val_f1 = [0.2, 0.1, 0.5, 0.9, 0.6, 0.4, 0.95]
    weights = []  # the model's weights at each validation
    real_evaluate = train.evaluate

    def scripted_evaluate(model, X, y, batch_size=512):
        if not np.array_equal(X, small.X_val):
            return real_evaluate(model, X, y, batch_size)  # the test split: really scored
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        f1 = val_f1[len(weights) - 1]
        return {"accuracy": f1, "f1": f1, "roc_auc": f1, "balanced_accuracy": f1}

    monkeypatch.setattr(train, "evaluate", scripted_evaluate)
    result = train_qcnn(small, TrainConfig(**{**TINY, "epochs": 7, "patience": 2}))
    assert [h["val_f1"] for h in result.history] == val_f1[:6]
    assert result.fold_metrics[0]["best_epoch"] == 3 and result.fold_metrics[0]["val"]["f1"] == 0.9
    kept = result.model.state_dict()
    for epoch, state in enumerate(weights):  # the kept weights are epoch 3's, and only epoch 3's
        assert all(torch.equal(kept[k], state[k]) for k in kept) == (epoch == 3), epoch
    assert result.metrics == real_evaluate(result.model, small.X_test, small.y_test)


def test_early_stopping_never_keeps_a_constant_predictor(small, monkeypatch):
    from qmlnb.qcnn import train

    # epoch 0 predicts class 1 everywhere: F1 of class 1 = 0.667 beats epoch 1's 0.55, but its balanced
    # accuracy is chance; epoch 2 ties epoch 1 on balanced accuracy and is degenerate; epoch 3 ties
    # epoch 1 with a lower validation loss and wins
    scripted = [dict(f1=0.667, balanced_accuracy=0.5, degenerate=True, loss=0.60),
                dict(f1=0.55, balanced_accuracy=0.6, degenerate=False, loss=0.70),
                dict(f1=0.80, balanced_accuracy=0.6, degenerate=True, loss=0.10),
                dict(f1=0.50, balanced_accuracy=0.6, degenerate=False, loss=0.65),
                dict(f1=0.90, balanced_accuracy=0.5, degenerate=True, loss=0.05)]
    calls = {"evaluate": 0, "loss": 0}
    real_evaluate = train.evaluate

    def scripted_evaluate(model, X, y, batch_size=512):
        if not np.array_equal(X, small.X_val):
            return real_evaluate(model, X, y, batch_size)
        calls["evaluate"] += 1
        row = scripted[calls["evaluate"] - 1]
        return {"accuracy": row["balanced_accuracy"], "f1": row["f1"], "roc_auc": 0.5,
                "balanced_accuracy": row["balanced_accuracy"], "degenerate": row["degenerate"]}

    def scripted_loss(model, X, y, batch_size=512):
        calls["loss"] += 1
        return scripted[calls["loss"] - 1]["loss"]

    monkeypatch.setattr(train, "evaluate", scripted_evaluate)
    monkeypatch.setattr(train, "validation_loss", scripted_loss)
    result = train_qcnn(small, TrainConfig(**{**TINY, "epochs": 5, "patience": None}))
    assert result.fold_metrics[0]["best_epoch"] == 3
    assert result.fold_metrics[0]["val"]["loss"] == 0.65 and not result.fold_metrics[0]["val"]["degenerate"]
    assert [h["val_loss"] for h in result.history] == [row["loss"] for row in scripted]


def test_selection_key_ranks_balanced_accuracy_then_non_degenerate_then_loss():
    nan = float("nan")
    assert selection_key({"balanced_accuracy": 0.7, "loss": 9.0}) > selection_key({"balanced_accuracy": 0.6,
                                                                                    "loss": 0.1})
    assert selection_key({"balanced_accuracy": 0.5, "degenerate": False, "loss": 1.0}) > \
        selection_key({"balanced_accuracy": 0.5, "degenerate": True, "loss": 0.1})
    assert selection_key({"balanced_accuracy": 0.5, "loss": 0.3}) > selection_key({"balanced_accuracy": 0.5,
                                                                                   "loss": 0.4})
    assert selection_key({"balanced_accuracy": nan}) < selection_key({"balanced_accuracy": 0.0, "loss": nan})


def test_a_real_run_reports_validation_loss_and_degenerate_flags(small):
    result = train_qcnn(small, TrainConfig(**{**TINY, "epochs": 2, "patience": None}))
    assert all(np.isfinite(h["val_loss"]) and isinstance(h["val_degenerate"], bool) for h in result.history)
    best = result.history[result.fold_metrics[0]["best_epoch"]]
    assert selection_key({k[4:]: v for k, v in best.items() if k.startswith("val_")}) == max(
        selection_key({k[4:]: v for k, v in h.items() if k.startswith("val_")}) for h in result.history)
    assert isinstance(result.metrics["degenerate"], bool)


def test_resume_after_interruption_gives_the_same_model(small, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 4, "patience": None, "checkpoint_dir": str(tmp_path / "ck")})
    uninterrupted = train_qcnn(small, dataclasses.replace(cfg, checkpoint_dir=None))

    class Interrupt(Exception):
        pass

    def stop_after_epoch_1(record):
        if record["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_qcnn(small, cfg, on_epoch_end=stop_after_epoch_1)
    seen = []
    resumed = train_qcnn(small, cfg, on_epoch_end=lambda r: seen.append(r["epoch"]))
    assert seen == [2, 3]  # epochs 0 and 1 came from the checkpoint
    assert same_weights(resumed.model, uninterrupted.model)
    assert resumed.metrics == uninterrupted.metrics
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in uninterrupted.history]
    # a finished fold is not trained again
    again = train_qcnn(small, cfg, on_epoch_end=lambda r: pytest.fail("trained a finished fold"))
    assert same_weights(again.model, uninterrupted.model)


def test_checkpoint_from_another_configuration_is_refused(small, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1, "checkpoint_dir": str(tmp_path)})
    train_qcnn(small, cfg)
    with pytest.raises(CheckpointMismatchError, match="lr: checkpoint 0.01, now 0.02"):
        train_qcnn(small, dataclasses.replace(cfg, lr=0.02))
    other_data = load_splits("digits", classes=(3, 8), n_train=40, seed=0)
    with pytest.raises(CheckpointMismatchError, match="another configuration"):
        train_qcnn(other_data, cfg)
    (tmp_path / "fold0.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="cannot read checkpoint"):
        train_qcnn(small, cfg)


class RunsCode:
    """Pickles as a call of ``func(arg)``: what a crafted checkpoint would make torch.load(weights_only=False) do."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_checkpoint_that_would_run_code_is_refused(small, tmp_path, payload):
    marker = tmp_path / "marker"
    evil = (RunsCode(os.system, f"touch {marker}") if payload == "os.system"
            else RunsCode(builtins.eval, f"open({str(marker)!r}, 'w').close()"))
    torch.save({"fingerprint": {}, "model": evil}, tmp_path / "fold0.pt")
    cfg = TrainConfig(**{**TINY, "epochs": 1, "checkpoint_dir": str(tmp_path)})
    with pytest.raises(CheckpointMismatchError) as refused:
        train_qcnn(small, cfg)
    assert not marker.exists()  # the payload never ran
    assert re.search("cannot read checkpoint .*could run code.*(system|eval)", str(refused.value))


def test_save_checkpoint_stores_only_tensors_and_plain_values(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = tmp_path / "ck" / "fold0.pt"
    state = {"fingerprint": {"lr": 0.01, "image_shape": [1, 8, 8]},
             "arrays": {"weights": np.arange(6, dtype=np.float32).reshape(2, 3), "f1": np.float64(0.75)},
             "pair": (np.int64(3), "x"), "tensor": torch.ones(2),
             "model": collections.OrderedDict(w=torch.zeros(2))}
    state["model"]._metadata = {"": {"version": 1}}
    save_checkpoint(str(path), state)
    assert synced, "the checkpoint was not fsynced before its rename"
    loaded = torch.load(path, weights_only=True)  # the numpy values are no longer pickled objects
    assert torch.equal(loaded["arrays"]["weights"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert type(loaded["arrays"]["f1"]) is float and loaded["arrays"]["f1"] == 0.75
    assert loaded["pair"] == (3, "x") and type(loaded["pair"][0]) is int
    assert isinstance(loaded["model"], collections.OrderedDict) and loaded["model"]._metadata == {"": {"version": 1}}
    assert load_checkpoint(str(path), {"lr": 0.01})["fingerprint"]["image_shape"] == [1, 8, 8]
    # anything that is not a tensor, number, string or plain container is refused at the save,
    # and the previous checkpoint is left as it was, with no temporary file beside it
    with pytest.raises(TypeError, match=r"cannot checkpoint state\['progress'\]\['rng'\]: a Generator"):
        save_checkpoint(str(path), {"fingerprint": {}, "progress": {"rng": torch.Generator()}})
    assert sorted(p.name for p in path.parent.iterdir()) == ["fold0.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["tensor"], torch.ones(2))


def test_k_fold_reports_every_fold(small):
    result = train_qcnn(small, TrainConfig(**{**TINY, "epochs": 1, "folds": 3}))
    assert [m["fold"] for m in result.fold_metrics] == [0, 1, 2]
    assert result.best_fold == max(range(3), key=lambda k: (selection_key(result.fold_metrics[k]["val"]), -k))
    assert result.metrics == result.fold_metrics[result.best_fold]["test"]
    assert sorted({h["fold"] for h in result.history}) == [0, 1, 2]


@needs_two_cores
def test_fold_parallel_is_identical_to_sequential(small):
    cfg = TrainConfig(**{**TINY, "epochs": 2, "folds": 2})
    sequential = train_qcnn(small, cfg)
    parallel = train_qcnn(small, dataclasses.replace(cfg, mode="fold-parallel", workers=2))
    assert same_weights(parallel.model, sequential.model)
    assert parallel.fold_metrics == sequential.fold_metrics
    assert [h["train_loss"] for h in parallel.history] == [h["train_loss"] for h in sequential.history]


@needs_two_cores
def test_data_parallel_matches_sequential_within_tolerance(small):
    cfg = TrainConfig(**{**TINY, "epochs": 1, "patience": None})
    sequential = train_qcnn(small, cfg)
    distributed = train_qcnn(small, dataclasses.replace(cfg, mode="data-parallel", workers=2))
    # same steps; only the order of floating-point additions differs
    for (name, a), b in zip(sequential.model.state_dict().items(), distributed.model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)
    np.testing.assert_allclose([h["train_loss"] for h in distributed.history],
                               [h["train_loss"] for h in sequential.history], rtol=1e-5)


@needs_two_cores
def test_data_parallel_checkpoint_resumes_and_is_not_taken_for_sequential(small, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1, "mode": "data-parallel", "workers": 2,
                         "checkpoint_dir": str(tmp_path)})
    first = train_qcnn(small, cfg)
    assert (tmp_path / "fold0.pt").exists()
    again = train_qcnn(small, cfg)  # the fold is complete: loaded, not retrained
    assert same_weights(again.model, first.model) and again.history == first.history
    with pytest.raises(CheckpointMismatchError, match="data_parallel_world: checkpoint 2, now 1"):
        train_qcnn(small, dataclasses.replace(cfg, mode="sequential"))


def test_multiclass_training_scores_macro_metrics():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    splits = load_splits("digits", classes=(0, 1, 2), n_train=60, seed=0)
    result = train_qcnn(splits, TrainConfig(**{**TINY, "epochs": 2}))
    assert result.model.n_classes == 3
    with torch.no_grad():  # the kept model's own predictions on the test split
        probs = torch.softmax(result.model(torch.from_numpy(splits.X_test)), dim=1).numpy()
    assert probs.shape == (len(splits.y_test), 3)
    y, pred = splits.y_test, probs.argmax(axis=1)
    expected = {"accuracy": accuracy_score(y, pred), "f1": f1_score(y, pred, average="macro", labels=[0, 1, 2]),
                "roc_auc": roc_auc_score(y, probs, multi_class="ovr", average="macro"),
                "balanced_accuracy": balanced_accuracy_score(y, pred), "degenerate": len(set(pred)) == 1}
    assert result.metrics == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"n_qubits": 6}, "power of two"),
    ({"mode": "async"}, "mode must be one of"),
    ({"simulator": "qulacs"}, "simulator must be one of"),
    ({"patience": 0}, "patience"),
    ({"lr": -1.0}, "lr must be"),
    ({"epochs": 0}, "epochs must be a positive int"),
    ({"threads": True}, "threads must be a positive integer or None"),
    ({"patience": 1.5}, "patience must be a positive integer or None"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_batch_larger_than_the_training_data_is_refused(small):
    with pytest.raises(ValueError, match="larger than the training data"):
        train_qcnn(small, TrainConfig(**{**TINY, "batch_size": 49}))
    with pytest.raises(ValueError, match="smallest fold"):
        train_qcnn(small, TrainConfig(**{**TINY, "batch_size": 60, "folds": 2}))  # 119 samples: folds of 59 and 60


def test_labels_outside_the_classes_are_refused(small):
    y = small.y_train.copy()
    y[3] = 2
    with pytest.raises(ValueError, match=r"y_train has labels \[2\] outside 0..1"):
        train_qcnn(dataclasses.replace(small, y_train=y), TrainConfig(**TINY))
    model = HybridQCNN_from(small)
    with pytest.raises(ValueError, match="outside 0..1"):
        evaluate(model, small.X_test, small.y_test - 1)


def test_images_of_the_wrong_shape_are_refused(small):
    wrong = dataclasses.replace(small, X_val=np.zeros((len(small.y_val), 1, 7, 8), np.float32))
    with pytest.raises(ValueError, match=r"X_val must have shape \(N, 1, 8, 8\)"):
        train_qcnn(wrong, TrainConfig(**TINY))
    with pytest.raises(ValueError, match=r"X must have shape \(N, 1, 8, 8\)"):
        evaluate(HybridQCNN_from(small), np.zeros((3, 3, 8, 8), np.float32), [0, 1, 0])


def test_oversubscribing_the_cores_is_refused(small):
    cores = available_cores()
    with pytest.raises(ValueError, match="cores"):
        train_qcnn(small, TrainConfig(**{**TINY, "mode": "data-parallel", "workers": cores + 1}))
    with pytest.raises(ValueError, match="exceeds the"):
        train_qcnn(small, TrainConfig(**{**TINY, "threads": cores + 1}))


def test_callbacks_only_in_sequential_mode(small):
    with pytest.raises(ValueError, match="on_epoch_end"):
        train_qcnn(small, TrainConfig(**{**TINY, "mode": "fold-parallel", "folds": 2, "workers": 1}),
                   on_epoch_end=print)


def HybridQCNN_from(splits):
    from qmlnb.qcnn.model import HybridQCNN

    return HybridQCNN(splits.image_shape, len(splits.classes), n_qubits=4)


def test_training_settings_hold_for_the_block_and_are_restored_after():
    from qmlnb.qcnn.determinism import training_settings

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    # a caller with strict determinism (not warn-only) and 2 threads must get exactly that back
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True, warn_only=False)
    try:
        with training_settings(1):
            assert torch.get_num_threads() == 1
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.get_num_threads() == 2
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
            with training_settings(0):
                pass
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
