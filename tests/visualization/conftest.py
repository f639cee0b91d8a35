"""A real finished study for the figure tests, built once for all of them."""

from __future__ import annotations

import pytest
from _models import digits_trainer

import optuna_mto
from optuna_mto.transfer import GreedyTransfer


@pytest.fixture(scope="package")
def finished_study(tmp_path_factory, digits) -> optuna_mto.MTOStudy:
    """K=3 splits of sklearn digits trained for 3 epochs on a SQLite file, with transfers.

    ``donor="uniform", only_better=False`` makes the later splits try donors that are
    not better than themselves too, so that kept and rejected transfers both occur.
    """
    root = tmp_path_factory.mktemp("finished-study")
    x, y = digits
    # The autouse OPTUNA_MTO_HOME fixture is per test; this study outlives one test.
    # The figure tests only read it, so one build serves them all.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTUNA_MTO_HOME", str(root / "home"))
        study = optuna_mto.create_study(
            study_name="viz",
            storage=f"sqlite:///{root / 'study.db'}",
            n_splits=3,
            seed=0,
            transfer=GreedyTransfer(donor="uniform", only_better=False),
            artifact_store="file",
        )
        study.optimize(digits_trainer(x, y, epochs=3))
    return study
