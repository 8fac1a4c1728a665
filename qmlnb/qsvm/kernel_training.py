"""Kernels that learn: train a feature map's parameters ``theta`` for the SVM that will use its kernel.

``KernelTrainer`` takes a ``CircuitFeatureMap`` whose angles read named
parameters ``theta`` and optimises them with torch's Adam on mini-batches of
training samples, through the differentiable batched states of
``qmlnb.kernels.circuit_torch`` (all samples of a batch at once, one Gram as
one matrix product, gradients by autograd: one forward and one backward pass
per step, never kernel entry by entry).  Two objectives:

- ``loss="alignment"`` (default): maximise the centred kernel-target
  alignment of the batch Gram (Cortes, Mohri and Rostamizadeh 2012; the
  PennyLane kernel-alignment demo), the score ``QuantumKernelSVC`` already
  uses to choose the bandwidth;
- ``loss="svc"``: minimise the SVM dual objective that Qiskit ML's
  ``QuantumKernelTrainer`` minimises by default (``SVCLoss``): fit
  ``SVC(kernel="precomputed", C)`` on the batch Gram, then
  ``sum|a| - 1/2 a^T K[sv, sv] a`` with ``a = dual_coef_`` (alpha_i y_i).
  The gradient flows through K with the SVC's dual coefficients held fixed;
  at the SVM's optimum this is the exact gradient of the optimal dual value
  (Danskin's theorem).

A fixed number of steps, or early stopping on a stratified validation split
(the loss on the whole validation set every ``eval_every`` steps; the best
parameters are kept).  Everything is seeded: the split and the mini-batches
come from ``numpy.random.default_rng(seed)``, so two fits give the same curve.

>>> trainer = KernelTrainer(fm, steps=100, lr=0.05, batch_size=64, seed=0).fit(X, y)
>>> trainer.history_                      # step, loss (and alignment), validation_loss
>>> trainer.feature_map_                  # CircuitFeatureMap with the trained theta
>>> QuantumKernelSVC(custom_map=trainer.feature_map_, bandwidth=fm.bandwidth).fit(X, y)

``kernel_training_controls`` compares the trained kernel's QSVM with the
untrained one (same circuit, initial theta), the RBF control and the projected
kernel of the untrained states over seeds, with paired intervals (``qmlnb.stats``).
"""
from __future__ import annotations

import math
import numbers
import time

import numpy as np
import pandas as pd
from sklearn.svm import SVC

from ..kernels import CircuitFeatureMap
from ..kernels.circuit import Circuit, pi, theta, x
from ..kernels.circuit_torch import CircuitStates, fidelity_gram
from ..metrics import classification_metrics
from ..stats import holm, judge, paired_difference
from .._util import check_int, check_positive_int
from .baselines import fit_rbf_alignment
from .svm import DEFAULT_CS, QuantumKernelSVC, check_at_least_two_classes, kernel_target_alignment

LOSSES = ("alignment", "svc")
MIN_PER_CLASS = 2  # samples of each class in a mini-batch: an alignment of one sample per class is degenerate


