"""The QCNN -> quantum-kernel SVM pipeline beside its controls over seeds; its Gram per backend; its C search.

For each task (a dataset and a set of classes, one split fixed by
``--split-seed``) and each seed of ``--seeds`` (QCNN initialisation, SVM
folds):

- ``controls``: ``run_qsvm_experiment`` on one named Gram backend
  (``--backend``, default cpu: the accuracy never depends on which backend
  happened to be fastest): the QSVM, the QCNN, and every classical baseline
  (``qsvm.baselines.BASELINES``: RBF SVM on the same embeddings with gamma
  chosen like the quantum bandwidth, RBF SVM and logistic regression on PCA
  pixels, linear SVM on pixels, ...); the kernel diagnostics of each seed;
  and ``summary``: each model's mean ± std over seeds and the paired
  difference QSVM - model with a 95% t interval (``stats.compare_to_reference``);
  ``--baselines`` scores a subset (``all``, ``none`` or names);
- ``agreement``: the QSVM fitted from scratch (bandwidth and C chosen again)
  on every usable backend of ``--backends``: the fraction of test predictions
  equal to ``--backend``'s, and whether the same bandwidth and C were chosen;
- ``timing`` (first seed only): the training Gram and the test-vs-support-vector
  Gram per backend, all backends in the same interleaved rounds of
  :func:`qmlnb.timing.interleaved` (a warm-up call each, then at least
  ``--repeats`` rounds and ``--min-time`` seconds; median, IQR, load and
  ``noisy`` recorded), as ratios to ``cpu`` from those paired rounds; and the
  C search on slices of one precomputed Gram against ``GridSearchCV`` over ``SVC(kernel=<callable quantum kernel>)``, which
  recomputes states and kernels for every fold and every C (same folds, same
  C grid, same kernel).

The JSON is refused from a dirty git tree unless ``--allow-dirty`` (recorded).
"""
from __future__ import annotations

import argparse
import platform
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from .. import timing
from ..kernels import available_backends, gram
from ..lab.provenance import environment
from ..qsvm.baselines import BASELINES, check_baselines
from ..qsvm.diagnostics import KernelDiagnosticWarning
from ..qsvm.svm import DEFAULT_CS, QuantumKernelSVC, cross_validate_C, stratified_folds
from ..stats import compare_to_reference
from .comparison import comparison_table
from .results import add_allow_dirty, check_tree, write_result

REFERENCE = "qsvm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default="fashion-mnist",
                        help="comma-separated dataset names of qmlnb.data (default fashion-mnist)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding the dataset folders (default $QMLNB_DATA_DIR or data/)")
    parser.add_argument("--classes", action="append", default=None, metavar="IDS",
                        help="class ids of one task, e.g. 3,8 or 0,6 or all; repeatable (default 3,8)")
    parser.add_argument("--n-train", default="all",
                        help="training images per task (a stratified subset), or all (default)")
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated seeds of the QCNN initialisation and the SVM folds (default 0,1,2)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the data split, fixed over seeds")
    parser.add_argument("--n-qubits", type=int, default=8, help="qubits of the QCNN and the feature map (default 8)")
    parser.add_argument("--epochs", type=int, default=15, help="QCNN training epochs (default 15)")
    parser.add_argument("--backend", default="cpu",
                        help="the Gram backend whose accuracy is reported (default cpu)")
    parser.add_argument("--backends", default="all",
                        help="comma-separated Gram backends to time and to compare predictions with, or 'all' usable")
    parser.add_argument("--timing", action=argparse.BooleanOptionalAction, default=True,
                        help="time the Grams per backend and the C search on the first seed (default on)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds of each Gram after a warm-up; the median is reported (default 5)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="repeat until the timed calls add up to this many seconds too (default 0.2)")
    parser.add_argument("--baselines", default="all",
                        help="comma-separated classical baselines to score beside the QSVM (names of "
                             "qmlnb.qsvm.baselines.BASELINES), 'all' (default) or 'none'")
    parser.add_argument("--cv", type=int, default=5, help="folds of every hyperparameter search (default 5)")
    parser.add_argument("--json", type=Path, default=None,
                        help="output file (default bench/results/qsvm-<hostname>.json)")
    add_allow_dirty(parser)


def parse_ids(text: str) -> tuple[int, ...] | None:
    """``"3,8"`` -> (3, 8); ``"all"`` -> None (every class)."""
    if text.strip() == "all":
        return None
    try:
        ids = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise ValueError(f"classes are comma-separated integer ids such as 3,8, or all; got {text!r}") from None
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise ValueError(f"a task needs at least two distinct classes, got {text!r}")
    return ids


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2): distinct non-negative ints."""
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--seeds is a comma-separated list of integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def parse_baselines(text: str) -> tuple[str, ...]:
    """``--baselines``: "all" -> every name of ``BASELINES``; "none" -> (); else checked comma-separated names."""
    text = text.strip()
    if text == "all":
        return tuple(BASELINES)
    if text == "none":
        return ()
    try:
        return check_baselines([name.strip() for name in text.split(",") if name.strip()])
    except ValueError as err:
        raise SystemExit(f"--baselines: {err}") from None


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


def agreement(E_train, y_train, E_test, names, main: str, reference_labels, params: dict, cv: int,
              seed: int, n_qubits: int) -> dict:
    """Per backend: the QSVM fitted from scratch; share of test predictions equal to ``main``'s, and its choices."""
    rows = {}
    for name in names:
        with warnings.catch_warnings():  # the diagnostics were reported with the main backend's fit
            warnings.simplefilter("ignore", KernelDiagnosticWarning)
            clf = QuantumKernelSVC(n_qubits=n_qubits, backend=name, cv=cv, seed=seed).fit(E_train, y_train)
        predicted = clf.predict(E_test)
        rows[name] = {"agreement_with_" + main: float(np.mean(predicted == reference_labels)),
                      "differing_predictions": int(np.sum(predicted != reference_labels)),
                      "n_test": int(len(predicted)), "bandwidth": clf.bandwidth_, "C": clf.C_,
                      "same_bandwidth_and_C": bool(clf.bandwidth_ == params["bandwidth"] and clf.C_ == params["C"])}
    return rows


