"""Training the hybrid QCNN: sequential, fold-parallel or data-parallel.

    from qmlnb.data import load_splits
    from qmlnb.qcnn.train import TrainConfig, train_qcnn
    result = train_qcnn(load_splits("fashion-mnist", classes=(3, 8)), TrainConfig(epochs=10))
    result.metrics        # held-out test split: accuracy, f1, roc_auc, balanced_accuracy
    result.model.embed(x) # the trained (B, n_qubits) embedding

One fold is trained by :func:`train_fold`: cross-entropy, Adam, a cosine
learning-rate schedule, early stopping on validation balanced accuracy (ties:
lower validation loss; the best epoch's weights are kept, see
:func:`selection_key`) and a checkpoint after every epoch.  With ``folds > 1``
the training and validation splits are pooled and cut into stratified folds;
each fold trains on the others and validates on itself; the fold with the best
validation score (same key) gives ``result.model``.  The test split is never trained or
selected on.  The process-level parts (process pool, torch.distributed) are in
:mod:`qmlnb.qcnn.parallel`.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..metrics import classification_metrics
from .._util import atomic_write_bytes, available_cores, check_int, check_option, check_positive_int, check_real
from .model import HEADS, HybridQCNN
from . import parallel
from .circuit import check_n_qubits
from .determinism import training_settings
from .simulators import check_simulator

MODES = ("sequential", "fold-parallel", "data-parallel")
# TrainConfig fields a checkpoint may be resumed under with other values.  They
# do not change the training algorithm, but "threads" (and the process layout of
# "mode"/"workers") can change the order of floating-point reductions: runs are
# reproducible bit for bit only with the same threads and mode
RESULT_NEUTRAL_FIELDS = ("mode", "workers", "threads", "checkpoint_dir", "progress", "eval_batch_size")
# how the best epoch and fold are chosen (recorded in checkpoints: a checkpoint
# written under another rule is refused rather than resumed with mixed choices)
SELECTION = "val_balanced_accuracy, then non-degenerate, then lower val_loss"


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with another configuration or other data."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    n_qubits : QCNN wires (power of two).  epochs : maximum epochs per fold.
    batch_size : samples per optimiser step (global, also in data-parallel mode).
    lr : Adam's learning rate, annealed by a cosine schedule to ``lr * lr_min_factor``.
    weight_decay : Adam's L2 penalty.  patience : stop after this many epochs
    without a better validation score (:func:`selection_key`; None: never stop early).
    folds : 1 = train on the training split, validate on the validation split;
    k > 1 = stratified k-fold over training + validation.
    mode : "sequential", "fold-parallel" (one process per fold) or
    "data-parallel" (``workers`` gloo processes share every batch).
    workers : processes for the parallel modes.  threads : torch threads per
    process (None: cores // processes, at least 1).  seed : seeds weights and
    shuffling.  checkpoint_dir : folder for one checkpoint per fold (None: none).
    simulator : "torch" or "pennylane".  progress : tqdm bars.
    head : "quantum" (the QCNN) or a control with the same trainer and budget:
    "frozen-quantum", "linear", "mlp", "cnn-linear" (:mod:`qmlnb.qcnn.model`,
    docs/controls.md).
    """

    n_qubits: int = 8
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.01
    lr_min_factor: float = 0.05
    weight_decay: float = 0.0
    patience: int | None = 5
    folds: int = 1
    mode: str = "sequential"
    workers: int = 2
    threads: int | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    simulator: str = "torch"
    progress: bool = True
    eval_batch_size: int = 512
    head: str = "quantum"

    def __post_init__(self):
        check_n_qubits(self.n_qubits)
        for name in ("epochs", "batch_size", "folds", "workers", "eval_batch_size"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.patience, "patience", none_ok=True)
        check_positive_int(self.threads, "threads", none_ok=True)
        check_int(self.seed, "seed", minimum=0)
        check_real(self.lr, "lr", 0, math.inf, closed="neither")
        check_real(self.lr_min_factor, "lr_min_factor", 0, 1, closed="right")
        check_real(self.weight_decay, "weight_decay", 0)
        check_option(self.mode, "mode", MODES)
        check_simulator(self.simulator)
        check_option(self.head, "head", HEADS)

    def processes(self) -> int:
        """Processes this configuration runs at once."""
        if self.mode == "fold-parallel":
            return min(self.workers, self.folds)
        return self.workers if self.mode == "data-parallel" else 1

    def threads_per_process(self) -> int:
        """torch threads per process, so that processes x threads <= cores."""
        procs, cores = self.processes(), available_cores()
        if procs > 1 and procs > cores:
            raise ValueError(f"{self.mode} with {procs} processes would oversubscribe the {cores} cores "
                             f"of this machine; use workers <= {cores}")
        if self.threads is None:
            return max(1, cores // procs)
        if procs * self.threads > cores:
            raise ValueError(f"{procs} processes x threads={self.threads} exceeds the {cores} cores; "
                             f"use threads <= {max(1, cores // procs)} or threads=None")
        return self.threads


@dataclass
class TrainResult:
    """What :func:`train_qcnn` returns.

    model : the best fold's HybridQCNN (best epoch's weights, eval mode).
    metrics : that model on the held-out test split (accuracy, f1, roc_auc,
    balanced_accuracy).  history : one dict per epoch and fold.  timings :
    seconds (``total``, ``folds`` per fold) and ``train_samples_per_s``.
    fold_metrics : per fold: best epoch, validation and test metrics.
    """

    model: HybridQCNN
    metrics: dict
    history: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    fold_metrics: list = field(default_factory=list)
    best_fold: int = 0
    config: TrainConfig | None = None


@dataclass
class FoldData:
    """The arrays of one fold: float32 (N, C, H, W) images and int64 (N,) labels."""

    fold: int
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    image_shape: tuple
    n_classes: int
    checkpoint: str | None = None


# ------------------------------------------------------------------ validation
def check_images(X, image_shape, name: str) -> np.ndarray:
    """X as a float32 (N, C, H, W) array of ``image_shape`` images, else ValueError."""
    X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    if X.ndim != 4 or tuple(X.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, image_shape))}), got {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if X.dtype.kind != "f" or not np.isfinite(X).all():
        raise ValueError(f"{name} must hold finite floating-point values")
    return np.ascontiguousarray(X, dtype=np.float32)


def check_class_indices(y, n_classes: int, name: str, n: int | None = None) -> np.ndarray:
    """y as an int64 (N,) array of class indices in 0..n_classes-1 (N = ``n`` if given), else ValueError."""
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y.ndim != 1 or (n is not None and len(y) != n):
        raise ValueError(f"{name} must have shape ({n if n is not None else 'N'},), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer labels, got dtype {y.dtype}")
    bad = np.unique(y[(y < 0) | (y >= n_classes)])
    if bad.size:
        raise ValueError(f"{name} has labels {bad[:10].tolist()} outside 0..{n_classes - 1} "
                         f"(the {n_classes} chosen classes)")
    return y.astype(np.int64)


def fold_data(splits, cfg: TrainConfig) -> list[FoldData]:
    """Validate ``splits`` against ``cfg`` and cut it into folds (no training yet)."""
    image_shape = tuple(int(s) for s in splits.image_shape)
    n_classes = len(splits.classes)
    arrays = {}
    for part in ("train", "val", "test"):
        X = check_images(getattr(splits, f"X_{part}"), image_shape, f"X_{part}")
        arrays[part] = (X, check_class_indices(getattr(splits, f"y_{part}"), n_classes, f"y_{part}", len(X)))
    ckpt = (lambda k: str(Path(cfg.checkpoint_dir) / f"fold{k}.pt")) if cfg.checkpoint_dir else (lambda k: None)
    if cfg.folds == 1:
        folds = [FoldData(0, *arrays["train"], *arrays["val"], image_shape, n_classes, ckpt(0))]
    else:
        from sklearn.model_selection import StratifiedKFold

        X = np.concatenate([arrays["train"][0], arrays["val"][0]])
        y = np.concatenate([arrays["train"][1], arrays["val"][1]])
        smallest = np.bincount(y, minlength=n_classes).min()
        if smallest < cfg.folds:
            raise ValueError(f"folds={cfg.folds} needs at least {cfg.folds} samples of every class in "
                             f"train + validation; the smallest class has {smallest}")
        cut = StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(X, y)
        folds = [FoldData(k, X[tr], y[tr], X[va], y[va], image_shape, n_classes, ckpt(k))
                 for k, (tr, va) in enumerate(cut)]
    smallest_train = min(len(f.y_train) for f in folds)
    if cfg.batch_size > smallest_train:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the training data "
                         f"({smallest_train} samples{' in the smallest fold' if cfg.folds > 1 else ''})")
    return folds


