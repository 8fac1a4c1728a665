"""Time the QCNN -> quantum-kernel SVM pipeline, its Gram per backend, and its C search against sklearn's.

For each case (a set of classes and a training-set size) on the same split:

- ``pipeline``: ``run_qsvm_experiment`` with the fastest usable Gram backend
  (measured first, on this run's embeddings): QCNN, quantum-kernel SVM and the
  classical baselines with their metrics, and the timings of every step;
  ``targets`` checks the issue's two goals (SVM balanced accuracy within 0.02
  of the QCNN's; the whole pipeline under 120 s);
- ``gram``: the training Gram and the test-vs-support-vector Gram per usable
  backend, all backends timed in the same interleaved rounds by
  :func:`qmlnb.timing.interleaved` (a warm-up call each, then at least
  ``--repeats`` rounds and ``--min-time`` seconds; median, IQR, load and
  ``noisy`` recorded), as ratios to ``cpu`` from those paired rounds, with
  each backend's predictions compared with the pipeline's;
- ``c_search``: the C search on slices of one precomputed Gram against what a
  scikit-learn user would write otherwise, ``GridSearchCV`` over
  ``SVC(kernel=<callable quantum kernel>)``, which recomputes states and
  kernels for every fold and every C.  Same folds, same C grid, same kernel;
  one call each (the callable-kernel search takes minutes), one after the
  other, with their load and ``noisy`` flag.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from .. import timing
from ..kernels import available_backends, gram
from ..lab.provenance import environment
from .._util import atomic_write_json
from ..qsvm.svm import DEFAULT_CS, QuantumKernelSVC, cross_validate_C, stratified_folds

DEFAULT_CASES = ("3,8:all", "1,3,5,8:1000")
SECONDS_TARGET = 120.0
BALANCED_ACCURACY_TOLERANCE = 0.02


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset name of qmlnb.data (default fashion-mnist)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding the dataset folders (default $QMLNB_DATA_DIR or data/)")
    parser.add_argument("--case", action="append", default=None, metavar="CLASSES:N_TRAIN",
                        help="classes and training images, e.g. 3,8:all or 1,3,5,8:1000; repeatable "
                             f"(default {' and '.join(DEFAULT_CASES)})")
    parser.add_argument("--n-qubits", type=int, default=8, help="qubits of the QCNN and the feature map (default 8)")
    parser.add_argument("--epochs", type=int, default=15, help="QCNN training epochs (default 15)")
    parser.add_argument("--backends", default="all", help="comma-separated Gram backends to time, or 'all' usable")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds of each Gram after a warm-up; the median is reported (default 5)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="repeat until the timed calls add up to this many seconds too (default 0.2)")
    parser.add_argument("--cv", type=int, default=5, help="folds of every hyperparameter search (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the QCNN and the folds")
    parser.add_argument("--json", type=Path, default=None,
                        help="output file (default bench/results/qsvm-<hostname>.json)")


def parse_case(text: str) -> tuple[tuple[int, ...], int | None]:
    """``"3,8:all"`` -> ((3, 8), None); ``"1,3,5,8:1000"`` -> ((1, 3, 5, 8), 1000)."""
    try:
        classes, n_train = text.split(":")
        ids = tuple(int(c) for c in classes.split(","))
        size = None if n_train == "all" else int(n_train)
    except ValueError:
        raise ValueError(f"a case is CLASSES:N_TRAIN such as 3,8:all or 1,3,5,8:1000, got {text!r}") from None
    if size is not None and size <= 0:
        raise ValueError(f"N_TRAIN must be a positive integer or 'all', got {n_train!r} in {text!r}")
    return ids, size


def time_grams(names, A, B=None, *, repeats: int, min_time: float = 0.2) -> dict:
    """{backend: {"seconds", "timing", "max_abs_difference_vs_cpu", "speedup_vs_cpu"}} for gram(A, B).

    All backends run in the same interleaved rounds (after a warm-up call
    each: JIT compilation, thread pools, caches); ``seconds`` is the median,
    ``speedup_vs_cpu`` the ratio of medians to ``cpu``'s (with the per-round
    ratios in ``speedup_vs_cpu_rounds``) when ``cpu`` is among ``names``.
    """
    reference = gram(A, B, backend="cpu")
    timed = timing.interleaved({name: (lambda name=name: gram(A, B, backend=name)) for name in names},
                               min_rounds=repeats, min_time=min_time)
    rows = {name: {"seconds": t.median, "timing": t.as_dict(),
                   "max_abs_difference_vs_cpu": float(np.abs(t.value - reference).max())}
            for name, t in timed.items()}
    if "cpu" in timed:
        for name, row in rows.items():
            r = timing.ratio(timed["cpu"], timed[name])
            row |= {"speedup_vs_cpu": r["ratio"], "speedup_vs_cpu_rounds": r}
    return rows


def compare_c_search(fm, backend: str, Cs, E_train, y_train, cv: int, seed: int) -> dict:
    """One Gram + sliced C search against GridSearchCV with a callable quantum kernel (same folds, same Cs)."""
    n_splits = stratified_folds(y_train, cv)

    def ours():
        K = gram(fm.states(E_train), backend=backend)
        return cross_validate_C(K, y_train, Cs, cv=cv, seed=seed)

    def quantum_kernel(A, B):  # what SVC calls for every fit and every predict
        return gram(fm.states(A), fm.states(B), backend=backend)

    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    search = GridSearchCV(SVC(kernel=quantum_kernel), {"C": list(Cs)}, scoring="balanced_accuracy", cv=folds,
                          refit=False, n_jobs=1)
    # one call each: the backend is already warm (time_grams ran it), the callable-kernel search takes minutes
    timed = timing.interleaved({"ours": ours, "naive": lambda: search.fit(E_train, y_train)}, warmup=0,
                               min_rounds=1, min_time=0.0)
    scores = timed["ours"].value
    agree = float(np.abs(search.cv_results_["mean_test_score"] - scores.mean(axis=0)).max())
    return {"n_folds": n_splits, "n_Cs": len(Cs), "one_gram_sliced_s": timed["ours"].median,
            "gridsearchcv_callable_kernel_s": timed["naive"].median,
            "speedup": timed["naive"].median / timed["ours"].median,
            "timing": {name: t.as_dict() for name, t in timed.items()},
            "max_abs_difference_of_cv_scores": agree}


def run_case(args, classes, n_train, names) -> dict:
    from ..data import load_splits
    from ..qsvm.pipeline import embed, run_qsvm_experiment
    from ..qcnn.train import TrainConfig, train_qcnn

    splits = load_splits(args.dataset, classes=classes, n_train=n_train, seed=args.seed, data_dir=args.data_dir)
    print(f"case {splits}", flush=True)
    config = TrainConfig(n_qubits=args.n_qubits, epochs=args.epochs, seed=args.seed, progress=False)
    training = timing.measure(lambda: train_qcnn(splits, config), warmup=0, min_repeats=1, min_time=0.0)
    trained, train_s = training.value, training.median
    print(f"  QCNN trained in {train_s:.1f} s: {trained.metrics}", flush=True)

    # training Gram per backend on this run's embeddings; the fastest runs the pipeline
    E_train, E_test = embed(trained.model, splits.X_train), embed(trained.model, splits.X_test)
    S_train = QuantumKernelSVC(n_qubits=args.n_qubits).feature_map(0.1).states(E_train)
    train_grams = time_grams(names, S_train, repeats=args.repeats, min_time=args.min_time)
    best = min(train_grams, key=lambda name: train_grams[name]["seconds"])
    for name, row in train_grams.items():
        print(f"  training Gram {name:<10} {row['seconds']:.4f} s", flush=True)

    result = run_qsvm_experiment(splits, config, {"backend": best, "cv": args.cv, "seed": args.seed}, trained=trained)
    # the pipeline was handed the trained QCNN: count its training time in the total
    result["timings"]["qcnn_train"] = train_s
    result["timings"]["total"] += train_s
    qsvm, qcnn = result["qsvm"]["metrics"], result["qcnn"]["metrics"]
    print(f"  pipeline on {best}: {result['timings']['total']:.1f} s; balanced accuracy QSVM "
          f"{qsvm['balanced_accuracy']:.4f}, QCNN {qcnn['balanced_accuracy']:.4f}", flush=True)

    # test-vs-support-vector Gram per backend, and each backend's predictions
    # with the chosen hyperparameters: the same as the first backend's?
    params = result["qsvm"]["params"]
    reference, test_grams, same = None, None, {}
    for name in names:
        clf = QuantumKernelSVC(n_qubits=args.n_qubits, bandwidth=params["bandwidth"], C=params["C"],
                               backend=name).fit(E_train, splits.y_train)
        predicted = clf.predict(E_test)
        reference = predicted if reference is None else reference
        same[name] = bool(np.array_equal(predicted, reference))
        if test_grams is None:
            S_test = clf.feature_map(clf.bandwidth_).states(E_test)
            test_grams = time_grams(names, S_test, clf.support_states_, repeats=args.repeats, min_time=args.min_time)
    grams = {name: {"train_gram_s": train_grams[name]["seconds"], "test_vs_support_gram_s": test_grams[name]["seconds"],
                    "train_speedup_vs_cpu": train_grams[name].get("speedup_vs_cpu"),
                    "test_speedup_vs_cpu": test_grams[name].get("speedup_vs_cpu"),
                    "max_abs_difference_vs_cpu": max(train_grams[name]["max_abs_difference_vs_cpu"],
                                                     test_grams[name]["max_abs_difference_vs_cpu"]),
                    "same_predictions_as_first_backend": same[name],
                    "timing": {"train_gram": train_grams[name]["timing"],
                               "test_vs_support_gram": test_grams[name]["timing"]},
                    "noisy": train_grams[name]["timing"]["noisy"] or test_grams[name]["timing"]["noisy"]}
             for name in names}
    print(f"  backends agree on predictions: {same}", flush=True)

    fm = QuantumKernelSVC(n_qubits=args.n_qubits).feature_map(params["bandwidth"])
    c_search = compare_c_search(fm, best, DEFAULT_CS, E_train, splits.y_train, args.cv, args.seed)
    print(f"  C search: one Gram + slices {c_search['one_gram_sliced_s']:.2f} s, GridSearchCV with a callable "
          f"kernel {c_search['gridsearchcv_callable_kernel_s']:.2f} s -> {c_search['speedup']:.1f}x", flush=True)

    return {
        "classes": list(classes), "n_train_requested": n_train, "best_backend": best,
        "qcnn_training_timing": training.as_dict(),
        "pipeline": result, "gram": grams, "c_search": c_search,
        "targets": {
            "qsvm_minus_qcnn_balanced_accuracy": qsvm["balanced_accuracy"] - qcnn["balanced_accuracy"],
            "qsvm_within_tolerance_of_qcnn":
                qsvm["balanced_accuracy"] >= qcnn["balanced_accuracy"] - BALANCED_ACCURACY_TOLERANCE,
            "pipeline_seconds": result["timings"]["total"],
            "pipeline_under_120_s": result["timings"]["total"] < SECONDS_TARGET,
        },
    }


def run(args) -> int:
    cases = [parse_case(text) for text in (args.case or DEFAULT_CASES)]  # bad cases fail before any work
    usable = sorted(name for name, (ok, _) in available_backends().items() if ok)
    names = usable if args.backends == "all" else [b.strip() for b in args.backends.split(",")]
    missing = [name for name in names if name not in usable]
    if missing:
        raise SystemExit(f"Gram backends not usable here: {missing}; usable: {usable}")
    out = args.json or Path("bench/results") / f"qsvm-{platform.node()}.json"
    result = {
        "benchmark": "qsvm",
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "run"},
        "backends_available": {k: list(v) for k, v in available_backends().items()},
        "cases": [run_case(args, classes, n_train, names) for classes, n_train in cases],
        "environment": environment(),
    }
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0
