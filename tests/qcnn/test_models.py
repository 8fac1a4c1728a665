"""HybridQCNN and its QCNN circuit: the fast simulator against PennyLane and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qmlnb.qcnn.model import HybridQCNN
from qmlnb.qcnn.circuit import conv_matrices, init_weights, levels, pool_matrices, readout_wire
from qmlnb.qcnn.simulators import SIMULATORS, TorchQCNN, apply_two_qubit, check_simulator, pennylane_qcnn

IMAGE = (1, 8, 8)


def dense_two_qubit(gate: np.ndarray, a: int, b: int, n: int) -> np.ndarray:
    """(2**n, 2**n) matrix of a 4x4 gate on wires (a, b), wire 0 most significant."""
    dim = 2**n
    out = np.zeros((dim, dim), dtype=complex)
    for col in range(dim):
        bits = [(col >> (n - 1 - w)) & 1 for w in range(n)]
        pair_in = 2 * bits[a] + bits[b]
        for pair_out in range(4):
            new = list(bits)
            new[a], new[b] = pair_out >> 1, pair_out & 1
            row = sum(bit << (n - 1 - w) for w, bit in enumerate(new))
            out[row, col] += gate[pair_out, pair_in]
    return out


def test_levels_halve_the_active_wires():
    conv0, pool0 = levels(8)[0]
    assert conv0 == [(0, 1), (2, 3), (4, 5), (6, 7), (1, 2), (3, 4), (5, 6)]
    assert pool0 == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert [len(pool) for _, pool in levels(8)] == [4, 2, 1]
    assert levels(8)[1][0] == [(1, 3), (5, 7), (3, 5)]
    assert readout_wire(8) == 7 and readout_wire(2) == 1


def test_gate_matrices_are_unitary():
    w = init_weights(8, torch.Generator().manual_seed(3), dtype=torch.float64)
    for mats in (conv_matrices(w["conv"]), pool_matrices(w["pool"])):
        eye = torch.eye(4, dtype=mats.dtype).expand_as(mats)
        torch.testing.assert_close(mats @ mats.conj().transpose(1, 2), eye, atol=1e-12, rtol=0)


@pytest.mark.parametrize("a,b", [(0, 1), (1, 3), (2, 3), (0, 3)])
def test_apply_two_qubit_matches_dense_matrix(a, b):
    n = 4
    rng = np.random.default_rng(0)
    gate = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    state = rng.normal(size=(3, 2**n)) + 1j * rng.normal(size=(3, 2**n))
    got = apply_two_qubit(torch.from_numpy(state), torch.from_numpy(gate), a, b, n).numpy()
    np.testing.assert_allclose(got, state @ dense_two_qubit(gate, a, b, n).T, atol=1e-12)


def test_two_qubit_circuit_with_zero_angles_is_closed_form():
    # zero angles: the convolution is CNOT(1, 0) CNOT(0, 1): |a b> -> |b, a xor b>,
    # the pooling is the identity, so <Z_1> = <Z_0 Z_1> of RY(x0)|0> RY(x1)|0> = cos x0 cos x1
    zeros = {"conv": torch.zeros(1, 6, dtype=torch.float64), "pool": torch.zeros(1, 2, dtype=torch.float64)}
    x = torch.tensor([[0.3, -1.2], [2.0, 0.5], [math.pi, 0.0]], dtype=torch.float64)
    expected = torch.cos(x[:, 0]) * torch.cos(x[:, 1])
    torch.testing.assert_close(TorchQCNN(2, zeros)(x), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(pennylane_qcnn(2, zeros)(x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n_qubits", [2, 4, 8, 16])
def test_density_matrix_levels_equal_the_plain_state_vector_simulation(n_qubits):
    layer = TorchQCNN(n_qubits, init_weights(n_qubits, torch.Generator().manual_seed(7), dtype=torch.float64))
    x = torch.rand(3, n_qubits, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) * 6 - 3
    torch.testing.assert_close(layer(x), layer.forward_statevector(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("n_qubits", [2, 4, 8])
def test_fast_simulator_matches_pennylane_outputs_and_gradients(n_qubits):
    fast = HybridQCNN(IMAGE, 2, n_qubits, "torch", seed=1).double()
    reference = HybridQCNN(IMAGE, 2, n_qubits, "pennylane", seed=1).double()
    x = torch.randn(6, *IMAGE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    outputs = []
    for model in (fast, reference):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        outputs.append((model(x).detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (out_fast, grad_fast), (out_ref, grad_ref) = outputs
    torch.testing.assert_close(out_fast, out_ref, atol=1e-6, rtol=0)
    assert grad_fast.keys() == grad_ref.keys()
    for name in grad_fast:
        torch.testing.assert_close(grad_fast[name], grad_ref[name], atol=1e-6, rtol=0, msg=name)
    assert grad_fast["quantum.conv"].abs().max() > 1e-4  # the quantum layer is not detached
    assert grad_fast["quantum.pool"].abs().max() > 1e-6


def test_state_dicts_load_across_simulators():
    fast = HybridQCNN(IMAGE, 3, 4, "torch", seed=5)
    reference = HybridQCNN(IMAGE, 3, 4, "pennylane", seed=9)
    assert fast.state_dict().keys() == reference.state_dict().keys()
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(4, *IMAGE)
    torch.testing.assert_close(reference(x), fast(x), atol=1e-5, rtol=0)
    # and back: the fast model takes a PennyLane model's weights and then computes what that model computes
    source = HybridQCNN(IMAGE, 3, 4, "pennylane", seed=11)
    before = fast(x)
    fast.load_state_dict(source.state_dict())
    for (name, p), q in zip(fast.state_dict().items(), source.state_dict().values()):
        assert torch.equal(p, q), name
    torch.testing.assert_close(fast(x), source(x), atol=1e-6, rtol=0)
    assert (fast(x) - before).abs().max() > 1e-3  # other weights, other outputs: the load changed the model


def test_same_seed_same_weights_and_no_global_rng_change():
    state = torch.get_rng_state()
    a, b = HybridQCNN(IMAGE, seed=4), HybridQCNN(IMAGE, seed=4, simulator="pennylane")
    assert torch.equal(torch.get_rng_state(), state)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.quantum.conv, HybridQCNN(IMAGE, seed=5).quantum.conv)


def test_embed_is_bounded_angles():
    model = HybridQCNN((3, 12, 10), n_classes=2, n_qubits=4)
    x = 50 * torch.randn(5, 3, 12, 10)
    angles = model.embed(x)
    assert angles.shape == (5, 4) and angles.dtype == torch.float32
    assert angles.abs().max() <= math.pi  # pi * tanh: in [-pi, pi] (tanh rounds to 1 in float32)
    assert model(x).shape == (5, 2)


@pytest.mark.parametrize("n_qubits", [0, 1, 3, 6, 12, 2.0, True])
def test_n_qubits_must_be_a_power_of_two(n_qubits):
    with pytest.raises(ValueError, match="power of two"):
        HybridQCNN(IMAGE, n_qubits=n_qubits)


def test_images_of_the_wrong_shape_are_refused():
    model = HybridQCNN(IMAGE, n_qubits=2)
    with pytest.raises(ValueError, match=r"shape \(B, 1, 8, 8\)"):
        model(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"shape \(B, 1, 8, 8\)"):
        model.embed(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.int64))


@pytest.mark.parametrize("kwargs,match", [
    ({"simulator": "qiskit"}, r"simulator must be one of \('torch', 'pennylane'\), got 'qiskit'"),
    ({"simulator": None}, "simulator must be one of"),
    ({"n_classes": 1}, "n_classes must be an integer >= 2, got 1"),
    ({"n_classes": True}, "n_classes must be an integer >= 2, got True"),
    ({"n_classes": 2.0}, "n_classes must be an integer >= 2, got 2.0"),
    ({"image_shape": (8, 8)}, "image_shape"),
    ({"image_shape": (1, 3, 3)}, "image_shape"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = {"image_shape": IMAGE, **kwargs}
    with pytest.raises(ValueError, match=match):
        HybridQCNN(**args)


def test_the_simulators_are_named_in_one_place():
    assert tuple(SIMULATORS) == ("torch", "pennylane")
    for name in SIMULATORS:
        assert check_simulator(name) == name
    with pytest.raises(ValueError, match="simulator must be one of"):
        check_simulator("qulacs")
