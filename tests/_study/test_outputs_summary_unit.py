"""Each public output call builds the study's cross-split summary once (one storage read).

``CrossSplitSummary.from_study`` reads every trial; the outputs (ensemble, soups, their
scores, exports, the teacher) used to build it several times per call.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from _models import digits_trainer, tiny_mlp

import optuna_mto
from optuna_mto._study.outputs import export_ensemble, score_outputs
from optuna_mto._study.summary import CrossSplitSummary
from optuna_mto.transfer import NoTransfer


class SummaryCounter:
    """Counts ``CrossSplitSummary.from_study`` calls (the real method still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = CrossSplitSummary.from_study.__func__  # type: ignore[attr-defined]

        def counted(cls, *args, **kwargs):
            self.calls += 1
            return real(cls, *args, **kwargs)

        monkeypatch.setattr(CrossSplitSummary, "from_study", classmethod(counted))

    def take(self) -> int:
        """Return the calls since the last ``take`` and start counting afresh."""
        calls, self.calls = self.calls, 0
        return calls


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def finished_study(digits, tmp_path_factory):
    """A finished 2-split study on a SQLite file (one per module: training takes seconds).

    The optimize call itself is counted: its end (scoring the outputs on the selection
    rows, naming the default output) builds the summary once.
    """
    x, y = digits
    tmp = tmp_path_factory.mktemp("finished")
    logger, messages = logging.getLogger("optuna.optuna_mto"), _Messages()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OPTUNA_MTO_HOME", str(tmp / "home"))
        counter = SummaryCounter(monkeypatch)
        study = optuna_mto.create_study(
            study_name="finished", storage=f"sqlite:///{tmp / 'study.db'}", n_splits=2,
            task="classification", selection_fraction=0.2, transfer=NoTransfer(),
            heartbeat_interval=None,
        )  # fmt: skip
        trainer = digits_trainer(x, y, epochs=1)
        logger.addHandler(messages)
        level, logger.level = logger.level, logging.INFO
        try:
            study.optimize(trainer, dashboard=False)
        finally:
            logger.removeHandler(messages)
            logger.setLevel(level)
        assert counter.take() == 1
    announced = [m for m in messages.lines if "Its default output is the ensemble" in m]
    assert len(announced) == 1 and "(on the" in announced[0]  # with the scores just made
    return study, trainer


@pytest.fixture
def finished(finished_study, monkeypatch):
    """The finished study, its trainer, and a fresh summary counter."""
    return (*finished_study, SummaryCounter(monkeypatch))


def test_optimize_scores_the_outputs_it_announces(finished) -> None:
    study, _, counter = finished
    summary = study.summary()
    assert counter.take() == 1
    assert summary.complete and summary.outputs is not None
    assert summary.outputs["rows"] == len(study.selection_indices(len(finished[1].dataset[0])))
    assert set(summary.outputs) == {"rows", "single", "ensemble", "uniform_soup", "greedy_soup"}


def test_score_outputs_builds_the_summary_once(finished) -> None:
    study, trainer, counter = finished
    rows = study.selection_indices(len(trainer.dataset[0]))
    out = score_outputs(study._rt, tiny_mlp, trainer.evaluate, rows)
    assert counter.take() == 1
    assert out["rows"] == len(rows) and out["single"]["splits"] == [study.summary().best_split]
    assert sorted(out["ensemble"]["splits"]) == [0, 1] and 0 <= out["ensemble"]["score"] <= 1
    # Independently initialised splits share no ancestry: both soups are refused.
    assert "ancestry" in out["uniform_soup"]["error"] and "ancestry" in out["greedy_soup"]["error"]
    counter.take()
    # A summary the caller already has is used as it is.
    score_outputs(study._rt, tiny_mlp, trainer.evaluate, rows, summary=study.summary())
    assert counter.take() == 1


def test_exports_build_the_summary_once(finished, tmp_path) -> None:
    study, _, counter = finished
    path = study.export_ensemble(tmp_path / "ens.pt")
    assert counter.take() == 1
    assert optuna_mto.Ensemble.load(path, tiny_mlp).splits == study.summary().ranking
    counter.take()
    path, info, left_out = export_ensemble(study._rt, tmp_path / "cli.pt", register=False)
    assert counter.take() == 1
    assert info["n_members"] == 2 and left_out == {}
    assert study.export_best_model(tmp_path / "best.pt").exists()
    assert counter.take() == 1


def test_ensemble_soup_and_teacher_build_the_summary_once(finished) -> None:
    study, trainer, counter = finished
    x = trainer.dataset[0][:8]
    ensemble = study.ensemble(tiny_mlp)
    assert counter.take() == 1 and len(ensemble.members) == 2
    _, members, score = study.soup(tiny_mlp, "uniform", check_ancestry=False,
                                   evaluate=trainer.evaluate)  # fmt: skip
    assert counter.take() == 1 and members == [0, 1] and not np.isnan(score)
    targets = study.teacher_targets(tiny_mlp, x)
    assert counter.take() == 1
    assert torch.allclose(targets.sum(dim=1), torch.ones(len(x)))
