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
  workers against one (the ratio is the speed-up), in rounds that alternate
  the two clusters so that both see the same load, in three modes: in
  memory (tiles through shared memory), to a file (workers write their
  tiles), and with the client connected by address, as to a remote cluster
  (states scattered, tiles sent back over sockets); next to the
  single-process ``gram`` with two threads against one; all of them in the
  same rounds of :func:`qmlnb.timing.interleaved` (each result checked
  against ``gram()`` and its file deleted outside the clock);
- ``nystrom``: on CIFAR-10 (the 10,000 test images in the data folder and
  their left-right mirror images, 20,000 samples, PCA to n_qubits
  dimensions, scaled to [0, 1]; an image and its mirror always fall on the
  same side of the train/test split), the relative Frobenius error of
  Nystrom features for several M over all N samples (computed tile by tile,
  K is never held) and the accuracy of a linear SVM on them against an SVC
  on the exact precomputed kernel.

Long single calls (the to-disk Gram, the Nystrom fits) are timed once by
:func:`qmlnb.timing.measure` without warm-up (the ``cpu`` backend compiles
nothing); every entry records its load average, CPU time and ``noisy`` flag.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import timing
from ..kernels import FeatureMap, gram
from ..kernels.out_of_core import sidecar_paths
from ..lab.provenance import environment
from .._util import atomic_write_json


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
    parser.add_argument("--dask-n", type=int, default=12_000, help="samples of the Dask comparison (default 12,000)")
    parser.add_argument("--dask-tile", type=int, default=1500, help="tile edge of the Dask tasks (default 1500)")
    parser.add_argument("--dask-backend", default="cpu", help="backend of the Dask tasks (default cpu)")
    parser.add_argument("--rounds", type=int, default=5, help="Dask rounds; the median is reported (default 5)")
    parser.add_argument("--nystrom-n", type=int, default=20_000,
                        help="samples of the Nystrom comparison, at most twice the CIFAR-10 images (default 20,000)")
    parser.add_argument("--nystrom-m", default="100,250,500,1000", help="landmark counts M (comma-separated)")
    parser.add_argument("--bandwidth", type=float, default=1.0, help="feature-map bandwidth (default 1.0)")
    parser.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-py/ (default: qmlnb.data's)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/scale-<host>.json)")


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def random_states(n: int, n_qubits: int, bandwidth: float, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).uniform(0.0, 1.0, (n, n_qubits))
    return FeatureMap(n_qubits=n_qubits, bandwidth=bandwidth).states(X)


def timed_once(fn, log: dict | None = None, name: str | None = None):
    """(value, seconds) of one call of ``fn`` by :func:`qmlnb.timing.measure` (no warm-up, one repeat).

    The Timing's dict (load, CPU time, ``noisy``) goes to ``log[name]`` when given.
    """
    t = timing.measure(fn, warmup=0, min_repeats=1, min_time=0.0)
    if log is not None:
        log[name] = t.as_dict()
    return t.value, t.median


def disk_section(args) -> dict:
    S = random_states(args.n, args.n_qubits, args.bandwidth)
    folder = Path(tempfile.mkdtemp(prefix="qmlnb-scale-", dir=args.work_dir))
    log = {}
    try:
        K, seconds = timed_once(lambda: gram(S, out=folder / "K.npy", tile=args.tile, dtype=args.dtype), log, "to_disk")
        check = np.asarray(K[:64, :64]).astype(np.float64)
        exact = gram(S[:64], dtype=np.float64)
        max_error = float(np.abs(check - exact).max())
        file_gib = (folder / "K.npy").stat().st_size / 2**30
        del K
        peak = peak_rss_gib()
        # the same call in memory vs to disk, on a size whose matrix fits in RAM
        Sb = S[: args.baseline_n]
        _, t_memory = timed_once(lambda: gram(Sb, tile=args.tile, dtype=args.dtype), log, "baseline_in_memory")
        _, t_disk = timed_once(lambda: gram(Sb, out=folder / "Kb.npy", tile=args.tile, dtype=args.dtype), log,
                          "baseline_to_disk")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    entries = args.n * (args.n + 1) / 2  # upper triangle computed
    rate = entries / seconds
    projected_entries = args.project_n * (args.project_n + 1) / 2
    return {
        "n": args.n, "n_qubits": args.n_qubits, "dtype": args.dtype, "tile": args.tile, "backend": "cpu",
        "seconds": seconds, "file_gib": file_gib, "peak_rss_gib": peak, "timing": log,
        "noisy": any(t["noisy"] for t in log.values()),
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
    options = dict(backend=args.dask_backend, tile=args.dask_tile, n_threads=1, dtype=args.dtype)
    reference = gram(S, backend=args.dask_backend, dtype=args.dtype)  # all cores: not timed
    folder = Path(tempfile.mkdtemp(prefix="qmlnb-scale-", dir=args.work_dir))
    modes = ("memory", "file", "network")
    calls_made = itertools.count()
    try:
        with contextlib.ExitStack() as stack:
            clients = {}
            for workers in (1, 2):
                cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                           host="127.0.0.1", dashboard_address=":0"))
                clients[workers, "local"] = stack.enter_context(Client(cluster))
                # connected by address, the client cannot know the workers share this machine
                clients[workers, "address"] = stack.enter_context(Client(cluster.scheduler_address))
            for client in clients.values():
                gram(S[:200], client=client, tile=100, backend=args.dask_backend)  # warm the workers, not timed

            last = {}  # the latest Dask result, checked and dropped by check() (timings keep no matrices)

            def dask_call(mode, workers):
                client = clients[workers, "address" if mode == "network" else "local"]
                out = folder / f"K-{next(calls_made)}-{workers}.npy" if mode == "file" else None
                last["K"], last["out"] = gram(S, client=client, out=out, **options), out

            def check(name, value):  # outside the clock: the result is right, and its file goes
                if name.startswith("threads"):
                    return
                K, out = last.pop("K"), last.pop("out")
                assert np.abs(K - reference).max() < 1e-5, f"Dask {name} Gram differs from gram()"
                del K
                if out is not None:
                    for path in (out, *sidecar_paths(out)):
                        path.unlink()

            calls = {f"threads-{n}": (lambda n=n: gram(S, **{**options, "n_threads": n}) is None) for n in (1, 2)}
            calls |= {f"{mode}-{workers}": (lambda mode=mode, workers=workers: dask_call(mode, workers))
                      for mode in modes for workers in (1, 2)}
            timed_calls = timing.interleaved(calls, warmup=0, min_rounds=args.rounds, min_time=0.0, after=check)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def scaling(one, two, names):
        r = timing.ratio(one, two)
        return {f"{names[0]}_seconds": one.times, f"{names[1]}_seconds": two.times, "speedup_two_vs_one": r["rounds"],
                "median_speedup": r["median"], "iqr_speedup": r["iqr"], "noisy": r["noisy"],
                "timing": {names[0]: one.as_dict(), names[1]: two.as_dict()}}

    result = {"n": args.dask_n, "n_qubits": args.n_qubits, "tile": args.dask_tile, "dtype": args.dtype,
              "backend": args.dask_backend, "threads_per_worker": 1, "rounds": args.rounds, "target_speedup": 1.7,
              "single_process": scaling(timed_calls["threads-1"], timed_calls["threads-2"],
                                        ("one_thread", "two_threads"))}
    for mode in modes:
        result[mode] = scaling(timed_calls[f"{mode}-1"], timed_calls[f"{mode}-2"], ("one_worker", "two_workers"))
    return result


