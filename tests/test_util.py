"""The shared argument checks of qmlnb._util: one wording, bools refused, NumPy integers accepted."""
from __future__ import annotations

import numpy as np
import pytest

from qmlnb._util import check_int, check_positive_int, is_int


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
