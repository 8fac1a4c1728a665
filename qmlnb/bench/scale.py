"""Scale: a Gram matrix larger than memory to disk, tiles on local Dask workers, Nystrom error and accuracy.

Three sections, each compared in the same run with what a user would otherwise do:

- ``disk``: ``gram(S, out=path)`` of N states (default N=50,000, 10 qubits,
  float32: 10 GB) with the time and the peak resident set size (RSS, from
  ``getrusage``; this section runs first so that the peak is its own), and
  on ``--baseline-n`` samples the in-memory ``gram(S)`` against the same
  call to disk (the cost of the file); the time for N=1,000,000 on
  ``--project-workers`` machines of this machine's speed is projected from
  the measured rate (the Gram's work grows as N^2);
- ``dask``: the same Gram on a ``LocalCluster`` of two single-threaded
  workers against one (the ratio is the speed-up), with the tiles sent back
  to this process and with the workers writing them into a file, next to
  the single-process ``gram`` with two BLAS threads against one;
- ``nystrom``: relative Frobenius error of Nystrom features for several M on
  N synthetic embeddings (uniform in [0, 1]^n; computed tile by tile, K is
  never held), and on Fashion-MNIST (the test images in the data folder, PCA
  to n_qubits dimensions, scaled to [0, 1]) the accuracy of a linear SVM on
  Nystrom features against an SVC on the exact precomputed kernel.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..kernels import FeatureMap, gram
from ..provenance import environment
from ..runs import atomic_write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sections", default="disk,dask,nystrom", help="comma-separated: disk, dask, nystrom")
    parser.add_argument("--n-qubits", type=int, default=10, help="qubits (default 10)")
    parser.add_argument("--n", type=int, default=50_000, help="samples of the to-disk Gram (default 50,000)")
    parser.add_argument("--tile", type=int, default=2048, help="tile edge on disk (default 2048)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--work-dir", default=tempfile.gettempdir(), help="folder for the Gram file (deleted after)")
    parser.add_argument("--baseline-n", type=int, default=6000, help="samples for in-memory vs to-disk (default 6000)")
    parser.add_argument("--project-n", type=int, default=1_000_000, help="N of the projection (default 1,000,000)")
    parser.add_argument("--project-workers", type=int, default=16, help="machines like this one in the projection")
    parser.add_argument("--dask-n", type=int, default=6000, help="samples of the Dask comparison (default 6000)")
    parser.add_argument("--dask-tile", type=int, default=1000, help="tile edge of the Dask tasks (default 1000)")
    parser.add_argument("--nystrom-n", type=int, default=20_000, help="samples of the Nystrom error (default 20,000)")
    parser.add_argument("--nystrom-m", default="100,250,500,1000", help="landmark counts M (comma-separated)")
    parser.add_argument("--bandwidth", type=float, default=1.0, help="feature-map bandwidth (default 1.0)")
    parser.add_argument("--data-dir", default=None, help="folder with fashion-mnist/ (default: qmlnb.data's)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/scale-<host>.json)")


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def random_states(n: int, n_qubits: int, bandwidth: float, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).uniform(0.0, 1.0, (n, n_qubits))
    return FeatureMap(n_qubits=n_qubits, bandwidth=bandwidth).states(X)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def disk_section(args) -> dict:
    S = random_states(args.n, args.n_qubits, args.bandwidth)
    folder = Path(tempfile.mkdtemp(prefix="qmlnb-scale-", dir=args.work_dir))
    try:
        K, seconds = timed(lambda: gram(S, out=folder / "K.npy", tile=args.tile, dtype=args.dtype))
        check = np.asarray(K[:64, :64]).astype(np.float64)
        exact = gram(S[:64], dtype=np.float64)
        max_error = float(np.abs(check - exact).max())
        file_gib = (folder / "K.npy").stat().st_size / 2**30
        del K
        peak = peak_rss_gib()
        # the same call in memory vs to disk, on a size whose matrix fits in RAM
        Sb = S[: args.baseline_n]
        _, t_memory = timed(lambda: gram(Sb, tile=args.tile, dtype=args.dtype))
        _, t_disk = timed(lambda: gram(Sb, out=folder / "Kb.npy", tile=args.tile, dtype=args.dtype))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    entries = args.n * (args.n + 1) / 2  # upper triangle computed
    rate = entries / seconds
    projected_entries = args.project_n * (args.project_n + 1) / 2
    return {
        "n": args.n, "n_qubits": args.n_qubits, "dtype": args.dtype, "tile": args.tile, "backend": "cpu",
        "seconds": seconds, "file_gib": file_gib, "peak_rss_gib": peak,
        "gflops": 8 * args.n * args.n * 2**args.n_qubits / seconds / 1e9,
        "max_abs_error_vs_in_memory_64x64": max_error,
        "baseline": {"n": args.baseline_n, "in_memory_seconds": t_memory, "to_disk_seconds": t_disk,
                     "disk_over_memory": t_disk / t_memory},
        "projection": {"n": args.project_n, "workers": args.project_workers,
                       "hours": projected_entries / rate / args.project_workers / 3600,
                       "file_tib": args.project_n**2 * np.dtype(args.dtype).itemsize / 2**40,
                       "assumes": "workers as fast as this whole machine, perfect tile scaling, shared disk fast enough"},
    }


def dask_section(args) -> dict:
    from distributed import Client, LocalCluster

    S = random_states(args.dask_n, args.n_qubits, args.bandwidth, seed=1)
    reference = gram(S, tile=args.dask_tile, dtype=args.dtype)
    # the same Gram with one process doing everything: what Dask's ratio competes with
    _, t_blas_1 = timed(lambda: gram(S, tile=args.dask_tile, n_threads=1, dtype=args.dtype))
    _, t_blas_2 = timed(lambda: gram(S, tile=args.dask_tile, n_threads=2, dtype=args.dtype))
    seconds = {}
    folder = Path(tempfile.mkdtemp(prefix="qmlnb-scale-", dir=args.work_dir))
    try:
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=":0") as cluster, Client(cluster) as client:
                gram(S[:200], client=client, tile=100)  # warm the workers (imports), not timed
                # tiles sent back and assembled here, then tiles written by the workers into a file
                K, seconds[workers, "memory"] = timed(
                    lambda: gram(S, client=client, tile=args.dask_tile, n_threads=1, dtype=args.dtype))
                assert np.abs(K - reference).max() < 1e-5
                K, seconds[workers, "file"] = timed(
                    lambda: gram(S, client=client, tile=args.dask_tile, n_threads=1, dtype=args.dtype,
                                 out=folder / f"K{workers}.npy"))
                assert np.abs(K - reference).max() < 1e-5
                del K
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"n": args.dask_n, "n_qubits": args.n_qubits, "tile": args.dask_tile, "dtype": args.dtype,
            "backend": "cpu", "threads_per_worker": 1,
            "memory": {"one_worker_seconds": seconds[1, "memory"], "two_workers_seconds": seconds[2, "memory"],
                       "speedup_two_vs_one": seconds[1, "memory"] / seconds[2, "memory"]},
            "file": {"one_worker_seconds": seconds[1, "file"], "two_workers_seconds": seconds[2, "file"],
                     "speedup_two_vs_one": seconds[1, "file"] / seconds[2, "file"]},
            "single_process_blas": {"one_thread_seconds": t_blas_1, "two_threads_seconds": t_blas_2,
                                    "speedup_two_vs_one": t_blas_1 / t_blas_2},
            "target_speedup": 1.7}


def fashion_features(n_qubits: int, data_dir) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler

    from ..data import read_dataset

    raw = read_dataset("fashion-mnist", data_dir)
    part = raw.test if raw.test is not None else raw.train
    X = part.images.reshape(len(part.labels), -1).astype(np.float64) / raw.max_value
    X = PCA(n_qubits, random_state=0).fit_transform(X)
    return MinMaxScaler((0.0, 1.0)).fit_transform(X), part.labels


def nystrom_section(args) -> dict:
    from sklearn.svm import SVC, LinearSVC

    from ..kernels.nystrom import NystroemQuantumKernel, relative_frobenius_error

    fm = FeatureMap(n_qubits=args.n_qubits, bandwidth=args.bandwidth)
    ms = [int(m) for m in args.nystrom_m.split(",")]
    X = np.random.default_rng(2).uniform(0.0, 1.0, (args.nystrom_n, args.n_qubits))
    S = fm.states(X)
    features = [NystroemQuantumKernel(fm, m, landmarks="kmeans++", random_state=0).fit_transform(X) for m in ms]
    errors, t_error = timed(lambda: relative_frobenius_error(S, features))
    synthetic = {"n": args.nystrom_n, "embeddings": "uniform in [0, 1]^n_qubits", "landmarks": "kmeans++",
                 "relative_frobenius_error": dict(zip(map(str, ms), errors)), "error_seconds": t_error}

    X, y = fashion_features(args.n_qubits, args.data_dir)
    order = np.random.default_rng(0).permutation(len(y))
    n_test = len(y) // 4
    test, train = order[:n_test], order[n_test:]
    S_train, S_test = fm.states(X[train]), fm.states(X[test])
    K_train, t_k = timed(lambda: gram(S_train))
    K_test = gram(S_test, S_train)
    svc, t_svc = timed(lambda: SVC(kernel="precomputed", C=10.0).fit(K_train, y[train]))
    exact_accuracy = float((svc.predict(K_test) == y[test]).mean())
    rows = {}
    for m in [m for m in ms if m <= len(train)]:
        def fit_nystrom(m=m):
            ny = NystroemQuantumKernel(fm, m, landmarks="kmeans++", random_state=0).fit(X[train])
            F = ny.transform_states(S_train)
            return ny, F, LinearSVC(C=10.0, max_iter=5000).fit(F, y[train])
        (ny, F, linear), seconds = timed(fit_nystrom)
        rows[str(m)] = {"accuracy": float((linear.predict(ny.transform_states(S_test)) == y[test]).mean()),
                        "relative_frobenius_error": float(np.linalg.norm(K_train - F @ F.T) / np.linalg.norm(K_train)),
                        "fit_seconds": seconds}
    real = {"dataset": "fashion-mnist test images in the data folder, PCA to n_qubits, min-max to [0, 1], 10 classes",
            "n_train": len(train), "n_test": len(test), "exact_svc_accuracy": exact_accuracy,
            "exact_fit_seconds": t_k + t_svc, "nystrom_linear_svm": rows}
    return {"n_qubits": args.n_qubits, "bandwidth": args.bandwidth, "synthetic": synthetic, "fashion_mnist": real}


SECTIONS = {"disk": disk_section, "dask": dask_section, "nystrom": nystrom_section}


def run(args) -> int:
    requested = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = requested - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {sorted(SECTIONS)}")
    if args.n < 1 or args.baseline_n > args.n:
        raise SystemExit("--n must be >= 1 and --baseline-n <= --n")
    env = environment()
    result = {"benchmark": "scale", "environment": env,
              "note": "measured on a shared, loaded 2-core machine unless the environment says otherwise"}
    for name in [s for s in SECTIONS if s in requested]:  # disk first so that its peak RSS is its own
        result[name] = SECTIONS[name](args)
        print(json.dumps({name: result[name]}, indent=1), flush=True)
    host = env["machine"]["hostname"] or "machine"
    output = Path(args.output or Path("bench") / "results" / f"scale-{host}.json")
    atomic_write_json(output, result)
    print(f"wrote {output}")
    return 0
