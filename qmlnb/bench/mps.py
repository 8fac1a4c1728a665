"""Time exact MPS kernels (FeatureMap.mps + gram) per backend, against Qiskit Aer's MPS simulator.

Sections, all in one run on the same data (uniform random features in
[-pi, pi], ZZ map, ``--reps``, ``--entanglement``), at a bandwidth per
configuration where the kernel is not numerically the identity: with
``--bandwidth auto`` the largest of 1, 1/2, 1/4, ... whose median
off-diagonal entry on 48 samples is at least ``--min-median`` (1e-2), and
the full Gram's median off-diagonal entry is recorded (``median_offdiagonal``).
Features in [-pi, pi] at bandwidth 1 give entries of 1e-10 at n = 50 and
1e-235 at n = 784: a kernel that returned the identity would pass.

Per backend: ``ns_per_site_pair_cpu`` (CPU seconds of all threads per
distinct entry and site) and ``fraction_of_peak``: the structured
arithmetic (``flops_per_site_pair``: 8 c^3 for linear chains with
c = 2**reps, 8 c^5 for the circular ring's c^2 blocks of c x c) per CPU
second over the machine's float32 FMA rate per core and CPU second, measured
once per run (``machine.fma_gflops_per_core``: ``qmlnb._mps_openmp.fma_rate``).
For ``openmp``, ``parts`` times the call's two parts alone: the norms' check
that ``gram`` runs first and the native kernel (its own ns per site-pair and
fraction of peak).

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
  subprocess: ``qmlnb.bench.mps_aer``), ``--aer-samples`` times, checked
  against our values (relative difference), and the ratio of our best
  backend's entries per second to the median of Aer's samples.  Skipped, with
  the reason, if qiskit-aer is not installed (``pip install .[compare]``).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from .. import timing
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
    parser.add_argument("--aer-samples", type=int, default=3,
                        help="Aer runs per configuration; the median rate is compared (default 3)")
    parser.add_argument("--bandwidth", default="auto",
                        help="feature bandwidth, or 'auto': per configuration, the largest 2**-k whose median "
                             "off-diagonal entry reaches --min-median (default auto)")
    parser.add_argument("--min-median", type=float, default=1e-2,
                        help="median off-diagonal entry --bandwidth auto aims at (default 1e-2)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")


def features(n: int, n_qubits: int, seed: int = 0) -> np.ndarray:
    """(n, n_qubits) float64 uniform in [-pi, pi]."""
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, n_qubits))


def timed_repeats(call, repeats: int) -> tuple[dict, dict, object]:
    """(statistics of ``repeats`` timed calls, conditions: load average before/after, CPU seconds, noisy;
    the last call's value).

    The calls are timed by :func:`qmlnb.timing.measure` (the caller warms up first).
    """
    t = timing.measure(call, warmup=0, min_repeats=repeats, max_repeats=repeats, min_time=0.0)
    stats = {"median_s": t.median, "q1_s": t.q1, "q3_s": t.q3, "iqr_s": t.iqr, "min_s": t.min,
             "repeats": t.n, "all_s": [float(v) for v in t.times]}
    conditions = {"load_1min_before": t.load_before, "load_1min_after": t.load_after, "cpu_s": t.cpu_s,
                  "wall_s": t.wall_s, "own_cores": t.own_cores, "noisy": t.noisy}
    return stats, conditions, t.value


def flops_per_site_pair(reps: int, circular: bool) -> int:
    """Flops of the structured contraction per site and pair: chi^3 complex multiply-adds of 8 flops.

    Linear chains: chi = c = 2**reps.  The circular ring (chi = c^2) is block
    diagonal in the first column's bits: c^2 independent c x c environments.
    """
    c = 2**reps
    return 8 * c**5 if circular else 8 * c**3


def machine_peak(seconds: float = 0.3) -> dict:
    """The float32 FMA rate of one core (best of 3 probes of ~``seconds``), from the MPS extension.

    Flops per CPU second of the probing thread, like ``ns_per_site_pair_cpu``: on a shared machine the
    wall-clock rate also counts the time other processes hold the core (it read 61 GFLOP/s under load 8;
    the CPU-time rate read 161 to 169 under load 9 to 11).
    """
    try:
        from qmlnb import _mps_openmp
    except ImportError as exc:
        return {"skipped": f"qmlnb._mps_openmp is not built ({exc})"}
    rate = _mps_openmp.fma_rate(1 << 20)  # a first estimate sizes the probes: 2 flops x lanes x 12 chains per round
    iterations = max(1 << 20, int(seconds * rate / (2 * _mps_openmp.LANES * 12)))
    rates = [_mps_openmp.fma_rate(iterations) for _ in range(3)]
    return {"fma_gflops_per_core": max(rates) / 1e9, "probes_gflops": [r / 1e9 for r in rates],
            "lanes": _mps_openmp.LANES, "load_1min": timing.load_average(),
            "method": "12 independent chains of 16-lane float32 FMAs, one thread, per thread CPU second, best of 3"}


def median_offdiagonal(K: np.ndarray) -> float:
    return float(np.median(K[~np.eye(len(K), dtype=bool)])) if len(K) > 1 else float("nan")


def choose_bandwidth(n_qubits: int, args) -> float:
    """``--bandwidth``, or with 'auto' the largest 2**-k (k <= 20) whose median entry on 48 samples >= --min-median."""
    if args.bandwidth != "auto":
        return float(args.bandwidth)
    X = features(48, n_qubits, seed=5)
    bandwidth = 1.0
    for _ in range(21):
        fm = FeatureMap(n_qubits=n_qubits, reps=args.reps, entanglement=args.entanglement, bandwidth=bandwidth)
        if median_offdiagonal(gram(fm.mps(X), backend="cpu")) >= args.min_median:
            return bandwidth
        bandwidth /= 2
    return bandwidth


def exactness(backends, n_qubits: int, reps: int, entanglement: str, bandwidth: float) -> dict:
    """Max absolute and relative (entries above 1e-30) |K_mps - K_statevector| per backend on 40 samples."""
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=bandwidth)
    X = features(40, n_qubits, seed=1)
    S = fm.states(X).astype(np.complex128)
    reference = np.abs(S @ S.conj().T) ** 2
    kept = reference > 1e-30
    M = fm.mps(X)
    values = {b: gram(M, backend=b) for b in backends}
    return {"n": 40, "n_qubits": n_qubits, "bandwidth": bandwidth,
            "median_offdiagonal": median_offdiagonal(reference),
            "max_abs_difference": {b: float(np.abs(K - reference).max()) for b, K in values.items()},
            "max_rel_difference_above_1e-30": {b: float((np.abs(K - reference)[kept] / reference[kept]).max())
                                               for b, K in values.items()}}


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


def openmp_parts(M, threads: int, repeats: int, flops: int, per_core, distinct: int) -> dict:
    """The ``openmp`` Gram call's parts, each timed alone over ``repeats`` calls: the norms' check that
    ``gram`` runs first (the backend's native ``mps_self_log_overlap``, float64) and the native kernel
    (``_mps_openmp.gram`` on the tensors at the backend's default tile), with the kernel's own ns of CPU
    per site-pair and fraction of peak."""
    from qmlnb import _mps_openmp

    from ..kernels.backends.openmp_native import MPS_DEFAULT_TILE, mps_self_log_overlap

    tensors = M.tensors
    out = np.empty((tensors.shape[0], tensors.shape[0]))
    norms, norms_conditions, _ = timed_repeats(lambda: mps_self_log_overlap(tensors, threads), repeats)
    kernel, kernel_conditions, _ = timed_repeats(lambda: _mps_openmp.gram(tensors, None, out, MPS_DEFAULT_TILE, threads),
                                                 repeats)
    ns = kernel_conditions["cpu_s"] / (repeats * distinct * tensors.shape[1]) * 1e9
    return {"norms_check": {**norms, "cpu_s_per_call": norms_conditions["cpu_s"] / repeats,
                            "conditions": norms_conditions},
            "kernel": {**kernel, "cpu_s_per_call": kernel_conditions["cpu_s"] / repeats, "tile": MPS_DEFAULT_TILE,
                       "ns_per_site_pair_cpu": ns, "fraction_of_peak": flops / ns / per_core if per_core else None,
                       "conditions": kernel_conditions}}


def bench_config(n: int, n_qubits: int, args, backends, threads: int, peak: dict) -> dict:
    bandwidth = choose_bandwidth(n_qubits, args)
    fm = FeatureMap(n_qubits=n_qubits, reps=args.reps, entanglement=args.entanglement, bandwidth=bandwidth)
    X = features(n, n_qubits)
    fm.mps(X[:8])
    states, states_conditions, _ = timed_repeats(lambda: fm.mps(X), args.repeats)
    M = fm.mps(X)
    distinct = n * (n + 1) // 2
    flops = flops_per_site_pair(args.reps, fm._circular_ring)
    row = {"n": n, "n_qubits": n_qubits, "reps": args.reps, "entanglement": args.entanglement,
           "bandwidth": bandwidth, "flops_per_site_pair": flops, "bond_dim": M.bond_dim, "mps_bytes": M.nbytes, "distinct_entries": distinct,
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
        stats, conditions, K = timed_repeats(lambda: gram(M, backend=backend, n_threads=threads), args.repeats)
        if "median_offdiagonal" not in row:
            row["median_offdiagonal"] = median_offdiagonal(K)
        del K
        ns = conditions["cpu_s"] / (args.repeats * distinct * n_qubits) * 1e9
        per_core = peak.get("fma_gflops_per_core")
        stats.update({"ns_per_site_pair_cpu": ns,
                      "fraction_of_peak": flops / ns / per_core if per_core else None,
                      "warmup_subset_s": warm_s, "entries_per_s": distinct / stats["median_s"],
                      # CPU seconds of this process (all threads): a rate that a loaded machine changes less
                      "entries_per_cpu_s": distinct * args.repeats / max(conditions["cpu_s"], 1e-9),
                      "states_plus_gram_s": states["median_s"] + stats["median_s"], "conditions": conditions})
        if backend == "openmp":  # where the call's CPU time goes: the norms' check and the kernel
            stats["parts"] = openmp_parts(M, threads, args.repeats, flops, per_core, distinct)
            kernel = stats["parts"]["kernel"]
            print(f"          kernel alone {kernel['ns_per_site_pair_cpu']:.1f} ns CPU per site-pair, norms' check "
                  f"{stats['parts']['norms_check']['cpu_s_per_call']:.3f} CPU s", flush=True)
        row["gram"][backend] = stats
        print(f"  {backend:<7} {stats['median_s']:.3f} s (IQR {stats['iqr_s']:.3f})  "
              f"{stats['entries_per_s']:.3g} entries/s  {ns:.1f} ns CPU per site-pair  "
              f"load {conditions['load_1min_after']:.1f}", flush=True)
    timed_backends = [b for b in backends if "median_s" in row["gram"][b]]
    if timed_backends:
        best = min(timed_backends, key=lambda b: row["gram"][b]["median_s"])
        row["best_backend"] = best
        row["peak_traced_mib"] = peak_traced_bytes(fm, X, best, threads) / 2**20
    return row


def aer_entries(X: np.ndarray, fm: FeatureMap, count: int, threads: int, samples: int = 3, seed: int = 2) -> dict:
    """``count`` random off-diagonal entries by Qiskit Aer MPS (subprocess, ``samples`` runs), against ours.

    The rate is the median of the runs'; the difference is relative, on entries above 1e-30.
    """
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(X), count)
    j = (i + 1 + rng.integers(0, len(X) - 1, count)) % len(X)
    x = X * fm.bandwidth
    request = {"pairs": [[x[a].tolist(), x[b].tolist()] for a, b in zip(i, j)], "reps": fm.reps,
               "entanglement": fm.entanglement, "threads": threads}
    runs = []
    for _ in range(samples):
        proc = subprocess.run([sys.executable, "-m", "qmlnb.bench.mps_aer"], input=json.dumps(request),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return {"skipped": f"qmlnb.bench.mps_aer failed: {proc.stderr.strip().splitlines()[-1:]}"}
        runs.append(json.loads(proc.stdout))
    ours = np.array([gram(fm.mps(X[[a]]), fm.mps(X[[b]]))[0, 0] for a, b in zip(i, j)])
    values = np.array(runs[-1]["values"])
    kept = values > 1e-30
    run_s = float(np.median([r["run_s"] for r in runs]))
    build_s = float(np.median([r["build_s"] for r in runs]))
    return {"entries": count, "samples": samples, "build_s": build_s, "run_s": run_s,
            "all_run_s": [r["run_s"] for r in runs], "entries_per_s_run": count / run_s,
            "entries_per_s_with_build": count / (run_s + build_s),
            "max_abs_difference": float(np.abs(values - ours).max()),
            "max_rel_difference_above_1e-30": float((np.abs(values - ours)[kept] / values[kept]).max())
            if kept.any() else None,
            "median_value": float(np.median(values)), "max_value": float(values.max()),
            "versions": runs[-1]["versions"]}


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
              "threads": threads, "backends": backends, "machine": machine_peak(),
              "exactness": exactness(backends, args.exact_qubits, args.reps, args.entanglement,
                                     choose_bandwidth(args.exact_qubits, args))}
    print(f"float32 FMA peak: {result['machine'].get('fma_gflops_per_core', float('nan')):.1f} GFLOP/s per core",
          flush=True)
    print(f"exactness at n={args.exact_qubits}: {result['exactness']['max_abs_difference']}", flush=True)
    aer_ok, aer_reason = aer_available() if args.aer_entries else (False, "--aer-entries 0")
    aer_qubits = {int(v) for v in args.aer_qubits.split(",") if v.strip()}
    rows = []
    for n, n_qubits in configs:
        row = bench_config(n, n_qubits, args, backends, threads, result["machine"])
        if n_qubits in aer_qubits and "best_backend" in row:
            if aer_ok:
                fm = FeatureMap(n_qubits=n_qubits, reps=args.reps, entanglement=args.entanglement,
                                bandwidth=row["bandwidth"])
                aer = aer_entries(features(n, n_qubits), fm, args.aer_entries, threads, args.aer_samples)
                if "entries_per_s_run" in aer:
                    best = row["gram"][row["best_backend"]]["entries_per_s"]
                    aer["ratio_best_backend_vs_aer_run"] = best / aer["entries_per_s_run"]
                    aer["ratio_best_backend_vs_aer_with_build"] = best / aer["entries_per_s_with_build"]
                    print(f"  aer     {aer['entries_per_s_run']:.3g} entries/s (run only, median of "
                          f"{aer['samples']}); ours {aer['ratio_best_backend_vs_aer_run']:.3g}x; max relative diff "
                          f"{aer['max_rel_difference_above_1e-30']}", flush=True)
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
