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
Gram and the fraction of off-diagonal entries estimated as 0, and which sampler
``gram`` used ("native": ``qmlnb._shots_openmp``, where built).

``--samplers`` also times the estimate alone (``DeviceEstimate.apply_`` on a
copy of the exact float32 Gram) with each sampler, native and numba, in the same
rounds, beside the copy by itself: ``samplers`` gives their nanoseconds per
estimated entry (N (N + 1) / 2 of them, the copy's time taken off) and the
native sampler's speed-up.  Both give the same matrix, bit for bit (checked).
``samplers["pass"]`` is the native sampler's pass without its draws (every
entry's P set to 0, so each is read, keyed, written and mirrored, and none is
drawn): with ``exact_ns_per_entry`` (each backend's exact Gram, wall
nanoseconds per upper-triangle entry) it says how much of a 10% budget is
left to the draws.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .. import timing
from ..kernels import DeviceNoise, FeatureMap, gram
from ..kernels.shots import DeviceEstimate, pick_sampler
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
    parser.add_argument("--samplers", action="store_true",
                        help="also time the estimate alone with the native and the numba sampler")
    parser.add_argument("--rounds", type=int, default=9,
                        help="interleaved rounds after a warm-up (default 9: single rounds swing on a shared VM)")
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


class WithoutDraws(DeviceEstimate):
    """The estimate's pass without its draws: the outcome map sends every entry to P = 0, which needs no draw
    (its count is 0), so each entry is still read, keyed, written as g 0 + h and mirrored."""

    @property
    def maps(self) -> tuple[float, float, float, float]:
        return 0.0, 0.0, 1.0, 0.0


def add_sampler_calls(calls: dict, exact32: np.ndarray, shot_counts: list, n_qubits: int, threads) -> None:
    """The estimate alone on a copy of ``exact32`` (N, N) float32, per sampler and shot count, the native
    sampler's pass without draws, and the copy."""
    ids = np.arange(exact32.shape[0], dtype=np.int64)
    calls["sampler-copy/copy"] = exact32.copy
    no_draws = WithoutDraws(shots=shot_counts[0], seed=0, estimator="fidelity", noise=None, mitigate=False,
                            n_qubits=n_qubits)
    calls["sampler-native/pass"] = lambda: no_draws.apply_(exact32.copy(), ids, ids, symmetric=True,
                                                           n_threads=threads, sampler="native")
    for shots in shot_counts:
        spec = DeviceEstimate(shots=shots, seed=0, estimator="fidelity", noise=None, mitigate=False,
                              n_qubits=n_qubits)
        for sampler in ("native", "numba"):
            calls[f"sampler-{sampler}/shots={shots}"] = lambda spec=spec, sampler=sampler: spec.apply_(
                exact32.copy(), ids, ids, symmetric=True, n_threads=threads, sampler=sampler)


def ns_per_entry(seconds: float, n: int) -> float:
    """``seconds`` in nanoseconds per entry on and above the diagonal of an (n, n) symmetric Gram (the
    entries a Gram computes and an estimate draws), rounded to 0.01 ns."""
    return round(seconds / (n * (n + 1) / 2) * 1e9, 2)


def sampler_summary(timed: dict, n: int) -> dict:
    """Per shot count: each sampler's wall nanoseconds per estimated entry (its median less the copy's) and
    the native one's speed-up over numba (the calls' times, copy included) with its per-round quartiles;
    "pass": the native pass without draws, in the same unit."""
    copy = timed["sampler-copy/copy"].median
    out = {"pass": {"native_ns_per_entry": ns_per_entry(timed["sampler-native/pass"].median - copy, n)}}
    for name in timed:
        if name.startswith("sampler-native/shots="):
            call = name.split("/")[1]
            native, numba = timed[name], timed[f"sampler-numba/{call}"]
            r = timing.ratio(numba, native)
            out[call] = {"native_ns_per_entry": ns_per_entry(native.median - copy, n),
                         "numba_ns_per_entry": ns_per_entry(numba.median - copy, n),
                         "speedup": round(r["ratio"], 2), "speedup_q1": round(r["q1"], 2),
                         "speedup_q3": round(r["q3"], 2)}
    return out


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
    if args.samplers:
        pick_sampler("native")  # it compares the native sampler with numba: fail here, not after the Grams
        add_sampler_calls(calls, exact.astype(np.float32), shot_counts, fm.n_qubits, args.threads)
    checks, estimates = {}, {}

    def after(name, K):
        group, call = name.split("/")
        if call == "pass":  # P = 0 everywhere: every entry, the diagonal too, estimated as 0 without a draw
            if np.any(K):
                raise AssertionError("the pass without draws left a nonzero entry")
            return
        if group.startswith("sampler-"):  # the estimate alone: the same bits from both samplers
            if call in estimates and not np.array_equal(estimates.pop(call), K):
                raise AssertionError(f"the native and numba samplers differ at {call}")
            estimates.setdefault(call, K)
        elif call.startswith("shots="):  # mitigated noise included: its mean is the exact kernel too
            checks[name] = check_estimate(exact, K, int(call[len("shots="):].split("+")[0]))

    timed = timing.interleaved(calls, warmup=1, min_rounds=args.rounds, min_time=0.0, after=after)
    upper = exact[np.triu_indices(args.n, 1)]
    entries, summary = {}, {}
    for name, t in timed.items():
        backend, call = name.split("/")
        entry = {"backend": backend, "timing": t.as_dict(), "median_s": t.median}
        if backend.startswith("sampler-"):
            entries[name] = entry
            continue
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
              "sampler": pick_sampler(None), "samplers": sampler_summary(timed, args.n) if args.samplers else None,
              "exact_ns_per_entry": {b: ns_per_entry(timed[f"{b}/exact"].median, args.n) for b in backends},
              "off_diagonal": {"mean": float(upper.mean()), "std": float(upper.std())},
              "noise": noise.describe() if args.noise else None, "overhead": summary, "calls": entries,
              "note": "measured on a shared, loaded 2-core machine unless the environment says otherwise"}
    print(json.dumps(summary, indent=1), flush=True)
    host = env["machine"]["hostname"] or "machine"
    output = Path(args.output or Path("bench") / "results" / f"shots-{host}.json")
    write_result(output, result, allow_dirty=args.allow_dirty, started=started)
    print(f"wrote {output}")
    return 0
