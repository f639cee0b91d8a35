"""Ensemble and soups of the K split models: pure helpers, then a real study on digits."""

from __future__ import annotations

import math
import re

import numpy as np
import optuna
import pytest
import torch
from _models import digits_trainer, tiny_mlp
from torch import nn

import optuna_mto
from optuna_mto.transfer import NoTransfer


def test_ensemble_averages_softmax_and_round_trips_with_weights_only(tmp_path):
    torch.manual_seed(0)
    members = [tiny_mlp() for _ in range(3)]
    ens = optuna_mto.Ensemble(members)
    x = torch.randn(5, 64)
    expected = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    assert torch.allclose(ens(x).exp(), expected, atol=1e-6)
    # cross-entropy on the output is the ensemble's negative log-likelihood
    labels = torch.tensor([0, 1, 2, 3, 4])
    nll = -expected[torch.arange(5), labels].log().mean()
    assert torch.allclose(nn.functional.cross_entropy(ens(x), labels), nll, atol=1e-6)

    path = ens.save(tmp_path / "sub" / "ens.pt")
    loaded = optuna_mto.Ensemble.load(path, tiny_mlp, n_members=3)
    assert torch.equal(loaded(x), ens(x))
    assert not list(tmp_path.glob("sub/.*tmp"))  # the atomic write left no temp file

    mean = optuna_mto.Ensemble(members, combine="mean")
    assert torch.allclose(mean(x), torch.stack([m(x) for m in members]).mean(0))


def test_ensemble_rejects_bad_arguments():
    with pytest.raises(ValueError, match="combine must be one of .* combine='vote'"):
        optuna_mto.Ensemble([tiny_mlp()], combine="vote")
    with pytest.raises(ValueError, match="at least one member"):
        optuna_mto.Ensemble([])


@pytest.fixture(scope="module")
def independent_study(tmp_path_factory, digits):
    x, y = digits
    home = tmp_path_factory.mktemp("ens")
    study = optuna_mto.create_study(
        study_name="ens", storage=f"sqlite:///{home / 's.db'}", n_splits=3, seed=0,
        transfer=NoTransfer(), selection_fraction=0.1, heartbeat_interval=None,
        artifact_store=optuna_mto.checkpoints.AtomicFileSystemArtifactStore(home / "art"),
    )  # fmt: skip
    trainer = digits_trainer(x, y, epochs=3, seed=0)
    study.optimize(trainer, executor="thread", dashboard=False)
    return study, trainer


def test_study_ensemble_and_outputs_in_the_summary(independent_study, digits, tmp_path):
    study, trainer = independent_study
    ens = study.ensemble(tiny_mlp)
    assert len(ens.members) == 3
    rows = study.selection_indices(len(digits[0]))
    assert len(rows) == 180
    singles = [trainer.evaluate(study.load_best_model(tiny_mlp(), s), rows) for s in range(3)]
    ens_score = trainer.evaluate(ens, rows)
    assert ens_score > 0.8  # real learning: far above chance
    summary = study.summary()
    assert summary.outputs["rows"] == 180
    assert summary.outputs["ensemble"]["score"] == pytest.approx(ens_score)
    assert summary.outputs["single"]["score"] == pytest.approx(max(singles))
    assert "ancestry" in summary.outputs["uniform_soup"]["error"]
    text = str(summary)
    assert re.search(r"ensemble +0\.\d{4}  splits \[", text)
    assert re.search(r"uniform soup +refused \(members share no ancestry\)", text)

    path = ens.save(tmp_path / "ens.pt")
    loaded = optuna_mto.Ensemble.load(path, tiny_mlp, n_members=3)
    assert trainer.evaluate(loaded, rows) == ens_score


def test_export_ensemble_writes_what_the_ensemble_computes(independent_study, digits, tmp_path):
    study, trainer = independent_study
    x = digits[0][:50]
    path = study.export_ensemble(tmp_path / "out" / "ens.pt")
    state = torch.load(path, weights_only=True)
    info = state.pop("_extra_state")
    ranking = study.summary().ranking
    assert info == {"version": 1, "n_members": 3, "splits": ranking, "combine": "softmax"}
    assert sorted({k.split(".")[1] for k in state}) == ["0", "1", "2"]
    loaded = optuna_mto.Ensemble.load(path, tiny_mlp, n_members=3).eval()
    assert loaded.splits == ranking and loaded.combine == "softmax"
    with torch.no_grad():
        assert torch.equal(loaded(x), study.ensemble(tiny_mlp)(x))
    # best-ranked split first, as study.ensemble orders them
    best = study.best_state_dict()
    assert all(torch.equal(state[f"members.0.{k}"], v) for k, v in best.items())
    two = study.export_ensemble(tmp_path / "two.pt", splits=[2, 0], register=False)
    state = torch.load(two, weights_only=True)
    assert torch.equal(state["members.0.0.weight"], study.best_state_dict(2)["0.weight"])
    assert not any(k.startswith("members.2.") for k in state)
    names = [a.filename for a in optuna.artifacts.get_all_artifact_meta(study.study)]
    assert "ens.pt" in names and "two.pt" not in names  # registered only when asked


