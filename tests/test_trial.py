"""SplitTrial.report: storage cost per step, checkpoint retention, bad donors, resume."""

from __future__ import annotations

import pytest
import sqlalchemy
import torch
from _models import digits_trainer, tiny_mlp
from optuna.trial import TrialState

import optuna_mto
from optuna_mto._storage.rdb import get_engine
from optuna_mto._workers.lifecycle import split_statuses
from optuna_mto.transfer import GreedyTransfer, NoTransfer


def _constant_evaluate(model, indices) -> float:
    return 0.5


def test_sql_statements_per_report_do_not_grow_with_steps(storage_url, study_name):
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, heartbeat_interval=None
    )
    engine = get_engine(study.study._storage)
    counts: dict[int, int] = {}

    def objective(trial):
        model = tiny_mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        if trial.split == 0:  # a weak donor that never tempts split 1
            for step in range(3):
                trial.report(0.1, step, model=model, optimizer=opt)
            return
        for step in range(201):
            statements = []

            def count(conn, cursor, statement, *args, _s=statements):
                _s.append(statement)

            sqlalchemy.event.listen(engine, "before_cursor_execute", count)
            try:
                trial.report(0.9, step, model=model, optimizer=opt)
            finally:
                sqlalchemy.event.remove(engine, "before_cursor_execute", count)
            counts[step] = len(statements)

    # No monitor thread: only the report path may touch the database here.
    study.optimize(objective, dataset=100, evaluate=_constant_evaluate, dashboard=False)
    assert counts[10] == counts[200]
    assert counts[10] <= 20  # intermediate value + board read + board write, O(1) each


def test_checkpoints_on_disk_stay_bounded(study_name, tmp_path):
    study = optuna_mto.create_study(study_name=study_name, n_splits=2, transfer=NoTransfer())

    folder = tmp_path / "home" / "artifacts" / study_name
    peak = []

    def objective(trial):
        model = tiny_mlp()
        for step in range(12):
            # Improving then worsening scores: best, previous and latest are all distinct.
            value = step / 10 if step < 6 else 0.45 - step / 100
            trial.report(value, step, model=model)
            peak.append(len(list(folder.iterdir())) - trial.split)  # minus finished splits
            for ref in (study.records()[trial.split].checkpoint,
                        study.records()[trial.split].previous_checkpoint,
                        study.records()[trial.split].best_checkpoint):  # fmt: skip
                if ref is not None:
                    study.checkpoint_store.load(ref)  # every published reference loads

    study.optimize(objective, dataset=100, evaluate=_constant_evaluate)
    assert max(peak) == 3  # latest, previous and best of the running split
    assert len(list(folder.iterdir())) == 2  # a finished split keeps only its best
    for record in study.records().values():
        assert record.finished and record.best_step == record.step == 5
        assert record.checkpoint == record.best_checkpoint
        study.checkpoint_store.load(record.best_checkpoint)


def _damage_file_store(study, tmp_path) -> None:
    for path in (tmp_path / "home" / "artifacts" / study.study_name).iterdir():
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")


def _damage_database_store(study, tmp_path) -> None:
    engine = study.checkpoint_store.artifact_store.engine
    # The finished split's best checkpoint (an Optuna artifact, under a UUID id).
    ids = [record.checkpoint.artifact_id for record in study.records().values()]
    with engine.begin() as conn:  # same length, different bytes: only the checksum can tell
        rows = conn.execute(
            sqlalchemy.text("SELECT artifact_id, seq, data FROM mto_artifact_chunks "
                            "WHERE artifact_id IN :ids").bindparams(
                sqlalchemy.bindparam("ids", expanding=True)), {"ids": ids}
        ).all()  # fmt: skip
        assert rows
        for artifact_id, seq, data in rows:
            damaged = bytes(data[:-10]) + b"0123456789"
            conn.execute(
                sqlalchemy.text("UPDATE mto_artifact_chunks SET data = :d "
                                "WHERE artifact_id = :a AND seq = :s"),
                {"d": damaged, "a": artifact_id, "s": seq},
            )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "damage"), [("file", _damage_file_store), ("database", _damage_database_store)]
)
def test_a_corrupted_donor_checkpoint_is_skipped_and_training_goes_on(
    study_name, tmp_path, storage_url, kind, damage
):
    study = optuna_mto.create_study(
        study_name=study_name,
        storage=storage_url,
        n_splits=2,
        transfer=GreedyTransfer(warmup=0),
        artifact_store=kind,
    )
    results = []

    def objective(trial):
        model = tiny_mlp()
        if trial.split == 0:
            trial.report(0.9, 0, model=model)
            return
        damage(study, tmp_path)  # finished split 0's only checkpoint
        for step in range(2):
            results.append(trial.report(0.1, step, model=model))

    study.optimize(objective, dataset=100, evaluate=_constant_evaluate)
    event = results[0].transfer
    assert event is not None and not event.accepted
    assert "checksum" in event.reason
    assert results[1].transfer is None  # the same bad checkpoint is not tried twice
    assert study.summary().complete


