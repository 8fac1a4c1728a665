"""Training speed of the fast torch simulator against PennyLane's ``TorchLayer``: the same model, step, data.

:func:`compare_simulators` builds :class:`~qmlnb.qcnn.model.HybridQCNN` twice
from the same seed, once with ``simulator="torch"`` and once with
``simulator="pennylane"`` (the same circuit as a ``qml.qnn.TorchLayer`` on
``default.qubit`` with backprop), each with the training run's optimiser
(:func:`~qmlnb.qcnn.train.make_optimizer`), and times the step ``train_qcnn``
takes (:func:`~qmlnb.qcnn.train.training_step`: forward, cross-entropy,
backward, Adam) on one batch, with :func:`qmlnb.timing.interleaved`: a warm-up
block each, then rounds torch, PennyLane, torch, PennyLane, ...

A timed call is a block of ``steps`` (torch) or ``pennylane_steps``
(PennyLane) steps, so both blocks take comparable time although PennyLane's
step is far slower; per-step seconds are a block's over its steps, and the
per-round ratios are rescaled to per-step ratios.  Optionally the quantum
layer alone (forward + backward of given angles) is timed in the same rounds.

``python -m qmlnb bench qcnn`` (its ``simulator`` section) and the lab's
``qcnn_run`` task (``compare_simulator="torchlayer"``) both call it.
"""
from __future__ import annotations

import torch

from .. import timing
from .model import QUANTUM_HEADS, HybridQCNN
from .simulators import SIMULATORS  # the simulators compared, in the order timed: torch first, then PennyLane
from .train import TrainConfig, make_optimizer, training_step

ROUND_KEYS = ("median", "q1", "q3", "iqr")


def compare_simulators(images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, *, n_classes: int = 2,
                       steps: int = 20, pennylane_steps: int = 2, rounds: int = 5, min_time: float = 0.2,
                       angles: torch.Tensor | None = None) -> dict:
    """Training samples per second of both simulators, timed in the same interleaved rounds.

    Parameters
    ----------
    images : (B, C, H, W) float32 tensor, one training batch (B is the batch size of the step).
    labels : (B,) int64 class indices in [0, n_classes).
    cfg : TrainConfig
        ``n_qubits``, ``seed``, ``head`` (one with a quantum layer), ``lr`` and
        ``weight_decay`` (the optimiser) of the model; ``simulator`` is ignored.
    steps, pennylane_steps : training steps per timed block of each simulator.
    rounds, min_time : at least ``rounds`` rounds and ``min_time`` seconds of
        timed blocks (:func:`qmlnb.timing.interleaved`).
    angles : optional (B', n_qubits) float tensor with ``requires_grad``: also
        time the quantum layer alone, forward + backward, per step.

    Returns
    -------
    dict of plain JSON values: for each of ``torch`` and ``pennylane``:
    ``steps_per_call``, ``train_step_s`` (median block over its steps),
    ``train_samples_per_s`` (B over it), ``timing`` ({"train": Timing dict,
    and "layer" with ``angles``}) and, with ``angles``,
    ``quantum_layer_fwd_bwd_s``; ``speedup_train`` (torch's samples/s over
    PennyLane's) with ``speedup_train_rounds`` (median, q1, q3, iqr of the
    per-round per-step ratios); likewise ``speedup_quantum_layer`` with
    ``angles``; ``noisy`` if any timed block was.
    """
    if cfg.head not in QUANTUM_HEADS:
        raise ValueError(f"compare_simulators times the quantum layer: head must be one of {QUANTUM_HEADS}, "
                         f"got {cfg.head!r}")
    if images.ndim != 4 or len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"images must be (B, C, H, W) and labels (B,) with B > 0; got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    batch = len(labels)
    n_steps = {"torch": steps, "pennylane": pennylane_steps}
    blocks = {}
    for simulator in SIMULATORS:
        model = HybridQCNN(tuple(images.shape[1:]), n_classes, cfg.n_qubits, simulator, seed=cfg.seed, head=cfg.head)
        optimizer = make_optimizer(model, cfg)

        def train_block(model=model, optimizer=optimizer, k=n_steps[simulator]):  # train_qcnn's step, k times
            for _ in range(k):
                training_step(model, optimizer, images, labels, batch)

        blocks[f"{simulator}_train"] = train_block
        if angles is not None:
            def layer_block(model=model, k=n_steps[simulator]):
                for _ in range(k):
                    model.quantum(angles).sum().backward()

            blocks[f"{simulator}_layer"] = layer_block
    timed = timing.interleaved(blocks, min_rounds=rounds, min_time=min_time)
    out = {}
    for simulator in SIMULATORS:
        k = n_steps[simulator]
        step = timed[f"{simulator}_train"].median / k
        out[simulator] = {"steps_per_call": k, "train_step_s": step, "train_samples_per_s": batch / step,
                          "timing": {"train": timed[f"{simulator}_train"].as_dict()}}
        if angles is not None:
            out[simulator]["quantum_layer_fwd_bwd_s"] = timed[f"{simulator}_layer"].median / k
            out[simulator]["timing"]["layer"] = timed[f"{simulator}_layer"].as_dict()
    per_step = steps / pennylane_steps  # block ratios -> per-step ratios
    parts = ("train", "layer") if angles is not None else ("train",)
    for part in parts:
        name = "train" if part == "train" else "quantum_layer"
        r = timing.ratio(timed[f"pennylane_{part}"], timed[f"torch_{part}"])
        key = "train_step_s" if part == "train" else "quantum_layer_fwd_bwd_s"
        out[f"speedup_{name}"] = out["pennylane"][key] / out["torch"][key]
        out[f"speedup_{name}_rounds"] = {k: r[k] * per_step for k in ROUND_KEYS}
    out["noisy"] = any(t.noisy for t in timed.values())
    return out