# ---------------------------------------------------------------------------------------------- a trainable map
def trainable_zz_circuit(n_qubits: int, layers: int = 3, *, init: float = 0.0, name: str = "trainable_zz") -> Circuit:
    """A ZZ feature map with a trainable RY layer before each repetition: ``layers * n_qubits`` parameters.

    Per layer l: RY(theta['l.k']) on each wire k, then H and P(2 x_k) on each
    wire, then CX P(2 (pi - x_k)(pi - x_k+1)) CX on neighbouring wires (the
    ``FeatureMap(kind="zz")`` block).  With ``init=0`` every RY is the
    identity, so the untrained map *is* the ZZ map with ``reps=layers``: the
    natural control for what training adds (the layout of Qiskit ML's
    trainable-kernel tutorial, one trainable rotation per qubit per layer).
    """
    check_positive_int(n_qubits, "n_qubits")
    check_positive_int(layers, "layers")
    if isinstance(init, bool) or not isinstance(init, numbers.Real) or not math.isfinite(init):
        raise ValueError(f"init must be a finite number (the initial value of every theta), got {init!r}")
    gates, values = [], {}
    for layer in range(layers):
        for k in range(n_qubits):
            values[f"{layer}.{k}"] = float(init)
            gates.append(("ry", k, theta[f"{layer}.{k}"]))
        for k in range(n_qubits):
            gates += [("h", k), ("p", k, 2 * x[k])]
        for k in range(n_qubits - 1):
            gates += [("cx", (k, k + 1)), ("p", k + 1, 2 * (pi - x[k]) * (pi - x[k + 1])), ("cx", (k, k + 1))]
    return Circuit(n_qubits, gates, theta=values, n_features=n_qubits, name=name)


# ---------------------------------------------------------------------------------------------- objectives (torch)
def alignment_torch(K, y):
    """Centred kernel-target alignment of a (N, N) real torch Gram with labels y (N,): a 0-d tensor, differentiable.

    The same score as ``qsvm.svm.kernel_target_alignment``: <HKH, Y>_F / (||HKH|| ||HYH||) with
    Y[i, j] = 1 when samples i and j share a class (H = I - 11^T / N).
    """
    import torch

    y = torch.as_tensor(np.asarray(y), device=K.device)
    Y = (y[:, None] == y[None, :]).to(K.dtype)

    def centred(M):
        return M - M.mean(0, keepdim=True) - M.mean(1, keepdim=True) + M.mean()

    Kc = centred(K)
    norm = torch.linalg.matrix_norm(Kc) * torch.linalg.matrix_norm(centred(Y))
    return (Kc * Y).sum() / norm


def svc_loss_torch(K, y, C: float = 1.0):
    """Qiskit ML's ``SVCLoss`` on a (N, N) torch Gram: ``sum|a| - 1/2 a^T K[sv, sv] a``, a = the SVC's ``dual_coef_``.

    The SVC (``kernel="precomputed"``, ``C``) is fitted on K's values; the
    returned 0-d tensor is differentiable in K with those coefficients fixed.
    y : (N,) labels of exactly two classes.
    """
    import torch

    K_np = K.detach().cpu().numpy().astype(np.float64)
    svc = SVC(kernel="precomputed", C=C).fit(K_np, np.asarray(y))
    a = torch.as_tensor(svc.dual_coef_[0], dtype=K.dtype, device=K.device)
    sv = torch.as_tensor(svc.support_, device=K.device)
    return a.abs().sum() - 0.5 * (a @ K[sv][:, sv] @ a)


