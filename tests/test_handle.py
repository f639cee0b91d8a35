"""SplitHandle.load_donor: a donor that ends between the board read and the load."""

from __future__ import annotations

import logging
import threading
import time

import optuna
import pytest
from _models import tiny_mlp
from optuna.trial import TrialState

import optuna_mto
from optuna_mto.transfer import GreedyTransfer


def _constant_evaluate(model, indices) -> float:
    return 0.5


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("end", ["finishes", "is pruned"])
@pytest.mark.parametrize("kind", ["file", "database"])
def test_a_donor_ending_between_the_board_read_and_the_load_loses_no_transfer(
    end, kind, storage_url, study_name, monkeypatch, caplog
):
    """Replays: the receiver reads the donor's record, the donor ends, the receiver loads.

    The donor's last record names its step-0 checkpoint; when it ends it keeps only its
    best weights under a new id and removes the checkpoint that record named. The
    receiver must not lose the transfer to that (nor warn about a missing checkpoint).
    """
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, artifact_store=kind,
        transfer=GreedyTransfer(warmup=0), heartbeat_interval=None,
    )  # fmt: skip
    store, load = study.checkpoint_store, study.checkpoint_store.load
    receiver: list[threading.Thread] = []
    donor_may_end = threading.Event()

    def donor_trial_ended() -> bool:
        trials = [t for t in study.study.get_trials(deepcopy=False) if t.params["split"] == 0]
        return bool(trials) and trials[-1].state in (TrialState.COMPLETE, TrialState.PRUNED)

    def load_once_the_donor_ended(ref, **kwargs):
        if receiver and threading.current_thread() is receiver[0] and not donor_may_end.is_set():
            donor_may_end.set()  # the receiver has read the board and chosen the donor:
            _wait(donor_trial_ended)  # the donor ends (record published, old checkpoint gone)
        return load(ref, **kwargs)

    monkeypatch.setattr(store, "load", load_once_the_donor_ended)
    results = []

    def objective(trial: optuna_mto.SplitTrial) -> None:
        model = tiny_mlp()
        if trial.split == 0:  # the donor: one good step, then it ends when told
            trial.report(0.9, 0, model=model)
            assert donor_may_end.wait(60)
            if end == "is pruned":
                raise optuna.TrialPruned()
            return
        _wait(lambda: 0 in study.records())
        receiver.append(threading.current_thread())
        results.append(trial.report(0.1, 0, model=model).transfer)

    with caplog.at_level(logging.WARNING, logger="optuna.optuna_mto"):
        study.optimize(objective, dataset=200, evaluate=_constant_evaluate, n_jobs=2,
                       executor="thread", dashboard=False)  # fmt: skip
    assert donor_may_end.is_set()
    assert "skips donor" not in caplog.text and "is missing" not in caplog.text
    (event,) = results
    assert event.donor == 0
    if end == "finishes":  # the donor's kept best weights, scored and kept
        assert event.accepted and event.after == 0.5 and not event.reason
    else:  # a pruned split is never a donor: nothing tried, quietly
        assert not event.accepted and event.reason == "donor split 0 was pruned"
