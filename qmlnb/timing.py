"""One timing discipline for every stage and every benchmark: warm-up apart, repeats, spread, load, ``noisy``.

``measure(fn)`` calls ``fn`` ``warmup`` times untimed-for-the-statistics (the
first call's seconds are kept as ``compile_s``: JIT compilation, thread pools,
GPU contexts and caches are paid there), then times it until it has at least
``min_repeats`` runs *and* at least ``min_time`` seconds of measured time (or
``max_repeats`` runs).  The result, a :class:`Timing`, holds every time, their
min, median, quartiles and IQR, and what the machine was doing meanwhile:

- ``load_before`` / ``load_after``: the 1-minute load average (``os.getloadavg``),
  read just before the first and just after the last timed call;
- ``cpu_s``: CPU seconds this process (all its threads, plus children it has
  waited for) spent in the timed calls, from ``time.process_time`` and
  ``resource.getrusage(RUSAGE_CHILDREN)``; ``wall_s``: their wall seconds;
- ``own_cores`` = ``cpu_s / wall_s``: how many cores the call kept busy on average;
- ``cores``: the cores this process may run on (its CPU affinity).

The ``noisy`` rule.  The load average counts every runnable thread on the
machine, this process's included.  Other processes' demand is estimated as
``others = max(load_before, load_after) - own_cores`` (at least 0), and the
cores left to them while the call runs are ``cores - own_cores``.  A timing is
``noisy`` when ``others > cores - own_cores``: other work wanted more cores
than the call left free, so it took turns on the call's cores and its times
are inflated by an unknown amount.  (When the load already includes this
process's work this is ``load > cores``; the 1-minute average lags, so a short
call on an idle machine starts with a load that does not include it yet,
and ``others`` is then over-estimated by at most ``own_cores``: the rule errs
towards calling a timing noisy.)  A noisy timing is still recorded; readers
should compare it with care and prefer ratios measured with :func:`interleaved`,
whose sides share the same load.

``interleaved({"a": fn_a, "b": fn_b})`` warms up each function, then times them
in rounds A, B, A, B, ... so both sides of a comparison see the same moments of
a changing machine; :func:`ratio` turns two of its results into the ratio of
medians with the median and IQR of the per-round ratios.

This module is library level: it imports nothing from ``qmlnb.lab`` or ``qmlnb.bench``.
"""
from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass, field

import numpy as np

from ._util import Interval, available_cores, check_positive_int

__all__ = ["Timing", "interleaved", "measure", "ratio", "cpu_seconds", "load_average"]

DEFAULT_MAX_REPEATS = 10_000


def load_average() -> float:
    """The 1-minute load average, or NaN where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return math.nan


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's threads and of the children it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass
class Timing:
    """The timed calls of one function: seconds per call and the machine's state around them.

    ``times`` are wall seconds (``time.perf_counter``) of the timed calls, in
    call order; ``compile_s`` the first warm-up call's seconds (None without
    warm-up).  ``value`` is the last call's return value (not serialised).
    """

    times: list[float]
    compile_s: float | None
    load_before: float
    load_after: float
    cpu_s: float
    wall_s: float
    cores: int
    value: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not self.times:
            raise ValueError("times must hold at least one timed call")

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def min(self) -> float:
        return float(np.min(self.times))

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def q1(self) -> float:
        return float(np.percentile(self.times, 25))

    @property
    def q3(self) -> float:
        return float(np.percentile(self.times, 75))

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def load(self) -> float:
        """The higher of the two 1-minute load averages (NaN when unknown)."""
        return max(self.load_before, self.load_after)

    @property
    def own_cores(self) -> float:
        """Cores this process kept busy on average during the timed calls (CPU seconds / wall seconds)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def noisy(self) -> bool:
        """Other processes wanted more cores than the call left free (see the module docstring)."""
        if math.isnan(self.load):
            return False
        others = max(self.load - self.own_cores, 0.0)
        return others > self.cores - self.own_cores

    def as_dict(self) -> dict:
        """Plain JSON values: the statistics, every time, compile_s, load, CPU time and ``noisy``."""
        return {"median_s": self.median, "min_s": self.min, "q1_s": self.q1, "q3_s": self.q3, "iqr_s": self.iqr,
                "n": self.n, "times_s": [float(t) for t in self.times], "compile_s": self.compile_s,
                "load_before": self.load_before, "load_after": self.load_after, "cpu_s": self.cpu_s,
                "wall_s": self.wall_s, "own_cores": self.own_cores, "cores": self.cores, "noisy": self.noisy}


def _check(warmup, min_repeats, min_time, max_repeats, what: str = "repeats") -> None:
    Interval(int, 0)(warmup, "warmup")
    check_positive_int(min_repeats, f"min_{what}")
    check_positive_int(max_repeats, f"max_{what}")
    if max_repeats < min_repeats:
        raise ValueError(f"max_{what} ({max_repeats}) must be >= min_{what} ({min_repeats})")
    Interval(float, 0, math.inf, closed="left")(min_time, "min_time (seconds)")  # a finite number >= 0


