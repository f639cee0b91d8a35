from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest
from _models import digits_trainer, tiny_mlp

import optuna_mto
from optuna_mto.transfer import (
    AdaptiveTransfer,
    BaseTransferManager,
    GreedyTransfer,
    InterpolateTransfer,
    NoTransfer,
    PBTTransfer,
    TransferContext,
    from_params,
)

NAN = math.nan
OTHERS = {0: 0.2, 1: 0.6, 3: 0.4, 4: 0.8}


def _context(
    fitness: float = 0.5,
    direction: str = "maximize",
    others: dict[int, float] | None = None,
    seed: int = 0,
) -> TransferContext:
    return TransferContext(
        receiver=2,
        step=1,
        fitness=fitness,
        direction=direction,
        others=OTHERS if others is None else others,
        rng=np.random.default_rng(seed),
    )


class _Custom(BaseTransferManager):
    def choose_donor(self, context: TransferContext) -> int | None:
        return None


# ----------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("interval", "warmup", "expected"),
    [
        (1, 0, [True, True, True, True, True, True, True, True]),
        (1, 1, [False, True, True, True, True, True, True, True]),
        (2, 0, [True, False, True, False, True, False, True, False]),
        (2, 1, [False, True, False, True, False, True, False, True]),
        (3, 2, [False, False, True, False, False, True, False, False]),
        (1, 5, [False, False, False, False, False, True, True, True]),
        (4, 3, [False, False, False, True, False, False, False, True]),
    ],
)
def test_should_transfer_schedule(interval: int, warmup: int, expected: list[bool]) -> None:
    manager = GreedyTransfer(interval=interval, warmup=warmup)
    assert manager.enabled is True
    assert [manager.should_transfer(step) for step in range(8)] == expected


def test_default_schedule_is_every_step_from_one() -> None:
    manager = GreedyTransfer()
    assert (manager.interval, manager.warmup) == (1, 1)
    assert not manager.should_transfer(0)
    assert all(manager.should_transfer(step) for step in range(1, 50))


@pytest.mark.parametrize(
    "make", [GreedyTransfer, AdaptiveTransfer, PBTTransfer, InterpolateTransfer, _Custom]
)
def test_warmup_defaults_to_interval(make) -> None:
    manager = make(interval=20)
    assert manager.warmup == 20 and manager.get_params()["warmup"] == 20
    assert [s for s in range(61) if manager.should_transfer(s)] == [20, 40, 60]
    early = make(interval=20, warmup=1)
    assert [s for s in range(61) if early.should_transfer(s)] == [1, 21, 41]
    if make is not _Custom:  # the stored config rebuilds the same schedule
        assert from_params(manager.get_params()).warmup == 20


def test_a_stored_warmup_is_kept() -> None:
    # Studies store the warmup they ran with (an older default of 1 included).
    params = {"name": "GreedyTransfer", "interval": 2, "warmup": 1}
    assert from_params(params).warmup == 1


