"""Promoting a finished split's best checkpoint to an Optuna artifact."""

from __future__ import annotations

import pytest
from _models import tiny_mlp

import optuna_mto
from optuna_mto.transfer import NoTransfer


@pytest.mark.parametrize("kind", ["file", "database"])
def test_the_published_record_names_a_loadable_checkpoint_while_the_split_finishes(
    kind, storage_url, study_name
):
    """Readers of the board during a split's end (its cross-split scoring) can load."""
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=1, artifact_store=kind,
        transfer=NoTransfer(), heartbeat_interval=None,
    )  # fmt: skip
    loaded = []

    def evaluate(model, indices) -> float:  # also called while the split finishes
        record = study.records().get(0)
        if record is not None:
            loaded.append(study.checkpoint_store.load(record.checkpoint)["model"])
        return 0.5

    def objective(trial: optuna_mto.SplitTrial) -> None:
        model = tiny_mlp()
        for step in range(2):
            trial.report(0.5 + step, step, model=model)  # the last step is the best

    study.optimize(objective, dataset=200, evaluate=evaluate, dashboard=False)
    assert study.summary().complete and len(loaded) == 1  # the finish's cross-split score
    record = study.records()[0]
    assert record.finished and record.checkpoint.artifact_id.count("-") == 4  # a UUID
    assert study.checkpoint_store.load(record.checkpoint)["model"].keys() == loaded[0].keys()
