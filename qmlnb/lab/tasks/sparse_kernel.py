"""The ``sparse-kernel`` task (notebook 70-sparse-kernel.ipynb): models on the top-k neighbour kernel against k,
beside their RBF control and the dense QSVM where the dense Gram fits.

One run:

1. trains the QCNN on ``n_train`` training images (seed ``seed``; the same trainer as the ``qsvm`` task) and
   embeds a pool of ``n`` images it never saw (the rest of the training split and the test split; the
   validation images, used for its early stopping, are left out);
2. optionally grows the pool to ``n_total`` samples **by repetition with noise**: copy i of original image j is
   image j plus Gaussian pixel noise of std ``augment_noise`` (normalised pixel units), embedded by the same
   QCNN.  These are not new images: each copy keeps its original's label and *group*, and the labelled / test
   split below is drawn over the groups, so no test image has a noisy twin among the labelled samples;
3. maps the embeddings to states (ZZ map, reps 2, linear; bandwidth by kernel-target alignment on the QCNN's
   own training embeddings when ``bandwidth`` is 0) and, for each k of ``ks``, builds the sparse quantum kernel
   (:func:`qmlnb.kernels.sparse_gram`, finder ``neighbours``) and its RBF control on the embeddings
   (:func:`qmlnb.qsvm.sparse_models.rbf_sparse_gram`), each timed once (after one warm-up call of each builder
   on a few samples) with its peak traced memory (``tracemalloc``: NumPy's and SciPy's allocations, not the
   process's RSS);
4. for each seed of ``seeds``: draws ``labelled`` of the original images (stratified, over groups) as labelled
   samples, the rest as test, and scores kernel k-NN and label spreading on both sparse kernels
   (transductive: the kernels are built once on all samples, without labels); where the pool has at most
   ``dense_max`` samples, also the dense QSVM (the full Gram, C by CV on the labelled samples) and each pixel
   baseline of ``pixel_baselines`` (e.g. ``umap_logreg_pixels``) on the same split (a noisy copy's pixels are
   not kept: the pixel baselines read its original's);
5. with ``umap``, the 2-D UMAP of the original images' QCNN embeddings (at most ``umap_points``), for the
   report's picture coloured by class; without umap-learn the run records why instead of failing.

The seeds repeat the labelled / test draw over one trained QCNN and one kernel per k (the kernels do not
depend on labels): the report pairs the quantum and RBF models seed by seed.
"""
from __future__ import annotations

import dataclasses
import time
import tracemalloc

import numpy as np
import pandas as pd

from . import common
from .qcnn import train_config
from .spec import BACKEND, CLASSES, DATASET, SEED, THREADS, Param, TaskSpec
from .. import stages
from ..._util import Each, Interval, IsInstance

KERNELS = ("quantum", "rbf")           # the sparse quantum kernel and its classical control
METHODS = ("knn", "spreading")         # kernel k-NN and label spreading on each
DENSE_MODEL = "qsvm_dense"             # the dense Gram's QSVM (where it fits)
SPARSE_MODELS = tuple(f"{kernel}_{method}" for kernel in KERNELS for method in METHODS)
SCORES = ("balanced_accuracy", "accuracy", "degenerate")
UMAP_TABLE_COLUMNS = ("x", "y", "label", "class_name")
# rows of the bandwidth's alignment search (QCNN training embeddings): a dense Gram of this size is cheap
ALIGNMENT_SAMPLES = 300
# samples of the warm-up call of each kernel builder before the timed ones
WARM_UP_SAMPLES = 64
# images embedded per call when the pool is grown by repetition: a chunk of noisy copies lives at a time
AUGMENT_CHUNK = 4096


