"""Time hybrid-QCNN training: fast simulator vs PennyLane, 1 vs 2 processes, real datasets.

Three sections, each compared in the same run with what a user would
otherwise do:

- ``simulator``: training samples per second (forward, cross-entropy,
  backward, Adam step: ``qmlnb.qcnn.train.training_step`` with the optimiser of
  ``qmlnb.qcnn.train.make_optimizer``, the step ``train_qcnn`` takes) of
  ``HybridQCNN(simulator="torch")`` against the same
  model with PennyLane's ``qml.qnn.TorchLayer`` (default.qubit, backprop),
  n_qubits=8, batch 64, 28x28 images; and the quantum layer alone
  (forward + backward of (64, 8) angles).
- ``parallel``: ``train_qcnn`` throughput (training samples per second) of
  the sequential mode against fold-parallel (2 folds, 2 processes) and
  data-parallel (2 gloo processes), same data and epochs, early stopping off;
  wall clock and the epochs alone.  All configurations run in the same
  interleaved rounds after one warm-up call each: fold-parallel's warm-up
  starts the pool's processes (``_cold``, its ``compile_s``), the timed runs
  reuse them (as a sweep's later runs do); data-parallel's warm-up starts
  its gloo group, which the timed runs reuse too.

Every time comes from :mod:`qmlnb.timing` (warm-up apart as ``compile_s``,
median, IQR, load average, CPU time, ``noisy``); the two sides of every
speedup are timed in the same interleaved rounds.
- ``datasets``: default ``TrainConfig`` on the real Fashion-MNIST subset
  (Dress vs Bag) and CIFAR-10 (cat vs ship) in ``--data-dir``: seconds
  (loading included) and held-out test metrics.
- ``controls``: for each task (``--datasets`` x ``--classes``, one split
  fixed by ``--split-seed``) and each of ``--seeds``, the QCNN and every
  control of ``--heads`` (quantum layer frozen, replaced by Linear or a small
  MLP of the same width, the CNN with a linear head) trained with the same
  ``TrainConfig``; each model's test balanced accuracy, mean ± std over seeds,
  and the paired difference QCNN - control with a 95% t interval
  (``qmlnb.qcnn.controls.train_controls``).

With ``--json`` the result is refused from a dirty git tree unless ``--allow-dirty`` (recorded).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

from .. import timing
from ..data import catalog
from ..lab.provenance import environment
from ..qcnn.simulator_speed import compare_simulators
from ..qcnn.train import TrainConfig, available_cores, train_qcnn
from ..qcnn.model import HEADS
from .comparison import comparison_table
from .results import add_allow_dirty, check_tree, write_result

SECTIONS = ("simulator", "parallel", "datasets", "controls")

TARGETS = {"simulator_speedup": 20.0, "two_process_speedup": 1.6, "fashion_mnist_balanced_accuracy": 0.95,
           "fashion_mnist_seconds": 180.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=os.environ.get(catalog.ENV_VAR),
                        help="folder with fashion-mnist/ and cifar-10-batches-py/ (default $QMLNB_DATA_DIR); "
                             "the datasets section is skipped without it")
    parser.add_argument("--n-qubits", type=int, default=8, help="QCNN wires (default 8)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps of the fast simulator (default 100)")
    parser.add_argument("--pennylane-steps", type=int, default=6, help="timed steps of PennyLane (default 6)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats of both simulators; the median is reported (default 5)")
    parser.add_argument("--parallel-epochs", type=int, default=150,
                        help="epochs per fold in the parallel section (default 150)")
    parser.add_argument("--parallel-rounds", type=int, default=1,
                        help="interleaved rounds of the parallel section, after a warm-up run each (default 1)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="simulator section: repeat until the timed calls add up to this many seconds too")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the simulator section and of the sequential runs (default 1: "
                             "these small ops gain nothing from a second thread, and on a shared machine "
                             "OpenMP threads that wait for a busy core slow everything down)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--datasets", default="fashion-mnist",
                        help="controls: comma-separated dataset names (default fashion-mnist; digits needs no files)")
    parser.add_argument("--classes", action="append", default=None, metavar="IDS",
                        help="controls: class ids of one task, e.g. 0,6 or all; repeatable (default 3,8)")
    parser.add_argument("--n-train", default="all", help="controls: training images per task, or all (default)")
    parser.add_argument("--seeds", default="0,1,2", help="controls: initialisation seeds (default 0,1,2)")
    parser.add_argument("--split-seed", type=int, default=0, help="controls: seed of the data split (default 0)")
    parser.add_argument("--heads", default=",".join(HEADS),
                        help=f"controls: comma-separated heads, quantum included (default {','.join(HEADS)})")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs,
                        help=f"controls: maximum epochs of every model (default {TrainConfig.epochs})")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    add_allow_dirty(parser)


def bench_simulator(n_qubits: int, batch: int, steps: int, pl_steps: int, repeats: int, min_time: float = 0.2) -> dict:
    """Training samples/s and quantum-layer calls/s, torch simulator vs PennyLane TorchLayer, interleaved.

    A timed call is a block of ``steps`` (torch) or ``pl_steps`` (PennyLane)
    steps; per-step seconds are the block's over its steps, and the speed-ups
    pair the blocks of the same round (``qmlnb.qcnn.simulator_speed.compare_simulators``).
    """
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (batch,), generator=torch.Generator().manual_seed(1))
    angles = (torch.rand(batch, n_qubits, generator=torch.Generator().manual_seed(2)) * 6 - 3).requires_grad_()
    out = {"n_qubits": n_qubits, "batch_size": batch, "image_shape": [1, 28, 28], "threads": torch.get_num_threads()}
    out |= compare_simulators(x, y, TrainConfig(n_qubits=n_qubits, batch_size=batch), steps=steps,
                              pennylane_steps=pl_steps, rounds=repeats, min_time=min_time, angles=angles)
    for simulator in ("torch", "pennylane"):
        print(f"  {simulator:9s}: {out[simulator]['train_samples_per_s']:9.0f} training samples/s, quantum layer "
              f"fwd+bwd {out[simulator]['quantum_layer_fwd_bwd_s'] * 1e3:.2f} ms")
    print(f"  speed-up: {out['speedup_train']:.1f}x training, {out['speedup_quantum_layer']:.1f}x quantum layer")
    return out


def _throughput(timed: timing.Timing, cfg: TrainConfig) -> dict:
    """Throughput of a timed ``train_qcnn`` call (its last result gives the samples and epoch seconds)."""
    result, wall = timed.value, timed.median
    samples, folds = result.timings["train_samples"], result.timings["folds"]
    # the epochs alone, without process start-up: folds run side by side in fold-parallel mode
    loop = max(folds) if cfg.mode == "fold-parallel" else sum(folds)
    return {"mode": cfg.mode, "folds": cfg.folds, "processes": cfg.processes(),
            "threads_per_process": result.timings["threads_per_process"], "wall_s": wall,
            "train_samples": samples, "train_samples_per_s": samples / wall,
            "epoch_loop_s": loop, "epoch_loop_samples_per_s": samples / loop,
            "test_balanced_accuracy": result.metrics["balanced_accuracy"], "timing": timed.as_dict()}


def bench_parallel(splits, n_qubits: int, batch: int, epochs: int, threads: int, rounds: int = 1) -> dict:
    """Sequential (``threads`` threads) vs fold-parallel and data-parallel (2 processes x 1 thread) throughput.

    All configurations are timed in the same interleaved rounds after one
    warm-up call each; fold-parallel's warm-up starts its pool (the ``_cold``
    entry), its timed runs reuse the processes.
    """
    base = TrainConfig(n_qubits=n_qubits, epochs=epochs, batch_size=batch, patience=None, progress=False,
                       threads=threads)
    out = {"dataset": splits.name, "n_train": int(len(splits.y_train)), "epochs": epochs, "rounds": rounds}
    if available_cores() < 2:
        out["skipped"] = "fewer than 2 cores"
        return out
    configs = {
        "sequential_2_folds": dataclasses.replace(base, folds=2),
        "fold_parallel_2_processes": dataclasses.replace(base, folds=2, mode="fold-parallel", workers=2,
                                                         threads=None),
        "sequential": base,
        "data_parallel_2_processes": dataclasses.replace(base, mode="data-parallel", workers=2, threads=None),
    }
    timed = timing.interleaved({name: (lambda cfg=cfg: train_qcnn(splits, cfg)) for name, cfg in configs.items()},
                               min_rounds=rounds, min_time=0.0)
    for name, cfg in configs.items():
        out[name] = _throughput(timed[name], cfg)
        print(f"  {name:26s}: {out[name]['train_samples_per_s']:8.0f} samples/s ({out[name]['wall_s']:.1f} s)")
    cold = timed["fold_parallel_2_processes"].compile_s  # the warm-up call started the pool's processes
    out["fold_parallel_2_processes_cold"] = {"wall_s": cold,
                                             "train_samples_per_s": out["fold_parallel_2_processes"]["train_samples"]
                                             / cold}
    for key, par, seq in (("fold_parallel", "fold_parallel_2_processes", "sequential_2_folds"),
                          ("data_parallel", "data_parallel_2_processes", "sequential")):
        r = timing.ratio(timed[seq], timed[par])  # same samples on both sides: time ratio = throughput ratio
        out[f"speedup_{key}"] = r["ratio"]
        out[f"speedup_{key}_rounds"] = r
        out[f"speedup_{key}_epoch_loop"] = (out[par]["epoch_loop_samples_per_s"]
                                            / out[seq]["epoch_loop_samples_per_s"])
    out["speedup_fold_parallel_cold"] = out["sequential_2_folds"]["wall_s"] / cold
    out["noisy"] = any(t.noisy for t in timed.values())
    print(f"  speed-up (wall clock): fold-parallel {out['speedup_fold_parallel']:.2f}x "
          f"({out['speedup_fold_parallel_cold']:.2f}x with process start-up), "
          f"data-parallel {out['speedup_data_parallel']:.2f}x; epochs alone: "
          f"{out['speedup_fold_parallel_epoch_loop']:.2f}x, {out['speedup_data_parallel_epoch_loop']:.2f}x")
    return out


def bench_dataset(name: str, data_dir: Path, n_qubits: int) -> dict:
    """Default TrainConfig on a real dataset (classes 3 vs 8): seconds and test metrics."""
    from ..data import load_splits

    def load_and_train():
        splits = load_splits(name, classes=(3, 8), data_dir=data_dir)
        return splits, train_qcnn(splits, TrainConfig(n_qubits=n_qubits, progress=False))

    # one call, loading included: what a user waits for (minutes; no warm-up)
    timed = timing.measure(load_and_train, warmup=0, min_repeats=1, min_time=0.0)
    (splits, result), seconds = timed.value, timed.median
    print(f"  {name:13s} {splits.class_names}: balanced accuracy {result.metrics['balanced_accuracy']:.4f} "
          f"in {seconds:.1f} s")
    return {"dataset": name, "classes": list(splits.classes), "class_names": list(splits.class_names),
            "source": splits.source, "n_train": int(len(splits.y_train)), "n_val": int(len(splits.y_val)),
            "n_test": int(len(splits.y_test)), "seconds_total": seconds, "timing": timed.as_dict(),
            "train_timings": result.timings,
            "epochs_run": len(result.history), "test_metrics": result.metrics,
            "config": dataclasses.asdict(result.config)}


def bench_controls(args: argparse.Namespace, dataset: str, classes, n_train, seeds, heads) -> dict:
    """The QCNN and its controls over seeds on one task, compared seed by seed."""
    from ..data import load_splits
    from ..qcnn.controls import train_controls

    splits = load_splits(dataset, classes=classes, n_train=n_train, seed=args.split_seed, data_dir=args.data_dir)
    print(f"  task {splits} (split seed {args.split_seed})", flush=True)
    cfg = TrainConfig(n_qubits=args.n_qubits, epochs=args.epochs, batch_size=args.batch_size, threads=args.threads,
                      progress=False)

    def show(record):
        m = record["metrics"]
        print(f"    seed {record['seed']} {record['head']:<15} balanced accuracy {m['balanced_accuracy']:.4f}"
              f"{' (degenerate)' if m['degenerate'] else ''}, best epoch {record['best_epoch']}, "
              f"{record['seconds']:.1f} s", flush=True)

    out = train_controls(splits, cfg, heads=heads, seeds=seeds, on_run=show)
    print("\n".join("    " + line for line in comparison_table(out["summary"], "quantum",
                                                                degenerate=out["degenerate_runs"]).splitlines()))
    return {"dataset": dataset, "classes": list(splits.classes), "class_names": list(splits.class_names),
            "n_train": int(len(splits.y_train)), "n_val": int(len(splits.y_val)), "n_test": int(len(splits.y_test)),
            "split_seed": args.split_seed, "config": dataclasses.asdict(cfg), **out}


def run(args: argparse.Namespace) -> int:
    from .qsvm import parse_tasks

    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    class_sets, seeds, n_train = parse_tasks(args)
    if "controls" in sections and ("quantum" not in heads or any(h not in HEADS for h in heads)):
        raise SystemExit(f"--heads must include quantum and name only {', '.join(HEADS)}; got {args.heads!r}")
    started = check_tree(args.allow_dirty) if args.json else None
    results = {"benchmark": "qcnn", "environment": environment(), "targets": TARGETS,
               "note": "measured on the machine named in environment; other jobs may have shared its cores"}
    torch.set_num_threads(args.threads)
    if "simulator" in sections:
        print("simulator: fast torch vs PennyLane TorchLayer (default.qubit, backprop)")
        results["simulator"] = bench_simulator(args.n_qubits, args.batch_size, args.steps, args.pennylane_steps,
                                               args.repeats, args.min_time)
    if "parallel" in sections:
        from ..data import load_splits

        print("parallel: sequential vs 2 processes (train_qcnn wall clock)")
        try:
            splits = load_splits("fashion-mnist", classes=(3, 8), data_dir=args.data_dir)
        except Exception as err:  # no real data: the embedded digits still measure the scaling
            print(f"  fashion-mnist unavailable ({err.__class__.__name__}); using digits")
            splits = load_splits("digits", classes=(3, 8))
        results["parallel"] = bench_parallel(splits, args.n_qubits, args.batch_size, args.parallel_epochs,
                                             args.threads, args.parallel_rounds)
    if "datasets" in sections:
        if args.data_dir is None:
            print("datasets: skipped (no --data-dir)")
        else:
            print("datasets: default TrainConfig on real data")
            results["datasets"] = {name: bench_dataset(name, args.data_dir, args.n_qubits)
                                   for name in ("fashion-mnist", "cifar10")}
    if "controls" in sections:
        print("controls: the QCNN beside the same network with its quantum layer replaced (same trainer, budget, "
              "split and seeds)")
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        results["controls"] = [bench_controls(args, dataset, classes, n_train, seeds, heads)
                               for dataset in datasets for classes in class_sets]
    if args.json:
        write_result(args.json, results, allow_dirty=args.allow_dirty, started=started)
        print(f"wrote {args.json}")
    return 0
