"""Time feature-map states and the Gram matrix per backend, against BLAS and PennyLane.

Three sections, each compared with the tool a user would otherwise reach for,
in the same run and on the same data:

- ``states``: ``FeatureMap.states`` against PennyLane ``default.qubit`` with
  parameter broadcasting on the same circuit;
- ``gram``: every requested backend at every requested thread count against
  SciPy's BLAS ``cherk`` on the same states (the CPU matrix-product limit),
  timed in interleaved rounds, and, on a CUDA machine, a plain complex64 ``torch.matmul`` of the same shape;
- ``pennylane_kernel``: PennyLane's per-pair ``qml.kernels.square_kernel_matrix``
  on a few samples, as kernel entries (pairs) per second.

GFLOP/s are counted as 8 * N * M * 2**n / seconds: the full matrix's complex
multiply-adds, also for the symmetric case where only the triangle is
computed, so that the numbers compare directly with ``cherk``'s.
"""
from __future__ import annotations

import argparse
import functools
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from ..kernels import FeatureMap, available_backends, gram
from ..lab.provenance import environment
from .._util import atomic_write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-qubits", type=int, default=10, help="qubits of the Gram section (default 10)")
    parser.add_argument("--n", type=int, default=4096, help="samples N of the Gram section (default 4096)")
    parser.add_argument("--backends", default="all", help="comma-separated backends, or 'all' usable ones")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--tile", type=int, default=None, help="tile edge (default: each backend's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--dataset", choices=("random", "digits"), default="random",
                        help="embeddings: uniform random angles, or sklearn digits reduced by PCA to n-qubits")
    parser.add_argument("--states-n", type=int, default=2000, help="samples of the states section (default 2000)")
    parser.add_argument("--states-qubits", type=int, default=12, help="qubits of the states section (default 12)")
    parser.add_argument("--pennylane-n", type=int, default=12,
                        help="samples for PennyLane's per-pair square_kernel_matrix (default 12; 0 skips it)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")


def embeddings(n: int, n_qubits: int, dataset: str, seed: int = 0) -> np.ndarray:
    """(n, n_qubits) float64 features in [-pi, pi]."""
    if dataset == "random":
        return np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, n_qubits))
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    images = load_digits().data
    if n > len(images):
        raise ValueError(f"--dataset digits has {len(images)} samples; asked for --n {n}")
    features = PCA(n_qubits, random_state=seed).fit_transform(images[:n])
    return np.pi * features / np.abs(features).max(axis=0)


