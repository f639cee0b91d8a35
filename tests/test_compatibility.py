"""Studies written by optuna-mto 0.1.0 (stored format 1) and 0.2.0 open, rank, export, resume.

The fixtures ``tests/fixtures/study_v1.db`` and ``study_v2.db`` were written by
``make_study_v1.py`` with version 0.1.0 and by ``make_study_v2.py`` (the same studies)
with version 0.2.0, and are never regenerated (see those scripts).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
import torch
from _models import _digits, adam_suggested, tiny_mlp

import optuna_mto

FIXTURES = Path(__file__).parent / "fixtures"
#: Fixture -> the accepted transfers' receivers of its finished study (as that version ran).
KEPT = {"study_v1.db": [1], "study_v2.db": []}


@pytest.fixture(params=sorted(KEPT))
def v1_url(request, tmp_path: Path) -> str:
    """A copy of a fixture written by an older version (0.1.0, 0.2.0)."""
    path = tmp_path / request.param
    shutil.copy(FIXTURES / request.param, path)
    return f"sqlite:///{path}"


def test_finished_v1_study_ranks_and_exports(v1_url: str, tmp_path: Path) -> None:
    study = optuna_mto.load_study(study_name="greedy-done", storage=v1_url)
    summary = study.summary()
    assert summary.complete
    assert summary.best_split == 2  # ranked by the selection score, as 0.1.0 did
    kept = KEPT[Path(v1_url.removeprefix("sqlite:///")).name]
    assert [e.receiver for e in study.transfers() if e.accepted] == kept
    path = study.export_best_model(tmp_path / "best.pt", register=False)
    model = tiny_mlp()
    model.load_state_dict(torch.load(path, weights_only=True))
    records = study.records()
    assert sorted(records) == [0, 1, 2] and all(r.finished for r in records.values())


def test_interrupted_v1_study_resumes(v1_url: str) -> None:
    study = optuna_mto.load_study(study_name="amto-interrupted", storage=v1_url)
    assert not study.summary().complete
    before = {r.split: r for r in study.records().values()}
    assert before[2].step == 2 and not before[2].finished
    trainer = optuna_mto.SupervisedTrainer(
        tiny_mlp, _digits(), optimizer_fn=adam_suggested, epochs=5, batch_size=64, seed=1
    )
    study.optimize(trainer, n_jobs=1, dashboard=False)
    summary = study.summary()
    assert summary.complete
    trials = study.study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    resumed = [t for t in trials if t.params["split"] == 2]
    assert len(resumed) == 1
    trial = resumed[0]
    assert trial.user_attrs["resumed_from_step"] == 2
    assert sorted(trial.intermediate_values) == [0, 1, 2, 3, 4]
    # The learning rate the sampler gave split 2 in 0.1.0 is kept, never drawn again.
    failed = study.study.get_trials(states=[optuna.trial.TrialState.FAIL])
    assert trial.params["lr"] == failed[0].params["lr"]
    # AMTO's relation scores: step 2's carried over from the 0.1.0 run (an explorer from
    # step 1, judged at step 2), step 4's learned after the resume (explorer from step 3).
    relations = [v for k, v in sorted(trial.user_attrs.items()) if k.startswith("relations:")]
    assert [r["step"] for r in relations] == [2, 4]
    assert set(relations[-1]["scores"]) == {"0", "1"}