# ---------------------------------------------------------------------------------------------- the trainer
def _check_number(value, name: str, *, low: float, high: float = math.inf, low_open: bool = True,
                  high_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open or high == math.inf else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def _stratified_batch(rng: np.random.Generator, y: np.ndarray, size: int) -> np.ndarray:
    """``size`` indices drawn without replacement, each class in proportion (at least ``MIN_PER_CLASS`` of each)."""
    classes, counts = np.unique(y, return_counts=True)
    take = np.maximum(MIN_PER_CLASS, np.floor(size * counts / counts.sum()).astype(int))
    take = np.minimum(take, counts)
    picked = [rng.choice(np.flatnonzero(y == c), size=t, replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked))


class KernelTrainer:
    """Train the parameters ``theta`` of a ``CircuitFeatureMap`` for its fidelity kernel.

    Parameters
    ----------
    feature_map : CircuitFeatureMap
        Its circuit's angles read ``theta['name']``; the circuit's values are
        the starting point.  ValueError if it has no parameter.
    loss : "alignment" or "svc"
        Maximise centred kernel-target alignment, or minimise Qiskit ML's
        ``SVCLoss`` (the SVM dual objective at ``C``; two classes only).
    steps : int >= 1
        Adam steps (the most, with early stopping).
    lr : float > 0
        Adam's learning rate.
    batch_size : int >= 4, optional
        Samples per step, drawn stratified without replacement from the
        training part (default / larger than it: the whole training part every step).
    validation_fraction : float in [0, 1)
        Share of the samples held out (stratified) for early stopping; 0: no
        validation, ``steps`` steps, the last theta.
    patience : int >= 1
        Early stopping: evaluations of the validation loss without improvement before stopping.
    eval_every : int >= 1
        Steps between validation evaluations.
    C : float > 0
        The SVC's C in ``loss="svc"``.
    trainable : sequence of str, optional
        Parameter names to train (default: all); the others stay fixed.
    device, dtype : where and in what precision the states are simulated (``CircuitStates``).
    seed : int
        The validation split and the mini-batches.

    Attributes (after ``fit``)
    --------------------------
    feature_map_ : CircuitFeatureMap with the trained theta (the best validation one with early stopping).
    theta_, initial_theta_ : {name: float} of every parameter.
    history_ : pandas DataFrame, one row per step: ``step``, ``loss`` (the batch loss minimised),
        ``alignment`` (= -loss, alignment loss only), ``validation_loss`` (NaN between evaluations).
    best_step_ : int, the step whose theta was kept (0: the initial theta).
    stopped_early_ : bool.
    train_seconds_ : float.
    """

    def __init__(self, feature_map, *, loss: str = "alignment", steps: int = 100, lr: float = 0.05,
                 batch_size: int | None = 64, validation_fraction: float = 0.0, patience: int = 5,
                 eval_every: int = 5, C: float = 1.0, trainable=None, device="cpu", dtype: str = "complex64",
                 seed: int = 0):
        self.feature_map = feature_map
        self.loss = loss
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.eval_every = eval_every
        self.C = C
        self.trainable = trainable
        self.device = device
        self.dtype = dtype
        self.seed = seed

    def _check_params(self) -> CircuitStates:
        """Every setting validated before any work; the simulator of the map."""
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        check_positive_int(self.steps, "steps")
        _check_number(self.lr, "lr (Adam's learning rate)", low=0.0)
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", minimum=2 * MIN_PER_CLASS)
        _check_number(self.validation_fraction, "validation_fraction", low=0.0, high=1.0, low_open=False,
                      high_open=True)
        check_positive_int(self.patience, "patience")
        check_positive_int(self.eval_every, "eval_every")
        _check_number(self.C, "C", low=0.0)
        check_int(self.seed, "seed", minimum=0)
        if not isinstance(self.feature_map, CircuitFeatureMap):
            raise TypeError("feature_map must be a CircuitFeatureMap whose angles read theta['name'] "
                            f"(qmlnb.kernels), got {type(self.feature_map).__name__}")
        return CircuitStates(self.feature_map, trainable=self.trainable, device=self.device, dtype=self.dtype)

    def _check_labels(self, X, y) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-D with one label per row of X ({len(X)}), got shape {y.shape}")
        y = check_at_least_two_classes(y)
        classes, counts = np.unique(y, return_counts=True)
        if self.loss == "svc" and len(classes) != 2:
            raise ValueError(f"loss='svc' (the SVM dual objective) needs binary labels, got {len(classes)} classes "
                             f"{classes.tolist()}; use loss='alignment' for more classes")
        need = MIN_PER_CLASS * (2 if self.validation_fraction > 0 else 1)
        if counts.min() < need:
            raise ValueError(f"class {classes[counts.argmin()]!r} has {counts.min()} samples; training needs at least "
                             f"{need} per class{' (validation split included)' if need > MIN_PER_CLASS else ''}")
        return y

    def _objective(self, K, y):
        if self.loss == "alignment":
            return -alignment_torch(K, y)
        return svc_loss_torch(K, y, self.C)

    def fit(self, X, y) -> "KernelTrainer":
        """Train theta on (X, y): X (N, n_features) real, y (N,) labels.  Returns self."""
        import torch

        sim = self._check_params()
        features = sim.features(X)  # validates X (shape, finite) before any work
        y = self._check_labels(features, y)
        rng = np.random.default_rng(self.seed)
        train, val = np.arange(len(y)), None
        if self.validation_fraction > 0:
            from sklearn.model_selection import train_test_split

            train, val = train_test_split(train, test_size=self.validation_fraction, stratify=y,
                                          random_state=self.seed)
            train, val = np.sort(train), np.sort(val)
        theta = sim.initial_theta().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([theta], lr=self.lr)
        full = self.batch_size is None or self.batch_size >= len(train)

        def validation_loss() -> float:
            with torch.no_grad():
                S = sim.states(features[val], theta)
                return float(self._objective(fidelity_gram(S), y[val]))

        best = (validation_loss(), 0, theta.detach().clone()) if val is not None else None
        rows, waited, stopped = [], 0, False
        start = time.perf_counter()
        for step in range(1, self.steps + 1):
            batch = train if full else train[_stratified_batch(rng, y[train], self.batch_size)]
            optimiser.zero_grad()
            loss = self._objective(fidelity_gram(sim.states(features[batch], theta)), y[batch])
            loss.backward()
            optimiser.step()
            row = {"step": step, "loss": float(loss.detach()), "validation_loss": math.nan}
            if val is not None and step % self.eval_every == 0:
                row["validation_loss"] = value = validation_loss()
                if value < best[0] - 1e-12:
                    best, waited = (value, step, theta.detach().clone()), 0
                else:
                    waited += 1
                    if waited >= self.patience:
                        rows.append(row)
                        stopped = True
                        break
            rows.append(row)
        self.train_seconds_ = time.perf_counter() - start
        final = theta.detach() if best is None else best[2]
        self.best_step_ = len(rows) if best is None else best[1]
        self.stopped_early_ = stopped
        self.history_ = pd.DataFrame(rows, columns=["step", "loss", "validation_loss"])
        if self.loss == "alignment":
            self.history_.insert(2, "alignment", -self.history_["loss"])
        self.feature_map_ = sim.feature_map(final)
        self.theta_ = self.feature_map_.circuit.theta_dict
        self.initial_theta_ = self.feature_map.circuit.theta_dict
        return self


# ---------------------------------------------------------------------------------------------- controls
CONTROL_MODELS = ("trained", "untrained", "rbf", "projected")


def digits_features(n_features: int, classes=(3, 5), scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits of two classes as (N, n_features) float64 PCA features in [-scale, scale], labels 0/1.

    The PCA (no labels) is fitted on the selected images; each component is
    scaled by its largest absolute value.  A real, embedded binary problem
    that needs no download, for the kernel-training notebook and tests.
    """
    from sklearn.datasets import load_digits

    classes = tuple(int(c) for c in classes)
    if len(classes) != 2 or len(set(classes)) != 2 or not all(0 <= c <= 9 for c in classes):
        raise ValueError(f"classes must be two distinct digits 0..9, got {classes!r}")
    digits = load_digits()
    keep = np.isin(digits.target, classes)
    return pca_features(digits.data[keep], n_features, scale), (digits.target[keep] == classes[1]).astype(np.int64)


def pca_features(images, n_features: int, scale: float = 1.0) -> np.ndarray:
    """(N, n_features) float64 PCA components of ``images`` (N, ...) flattened, each scaled by its largest
    absolute value to [-scale, scale].  The PCA uses no labels; it is fitted on all N rows given."""
    from sklearn.decomposition import PCA

    check_positive_int(n_features, "n_features")
    _check_number(scale, "scale", low=0.0)
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    if n_features > min(flat.shape):
        raise ValueError(f"n_features={n_features} needs at least that many samples and pixels; "
                         f"got {flat.shape[0]} samples of {flat.shape[1]} pixels")
    Z = PCA(n_components=n_features, random_state=0).fit_transform(flat)
    peak = np.abs(Z).max(axis=0)
    return scale * Z / np.where(peak > 0, peak, 1.0)


def grams_by_class(maps: dict, X, y) -> tuple[dict, dict, np.ndarray]:
    """The training Gram of each feature map with the samples ordered by class (blocks show what aligns).

    maps : {name: feature map} (e.g. {"before": fm, "after": trainer.feature_map_}); X (N, n_features); y (N,).
    Returns ({name: (N, N) float64 Gram}, {name: centred alignment with y}, (N,) labels in the Grams' order).
    """
    from ..kernels import gram

    y = np.asarray(y)
    order = np.argsort(y, kind="stable")
    X = np.asarray(X, dtype=np.float64)[order]
    grams = {name: gram(fm.states(X)) for name, fm in maps.items()}
    return grams, {name: kernel_target_alignment(K, y[order]) for name, K in grams.items()}, y[order]


def _qsvm_scores(fm: CircuitFeatureMap, X_train, y_train, X_test, y_test, *, Cs, cv: int, seed: int) -> dict:
    import warnings

    from .diagnostics import KernelDiagnosticWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelDiagnosticWarning)  # the diagnostics are in the table
        clf = QuantumKernelSVC(custom_map=fm, bandwidth=fm.bandwidth, C="auto", Cs=Cs, cv=cv, seed=seed)
        clf.fit(X_train, y_train)
    predicted, scores = clf.predict_with_scores(X_test)
    return {**classification_metrics(y_test, predicted, scores), "alignment": clf.alignments_[clf.bandwidth_],
            "C": clf.C_}


def _projected_scores(fm: CircuitFeatureMap, X_train, y_train, X_test, y_test, *, Cs, cv: int, seed: int) -> dict:
    """The projected kernel's SVM: Bloch features of ``fm``'s states, gamma from the training part, C by CV."""
    from ..kernels import projected_features, projected_gamma, projected_gram
    from .svm import fit_precomputed

    F_train, F_test = projected_features(fm, X_train), projected_features(fm, X_test)
    gamma = projected_gamma(F_train, seed=seed)
    K = projected_gram(F_train, gamma=gamma)
    fit = fit_precomputed(K, y_train, Cs=Cs, cv=cv, seed=seed)
    K_test = projected_gram(F_test, F_train, gamma=gamma)
    return {**classification_metrics(y_test, fit.svc.predict(K_test), fit.svc.decision_function(K_test)),
            "alignment": kernel_target_alignment(K, y_train), "C": fit.C}


def kernel_training_controls(feature_map: CircuitFeatureMap, X, y, *, seeds=(0, 1, 2, 3, 4),
                             test_fraction: float = 0.3, trainer_options: dict | None = None, Cs=DEFAULT_CS,
                             cv: int = 3) -> pd.DataFrame:
    """The QSVM on the trained kernel beside its controls, one row per (seed, model): a tidy table.

    Per seed: a stratified train/test split (``test_fraction``, ``random_state=seed``);
    ``KernelTrainer(feature_map, seed=seed, **trainer_options)`` on the training part;
    then, each scored on the test part,

    - ``trained``: ``QuantumKernelSVC`` on the trained map (C by CV, the map's bandwidth);
    - ``untrained``: the same circuit at its initial theta, same budget;
    - ``rbf``: the RBF SVM on the same features (gamma by alignment, C by CV: ``fit_rbf_alignment``);
    - ``projected``: the projected quantum kernel (Huang et al. 2021) of the untrained map's states: an
      RBF on the one-qubit reduced density matrices (``kernels.projected_gram``, gamma by
      ``projected_gamma`` on the training part, C by CV), so training is measured against another
      use of the same untrained states, not only against a different circuit.

    Returns a DataFrame with columns seed, model, accuracy, f1, roc_auc,
    balanced_accuracy, degenerate, alignment (training Gram), C, train_steps,
    train_seconds (trained only; 0 otherwise); ``attrs["histories"]`` and
    ``attrs["theta"]``: {seed: that seed's ``KernelTrainer.history_`` and trained ``theta_``}.  ``controls_summary`` pairs it by seed.
    """
    X = np.asarray(X, dtype=np.float64)
    y = check_at_least_two_classes(np.asarray(y))
    seeds = [check_int(s, "seed", minimum=0) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers >= 0, got {seeds!r}")
    _check_number(test_fraction, "test_fraction", low=0.0, high=1.0, high_open=True)
    options = dict(trainer_options or {})
    if "seed" in options:
        raise ValueError("trainer_options must not set seed: each seed of `seeds` trains once")
    KernelTrainer(feature_map, seed=seeds[0], **options)._check_params()  # bad options fail before any work
    from sklearn.model_selection import train_test_split

    rows, histories, thetas = [], {}, {}
    for seed in seeds:
        tr, te = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed)
        X_train, X_test, y_train, y_test = X[tr], X[te], y[tr], y[te]
        trainer = KernelTrainer(feature_map, seed=seed, **options).fit(X_train, y_train)
        histories[seed], thetas[seed] = trainer.history_, trainer.theta_
        for model, fm in (("trained", trainer.feature_map_), ("untrained", feature_map)):
            row = _qsvm_scores(fm, X_train, y_train, X_test, y_test, Cs=Cs, cv=cv, seed=seed)
            trained = model == "trained"
            rows.append({"seed": seed, "model": model, **row, "train_steps": len(trainer.history_) if trained else 0,
                         "train_seconds": trainer.train_seconds_ if trained else 0.0})
        rbf = fit_rbf_alignment(X_train, y_train, X_test, y_test, cv=cv, seed=seed, Cs=Cs)
        rows.append({"seed": seed, "model": "rbf", **rbf["metrics"],
                     "alignment": rbf["alignments"][str(rbf["params"]["gamma"])], "C": rbf["params"]["C"],
                     "train_steps": 0, "train_seconds": 0.0})
        rows.append({"seed": seed, "model": "projected",
                     **_projected_scores(feature_map, X_train, y_train, X_test, y_test, Cs=Cs, cv=cv, seed=seed),
                     "train_steps": 0, "train_seconds": 0.0})
    table = pd.DataFrame(rows)
    table.attrs["histories"], table.attrs["theta"] = histories, thetas
    return table


def controls_summary(table: pd.DataFrame, reference: str = "trained", score: str = "balanced_accuracy",
                     confidence: float = 0.95) -> pd.DataFrame:
    """``reference - control`` of ``score`` paired by seed, one row per control, Holm-corrected across the controls.

    table : ``kernel_training_controls``'s output.  Columns: control, n, mean_reference, mean_control,
    difference, ci_low, ci_high (t interval at ``confidence``), p_value, p_holm, verdict
    (``stats.judge``: "better" means the reference, e.g. the trained kernel, beat the control beyond noise).
    """
    missing = {"seed", "model", score} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks the columns {sorted(missing)} (kernel_training_controls' output)")
    wide = table.pivot(index="seed", columns="model", values=score)
    if reference not in wide:
        raise ValueError(f"reference {reference!r} is not among the models {sorted(wide.columns)}")
    results = {m: paired_difference(wide[reference].to_numpy(), wide[m].to_numpy(), confidence)
               for m in wide.columns if m != reference}
    adjusted, _ = holm([r["p_value"] for r in results.values()])
    return pd.DataFrame([{"control": m, "n": r["n"], "mean_reference": r["mean_a"], "mean_control": r["mean_b"],
                          "difference": r["mean_difference"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                          "p_value": r["p_value"], "p_holm": p, "verdict": judge(r, p)}
                         for (m, r), p in zip(results.items(), adjusted)])
