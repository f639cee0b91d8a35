"""The split plan: splits too small to score are refused before any split starts."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from _models import tiny_mlp

import optuna_mto
from optuna_mto._data.dataset import dataset_info
from optuna_mto._data.plan import MIN_TRAIN_ROWS, MIN_VALID_ROWS, SplitPlan, check_plan
from optuna_mto._data.splits import make_splitter
from optuna_mto.transfer import NoTransfer


def _plan(n_samples: int, kind: str = "random", n_splits: int = 4, fraction: float = 0.2,
          targets: np.ndarray | None = None, selection: float = 0.0) -> SplitPlan:  # fmt: skip
    return SplitPlan(make_splitter(kind, n_splits, fraction), n_samples, targets, selection)


def test_the_minimums_are_documented_numbers() -> None:
    assert (MIN_TRAIN_ROWS, MIN_VALID_ROWS) == (5, 5)


@pytest.mark.parametrize(("n_samples", "n_train", "n_valid"), [(5, 4, 1), (2, 1, 1)])
def test_a_validation_set_of_one_row_is_refused(n_samples, n_train, n_valid) -> None:
    message = (
        f"Split 0 would train on {n_train} and validate on {n_valid} of the {n_samples} rows "
        "the splits share; every split needs at least 5 training and 5 validation rows (a "
        "score on 1 row(s) moves in steps of 1/1). Use more data, or a larger "
        "validation_fraction (now 0.2)."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        check_plan(_plan(n_samples))


def test_kfold_names_fewer_splits_as_the_fix() -> None:
    with pytest.raises(ValueError, match=re.escape(
        "validate on 4 of the 16 rows the splits share; every split needs at least 5 "
        "training and 5 validation rows (a score on 4 row(s) moves in steps of 1/4). Use "
        "more data, or fewer splits (now n_splits=4; k-fold validates on 1/n_splits)."
    )):  # fmt: skip
        check_plan(_plan(16, "kfold"))


def test_too_few_training_rows_name_a_smaller_validation_fraction() -> None:
    with pytest.raises(ValueError, match=re.escape(
        "Split 0 would train on 3 and validate on 27 of the 30 rows the splits share; every "
        "split needs at least 5 training and 5 validation rows. Use more data, or a smaller "
        "validation_fraction."
    )):  # fmt: skip
        check_plan(_plan(30, fraction=0.9))


def test_a_selection_set_is_named_among_the_fixes() -> None:
    with pytest.raises(ValueError, match=re.escape(
        "of the 18 rows the splits share (2 more are held out by selection_fraction); every "
    )) as info:  # fmt: skip
        check_plan(_plan(20, selection=0.1))
    assert str(info.value).endswith(
        "Use more data, or a larger validation_fraction (now 0.2), or a smaller selection_fraction."
    )


def test_the_stratified_splitter_needs_two_rows_of_every_class() -> None:
    targets = np.array([0] * 50 + [1] * 50 + [7, 9])
    with pytest.raises(ValueError, match=re.escape(
        "The stratified splitter needs at least 2 rows of every class (one to train on, one "
        "to validate on), but of the 102 rows the splits share, 2 class(es) have a single "
        "row: [7, 9]. Use more data, drop or merge the rare classes, or splitter='random'."
    )):  # fmt: skip
        check_plan(_plan(102, "stratified", targets=targets))
    targets[-1] = 7  # two rows of class 7: fine (with a warning: 21 validation rows)
    with pytest.warns(UserWarning, match="validates on only 21 rows"):
        check_plan(_plan(102, "stratified", targets=targets))


def test_fewer_than_30_validation_rows_warn_that_scores_are_coarse() -> None:
    with pytest.warns(UserWarning, match=re.escape(
        "Split 0 validates on only 20 rows (the fewest of the 4 splits): its scores move in "
        "steps of 1/20 = 0.05, so transfers are accepted and splits ranked on coarse, noisy "
        "numbers. Give each split at least 30 validation rows: more data, or a larger "
        "validation_fraction (now 0.2)."
    )):  # fmt: skip
        check_plan(_plan(100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_plan(_plan(150))  # 30 validation rows: no warning


@pytest.mark.parametrize("n_samples", [5, 2])
def test_optimize_refuses_a_dataset_too_small_before_any_split_starts(
    storage_url, study_name, n_samples
):
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=4, transfer=NoTransfer()
    )
    ran = []

    def objective(trial):
        ran.append(trial.split)
        return 1.0

    with pytest.raises(ValueError, match=r"validate on 1 of the \d rows the splits share"):
        study.optimize(objective, dataset=n_samples, dashboard=False)
    assert ran == [] and study.study.get_trials() == []
    # Nothing was recorded: the same study takes a larger dataset (with a warning).
    assert dataset_info(study._rt) is None
    with pytest.warns(UserWarning, match="validates on only 20 rows"):
        study.optimize(objective, dataset=100, dashboard=False)
    assert sorted(ran) == [0, 1, 2, 3] and study.summary().states == ["complete"] * 4


def test_the_digits_splits_pass_without_a_warning(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())

    def objective(trial):
        trial.report(0.5, 0, model=tiny_mlp())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(objective, dataset=(x, y), evaluate=lambda m, rows: 0.5, dashboard=False)
    assert not [w for w in caught if "validation rows" in str(w.message)]
    assert study.summary().complete
