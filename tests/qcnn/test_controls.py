"""QCNN controls: heads that replace the quantum layer, trained with the same trainer and budget."""
from __future__ import annotations

import math

import pytest
import torch

from qmlnb.data import load_splits
from qmlnb.qcnn.controls import n_trainable, train_controls
from qmlnb.qcnn.model import HEADS, HybridQCNN
from qmlnb.qcnn.train import TrainConfig, train_qcnn

TINY = dict(n_qubits=4, epochs=2, batch_size=16, threads=1, progress=False, patience=None)


@pytest.fixture(scope="module")
def small():
    return load_splits("digits", classes=(3, 8), n_train=48, seed=0)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_gives_logits_and_shares_the_cnn_initialisation(head):
    model = HybridQCNN((1, 8, 8), 3, n_qubits=4, seed=5, head=head)
    reference = HybridQCNN((1, 8, 8), 3, n_qubits=4, seed=5)
    x = torch.randn(6, 1, 8, 8)
    assert model(x).shape == (6, 3)
    assert model.config()["head"] == head
    for (name, a), b in zip(model.features.state_dict().items(), reference.features.state_dict().values()):
        assert torch.equal(a, b), name  # pairs up seed by seed with the QCNN
    if head != "cnn-linear":
        assert torch.equal(model.to_angles.weight, reference.to_angles.weight)


def test_middle_layers_have_the_quantum_layers_width():
    linear = HybridQCNN((1, 8, 8), 2, n_qubits=8, head="linear")
    assert linear.classical.in_features == 8 and linear.classical.out_features == 1
    assert linear.quantum_parameters() == {} and not hasattr(linear, "quantum")
    mlp = HybridQCNN((1, 8, 8), 2, n_qubits=8, head="mlp")
    assert mlp.classical[0].in_features == 8 and mlp.classical[-1].out_features == 1
    quantum = HybridQCNN((1, 8, 8), 2, n_qubits=8)
    frozen = HybridQCNN((1, 8, 8), 2, n_qubits=8, head="frozen-quantum")
    assert n_trainable(quantum) - n_trainable(frozen) == 24  # 3 levels x (6 conv + 2 pool) angles
    assert n_trainable(quantum) - n_trainable(linear) == 24 - 9
    with pytest.raises(ValueError, match="no angle embedding"):
        HybridQCNN((1, 8, 8), 2, n_qubits=8, head="cnn-linear").embed(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="head must be one of"):
        HybridQCNN((1, 8, 8), 2, head="classical")
    with pytest.raises(ValueError, match="head must be one of"):
        TrainConfig(head="classical")


def test_frozen_quantum_weights_stay_at_their_initial_values(small):
    cfg = TrainConfig(**TINY, head="frozen-quantum", weight_decay=0.01)
    result = train_qcnn(small, cfg)
    initial = HybridQCNN(small.image_shape, 2, 4, seed=0, head="frozen-quantum")
    for name, value in result.model.quantum_parameters().items():
        assert torch.equal(value, initial.quantum_parameters()[name]), name
    assert not torch.equal(result.model.to_angles.weight, initial.to_angles.weight)


def test_train_controls_compares_every_head_with_the_qcnn_seed_by_seed(small):
    seen = []
    out = train_controls(small, TrainConfig(**TINY), heads=("quantum", "linear", "cnn-linear"), seeds=(0, 1),
                         on_run=seen.append)
    assert [(r["seed"], r["head"]) for r in seen] == [(s, h) for s in (0, 1) for h in ("quantum", "linear",
                                                                                         "cnn-linear")]
    summary = out["summary"]
    assert set(summary) == {"quantum", "linear", "cnn-linear"}
    for head in ("linear", "cnn-linear"):
        diff = summary[head]["reference_minus_model"]
        assert diff["n"] == 2 and diff["wins"] + diff["losses"] + diff["ties"] == 2
        expected = [q - c for q, c in zip(summary["quantum"]["scores"], summary[head]["scores"])]
        assert math.isclose(diff["mean_difference"], sum(expected) / 2)
    assert all(0 <= r["metrics"]["balanced_accuracy"] <= 1 for r in out["runs"]["linear"])
    # a run is the same as a plain train_qcnn with that head and seed
    alone = train_qcnn(small, TrainConfig(**TINY, head="linear", seed=1))
    assert out["runs"]["linear"][1]["metrics"] == alone.metrics
    assert set(out["degenerate_runs"]) == set(summary)


@pytest.mark.parametrize("kwargs, match", [
    (dict(heads=("linear",)), "must include 'quantum'"),
    (dict(heads=("quantum", "svm")), "unknown heads"),
    (dict(seeds=()), "seeds"),
    (dict(seeds=(1, 1)), "distinct"),
])
def test_train_controls_refuses_bad_arguments(small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_controls(small, TrainConfig(**TINY), **kwargs)


def test_bench_qcnn_controls_section(tmp_path, monkeypatch):
    import json

    from qmlnb.bench import results
    from qmlnb.cli import main

    monkeypatch.setattr(results, "git_commit", lambda: {"commit": "abc", "dirty": False})
    out = tmp_path / "qcnn.json"
    assert main(["bench", "qcnn", "--sections", "controls", "--datasets", "digits", "--classes", "3,8",
                 "--n-train", "48", "--seeds", "0,1", "--heads", "quantum,linear", "--epochs", "1", "--n-qubits", "4",
                 "--batch-size", "16",
                 "--json", str(out)]) == 0
    task = json.loads(out.read_text())["controls"][0]
    assert task["seeds"] == [0, 1] and task["heads"] == ["quantum", "linear"] and task["n_train"] == 48
    diff = task["summary"]["linear"]["reference_minus_model"]
    assert diff["n"] == 2 and diff["confidence"] == 0.95
    with pytest.raises(SystemExit, match="--heads"):
        main(["bench", "qcnn", "--sections", "controls", "--heads", "linear,mlp"])