def _timed_call(fn, sync):
    """(seconds, CPU seconds, value) of one call; ``sync`` (e.g. a GPU synchronise) runs inside the clock."""
    if sync is not None:
        sync()
    cpu = cpu_seconds()
    start = time.perf_counter()
    value = fn()
    if sync is not None:
        sync()
    seconds = time.perf_counter() - start
    return seconds, cpu_seconds() - cpu, value


def measure(fn, *, warmup: int = 1, min_repeats: int = 5, min_time: float = 0.2,
            max_repeats: int = DEFAULT_MAX_REPEATS, sync=None, after=None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then repeats until ``min_repeats`` and ``min_time`` are both met.

    Parameters
    ----------
    fn : callable with no arguments
    warmup : int >= 0
        Calls before the timed ones; the first one's seconds are ``compile_s``.
    min_repeats, max_repeats : int > 0
        Timed calls: at least ``min_repeats``, at most ``max_repeats``.
    min_time : float >= 0
        Seconds of timed calls to reach (summed) before stopping.
    sync : callable, optional
        Called before each timed call's clock starts and before it stops
        (e.g. ``torch.cuda.synchronize``) so that asynchronous work is counted.
    after : callable, optional
        ``after(value)`` runs after each timed call, outside the clock (check
        or free a result, delete a file the call wrote).

    Returns
    -------
    Timing
    """
    _check(warmup, min_repeats, min_time, max_repeats)
    compile_s = None
    for i in range(warmup):
        seconds, _, _ = _timed_call(fn, sync)
        compile_s = seconds if i == 0 else compile_s
    times, cpu, value = [], 0.0, None
    load_before = load_average()
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < min_time):
        value = None  # free the previous result before the next call allocates its own
        seconds, used, value = _timed_call(fn, sync)
        times.append(seconds)
        cpu += used
        if after is not None:
            after(value)
    return Timing(times=times, compile_s=compile_s, load_before=load_before, load_after=load_average(), cpu_s=cpu,
                  wall_s=float(sum(times)), cores=available_cores(), value=value)


def interleaved(fns: dict, *, warmup: int = 1, min_rounds: int = 5, min_time: float = 0.2,
                max_rounds: int = DEFAULT_MAX_REPEATS, sync=None, after=None) -> dict[str, Timing]:
    """Time several functions in rounds (A, B, A, B, ...) after warming up each one.

    Every round calls each function once, in the dict's order; rounds go on
    until there are ``min_rounds`` of them and the rounds hold at least
    ``min_time`` measured seconds, all functions together (or ``max_rounds``):
    a fast function beside a slow one is not repeated until it alone reaches
    ``min_time``.  All functions get the same number of calls, so :func:`ratio`
    can pair them round by round.  ``sync`` is as for :func:`measure`;
    ``after(name, value)`` runs after each timed call, outside the clock.

    Returns ``{name: Timing}`` in the same order; each Timing's load is read at
    the start and the end of the whole interleaved run (both sides share it).
    """
    if not isinstance(fns, dict) or not fns:
        raise ValueError("fns must be a non-empty dict of {name: callable}")
    for name, fn in fns.items():
        if not callable(fn):
            raise ValueError(f"fns[{name!r}] is not callable")
    _check(warmup, min_rounds, min_time, max_rounds, what="rounds")
    compile_s = {name: None for name in fns}
    for name, fn in fns.items():
        for i in range(warmup):
            seconds, _, _ = _timed_call(fn, sync)
            compile_s[name] = seconds if i == 0 else compile_s[name]
    times = {name: [] for name in fns}
    cpu = dict.fromkeys(fns, 0.0)
    values = dict.fromkeys(fns)
    load_before = load_average()
    rounds, total = 0, 0.0
    while rounds < max_rounds and (rounds < min_rounds or total < min_time):
        for name, fn in fns.items():
            values[name] = None
            seconds, used, values[name] = _timed_call(fn, sync)
            times[name].append(seconds)
            cpu[name] += used
            total += seconds
            if after is not None:
                after(name, values[name])
        rounds += 1
    load_after, cores = load_average(), available_cores()
    return {name: Timing(times=times[name], compile_s=compile_s[name], load_before=load_before,
                         load_after=load_after, cpu_s=cpu[name], wall_s=float(sum(times[name])), cores=cores,
                         value=values[name])
            for name in fns}


def ratio(a: Timing, b: Timing) -> dict:
    """How many times longer ``a`` takes than ``b`` (the speedup of ``b`` over ``a``), from paired rounds.

    ``ratio`` is median(a) / median(b); ``rounds`` are the per-round ratios
    a_i / b_i (the pairs of :func:`interleaved`), summarised by their
    ``median``, ``q1``, ``q3`` and ``iqr``; ``noisy`` if either side is.
    Both timings must hold the same number of calls.
    """
    if not isinstance(a, Timing) or not isinstance(b, Timing):
        raise ValueError("ratio takes two Timing results (from interleaved)")
    if a.n != b.n:
        raise ValueError(f"ratio pairs rounds: a has {a.n} calls and b has {b.n}; time them with interleaved()")
    rounds = [x / y for x, y in zip(a.times, b.times)]
    q1, median, q3 = (float(v) for v in np.percentile(rounds, [25, 50, 75]))
    return {"ratio": a.median / b.median, "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1, "n": len(rounds),
            "rounds": rounds, "noisy": a.noisy or b.noisy}
