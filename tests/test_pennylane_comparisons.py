"""Our simulators against PennyLane, measured in one run: the library cores, the bench and the lab's tasks.

Timings vary; what is checked is that every recorded ratio follows from the recorded interleaved times, that both
sides ran the same number of rounds on the same data, and that the states agree with PennyLane's.
"""
import statistics

import numpy as np
import pytest
import torch

from qmlnb.kernels import FeatureMap
from qmlnb.kernels.pennylane_reference import states_vs_pennylane
from qmlnb.lab import tasks
from qmlnb.qcnn.simulator_speed import compare_simulators
from qmlnb.qcnn.train import TrainConfig

ROUNDS = 3


def test_states_vs_pennylane_times_both_sides_in_the_same_rounds_and_agrees():
    X = np.random.default_rng(0).uniform(0, np.pi, (6, 3))
    result = states_vs_pennylane(FeatureMap(n_qubits=3, reps=2), X, rounds=ROUNDS, min_time=0.0)
    assert (result["n"], result["n_qubits"]) == (6, 3)
    assert result["max_abs_difference"] < 1e-5
    ours, theirs = result["timing"]["qmlnb"], result["timing"]["pennylane"]
    assert ours["n"] == theirs["n"] == ROUNDS and ours["compile_s"] > 0 and theirs["compile_s"] > 0
    assert result["qmlnb_s"] == ours["median_s"] and result["pennylane_broadcast_s"] == theirs["median_s"]
    assert result["speedup"] > 0
    assert result["speedup"] == pytest.approx(theirs["median_s"] / ours["median_s"], rel=1e-12)
    paired = [p / q for p, q in zip(theirs["times_s"], ours["times_s"])]
    assert result["speedup_rounds"]["median"] == pytest.approx(statistics.median(paired), rel=1e-12)
    # one state: PennyLane returns a vector, not a (1, 2**n) matrix
    one = states_vs_pennylane(FeatureMap(n_qubits=2, reps=1), X[:1, :2], rounds=1, min_time=0.0)
    assert one["n"] == 1 and one["max_abs_difference"] < 1e-5