def cifar_with_mirrors(n_qubits: int, n: int, data_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 test images and their left-right mirrors as features in [0, 1]^n_qubits.

    Returns ``(X, y, source)``: X float64 (n, n_qubits) from PCA of the
    pixels (scaled to [0, 1]), y int labels, and ``source`` the index of the
    original image (an image and its mirror share it), for splitting.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler

    from ..data import read_dataset

    raw = read_dataset("cifar10", data_dir)
    part = raw.test if raw.test is not None else raw.train
    n_images = min(len(part.labels), (n + 1) // 2)
    if 2 * n_images < n:
        raise SystemExit(f"--nystrom-n {n} needs {(n + 1) // 2} CIFAR-10 images, the data folder has {n_images}")
    images = part.images[:n_images]  # (n_images, 3, 32, 32) uint8
    both = np.concatenate([images, images[..., ::-1]]).reshape(2 * n_images, -1)[:n]
    X = PCA(n_qubits, random_state=0).fit_transform(both.astype(np.float64) / raw.max_value)
    source = np.arange(2 * n_images)[:n] % n_images
    return MinMaxScaler((0.0, 1.0)).fit_transform(X), np.concatenate([part.labels[:n_images]] * 2)[:n], source


def nystrom_section(args) -> dict:
    from sklearn.svm import SVC, LinearSVC

    from ..kernels.nystrom import NystroemQuantumKernel, relative_frobenius_error

    fm = FeatureMap(n_qubits=args.n_qubits, bandwidth=args.bandwidth)
    ms = [int(m) for m in args.nystrom_m.split(",")]
    X, y, source = cifar_with_mirrors(args.n_qubits, args.nystrom_n, args.data_dir)
    sources = np.random.default_rng(0).permutation(np.unique(source))
    is_test = np.isin(source, sources[: len(sources) // 4])
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    S = fm.states(X)

    def exact_svc():  # its kernel matrices (2 GB at N=20,000) are freed on return
        svc = SVC(kernel="precomputed", C=10.0).fit(gram(S[train]), y[train])
        return float((svc.predict(gram(S[test], S[train])) == y[test]).mean())

    log = {}
    exact_accuracy, t_exact = timed_once(exact_svc, log, "exact_svc")
    rows, features = {}, []
    for m in [m for m in ms if m <= len(train)]:
        def fit_nystrom(m=m):
            ny = NystroemQuantumKernel(fm, m, landmarks="kmeans++", random_state=0).fit(X[train])
            F = ny.transform_states(S)
            return F, LinearSVC(C=10.0, max_iter=5000).fit(F[train], y[train])
        (F, linear), seconds = timed_once(fit_nystrom, log, f"nystrom_{m}")
        features.append(F)
        rows[str(m)] = {"accuracy": float((linear.predict(F[test]) == y[test]).mean()), "fit_seconds": seconds}
    errors, t_error = timed_once(lambda: relative_frobenius_error(S, features), log, "error_over_all_n")
    for row, error in zip(rows.values(), errors):
        row["relative_frobenius_error"] = error
    return {"n_qubits": args.n_qubits, "bandwidth": args.bandwidth, "n": len(y), "n_train": len(train),
            "n_test": len(test), "landmarks": "kmeans++ among the training samples",
            "dataset": "CIFAR-10 test images in the data folder and their left-right mirrors (an image and its "
                       "mirror on the same side of the split), PCA to n_qubits, min-max to [0, 1], 10 classes",
            "exact_svc_accuracy": exact_accuracy, "exact_seconds": t_exact,
            "error_over_all_n_seconds": t_error, "nystrom_linear_svm": rows, "timing": log,
            "noisy": any(t["noisy"] for t in log.values())}


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
