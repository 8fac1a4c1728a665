"""Where a number came from: machine, package versions and git commit."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from .._util import available_cores

PACKAGES = ("qmlnb", "numpy", "scipy", "torch", "pennylane", "numba", "scikit-learn", "dask", "papermill")


def git_commit(path: str | os.PathLike | None = None) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the repository holding ``path``."""
    cwd = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, check=True).stdout
        return {"commit": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    """The processor's marketing name (Linux /proc/cpuinfo), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _no_gpu_driver() -> bool:
    """True on Linux without an NVIDIA, AMD (ROCm) or WSL2 (/dev/dxg) GPU driver: torch could see no CUDA
    device there."""
    return (sys.platform.startswith("linux") and not Path("/proc/driver/nvidia").exists()
            and not any(Path(p).exists() for p in ("/dev/kfd", "/dev/dxg"))
            and not any(Path("/dev").glob("nvidia[0-9]*")))


def gpus() -> list[str]:
    """Names of the CUDA devices torch sees (empty without CUDA or torch).

    A process that has not imported torch, on a machine with no GPU driver, gets the same empty answer without
    importing it: the import costs a run that never needed torch (a light notebook) a second or more.
    """
    if "torch" not in sys.modules and _no_gpu_driver():
        return []
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return []


def machine() -> dict:
    """The machine a measurement ran on."""
    import psutil

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": available_cores(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus(),
        "python": platform.python_version(),
    }


def versions(packages=PACKAGES) -> dict:
    """Installed versions of the packages that shape the results."""
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def blas() -> dict:
    """The BLAS numpy calls: {"vendor", "version", "threads"} (threadpoolctl), None values when unknown."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"vendor": None, "version": None, "threads": None}
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return {"vendor": None, "version": None, "threads": None}
    first = pools[0]  # numpy's own BLAS is loaded first
    return {"vendor": first.get("internal_api"), "version": first.get("version"), "threads": first.get("num_threads")}


def data_folder() -> str | None:
    """The data folder runs read (``$QMLNB_DATA_DIR`` or the project's ``data/``), absolute."""
    from ..data import data_dir

    try:
        return str(Path(data_dir()).resolve())
    except (OSError, ValueError):
        return None


def environment() -> dict:
    """Everything a result file records about where and when it was made.

    ``blas`` (vendor, version, threads), the thread variables the run saw
    (``thread_env``: OMP/MKL/OpenBLAS/NUMBA_NUM_THREADS) and the ``data_dir``
    are what the report's header shows beside the machine and versions.
    """
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "git": git_commit(),
        "blas": blas(),
        "thread_env": {name: os.environ.get(name) for name in THREAD_VARS},
        "data_dir": data_folder(),
    }