# ------------------------------------------------------------------ checkpoints
def fingerprint(data: FoldData, cfg: TrainConfig, world: int) -> dict:
    """What a checkpoint must match to be resumed: configuration and data."""
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESULT_NEUTRAL_FIELDS}
    digest = hashlib.sha1()
    for array in (data.X_train, data.y_train, data.X_val, data.y_val):
        digest.update(np.ascontiguousarray(array).tobytes())
    # data-parallel sums gradients in another order: its runs differ in the last bits
    return {**config, "selection": SELECTION, "fold": data.fold, "data_parallel_world": world, "image_shape": list(data.image_shape),
            "n_classes": data.n_classes, "n_train": len(data.y_train), "data_sha1": digest.hexdigest()}


def load_checkpoint(path: str, expected: dict) -> dict | None:
    """The checkpoint at ``path`` (None if absent); CheckpointMismatchError if it is another run's.

    Loaded with ``weights_only=True``: only tensors and plain containers are
    built, so a crafted checkpoint cannot run code; one that holds anything
    else is refused like any other unreadable file.
    """
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file, or one with more than tensors
        reason = str(err)
        if "Weights only load failed" in reason:
            # torch's message advises weights_only=False, the one thing not to do here:
            # keep only its last line that says what was refused
            details = [line.strip() for line in reason.splitlines()[1:]
                       if line.strip() and not line.startswith("Check the documentation")]
            reason = ("only tensors and plain containers are loaded, and this file is not one of those (truncated, "
                      f"foreign, or holding objects that could run code: {details[-1] if details else '?'})")
        raise CheckpointMismatchError(f"cannot read checkpoint {path}: {reason}; delete it to start afresh") from err
    saved = state.get("fingerprint") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        raise CheckpointMismatchError(f"{path} is not a qmlnb training checkpoint; delete it or use another "
                                      "checkpoint_dir")
    diff = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
    if diff:
        shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointMismatchError(f"checkpoint {path} was written by another configuration ({shown}); "
                                      "delete it or use another checkpoint_dir")
    return state


