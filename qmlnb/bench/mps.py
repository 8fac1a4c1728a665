"""Time exact MPS kernels (FeatureMap.mps + gram) per backend, against Qiskit Aer's MPS simulator.

Sections, all in one run on the same data (uniform random features in
[-pi, pi], ZZ map, ``--reps``, ``--entanglement``):

- ``exactness``: every backend's MPS Gram against the state-vector Gram at
  ``--exact-qubits`` qubits (max abs difference);
- ``configs``: an N sweep (``--n-sweep`` at ``--sweep-qubits``), a qubit
  sweep (``--qubit-sweep`` at ``--qubit-sweep-n`` samples) and the issue's
  targets (``--targets``, e.g. ``1000x50,1000x784,6400x165``).  Per
  configuration: ``FeatureMap.mps`` time and, per backend, ``gram`` times
  (a warm-up call on a subset first, excluded; then ``--repeats`` timed
  calls: median, quartiles, IQR, min), kernel entries per second (distinct
  entries: N (N + 1) / 2 for the symmetric Gram), the load average around
  the timings, the process CPU time and a ``noisy`` flag when the load
  exceeded the cores.  A backend whose estimated call time exceeds
  ``--max-seconds`` is skipped for that configuration, with the estimate.
- ``aer``: per configuration with n in ``--aer-qubits``, ``--aer-entries``
  sampled kernel entries computed by Qiskit Aer's ``matrix_product_state``
  method (one compute-uncompute circuit per entry, exact amplitude, in a
  subprocess: ``qmlnb.bench.mps_aer``), checked against our values, and the
  ratio of our best backend's entries per second to Aer's.  Skipped, with
  the reason, if qiskit-aer is not installed (``pip install .[compare]``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from ..kernels import FeatureMap, available_backends, gram
from ..lab.provenance import environment
from .._util import atomic_write_json, available_cores

MPS_BACKENDS = ("cpu", "numba", "openmp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reps", type=int, default=2, help="repetitions of the ZZ map (default 2)")
    parser.add_argument("--entanglement", choices=("linear", "circular"), default="linear")
    parser.add_argument("--n-sweep", default="250,500,1000", help="sample counts N of the N sweep")
    parser.add_argument("--sweep-qubits", type=int, default=50, help="qubits of the N sweep (default 50)")
    parser.add_argument("--qubit-sweep", default="16,50,165,784", help="qubit counts of the qubit sweep")
    parser.add_argument("--qubit-sweep-n", type=int, default=300, help="samples of the qubit sweep (default 300)")
    parser.add_argument("--targets", default="1000x50,1000x784,6400x165",
                        help="extra NxQUBITS configurations ('' for none)")
    parser.add_argument("--backends", default="all", help="comma-separated MPS backends, or 'all' usable ones")
    parser.add_argument("--threads", type=int, default=None, help="threads per call (default: the cores)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after the warm-up (default 5)")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="skip a backend for a configuration whose estimated call takes longer (default 120)")
    parser.add_argument("--exact-qubits", type=int, default=12, help="qubits of the exactness check (default 12)")
    parser.add_argument("--aer-entries", type=int, default=12, help="kernel entries sampled for Aer (0 skips it)")
    parser.add_argument("--aer-qubits", default="16,50,165", help="qubit counts at which Aer is run")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")


def features(n: int, n_qubits: int, seed: int = 0) -> np.ndarray:
    """(n, n_qubits) float64 uniform in [-pi, pi]."""
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, n_qubits))


def summary(times: list[float]) -> dict:
    """median, quartiles, IQR and min of a list of seconds, with the list."""
    q1, median, q3 = (float(v) for v in np.percentile(times, [25, 50, 75]))
    return {"median_s": median, "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1, "min_s": float(min(times)),
            "repeats": len(times), "all_s": times}


def timed(call, repeats: int) -> tuple[dict, dict]:
    """(summary of ``repeats`` timed calls, conditions: load average before/after, CPU seconds, noisy)."""
    cores = available_cores()
    load_before = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    load_after = os.getloadavg()[0]
    conditions = {"load_1min_before": load_before, "load_1min_after": load_after,
                  "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before, "wall_s": sum(times),
                  "noisy": max(load_before, load_after) > cores}
    return summary(times), conditions


def exactness(backends, n_qubits: int, reps: int, entanglement: str) -> dict:
    """Max |K_mps - K_statevector| per backend on 40 random samples."""
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement)
    X = features(40, n_qubits, seed=1)
    S = fm.states(X).astype(np.complex128)
    reference = np.abs(S @ S.conj().T) ** 2
    M = fm.mps(X)
    return {"n": 40, "n_qubits": n_qubits,
            "max_abs_difference": {b: float(np.abs(gram(M, backend=b) - reference).max()) for b in backends}}


def peak_traced_bytes(fm: FeatureMap, X: np.ndarray, backend: str, threads: int) -> int:
    """Peak bytes of NumPy/Python allocations (tracemalloc) of one untimed mps + gram call."""
    tracemalloc.start()
    try:
        M = fm.mps(X)
        K = gram(M, backend=backend, n_threads=threads)
        del M, K
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_config(n: int, n_qubits: int, args, backends, threads: int) -> dict:
    fm = FeatureMap(n_qubits=n_qubits, reps=args.reps, entanglement=args.entanglement)
    X = features(n, n_qubits)
    fm.mps(X[:8])
    states, states_conditions = timed(lambda: fm.mps(X), args.repeats)
    M = fm.mps(X)
    distinct = n * (n + 1) // 2
    row = {"n": n, "n_qubits": n_qubits, "reps": args.reps, "entanglement": args.entanglement,
           "bond_dim": M.bond_dim, "mps_bytes": M.nbytes, "distinct_entries": distinct,
           "states": {**states, "conditions": states_conditions}, "gram": {}}
    print(f"N={n} n={n_qubits} chi={M.bond_dim}: mps {states['median_s']:.3f} s", flush=True)
    for backend in backends:
        sub = min(n, 64)
        start = time.perf_counter()
        gram(M[:sub], backend=backend, n_threads=threads)  # warm-up: JIT, caches (excluded)
        warm_s = time.perf_counter() - start
        start = time.perf_counter()
        gram(M[:sub], backend=backend, n_threads=threads)
        estimate = (time.perf_counter() - start) * distinct / (sub * (sub + 1) // 2)
        if estimate > args.max_seconds:
            row["gram"][backend] = {"skipped": f"estimated {estimate:.0f} s per call > --max-seconds "
                                               f"{args.max_seconds:g}", "estimate_s": estimate}
            print(f"  {backend:<7} skipped (estimated {estimate:.0f} s)", flush=True)
            continue
        stats, conditions = timed(lambda: gram(M, backend=backend, n_threads=threads), args.repeats)
        stats.update({"warmup_subset_s": warm_s, "entries_per_s": distinct / stats["median_s"],
                      # CPU seconds of this process (all threads): a rate that a loaded machine changes less
                      "entries_per_cpu_s": distinct * args.repeats / max(conditions["cpu_s"], 1e-9),
                      "states_plus_gram_s": states["median_s"] + stats["median_s"], "conditions": conditions})
        row["gram"][backend] = stats
        print(f"  {backend:<7} {stats['median_s']:.3f} s (IQR {stats['iqr_s']:.3f})  "
              f"{stats['entries_per_s']:.3g} entries/s  load {conditions['load_1min_after']:.1f}", flush=True)
    timed_backends = [b for b in backends if "median_s" in row["gram"][b]]
    if timed_backends:
        best = min(timed_backends, key=lambda b: row["gram"][b]["median_s"])
        row["best_backend"] = best
        row["peak_traced_mib"] = peak_traced_bytes(fm, X, best, threads) / 2**20
    return row


def aer_entries(X: np.ndarray, fm: FeatureMap, count: int, threads: int, seed: int = 2) -> dict:
    """``count`` random off-diagonal entries by Qiskit Aer MPS (subprocess), compared with ours."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(X), count)
    j = (i + 1 + rng.integers(0, len(X) - 1, count)) % len(X)
    x = X * fm.bandwidth
    request = {"pairs": [[x[a].tolist(), x[b].tolist()] for a, b in zip(i, j)], "reps": fm.reps,
               "entanglement": fm.entanglement, "threads": threads}
    proc = subprocess.run([sys.executable, "-m", "qmlnb.bench.mps_aer"], input=json.dumps(request),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"skipped": f"qmlnb.bench.mps_aer failed: {proc.stderr.strip().splitlines()[-1:]}"}
    result = json.loads(proc.stdout)
    ours = np.array([gram(fm.mps(X[[a]]), fm.mps(X[[b]]))[0, 0] for a, b in zip(i, j)])
    values = np.array(result["values"])
    return {"entries": count, "build_s": result["build_s"], "run_s": result["run_s"],
            "entries_per_s_run": count / result["run_s"],
            "entries_per_s_with_build": count / (result["run_s"] + result["build_s"]),
            "max_abs_difference": float(np.abs(values - ours).max()),
            "max_value": float(values.max()), "versions": result["versions"]}


