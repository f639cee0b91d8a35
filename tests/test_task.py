"""A study's task (classification or regression): given, learnt from the trainer, checked."""

from __future__ import annotations

import pytest
import torch
from _models import tiny_mlp
from torch import nn

import optuna_mto
from optuna_mto._storage.optuna_internals import storage_of, study_id_of
from optuna_mto._storage.schema import CONFIG_KEY, TASK_KEY
from optuna_mto.transfer import NoTransfer


def _regression_data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data[:n] / data.data.std(0), dtype=torch.float32)
    target = (data.target[:n] - data.target.mean()) / data.target.std()
    return x, torch.tensor(target, dtype=torch.float32).view(-1, 1)


def _linear() -> nn.Module:
    return nn.Linear(10, 1)


def test_a_study_learns_its_task_from_the_trainer_and_refuses_another(storage_url, study_name):
    x, y = _regression_data()
    trainer = optuna_mto.SupervisedTrainer(
        _linear, (x, y), loss_fn=nn.MSELoss(), metric="loss", epochs=1
    )
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, direction="minimize",
        transfer=NoTransfer(), heartbeat_interval=None,
    )  # fmt: skip
    assert study.config.task is None
    study.optimize(trainer, executor="thread", dashboard=False)
    attrs = storage_of(study.study).get_study_system_attrs(study_id_of(study.study))
    assert attrs[TASK_KEY] == "regression"
    again = optuna_mto.load_study(study_name=study_name, storage=storage_url)
    assert again.ensemble(_linear).combine == "mean"

    classes = optuna_mto.SupervisedTrainer(
        _linear, (x, y), loss_fn=nn.CrossEntropyLoss(), metric="loss", epochs=1
    )  # float (N, 1) targets: soft labels, so the trainer takes them
    with pytest.raises(
        optuna_mto.ConfigConflictError,
        match=r"The objective's metric='loss', loss_fn=CrossEntropyLoss\(\) means "
        r"task='classification', but study .* is stored with task='regression'",
    ):
        again.optimize(classes, executor="thread", dashboard=False)


def test_create_study_stores_the_task_and_checks_it(storage_url, study_name):
    kwargs = {"study_name": study_name, "storage": storage_url, "heartbeat_interval": None}
    study = optuna_mto.create_study(task="classification", **kwargs)
    assert study.config.task == "classification"
    with pytest.raises(
        optuna_mto.ConfigConflictError, match="task: stored 'classification', given 'regression'"
    ):
        optuna_mto.create_study(task="regression", load_if_exists=True, **kwargs)
    same = optuna_mto.create_study(load_if_exists=True, **kwargs)  # left out: the stored one
    assert same.config.task == "classification"
    with pytest.raises(ValueError, match="task must be one of .* task='regresion'"):
        optuna_mto.create_study(task="regresion", study_name="other", storage=storage_url)


def test_an_older_study_without_a_task_still_opens_and_takes_one(storage_url, study_name):
    kwargs = {"study_name": study_name, "storage": storage_url, "heartbeat_interval": None}
    study = optuna_mto.create_study(**kwargs)
    storage, study_id = storage_of(study.study), study_id_of(study.study)
    old = {k: v for k, v in study.config.to_dict().items() if k != "task"}
    storage.set_study_system_attr(study_id, CONFIG_KEY, old)  # as an older optuna-mto wrote it
    assert optuna_mto.load_study(study_name=study_name, storage=storage_url).config.task is None
    optuna_mto.create_study(task="regression", load_if_exists=True, **kwargs)
    assert storage.get_study_system_attrs(study_id)[TASK_KEY] == "regression"
    with pytest.raises(
        optuna_mto.ConfigConflictError,
        match=r"task='classification' means task='classification', but study .* is stored "
        r"with task='regression'",
    ):
        optuna_mto.create_study(task="classification", load_if_exists=True, **kwargs)


def test_without_a_task_one_output_is_averaged_and_wider_outputs_ask(study_name, tmp_path):
    x, y = _regression_data()
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, direction="minimize", transfer=NoTransfer()
    )

    def mse(model: nn.Module, rows) -> float:
        return float(((model(x[rows]) - y[rows]) ** 2).mean())

    def objective(trial: optuna_mto.SplitTrial) -> None:  # the objective API: no task
        model = _linear()
        trial.report(trial.evaluate(model), 0, model=model)

    study.optimize(objective, dataset=len(x), evaluate=mse, executor="thread", dashboard=False)
    ensemble = study.ensemble(_linear)
    assert ensemble.combine == "auto"
    members = [member(x) for member in ensemble.members]
    assert torch.allclose(ensemble(x), torch.stack(members).mean(0))
    path = study.export_ensemble(tmp_path / "e.pt")
    assert optuna_mto.Ensemble.load(path, _linear).combine == "auto"
    wide = optuna_mto.Ensemble([tiny_mlp(), tiny_mlp()], combine="auto")
    with pytest.raises(ValueError, match="pass combine='softmax' .* or create the study with"):
        wide(torch.zeros(1, 64))