def test_warn_if_never_transfers_names_the_schedule_and_the_fix() -> None:
    with pytest.warns(UserWarning) as record:
        assert GreedyTransfer(interval=20).warn_if_never_transfers(3) is True
    assert [str(w.message) for w in record] == [
        "GreedyTransfer(interval=20, warmup=20) never transfers in a run of 3 report step(s) "
        "(steps 0 to 2): its first transfer step is step 20. Lower interval (warmup defaults "
        "to it) or report more steps; to train the splits independently, create the study "
        "with transfer=NoTransfer()."
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GreedyTransfer(interval=20, warmup=1).warn_if_never_transfers(3) is False
        assert GreedyTransfer(interval=3).warn_if_never_transfers(4) is False
        assert NoTransfer(interval=20).warn_if_never_transfers(3) is False


def test_an_interval_longer_than_the_epochs_warns_once_before_any_split(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=GreedyTransfer(interval=20, only_better=False)
    )
    with pytest.warns(UserWarning, match=r"never transfers") as record:
        study.optimize(digits_trainer(x, y, epochs=3), dashboard=False)
    assert len([w for w in record if "never transfers" in str(w.message)]) == 1
    assert "in a run of 3 report step(s)" in str(record[0].message)
    assert study.transfers() == []  # not even at step 1
    assert study.summary().complete


def test_a_split_that_ends_before_its_first_transfer_step_warns(study_name) -> None:
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=GreedyTransfer(interval=5, only_better=False)
    )

    def objective(trial):  # the objective API: the number of steps is unknown up front
        model = tiny_mlp()
        for step in range(3 if trial.split == 0 else 6):
            trial.report(0.5, step, model=model)

    with pytest.warns(UserWarning, match=r"never transfers") as record:
        study.optimize(objective, dataset=200, evaluate=lambda m, rows: 0.5, dashboard=False)
    messages = [str(w.message) for w in record if "never transfers" in str(w.message)]
    assert len(messages) == 1  # split 0 only: split 1 reached step 5
    assert messages[0].startswith(
        "GreedyTransfer(interval=5, warmup=5) never transfers in a run of 3 report step(s) "
        "(steps 0 to 2): its first transfer step is step 5."
    )
    assert [(e.receiver, e.step) for e in study.transfers()] == [(1, 5)]


@pytest.mark.parametrize(("interval", "warmup"), [(1, 0), (1, 1), (2, 3)])
def test_no_transfer_never_transfers(interval: int, warmup: int) -> None:
    manager = NoTransfer(interval=interval, warmup=warmup)
    assert manager.enabled is False
    assert not any(manager.should_transfer(step) for step in range(100))
    assert manager.choose_donor(_context(fitness=-1.0)) is None
    assert manager.choose_donor(_context(fitness=NAN)) is None


# ----------------------------------------------------------------- donor choice


@pytest.mark.parametrize(
    ("direction", "fitness", "only_better", "expected"),
    [
        ("maximize", 0.5, True, 4),
        ("maximize", 0.5, False, 4),
        ("maximize", 0.9, True, None),
        ("maximize", 0.9, False, 4),
        ("maximize", 0.8, True, None),  # equal is not better
        ("maximize", NAN, True, 4),  # anything finite beats NaN
        ("minimize", 0.5, True, 0),
        ("minimize", 0.5, False, 0),
        ("minimize", 0.1, True, None),
        ("minimize", 0.1, False, 0),
        ("minimize", 0.2, True, None),
        ("minimize", NAN, True, 0),
    ],
)
def test_best_donor(direction: str, fitness: float, only_better: bool, expected) -> None:
    manager = GreedyTransfer(donor="best", only_better=only_better)
    assert manager.choose_donor(_context(fitness, direction)) == expected


def test_best_donor_ignores_nan_others_and_breaks_ties_by_index() -> None:
    manager = GreedyTransfer(donor="best")
    others = {0: NAN, 1: 0.7, 3: 0.7, 4: NAN}
    assert manager.choose_donor(_context(0.5, others=others)) == 1


@pytest.mark.parametrize("rule", ["best", "tournament", "uniform"])
@pytest.mark.parametrize("only_better", [True, False])
def test_no_donor_without_others(rule: str, only_better: bool) -> None:
    manager = GreedyTransfer(donor=rule, only_better=only_better)
    assert manager.choose_donor(_context(others={})) is None


def test_only_better_rejects_a_nan_donor() -> None:
    manager = GreedyTransfer(donor="uniform", only_better=True)
    assert manager.choose_donor(_context(0.5, others={7: NAN})) is None
    manager = GreedyTransfer(donor="uniform", only_better=False)
    assert manager.choose_donor(_context(0.5, others={7: NAN})) == 7


def test_tournament_donor_known_draws() -> None:
    manager = GreedyTransfer(donor="tournament", only_better=False)
    drawn = [manager.choose_donor(_context(0.5, seed=s)) for s in range(8)]
    assert drawn == [4, 1, 1, 3, 4, 4, 1, 4]
    # only_better drops the draw whose winner (3: 0.4) is worse than the own 0.5.
    manager = GreedyTransfer(donor="tournament", only_better=True)
    drawn = [manager.choose_donor(_context(0.5, seed=s)) for s in range(8)]
    assert drawn == [4, 1, 1, None, 4, 4, 1, 4]