def _plain(value, where: str = "state"):
    """``value`` as tensors and plain containers only, what ``torch.load(weights_only=True)`` reads back.

    NumPy arrays become tensors and NumPy scalars Python numbers; dicts
    (OrderedDict kept), lists and tuples are converted item by item.
    Anything else is a TypeError naming where it is, raised at the save
    rather than at the resume.
    """
    if isinstance(value, np.generic):  # np.float64 is also a float, but it pickles as a NumPy object
        return value.item()
    # exact types: a subclass (an IntEnum, say) pickles as its class, which weights_only refuses
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        out = collections.OrderedDict() if isinstance(value, collections.OrderedDict) else {}
        for key, item in value.items():
            out[_plain(key, where)] = _plain(item, f"{where}[{key!r}]")
        if hasattr(value, "_metadata"):  # a state_dict's module versions, which load_state_dict reads
            out._metadata = _plain(value._metadata, f"{where}._metadata")
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    raise TypeError(f"cannot checkpoint {where}: a {type(value).__name__} is not a tensor, number, string "
                    "or plain container")


def save_checkpoint(path: str, state: dict) -> None:
    """Write ``state`` (tensors and plain containers, see :func:`_plain`) atomically and durably.

    ``_util.atomic_write_bytes`` writes a temporary file, fsyncs it and renames
    it into place: an interrupted save never leaves a half-written checkpoint.
    """
    buffer = io.BytesIO()
    torch.save(_plain(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ------------------------------------------------------------------ training one fold
def build_model(data: FoldData, cfg: TrainConfig) -> HybridQCNN:
    """The fold's freshly initialised model (seed = cfg.seed + fold)."""
    return HybridQCNN(data.image_shape, data.n_classes, cfg.n_qubits, cfg.simulator, seed=cfg.seed + data.fold,
                      head=cfg.head)


def make_optimizer(model: HybridQCNN, cfg: TrainConfig) -> torch.optim.Adam:
    """The training run's Adam optimiser.

    ``fused=True``: one kernel updates every parameter, instead of about ten
    small ops per parameter tensor; on this model's few-millisecond steps that
    is a measurable part of a step.
    """
    # frozen weights (the frozen-quantum control) are left out: weight decay would move them
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def training_step(model: HybridQCNN, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
                  batch_size: int, sync=None) -> torch.Tensor:
    """One optimiser step; returns the (detached, float32) summed cross-entropy of ``images``.

    images, labels : this process's share of a batch of ``batch_size`` samples
    (all of it when training in one process).  The loss is the share's sum
    divided by ``batch_size``, so the shares' gradients add up to the batch
    mean's.  sync : data-parallel only: sums the gradients over the processes
    before the step; the gradients are then zeroed in place (not freed), since
    a process whose share is empty still takes part in the all-reduce.  The
    training loop and ``bench qcnn`` both time this function.
    """
    optimizer.zero_grad(set_to_none=sync is None)
    if len(labels):
        loss_sum = F.cross_entropy(model(images), labels, reduction="sum")
        (loss_sum / batch_size).backward()
        loss_sum = loss_sum.detach()
    else:
        loss_sum = torch.zeros(())
    if sync is not None:
        sync.gradients(model)
    optimizer.step()
    return loss_sum


def predict_scores(model: HybridQCNN, X, batch_size: int = 512) -> torch.Tensor:
    """(N, C, H, W) images -> (N, n_classes) float32 class probabilities (eval mode, no grad)."""
    X = torch.as_tensor(check_images(X, model.image_shape, "X"))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(X[i:i + batch_size]), dim=1) for i in range(0, len(X), batch_size)])
    model.train(was_training)
    return probs.float()