def run_seed(args, splits, seed: int, names) -> dict:
    """One seed of a task: QCNN, QSVM on ``args.backend``, every baseline, and the backends' agreement."""
    from ..qsvm.pipeline import embed, run_qsvm_experiment
    from ..qcnn.train import TrainConfig, train_qcnn

    config = TrainConfig(n_qubits=args.n_qubits, epochs=args.epochs, seed=seed, progress=False)
    # one training: it is the seed's result, not a repeated measurement (its load is recorded with it)
    training = timing.measure(lambda: train_qcnn(splits, config), warmup=0, min_repeats=1, min_time=0.0)
    trained, train_s = training.value, training.median
    result = run_qsvm_experiment(splits, config, {"backend": args.backend, "cv": args.cv, "seed": seed},
                                 trained=trained, baselines=parse_baselines(args.baselines))
    # the pipeline was handed the trained QCNN: count its training time in the total
    result["timings"]["qcnn_train"] = train_s
    result["timings"]["total"] += train_s
    result["qcnn_training_timing"] = training.as_dict()
    E_train, E_test = embed(trained.model, splits.X_train), embed(trained.model, splits.X_test)
    params = result["qsvm"]["params"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelDiagnosticWarning)
        main = QuantumKernelSVC(n_qubits=args.n_qubits, backend=args.backend, cv=args.cv, seed=seed).fit(
            E_train, splits.y_train)
    labels = main.predict(E_test)
    others = [name for name in names if name != args.backend]
    result["agreement"] = agreement(E_train, splits.y_train, E_test, others, args.backend, labels, params,
                                    args.cv, seed, args.n_qubits)
    scores = {REFERENCE: result["qsvm"]["metrics"], "qcnn": result["qcnn"]["metrics"],
              **{name: row["metrics"] for name, row in result["baselines"].items()}}
    line = ", ".join(f"{name} {m['balanced_accuracy']:.4f}" for name, m in scores.items())
    print(f"  seed {seed}: {line}", flush=True)
    for warning in result["qsvm"]["diagnostics"]["warnings"]:
        print(f"    QSVM kernel: {warning}", flush=True)
    for name, row in result["agreement"].items():
        print(f"    {name}: {row['differing_predictions']} of {row['n_test']} test predictions differ from "
              f"{args.backend}'s", flush=True)
    return {"seed": seed, "pipeline": result, "scores": scores, "trained": trained, "E_train": E_train}