def test_uniform_donor_known_draws() -> None:
    manager = GreedyTransfer(donor="uniform", only_better=False)
    drawn = [manager.choose_donor(_context(0.5, seed=s)) for s in range(8)]
    assert drawn == [4, 1, 4, 4, 3, 3, 1, 4]
    manager = GreedyTransfer(donor="uniform", only_better=True)
    drawn = [manager.choose_donor(_context(0.5, seed=s)) for s in range(8)]
    assert drawn == [4, 1, 4, 4, None, None, 1, 4]


def test_uniform_donor_reaches_every_other_split() -> None:
    manager = GreedyTransfer(donor="uniform", only_better=False)
    drawn = {manager.choose_donor(_context(0.5, seed=s)) for s in range(200)}
    assert drawn == set(OTHERS)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_full_tournament_always_picks_the_best(direction: str) -> None:
    manager = GreedyTransfer(donor="tournament", only_better=False, tournament_size=len(OTHERS))
    expected = 4 if direction == "maximize" else 0
    drawn = {manager.choose_donor(_context(0.5, direction, seed=s)) for s in range(100)}
    assert drawn == {expected}


def test_tournament_of_two_never_picks_the_worst() -> None:
    manager = GreedyTransfer(donor="tournament", only_better=False, tournament_size=2)
    drawn = {manager.choose_donor(_context(0.5, "minimize", seed=s)) for s in range(200)}
    assert drawn == {0, 1, 3}  # 4 (0.8) is the worst when minimising


def test_donor_choice_is_replayable_from_the_seed() -> None:
    manager = GreedyTransfer(donor="tournament", only_better=False)
    a = [manager.choose_donor(_context(seed=s)) for s in range(30)]
    b = [manager.choose_donor(_context(seed=s)) for s in range(30)]
    assert a == b


# ----------------------------------------------------------------- candidates and acceptance


def test_candidates_copy_the_whole_donor_state() -> None:
    own = {"model": {"w": 1}, "optimizer": {"lr": 0.1}}
    donor = {"model": {"w": 2}, "optimizer": {"lr": 0.5}, "scheduler": {"epoch": 4}}
    out = list(GreedyTransfer().candidates(own, donor, _context()))
    assert out == [("copy", donor)]
    assert out[0][1] is donor


def test_candidates_without_optimizer_keep_own_optimizer_and_take_donor_model() -> None:
    own = {
        "model": {"w": 1},
        "optimizer": {"lr": 0.1},
        "scheduler": {"epoch": 2},
        "extra": [1, 2],
    }
    donor = {"model": {"w": 2}, "optimizer": {"lr": 0.5}, "scheduler": {"epoch": 9}}
    manager = GreedyTransfer(copy_optimizer=False)
    out = list(manager.candidates(own, donor, _context()))
    assert len(out) == 1
    label, state = out[0]
    assert label == "copy-weights"
    assert state == {
        "model": {"w": 2},
        "optimizer": {"lr": 0.1},
        "scheduler": {"epoch": 2},
        "extra": [1, 2],
    }
    assert state["model"] is donor["model"]
    # Neither input is modified.
    assert own["model"] == {"w": 1}
    assert donor["optimizer"] == {"lr": 0.5}


def test_base_manager_default_candidates_and_accept() -> None:
    manager = _Custom()
    donor = {"model": {"w": 3}}
    assert list(manager.candidates({"model": {}}, donor, _context())) == [("copy", donor)]
    assert manager.accept(0.5, 0.6, "maximize") is True
    assert manager.accept(0.5, 0.5, "maximize") is False
    assert manager.accept(0.5, 0.4, "minimize") is True
    assert manager.accept(0.5, NAN, "maximize") is False
    assert manager.accept(NAN, 0.1, "minimize") is True