def evaluate(model: HybridQCNN, X, y, batch_size: int = 512) -> dict:
    """accuracy, f1, roc_auc, balanced_accuracy, degenerate of ``model`` on images X (N, C, H, W), labels y (N,)."""
    y = check_class_indices(y, model.n_classes, "y", len(X))
    probs = predict_scores(model, X, batch_size).numpy()
    scores = probs[:, 1] if model.n_classes == 2 else probs
    return classification_metrics(y, probs.argmax(axis=1), scores, n_classes=model.n_classes)


def validation_loss(model: HybridQCNN, X, y, batch_size: int = 512) -> float:
    """Mean cross-entropy of ``model`` on images X (N, C, H, W) float32 and labels y (N,) int64 (eval mode, no grad)."""
    X = torch.as_tensor(check_images(X, model.image_shape, "X"))
    y = torch.as_tensor(check_class_indices(y, model.n_classes, "y", len(X)))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        total = sum(float(F.cross_entropy(model(X[i:i + batch_size]), y[i:i + batch_size], reduction="sum"))
                    for i in range(0, len(X), batch_size))
    model.train(was_training)
    return total / len(X)


def selection_key(val: dict) -> tuple:
    """How epochs and folds are ranked: the larger key wins.

    Validation balanced accuracy first (NaN ranks below any value); at equal
    balanced accuracy a model that predicts more than one class beats a
    constant predictor, then the lower validation loss wins.  F1 of class 1 is
    not used: a model predicting class 1 everywhere scores F1 = 2p/(1+p) (0.667
    on balanced data) and would be kept over better models; its balanced
    accuracy is 1/k, the chance level.

    val : {"balanced_accuracy", "degenerate", "loss", ...} (missing ``degenerate``
    counts as False, missing or NaN ``loss`` as +inf).
    """
    balanced = val.get("balanced_accuracy", math.nan)
    loss = val.get("loss", math.inf)
    return (balanced if math.isfinite(balanced) else -1.0,
            0 if val.get("degenerate", False) else 1,
            -loss if math.isfinite(loss) else -math.inf)


