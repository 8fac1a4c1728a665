"""The ``qcnn`` task (notebook 10-train-qcnn.ipynb): train the hybrid QCNN, optionally against a reference."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import common
from .spec import CLASSES, DATASET, SEED, THREADS, Param, TaskSpec
from .. import stages
from ... import _util, timing
from ..._util import Interval, IsInstance, Options
from ...qcnn.determinism import set_threads


def train_config(*, threads: int, mode: str = "sequential", workers: int = 2, folds: int = 1, **fields):
    """A ``TrainConfig`` whose processes x threads stay within ``threads`` (the run's share of the cores).

    ``threads`` is the run's total (0: all cores); each of the mode's processes
    gets ``threads // processes`` torch threads.
    """
    from ...qcnn.train import TrainConfig

    total = set_threads(threads)
    probe = TrainConfig(mode=mode, workers=workers, folds=folds, **fields)
    processes = probe.processes()
    if processes > total:
        raise ValueError(f"mode={mode!r} runs {processes} processes but the run has threads={total}; "
                         f"give it threads >= {processes}")
    return TrainConfig(mode=mode, workers=workers, folds=folds, threads=total // processes, **fields)


def _history_table(result) -> pd.DataFrame:
    return pd.DataFrame(result.history)


def _fold_table(result) -> pd.DataFrame:
    rows = []
    for fold in result.fold_metrics:
        row = {"fold": fold["fold"], "best_epoch": fold["best_epoch"]}
        row |= {f"val_{k}": v for k, v in (fold.get("val") or {}).items()}
        row |= {f"test_{k}": v for k, v in (fold.get("test") or {}).items()}
        rows.append(row)
    return pd.DataFrame(rows)


COMPARISONS = ("", "sequential", "1-thread")  # qcnn_run's ``compare``: what the run is measured against
# qcnn_run's ``compare_simulator``: the fast torch simulator's training step against PennyLane's TorchLayer
SIMULATOR_COMPARISONS = ("", "torchlayer")
# training steps per timed block (one for PennyLane, whose step is many times slower) and the least rounds (then
# rounds until the blocks add up to 0.2 s): a small cost beside the training, PennyLane's import included
SIMULATOR_STEPS = {"torch": 10, "pennylane": 1}
SIMULATOR_ROUNDS = 5


def simulator_comparison(splits, cfg, threads: int) -> dict:
    """The run's training step with the torch simulator against PennyLane's ``TorchLayer``, as a metrics entry.

    Same model (``cfg``'s n_qubits, head, seed, optimiser) and the same data:
    the first ``cfg.batch_size`` images of the run's training split; timed in
    this process on ``threads`` threads by
    :func:`qmlnb.qcnn.simulator_speed.compare_simulators` (interleaved blocks of
    :data:`SIMULATOR_STEPS` steps, :data:`SIMULATOR_ROUNDS` rounds).  Returns
    ``against``, ``batch_size``, ``n_qubits``, ``threads``, ``steps_per_call``,
    ``torch_samples_per_s``, ``torchlayer_samples_per_s``, ``ratio`` (torch's
    samples/s over TorchLayer's) with ``ratio_q1``/``ratio_q3`` (quartiles of
    the per-round ratios), ``load``, ``noisy`` and ``timing``.
    """
    import torch

    from ...qcnn.simulator_speed import compare_simulators

    set_threads(threads)
    images = torch.as_tensor(np.asarray(splits.X_train[: cfg.batch_size], dtype=np.float32))
    labels = torch.as_tensor(np.asarray(splits.y_train[: cfg.batch_size], dtype=np.int64))
    result = compare_simulators(images, labels, cfg, n_classes=len(splits.classes), steps=SIMULATOR_STEPS["torch"],
                                pennylane_steps=SIMULATOR_STEPS["pennylane"], rounds=SIMULATOR_ROUNDS)
    ours, theirs, r = result["torch"], result["pennylane"], result["speedup_train_rounds"]
    timed = ours["timing"]["train"]
    return {"against": "torchlayer", "batch_size": len(labels), "n_qubits": cfg.n_qubits, "threads": threads,
            "steps_per_call": {"torch": ours["steps_per_call"], "torchlayer": theirs["steps_per_call"]},
            "torch_samples_per_s": ours["train_samples_per_s"],
            "torchlayer_samples_per_s": theirs["train_samples_per_s"], "ratio": result["speedup_train"],
            "ratio_q1": r["q1"], "ratio_q3": r["q3"], "rounds": timed["n"],
            "load": max(timed["load_before"], timed["load_after"]), "noisy": bool(result["noisy"]),
            "timing": {"torch": ours["timing"]["train"], "torchlayer": theirs["timing"]["train"]}}


def epoch_timing(result, train: timing.Timing) -> timing.Timing:
    """The per-epoch seconds of a training as a Timing: each fold's first epoch apart, the later ones repeats.

    ``result`` is a ``TrainResult`` (its history has ``fold`` and ``seconds``
    per epoch); ``train`` the Timing of the whole ``train_qcnn`` call, whose
    load and CPU time the epochs share.  ``compile_s`` is the median of the
    folds' first epochs (graph building, thread pools, caches); with a single
    epoch per fold there is nothing to set apart and every epoch is a repeat.
    """

    history = pd.DataFrame(result.history)
    later = history[history.groupby("fold").cumcount() > 0]["seconds"]
    first = history.groupby("fold")["seconds"].first()
    times, compile_s = (later.tolist(), float(first.median())) if len(later) else (history["seconds"].tolist(), None)
    return timing.Timing(times=[float(t) for t in times], compile_s=compile_s, load_before=train.load_before,
                         load_after=train.load_after, cpu_s=train.cpu_s, wall_s=train.wall_s, cores=train.cores)


def qcnn_run(dataset: str = "digits", classes=(3, 8), n_train: int = 0, mode: str = "sequential", threads: int = 0,
             workers: int = 2, folds: int = 1, batch_size: int = 32, epochs: int = 3, lr: float = 0.01,
             n_qubits: int = 4, patience: int = 0, grayscale: bool = False, seed: int = 0, progress: bool = True,
             compare: str = "", compare_rounds: int = 1, compare_threads: int = 0, head: str = "quantum",
             split_seed: int | None = None, compare_simulator: str = ""):
    """Train the hybrid QCNN and score it on the test split; optionally against a reference trained in the same run.

    ``n_train`` 0 and ``patience`` 0 mean "all" and "no early stopping".
    ``head`` is "quantum" (the QCNN) or one of its controls (``qmlnb.qcnn.model.HEADS``:
    the same trainer and budget with the quantum layer replaced, docs/controls.md).
    ``seed`` seeds the initial weights and the shuffling; ``split_seed`` the data
    split and subsample (None: ``seed``), so runs over seeds on one fixed split
    pair up seed by seed across heads.
    ``compare`` trains a reference configuration on the same data in the same
    run, interleaved with this one (one untimed warm-up training each, then
    reference, run, reference, run, ...: ``compare_rounds`` rounds), so that
    the speedup never divides times of different runs and neither side pays
    the process's first-time costs (thread pools, a fold-parallel pool's
    processes) alone:

    - ``"sequential"``: the same work (folds, epochs, data) in one process with
      ``compare_threads`` threads (0: the run's ``threads``); gives
      ``speedup_vs_sequential``.  Giving it the threads stage's fastest count
      compares a parallel mode with the fastest sequential training, not with a
      sequential one slowed by threads it cannot use (this small model trains
      faster on 1 thread than on 2 on a shared 2-core machine);
    - ``"1-thread"``: the same mode on 1 thread; gives ``speedup_vs_1_thread``.

    A run that already is its reference (a sequential run at ``compare_threads``, a 1-thread run)
    records 1.0 by definition and trains twice (a warm-up, then the timed run,
    like every run it is compared with), so one grid can hold both.

    The speedup is the reference's median training time over this run's (see
    :func:`qmlnb.timing.ratio`).

    ``compare_simulator="torchlayer"`` also times, after the training, a few
    training steps of this model with the fast torch simulator against the
    same model with PennyLane's ``qml.qnn.TorchLayer``, interleaved, on the
    first batch of the training split (:func:`simulator_comparison`: few
    steps, since PennyLane's are slow): the metrics' ``simulator_comparison``.
    The sequential stage (``params/10-sequential.yaml``) sets it.

    Returns (metrics dict with ``qcnn`` test scores, ``timings`` (train_s,
    load_s, samples_per_s), ``timing``: the training call and its epochs as
    :class:`qmlnb.timing.Timing` dicts, and ``noisy``; {"history": per-epoch
    table, "folds": per-fold table}).
    """
    import dataclasses

    from ...qcnn.train import train_qcnn

    Options(COMPARISONS)(compare, "compare")
    _util.check_positive_int(compare_rounds, "compare_rounds")
    compare_threads = _util.check_int(compare_threads, "compare_threads", minimum=0)
    Options(SIMULATOR_COMPARISONS)(compare_simulator, "compare_simulator")
    if compare_simulator:
        from ...qcnn.model import QUANTUM_HEADS

        if head not in QUANTUM_HEADS:
            raise ValueError(f"compare_simulator times the quantum layer; head={head!r} has none")
    split_seed = seed if split_seed is None else _util.check_int(split_seed, "split_seed", minimum=0)
    cfg = train_config(threads=threads, mode=mode, workers=workers, folds=folds, n_qubits=n_qubits, epochs=epochs,
                       batch_size=batch_size, lr=lr, patience=patience or None, seed=seed, progress=progress,
                       head=head)
    total = cfg.threads * cfg.processes()
    loading = timing.measure(lambda: common.load_data(dataset, classes=classes, n_train=n_train, seed=split_seed,
                                               grayscale=grayscale), warmup=0, min_repeats=1, min_time=0.0)
    splits = loading.value

    def run():
        set_threads(total)  # the reference may have changed BLAS's threads
        return train_qcnn(splits, cfg)

    calls = {"run": run}
    reference_threads = (compare_threads or total) if compare == "sequential" else 1
    if compare == "sequential" and (mode != "sequential" or reference_threads != total):
        reference = dataclasses.replace(cfg, mode="sequential", threads=reference_threads, progress=False)
    elif compare == "1-thread" and total > 1:
        reference = dataclasses.replace(cfg, threads=1, progress=False)
    else:
        reference = None
    if reference is not None:
        def run_reference():
            set_threads(reference.threads)
            return train_qcnn(splits, reference)

        calls = {"reference": run_reference, **calls}
    # A run that is compared with others (compare set) is warmed up like them, also when it is its own
    # reference: a cold 1-thread or sequential training against warm runs of the same stage would make the
    # stage's `fastest` decision and its time columns compare first-call costs. Without compare the one
    # training is the stage's result: no warm-up (its first epoch is set apart below).
    timed = timing.interleaved(calls, warmup=1 if compare else 0, min_rounds=compare_rounds if reference else 1,
                               min_time=0.0)
    train, result = timed["run"], timed["run"].value
    epochs_t = epoch_timing(result, train)
    metrics = {"task": stages.QCNN, "dataset": dataset, "classes": list(splits.classes), "mode": mode,
               "threads": total, "threads_per_process": cfg.threads,
               "processes": cfg.processes(), "workers": workers, "folds": folds, "n_train": int(len(splits.y_train)),
               "n_test": int(len(splits.y_test)), "batch_size": batch_size, "epochs": epochs, "n_qubits": n_qubits,
               "head": head, "seed": seed, "split_seed": split_seed,
               # every test prediction one class (qmlnb.metrics.is_degenerate): the report flags the run
               "degenerate": bool(result.metrics.get("degenerate", False)),
               "best_fold": result.best_fold, "qcnn": result.metrics,
               "timings": {"train_s": train.median, "train_iqr_s": train.iqr, "train_n": train.n,
                           "epoch_s": epochs_t.median, "epoch_iqr_s": epochs_t.iqr, "epoch_n": epochs_t.n,
                           "first_epoch_s": epochs_t.compile_s, "load_s": loading.median,
                           "samples_per_s": result.timings.get("train_samples_per_s")},
               "timing": {"train": train.as_dict(), "epochs": epochs_t.as_dict()},
               "noisy": bool(train.noisy), "load": train.load}
    if compare:
        key = "speedup_vs_sequential" if compare == "sequential" else "speedup_vs_1_thread"
        if reference is None:  # a sequential or 1-thread run: the reference is the run itself
            metrics[key] = 1.0
            metrics["comparison"] = {"against": compare, "reference": "the run itself"}
        else:
            r = timing.ratio(timed["reference"], train)
            metrics[key] = r["ratio"]
            metrics["comparison"] = {"against": compare, "reference_train_s": timed["reference"].median,
                                     "reference_threads": reference_threads,
                                     "reference_mode": reference.mode, "ratio": r,
                                     "reference_timing": timed["reference"].as_dict(),
                                     "reference_qcnn": timed["reference"].value.metrics}
            metrics["noisy"] = bool(r["noisy"])
    if compare_simulator:
        metrics["simulator_comparison"] = simulator_comparison(splits, cfg, total)
    return metrics, {stages.HISTORY: _history_table(result), stages.FOLDS: _fold_table(result)}


SPEC = TaskSpec(
    name=stages.QCNN, notebook="notebooks/10-train-qcnn.ipynb",
    params=(DATASET, CLASSES,
            Param("n_train", 100, Interval(int, 0)), Param("mode", "sequential", IsInstance(str)),
            THREADS, Param("workers", 2, Interval(int, 1)),
            Param("folds", 1, Interval(int, 1)), Param("batch_size", 32, Interval(int, 1)),
            Param("epochs", 3, Interval(int, 1)), Param("lr", 0.01, Interval(float, 0, closed="neither")),
            Param("n_qubits", 4, Interval(int, 2)), Param("patience", 0, Interval(int, 0)),
            Param("grayscale", False, IsInstance(bool)), SEED,
            Param("split_seed", None), Param("compare", "", Options(COMPARISONS)),
            Param("compare_rounds", 1, Interval(int, 1)), Param("compare_threads", 0, Interval(int, 0)),
            Param("head", "quantum", IsInstance(str)),
            Param("compare_simulator", "", Options(SIMULATOR_COMPARISONS))),
    metrics=("dataset", "mode", "threads", "n_train", "head", "seed", "split_seed", "degenerate", "qcnn",
             "qcnn.accuracy", "qcnn.f1", "qcnn.balanced_accuracy", "qcnn.degenerate", "timings", "timings.train_s",
             "timings.epoch_s", "timing", "noisy", "load"),
    optional=("speedup_vs_sequential", "speedup_vs_1_thread", "comparison", "comparison.reference_threads",
              "comparison.reference_train_s", "simulator_comparison"),
    tables=(stages.HISTORY, stages.FOLDS))
SCORES = SPEC.metric("qcnn")  # the QCNN's test scores: SCORES.join("f1")
TRAIN_S = SPEC.metric("timings.train_s")  # median seconds of the training call
BALANCED_ACCURACY = SPEC.metric("qcnn.balanced_accuracy")
# the reference a compared run timed beside itself (compare="sequential" or "1-thread")
REFERENCE_THREADS = SPEC.metric("comparison.reference_threads")
REFERENCE_TRAIN_S = SPEC.metric("comparison.reference_train_s")
# a compared run's speedup over its reference, and the simulators' comparison (compare_simulator="torchlayer")
SPEEDUP_VS_SEQUENTIAL, SPEEDUP_VS_1_THREAD = SPEC.metric("speedup_vs_sequential"), SPEC.metric("speedup_vs_1_thread")
SIMULATOR_COMPARISON = SPEC.metric("simulator_comparison")
