"""Drop-in speed inside Qiskit ML's own pipeline: QSVC(quantum_kernel=QmlnbKernel) vs FidelityStatevectorKernel.

For each N in ``--sizes`` and n in ``--qubits``: uniform features in [0, 1)
(seed 0; labels from a fixed rule), N training and N // 4 test samples, the
feature map ``zz_feature_map(n)`` (Qiskit's default: full entanglement, reps 2).

- **ours**: ``QSVC(quantum_kernel=QmlnbKernel(feature_map=...)).fit(X, y).predict(X_test)``,
  timed end to end (``--repeats`` calls, a new kernel each time: its
  conversion of the circuit is counted).  The kernel calls that QSVC (that is,
  scikit-learn's SVC) makes are recorded: their shapes fix the peer's work.
  Beside it, the SVC solver alone (``SVC(kernel="precomputed")`` fit + predict
  on our matrices): the share of the time that is not the kernel's.
- **Qiskit ML, extrapolated**: ``QSVC(quantum_kernel=FidelityStatevectorKernel(...))``
  at these sizes takes minutes to hours, so it is not run.  Its kernel builds
  one ``Statevector`` per distinct sample of a call and loops over every pair
  of rows in Python; both unit costs are measured on the first
  ``--peer-sample`` samples (one state each: ``_get_statevector_``; the pairs:
  a second ``evaluate`` of the same samples with the states cached), and the
  pipeline's time is extrapolated as states x per-state + pairs x per-pair over
  the calls QSVC made on our side, plus the same SVC solver time (it solves
  the same matrix, to 1e-7).  Its matrix on the sample is compared with ours.

The JSON records the load average: on a shared machine the absolute times are
inflated (``noisy``); both sides run in the same process on the same data.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ..lab.provenance import environment
from ..timing import measure
from .._util import available_cores
from .results import add_allow_dirty, check_tree, write_result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1000,4000", help="comma-separated training sizes N (test: N // 4)")
    parser.add_argument("--qubits", default="10,12", help="comma-separated qubit counts n (= features)")
    parser.add_argument("--peer-sample", type=int, default=40,
                        help="samples Qiskit ML's kernel is timed on (default 40: 40 states, 1,600 pairs)")
    parser.add_argument("--repeats", type=int, default=1, help="timed fit + predict calls of ours (default 1)")
    parser.add_argument("--backend", default="cpu", help="Gram backend of QmlnbKernel (default cpu, its default)")
    parser.add_argument("--json", help="write the result to this JSON file")
    add_allow_dirty(parser)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def problem(n_train: int, n_qubits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X_train (N, n), y_train (N,) in {0, 1}, X_test (N // 4, n): uniform [0, 1) features, seed 0."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 1.0, (n_train + n_train // 4, n_qubits))
    y = (np.sin(3 * X[:, 0]) * np.cos(2 * X[:, 1]) > 0.3).astype(int)  # a fixed, learnable rule
    return X[:n_train], y[:n_train], X[n_train:]


class RecordingKernel:
    """Wraps a kernel's ``evaluate`` to record the (rows, columns, symmetric) of every call."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __call__(self, x_vec, y_vec=None):
        x = np.atleast_2d(x_vec)
        y = x if y_vec is None else np.atleast_2d(y_vec)
        self.calls.append((x.shape[0], y.shape[0], bool(y_vec is None or np.array_equal(x, y))))
        return self.kernel.evaluate(x_vec, y_vec)


def peer_work(calls: list) -> tuple[int, int]:
    """(statevectors, pairs) FidelityStatevectorKernel computes for these calls (cache cleared per call)."""
    states = sum(n if symmetric else n + m for n, m, symmetric in calls)  # a symmetric call's y hits the cache
    pairs = sum(n * m for n, m, _ in calls)  # every (i, j), both triangles: its loop has no symmetry
    return states, pairs


def peer_unit_costs(feature_map, X: np.ndarray) -> dict:
    """Seconds per statevector and per pair of FidelityStatevectorKernel on the rows of X, and its matrix."""
    from qiskit_machine_learning.kernels import FidelityStatevectorKernel

    m = X.shape[0]
    kernel = FidelityStatevectorKernel(feature_map=feature_map, auto_clear_cache=False)
    t0 = time.perf_counter()
    for row in X:
        kernel._get_statevector_(tuple(row))  # the uncached builder: assign_parameters + Statevector
    per_state = (time.perf_counter() - t0) / m
    K = kernel.evaluate(X)  # fills the cache
    t0 = time.perf_counter()
    kernel.evaluate(X)  # the same rows: states from the cache, so this is the pair loop
    per_pair = (time.perf_counter() - t0) / (m * m)
    return {"sample_n": m, "per_state_s": per_state, "per_pair_s": per_pair, "matrix": K}