def aer_available() -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-c", "import qiskit, qiskit_aer"], capture_output=True, text=True)
    if proc.returncode:
        return False, "qiskit/qiskit-aer not installed (pip install .[compare])"
    return True, ""


def parse_pairs(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip()]


def run(args) -> int:
    usable = [b for b in MPS_BACKENDS if available_backends()[b][0]]
    backends = usable if args.backends == "all" else [b.strip() for b in args.backends.split(",")]
    threads = args.threads or available_cores()
    configs = [(n, args.sweep_qubits) for n in (int(v) for v in args.n_sweep.split(",") if v.strip())]
    configs += [(args.qubit_sweep_n, q) for q in (int(v) for v in args.qubit_sweep.split(",") if v.strip())]
    configs += parse_pairs(args.targets)
    configs = list(dict.fromkeys(configs))  # in order, without repeats
    print(f"qmlnb bench mps: backends={backends}, threads={threads}, configs={configs}", flush=True)
    # where and on which commit, taken before anything runs: the code measured is the code imported now
    result = {"benchmark": "mps", "environment": environment(),
              "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "run"},
              "threads": threads, "backends": backends,
              "exactness": exactness(backends, args.exact_qubits, args.reps, args.entanglement)}
    print(f"exactness at n={args.exact_qubits}: {result['exactness']['max_abs_difference']}", flush=True)
    aer_ok, aer_reason = aer_available() if args.aer_entries else (False, "--aer-entries 0")
    aer_qubits = {int(v) for v in args.aer_qubits.split(",") if v.strip()}
    rows = []
    for n, n_qubits in configs:
        row = bench_config(n, n_qubits, args, backends, threads)
        if n_qubits in aer_qubits and "best_backend" in row:
            if aer_ok:
                fm = FeatureMap(n_qubits=n_qubits, reps=args.reps, entanglement=args.entanglement)
                aer = aer_entries(features(n, n_qubits), fm, args.aer_entries, threads)
                if "entries_per_s_run" in aer:
                    best = row["gram"][row["best_backend"]]["entries_per_s"]
                    aer["ratio_best_backend_vs_aer_run"] = best / aer["entries_per_s_run"]
                    aer["ratio_best_backend_vs_aer_with_build"] = best / aer["entries_per_s_with_build"]
                    print(f"  aer     {aer['entries_per_s_run']:.3g} entries/s (run only); ours "
                          f"{aer['ratio_best_backend_vs_aer_run']:.3g}x; max |diff| {aer['max_abs_difference']:.2g}",
                          flush=True)
                row["aer_mps"] = aer
            else:
                row["aer_mps"] = {"skipped": aer_reason}
        rows.append(row)
        if args.json:  # keep what is measured if a later configuration is interrupted
            atomic_write_json(args.json, {**result, "configs": rows, "complete": False})
    result["configs"] = rows
    result["complete"] = True
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["environment"]["versions"]["qiskit-aer"] = _version("qiskit-aer")
    result["environment"]["finished"] = environment()["timestamp"]
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _version(name: str):
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
