"""The positive control: on labels engineered for the quantum kernel, do the controls detect its advantage?

Inputs: the first ``--n`` images of the embedded digits (all classes; the
training split of ``qmlnb.data.load_splits("digits", classes=None, seed=0)``)
as ``--n-qubits`` standardised principal components.  For each quantum
kernel (fidelity and projected, ZZ map, reps 2, ``--bandwidth``), the labels
of Huang et al. are engineered on those inputs against the RBF Gram at the
control's reference gamma (``qsvm.geometric.engineered_labels``), then each
seed of ``--seeds`` splits them (70/30, stratified) and scores the
quantum-kernel SVM beside the RBF control (gamma by alignment, C by CV):
``qsvm.positive_control.run_positive_control``.  The summary is the paired
difference quantum - RBF in balanced accuracy with its 95% t interval
(``stats.paired_difference``); ``positive`` is True when the interval excludes
0 above it.  If it is not, the controls are broken.

The JSON is refused from a dirty git tree unless ``--allow-dirty`` (recorded).
"""
from __future__ import annotations

import argparse
import platform
import warnings
from pathlib import Path

import numpy as np

from ..lab.provenance import environment
from .qsvm import parse_seeds
from .results import add_allow_dirty, check_tree, write_result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=300, help="digits images used as inputs (default 300)")
    parser.add_argument("--n-qubits", type=int, default=8, help="principal components = qubits (default 8)")
    parser.add_argument("--bandwidth", type=float, default=1.0, help="feature scale of the ZZ map (default 1.0)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated split seeds (default 0..4)")
    parser.add_argument("--json", type=Path, default=None,
                        help="output file (default bench/results/positive-control-<hostname>.json)")
    add_allow_dirty(parser)


def digits_inputs(n: int, n_components: int) -> np.ndarray:
    """(n, n_components) standardised PCA components of the first n training digits (all classes, split seed 0)."""
    from sklearn.decomposition import PCA

    from ..data import load_splits

    splits = load_splits("digits", classes=None, seed=0)
    if n > len(splits.X_train):
        raise SystemExit(f"--n {n} is more than the {len(splits.X_train)} training digits")
    pixels = splits.X_train.reshape(len(splits.X_train), -1)[:n]
    X = PCA(n_components, random_state=0).fit_transform(pixels)
    return X / X.std(axis=0)


def run(args) -> int:
    from ..kernels import FeatureMap
    from ..qsvm.diagnostics import KernelDiagnosticWarning
    from ..qsvm.positive_control import KERNELS, run_positive_control
    from ..stats import describe_difference, paired_difference

    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    started = check_tree(args.allow_dirty)
    out = args.json or Path("bench/results") / f"positive-control-{platform.node()}.json"
    X = digits_inputs(args.n, args.n_qubits)
    fm = FeatureMap(n_qubits=args.n_qubits, reps=2, bandwidth=args.bandwidth)
    kernels = {}
    for kernel in KERNELS:
        runs, labels = [], None
        with warnings.catch_warnings():  # the diagnostics are recorded with each run
            warnings.simplefilter("ignore", KernelDiagnosticWarning)
            for seed in seeds:
                result = run_positive_control(X, fm, kernel=kernel, seed=seed, labels=labels)
                labels = (result["labels"], {**result["labels_info"], "g": result["g"]})
                runs.append({"seed": seed, "quantum": result["quantum"], "rbf": result["rbf"]})
        quantum = [r["quantum"]["metrics"]["balanced_accuracy"] for r in runs]
        classical = [r["rbf"]["metrics"]["balanced_accuracy"] for r in runs]
        difference = paired_difference(quantum, classical)
        print(f"{kernel}: g = {result['g']:.2f} (sqrt(N) = {np.sqrt(args.n):.1f}); "
              + describe_difference(difference, kernel, "RBF"), flush=True)
        kernels[kernel] = {"g": result["g"], "labels_info": result["labels_info"],
                           "n_train": result["n_train"], "n_test": result["n_test"],
                           "quantum_minus_rbf": difference,
                           "positive": bool(difference["ci_low"] > 0), "runs": runs}
    payload = {
        "benchmark": "positive-control",
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "run"},
        "inputs": f"first {args.n} training digits (all classes), {args.n_qubits} standardised PCA components",
        "score": "balanced_accuracy",
        "kernels": kernels,
        "environment": environment(),
    }
    write_result(out, payload, allow_dirty=args.allow_dirty, started=started)
    print(f"wrote {out}")
    return 0