def check_pixel_baselines(names) -> list[str]:
    """``names`` if each is a known baseline of :mod:`qmlnb.qsvm.baselines` that reads pixels, else ValueError."""
    from ...qsvm.baselines import KNOWN_BASELINES, check_baselines

    names = list(check_baselines(names))
    wrong = [name for name in names if KNOWN_BASELINES[name][0] != "pixels"]
    if wrong:
        pixels = [name for name, (inputs, _) in KNOWN_BASELINES.items() if inputs == "pixels"]
        raise ValueError(f"pixel_baselines must name baselines on pixels ({', '.join(pixels)}), got {wrong}")
    return names


def measured(call):
    """(value, seconds, peak bytes) of ``call()``: one timed call (not a benchmark) and the peak of the memory
    ``tracemalloc`` traced above what was held before it (NumPy and SciPy report their buffers to it)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    try:
        value = call()
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if started:
            tracemalloc.stop()
    return value, seconds, max(int(peak), 0)


def embed_pool(model, X: np.ndarray, n_total: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """QCNN embeddings of the ``len(X)`` original images, then of noisy copies up to ``n_total`` samples.

    X : (N0, C, H, W) float32 normalised images;  n_total : 0 or <= N0: the originals only.
    Copy i >= N0 is image ``i % N0`` plus N(0, ``noise``^2) pixel noise (generator ``seed``), made and embedded
    :data:`AUGMENT_CHUNK` at a time, so at most one chunk of images is held.
    Returns ((N, n_qubits) float32 embeddings, (N,) int64 groups: the original image of each sample).
    """
    from ...qsvm.pipeline import embed

    n0 = len(X)
    n_total = max(int(n_total), n0)
    parts = [embed(model, X)]
    rng = np.random.default_rng(seed)
    for start in range(n0, n_total, AUGMENT_CHUNK):
        source = np.arange(start, min(start + AUGMENT_CHUNK, n_total)) % n0
        copies = X[source] + np.float32(noise) * rng.standard_normal(X[source].shape, dtype=np.float32)
        parts.append(embed(model, copies))
    return np.concatenate(parts), np.arange(n_total, dtype=np.int64) % n0


def group_split(y0: np.ndarray, labelled: float, seed: int, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, test) sample indices: a stratified ``labelled`` share of the originals (labels ``y0``, drawn
    by ``seed``) with every sample of their groups, and the rest; both sorted."""
    from ...data import stratified_split

    n_take = int(round(labelled * len(y0)))
    if not 2 <= n_take <= len(y0) - 2:
        raise ValueError(f"labelled = {labelled} of {len(y0)} originals leaves {n_take} labelled; each side needs "
                         "at least 2")
    chosen = np.zeros(len(y0), dtype=bool)
    chosen[stratified_split(y0, n_take, np.random.default_rng(seed), "labelled")[0]] = True
    return np.flatnonzero(chosen[groups]), np.flatnonzero(~chosen[groups])


def choose_bandwidth(E_train: np.ndarray, y_train: np.ndarray, n_qubits: int, backend: str, threads: int) -> float:
    """The bandwidth of the scaled grid with the highest kernel-target alignment on (at most
    :data:`ALIGNMENT_SAMPLES` of) the QCNN's own training embeddings: labels the pool's models never see."""
    from ...kernels import FeatureMap, gram
    from ...qsvm.svm import bandwidth_grid, kernel_target_alignment

    E, y = E_train[:ALIGNMENT_SAMPLES], y_train[:ALIGNMENT_SAMPLES]
    alignment = {b: kernel_target_alignment(gram(FeatureMap(n_qubits=n_qubits, reps=2, bandwidth=b).states(E),
                                                 backend=backend, n_threads=threads), y)
                 for b in bandwidth_grid("scaled", n_qubits)}
    return float(max(alignment, key=alignment.get))


