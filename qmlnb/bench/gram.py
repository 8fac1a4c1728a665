"""Time feature-map states and the Gram matrix per backend, against BLAS and PennyLane.

Three sections, each compared with the tool a user would otherwise reach for,
in the same run and on the same data:

- ``states``: ``FeatureMap.states`` against PennyLane ``default.qubit`` with
  parameter broadcasting on the same circuit;
- ``gram``: every requested backend at every requested thread count against
  SciPy's BLAS ``cherk`` on the same states (the CPU matrix-product limit),
  timed in interleaved rounds, and, on a CUDA machine, a plain complex64 ``torch.matmul`` of the same shape;
- ``pennylane_kernel``: PennyLane's per-pair ``qml.kernels.square_kernel_matrix``
  on a few samples, as kernel entries (pairs) per second;
- ``peers`` (``--peers tensorcircuit``): TensorCircuit-NG on JAX (``vmap`` +
  ``jit`` of the same circuit, complex64) on the states section's data, timed
  interleaved with ours in one process: states alone, and states plus the Gram
  (ours: ``FeatureMap.states`` then ``gram`` on ``--peer-backend``; theirs: one
  jitted function), with wall and CPU seconds and the largest differences.

GFLOP/s are counted as 8 * N * M * 2**n / seconds: the full matrix's complex
multiply-adds, also for the symmetric case where only the triangle is
computed, so that the numbers compare directly with ``cherk``'s.

Every time comes from :mod:`qmlnb.timing`: a warm-up call apart (its seconds
are ``first_call_s`` / ``compile_s``), then at least ``--repeats`` calls and
``--min-time`` seconds; ``seconds`` is the median, ``timing`` holds the
quartiles, IQR, load average, CPU time and the ``noisy`` flag.  The Gram
section runs every backend at every thread count and ``cherk`` at every
thread count in the same interleaved rounds, so ``vs_cherk`` and
``speedup_vs_1_thread`` pair calls made at the same moments.
"""
from __future__ import annotations

import argparse
import functools
import resource
from pathlib import Path

import numpy as np

from .. import timing
from ..kernels import FeatureMap, available_backends, gram
from ..kernels.blas_reference import cherk_call, gram_throughput
from ..kernels.pennylane_reference import states_vs_pennylane
from ..lab.provenance import environment
from .._util import atomic_write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-qubits", type=int, default=10, help="qubits of the Gram section (default 10)")
    parser.add_argument("--n", type=int, default=4096, help="samples N of the Gram section (default 4096)")
    parser.add_argument("--backends", default="all", help="comma-separated backends, or 'all' usable ones")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--tile", type=int, default=None, help="tile edge (default: each backend's)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats (interleaved rounds) after a warm-up; the median is reported (default 5)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="repeat until the timed calls add up to this many seconds too (default 0.2)")
    parser.add_argument("--dataset", choices=("random", "digits"), default="random",
                        help="embeddings: uniform random angles, or sklearn digits reduced by PCA to n-qubits")
    parser.add_argument("--states-n", type=int, default=2000, help="samples of the states section (default 2000)")
    parser.add_argument("--states-qubits", type=int, default=12, help="qubits of the states section (default 12)")
    parser.add_argument("--pennylane-n", type=int, default=12,
                        help="samples for PennyLane's per-pair square_kernel_matrix (default 12; 0 skips it)")
    parser.add_argument("--peers", default="", help="comma-separated peers timed against ours: tensorcircuit")
    parser.add_argument("--peer-backend", default="openmp",
                        help="our Gram backend in the peers' states+Gram comparison (default openmp)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")


def embeddings(n: int, n_qubits: int, dataset: str, seed: int = 0) -> np.ndarray:
    """(n, n_qubits) float64 angles: uniform in [-pi, pi] ("random"), or the digits' PCA angles in [0, pi]."""
    if dataset == "random":
        return np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, n_qubits))
    from sklearn.datasets import load_digits

    from ..data.angles import pca_angles

    images = load_digits().data
    if n > len(images):
        raise ValueError(f"--dataset digits has {len(images)} samples; asked for --n {n}")
    return pca_angles(images[:n], n_components=n_qubits)[0]  # the lab's convention: [0, pi] on the fitted range


def bench_states(n: int, n_qubits: int, dataset: str, repeats: int, min_time: float) -> dict:
    """FeatureMap.states against PennyLane default.qubit with broadcasting, interleaved on the same angles."""
    X = embeddings(n, n_qubits, dataset if n <= 1797 else "random")
    return states_vs_pennylane(FeatureMap(n_qubits=n_qubits, reps=2), X, rounds=repeats, min_time=min_time)


PEERS = ("tensorcircuit",)