def train_fold(data: FoldData, cfg: TrainConfig, *, rank: int = 0, world: int = 1, sync=None,
               on_epoch_end=None) -> dict:
    """Train one fold; resume from its checkpoint if there is one.

    rank, world, sync : data-parallel: every optimiser step's batch is shared
    out as ``batch[rank::world]``; ``sync`` (a :class:`qmlnb.qcnn.parallel.DistributedSync`)
    sums the gradients and losses over the processes and broadcasts rank 0's
    validation metrics.  The sequential run is rank 0 of 1 with a
    :class:`qmlnb.qcnn.parallel.LocalSync` that does nothing.
    on_epoch_end : called with each epoch's history record (after its checkpoint).

    Returns {"fold", "state" (best epoch's state_dict), "history", "best_epoch",
    "val_metrics", "train_seconds", "train_samples"}.
    """
    sync = sync or parallel.LocalSync()
    expected = fingerprint(data, cfg, world)
    saved = load_checkpoint(data.checkpoint, expected)
    model = build_model(data, cfg)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs,
                                                           eta_min=cfg.lr * cfg.lr_min_factor)
    shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + data.fold)
    torch.manual_seed(cfg.seed + data.fold)
    state = {"epoch": 0, "best_key": None, "best_epoch": -1, "best_state": None, "best_val": None,
             "bad_epochs": 0, "history": [], "train_seconds": 0.0, "train_samples": 0, "done": False}
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        shuffle.set_state(saved["rng"]["shuffle"])
        torch.set_rng_state(saved["rng"]["torch"])
        state = saved["progress"]

    X_train, y_train = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    # zero gradients that exist from the start: a rank whose share of a batch is
    # empty still takes part in the all-reduce
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    bar = tqdm(range(state["epoch"], cfg.epochs), desc=f"fold {data.fold}", position=data.fold,
               initial=state["epoch"], total=cfg.epochs, disable=not cfg.progress or rank != 0, leave=False)
    for epoch in bar:
        if state["done"]:
            break
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=shuffle)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i:i + cfg.batch_size]
            mine = batch[rank::world]
            loss_sum += training_step(model, optimizer, X_train[mine], y_train[mine], len(batch),
                                      sync if world > 1 else None)
        scheduler.step()
        train_loss = sync.total(loss_sum) / len(y_train)
        val = sync.from_rank0(lambda: {**evaluate(model, data.X_val, data.y_val, cfg.eval_batch_size),
                                       "loss": validation_loss(model, data.X_val, data.y_val, cfg.eval_batch_size)})
        seconds = time.perf_counter() - start
        state["train_seconds"] += seconds
        state["train_samples"] += len(y_train)
        record = {"fold": data.fold, "epoch": epoch, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": seconds, **{f"val_{k}": v for k, v in val.items()}}
        state["history"].append(record)
        key = selection_key(val)
        if state["best_key"] is None or key > tuple(state["best_key"]):
            state.update(best_key=key, best_epoch=epoch, best_state=copy.deepcopy(model.state_dict()),
                         best_val=val, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
            state["done"] = True
        if data.checkpoint and rank == 0:
            save_checkpoint(data.checkpoint, {
                "fingerprint": expected, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "progress": state,
                "rng": {"shuffle": shuffle.get_state(), "torch": torch.get_rng_state()}})
        bar.set_postfix(val_bacc=f"{val['balanced_accuracy']:.3f}", loss=f"{train_loss:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(record)
    bar.close()
    return {"fold": data.fold, "state": state["best_state"], "history": state["history"],
            "best_epoch": state["best_epoch"], "val_metrics": state["best_val"],
            "train_seconds": state["train_seconds"], "train_samples": state["train_samples"]}


# ------------------------------------------------------------------ the entry point
def train_qcnn(splits, cfg: TrainConfig | None = None, *, on_epoch_end=None) -> TrainResult:
    """Train a HybridQCNN on ``splits`` (a ``qmlnb.data.Splits``) as ``cfg`` says.

    Everything is validated (shapes, labels, batch size, threads, existing
    checkpoints) before any training starts.  ``on_epoch_end(record)`` is called
    after every epoch (sequential mode only: the parallel modes run in other
    processes).  Returns a :class:`TrainResult`.
    """
    cfg = cfg or TrainConfig()
    folds = fold_data(splits, cfg)
    threads = cfg.threads_per_process()
    if on_epoch_end is not None and cfg.mode != "sequential":
        raise ValueError("on_epoch_end is only called in mode='sequential'")
    world = cfg.workers if cfg.mode == "data-parallel" else 1
    for data in folds:  # refuse another run's checkpoint now, not after hours of other folds
        load_checkpoint(data.checkpoint, fingerprint(data, cfg, world))

    start = time.perf_counter()
    if cfg.mode == "sequential":
        with training_settings(threads):
            outcomes = [train_fold(data, cfg, on_epoch_end=on_epoch_end) for data in folds]
    elif cfg.mode == "fold-parallel":
        outcomes = parallel.run_fold_parallel(train_fold, folds, cfg, threads)
    else:
        outcomes = parallel.run_data_parallel(train_fold, folds, cfg, threads)
    total = time.perf_counter() - start

    X_test, y_test = check_images(splits.X_test, folds[0].image_shape, "X_test"), np.asarray(splits.y_test)
    fold_metrics, models = [], []
    for data, outcome in zip(folds, outcomes):
        model = build_model(data, cfg)
        model.load_state_dict(outcome["state"])
        model.eval()
        models.append(model)
        fold_metrics.append({"fold": data.fold, "best_epoch": outcome["best_epoch"], "val": outcome["val_metrics"],
                             "test": evaluate(model, X_test, y_test, cfg.eval_batch_size)})
    best = max(range(len(folds)), key=lambda k: (selection_key(fold_metrics[k]["val"]), -k))
    samples = sum(o["train_samples"] for o in outcomes)
    fold_seconds = [o["train_seconds"] for o in outcomes]
    timings = {"total": total, "folds": fold_seconds, "train_samples": samples,
               "train_samples_per_s": samples / total if total > 0 else float("nan"),
               "threads_per_process": threads, "processes": cfg.processes()}
    history = [record for o in outcomes for record in o["history"]]
    return TrainResult(models[best], fold_metrics[best]["test"], history, timings, fold_metrics, best, cfg)
