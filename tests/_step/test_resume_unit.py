"""resume and carry_history alone: a retried split restores its last good checkpoint."""

from __future__ import annotations

import io

import torch
from _stage_kit import make_env, mlp_with, open_split, same_weights
from optuna.trial import TrialState

from optuna_mto._step.report import report_step
from optuna_mto._step.resume import carry_history, resume
from optuna_mto._storage.schema import RESUMED_FROM_ATTR, RESUMED_FROM_KEY, step_key


def _failed_run(env, fitness):
    """Split 0 reports ``fitness`` at steps 0, 1, ... then fails; returns weights and draws."""
    run = open_split(env, 0, mlp_with(0.0))
    run.handle.lineage = [0, 2]
    weights, draws = [], []
    for step, value in enumerate(fitness):
        with torch.no_grad():
            run.handle.model[2].bias.fill_(float(step + 1))  # weights differ at every step
        run.handle.state = {"round": step}
        report_step(env.shared, run.handle, run.ledger, run.trial, value, step)
        weights.append({k: v.clone() for k, v in run.handle.model.state_dict().items()})
        draws.append(torch.rand(4))  # what the run drew right after this checkpoint
        run.handle.set_step_attr("transfer:", step, {"step": step})
    env.study.tell(run.trial, state=TrialState.FAIL)
    return run, weights, draws


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    env = make_env(tmp_path, n_samples=60)
    failed, weights, draws = _failed_run(env, [0.5, 0.6])
    record = env.board.read()[0]
    latest, previous = record.checkpoint, record.previous_checkpoint
    env.artifacts.write(latest.artifact_id, io.BytesIO(b"not the checkpoint"))

    retry = open_split(env, 0, mlp_with(7.0, seed=3))
    torch.manual_seed(123)  # a fresh process: other RNG state
    step = resume(retry.handle, retry.ledger, record, env.shared, retry.trial)

    assert step == 0
    assert same_weights(retry.handle.model.state_dict(), weights[0])
    assert torch.equal(torch.rand(4), draws[0])  # the RNG state of step 0 is back
    assert retry.handle.lineage == [0, 2]
    assert retry.handle.state == {"round": 0}  # the strategy state of that checkpoint
    # The best (step 1) is the corrupt one: the resumed checkpoint becomes the best.
    assert retry.ledger.best == (0.5, 0, previous)
    assert (retry.ledger.latest, retry.ledger.first_step, retry.ledger.resumed_at) == (
        previous, 1, (0, 0.5),
    )  # fmt: skip
    stored = env.study._storage.get_trial(retry.trial._trial_id)
    assert f"bad_checkpoint:{latest.artifact_id}" in stored.user_attrs
    assert stored.intermediate_values == {0: 0.5}  # the failed run's curve up to step 0
    assert stored.user_attrs[step_key("transfer:", 0)] == {"step": 0}
    assert step_key("transfer:", 1) not in stored.user_attrs
    assert stored.user_attrs[RESUMED_FROM_ATTR] == 0
    assert stored.system_attrs[RESUMED_FROM_KEY] == 0
    assert failed.trial._trial_id != retry.trial._trial_id


def test_the_latest_good_checkpoint_is_taken_and_the_best_kept(tmp_path):
    env = make_env(tmp_path, n_samples=60)
    _, weights, _ = _failed_run(env, [0.9, 0.3, 0.4])
    record = env.board.read()[0]
    retry = open_split(env, 0)
    assert resume(retry.handle, retry.ledger, record, env.shared, retry.trial) == 2
    assert same_weights(retry.handle.model.state_dict(), weights[2])
    assert retry.ledger.best == (0.9, 0, record.best_checkpoint)
    stored = env.study._storage.get_trial(retry.trial._trial_id)
    assert stored.intermediate_values == {0: 0.9, 1: 0.3, 2: 0.4}
    assert not any(k.startswith("bad_checkpoint:") for k in stored.user_attrs)


def test_nothing_readable_resumes_nothing(tmp_path):
    env = make_env(tmp_path, n_samples=60)
    _failed_run(env, [0.5, 0.6])
    record = env.board.read()[0]
    for ref in {record.checkpoint, record.previous_checkpoint, record.best_checkpoint}:
        env.store.remove(ref.artifact_id)
    model = mlp_with(7.0, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retry = open_split(env, 0, model)
    assert resume(retry.handle, retry.ledger, record, env.shared, retry.trial) is None
    assert same_weights(model.state_dict(), before) and retry.ledger.latest is None
    stored = env.study._storage.get_trial(retry.trial._trial_id)
    bad = {k for k in stored.user_attrs if k.startswith("bad_checkpoint:")}
    assert bad == {f"bad_checkpoint:{record.checkpoint.artifact_id}",
                   f"bad_checkpoint:{record.previous_checkpoint.artifact_id}"}  # fmt: skip
    assert stored.intermediate_values == {}


def test_carry_history_copies_the_curve_and_step_records_up_to_the_step(tmp_path):
    env = make_env(tmp_path, n_samples=60)
    failed = env.study.ask()
    for step in range(4):
        failed.report(step / 10, step)
        for prefix in ("transfer:", "relations:", "hparams:"):
            failed.set_user_attr(step_key(prefix, step), {"prefix": prefix, "step": step})
    failed.set_user_attr("worker", "elsewhere")  # not a per-step record
    env.study.tell(failed, state=TrialState.FAIL)

    trial = env.study.ask()
    carry_history(trial, failed._trial_id, 1)
    stored = env.study._storage.get_trial(trial._trial_id)
    assert stored.intermediate_values == {0: 0.0, 1: 0.1}
    expected = {
        step_key(p, s): {"prefix": p, "step": s}
        for p in ("transfer:", "relations:", "hparams:")
        for s in (0, 1)
    }
    assert stored.user_attrs == {**expected, RESUMED_FROM_ATTR: 1}
    assert stored.system_attrs[RESUMED_FROM_KEY] == 1
