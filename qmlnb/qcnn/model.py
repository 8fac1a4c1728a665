"""The hybrid QCNN: a small CNN, angles for a QCNN circuit, a classifier head.

    x (B, C, H, W) float
      -> CNN: adaptive average pool to 7x7, Conv(C->16, 3x3, stride 2) ReLU,
              flatten (B, 144)
      -> Linear(144 -> n_qubits), angles = pi * tanh(.)   (B, n_qubits)  == model.embed(x)
      -> QCNN circuit (qmlnb.qcnn.circuit; run by qmlnb.qcnn.simulators): RY angle
         encoding, log2(n) levels of convolution + pooling, <Z> of the last wire  (B, 1)
      -> Linear(1 -> n_classes)                                     (B, n_classes) logits

The angles are bounded to [-pi, pi] by ``pi * tanh``: RY(a) and RY(a + 2 pi)
differ only by a sign, so this range covers every encoded state once, and the
bound keeps the embedding (which the quantum kernel uses) on a fixed scale.
The CNN is deliberately small: images are averaged down to 7x7 before the one
convolution, so the classical part does not dominate the cost of a training
step (a convolution's backward pass on full-size images costs more than the
whole quantum layer).  It reaches 0.98-0.99 balanced accuracy on Fashion-MNIST
Dress vs Bag and about 0.90 on CIFAR-10 cat vs ship (docs/qcnn.md).

Controls (``head=``, see docs/controls.md): the same network with the quantum
layer (n_qubits angles -> 1 value) replaced by a classical layer of the same
input and output width, so that the same trainer and budget show what the
quantum layer adds:

    "quantum"         the QCNN circuit (trained)
    "frozen-quantum"  the QCNN circuit with its initial angles, never trained
    "linear"          Linear(n_qubits -> 1)
    "mlp"             Linear(n_qubits -> n_qubits), tanh, Linear(n_qubits -> 1)
    "cnn-linear"      no angles and no middle layer: CNN features (B, 144) -> Linear(144 -> n_classes)

The CNN's initial weights are the same for every head at a given seed (they
are drawn first), so runs of different heads pair up seed by seed.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._util import check_int, check_option
from .circuit import check_n_qubits, init_weights
from .simulators import check_simulator, make_quantum_layer

# what sits between the CNN and the classifier (module docstring); "quantum" is the QCNN itself
HEADS = ("quantum", "frozen-quantum", "linear", "mlp", "cnn-linear")
QUANTUM_HEADS = ("quantum", "frozen-quantum")


class HybridQCNN(nn.Module):
    """CNN -> n_qubits angles -> QCNN circuit -> linear classifier head.

    Parameters
    ----------
    image_shape : (C, H, W) of the input images (H, W >= 5).
    n_classes : number of classes (>= 2); logits have this width.
    n_qubits : wires of the QCNN circuit, a power of two >= 2.
    simulator : "torch" (fast batched state vectors, the default) or
        "pennylane" (``qml.qnn.TorchLayer`` on default.qubit, backprop).  Both
        have the same parameters: a state_dict of one loads into the other.
    seed : seeds the initial weights (identical for both simulators).
    head : one of ``HEADS`` (module docstring): the QCNN ("quantum", default)
        or a control that replaces its quantum layer.
    """

    def __init__(self, image_shape, n_classes: int = 2, n_qubits: int = 8, simulator: str = "torch",
                 seed: int = 0, head: str = "quantum"):
        super().__init__()
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1 or min(image_shape[1:]) < 5:
            raise ValueError(f"image_shape must be (C, H, W) with H, W >= 5, got {image_shape!r}")
        n_classes = check_int(n_classes, "n_classes", minimum=2)
        n_qubits = check_n_qubits(n_qubits)
        check_simulator(simulator)
        check_option(head, "head", HEADS)
        self.head_type = head
        self.image_shape, self.n_classes, self.n_qubits, self.simulator = image_shape, n_classes, n_qubits, simulator
        self.seed = seed

        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            # nn layers draw their initial weights from the global RNG: seed it
            # locally so that building a model never changes the caller's RNG
            torch.manual_seed(seed)
            # 7x7 average pool (any H, W >= 5), then a 3x3 stride-2 convolution: (B, 16, 3, 3)
            self.features = nn.Sequential(
                nn.AdaptiveAvgPool2d(7),
                nn.Conv2d(image_shape[0], 16, kernel_size=3, stride=2), nn.ReLU(),
                nn.Flatten(),
            )
            if head == "cnn-linear":
                # the CNN alone: no angles, no middle layer
                self.head = nn.Linear(16 * 9, n_classes)
                return
            self.to_angles = nn.Linear(16 * 9, n_qubits)
            self.head = nn.Linear(1, n_classes)
            if head in QUANTUM_HEADS:
                # TorchLayer draws (then we overwrite) its own initial weights: also inside fork_rng
                self.quantum = make_quantum_layer(n_qubits, simulator, init_weights(n_qubits, generator))
                if head == "frozen-quantum":
                    for p in self.quantum.parameters():
                        p.requires_grad_(False)
            elif head == "linear":
                self.classical = nn.Linear(n_qubits, 1)
            else:  # "mlp"
                self.classical = nn.Sequential(nn.Linear(n_qubits, n_qubits), nn.Tanh(), nn.Linear(n_qubits, 1))

    def check_input(self, x: torch.Tensor) -> None:
        """ValueError unless x is a (B, C, H, W) floating tensor of this model's image shape."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor of shape (B, {', '.join(map(str, self.image_shape))}), "
                            f"got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, self.image_shape))}) for this "
                             f"model, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"images must be floating point, got {x.dtype}")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, n_qubits) float angles in [-pi, pi] fed to the circuit."""
        if self.head_type == "cnn-linear":
            raise ValueError("the cnn-linear control has no angle embedding (its CNN features go straight to "
                             "the classifier); embed a model with another head")
        self.check_input(x)
        return math.pi * torch.tanh(self.to_angles(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, n_classes) logits."""
        if self.head_type == "cnn-linear":
            self.check_input(x)
            return self.head(self.features(x))
        angles = self.embed(x)
        middle = self.quantum if self.head_type in QUANTUM_HEADS else self.classical
        z = middle(angles).reshape(angles.shape[0], 1).to(angles.dtype)
        return self.head(z)

    def quantum_parameters(self) -> dict[str, nn.Parameter]:
        """The circuit's angles: {"conv": (L, 6), "pool": (L, 2)} (empty for a classical control)."""
        if self.head_type not in QUANTUM_HEADS:
            return {}
        return {"conv": self.quantum.conv, "pool": self.quantum.pool}

    def config(self) -> dict:
        """The constructor arguments (stored in checkpoints)."""
        return {"image_shape": list(self.image_shape), "n_classes": self.n_classes, "n_qubits": self.n_qubits,
                "simulator": self.simulator, "seed": self.seed, "head": self.head_type}
