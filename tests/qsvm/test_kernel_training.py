"""Trainable kernels: torch states equal the NumPy ones, gradients equal parameter shift / finite differences,
KernelTrainer (alignment and Qiskit's SVCLoss), its errors, and the controls table."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch", reason="the trainable kernels simulate in torch")

from qmlnb.kernels import CircuitFeatureMap, InsufficientMemoryError, gram  # noqa: E402
from qmlnb.kernels.circuit import Circuit, Func, pi, theta, x  # noqa: E402
from qmlnb.kernels.circuit_torch import CircuitStates, fidelity_gram, reads_x  # noqa: E402
from qmlnb.qsvm.kernel_training import (  # noqa: E402
    KernelTrainer, alignment_torch, controls_summary, digits_features, kernel_training_controls, pca_features,
    svc_loss_torch, trainable_zz_circuit)
from qmlnb.qsvm.svm import QuantumKernelSVC, kernel_target_alignment  # noqa: E402

# theta in every kind of step: one-qubit (u3, rx, ry), fused diagonal runs (rz, crz, rzz, gphase), through a
# carried permutation (cx), a basis-changed RXX/RZX, and theta in a prefix that reads no x
THETA_CIRCUIT = Circuit(3, [
    ("ry", 0, theta["a"]), ("rx", 1, theta["b"] * 0.5), ("h", 2),
    ("h", 0), ("p", 0, 2 * x[0]), ("u3", 1, x[1], theta["c"], x[2] * theta["a"]), ("cx", (0, 2)),
    ("rz", 2, x[2] + theta["d"]), ("crz", (2, 0), theta["b"] * x[1]), ("cx", (0, 2)),
    ("rzz", (0, 1), (pi - x[0]) * theta["e"]), ("rxx", (1, 2), theta["c"] + x[0]), ("sx", 0),
    ("rzx", (2, 0), x[1] * x[2] - theta["d"]), ("gphase", (), theta["e"]), ("ry", 2, theta["e"] * x[0]),
], theta={"a": 0.3, "b": -0.7, "c": 1.1, "d": 0.4, "e": -1.3})


def features(n, columns, seed=0, scale=1.0):
    return np.random.default_rng(seed).uniform(-scale, scale, (n, columns))


# ---------------------------------------------------------------------------------------------- states
@pytest.mark.parametrize("circuit", [THETA_CIRCUIT, trainable_zz_circuit(4, 2, init=0.4)], ids=["gates", "zz"])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_states_equal_the_numpy_states(circuit, dtype):
    fm = CircuitFeatureMap(circuit, bandwidth=0.8)
    X = features(7, circuit.n_features, seed=2, scale=2.0)
    S = CircuitStates(fm, dtype=dtype).states(X)
    assert S.shape == (7, fm.dim) and S.dtype == getattr(torch, dtype)
    np.testing.assert_allclose(S.numpy(), fm.states(X), atol=1e-6)


def test_states_at_other_theta_equal_the_map_with_those_values():
    fm = CircuitFeatureMap(THETA_CIRCUIT)
    sim = CircuitStates(fm, trainable=["e", "a"])
    assert sim.parameter_names == ("e", "a")
    X = features(5, 3, seed=3)
    S = sim.states(X, torch.tensor([0.9, -2.0], dtype=torch.float64)).numpy()
    moved = sim.feature_map([0.9, -2.0])
    assert moved.circuit.theta_dict == {**THETA_CIRCUIT.theta_dict, "e": 0.9, "a": -2.0}
    np.testing.assert_allclose(S, moved.states(X), atol=1e-6)
    assert not np.allclose(S, fm.states(X), atol=1e-3)  # the values were really used


def test_reads_x_sees_features_and_funcs():
    assert reads_x(theta["a"] * x[1]) and reads_x(Func(lambda X: X[:, 0])) and not reads_x(theta["a"] + 2.0)


def _z0(sim, X, th):
    """<Z on wire 0> per sample: an expectation value, where the parameter-shift rule is exact."""
    S = sim.states(X, th)
    probs = (S.conj() * S).real.reshape(len(X), 2, -1).sum(-1)
    return probs[:, 0] - probs[:, 1]


def test_gradients_equal_the_parameter_shift_rule():
    # each theta of this circuit sits in one RY with coefficient 1: d<Z>/dt = (f(t + pi/2) - f(t - pi/2)) / 2
    fm = CircuitFeatureMap(trainable_zz_circuit(3, 2, init=0.5))
    sim = CircuitStates(fm, dtype="complex128")
    X = features(4, 3, seed=4)
    th = (sim.initial_theta() + torch.linspace(-1, 1, sim.n_parameters, dtype=torch.float64)).requires_grad_(True)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.3], dtype=torch.float64)
    (weights @ _z0(sim, X, th)).backward()
    shift = []
    with torch.no_grad():
        for k in range(sim.n_parameters):
            e = torch.zeros_like(th)
            e[k] = math.pi / 2
            shift.append(float(weights @ (_z0(sim, X, th + e) - _z0(sim, X, th - e))) / 2)
    assert np.abs(th.grad.numpy()).max() > 1e-2  # a gradient that could be wrong
    np.testing.assert_allclose(th.grad.numpy(), shift, atol=1e-4)


def test_alignment_gradient_equals_central_finite_differences():
    fm = CircuitFeatureMap(THETA_CIRCUIT, bandwidth=0.7)
    sim = CircuitStates(fm, dtype="complex128")
    X, y = features(10, 3, seed=5, scale=2.0), np.arange(10) % 2
    Xt = sim.features(X)
    th = sim.initial_theta().requires_grad_(True)
    alignment_torch(fidelity_gram(sim.states(Xt, th)), y).backward()
    eps, numeric = 1e-5, []
    with torch.no_grad():
        for k in range(sim.n_parameters):
            e = torch.zeros_like(th)
            e[k] = eps
            plus = alignment_torch(fidelity_gram(sim.states(Xt, th + e)), y)
            minus = alignment_torch(fidelity_gram(sim.states(Xt, th - e)), y)
            numeric.append(float(plus - minus) / (2 * eps))
    assert np.abs(numeric).max() > 1e-3
    np.testing.assert_allclose(th.grad.numpy(), numeric, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_states_and_gradients_on_cuda_equal_the_cpu():
    fm = CircuitFeatureMap(THETA_CIRCUIT)
    X, y = features(16, 3, seed=6), np.arange(16) % 2
    grads = []
    for device in ("cpu", "cuda"):
        sim = CircuitStates(fm, device=device)
        th = sim.initial_theta().requires_grad_(True)
        S = sim.states(X, th)
        alignment_torch(fidelity_gram(S), y).backward()
        grads.append(th.grad.cpu().numpy())
        np.testing.assert_allclose(S.detach().cpu().numpy(), fm.states(X), atol=1e-6)
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)


def test_states_errors():
    with pytest.raises(ValueError, match="no parameter theta to train"):
        CircuitStates(CircuitFeatureMap(Circuit(2, [("rx", 0, x[0])])))
    fm = CircuitFeatureMap(THETA_CIRCUIT)
    with pytest.raises(ValueError, match="trainable must be distinct names"):
        CircuitStates(fm, trainable=["a", "zz"])
    with pytest.raises(ValueError, match="dtype must be one of"):
        CircuitStates(fm, dtype="float32")
    with pytest.raises(TypeError, match="CircuitFeatureMap"):
        CircuitStates(object())
    sim = CircuitStates(fm)
    with pytest.raises(ValueError, match=r"theta must have shape \(5,\)"):
        sim.states(features(2, 3), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="finite"):
        sim.states(features(2, 3), torch.full((5,), math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match="feature columns"):
        sim.states(features(2, 4))
    with pytest.raises(ValueError, match="is not finite for sample"), np.errstate(over="ignore"):
        sim.states(np.array([[0.1, 0.2, 0.3], [1e308, 0.0, 0.0]]))
    with pytest.raises(InsufficientMemoryError, match="differentiable states of 200000 samples on 16 qubits"):
        CircuitStates(CircuitFeatureMap(trainable_zz_circuit(16, 1))).states(np.zeros((200_000, 16)))


# ---------------------------------------------------------------------------------------------- objectives
def test_torch_alignment_equals_the_numpy_score():
    K = gram(CircuitFeatureMap(THETA_CIRCUIT).states(features(12, 3, seed=7)))
    y = np.arange(12) % 3
    assert float(alignment_torch(torch.from_numpy(K), y)) == pytest.approx(kernel_target_alignment(K, y), abs=1e-12)


def test_svc_loss_equals_qiskit_svcloss():
    qiskit = pytest.importorskip("qiskit", reason="the optional extra `compare` (qiskit) is not installed")
    kernels = pytest.importorskip("qiskit_machine_learning.kernels",
                                  reason="the optional extra `compare` (qiskit-machine-learning) is not installed")
    from qiskit.circuit import ParameterVector
    from qiskit_machine_learning.utils.loss_functions import SVCLoss

    from qmlnb.kernels import from_qiskit

    xs, ts = ParameterVector("x", 2), ParameterVector("t", 3)
    qc = qiskit.QuantumCircuit(2)
    qc.ry(ts[0], 0)
    qc.ry(ts[1], 1)
    qc.h([0, 1])
    qc.p(2 * xs[0], 0)
    qc.p(2 * xs[1], 1)
    qc.cx(0, 1)
    qc.rz(ts[2] * xs[0] * xs[1], 1)
    qc.cx(0, 1)
    values = [0.4, -1.2, 0.8]
    fm = from_qiskit(qc, features=xs, theta={p.name: v for p, v in zip(ts, values)})
    X = features(16, 2, seed=8, scale=1.5)
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    kernel = kernels.TrainableFidelityStatevectorKernel(feature_map=qc, training_parameters=ts)
    theirs = SVCLoss(C=1.0).evaluate(np.array(values), kernel, X, y)
    sim = CircuitStates(fm, trainable=[p.name for p in ts], dtype="complex128")
    ours = float(svc_loss_torch(fidelity_gram(sim.states(X)), y, C=1.0))
    assert theirs > 0.1
    assert ours == pytest.approx(theirs, abs=1e-5)


# ---------------------------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def toy():
    """A linearly separable problem (x0 > 0.2 x1) the initial ZZ kernel hardly aligns with (alignment 0.05)."""
    X = features(48, 2, seed=9, scale=1.5)
    return X, (X[:, 0] > 0.2 * X[:, 1]).astype(int)


def test_training_increases_alignment_and_is_deterministic(toy):
    X, y = toy
    fm = CircuitFeatureMap(trainable_zz_circuit(2, 2, init=0.1))
    trainer = KernelTrainer(fm, steps=25, lr=0.1, batch_size=32, seed=3).fit(X, y)
    before = kernel_target_alignment(gram(fm.states(X)), y)
    after = kernel_target_alignment(gram(trainer.feature_map_.states(X)), y)
    assert before < 0.06 and after > 1.6 * before  # 0.051 -> 0.102
    assert list(trainer.history_.columns) == ["step", "loss", "alignment", "validation_loss"]
    assert len(trainer.history_) == 25 and trainer.best_step_ == 25 and not trainer.stopped_early_
    assert trainer.initial_theta_ == fm.circuit.theta_dict and trainer.theta_ != trainer.initial_theta_
    again = KernelTrainer(fm, steps=25, lr=0.1, batch_size=32, seed=3).fit(X, y)
    assert again.theta_ == trainer.theta_
    assert again.history_["loss"].tolist() == trainer.history_["loss"].tolist()
    other = KernelTrainer(fm, steps=25, lr=0.1, batch_size=32, seed=4).fit(X, y)
    assert other.theta_ != trainer.theta_  # the seed draws the mini-batches
    # then the usual QSVM on the trained map
    clf = QuantumKernelSVC(custom_map=trainer.feature_map_, bandwidth=1.0, C=1.0).fit(X, y)
    assert clf.predict(X).shape == (48,)


def test_svc_loss_training_with_early_stopping(toy):
    X, y = toy
    fm = CircuitFeatureMap(trainable_zz_circuit(2, 1, init=0.2))
    trainer = KernelTrainer(fm, loss="svc", steps=200, lr=0.5, batch_size=None, validation_fraction=0.25,
                            patience=2, eval_every=2, seed=0).fit(X, y)
    history = trainer.history_
    assert "alignment" not in history
    evaluated = history.dropna(subset=["validation_loss"])
    assert trainer.stopped_early_ and len(history) < 200
    kept = evaluated["validation_loss"].min()
    assert trainer.best_step_ == 0 or kept == evaluated.set_index("step").loc[trainer.best_step_, "validation_loss"]
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]  # the SVM dual objective went down


def test_trainer_errors(toy):
    X, y = toy
    fm = CircuitFeatureMap(trainable_zz_circuit(2, 1))
    with pytest.raises(ValueError, match="no parameter theta to train"):
        KernelTrainer(CircuitFeatureMap(Circuit(2, [("rx", 0, x[0]), ("rx", 1, x[1])]))).fit(X, y)
    with pytest.raises(TypeError, match="CircuitFeatureMap"):
        KernelTrainer("zz").fit(X, y)
    for kwargs, match in [({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"lr": 0.0}, "lr"),
                          ({"lr": math.inf}, "lr"), ({"lr": -1e-3}, "lr"), ({"batch_size": 3}, "batch_size"),
                          ({"validation_fraction": 1.0}, "validation_fraction"), ({"patience": 0}, "patience"),
                          ({"loss": "hinge"}, "loss must be one of"), ({"C": 0}, "C must be"),
                          ({"trainable": ["nope"]}, "trainable")]:
        with pytest.raises(ValueError, match=match):
            KernelTrainer(fm, **kwargs).fit(X, y)
    with pytest.raises(ValueError, match="needs binary labels, got 3 classes"):
        KernelTrainer(fm, loss="svc").fit(X, np.arange(48) % 3)
    with pytest.raises(ValueError, match="one label per row"):
        KernelTrainer(fm).fit(X, y[:-1])
    with pytest.raises(ValueError, match="single class"):
        KernelTrainer(fm).fit(X, np.zeros(48, dtype=int))
    with pytest.raises(ValueError, match="has 1 samples"):
        KernelTrainer(fm).fit(X, np.r_[1, np.zeros(47, dtype=int)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        KernelTrainer(fm).fit(np.full((48, 2), np.nan), y)


# ---------------------------------------------------------------------------------------------- controls
def test_controls_table_and_summary():
    X, y = digits_features(2, classes=(0, 1))
    X, y = X[::6], y[::6]
    fm = CircuitFeatureMap(trainable_zz_circuit(2, 1), bandwidth=0.5)
    table = kernel_training_controls(fm, X, y, seeds=(0, 1), Cs=(1.0,), cv=2,
                                     trainer_options={"steps": 3, "batch_size": 16})
    assert sorted(table["model"].unique()) == ["projected", "rbf", "trained", "untrained"] and len(table) == 8
    assert table.loc[table.model == "trained", "train_steps"].eq(3).all()
    assert table[["balanced_accuracy", "alignment"]].notna().all().all()
    summary = controls_summary(table)
    assert summary["control"].tolist() == ["projected", "rbf", "untrained"]
    # the projected control: an SVM on the untrained states' one-qubit density matrices, its own alignment
    projected = table[table.model == "projected"].set_index("seed")
    untrained = table[table.model == "untrained"].set_index("seed")
    assert not np.allclose(projected["alignment"], untrained["alignment"])
    assert summary["verdict"].isin(["too few seeds", "identical"]).all()  # two seeds never make a claim
    with pytest.raises(ValueError, match="reference 'quantum'"):
        controls_summary(table, reference="quantum")
    with pytest.raises(ValueError, match="must not set seed"):
        kernel_training_controls(fm, X, y, trainer_options={"seed": 1})
    with pytest.raises(ValueError, match="lr"):
        kernel_training_controls(fm, X, y, trainer_options={"lr": -1.0})


def test_digits_features_and_circuit_errors():
    X, y = digits_features(3)
    assert X.shape[1] == 3 and np.abs(X).max() == pytest.approx(1.0) and set(np.unique(y)) == {0, 1}
    with pytest.raises(ValueError, match="two distinct digits"):
        digits_features(3, classes=(1, 1))
    # the PCA of any images: each component scaled to [-scale, scale]; a constant component stays 0, not NaN
    images = np.c_[np.arange(6.0), np.ones(6), -2.0 * np.arange(6.0) ** 2].reshape(6, 3, 1)
    F = pca_features(images, 2, scale=2.0)
    assert F.shape == (6, 2) and np.abs(F).max(axis=0) == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError, match="n_features=4 needs at least that many samples and pixels"):
        pca_features(images, 4)
    with pytest.raises(ValueError, match="init"):
        trainable_zz_circuit(2, init=math.nan)
    assert len(trainable_zz_circuit(8, 3).theta) == 24


@pytest.mark.slow  # a papermill run of the stage's notebook (a kernel start and two tiny trainings)
def test_the_notebook_runs_with_tiny_parameters(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill", reason="runs the notebook")
    from pathlib import Path

    from qmlnb.lab import runs

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "60-kernel-training.ipynb"
    out, folder = tmp_path / "out.ipynb", tmp_path / "run"
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(folder))  # the kernel inherits it: the run is written there
    papermill.execute_notebook(str(notebook), str(out), cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                               parameters={"n_qubits": 2, "layers": 1, "steps": 3, "batch_size": 16, "n_samples": 80,
                                           "seeds": [1, 2], "test_fraction": 0.5})
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["task"] == "kernel-training" and metrics["seeds"] == [1, 2] and metrics["train_steps"] <= 6
    assert len(pd.read_csv(folder / "kernel_training.csv")) == 8 and (folder / "history.csv").is_file()
