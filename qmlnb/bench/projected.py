"""The projected quantum kernel at scale: Bloch features of exact MPS at hundreds of qubits, then its Gram.

One configuration (default: the ZZ map on n = 784 qubits, reps 2, linear
entanglement, N = 10,000 samples of seeded uniform angles in [0, pi)):

- ``features``: ``kernels.projected_features(fm, X, method="mps")``: the
  exact MPS of each batch of samples (bond 2**reps) and its 3n one-qubit
  Bloch vectors (O(n chi^3) per sample, numba threads);
- ``gamma``: ``projected_gamma`` (median over a 2000-sample subset);
- ``gram``: ``projected_gram`` (BLAS tiles, float64, symmetric: upper tiles only).

``total`` is their sum per repeat; the target is ``--target-s`` (60 s).  The
numba kernel is compiled (or loaded from its cache) by a warm-up call on a few
samples before the clock starts (``compile_s``); every repeat then runs the
whole pipeline; median, IQR, load and CPU seconds are recorded
(``qmlnb.timing``), and ``noisy`` when the load exceeded the cores.  The
features are checked against state vectors on a small slice (n = 12) first.

The JSON is refused from a dirty git tree unless ``--allow-dirty`` (recorded).
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from .. import timing
from .._util import available_cores
from ..kernels import FeatureMap, bloch_features, projected_features, projected_gamma, projected_gram
from ..lab.provenance import environment
from .results import add_allow_dirty, check_tree, write_result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-qubits", type=int, default=784, help="qubits of the ZZ map (default 784)")
    parser.add_argument("--n", type=int, default=10_000, help="samples (default 10,000)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of the ZZ map: bond 2**reps (default 2)")
    parser.add_argument("--bandwidth", type=float, default=0.1, help="feature scale of the map (default 0.1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the whole pipeline (default 3)")
    parser.add_argument("--target-s", type=float, default=60.0, help="seconds the pipeline should stay under")
    parser.add_argument("--json", type=Path, default=None,
                        help="output file (default bench/results/projected-<hostname>.json)")
    add_allow_dirty(parser)


def check_against_state_vectors(reps: int, bandwidth: float, seed: int = 0) -> float:
    """Largest |MPS features - state-vector features| on 20 samples of 12 qubits (the exactness check)."""
    fm = FeatureMap(n_qubits=12, reps=reps, bandwidth=bandwidth)
    X = np.random.default_rng(seed).uniform(0, np.pi, (20, 12))
    return float(np.abs(projected_features(fm, X, method="mps") - bloch_features(fm.states(X))).max())


def run(args) -> int:
    if args.n < 2 or args.n_qubits < 2 or args.repeats < 1 or args.reps < 1:
        raise SystemExit("--n and --n-qubits must be >= 2, --repeats and --reps >= 1")
    started = check_tree(args.allow_dirty)
    out = args.json or Path("bench/results") / f"projected-{platform.node()}.json"
    fm = FeatureMap(n_qubits=args.n_qubits, reps=args.reps, bandwidth=args.bandwidth)
    X = np.random.default_rng(0).uniform(0, np.pi, (args.n, args.n_qubits))

    t0 = time.perf_counter()
    projected_features(fm, X[:8], method="mps")  # compiles (or loads) the numba kernel
    compile_s = time.perf_counter() - t0
    error = check_against_state_vectors(args.reps, args.bandwidth)
    print(f"MPS features vs state vectors (12 qubits): max |difference| {error:.2e}", flush=True)

    phases = []

    def pipeline():
        t_start = time.perf_counter()
        F = projected_features(fm, X, method="mps")
        t_features = time.perf_counter()
        gamma = projected_gamma(F)
        t_gamma = time.perf_counter()
        K = projected_gram(F, gamma=gamma)
        t_gram = time.perf_counter()
        phases.append({"features": t_features - t_start, "gamma": t_gamma - t_features, "gram": t_gram - t_gamma})
        return {"gamma": gamma, "off_diagonal_mean": float((K.sum() - len(K)) / (len(K) * (len(K) - 1))),
                "shape": list(K.shape)}

    measured = timing.measure(pipeline, warmup=0, min_repeats=args.repeats, min_time=0.0)
    per_phase = {name: float(np.median([p[name] for p in phases])) for name in phases[0]}
    total = measured.as_dict()
    print(f"n={args.n_qubits} N={args.n}: features {per_phase['features']:.1f} s, gamma {per_phase['gamma']:.2f} s, "
          f"Gram {per_phase['gram']:.1f} s; total median {measured.median:.1f} s (target {args.target_s:g} s, "
          f"load {max(total['load_before'], total['load_after']):.1f} on {available_cores()} cores)", flush=True)
    result = {
        "benchmark": "projected",
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "run"},
        "setting": {"feature_map": "zz", "entanglement": "linear", "bond_dim": fm.mps_bond_dim,
                    "inputs": "uniform angles in [0, pi), seed 0", "gram_dtype": "float64", "features": 3 * args.n_qubits},
        "compile_s": compile_s,
        "mps_vs_statevector_max_abs_difference": error,
        "phases_median_s": per_phase,
        "phases_per_repeat_s": phases,
        "total": total,
        "total_median_s": measured.median,
        "target_s": args.target_s,
        "under_target": bool(measured.median < args.target_s),
        "kernel": measured.value,
        "environment": environment(),
    }
    write_result(out, result, allow_dirty=args.allow_dirty, started=started)
    print(f"wrote {out}")
    return 0
