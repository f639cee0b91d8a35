from __future__ import annotations

import json
import re

import pytest

from optuna_mto._errors import ConfigConflictError, MTOError
from optuna_mto._study.config import CONFIG_KEY, StudyConfig


def test_defaults_are_valid() -> None:
    config = StudyConfig()
    assert config.n_splits == 4
    assert config.validation_fraction == 0.2
    assert config.seed == 0
    assert config.splitter == "random"
    assert config.transfer == {}
    assert config.artifact_store == {}
    assert config.max_retries == 2
    assert CONFIG_KEY == "mto:config"


def test_instances_do_not_share_mutable_defaults() -> None:
    a, b = StudyConfig(), StudyConfig()
    a.transfer["interval"] = 3
    assert b.transfer == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_splits": 1},
        {"n_splits": 1000},
        {"validation_fraction": 0.5},
        {"validation_fraction": 1e-9},
        {"seed": 0},
        {"seed": 2**40},
        {"splitter": "kfold", "n_splits": 2},
        {"splitter": "stratified", "n_splits": 1},
        {"artifact_store": {"kind": "file", "path": "/tmp/x"}},
        {"artifact_store": {"kind": "database"}},
        {"artifact_store": {"kind": "custom"}},
        {"max_retries": 0},
    ],
)
def test_valid_values_are_accepted(kwargs) -> None:
    config = StudyConfig(**kwargs)
    for key, value in kwargs.items():
        assert getattr(config, key) == value


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_splits": 0}, "n_splits must be an integer >= 1, but got n_splits=0."),
        ({"n_splits": -1}, "n_splits must be an integer >= 1, but got n_splits=-1."),
        ({"n_splits": True}, "n_splits must be an integer >= 1, but got n_splits=True."),
        ({"n_splits": 2.5}, "n_splits must be an integer >= 1, but got n_splits=2.5."),
        (
            {"validation_fraction": 0},
            "validation_fraction must be a float in (0, 1), but got validation_fraction=0.",
        ),
        (
            {"validation_fraction": 1},
            "validation_fraction must be a float in (0, 1), but got validation_fraction=1.",
        ),
        (
            {"validation_fraction": 1.5},
            "validation_fraction must be a float in (0, 1), but got validation_fraction=1.5.",
        ),
        (
            {"validation_fraction": "0.2"},
            "validation_fraction must be a float in (0, 1), but got validation_fraction='0.2'.",
        ),
        (
            {"validation_fraction": True},
            "validation_fraction must be a float in (0, 1), but got validation_fraction=True.",
        ),
        (
            {"validation_fraction": float("nan")},
            "validation_fraction must be a float in (0, 1), but got validation_fraction=nan.",
        ),
        ({"seed": -1}, "seed must be an integer >= 0, but got seed=-1."),
        ({"seed": 1.0}, "seed must be an integer >= 0, but got seed=1.0."),
        (
            {"splitter": "foo"},
            "splitter must be one of ('random', 'kfold', 'stratified'), but got splitter='foo'.",
        ),
        (
            {"splitter": "kfold", "n_splits": 1},
            "The 'kfold' splitter (KFoldSplitter) needs n_splits >= 2, but got n_splits=1.",
        ),
        (
            {"artifact_store": {"kind": "s3"}},
            "artifact_store['kind'] must be one of ('file', 'database', 'custom'), "
            "but got artifact_store['kind']='s3'.",
        ),
        ({"max_retries": -1}, "max_retries must be an integer >= 0, but got max_retries=-1."),
    ],
)
def test_invalid_value_raises_naming_it(kwargs, match) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        StudyConfig(**kwargs)


def test_invalid_n_splits_is_reported_before_other_fields() -> None:
    with pytest.raises(ValueError, match=r"n_splits=0\."):
        StudyConfig(n_splits=0, seed=-1)


def test_non_json_transfer_params_are_rejected() -> None:
    with pytest.raises(ValueError, match="JSON-serialisable.*not JSON serializable"):
        StudyConfig(transfer={"callback": object()})


