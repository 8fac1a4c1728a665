"""qmlnb.timing on a fake clock: exact defaults, stopping rules at their boundaries, CPU accounting and sync.

Each timed function advances a fake ``perf_counter`` (and CPU clock) by a known step, so the number of calls a
rule makes is exact; these are the cases a mutmut run over timing.py showed no other test pins.
"""
from __future__ import annotations

import os
import resource
import types

import pytest

from qmlnb import timing

STEP = 0.0625  # a power of two: sums of steps are exact in binary


@pytest.fixture
def clock(monkeypatch):
    """A fake wall and CPU clock that only the timed functions advance (by ``clock.step`` per call)."""
    state = types.SimpleNamespace(now=0.0, cpu=0.0, calls=0, step=STEP)

    def tick(seconds=None):
        state.calls += 1
        seconds = state.step if seconds is None else seconds
        state.now += seconds
        state.cpu += seconds
        return state.calls

    state.tick = tick
    monkeypatch.setattr(timing.time, "perf_counter", lambda: state.now)
    monkeypatch.setattr(timing, "cpu_seconds", lambda: state.cpu)
    return state


def test_measure_defaults_are_one_warmup_five_repeats_and_a_fifth_of_a_second(clock):
    t = timing.measure(clock.tick)
    # 5 repeats of 1/16 s already pass 0.2 s: one warm-up call, then exactly 5
    assert clock.calls == 6 and t.n == 5 and t.compile_s == STEP
    clock.calls = 0
    clock.step = 0.015625  # 1/64 s: 0.2 s takes 13 calls (12.8)
    assert timing.measure(clock.tick).n == 13


def test_interleaved_defaults_match_measure(clock):
    r = timing.interleaved({"a": clock.tick})
    assert clock.calls == 6 and r["a"].n == 5 and r["a"].compile_s == STEP
    clock.calls = 0
    clock.step = 0.015625
    assert timing.interleaved({"a": clock.tick})["a"].n == 13


def test_stopping_at_exactly_min_time(clock):
    # 8 calls of 1/16 s sum to exactly 0.5 s: that is enough, a ninth call is not made
    assert timing.measure(clock.tick, warmup=0, min_repeats=1, min_time=0.5).n == 8
    r = timing.interleaved({"a": clock.tick, "b": clock.tick}, warmup=0, min_rounds=1, min_time=0.5)
    assert r["a"].n == r["b"].n == 4


def test_compile_s_is_the_first_warmup_call(clock):
    def fn():
        return clock.tick(1.0 if clock.calls == 0 else STEP)

    assert timing.measure(fn, warmup=3, min_repeats=1, min_time=0).compile_s == 1.0
    clock.calls = 0
    assert timing.interleaved({"a": fn}, warmup=3, min_rounds=1, min_time=0)["a"].compile_s == 1.0


def test_interleaved_accounts_cpu_and_keeps_each_last_value(clock):
    r = timing.interleaved({"a": clock.tick, "b": clock.tick}, warmup=1, min_rounds=3, min_time=0)
    assert r["a"].cpu_s == r["a"].wall_s == 3 * STEP and r["a"].own_cores == 1.0
    assert (r["a"].value, r["b"].value) == (7, 8)  # 2 warm-up calls, then a, b three times


def test_interleaved_syncs_around_warmup_and_timed_calls(clock):
    syncs = []
    timing.interleaved({"a": clock.tick}, warmup=1, min_rounds=2, min_time=0, sync=lambda: syncs.append(1))
    assert len(syncs) == 2 * 3  # before and after each of 1 warm-up and 2 timed calls


def test_load_average_is_the_one_minute_figure(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 5.0, 15.0))
    assert timing.load_average() == 1.5


def test_cpu_seconds_adds_the_childrens_user_and_system_time(monkeypatch):
    monkeypatch.setattr(timing.time, "process_time", lambda: 1.0)
    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_utime=2.0, ru_stime=4.0))
    assert timing.cpu_seconds() == 7.0


def _timing(load):
    return timing.Timing(times=[1.0, 2.0], compile_s=None, load_before=load, load_after=load, cpu_s=0.0,
                         wall_s=3.0, cores=2)


def test_ratio_is_noisy_when_either_side_is():
    quiet, busy = _timing(0.0), _timing(10.0)
    assert busy.noisy and not quiet.noisy
    assert timing.ratio(quiet, busy)["noisy"] and timing.ratio(busy, quiet)["noisy"]
    assert not timing.ratio(quiet, quiet)["noisy"]


def test_error_messages_say_what_is_wrong():
    with pytest.raises(ValueError, match="^times must hold at least one timed call$"):
        timing.Timing(times=[], compile_s=None, load_before=0, load_after=0, cpu_s=0, wall_s=0, cores=1)
    with pytest.raises(ValueError, match=r"^fns must be a non-empty dict of \{name: callable\}$"):
        timing.interleaved({})
    with pytest.raises(ValueError, match=r"^ratio takes two Timing results \(from interleaved\)$"):
        timing.ratio(1.0, 2.0)
