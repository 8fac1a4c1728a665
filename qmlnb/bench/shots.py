"""Shots: the cost of gram(S, shots=..., seed=...) over the exact gram(S), in the same interleaved rounds.

The states are N (default 4,096) ZZ feature-map states on n (default 10)
qubits of uniform features in [0, 1); for each backend of ``--backend`` (a
comma-separated list) the exact symmetric Gram and the same call with
``shots`` (each value of ``--shots``; and, with ``--noise``, with
depolarising and readout noise) are timed in the same rounds of
:func:`qmlnb.timing.interleaved` with the same threads, so ``overhead`` =
median(shots) / median(exact of that backend) - 1 compares calls that saw the
same load; ``overhead_q1``/``overhead_q3`` are the quartiles of the per-round
overheads, and ``overhead_cpu`` the ratio of the CPU seconds this process
spent in all rounds of each, minus 1 (on a loaded machine wall times swing
with the scheduler; CPU time much less, though it counts threads that spin
while they wait).  Each timed result is checked outside the clock: symmetric, and
its mean deviation from the exact Gram within 6 standard errors of the
binomial's.  Recorded beside: the off-diagonal mean and spread of the exact
Gram and the fraction of off-diagonal entries estimated as 0.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .. import timing
from ..kernels import DeviceNoise, FeatureMap, gram
from ..lab.provenance import environment
from .results import add_allow_dirty, check_tree, write_result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=4096, help="samples (default 4,096)")
    parser.add_argument("--n-qubits", type=int, default=10, help="qubits (default 10)")
    parser.add_argument("--shots", default="100,4096,100000,1000000", help="comma-separated shot counts")
    parser.add_argument("--noise", action="store_true", help="also time shots=4096 with depolarising + readout noise")
    parser.add_argument("--backend", default="cpu", help="Gram backends, comma-separated (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: the cores of this process)")
    parser.add_argument("--bandwidth", type=float, default=1.0, help="feature-map bandwidth (default 1.0)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds after a warm-up (default 5)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/shots-<host>.json)")
    add_allow_dirty(parser)


def check_estimate(exact: np.ndarray, K: np.ndarray, shots: int) -> dict:
    """Symmetric, and the mean error of the off-diagonal entries within 6 binomial standard errors."""
    if not np.array_equal(K, K.T):
        raise AssertionError("the shot-sampled Gram is not symmetric")
    upper = np.triu_indices(len(K), 1)
    k, est = exact[upper], K[upper]
    se = np.sqrt(np.sum(np.clip(k * (1 - k), 0, None)) / shots) / k.size
    mean_error = float(np.mean(est - k))
    if abs(mean_error) > 6 * se + 1e-9:
        raise AssertionError(f"mean error {mean_error} exceeds 6 standard errors ({se}) at shots={shots}")
    return {"mean_error": mean_error, "standard_error": float(se), "fraction_zero": float(np.mean(est == 0))}


def run(args) -> int:
    started = check_tree(args.allow_dirty)
    shot_counts = [int(s) for s in args.shots.split(",") if s.strip()]
    fm = FeatureMap(n_qubits=args.n_qubits, bandwidth=args.bandwidth)
    S = fm.states(np.random.default_rng(0).uniform(0.0, 1.0, (args.n, args.n_qubits)))
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    noise = DeviceNoise.for_map(fm, depolarising=0.01, readout=0.02)
    calls = {}  # "<backend>/exact", "<backend>/shots=<S>": one round calls them all, in this order
    for backend in backends:
        options = dict(backend=backend, n_threads=args.threads)
        calls[f"{backend}/exact"] = lambda options=options: gram(S, **options)
        for shots in shot_counts:
            calls[f"{backend}/shots={shots}"] = lambda shots=shots, options=options: gram(S, shots=shots, seed=0,
                                                                                          **options)
        if args.noise:
            calls[f"{backend}/shots=4096+noise"] = lambda options=options: gram(S, shots=4096, seed=0, noise=noise,
                                                                                mitigate=True, **options)
    exact = gram(S, dtype=np.float64, backend=backends[0], n_threads=args.threads)
    checks = {}

    def after(name, K):
        _, call = name.split("/")
        if call.startswith("shots="):  # mitigated noise included: its mean is the exact kernel too
            checks[name] = check_estimate(exact, K, int(call[len("shots="):].split("+")[0]))

    timed = timing.interleaved(calls, warmup=1, min_rounds=args.rounds, min_time=0.0, after=after)
    upper = exact[np.triu_indices(args.n, 1)]
    entries, summary = {}, {}
    for name, t in timed.items():
        backend, call = name.split("/")
        entry = {"backend": backend, "timing": t.as_dict(), "median_s": t.median}
        if call != "exact":
            r = timing.ratio(t, timed[f"{backend}/exact"])
            entry.update(overhead=r["ratio"] - 1, overhead_q1=r["q1"] - 1, overhead_q3=r["q3"] - 1,
                         overhead_cpu=t.cpu_s / timed[f"{backend}/exact"].cpu_s - 1,
                         overhead_rounds=[x - 1 for x in r["rounds"]], noisy=r["noisy"], check=checks[name])
            summary.setdefault(backend, {})[call] = {k: round(entry[k], 3) for k in
                                                     ("overhead", "overhead_q1", "overhead_q3", "overhead_cpu")}
        entries[name] = entry
    env = environment()
    result = {"benchmark": "shots", "environment": env, "n": args.n, "n_qubits": args.n_qubits,
              "backends": backends, "threads": args.threads, "bandwidth": args.bandwidth,
              "off_diagonal": {"mean": float(upper.mean()), "std": float(upper.std())},
              "noise": noise.describe() if args.noise else None, "overhead": summary, "calls": entries,
              "note": "measured on a shared, loaded 2-core machine unless the environment says otherwise"}
    print(json.dumps(summary, indent=1), flush=True)
    host = env["machine"]["hostname"] or "machine"
    output = Path(args.output or Path("bench") / "results" / f"shots-{host}.json")
    write_result(output, result, allow_dirty=args.allow_dirty, started=started)
    print(f"wrote {output}")
    return 0