def test_to_dict_is_json_and_holds_every_field() -> None:
    config = StudyConfig(
        n_splits=5,
        validation_fraction=0.25,
        seed=11,
        splitter="kfold",
        transfer={"name": "GreedyTransfer", "interval": 2},
        artifact_store={"kind": "database"},
        max_retries=1,
        selection_fraction=0.1,
        task="regression",
    )
    data = config.to_dict()
    assert data == {
        "n_splits": 5,
        "validation_fraction": 0.25,
        "seed": 11,
        "splitter": "kfold",
        "transfer": {"name": "GreedyTransfer", "interval": 2},
        "artifact_store": {"kind": "database"},
        "max_retries": 1,
        "selection_fraction": 0.1,
        "max_preemptions": 20,
        "task": "regression",
    }
    assert json.loads(json.dumps(data)) == data


def test_from_dict_round_trip_through_json() -> None:
    config = StudyConfig(
        n_splits=3,
        validation_fraction=0.3,
        seed=7,
        splitter="stratified",
        transfer={"name": "GreedyTransfer", "interval": 2, "warmup": 0},
        artifact_store={"kind": "file", "path": "/data/ckpt"},
        max_retries=0,
    )
    rebuilt = StudyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert rebuilt == config
    assert rebuilt.to_dict() == config.to_dict()


def test_from_dict_ignores_unknown_keys() -> None:
    data = {**StudyConfig(n_splits=6).to_dict(), "future_option": 1, "other": {"x": 2}}
    rebuilt = StudyConfig.from_dict(data)
    assert rebuilt == StudyConfig(n_splits=6)


def test_from_dict_fills_missing_keys_with_defaults() -> None:
    assert StudyConfig.from_dict({"seed": 9}) == StudyConfig(seed=9)


def test_from_dict_validates() -> None:
    with pytest.raises(ValueError, match=r"but got max_retries=-2\."):
        StudyConfig.from_dict({"max_retries": -2})


def test_check_same_passes_for_equal_configs() -> None:
    a = StudyConfig(n_splits=3, transfer={"interval": 2})
    b = StudyConfig.from_dict(a.to_dict())
    a.check_same(b, "s")
    b.check_same(a, "s")


def test_check_same_lists_every_differing_field() -> None:
    stored = StudyConfig(n_splits=4, seed=0, transfer={"interval": 1})
    given = StudyConfig(n_splits=5, seed=3, transfer={"interval": 2})
    with pytest.raises(ConfigConflictError) as info:
        given.check_same(stored, "my-study")
    message = str(info.value)
    assert message.startswith("Study 'my-study' exists with a different configuration (")
    assert "n_splits: stored 4, given 5" in message
    assert "seed: stored 0, given 3" in message
    assert "transfer: stored {'interval': 1}, given {'interval': 2}" in message
    # Equal fields are not listed.
    for same in ("validation_fraction", "splitter", "artifact_store", "max_retries"):
        assert same not in message
    assert "optuna_mto.load_study()" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, MTOError)


def test_check_same_single_difference_message() -> None:
    with pytest.raises(
        ConfigConflictError,
        match=re.escape(
            "Study 'x' exists with a different configuration "
            "(splitter: stored 'random', given 'kfold'). Pass the stored values"
        ),
    ):
        StudyConfig(splitter="kfold").check_same(StudyConfig(), "x")


def test_check_same_compares_in_stored_json_form():
    given = StudyConfig(transfer={"name": "Mine", "sizes": (1, 2)})
    stored = StudyConfig.from_dict(json.loads(json.dumps(given.to_dict())))
    given.check_same(stored, "s")  # a tuple given equals the list it was stored as


@pytest.mark.parametrize("bad", [-0.1, 0.6, "0.1", True])
def test_selection_fraction_is_validated(bad) -> None:
    with pytest.raises(ValueError, match=r"selection_fraction must be a float in \[0, 0.5\]"):
        StudyConfig(selection_fraction=bad)


def test_task_is_validated_and_a_task_left_out_is_no_conflict() -> None:
    with pytest.raises(ValueError, match="task must be one of .* but got task='classify'"):
        StudyConfig(task="classify")
    stored = StudyConfig(task="regression")
    StudyConfig().check_same(stored, "s")  # left out when opening: the stored one holds
    StudyConfig(task="regression").check_same(StudyConfig(), "s")  # an older study: none
    with pytest.raises(ConfigConflictError, match="task: stored 'regression', given 'classif"):
        StudyConfig(task="classification").check_same(stored, "s")
