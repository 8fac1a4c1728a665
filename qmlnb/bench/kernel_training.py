"""Time one kernel-alignment training step (forward and backward) against Qiskit ML's trainable kernel.

The setting (defaults): N = 256 samples, n = 8 qubits, a ZZ map with a
trainable RY layer before each of 3 repetitions (24 parameters, built in
Qiskit and imported with ``from_qiskit`` so that both sides run the same
circuit), uniform features in [-1, 1] (seed 0), random theta (seed 1).

- **ours**: ``CircuitStates`` (torch, complex64) of all N samples, the Gram
  as one matrix product, centred alignment, ``backward()`` to the 24
  parameters: one step of ``KernelTrainer(loss="alignment")`` on a full batch.
- **Qiskit ML**: ``TrainableFidelityStatevectorKernel.evaluate`` gives the
  Gram (a statevector per sample, then every (i, j) entry in a Python loop);
  it has no gradient of the kernel, so the same step takes 2P + 1 Grams
  (central differences in each of the P parameters, and the forward value)
  plus their alignments.  At N = 256 one Gram takes about a minute here, so
  it is timed on ``--qiskit-samples`` (two sample sizes m), and the
  per-sample and per-pair costs of ``t(m) = a m + b m^2`` are fitted to them
  and *extrapolated* to N; the JSON says so (``qiskit_ml.extrapolated``).

Both sides are timed in interleaved rounds (``timing.interleaved``): ours,
Qiskit at m1, Qiskit at m2; each round gives its own extrapolated speedup,
summarised by the median and IQR.  ``--threads`` sets torch's threads (default
1: Qiskit's loop is single-threaded; on a loaded machine more threads contend
for the same cores).  The JSON records the load average.
"""
from __future__ import annotations

import argparse

import numpy as np

from ..kernels import from_qiskit
from ..kernels.circuit_torch import CircuitStates, fidelity_gram
from ..lab.provenance import environment
from ..qsvm.kernel_training import alignment_torch
from ..qsvm.svm import kernel_target_alignment
from ..timing import interleaved, measure
from .._util import available_cores
from .results import add_allow_dirty, check_tree, write_result

TARGET_SPEEDUP = 100.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=256, help="samples in the step's batch (default 256)")
    parser.add_argument("--qubits", type=int, default=8, help="qubits (default 8)")
    parser.add_argument("--layers", type=int, default=3, help="repetitions, each with one trainable RY per qubit "
                                                              "(default 3: 24 parameters at 8 qubits)")
    parser.add_argument("--qiskit-samples", default="16,40", help="two sample sizes m1,m2 Qiskit ML's Gram is timed "
                                                                  "on (default 16,40)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of our step alone (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device of our side (default cpu)")
    parser.add_argument("--json", help="write the result to this JSON file")
    add_allow_dirty(parser)