def median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``repeats`` calls (after none: callers warm up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def throughput(seconds: float, n: int, m: int, dim: int) -> dict:
    return {
        "seconds": seconds,
        "pairs_per_s": n * m / seconds,
        "gflops": 8.0 * n * m * dim / seconds / 1e9,
    }


def bench_states(n: int, n_qubits: int, dataset: str, repeats: int) -> dict:
    """FeatureMap.states against PennyLane default.qubit with broadcasting."""
    fm = FeatureMap(n_qubits=n_qubits, reps=2)
    X = embeddings(n, n_qubits, dataset if n <= 1797 else "random")
    fm.states(X[:8])  # warm up
    ours, _ = median_seconds(lambda: fm.states(X), repeats)
    qnode = fm.qnode("default.qubit")
    start = time.perf_counter()
    reference = np.asarray(qnode(X))  # one broadcast execution of the whole batch
    pennylane = time.perf_counter() - start
    error = float(np.abs(fm.states(X) - reference).max())
    return {"n": n, "n_qubits": n_qubits, "qmlnb_s": ours, "pennylane_broadcast_s": pennylane,
            "speedup": pennylane / ours, "max_abs_difference": error}


def cherk_call(S: np.ndarray, threads: int):
    """A callable running SciPy's BLAS cherk (S S^H, one triangle) on ``threads``."""
    from scipy.linalg import blas

    from ..kernels.backends.cpu_blas import blas_threads

    def call():
        with blas_threads().limit(limits=threads, user_api="blas"):
            blas.cherk(1.0, S.T, trans=2)

    return call


def interleaved_seconds(calls: dict, repeats: int) -> dict:
    """{name: [seconds, ...]}: each round times every call once, in turn.

    Interleaving keeps the ratios between calls fair on a machine whose load
    changes during the benchmark: each round's calls share the same moment.
    """
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


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

    start = time.perf_counter()
    K = qml.kernels.square_kernel_matrix(X, kernel, assume_normalized_kernel=True)
    seconds = time.perf_counter() - start
    n = len(X)
    pairs = n * (n - 1) // 2  # the diagonal is assumed 1, not evaluated
    return {"n": n, "n_qubits": fm.n_qubits, "seconds": seconds, "pairs": pairs,
            "pairs_per_s": pairs / seconds, "K": np.asarray(K)}


def run(args) -> int:
    usable = {name for name, (ok, _) in available_backends().items() if ok}
    names = sorted(usable) if args.backends == "all" else [b.strip() for b in args.backends.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    n, n_qubits, repeats = args.n, args.n_qubits, args.repeats
    print(f"qmlnb bench gram: N={n}, n_qubits={n_qubits}, backends={names}, threads={threads}", flush=True)

    result = {"benchmark": "gram", "params": {k: str(v) if isinstance(v, Path) else v
                                               for k, v in vars(args).items() if k != "run"},
              "backends_available": {k: list(v) for k, v in available_backends().items()}}

    result["states"] = bench_states(args.states_n, args.states_qubits, args.dataset, repeats)
    s = result["states"]
    print(f"states N={s['n']} n={s['n_qubits']}: qmlnb {s['qmlnb_s']:.3f} s, PennyLane broadcast "
          f"{s['pennylane_broadcast_s']:.3f} s -> {s['speedup']:.1f}x", flush=True)

    fm = FeatureMap(n_qubits=n_qubits, reps=2)
    X = embeddings(n, n_qubits, args.dataset)
    states_s, _ = median_seconds(lambda: fm.states(X), repeats)
    S = fm.states(X)
    dim = S.shape[1]
    result["gram_states_s"] = states_s

    rows, cherk = [], {}
    reference = gram(S, backend="cpu")
    for t in threads:
        calls = {"cherk": cherk_call(S, t)}
        first, errors = {}, {}
        for name in names:
            warm = time.perf_counter()
            K = gram(S, backend=name, tile=args.tile, n_threads=t)  # first call: JIT, allocation, caches
            first[name] = time.perf_counter() - warm
            errors[name] = float(np.abs(K - reference).max())
            del K
            calls[name] = functools.partial(gram, S, backend=name, tile=args.tile, n_threads=t)
        calls["cherk"]()  # warm up
        times = interleaved_seconds(calls, repeats)
        cherk[t] = {"threads": t, **throughput(statistics.median(times["cherk"]), n, n, dim),
                    "all_seconds": times["cherk"]}
        print(f"  blas cherk        threads={t}: {cherk[t]['seconds']:.3f} s  {cherk[t]['gflops']:.1f} GFLOP/s",
              flush=True)
        for name in names:
            seconds = statistics.median(times[name])
            ratios = [c / s for c, s in zip(times["cherk"], times[name])]
            row = {"backend": name, "threads": t, **throughput(seconds, n, n, dim), "all_seconds": times[name],
                   "first_call_s": first[name], "max_abs_difference_vs_cpu": errors[name],
                   "vs_cherk": cherk[t]["seconds"] / seconds, "vs_cherk_median_of_rounds": statistics.median(ratios)}
            rows.append(row)
            print(f"  {name:<17} threads={t}: {seconds:.3f} s  {row['gflops']:.1f} GFLOP/s  "
                  f"{row['vs_cherk']:.2f}x cherk", flush=True)
    for row in rows:
        one = next((r for r in rows if r["backend"] == row["backend"] and r["threads"] == 1), None)
        row["speedup_vs_1_thread"] = one["seconds"] / row["seconds"] if one else None
    result["gram"] = rows
    result["baselines"] = {"blas_cherk": list(cherk.values())}

    gpu = gpu_matmul_baseline(S, repeats)
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


def gpu_matmul_baseline(S: np.ndarray, repeats: int) -> dict | None:
    """The plain complex64 torch.matmul of the same shape on CUDA, when there is a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from .gpu_baseline import matmul_baseline

    return matmul_baseline(S, torch.device("cuda"), repeats=repeats)
