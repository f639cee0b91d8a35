import math

import pytest

from optuna_mto._validation import check_int, check_number


def test_check_int_bounds_and_types():
    check_int("k", 3, 1)
    check_int("k", 5, 1, 5)
    for bad in (0, True, 2.0, "2"):
        with pytest.raises(ValueError, match=rf"k must be an integer >= 1, but got k={bad!r}\."):
            check_int("k", bad, 1)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\], but got k=6\."):
        check_int("k", 6, 1, 5)


def test_check_number_open_and_closed_ends():
    check_number("f", 0.0, 0, 1)
    check_number("f", 0.5, 0, 1, low_open=True, high_open=True)
    for bad in (0.0, 1.0, math.nan, True, "0.5"):
        with pytest.raises(ValueError, match=r"f must be a float in \(0, 1\), but got f="):
            check_number("f", bad, 0, 1, low_open=True, high_open=True, kind="float")
    with pytest.raises(ValueError, match=r"t must be a number > 0, but got t=0\."):
        check_number("t", 0, 0, low_open=True)
    with pytest.raises(ValueError, match=r"t must be a number >= 2, but got t=1\."):
        check_number("t", 1, 2)
