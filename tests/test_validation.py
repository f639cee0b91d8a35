import math

import pytest

from optuna_mto._validation import check_choice, check_int, check_name, check_number


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


def test_numpy_scalars_only_when_asked():
    import numpy as np

    check_int("k", np.int64(3), 1, numpy=True)
    check_number("f", np.float32(0.5), 0, 1, numpy=True)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, but got k="):
        check_int("k", np.int64(3), 1)
    with pytest.raises(ValueError, match=r"f must be a number in \[0, 1\], but got f="):
        check_number("f", np.float32(0.5), 0, 1)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, but got k=np.True_"):
        check_int("k", np.True_, 1, numpy=True)


def test_check_choice_names_the_choices_as_given():
    check_choice("kind", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"kind must be one of \('a', 'b'\), but got kind='c'\."):
        check_choice("kind", "c", ("a", "b"))
    for bad in (["a"], None, 3):
        with pytest.raises(ValueError, match=r"kind must be one of \['a', 'b'\], but got kind="):
            check_choice("kind", bad, ["a", "b"])


def test_check_name_needs_a_non_empty_string():
    check_name("metric_name", "acc")
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match=r"metric_name must be a non-empty string, but got"):
            check_name("metric_name", bad)