def qiskit_circuit(n_qubits: int, layers: int):
    """(circuit, feature ParameterVector, trainable ParameterVector): ``trainable_zz_circuit`` written in Qiskit."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    xs, ts = ParameterVector("x", n_qubits), ParameterVector("t", n_qubits * layers)
    qc = QuantumCircuit(n_qubits)
    for layer in range(layers):
        for k in range(n_qubits):
            qc.ry(ts[layer * n_qubits + k], k)
        for k in range(n_qubits):
            qc.h(k)
            qc.p(2 * xs[k], k)
        for k in range(n_qubits - 1):
            qc.cx(k, k + 1)
            qc.p(2 * (np.pi - xs[k]) * (np.pi - xs[k + 1]), k + 1)
            qc.cx(k, k + 1)
    return qc, xs, ts


def fit_cost(sizes, seconds) -> tuple[float, float]:
    """(a, b) of t(m) = a m + b m^2 through two timings (seconds per state, per kernel entry); each kept >= 0."""
    (m1, m2), (t1, t2) = sizes, seconds
    b = (t2 / m2 - t1 / m1) / (m2 - m1)
    b = max(b, 0.0)
    a = max((t1 - b * m1 * m1) / m1, 0.0)
    return a, b


def run(args) -> int:
    import torch

    started = check_tree(args.allow_dirty)
    torch.set_num_threads(args.threads)
    m1, m2 = (int(v) for v in args.qiskit_samples.split(","))
    if not 1 < m1 < m2 <= args.n:
        raise SystemExit(f"--qiskit-samples must be two sizes 1 < m1 < m2 <= N, got {args.qiskit_samples}")
    from qiskit_machine_learning.kernels import TrainableFidelityStatevectorKernel

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (args.n, args.qubits))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    qc, xs, ts = qiskit_circuit(args.qubits, args.layers)
    P = len(ts)
    values = np.random.default_rng(1).uniform(-np.pi, np.pi, P)
    fm = from_qiskit(qc, features=xs, theta={p.name: float(v) for p, v in zip(ts, values)})
    sim = CircuitStates(fm, trainable=[p.name for p in ts], device=args.device)
    features = sim.features(X)
    theta = sim.initial_theta().requires_grad_(True)
    sync = torch.cuda.synchronize if sim.device.type == "cuda" else None

    def ours_step():
        theta.grad = None
        loss = -alignment_torch(fidelity_gram(sim.states(features, theta)), y)
        loss.backward()
        return float(loss.detach())

    kernel = TrainableFidelityStatevectorKernel(feature_map=qc, training_parameters=ts)
    kernel.assign_training_parameters(values)

    def qiskit_forward(m):
        K = kernel.evaluate(X[:m])
        return kernel_target_alignment(K, y[:m])

    # the same kernel on both sides (a sample of entries)
    K_ref = kernel.evaluate(X[:m1])
    with torch.no_grad():
        K_ours = fidelity_gram(sim.states(features[:m1], theta)).cpu().numpy()
    difference = float(np.abs(K_ours - K_ref).max())

    alone = measure(ours_step, warmup=1, min_repeats=args.repeats, min_time=0.0, sync=sync)
    rounds = interleaved({"ours_step": ours_step, "qiskit_m1": lambda: qiskit_forward(m1),
                          "qiskit_m2": lambda: qiskit_forward(m2)}, warmup=1, min_rounds=args.rounds, min_time=0.0,
                         sync=sync)
    evaluations = 2 * P + 1
    per_round = []
    for ours_s, t1, t2 in zip(rounds["ours_step"].times, rounds["qiskit_m1"].times, rounds["qiskit_m2"].times):
        a, b = fit_cost((m1, m2), (t1, t2))
        per_round.append(evaluations * (a * args.n + b * args.n**2) / ours_s)
    a, b = fit_cost((m1, m2), (rounds["qiskit_m1"].median, rounds["qiskit_m2"].median))
    gram_s = a * args.n + b * args.n**2
    step_s = evaluations * gram_s
    q1, median, q3 = (float(v) for v in np.percentile(per_round, [25, 50, 75]))
    result = {
        "benchmark": "kernel-training", "environment": environment(), "threads": available_cores(),
        "params": {k: v for k, v in vars(args).items() if k != "run"},
        "setting": {"n": args.n, "qubits": args.qubits, "layers": args.layers, "parameters": P,
                    "gates": len(fm.circuit.gates), "loss": "centred kernel-target alignment",
                    "step": "states of all N samples, N x N Gram, alignment, gradient to every parameter",
                    "torch_threads": args.threads, "device": str(sim.device), "dtype": sim.dtype},
        "max_abs_kernel_difference": difference,
        "ours": {"step_alone": alone.as_dict(), "step_interleaved": rounds["ours_step"].as_dict()},
        "qiskit_ml": {
            "kernel": "TrainableFidelityStatevectorKernel.evaluate + kernel_target_alignment",
            "extrapolated": True,
            "sample_sizes": [m1, m2],
            "sample_gram": {"m1": rounds["qiskit_m1"].as_dict(), "m2": rounds["qiskit_m2"].as_dict()},
            "seconds_per_state": a, "seconds_per_entry": b,
            "gram_s_at_n": gram_s, "gram_evaluations_per_step": evaluations, "step_s_at_n": step_s,
            "note": (f"Qiskit ML has no gradient of a kernel: a step takes 2P + 1 = {evaluations} Grams (central "
                     "differences and the value). One Gram at N is extrapolated from the two timed sample sizes "
                     "with t(m) = a m + b m^2 (states, then a Python loop over all m^2 entries)."),
        },
        "speedup": {"ratio_of_medians": step_s / rounds["ours_step"].median, "per_round_median": median,
                    "per_round_q1": q1, "per_round_q3": q3, "per_round": per_round, "target": TARGET_SPEEDUP,
                    "meets_target": bool(q1 >= TARGET_SPEEDUP),
                    "noisy": rounds["ours_step"].noisy or rounds["qiskit_m2"].noisy},
    }
    result["environment"]["finished"] = environment()["timestamp"]
    print(f"ours: one step {alone.median:.3f} s (IQR {alone.iqr:.3f}); Qiskit ML (extrapolated): Gram {gram_s:.1f} s, "
          f"step {step_s:.0f} s; speedup {median:.0f}x [{q1:.0f}, {q3:.0f}]; |K - K_qiskit| <= {difference:.1e}",
          flush=True)
    if args.json:
        write_result(args.json, result, allow_dirty=args.allow_dirty, started=started)
        print(f"wrote {args.json}")
    return 0