def sparse_kernel_run(dataset: str = "digits", classes=(3, 8), n: int = 200, n_train: int = 100, n_qubits: int = 4,
                      epochs: int = 3, batch_size: int = 16, lr: float = 0.01, bandwidth: float = 0.0, ks=(8, 32),
                      neighbours: str = "exact", labelled: float = 0.5, seeds=(0, 1, 2, 3, 4), n_total: int = 0,
                      augment_noise: float = 0.1, dense_max: int = 5000, pixel_baselines=(), umap: bool = False,
                      umap_points: int = 1000, backend: str = "cpu", threads: int = 0, seed: int = 0,
                      split_seed: int = 0, progress: bool = True):
    """The sparse-kernel study of one setting (the module's steps 1 to 5).

    Returns (metrics: task, the setting, ``n_samples`` (after repetition), ``n_originals``, ``augmented``,
    ``bandwidth`` used, ``ks`` (those below the pool's size) and ``ks_left_out`` (the others), ``dense``
    (whether the dense QSVM ran), ``qcnn`` (the QCNN's own test scores), ``timings`` (qcnn_train_s, embed_s,
    states_s, dense_gram_s, umap_s: single calls), ``umap`` ("drawn", "off" or why not);
    {"sparse_kernel": one row per (model, k, seed): the setting, ``model`` (``<kernel>_<method>`` of
    :data:`SPARSE_MODELS`, :data:`DENSE_MODEL` or a pixel baseline's name), ``kernel``, ``method``, ``k``
    (empty for the dense and pixel models), ``seed``, ``n_labelled``, ``n_test``, the scores of
    :data:`SCORES`, ``unreached`` (test samples no labelled sample reaches), ``gram_s`` and ``peak_mib``
    (building that model's kernel: one call, its traced peak) and ``nnz`` (stored kernel entries);
    "umap" (with ``umap`` and umap-learn): one row per drawn original, :data:`UMAP_TABLE_COLUMNS`}).
    """
    from ...kernels import FeatureMap, gram, sparse_gram
    from ...kernels.sparse import check_neighbours
    from ...qcnn.train import train_qcnn
    from ...qsvm.baselines import fit_baseline
    from ...qsvm.pipeline import embed
    from ...qsvm.sparse_models import kernel_knn, label_spreading, rbf_sparse_gram
    from ...qsvm.svm import fit_precomputed
    from ...metrics import classification_metrics

    args = SPEC.check_args(n=n, n_train=n_train, n_qubits=n_qubits, epochs=epochs, bandwidth=bandwidth, ks=list(ks),
                           labelled=labelled, seeds=list(seeds), n_total=n_total, augment_noise=augment_noise,
                           dense_max=dense_max, umap=umap, umap_points=umap_points, split_seed=split_seed)
    neighbours = check_neighbours(neighbours)
    pixel_baselines = check_pixel_baselines(pixel_baselines)
    common.check_backend(backend)
    cfg = train_config(threads=threads, n_qubits=args["n_qubits"], epochs=args["epochs"], batch_size=batch_size,
                       lr=lr, seed=seed, progress=progress)
    full = common.load_data(dataset, classes=classes, seed=args["split_seed"])
    # the QCNN's training images, and the pool of images it never saw (its validation images steer its early
    # stopping, so they stay out of the pool too)
    train = common.take(full.y_train, args["n_train"], args["split_seed"])
    rest = np.setdiff1d(np.arange(len(full.y_train)), train)
    splits = dataclasses.replace(full, X_train=full.X_train[train], y_train=full.y_train[train],
                                 index_train=full.index_train[train])
    X_pool = np.concatenate([full.X_train[rest], full.X_test])
    y_pool = np.concatenate([full.y_train[rest], full.y_test])
    keep = common.take(y_pool, args["n"], args["split_seed"])
    X0, y0 = X_pool[keep], y_pool[keep]
    # timed without tracemalloc: tracing every Python allocation would slow the training several times over
    t0 = time.perf_counter()
    trained = train_qcnn(splits, cfg)
    t1 = time.perf_counter()
    E, groups = embed_pool(trained.model, X0, args["n_total"], args["augment_noise"], seed)
    train_s, embed_s = t1 - t0, time.perf_counter() - t1
    y = y0[groups]
    if bandwidth == 0:
        bandwidth = choose_bandwidth(embed(trained.model, splits.X_train), splits.y_train, args["n_qubits"], backend,
                                     cfg.threads)
    fm = FeatureMap(n_qubits=args["n_qubits"], reps=2, bandwidth=float(bandwidth))
    t0 = time.perf_counter()
    S = fm.states(E)
    states_s = time.perf_counter() - t0
    n_samples, n_classes = len(y), len(full.classes)
    # a k the pool cannot hold (a small dataset a grid fell back to) is left out and recorded, not an error
    ks_used = [k for k in args["ks"] if k < n_samples]
    if not ks_used:
        raise ValueError(f"every k of {args['ks']} needs more samples than the pool's {n_samples}")
    setting = {"dataset": dataset, "classes": " vs ".join(str(c) for c in full.classes), "n_samples": n_samples,
               "n_originals": len(y0), "augmented": n_samples > len(y0), "n_qubits": args["n_qubits"],
               "bandwidth": float(bandwidth), "neighbours": neighbours, "n_train_qcnn": len(splits.y_train),
               "epochs": args["epochs"], "labelled": args["labelled"], "split_seed": args["split_seed"]}
    dense = n_samples <= args["dense_max"]
    # one warm-up call of each builder on a few samples first: the first call imports modules (scikit-learn's
    # neighbours, the Gram backend) and compiles (numba, pynndescent), time and memory that are not the kernel's
    warm = min(n_samples, WARM_UP_SAMPLES)
    sparse_gram(S[:warm], k=2, neighbours=neighbours, backend=backend, n_threads=cfg.threads, seed=seed)
    rbf_sparse_gram(E[:warm], k=2, n_threads=cfg.threads)
    if dense:
        gram(S[:warm], backend=backend, n_threads=cfg.threads)
    kernels = {}  # (kernel, k) -> (K, seconds, peak bytes)
    for k in ks_used:
        kernels["quantum", k] = measured(lambda: sparse_gram(S, k=k, neighbours=neighbours, backend=backend,
                                                             n_threads=cfg.threads, seed=seed))
        kernels["rbf", k] = measured(lambda: rbf_sparse_gram(E, k=k, n_threads=cfg.threads)[0])
    K_dense, dense_s, dense_peak = measured(lambda: gram(S, backend=backend, n_threads=cfg.threads)) if dense else \
        (None, None, None)
    rows = []

    def row(model, kernel, method, k, seed_, part, scores, gram_s=None, peak=None, nnz=None):
        labelled_idx, test_idx = part
        rows.append({**setting, "model": model, "kernel": kernel, "method": method, "k": k, "seed": seed_,
                     "n_labelled": len(labelled_idx), "n_test": len(test_idx),
                     **{key: scores[key] for key in SCORES}, "unreached": scores.get("unreached", 0.0),
                     "gram_s": gram_s, "peak_mib": None if peak is None else peak / 2**20, "nnz": nnz})

    for s in args["seeds"]:
        part = group_split(y0, args["labelled"], s, groups)
        labelled_idx, test_idx = part
        for (kernel, k), (K, seconds, peak) in kernels.items():
            for method, model in (("knn", kernel_knn), ("spreading", label_spreading)):
                row(f"{kernel}_{method}", kernel, method, k, s, part, model(K, y, labelled_idx, test_idx), seconds,
                    peak, int(K.nnz))
        if dense:
            fit = fit_precomputed(K_dense[np.ix_(labelled_idx, labelled_idx)], y[labelled_idx], seed=s)
            K_test = K_dense[np.ix_(test_idx, labelled_idx)]
            scores = classification_metrics(y[test_idx], fit.svc.predict(K_test), fit.svc.decision_function(K_test),
                                            n_classes=n_classes)
            row(DENSE_MODEL, "quantum", "svm", None, s, part, scores, dense_s, dense_peak, n_samples ** 2)
            pixels = X0[groups].reshape(n_samples, -1)
            for name in pixel_baselines:
                result = fit_baseline(name, pixels[labelled_idx], y[labelled_idx], pixels[test_idx], y[test_idx],
                                      seed=s, n_classes=n_classes)
                row(name, "pixels", name, None, s, part, result["metrics"], result["timings"]["fit"])
    tables = {stages.SPARSE_KERNEL_TABLE: pd.DataFrame(rows)}
    umap_status, umap_s = "off", None
    if args["umap"]:
        umap_status, umap_s, picture = umap_picture(E[: len(y0)], y0, full.class_names, args["umap_points"], seed)
        if picture is not None:
            tables[stages.UMAP_TABLE] = picture
    metrics = {"task": stages.SPARSE_KERNEL, **setting, "classes": list(full.classes), "ks": ks_used,
               "ks_left_out": sorted(set(args["ks"]) - set(ks_used)), "seeds": args["seeds"], "seed": seed,
               "dense": dense, "pixel_baselines": pixel_baselines, "qcnn": trained.metrics, "umap": umap_status,
               "timings": {"qcnn_train_s": train_s, "embed_s": embed_s, "states_s": states_s,
                           "dense_gram_s": dense_s, "umap_s": umap_s}}
    return metrics, tables