def bench_tensorcircuit(n: int, n_qubits: int, dataset: str, repeats: int, min_time: float, backend: str) -> dict:
    """Ours against TensorCircuit-NG (JAX), interleaved: states, and states plus the Gram, on the same data."""
    from . import tensorcircuit_peer as peer

    fm = FeatureMap(n_qubits=n_qubits, reps=2)
    X = embeddings(n, n_qubits, dataset if n <= 1797 else "random")
    X32 = X.astype(np.float32)
    tc_states, tc_total = peer.tensorcircuit_functions(fm)
    calls = {
        "qmlnb_states": lambda: fm.states(X),
        "tensorcircuit_states": lambda: peer.to_numpy(tc_states(X32)),
        "qmlnb_states_gram": lambda: gram(fm.states(X), backend=backend),
        "tensorcircuit_states_gram": lambda: peer.to_numpy(tc_total(X32)),
    }
    timed = timing.interleaved(calls, min_rounds=repeats, min_time=min_time)
    states_ratio = timing.ratio(timed["tensorcircuit_states"], timed["qmlnb_states"])
    total_ratio = timing.ratio(timed["tensorcircuit_states_gram"], timed["qmlnb_states_gram"])

    def cpu_per_call(t):
        return t.cpu_s / t.n

    return {
        "peer": "tensorcircuit", "n": n, "n_qubits": n_qubits, "reps": 2, "gram_backend": backend,
        "versions": peer.versions(),
        "timings": {name: t.as_dict() for name, t in timed.items()},
        "states_speedup": states_ratio["ratio"], "states_speedup_rounds": states_ratio,
        "states_gram_speedup": total_ratio["ratio"], "states_gram_speedup_rounds": total_ratio,
        "states_speedup_cpu": cpu_per_call(timed["tensorcircuit_states"]) / cpu_per_call(timed["qmlnb_states"]),
        "states_gram_speedup_cpu": (cpu_per_call(timed["tensorcircuit_states_gram"])
                                    / cpu_per_call(timed["qmlnb_states_gram"])),
        "max_abs_difference_states": float(np.abs(timed["qmlnb_states"].value
                                                  - timed["tensorcircuit_states"].value).max()),
        "max_abs_difference_gram": float(np.abs(timed["qmlnb_states_gram"].value
                                                - timed["tensorcircuit_states_gram"].value).max()),
        "noisy": any(t.noisy for t in timed.values()),
    }


def bench_pennylane_kernel(fm: FeatureMap, X: np.ndarray) -> dict:
    """PennyLane's per-pair kernel: one circuit U(x) U(y)^dagger per entry."""
    import pennylane as qml

    dev = qml.device("default.qubit", wires=fm.n_qubits)

    @qml.qnode(dev)
    def overlap(x, y):
        fm.circuit(x)
        qml.adjoint(fm.circuit)(y)
        return qml.probs(wires=range(fm.n_qubits))

    def kernel(x, y):
        return overlap(x, y)[0]

    # one call, no warm-up: per-pair circuits take seconds to minutes, and PennyLane compiles nothing
    timed = timing.measure(lambda: qml.kernels.square_kernel_matrix(X, kernel, assume_normalized_kernel=True),
                           warmup=0, min_repeats=1, min_time=0.0)
    seconds = timed.median
    n = len(X)
    pairs = n * (n - 1) // 2  # the diagonal is assumed 1, not evaluated
    return {"n": n, "n_qubits": fm.n_qubits, "seconds": seconds, "pairs": pairs,
            "pairs_per_s": pairs / seconds, "timing": timed.as_dict(), "K": np.asarray(timed.value)}