def run_timing(args, splits, first: dict, names) -> dict:
    """Gram timings per backend and the C-search comparison, on the first seed's embeddings."""
    from ..qsvm.pipeline import embed

    trained, E_train = first["trained"], first["E_train"]
    E_test = embed(trained.model, splits.X_test)
    params = first["pipeline"]["qsvm"]["params"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelDiagnosticWarning)
        clf = QuantumKernelSVC(n_qubits=args.n_qubits, bandwidth=params["bandwidth"], C=params["C"],
                               backend=args.backend).fit(E_train, splits.y_train)
    S_train = clf.feature_map(clf.bandwidth_).states(E_train)
    S_test = clf.feature_map(clf.bandwidth_).states(E_test)
    train_grams = time_grams(names, S_train, repeats=args.repeats, min_time=args.min_time)
    test_grams = time_grams(names, S_test, clf.support_states_, repeats=args.repeats, min_time=args.min_time)
    grams = {name: {"train_gram_s": train_grams[name]["seconds"], "test_vs_support_gram_s": test_grams[name]["seconds"],
                    "train_speedup_vs_cpu": train_grams[name].get("speedup_vs_cpu"),
                    "test_speedup_vs_cpu": test_grams[name].get("speedup_vs_cpu"),
                    "max_abs_difference_vs_cpu": max(train_grams[name]["max_abs_difference_vs_cpu"],
                                                     test_grams[name]["max_abs_difference_vs_cpu"]),
                    "timing": {"train_gram": train_grams[name]["timing"],
                               "test_vs_support_gram": test_grams[name]["timing"]},
                    "noisy": train_grams[name]["timing"]["noisy"] or test_grams[name]["timing"]["noisy"]}
             for name in names}
    for name, row in grams.items():
        print(f"  training Gram {name:<10} {row['train_gram_s']:.4f} s, test vs support {row['test_vs_support_gram_s']:.4f} s",
              flush=True)
    fm = clf.feature_map(params["bandwidth"])
    c_search = compare_c_search(fm, args.backend, DEFAULT_CS, E_train, splits.y_train, args.cv, first["seed"])
    print(f"  C search: one Gram + slices {c_search['one_gram_sliced_s']:.2f} s, GridSearchCV with a callable "
          f"kernel {c_search['gridsearchcv_callable_kernel_s']:.2f} s -> {c_search['speedup']:.1f}x", flush=True)
    return {"seed": first["seed"], "gram": grams, "c_search": c_search}


def run_task(args, dataset: str, classes, n_train, seeds, names) -> dict:
    """Every seed of one task, the paired summary, and (first seed) the timings."""
    from ..data import load_splits

    splits = load_splits(dataset, classes=classes, n_train=n_train, seed=args.split_seed, data_dir=args.data_dir)
    print(f"task {splits} (split seed {args.split_seed})", flush=True)
    runs = [run_seed(args, splits, seed, names) for seed in seeds]
    scores = {name: [r["scores"][name]["balanced_accuracy"] for r in runs] for name in runs[0]["scores"]}
    summary = compare_to_reference(scores, REFERENCE)
    degenerate = {name: sum(bool(r["scores"][name]["degenerate"]) for r in runs) for name in runs[0]["scores"]}
    print(comparison_table(summary, REFERENCE, degenerate=degenerate), flush=True)
    agreement_rows = {name: [r["pipeline"]["agreement"][name]["agreement_with_" + args.backend] for r in runs]
                      for name in runs[0]["pipeline"]["agreement"]}
    out = {
        "dataset": dataset, "classes": list(splits.classes), "class_names": list(splits.class_names),
        "n_train_requested": n_train, "split_seed": args.split_seed, "seeds": list(seeds),
        "backend": args.backend, "score": "balanced_accuracy", "reference": REFERENCE,
        "summary": summary, "degenerate_runs": degenerate,
        "agreement": {name: {"mean": float(np.mean(v)), "min": float(np.min(v)), "per_seed": v}
                      for name, v in agreement_rows.items()},
        "diagnostics_warnings": {r["seed"]: r["pipeline"]["qsvm"]["diagnostics"]["warnings"] for r in runs},
        "runs": [{"seed": r["seed"], "pipeline": r["pipeline"]} for r in runs],
    }
    if args.timing:
        out["timing"] = run_timing(args, splits, runs[0], names)
    return out


def parse_tasks(args) -> tuple[list, tuple[int, ...], int | None]:
    """(class sets, seeds, n_train) from ``--classes``, ``--seeds`` and ``--n-train`` (``all``: None).

    Shared by ``bench qsvm`` and ``bench qcnn``; bad values exit with the message, before any work.
    """
    try:
        class_sets = [parse_ids(text) for text in (args.classes or ["3,8"])]
        seeds = parse_seeds(args.seeds)
        n_train = None if args.n_train == "all" else int(args.n_train)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if n_train is not None and n_train <= 0:
        raise SystemExit(f"--n-train must be a positive integer or all, got {args.n_train!r}")
    return class_sets, seeds, n_train


def run(args) -> int:
    # bad arguments fail before any work
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    class_sets, seeds, n_train = parse_tasks(args)
    parse_baselines(args.baselines)
    usable = sorted(name for name, (ok, _) in available_backends().items() if ok)
    names = usable if args.backends == "all" else [b.strip() for b in args.backends.split(",")]
    missing = [name for name in [*names, args.backend] if name not in usable]
    if missing:
        raise SystemExit(f"Gram backends not usable here: {missing}; usable: {usable}")
    names = [args.backend, *[name for name in names if name != args.backend]]
    started = check_tree(args.allow_dirty)
    out = args.json or Path("bench/results") / f"qsvm-{platform.node()}.json"
    result = {
        "benchmark": "qsvm",
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "run"},
        "backends_available": {k: list(v) for k, v in available_backends().items()},
        "tasks": [run_task(args, dataset, classes, n_train, seeds, names)
                  for dataset in datasets for classes in class_sets],
        "environment": environment(),
    }
    write_result(out, result, allow_dirty=args.allow_dirty, started=started)
    print(f"wrote {out}")
    return 0
