"""QCNN controls: the same trainer, budget, split and seeds with the quantum layer replaced.

For every seed, :func:`train_controls` trains the QCNN (``head="quantum"``)
and each control of ``qmlnb.qcnn.model.HEADS`` with one ``TrainConfig`` that
differs only in ``head`` and ``seed``, and compares their test scores seed by
seed with :func:`qmlnb.stats.compare_to_reference`.  The split is fixed by the
caller (``load_splits(..., seed=split_seed)``); the seeds vary the initial
weights and the shuffling only.

    from qmlnb.data import load_splits
    from qmlnb.qcnn.controls import train_controls
    from qmlnb.qcnn.train import TrainConfig
    out = train_controls(load_splits("fashion-mnist", classes=(0, 6)), TrainConfig(epochs=10), seeds=(0, 1, 2))
    out["summary"]["linear"]["reference_minus_model"]   # quantum - linear: mean, 95% interval, wins/losses

How to read the result: docs/controls.md.
"""
from __future__ import annotations

import dataclasses

from .._util import Each, Interval, check_option
from ..stats import compare_to_reference
from .model import HEADS
from .train import TrainConfig, train_qcnn

REFERENCE = "quantum"


def n_trainable(model) -> int:
    """Trainable parameters of a model (frozen ones left out)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def train_controls(splits, cfg: TrainConfig | None = None, *, heads=HEADS, seeds=(0, 1, 2),
                   score: str = "balanced_accuracy", confidence: float = 0.95, on_run=None) -> dict:
    """Train the QCNN and its controls over seeds on one split; compare them seed by seed.

    splits : a ``qmlnb.data.Splits`` (float32 (N, C, H, W) images, int64 labels).
    cfg : the budget shared by every model (``head`` and ``seed`` are replaced).
    heads : names from ``HEADS``; must include "quantum" (the reference).
    seeds : initialisation/shuffling seeds (at least one; 3+ for an interval that means anything).
    score : the test metric compared (a key of ``classification_metrics``).
    on_run : called with each run's record as it finishes (progress, logging).

    Returns {"heads", "seeds", "score", "runs": {head: [one record per seed:
    "seed", "metrics" (test), "val" (validation metrics of the kept epoch),
    "best_epoch", "epochs_run", "seconds", "n_trainable"]}, "summary":
    compare_to_reference over ``score`` (quantum - control), "degenerate_runs":
    {head: number of runs whose test predictions are a single class}}.
    """
    cfg = cfg or TrainConfig()
    heads = tuple(heads)
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise ValueError(f"unknown heads {unknown}; choose from {HEADS}")
    if REFERENCE not in heads:
        raise ValueError(f"heads must include {REFERENCE!r}, the model the controls are compared with")
    seeds = tuple(seeds)
    Each(Interval(int, 0))(list(seeds), "seeds")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    runs = {head: [] for head in heads}
    for seed in seeds:
        for head in heads:
            result = train_qcnn(splits, dataclasses.replace(cfg, head=head, seed=seed))
            check_option(score, "score", sorted(result.metrics))
            best = result.fold_metrics[result.best_fold]
            record = {"seed": seed, "head": head, "metrics": result.metrics, "val": best["val"],
                      "best_epoch": best["best_epoch"], "epochs_run": len(result.history),
                      "seconds": result.timings["total"], "n_trainable": n_trainable(result.model)}
            runs[head].append(record)
            if on_run is not None:
                on_run(record)
    scores = {head: [r["metrics"][score] for r in records] for head, records in runs.items()}
    return {"heads": list(heads), "seeds": list(seeds), "score": score, "runs": runs,
            "summary": compare_to_reference(scores, REFERENCE, confidence),
            "degenerate_runs": {head: sum(bool(r["metrics"]["degenerate"]) for r in records)
                                for head, records in runs.items()}}