def run(args) -> int:
    usable = {name for name, (ok, _) in available_backends().items() if ok}
    names = sorted(usable) if args.backends == "all" else [b.strip() for b in args.backends.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    n, n_qubits, repeats = args.n, args.n_qubits, args.repeats
    print(f"qmlnb bench gram: N={n}, n_qubits={n_qubits}, backends={names}, threads={threads}", flush=True)

    result = {"benchmark": "gram", "params": {k: str(v) if isinstance(v, Path) else v
                                               for k, v in vars(args).items() if k != "run"},
              "backends_available": {k: list(v) for k, v in available_backends().items()}}

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise ValueError(f"--peers: unknown peer(s) {unknown}; known: {list(PEERS)}")
    result["states"] = bench_states(args.states_n, args.states_qubits, args.dataset, repeats, args.min_time)
    s = result["states"]
    print(f"states N={s['n']} n={s['n_qubits']}: qmlnb {s['qmlnb_s']:.3f} s, PennyLane broadcast "
          f"{s['pennylane_broadcast_s']:.3f} s -> {s['speedup']:.1f}x", flush=True)
    if "tensorcircuit" in peers:
        p = bench_tensorcircuit(args.states_n, args.states_qubits, args.dataset, repeats, args.min_time,
                                args.peer_backend)
        result["peers"] = {"tensorcircuit": p}
        print(f"  vs TensorCircuit-NG: states {p['states_speedup']:.2f}x (CPU {p['states_speedup_cpu']:.2f}x), "
              f"states+gram {p['states_gram_speedup']:.2f}x (CPU {p['states_gram_speedup_cpu']:.2f}x)"
              f"{'  (noisy)' if p['noisy'] else ''}", flush=True)

    fm = FeatureMap(n_qubits=n_qubits, reps=2)
    X = embeddings(n, n_qubits, args.dataset)
    states = timing.measure(lambda: fm.states(X), min_repeats=repeats, min_time=args.min_time)
    S = states.value
    dim = S.shape[1]
    result["gram_states_s"] = states.median
    result["gram_states_timing"] = states.as_dict()

    # every backend at every thread count and cherk at every thread count, in the same rounds
    reference = gram(S, backend="cpu")
    calls = {}
    for t in threads:
        calls[("cherk", t)] = cherk_call(S, t)
        for name in names:
            calls[(name, t)] = functools.partial(gram, S, backend=name, tile=args.tile, n_threads=t)
    timed = timing.interleaved({f"{name}@{t}": call for (name, t), call in calls.items()},
                               min_rounds=repeats, min_time=args.min_time)
    timed = {key: timed[f"{key[0]}@{key[1]}"] for key in calls}

    rows, cherk = [], {}
    for t in threads:
        c = timed["cherk", t]
        cherk[t] = {"threads": t, **gram_throughput(c.median, n, n, dim), "all_seconds": c.times, "timing": c.as_dict()}
        print(f"  blas cherk        threads={t}: {c.median:.3f} s  {cherk[t]['gflops']:.1f} GFLOP/s"
              f"{'  (noisy)' if c.noisy else ''}", flush=True)
        for name in names:
            b = timed[name, t]
            vs_cherk = timing.ratio(c, b)
            row = {"backend": name, "threads": t, **gram_throughput(b.median, n, n, dim), "all_seconds": b.times,
                   "first_call_s": b.compile_s, "iqr_s": b.iqr, "noisy": b.noisy, "timing": b.as_dict(),
                   "max_abs_difference_vs_cpu": float(np.abs(b.value - reference).max()),
                   "vs_cherk": vs_cherk["ratio"], "vs_cherk_median_of_rounds": vs_cherk["median"],
                   "vs_cherk_rounds": vs_cherk}
            if 1 in threads:
                one = timing.ratio(timed[name, 1], b)
                row |= {"speedup_vs_1_thread": one["ratio"], "speedup_vs_1_thread_rounds": one}
            else:
                row["speedup_vs_1_thread"] = None
            rows.append(row)
            print(f"  {name:<17} threads={t}: {b.median:.3f} s (IQR {b.iqr:.3f})  {row['gflops']:.1f} GFLOP/s  "
                  f"{row['vs_cherk']:.2f}x cherk{'  (noisy)' if b.noisy else ''}", flush=True)
    del timed, calls
    result["gram"] = rows
    result["baselines"] = {"blas_cherk": list(cherk.values())}
    result["noisy"] = any(r["noisy"] for r in rows) or any(c["timing"]["noisy"] for c in cherk.values())

    gpu = gpu_matmul_baseline(S, repeats, args.min_time)
    if gpu is not None:
        result["baselines"]["torch_matmul_cuda"] = gpu

    if args.pennylane_n:
        pl = bench_pennylane_kernel(fm, X[: args.pennylane_n])
        K_ours = gram(S[: args.pennylane_n], backend="cpu")
        pl["max_abs_difference"] = float(np.abs(np.asarray(pl.pop("K")) - K_ours).max())
        best = min(rows, key=lambda r: r["seconds"]) if rows else None
        if best:
            pl["best_backend"] = best["backend"]
            pl["speedup_pairs_per_s"] = best["pairs_per_s"] / pl["pairs_per_s"]
        result["baselines"]["pennylane_square_kernel_matrix"] = pl
        print(f"  pennylane square_kernel_matrix N={pl['n']}: {pl['pairs_per_s']:.1f} pairs/s"
              + (f"; best backend {pl['speedup_pairs_per_s']:.2e}x" if best else ""), flush=True)

    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["environment"] = environment()
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def gpu_matmul_baseline(S: np.ndarray, repeats: int, min_time: float = 0.2) -> dict | None:
    """The plain complex64 torch.matmul of the same shape on CUDA, when there is a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from .gpu_baseline import matmul_baseline

    return matmul_baseline(S, torch.device("cuda"), repeats=repeats, min_time=min_time)