def test_soup_of_independent_models_is_refused_unless_overridden(independent_study):
    study, trainer = independent_study
    with pytest.raises(ValueError, match="share no ancestry .* study.ensemble"):
        study.soup(tiny_mlp, "uniform")
    model, members, value = study.soup(
        tiny_mlp, "uniform", check_ancestry=False, evaluate=trainer.evaluate
    )
    assert members == [0, 1, 2] and isinstance(model, nn.Module) and not math.isnan(value)
    model, members, value = study.soup(
        tiny_mlp, "greedy", check_ancestry=False, evaluate=trainer.evaluate
    )
    assert members[0] == study.summary().best_split  # starts from the best single model
    assert value >= study.summary().outputs["single"]["score"]


def test_greedy_soup_without_held_out_rows_is_refused(independent_study):
    study, trainer = independent_study
    with pytest.raises(ValueError, match="selection_fraction > 0"):
        study.soup(tiny_mlp, "greedy", check_ancestry=False, evaluate=trainer.evaluate,
                   indices=np.array([], dtype=np.int64))  # fmt: skip
    with pytest.raises(ValueError, match="method must be one of"):
        study.soup(tiny_mlp, "best")
    with pytest.raises(ValueError, match=r"Split\(s\) \[7\] .* have not finished"):
        study.ensemble(tiny_mlp, splits=[7])


def test_members_with_one_output_never_make_a_constant_ensemble():
    torch.manual_seed(0)
    members = [nn.Linear(3, 1) for _ in range(3)]
    x = torch.randn(6, 3)
    # The softmax of one value is 1: "softmax" would predict 0.0 for every row.
    with pytest.raises(
        ValueError, match=r"combine='softmax' needs one score per class.*shape \(6, 1\).*'mean'"
    ):
        optuna_mto.Ensemble(members)(x)
    mean = torch.stack([m(x) for m in members]).mean(0)
    assert torch.allclose(optuna_mto.Ensemble(members, combine="mean")(x), mean)
    assert torch.allclose(optuna_mto.Ensemble(members, combine="auto")(x), mean)
    with pytest.raises(ValueError, match=r"return 10 values per row .* combine='softmax' .*'mean'"):
        optuna_mto.Ensemble([tiny_mlp()], combine="auto")(torch.randn(2, 64))


def test_the_file_records_members_splits_and_combine_and_load_checks_the_count(tmp_path):
    torch.manual_seed(0)
    ens = optuna_mto.Ensemble([tiny_mlp() for _ in range(2)], combine="mean", splits=[3, 1])
    path = ens.save(tmp_path / "e.pt")
    loaded = optuna_mto.Ensemble.load(path, tiny_mlp)  # no count needed
    assert (len(loaded.members), loaded.splits, loaded.combine) == (2, [3, 1], "mean")
    x = torch.randn(4, 64)
    assert torch.equal(loaded(x), ens(x))
    with pytest.raises(
        ValueError,
        match=r"holds an ensemble of 2 members, but n_members=4 was given: pass "
        r"n_members=2, or leave it out",
    ):
        optuna_mto.Ensemble.load(path, tiny_mlp, n_members=4)
    with pytest.raises(ValueError, match="holds an ensemble of 2 members, but this Ensemble has 4"):
        optuna_mto.Ensemble([tiny_mlp() for _ in range(4)]).load_state_dict(
            torch.load(path, weights_only=True)
        )
    plain = optuna_mto.Ensemble([tiny_mlp() for _ in range(2)])  # the README's way
    plain.load_state_dict(torch.load(path, weights_only=True))
    assert plain.combine == "mean" and plain.splits == [3, 1]
    assert optuna_mto.Ensemble.load(path, tiny_mlp, combine="auto").combine == "auto"
    with pytest.raises(ValueError, match="splits=.* names 1 split.* for 2 members"):
        optuna_mto.Ensemble([tiny_mlp(), tiny_mlp()], splits=[0])


def test_a_file_of_an_older_version_without_the_count_still_loads(tmp_path):
    torch.manual_seed(0)
    members = [tiny_mlp() for _ in range(3)]
    flat = {f"members.{i}.{k}": v for i, m in enumerate(members) for k, v in m.state_dict().items()}
    torch.save(flat, tmp_path / "old.pt")
    x = torch.randn(4, 64)
    expected = optuna_mto.Ensemble(members)(x)
    for kwargs in ({"n_members": 3}, {}):  # the count is in its keys
        loaded = optuna_mto.Ensemble.load(tmp_path / "old.pt", tiny_mlp, **kwargs)
        assert torch.equal(loaded(x), expected) and loaded.splits is None
    with pytest.raises(ValueError, match="holds an ensemble of 3 members, but n_members=4"):
        optuna_mto.Ensemble.load(tmp_path / "old.pt", tiny_mlp, n_members=4)
    torch.save(tiny_mlp().state_dict(), tmp_path / "single.pt")
    with pytest.raises(ValueError, match="holds no ensemble .* model.load_state_dict"):
        optuna_mto.Ensemble.load(tmp_path / "single.pt", tiny_mlp)