def umap_picture(E: np.ndarray, y: np.ndarray, class_names, points: int, seed: int):
    """("drawn", seconds, table) of the 2-D UMAP of the first ``points`` embeddings ``E`` (N, F) with labels
    ``y``, or (why not, None, None) when umap-learn is not installed: the run goes on without the picture."""
    from ...qsvm.baselines import umap_2d

    try:
        xy, seconds = measured(lambda: umap_2d(E[:points], seed=seed))[:2]
    except ImportError as err:
        return str(err), None, None
    labels = y[:points]
    table = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": labels,
                          "class_name": [str(class_names[i]) for i in labels]})
    return "drawn", seconds, table


SPEC = TaskSpec(
    name=stages.SPARSE_KERNEL, notebook="notebooks/70-sparse-kernel.ipynb",
    params=(DATASET, CLASSES, Param("n", 200, Interval(int, 0)), Param("n_train", 100, Interval(int, 0)),
            Param("n_qubits", 4, Interval(int, 1)), Param("epochs", 3, Interval(int, 1)),
            Param("batch_size", 16, Interval(int, 1)), Param("lr", 0.01, Interval(float, 0, closed="neither")),
            Param("bandwidth", 0.0, Interval(float, 0)), Param("ks", [8, 32], Each(Interval(int, 1))),
            Param("neighbours", "exact", IsInstance(str)),
            Param("labelled", 0.5, Interval(float, 0, 1, closed="neither")),
            Param("seeds", [0, 1, 2, 3, 4], Each(Interval(int, 0))), Param("n_total", 0, Interval(int, 0)),
            Param("augment_noise", 0.1, Interval(float, 0)), Param("dense_max", 5000, Interval(int, 0)),
            Param("pixel_baselines", [], Each(IsInstance(str), empty_ok=True)),
            Param("umap", False, IsInstance(bool)), Param("umap_points", 1000, Interval(int, 3)),
            BACKEND, THREADS, SEED, Param("split_seed", 0, Interval(int, 0))),
    metrics=("dataset", "classes", "n_samples", "n_originals", "augmented", "n_qubits", "bandwidth", "neighbours",
             "ks", "seeds", "seed", "split_seed", "dense", "qcnn", "umap", "timings", "timings.qcnn_train_s"),
    tables=(stages.SPARSE_KERNEL_TABLE,))
UMAP_STATUS = SPEC.metric("umap")  # "drawn", "off", or why the picture is missing (umap-learn not installed)
