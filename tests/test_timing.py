"""qmlnb.timing: statistics of known costs, the noisy rule, warm-up apart, interleaving order, ratios, bad input."""
import json
import os
import time

import pytest

from qmlnb import timing
from qmlnb._util import available_cores


# Tolerances allow for a loaded machine: a sleep never returns early but may return late, and a busy-wait of a
# known CPU time takes at least that long on the wall clock.
LATE = 0.25


def busy_cpu(seconds: float) -> None:
    """Spin until this thread has used ``seconds`` of CPU time (a known cost that keeps one core busy)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_known_cost_gives_its_median():
    t = timing.measure(lambda: time.sleep(0.02), min_repeats=5, min_time=0.0)
    assert t.n == 5 and len(t.times) == 5
    assert 0.02 <= t.median < 0.02 + LATE and t.min >= 0.02
    assert t.q1 <= t.median <= t.q3 and t.iqr == pytest.approx(t.q3 - t.q1)
    assert t.wall_s == pytest.approx(sum(t.times))


def test_busy_wait_cost_and_cpu_time():
    t = timing.measure(lambda: busy_cpu(0.01), min_repeats=5, min_time=0.0)
    # its wall time is at least its CPU time (more when other processes take turns on the core)
    assert t.median >= 0.01 and t.min >= 0.01
    # the process's CPU time is the known cost, 5 x 10 ms (plus the loop's overhead), one core at most
    assert 0.05 <= t.cpu_s < 0.065 and t.cpu_s <= t.wall_s * 1.05 + 0.01 and t.own_cores <= 1.1
    idle = timing.measure(lambda: time.sleep(0.01), min_repeats=5, min_time=0.0)
    assert idle.cpu_s < 0.01 and idle.own_cores < 0.2


def test_jitter_widens_the_iqr():
    steady = timing.measure(lambda: time.sleep(0.005), min_repeats=12, min_time=0.0)
    delays = iter([0.005, 0.15] * 7)  # warm-up + 12 calls: 6 or 7 long ones, so q3 >= 0.15
    jittered = timing.measure(lambda: time.sleep(next(delays)), min_repeats=12, min_time=0.0)
    assert jittered.q3 >= 0.15 and jittered.iqr > steady.iqr and jittered.iqr > 0.05


def test_min_time_adds_repeats_and_max_repeats_caps_them():
    t = timing.measure(lambda: time.sleep(0.01), min_repeats=2, min_time=0.1)
    # repeats go on until 0.1 s is reached, and stop there
    assert t.n >= 2 and sum(t.times) >= 0.1 and (t.n == 2 or sum(t.times[:-1]) < 0.1)
    capped = timing.measure(lambda: time.sleep(0.01), min_repeats=2, min_time=10.0, max_repeats=3)
    assert capped.n == 3


def test_warmup_is_excluded_and_recorded_as_compile_s():
    calls = []

    def fn():  # the first call is slow, as a JIT compilation is
        calls.append(None)
        time.sleep(0.3 if len(calls) == 1 else 0.001)
        return len(calls)

    t = timing.measure(fn, warmup=1, min_repeats=5, min_time=0.0)
    assert len(calls) == 6 and t.n == 5
    assert t.compile_s >= 0.3 and max(t.times) < 0.3
    assert t.value == 6  # the last timed call's result
    cold = timing.measure(lambda: None, warmup=0, min_repeats=1, min_time=0.0)
    assert cold.compile_s is None and cold.n == 1 and cold.iqr == 0.0


@pytest.mark.parametrize("load, noisy", [(0.0, False), (available_cores() + 1.0, True)])
def test_noisy_when_the_load_exceeds_the_cores(monkeypatch, load, noisy):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    t = timing.measure(lambda: time.sleep(0.002), min_repeats=3, min_time=0.0)
    assert (t.load_before, t.load_after, t.cores) == (load, load, available_cores())
    assert t.noisy is noisy and t.as_dict()["noisy"] is noisy


def test_noisy_rule_counts_the_cores_this_process_uses():
    # 2 cores; the call keeps 1 busy. Others' demand = load - 1 must stay within the 1 core left.
    base = dict(times=[1.0], compile_s=None, cpu_s=1.0, wall_s=1.0, cores=2)
    assert not timing.Timing(load_before=1.9, load_after=1.9, **base).noisy  # others 0.9 <= 1
    assert timing.Timing(load_before=1.5, load_after=2.2, **base).noisy  # others 1.2 > 1 (the higher load counts)
    idle = dict(base, cpu_s=0.0)  # a call that uses no core (a sleep): others may use both
    assert not timing.Timing(load_before=2.0, load_after=1.0, **idle).noisy
    assert timing.Timing(load_before=2.1, load_after=1.0, **idle).noisy
    assert not timing.Timing(load_before=float("nan"), load_after=float("nan"), **base).noisy


def test_as_dict_is_plain_json():
    d = timing.measure(lambda: time.sleep(0.001), min_repeats=5, min_time=0.0).as_dict()
    assert json.loads(json.dumps(d)) == d
    for key in ("median_s", "min_s", "q1_s", "q3_s", "iqr_s", "n", "times_s", "compile_s", "load_before",
                "load_after", "cpu_s", "wall_s", "own_cores", "cores", "noisy"):
        assert key in d
    assert d["n"] == 5 and d["median_s"] == pytest.approx(sorted(d["times_s"])[2])


def test_interleaved_alternates_after_warming_each():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    result = timing.interleaved(fns, warmup=1, min_rounds=3, min_time=0.0)
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert list(result) == ["a", "b"] and result["a"].n == result["b"].n == 3
    assert result["a"].compile_s is not None and result["a"].load_before == result["b"].load_before


def test_interleaved_min_time_counts_all_functions_together():
    result = timing.interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.01)}, min_rounds=2,
                                min_time=0.05)
    # the slow side's 10 ms per round reaches 50 ms in 5 rounds (fewer only if sleep overshoots), then it stops
    assert result["fast"].n == result["slow"].n and 2 <= result["slow"].n <= 5
    rounds = [f + s for f, s in zip(result["fast"].times, result["slow"].times)]
    assert sum(rounds) >= 0.05 and (len(rounds) == 2 or sum(rounds[:-1]) < 0.05)
    capped = timing.interleaved({"a": lambda: time.sleep(0.01)}, min_rounds=1, min_time=10.0, max_rounds=2)
    assert capped["a"].n == 2


def test_ratio_of_paired_rounds():
    result = timing.interleaved({"slow": lambda: time.sleep(0.02), "fast": lambda: time.sleep(0.005)},
                                min_rounds=5, min_time=0.0)
    r = timing.ratio(result["slow"], result["fast"])
    assert r["ratio"] == pytest.approx(result["slow"].median / result["fast"].median)
    assert r["n"] == 5 and len(r["rounds"]) == 5 and r["q1"] <= r["median"] <= r["q3"]
    assert r["rounds"] == pytest.approx([s / f for s, f in zip(result["slow"].times, result["fast"].times)])


def test_ratio_from_known_times():
    def fixed(times):
        return timing.Timing(times=times, compile_s=None, load_before=0.0, load_after=0.0, cpu_s=0.0,
                             wall_s=sum(times), cores=2)

    r = timing.ratio(fixed([2.0, 4.0, 6.0, 8.0]), fixed([1.0, 1.0, 2.0, 1.0]))
    assert r["rounds"] == [2.0, 4.0, 3.0, 8.0]
    assert r["ratio"] == pytest.approx(5.0 / 1.0) and r["median"] == pytest.approx(3.5)
    assert (r["q1"], r["q3"]) == pytest.approx((2.75, 5.0)) and r["iqr"] == pytest.approx(2.25)


@pytest.mark.parametrize("kwargs, match", [
    ({"warmup": -1}, "warmup"), ({"warmup": 1.5}, "warmup"), ({"min_repeats": 0}, "min_repeats"),
    ({"min_repeats": True}, "min_repeats"), ({"min_time": -0.1}, "min_time"), ({"min_time": float("inf")}, "min_time"),
    ({"min_time": "1"}, "min_time"), ({"max_repeats": 0}, "max_repeats"),
    ({"min_repeats": 5, "max_repeats": 4}, "max_repeats"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timing.measure(lambda: None, **kwargs)


def test_bad_interleaved_and_ratio_arguments_raise():
    with pytest.raises(ValueError, match="fns"):
        timing.interleaved({})
    with pytest.raises(ValueError, match="fns"):
        timing.interleaved([lambda: None])
    with pytest.raises(ValueError, match="not callable"):
        timing.interleaved({"a": 1})
    with pytest.raises(ValueError, match="min_rounds"):
        timing.interleaved({"a": lambda: None}, min_rounds=0)
    a = timing.measure(lambda: None, min_repeats=3, min_time=0.0, max_repeats=3)
    b = timing.measure(lambda: None, min_repeats=4, min_time=0.0, max_repeats=4)
    with pytest.raises(ValueError, match="interleaved"):
        timing.ratio(a, b)
    with pytest.raises(ValueError, match="Timing"):
        timing.ratio(a, 1.0)
    with pytest.raises(ValueError, match="times"):
        timing.Timing(times=[], compile_s=None, load_before=0, load_after=0, cpu_s=0, wall_s=0, cores=1)


def test_sync_runs_inside_the_clock():
    events = []
    timing.measure(lambda: events.append("call"), warmup=0, min_repeats=2, min_time=0.0,
                   sync=lambda: events.append("sync"))
    assert events == ["sync", "call", "sync"] * 2


def test_after_runs_outside_the_clock_with_each_result():
    seen = []
    t = timing.measure(lambda: len(seen), warmup=1, min_repeats=3, min_time=0.0,
                       after=lambda value: (seen.append(value), time.sleep(0.3)))
    assert seen == [0, 1, 2] and max(t.times) < 0.3  # the warm-up's result is not checked; the sleeps not timed
    pairs = []
    result = timing.interleaved({"a": lambda: "A", "b": lambda: "B"}, warmup=0, min_rounds=2, min_time=0.0,
                                after=lambda name, value: (pairs.append((name, value)), time.sleep(0.3)))
    assert pairs == [("a", "A"), ("b", "B")] * 2 and max(result["a"].times + result["b"].times) < 0.3
