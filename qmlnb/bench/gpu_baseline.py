"""GPU targets of the Gram engine (states plus Gram on a GPU) against a plain complex64 torch.matmul.

``matmul_baseline(S, device)`` times ``S @ S^H`` as one complex64
``torch.matmul`` on the device: the matrix-product limit a GPU Gram backend
is measured against (``qmlnb bench gram`` calls it when CUDA is present).

``python -m qmlnb bench gpu --json bench/results/gpu-<device>.json`` runs the
GPU targets in one command, each case with its own baseline in the same run:

- N=20,000, n=14: states plus Gram (``states_torch`` then ``gram_device``,
  everything on the GPU) under 1 s, and the Gram step at least 0.6x the
  throughput of the plain matmul of the same shape;
- N=1,000, n=16: states plus Gram under 0.05 s;
- every usable GPU backend through ``qmlnb.kernels.gram`` (NumPy in and out,
  so host transfers included), its agreement with the ``cpu`` backend on the
  first rows, and its ratio to the matmul baseline.

GFLOP/s are counted as in ``qmlnb bench gram``: 8 * N * M * 2**n / seconds
(the full matrix's complex multiply-adds, also for the symmetric case).
``--device cpu`` runs the same code on torch's CPU device (a smoke test of
the harness on machines without a GPU; its numbers say nothing about GPUs).
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

from .. import timing
from ..kernels.blas_reference import gram_throughput

# the targets: (N, n_qubits, seconds allowed for states plus Gram)
TARGET_CASES = ((20_000, 14, 1.0), (1_000, 16, 0.05))
MIN_MATMUL_RATIO = 0.6  # Gram throughput / plain complex64 matmul throughput
ACCURACY_ROWS = 2_000  # rows compared with the cpu backend (its K of N=20,000 is slow on a CPU)
GPU_BACKENDS = ("torchcuda", "pycuda", "cupy")


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_on_device(fn, device, repeats: int, min_time: float = 0.2) -> tuple[float, list[float], object, dict]:
    """(median seconds, all seconds, last result, Timing dict) of ``fn`` by :func:`qmlnb.timing.measure`.

    One warm-up call (cuBLAS handles, kernel compilation, allocator pools:
    ``compile_s``), then at least ``repeats`` calls and ``min_time`` seconds.
    The device is synchronised before and after each call so that the time
    covers the GPU work, not just its launch.
    """
    t = timing.measure(fn, min_repeats=repeats, min_time=min_time, sync=functools.partial(_synchronize, device))
    return t.median, t.times, t.value, t.as_dict()


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def matmul_baseline(S, device, *, repeats: int = 5, min_time: float = 0.2) -> dict:
    """Time the plain complex64 ``S @ S^H`` (one torch.matmul) on ``device``.

    Parameters
    ----------
    S : numpy.ndarray or torch.Tensor, shape (N, d), complex
        States; copied to ``device`` once, outside the timing.
    device : torch.device or str
    repeats : int
        Timed calls after one warm-up (at least; see ``min_time``); the median is reported.
    min_time : float
        Seconds the timed calls must add up to.

    Returns
    -------
    dict with ``seconds`` (median), ``all_seconds``, ``gflops`` (8 N^2 d / s),
    ``pairs_per_s``, ``shape``, ``device`` (its name) and ``timing`` (the
    :class:`qmlnb.timing.Timing` dict: IQR, compile_s, load, noisy).
    """
    import torch

    from ..kernels.backends.torch_cuda import exact_float32_matmul

    device = torch.device(device)
    S = (S if isinstance(S, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(S))).to(device, torch.complex64)
    with exact_float32_matmul():  # the Gram backends refuse TF32; so must their baseline
        seconds, times, _, stats = timed_on_device(lambda: S @ S.mH, device, repeats, min_time)
    n, d = S.shape
    return {"operation": "torch.matmul(S, S^H) complex64", "device": _device_name(device), "shape": [n, d],
            **gram_throughput(seconds, n, n, d), "all_seconds": times, "timing": stats}


def target_case(n: int, n_qubits: int, seconds_allowed: float, *, device, repeats: int,
                backends=GPU_BACKENDS, seed: int = 0, min_time: float = 0.2) -> dict:
    """One target case: on-device states plus Gram, the matmul baseline, and each GPU backend."""
    import torch

    from ..kernels import FeatureMap, available_backends, gram
    from ..kernels.backends.torch_cuda import gram_device
    from ..kernels.states_torch import states_torch

    device = torch.device(device)
    fm = FeatureMap(n_qubits=n_qubits, reps=2, entanglement="linear")
    X = np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, n_qubits))
    dim = fm.dim
    case = {"n": n, "n_qubits": n_qubits, "feature_map": repr(fm)}

    def states_plus_gram():
        return gram_device(states_torch(fm, X, device), device=device, dtype=np.float32)

    total_s, total_times, K, total_stats = timed_on_device(states_plus_gram, device, repeats, min_time)
    del K
    S = states_torch(fm, X, device)
    states_s, _, _, states_stats = timed_on_device(lambda: states_torch(fm, X, device), device, repeats, min_time)
    gram_s, gram_times, K, gram_stats = timed_on_device(lambda: gram_device(S, device=device, dtype=np.float32), device,
                                              repeats, min_time)
    baseline = matmul_baseline(S, device, repeats=repeats, min_time=min_time)
    rows = min(n, ACCURACY_ROWS)
    S_host = S.cpu().numpy()
    reference = gram(S_host[:rows], backend="cpu")
    case["torch_on_device"] = {
        "states_plus_gram_s": total_s, "states_plus_gram_all_s": total_times, "states_s": states_s,
        "timing": {"states_plus_gram": total_stats, "states": states_stats},
        "gram": {**gram_throughput(gram_s, n, n, dim), "all_seconds": gram_times, "timing": gram_stats},
        "gram_vs_matmul": baseline["seconds"] / gram_s,
        "max_abs_difference_vs_cpu": float(np.abs(K[:rows, :rows].cpu().numpy() - reference).max()),
        "states_max_abs_difference_vs_numpy": float(np.abs(S_host[:rows] - fm.states(X[:rows])).max()),
    }
    del K
    case["matmul_baseline"] = baseline
    case["targets"] = {
        # no time limit (a custom case): null, since JSON has no infinity
        "seconds_allowed": seconds_allowed if np.isfinite(seconds_allowed) else None,
        "states_plus_gram_met": bool(total_s < seconds_allowed) if np.isfinite(seconds_allowed) else None,
        "min_gram_vs_matmul": MIN_MATMUL_RATIO,
        "gram_vs_matmul_met": bool(case["torch_on_device"]["gram_vs_matmul"] >= MIN_MATMUL_RATIO),
        "accuracy_met": bool(case["torch_on_device"]["max_abs_difference_vs_cpu"] <= 1e-5),
    }

    status = available_backends()
    case["host_backends"] = {}
    for name in backends:
        usable, reason = status[name]
        if not usable:
            case["host_backends"][name] = {"usable": False, "reason": reason}
            continue
        seconds, times, K_host, stats = timed_on_device(lambda: gram(S_host, backend=name, dtype=np.float32), device,
                                              repeats, min_time)
        case["host_backends"][name] = {
            "usable": True, **gram_throughput(seconds, n, n, dim), "all_seconds": times, "timing": stats,
            "vs_matmul": baseline["seconds"] / seconds,
            "max_abs_difference_vs_cpu": float(np.abs(K_host[:rows, :rows] - reference).max()),
        }
        del K_host
    return case


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; cpu only smoke-tests the harness)")
    parser.add_argument("--cases", default=None,
                        help="comma-separated NxQUBITS[:SECONDS] cases (default: the issue's 20000x14:1,1000x16:0.05)")
    parser.add_argument("--backends", default=",".join(GPU_BACKENDS), help="GPU backends timed through gram()")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after a warm-up; the median is reported")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="repeat until the timed calls add up to this many seconds too (default 0.2)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")


def parse_cases(text: str | None) -> list[tuple[int, int, float]]:
    """'20000x14:1,1000x16' -> [(20000, 14, 1.0), (1000, 16, inf)]."""
    if text is None:
        return list(TARGET_CASES)
    cases = []
    for item in text.split(","):
        size, _, seconds = item.strip().partition(":")
        try:
            n, n_qubits = (int(v) for v in size.split("x"))
            cases.append((n, n_qubits, float(seconds) if seconds else float("inf")))
        except ValueError:
            raise ValueError(f"--cases item {item!r} is not NxQUBITS or NxQUBITS:SECONDS") from None
    return cases


def run(args) -> int:
    import torch

    from ..kernels.backends.torch_cuda import probe
    from ..lab.provenance import environment
    from .._util import atomic_write_json

    cases = parse_cases(args.cases)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(GPU_BACKENDS))
    if unknown:
        raise ValueError(f"--backends: {unknown} are not GPU backends ({', '.join(GPU_BACKENDS)})")
    device = torch.device(args.device)
    if device.type == "cuda" and not probe()[0]:
        print(f"qmlnb bench gpu: {probe()[1]}; nothing measured (use --device cpu to smoke-test the harness)")
        return 1
    result = {"benchmark": "gpu", "device": _device_name(device),
              "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "run"},
              "cases": []}
    for n, n_qubits, allowed in cases:
        print(f"qmlnb bench gpu: N={n}, n_qubits={n_qubits} on {result['device']}", flush=True)
        case = target_case(n, n_qubits, allowed, device=device, repeats=args.repeats, backends=backends,
                           min_time=args.min_time)
        result["cases"].append(case)
        on = case["torch_on_device"]
        print(f"  states+Gram on device {on['states_plus_gram_s']:.4f} s (target < {allowed:g} s met: "
              f"{case['targets']['states_plus_gram_met']}); Gram {on['gram']['gflops']:.0f} GFLOP/s = "
              f"{on['gram_vs_matmul']:.2f}x matmul; max |dK| vs cpu {on['max_abs_difference_vs_cpu']:.1e}", flush=True)
        for name, row in case["host_backends"].items():
            print(f"  gram(backend={name!r}): " + (f"{row['seconds']:.4f} s, {row['vs_matmul']:.2f}x matmul, "
                                                   f"max |dK| {row['max_abs_difference_vs_cpu']:.1e}"
                                                   if row["usable"] else f"not usable: {row['reason']}"), flush=True)
    result["environment"] = environment()
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
