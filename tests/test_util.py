"""The shared argument checks of qmlnb._util: one wording, bools refused, NumPy integers accepted."""
from __future__ import annotations

import re

import numpy as np
import pytest

from qmlnb._util import (Each, Interval, IsInstance, Options, aligned_empty, check_int, check_option, check_positive_int,
                         check_real, is_int)


@pytest.mark.parametrize("shape", [(4096, 4096), (3, 5), (1,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
def test_aligned_empty_starts_on_a_cache_line(shape, dtype):
    a = aligned_empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0
    a[...] = 1  # the whole view lies inside its buffer
    assert a.base.nbytes - a.nbytes < 64 + 1


@pytest.mark.parametrize("value, minimum, expected", [
    (3, None, True), (-3, None, True), (np.int64(4), 1, True), (np.uint8(0), 0, True),
    (0, 1, False), (-1, 0, False), (1, 2, False),
    (True, None, False), (np.bool_(True), None, False), (2.0, None, False), ("2", None, False), (None, None, False),
])
def test_is_int(value, minimum, expected):
    assert is_int(value, minimum) is expected


@pytest.mark.parametrize("minimum, bad, message", [
    (None, 1.5, "n must be an integer, got 1.5"),
    (0, -1, "n must be a non-negative integer, got -1"),
    (1, 0, "n must be a positive integer, got 0"),
    (2, 1, "n must be an integer >= 2, got 1"),
    (2, True, "n must be an integer >= 2, got True"),
])
def test_check_int_names_the_parameter_and_the_bound(minimum, bad, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_int(bad, "n", minimum=minimum)


def test_check_int_returns_a_python_int():
    value = check_int(np.int32(7), "n", minimum=7)
    assert value == 7 and type(value) is int


def test_none_passes_only_when_allowed():
    assert check_positive_int(None, "threads", none_ok=True) is None
    assert check_int(None, "seed", none_ok=True) is None
    with pytest.raises(ValueError, match="^threads must be a positive integer, got None$"):
        check_positive_int(None, "threads")
    with pytest.raises(ValueError, match="^threads must be a positive integer or None, got 0$"):
        check_positive_int(0, "threads", none_ok=True)


@pytest.mark.parametrize("bad", [0, -2, 1.0, True, "3"])
def test_check_positive_int_refuses(bad):
    with pytest.raises(ValueError, match="must be a positive integer"):
        check_positive_int(bad, "tile")


# ---------------------------------------------------------------- the validation vocabulary
@pytest.mark.parametrize("constraint, value, message", [
    (Interval(int, 1), 0, "n must be a positive integer, got 0"),
    (Interval(int, 0), True, "n must be a non-negative integer, got True"),
    (Interval(int, 2, 8), 9, "n must be an integer in [2, 8], got 9"),
    (Interval(float), float("nan"), "n must be a real number (not NaN), got nan"),
    (Interval(float, 0, 1, closed="neither"), 1, "n must be a number in (0, 1), got 1"),
    (Interval(float, 0, 1, closed="left"), True, "n must be a number in [0, 1), got True"),
    (Interval(float, 0, float("inf"), closed="neither"), float("inf"), "n must be a finite number > 0, got inf"),
    (Interval(float, 0, closed="neither"), 0.0, "n must be a positive number, got 0.0"),
    (Interval(float, 0), -1, "n must be a non-negative number, got -1"),
    (Interval(float, 2, closed="neither"), 2, "n must be a number > 2, got 2"),
    (Options(("a", "b")), "c", "n must be one of ('a', 'b'), got 'c'"),
    (Options((0, 1)), False, "n must be one of (0, 1), got False"),
    (Each(Interval(int, 1)), [], "n must be a non-empty list of which each is a positive integer, got []"),
    (Each(Interval(int, 1)), [1, 0], "each of n must be a positive integer, got 0"),
    (IsInstance(str), 3, "n must be a string, got 3"),
])
def test_every_constraint_refuses_in_one_wording(constraint, value, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        constraint(value, "n")


def test_constraints_return_the_value_as_pythons():
    assert type(Interval(int, 0)(np.int64(3), "n")) is int and type(Interval(float)(np.float32(0.5), "x")) is float
    assert Interval(float, 0)(2, "x") == 2.0 and Each(Interval(int, 1))((1, 2), "q") == [1, 2]
    assert check_real(None, "x", none_ok=True) is None and check_option("t", "method", ("t", "bootstrap")) == "t"
    with pytest.raises(ValueError, match=r"^x must be a number in \[0, 1\] or None, got 2$"):
        check_real(2, "x", 0, 1, none_ok=True)
    with pytest.raises(ValueError, match="closed must be one of"):
        Interval(float, 0, 1, closed="both sides")
