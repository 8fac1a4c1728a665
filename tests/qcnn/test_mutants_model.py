"""HybridQCNN's constructor, heads and checks at their edges: the cases a mutmut run over qcnn/model.py showed
no other test pins (defaults, the smallest images, every head's layers and outputs, exact messages, config)."""
from __future__ import annotations

import math

import pytest
import torch

from qmlnb.qcnn.model import HEADS, HybridQCNN

IMAGE = (1, 8, 8)


def test_defaults_are_the_quantum_head_at_seed_zero():
    model = HybridQCNN(IMAGE, n_qubits=2)
    assert model.config() == {"image_shape": [1, 8, 8], "n_classes": 2, "n_qubits": 2, "simulator": "torch",
                              "seed": 0, "head": "quantum"}
    same = HybridQCNN(IMAGE, n_qubits=2, seed=0)
    for (name, a), b in zip(model.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), name
    assert set(model.quantum_parameters()) == {"conv", "pool"}
    assert all(p.requires_grad for p in model.quantum_parameters().values())


def test_default_width_is_eight_qubits():
    model = HybridQCNN(IMAGE)
    assert model.n_qubits == 8 and model.embed(torch.randn(2, *IMAGE)).shape == (2, 8)


def test_circuit_angles_at_a_seed_do_not_depend_on_the_cnn_in_front():
    # the circuit's initial angles come from their own seeded generator, not from what the CNN layers drew
    # before them, so runs on images of different shapes start from the same circuit
    a = HybridQCNN((1, 8, 8), n_qubits=4, seed=3).quantum_parameters()
    b = HybridQCNN((3, 12, 10), n_classes=5, n_qubits=4, seed=3).quantum_parameters()
    assert all(torch.equal(a[name], b[name]) for name in ("conv", "pool"))
    assert not torch.equal(a["conv"], HybridQCNN((1, 8, 8), n_qubits=4, seed=4).quantum_parameters()["conv"])


def test_the_smallest_images_and_the_image_shape_checks():
    for shape in [(1, 5, 5), (3, 5, 9)]:
        model = HybridQCNN(shape, n_qubits=2)
        assert model(torch.randn(2, *shape)).shape == (2, 2)
    for shape in [(1, 4, 8), (1, 8, 4), (0, 8, 8), (1, 8), (1, 1, 8, 8)]:
        with pytest.raises(ValueError, match=r"^image_shape must be \(C, H, W\) with H, W >= 5, got"):
            HybridQCNN(shape, n_qubits=2)
    assert HybridQCNN([3, 6, 7], n_qubits=2).image_shape == (3, 6, 7)  # any sequence of ints


@pytest.mark.parametrize("head", HEADS)
def test_every_head_has_its_documented_layers(head):
    model = HybridQCNN((2, 9, 7), n_classes=3, n_qubits=4, seed=1, head=head)
    conv = model.features[1]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (2, 16, (3, 3), (2, 2))
    assert isinstance(model.features[0], torch.nn.AdaptiveAvgPool2d) and model.features[0].output_size == 7
    assert isinstance(model.features[2], torch.nn.ReLU)
    if head == "cnn-linear":
        assert (model.head.in_features, model.head.out_features) == (144, 3)
        assert not hasattr(model, "to_angles")
        return
    assert (model.to_angles.in_features, model.to_angles.out_features) == (144, 4)
    assert (model.head.in_features, model.head.out_features) == (1, 3)
    if head == "linear":
        assert isinstance(model.classical, torch.nn.Linear)
        assert (model.classical.in_features, model.classical.out_features) == (4, 1)
    if head == "mlp":
        first, act, last = model.classical
        assert (first.in_features, first.out_features, last.in_features, last.out_features) == (4, 4, 4, 1)
        assert isinstance(act, torch.nn.Tanh)
    frozen = head == "frozen-quantum"
    for p in model.quantum_parameters().values():
        assert p.requires_grad is not frozen


@pytest.mark.parametrize("head", HEADS)
def test_every_head_maps_a_batch_to_logits_through_its_layers(head):
    torch.manual_seed(0)
    model = HybridQCNN(IMAGE, n_classes=3, n_qubits=4, seed=2, head=head)
    x = torch.randn(5, *IMAGE)
    logits = model(x)
    assert logits.shape == (5, 3) and logits.dtype == torch.float32
    features = model.features(x)
    if head == "cnn-linear":
        assert torch.allclose(logits, model.head(features))
        return
    angles = math.pi * torch.tanh(model.to_angles(features))
    assert torch.allclose(model.embed(x), angles)
    middle = model.quantum if head in ("quantum", "frozen-quantum") else model.classical
    assert torch.allclose(logits, model.head(middle(angles).reshape(5, 1)), atol=1e-6)
    assert model(x[:1]).shape == (1, 3)  # a batch of one keeps its batch axis


def test_input_checks_say_what_was_expected_and_what_came():
    model = HybridQCNN(IMAGE, n_qubits=2)
    with pytest.raises(TypeError, match=r"^expected a torch.Tensor of shape \(B, 1, 8, 8\), got list$"):
        model([[0.0]])
    with pytest.raises(ValueError, match=r"^images must have shape \(B, 1, 8, 8\) for this model, got \(2, 1, 8, 7\)$"):
        model(torch.zeros(2, 1, 8, 7))
    with pytest.raises(ValueError, match=r"^images must be floating point, got torch.int64$"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.int64))
    cnn = HybridQCNN(IMAGE, n_qubits=2, head="cnn-linear")
    with pytest.raises(ValueError, match="^images must have shape"):
        cnn(torch.zeros(2, 1, 8, 7))
    with pytest.raises(ValueError, match=r"^the cnn-linear control has no angle embedding \(its CNN features go "
                                         r"straight to the classifier\); embed a model with another head$"):
        cnn.embed(torch.zeros(2, 1, 8, 8))


def test_constructor_messages_name_the_argument():
    with pytest.raises(ValueError, match=r"^n_classes must be an integer >= 2"):
        HybridQCNN(IMAGE, n_classes=1, n_qubits=2)
    with pytest.raises(ValueError, match=r"^head must be one of \('quantum', 'frozen-quantum', 'linear', 'mlp', "
                                         r"'cnn-linear'\), got 'Quantum'$"):
        HybridQCNN(IMAGE, n_qubits=2, head="Quantum")


def test_pennylane_layer_output_is_cast_to_the_models_dtype():
    pytest.importorskip("pennylane", reason="the pennylane simulator needs PennyLane")
    model = HybridQCNN(IMAGE, n_qubits=2, simulator="pennylane")
    assert model(torch.randn(2, *IMAGE)).dtype == torch.float32


def test_a_double_precision_model_gives_double_logits():
    for head in ("quantum", "linear"):
        model = HybridQCNN(IMAGE, n_qubits=2, head=head).double()
        assert model(torch.randn(3, *IMAGE, dtype=torch.float64)).dtype == torch.float64
