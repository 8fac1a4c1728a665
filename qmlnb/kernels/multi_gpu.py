"""One Gram matrix over several GPUs: tiles dealt round-robin, one worker thread per device.

The GPU backends (``torchcuda``, ``pycuda``, ``cupy``) hand this module their
list of output tiles and a ``work(device, tiles, advance)`` function that
computes some tiles on one device and writes them into disjoint blocks of the
shared host output.  Tile k goes to device ``k mod n_devices``; every tile is
computed by the same code, with the same shapes, as on a single GPU, so the
result does not depend on how many devices there are.  The threads only wait
on the GPUs (the libraries release the GIL during launches and copies).

Nothing here is CUDA-specific: ``devices`` can be any objects, which is how
the scheduling is tested on a machine without GPUs.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

from .._util import check_positive_int
from .tiling import tile_pairs

T = TypeVar("T")

# fewer tiles than this finish too fast for a progress bar to mean anything
PROGRESS_MIN_TILES = 16


def deal_round_robin(items: Sequence[T], n_workers: int) -> list[list[T]]:
    """[items[0::n], items[1::n], ...]: worker k gets every n-th item from k."""
    n_workers = check_positive_int(n_workers, "n_workers")
    return [list(items[k::n_workers]) for k in range(n_workers)]


def run_on_devices(devices: Sequence, tiles: Sequence[T], work: Callable[[object, list[T], Callable[[int], object]], None],
                   *, desc: str = "Gram tiles") -> None:
    """Run ``work(device, its_tiles, advance)`` once per device, in parallel.

    ``advance(n)`` moves a shared progress bar by n tiles.  One device runs
    in the calling thread (no pool); several run one thread each.  The first
    error raised by a worker is re-raised here after all workers stopped.
    """
    from tqdm.auto import tqdm

    if not devices:
        raise ValueError("no devices to run on")
    shares = deal_round_robin(tiles, len(devices))
    bar = tqdm(total=len(tiles), desc=desc, unit="tile", leave=False, disable=len(tiles) < PROGRESS_MIN_TILES)
    try:
        if len(devices) == 1:
            work(devices[0], shares[0], bar.update)
            return
        with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="qmlnb-gpu") as pool:
            futures = [pool.submit(work, device, share, bar.update) for device, share in zip(devices, shares) if share]
            errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
    finally:
        bar.close()


def gram_tiles_on_devices(A, B, tile: int, devices: Sequence, work, *, desc: str) -> None:
    """``run_on_devices`` over the tiles of |A B^H|^2 (upper tiles only when ``B is None``)."""
    run_on_devices(list(devices), tile_pairs(A.shape[0], None if B is None else B.shape[0], tile), work, desc=desc)