def case(n_train: int, n_qubits: int, args) -> dict:
    from qiskit.circuit.library import zz_feature_map
    from qiskit_machine_learning.algorithms import QSVC
    from sklearn.svm import SVC

    from ..kernels.qiskit_kernel import QmlnbKernel

    X, y, X_test = problem(n_train, n_qubits)
    recorders = []

    def ours():
        kernel = RecordingKernel(QmlnbKernel(feature_map=zz_feature_map(n_qubits), backend=args.backend))
        recorders.append(kernel)
        model = QSVC(quantum_kernel=kernel.kernel)
        model.kernel = kernel  # QSVC hands SVC kernel.evaluate; the recorder calls it and counts
        return model.fit(X, y).predict(X_test)

    t_ours = measure(ours, warmup=0, min_repeats=args.repeats, min_time=0.0)
    calls = recorders[-1].calls
    kernel = QmlnbKernel(feature_map=zz_feature_map(n_qubits), backend=args.backend)
    K, K_test = kernel.evaluate(X), kernel.evaluate(X_test, X)
    t_svm = measure(lambda: SVC(kernel="precomputed").fit(K, y).predict(K_test), warmup=0,
                    min_repeats=args.repeats, min_time=0.0)
    if not np.array_equal(t_svm.value, t_ours.value):
        raise AssertionError("the precomputed SVC on our matrices predicts differently from QSVC(QmlnbKernel)")
    peer = peer_unit_costs(zz_feature_map(n_qubits), X[:args.peer_sample])
    difference = float(np.abs(peer.pop("matrix") - kernel.evaluate(X[:args.peer_sample])).max())
    states, pairs = peer_work(calls)
    kernel_s = states * peer["per_state_s"] + pairs * peer["per_pair_s"]
    peer_total = kernel_s + t_svm.median
    return {"n_train": n_train, "n_test": X_test.shape[0], "qubits": n_qubits,
            "feature_map": f"zz_feature_map({n_qubits}) (full entanglement, reps 2)",
            "kernel_calls": [{"rows": n, "columns": m, "symmetric": s} for n, m, s in calls],
            "ours_fit_predict": t_ours.as_dict(), "svm_solver_alone": t_svm.as_dict(),
            "qiskit_ml": {**peer, "extrapolated": True, "statevectors": states, "pairs": pairs,
                          "kernel_s": kernel_s, "fit_predict_s": peer_total,
                          "max_abs_difference_on_sample": difference,
                          "note": "per-state and per-pair costs of FidelityStatevectorKernel measured on sample_n "
                                  "samples, times the statevectors and pairs of the kernel calls QSVC made on our "
                                  "side, plus the SVC solver time measured on our matrices"},
            "speedup_ours": peer_total / t_ours.median,
            "speedup_ours_kernel_only": kernel_s / max(t_ours.median - t_svm.median, 1e-12)}


def run(args) -> int:
    started = check_tree(args.allow_dirty)
    result = {"benchmark": "dropin", "environment": environment(), "threads": available_cores(),
              "params": {k: v for k, v in vars(args).items() if k != "run"}, "cases": []}
    for n_qubits in _ints(args.qubits):
        for n_train in _ints(args.sizes):
            out = case(n_train, n_qubits, args)
            result["cases"].append(out)
            print(f"N={n_train} n={n_qubits}: ours {out['ours_fit_predict']['median_s']:.3g} s (SVC solver "
                  f"{out['svm_solver_alone']['median_s']:.3g} s), Qiskit ML extrapolated "
                  f"{out['qiskit_ml']['fit_predict_s']:.3g} s: {out['speedup_ours']:.0f}x", flush=True)
    result["environment"]["finished"] = environment()["timestamp"]
    if args.json:
        write_result(args.json, result, allow_dirty=args.allow_dirty, started=started)
        print(f"wrote {args.json}")
    return 0
