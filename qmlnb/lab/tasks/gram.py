"""The ``gram-scaling`` task (notebook 30-gram-scaling.ipynb): Gram time against N and n, beside its references."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import common
from .common import ratio_columns, timing_columns
from .spec import BACKEND, DATASET, SEED, THREADS, Param, TaskSpec
from .. import stages
from ... import timing
from ..._util import Each, Interval
from ...data.angles import pca_angles
from ...qcnn.determinism import set_threads


def states_vs_pennylane_metrics(result: dict) -> dict:
    """``qmlnb.kernels.pennylane_reference.states_vs_pennylane``'s result as a run's metrics entry.

    ``n_states``, ``n_qubits``; ``qmlnb_s``/``pennylane_s`` (median seconds of
    one call on all the states) and the same per state (``*_per_state_s``);
    ``ratio`` (PennyLane's median over ours) with ``ratio_q1``/``ratio_q3``, the
    quartiles of the per-round ratios; ``max_abs_difference`` of the
    amplitudes; ``load`` and ``noisy`` of the interleaved rounds; ``timing``.
    """
    n, r, ours = result["n"], result["speedup_rounds"], result["timing"]["qmlnb"]
    return {"n_states": n, "n_qubits": result["n_qubits"], "qmlnb_s": result["qmlnb_s"],
            "pennylane_s": result["pennylane_broadcast_s"], "qmlnb_per_state_s": result["qmlnb_s"] / n,
            "pennylane_per_state_s": result["pennylane_broadcast_s"] / n, "ratio": result["speedup"],
            "ratio_q1": r["q1"], "ratio_q3": r["q3"], "rounds": r["n"],
            "max_abs_difference": result["max_abs_difference"],
            "load": max(ours["load_before"], ours["load_after"]), "noisy": bool(r["noisy"]),
            "timing": result["timing"]}


def gram_scaling(backend: str = "cpu", sizes=(100, 200, 400), qubits=(8,), threads: int = 0, reps: int = 2,
                 tile: int = 0, repeats: int = 5, min_time: float = 0.2, dataset: str = "digits", seed: int = 0,
                 progress: bool = True, pennylane_states: int = 0):
    """Time the symmetric Gram matrix of N states for each N in ``sizes`` and n in ``qubits``, with its references.

    Embeddings are n PCA angles of the dataset's images (all splits joined, so
    N can reach the dataset size); states come from the ZZ feature map.  Every
    point is timed with :func:`qmlnb.timing.interleaved` (a warm-up call each,
    kept as ``compile_s``, then rounds until ``repeats`` rounds and
    ``min_time`` seconds), the backend side by side with, on the same states:

    - BLAS ``cherk`` (S S^H on the same threads: the matrix-product limit);
    - the ``cpu`` backend (unless ``backend`` is ``cpu``), the reference of ``speedup_vs_cpu``;
    - the backend on 1 thread (when ``threads`` > 1), the reference of ``speedup_vs_1_thread``.

    Ratios come from these interleaved rounds (same run, same data, same load),
    never from other runs.  Returns (metrics dict, table DataFrame with one row
    per (n, N): n_qubits, n_samples, dim; states_s and gram_s (medians) with
    their ``_iqr_s``, ``_min_s``, ``_n`` and ``_compile_s``; gflops (8 N^2 2^n
    real flops, the full matrix's, over the median: comparable with cherk's);
    cherk_s, cherk_gflops, vs_cherk (cherk's time over the backend's: the
    fraction of BLAS throughput reached) with the quartiles of its per-round
    values, speedup_vs_cpu and speedup_vs_1_thread likewise (cpu_s,
    one_thread_s), max_abs_diff_vs_cpu, load and noisy).

    ``pennylane_states`` > 0 also times ``FeatureMap.states`` against PennyLane
    ``default.qubit`` (broadcast QNode of the same map) on the first
    ``pennylane_states`` angles of the largest point (largest n, largest N),
    interleaved in the same run
    (:func:`qmlnb.kernels.pennylane_reference.states_vs_pennylane`): the
    metrics' ``states_vs_pennylane`` (:func:`states_vs_pennylane_metrics`).
    PennyLane is slow per state: a few dozen states give a stable ratio.
    """
    from tqdm.auto import tqdm

    from ...kernels import FeatureMap, gram
    from ...kernels.blas_reference import cherk_call, gram_gflops

    common.check_backend(backend)
    args = SPEC.check_args(sizes=list(sizes), qubits=list(qubits), repeats=repeats, pennylane_states=pennylane_states)
    sizes, qubits, pennylane_states = sorted(args["sizes"]), sorted(args["qubits"]), args["pennylane_states"]
    if pennylane_states > sizes[-1]:
        raise ValueError(f"pennylane_states={pennylane_states} exceeds the largest size {sizes[-1]}: it compares "
                         "states of the largest point")
    threads = set_threads(threads)
    splits = common.load_data(dataset, classes=None, seed=seed)
    images = np.concatenate([splits.X_train, splits.X_val, splits.X_test])
    if sizes[-1] > len(images):
        raise ValueError(f"sizes go up to {sizes[-1]} but {dataset} holds {len(images)} images")
    kwargs = {"backend": backend, "n_threads": threads, "tile": tile or None}
    rows, largest = [], {}
    for n_qubits, n in tqdm([(q, n) for q in qubits for n in sizes], desc=f"gram {backend}", disable=not progress):
        fm = FeatureMap(n_qubits=n_qubits, reps=reps)
        X = pca_angles(images[:n], n_components=n_qubits)[0]
        states = timing.measure(lambda: fm.states(X), min_repeats=repeats, min_time=min_time)
        S = states.value
        calls = {"backend": lambda: gram(S, **kwargs), "cherk": cherk_call(S, threads)}
        if backend != "cpu":
            calls["cpu"] = lambda: gram(S, backend="cpu", n_threads=threads, tile=tile or None)
        if threads > 1:
            calls["one_thread"] = lambda: gram(S, **{**kwargs, "n_threads": 1})
        timed = timing.interleaved(calls, min_rounds=repeats, min_time=min_time)
        t = timed["backend"]
        K = t.value
        reference = timed["cpu"].value if "cpu" in timed else K  # the cpu backend is the reference itself
        row = {"n_qubits": n_qubits, "n_samples": n, "dim": fm.dim, **timing_columns("states", states),
               **timing_columns("gram", t), "gflops": gram_gflops(n, n, fm.dim, t.median),
               "cherk_s": timed["cherk"].median, "cherk_iqr_s": timed["cherk"].iqr,
               "cherk_gflops": gram_gflops(n, n, fm.dim, timed["cherk"].median),
               **ratio_columns("vs_cherk", timing.ratio(timed["cherk"], t))}
        if "cpu" in timed:
            row |= {"cpu_s": timed["cpu"].median, **ratio_columns("speedup_vs_cpu", timing.ratio(timed["cpu"], t))}
        if "one_thread" in timed:
            row |= {"one_thread_s": timed["one_thread"].median,
                    **ratio_columns("speedup_vs_1_thread", timing.ratio(timed["one_thread"], t))}
        row |= {"max_abs_diff_vs_cpu": float(np.abs(K - reference).max()), "load": t.load,
                "noisy": any(x.noisy for x in (states, *timed.values()))}
        rows.append(row)
        largest = {"n_qubits": n_qubits, "n_samples": n, "gram": t.as_dict(), "states": states.as_dict(),
                   **{name: x.as_dict() for name, x in timed.items() if name != "backend"}}
        del K, reference, timed, calls
    table = pd.DataFrame(rows)
    last = rows[-1]
    metrics = {"task": stages.GRAM, "backend": backend, "threads": threads, "qubits": qubits,
               "dataset": dataset, "max_abs_diff_vs_cpu": float(table["max_abs_diff_vs_cpu"].max()),
               "largest_n": sizes[-1], "noisy": bool(table["noisy"].any()), "load_max": float(table["load"].max()),
               "timings": {"gram_s_largest": last["gram_s"], "gram_iqr_s_largest": last["gram_iqr_s"],
                           "states_s_largest": last["states_s"], "gflops_largest": last["gflops"],
                           "vs_cherk_largest": last["vs_cherk"],
                           "speedup_vs_cpu_largest": last.get("speedup_vs_cpu"),
                           "speedup_vs_1_thread_largest": last.get("speedup_vs_1_thread")},
               "timing_largest": largest}
    if pennylane_states:
        from ...kernels.pennylane_reference import states_vs_pennylane

        # fm and X are the largest point's (the loop's last): the same angles as its Gram's states
        result = states_vs_pennylane(fm, X[:pennylane_states], rounds=repeats, min_time=min_time)
        metrics["states_vs_pennylane"] = states_vs_pennylane_metrics(result)
    return metrics, table


SPEC = TaskSpec(
    name=stages.GRAM, notebook="notebooks/30-gram-scaling.ipynb",
    params=(BACKEND, Param("sizes", [100, 200, 400], Each(Interval(int, 2))),
            Param("qubits", [6, 8], Each(Interval(int, 1))), THREADS, Param("reps", 2, Interval(int, 1)),
            Param("tile", 0, Interval(int, 0)), Param("repeats", 5, Interval(int, 1)),
            Param("min_time", 0.2, Interval(float, 0)), DATASET, SEED, Param("pennylane_states", 0, Interval(int, 0))),
    metrics=("backend", "threads", "qubits", "dataset", "max_abs_diff_vs_cpu", "largest_n", "noisy", "load_max",
             "timings", "timings.gram_s_largest", "timing_largest"),
    optional=("states_vs_pennylane", "states_vs_pennylane.ratio"),
    tables=(stages.GRAM_TIMES,))
STATES_VS_PENNYLANE = SPEC.metric("states_vs_pennylane")  # FeatureMap.states against PennyLane default.qubit