class _CompiledAndPlain:
    """Split 0 trains a ``torch.compile``d model (lr 0.5); split 1 a plain one (lr 0)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.accepted: dict[int, list[bool]] = {0: [], 1: []}

    def evaluate(self, model: torch.nn.Module, indices) -> float:
        rows = torch.as_tensor(indices)
        return float((model(self.x[rows]).argmax(1) == self.y[rows]).float().mean())

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        torch.manual_seed(trial.split)
        model = tiny_mlp()
        if trial.split == 0:
            model = torch.compile(model, backend="eager")
        opt = torch.optim.SGD(model.parameters(), lr=0.5 if trial.split == 0 else 0.0)
        rows = torch.as_tensor(trial.train_indices)
        for epoch in range(trial.restore(model, opt), 3):
            for chunk in rows.split(64):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(self.x[chunk]), self.y[chunk])
                loss.backward()
                opt.step()
            result = trial.report(trial.evaluate(model), epoch, model=model, optimizer=opt)
            self.accepted[trial.split].append(result.accepted)


def test_a_compiled_split_and_a_plain_split_exchange_weights(study_name, digits):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=GreedyTransfer(interval=1, warmup=1)
    )
    objective = _CompiledAndPlain(x, y)
    study.optimize(objective, dataset=(x, y), evaluate=objective.evaluate)

    assert objective.accepted[1][1], "the plain split did not take the compiled split's weights"
    plain_keys = list(tiny_mlp().state_dict())
    assert list(study.best_state_dict(split=0)) == plain_keys  # no "_orig_mod." prefix
    plain = study.load_best_model(tiny_mlp(), split=0)
    compiled = study.load_best_model(torch.compile(tiny_mlp(), backend="eager"), split=0)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(compiled.state_dict()[f"_orig_mod.{name}"], tensor)


# ----------------------------------------------------------------- non-finite scores


def sgd_diverges(params) -> torch.optim.Optimizer:
    """A learning rate so high that the digits MLP's loss is NaN after one epoch."""
    return torch.optim.SGD(params, lr=1e12)


def _assert_errors_not_lost_workers(study, errors: int, word: str) -> None:
    """Every split: ``errors`` errors, no lost worker, every FAIL trial says why."""
    statuses = split_statuses(study._rt)
    assert [(s.errors, s.preemptions) for s in statuses] == [(errors, 0)] * study.n_splits
    failed = [t for t in study.study.get_trials() if t.state == TrialState.FAIL]
    assert len(failed) == errors * study.n_splits  # no retry loop: each error is one trial
    assert all(t.system_attrs["fail_reason"].startswith("NonFiniteScoreError: Split ")
               and f" is {word}, not a finite number" in t.system_attrs["fail_reason"]
               for t in failed)  # fmt: skip


@pytest.mark.parametrize(
    "executor", ["inline", "thread", pytest.param("process", marks=pytest.mark.slow)]
)
def test_a_diverged_loss_fails_each_split_once_as_an_error(storage_url, study_name, digits,
                                                          executor):  # fmt: skip
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, max_retries=0,
        transfer=NoTransfer(), direction="minimize",
    )  # fmt: skip
    trainer = digits_trainer(x, y, epochs=2, optimizer_fn=sgd_diverges, metric="loss")
    with pytest.raises(optuna_mto.SplitsGivenUpError) as info:
        study.optimize(trainer, n_jobs=1 if executor == "inline" else 2, executor="auto"
                       if executor == "inline" else executor, dashboard=False)  # fmt: skip
    message = str(info.value)
    assert "2 of 2 split(s) given up" in message
    assert "the value reported at step 0 is nan, not a finite number" in message
    assert "lower the learning rate, or clip the gradients" in message
    assert "[1 errors > max_retries=0]" in message and "lost workers >" not in message
    _assert_errors_not_lost_workers(study, 1, "nan")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_report_after_the_first_uses_up_max_retries(storage_url, study_name, bad):
    study = optuna_mto.create_study(
        study_name=study_name, storage=storage_url, n_splits=2, max_retries=1,
        transfer=NoTransfer(),
    )  # fmt: skip

    def objective(trial):
        model = tiny_mlp()
        for step in range(trial.restore(model), 3):
            trial.report(0.5 if step == 0 else bad, step, model=model)

    with pytest.raises(optuna_mto.SplitsGivenUpError) as info:
        study.optimize(objective, dataset=100, evaluate=_constant_evaluate, dashboard=False)
    message = str(info.value)
    assert "2 of 2 split(s) given up" in message
    assert f"NonFiniteScoreError: Split 0: the value reported at step 1 is {bad}" in message
    assert "[2 errors > max_retries=1]" in message and "lost workers >" not in message
    _assert_errors_not_lost_workers(study, 2, str(bad))


def test_trial_evaluate_refuses_a_non_finite_score(study_name):
    study = optuna_mto.create_study(study_name=study_name, n_splits=1, max_retries=0)
    seen = []

    def objective(trial):
        model = tiny_mlp()
        trial.report(trial.evaluate(model), 0, model=model)  # finite: 0.5
        seen.append(trial.evaluate(model, trial.train_indices))  # -inf: raises

    calls = iter([0.5, -float("inf")])
    with pytest.raises(optuna_mto.SplitsGivenUpError, match=(
        r"Split 0: the score evaluate returned after step 0 is -inf, not a finite number"
    )):  # fmt: skip
        study.optimize(objective, dataset=100, evaluate=lambda m, rows: next(calls))
    assert seen == []
    assert issubclass(optuna_mto.NonFiniteScoreError, ValueError)