# ----------------------------------------------------------------- params


@pytest.mark.parametrize(
    "manager",
    [
        GreedyTransfer(),
        GreedyTransfer(
            interval=3,
            warmup=0,
            donor="tournament",
            only_better=False,
            copy_optimizer=False,
            tournament_size=4,
        ),
        GreedyTransfer(donor="uniform", interval=2, warmup=5),
        NoTransfer(),
        NoTransfer(interval=2, warmup=7),
    ],
)
def test_params_round_trip(manager: BaseTransferManager) -> None:
    params = manager.get_params()
    rebuilt = from_params(json.loads(json.dumps(params)))
    assert type(rebuilt) is type(manager)
    assert rebuilt.get_params() == params
    assert params["name"] == type(manager).__name__


def test_greedy_get_params_content() -> None:
    manager = GreedyTransfer(interval=2, warmup=3, donor="tournament", tournament_size=5)
    assert manager.get_params() == {
        "name": "GreedyTransfer",
        "interval": 2,
        "warmup": 3,
        "donor": "tournament",
        "only_better": True,
        "copy_optimizer": True,
        "tournament_size": 5,
    }
    assert NoTransfer(interval=4, warmup=0).get_params() == {
        "name": "NoTransfer",
        "interval": 4,
        "warmup": 0,
    }


def test_from_params_defaults_to_greedy_and_does_not_mutate_input() -> None:
    params = {"interval": 2, "donor": "uniform"}
    rebuilt = from_params(params)
    assert isinstance(rebuilt, GreedyTransfer)
    assert (rebuilt.interval, rebuilt.donor) == (2, "uniform")
    assert params == {"interval": 2, "donor": "uniform"}
    params = GreedyTransfer().get_params()
    from_params(params)
    assert params["name"] == "GreedyTransfer"


def test_from_params_of_custom_manager_raises() -> None:
    params = _Custom(interval=2, warmup=1).get_params()
    assert params == {"name": "_Custom", "interval": 2, "warmup": 1}
    with pytest.raises(
        ValueError,
        match=r"custom transfer manager '_Custom'.*load_study\(\.\.\., transfer=\.\.\.\)",
    ):
        from_params(params)


# ----------------------------------------------------------------- constructor errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval": 0}, "interval must be an integer >= 1, but got interval=0."),
        ({"interval": -2}, "interval must be an integer >= 1, but got interval=-2."),
        ({"interval": True}, "interval must be an integer >= 1, but got interval=True."),
        ({"interval": 1.0}, "interval must be an integer >= 1, but got interval=1.0."),
        ({"warmup": -1}, "warmup must be an integer >= 0, but got warmup=-1."),
        ({"warmup": False}, "warmup must be an integer >= 0, but got warmup=False."),
        (
            {"donor": "worst"},
            "donor must be one of ('best', 'tournament', 'uniform'), but got donor='worst'.",
        ),
        (
            {"tournament_size": 0},
            "tournament_size must be an integer >= 1, but got tournament_size=0.",
        ),
        (
            {"tournament_size": -3},
            "tournament_size must be an integer >= 1, but got tournament_size=-3.",
        ),
        (
            {"tournament_size": True},
            "tournament_size must be an integer >= 1, but got tournament_size=True.",
        ),
        (
            {"tournament_size": 2.0},
            "tournament_size must be an integer >= 1, but got tournament_size=2.0.",
        ),
    ],
)
def test_greedy_constructor_errors(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        GreedyTransfer(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval": 0}, "interval must be an integer >= 1, but got interval=0."),
        ({"warmup": -1}, "warmup must be an integer >= 0, but got warmup=-1."),
    ],
)
def test_no_transfer_constructor_errors(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        NoTransfer(**kwargs)


def test_from_params_validates_values() -> None:
    with pytest.raises(ValueError, match=re.escape("but got donor='worst'.")):
        from_params({"name": "GreedyTransfer", "donor": "worst"})