def tiny_batch(batch=6, shape=(1, 8, 8)):
    images = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1] * (batch // 2))
    return images, labels


def test_compare_simulators_pairs_blocks_and_rescales_them_to_steps():
    images, labels = tiny_batch()
    angles = torch.rand(6, 2, generator=torch.Generator().manual_seed(1)).requires_grad_()
    out = compare_simulators(images, labels, TrainConfig(n_qubits=2, batch_size=6), steps=4, pennylane_steps=2,
                             rounds=ROUNDS, min_time=0.0, angles=angles)
    for simulator, k in (("torch", 4), ("pennylane", 2)):
        side = out[simulator]
        train = side["timing"]["train"]
        assert side["steps_per_call"] == k and train["n"] == side["timing"]["layer"]["n"] == ROUNDS
        assert side["train_step_s"] == pytest.approx(train["median_s"] / k, rel=1e-12)
        assert side["train_samples_per_s"] == pytest.approx(6 / side["train_step_s"], rel=1e-12)
        assert side["quantum_layer_fwd_bwd_s"] > 0
    assert out["speedup_train"] > 0 and out["speedup_quantum_layer"] > 0
    assert out["speedup_train"] == pytest.approx(
        out["torch"]["train_samples_per_s"] / out["pennylane"]["train_samples_per_s"], rel=1e-12)
    torch_t, pl_t = out["torch"]["timing"]["train"]["times_s"], out["pennylane"]["timing"]["train"]["times_s"]
    per_step = [p / t * 4 / 2 for p, t in zip(pl_t, torch_t)]  # block ratios -> per-step ratios
    assert out["speedup_train_rounds"]["median"] == pytest.approx(statistics.median(per_step), rel=1e-12)
    assert isinstance(out["noisy"], bool)
    # without angles: the training step alone
    plain = compare_simulators(images, labels, TrainConfig(n_qubits=2), steps=2, pennylane_steps=1, rounds=1,
                               min_time=0.0)
    assert "speedup_quantum_layer" not in plain and "layer" not in plain["torch"]["timing"]


def test_compare_simulators_refuses_a_model_without_a_quantum_layer_and_bad_batches():
    images, labels = tiny_batch()
    with pytest.raises(ValueError, match="head"):
        compare_simulators(images, labels, TrainConfig(n_qubits=2, head="linear"))
    with pytest.raises(ValueError, match="images"):
        compare_simulators(images[:, 0], labels, TrainConfig(n_qubits=2))


def test_bench_qcnn_simulator_section_keeps_its_schema():
    from qmlnb.bench.qcnn import bench_simulator

    out = bench_simulator(n_qubits=2, batch=4, steps=2, pl_steps=1, repeats=2, min_time=0.0)
    assert set(out) == {"n_qubits", "batch_size", "image_shape", "threads", "torch", "pennylane", "speedup_train",
                        "speedup_quantum_layer", "speedup_train_rounds", "speedup_quantum_layer_rounds", "noisy"}
    for simulator in ("torch", "pennylane"):
        assert set(out[simulator]) == {"steps_per_call", "train_step_s", "train_samples_per_s",
                                       "quantum_layer_fwd_bwd_s", "timing"}
        assert set(out[simulator]["timing"]) == {"train", "layer"}
    assert set(out["speedup_train_rounds"]) == {"median", "q1", "q3", "iqr"}


def test_gram_scaling_compares_states_with_pennylane_on_its_largest_point():
    metrics, _ = tasks.gram_scaling("cpu", sizes=[8, 12], qubits=[2, 3], threads=1, repeats=2, min_time=0.0,
                                    progress=False, pennylane_states=5)
    s = metrics["states_vs_pennylane"]
    assert (s["n_states"], s["n_qubits"], s["rounds"]) == (5, 3, 2)
    assert s["max_abs_difference"] < 1e-5 and s["ratio"] > 0
    assert s["ratio"] == pytest.approx(s["pennylane_s"] / s["qmlnb_s"], rel=1e-12)
    assert s["qmlnb_per_state_s"] == pytest.approx(s["qmlnb_s"] / 5) and s["pennylane_per_state_s"] > 0
    assert s["ratio_q1"] <= s["ratio_q3"] and s["load"] >= 0 and isinstance(s["noisy"], bool)
    assert s["timing"]["qmlnb"]["n"] == s["timing"]["pennylane"]["n"] == 2
    # off by default; more states than the largest point has is refused before any work
    assert "states_vs_pennylane" not in tasks.gram_scaling("cpu", sizes=[8], qubits=[2], threads=1, repeats=1,
                                                           min_time=0.0, progress=False)[0]
    with pytest.raises(ValueError, match="pennylane_states"):
        tasks.gram_scaling("cpu", sizes=[8], qubits=[2], pennylane_states=9)
    with pytest.raises(ValueError, match="pennylane_states"):
        tasks.gram_scaling("cpu", sizes=[8], qubits=[2], pennylane_states=-1)


def test_qcnn_run_compares_its_training_step_with_torchlayer():
    metrics, _ = tasks.qcnn_run(n_train=40, epochs=1, threads=1, batch_size=8, n_qubits=2, progress=False,
                                compare_simulator="torchlayer")
    c = metrics["simulator_comparison"]
    assert c["against"] == "torchlayer" and (c["batch_size"], c["n_qubits"], c["threads"]) == (8, 2, 1)
    assert c["steps_per_call"] == {"torch": tasks.qcnn.SIMULATOR_STEPS["torch"],
                                   "torchlayer": tasks.qcnn.SIMULATOR_STEPS["pennylane"]}
    assert c["ratio"] > 0 and c["torch_samples_per_s"] > 0 and c["torchlayer_samples_per_s"] > 0
    assert c["ratio"] == pytest.approx(c["torch_samples_per_s"] / c["torchlayer_samples_per_s"], rel=1e-12)
    # at least SIMULATOR_ROUNDS paired rounds (more until the blocks add up to 0.2 s)
    assert c["ratio_q1"] <= c["ratio_q3"] and c["rounds"] >= tasks.qcnn.SIMULATOR_ROUNDS
    assert c["timing"]["torch"]["n"] == c["timing"]["torchlayer"]["n"] == c["rounds"]
    assert isinstance(c["noisy"], bool) and c["load"] >= 0


def test_qcnn_run_refuses_bad_simulator_comparisons():
    with pytest.raises(ValueError, match="compare_simulator"):
        tasks.qcnn_run(n_train=40, epochs=1, threads=1, compare_simulator="lightning", progress=False)
    with pytest.raises(ValueError, match="quantum layer"):
        tasks.qcnn_run(n_train=40, epochs=1, threads=1, compare_simulator="torchlayer", head="linear",
                       progress=False)
