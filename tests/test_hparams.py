"""The pure helpers of _hparams: which factories take the trial, optimizer sync."""

from __future__ import annotations

import functools

import torch

from optuna_mto._step.hparams import call_with_trial, sync_optimizer_state, takes_trial


def test_factories_get_the_trial_only_when_they_ask_for_it():
    assert not takes_trial(torch.optim.Adam, 1)  # (params, lr=..., ...): defaults only
    assert takes_trial(lambda params, trial: None, 1)
    assert not takes_trial(lambda params: None, 1)
    assert takes_trial(lambda params, *, trial=None: None, 1)  # by name
    assert takes_trial(lambda trial: None, 0) and not takes_trial(lambda: None, 0)
    assert not takes_trial(functools.partial(torch.optim.SGD, lr=0.1), 1)
    assert call_with_trial(lambda a, trial: (a, trial), (1,), "t") == (1, "t")
    assert call_with_trial(lambda a: a, (1,), "t") == 1
    assert call_with_trial(lambda a, *, trial: (a, trial), (1,), "t") == (1, "t")
    assert call_with_trial(lambda a, t: (a, t), (1,), "t") == (1, "t")


def test_sync_sets_only_the_keys_the_param_groups_have():
    state = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}]}
    synced = sync_optimizer_state(state, {"lr": 0.2, "dropout": 0.3})
    assert synced["param_groups"] == [{"lr": 0.2, "momentum": 0.9, "params": [0]}]
    assert state["param_groups"][0]["lr"] == 0.1  # the input is not modified
    assert sync_optimizer_state(state, {"dropout": 0.3}) is state
