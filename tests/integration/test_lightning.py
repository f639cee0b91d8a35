"""MTOCallback: a real pl.Trainer per split, transfers applied in place, resumed retries."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

try:  # the namespace MTOCallback itself uses: ``lightning`` first, else ``pytorch_lightning``
    import lightning.pytorch as pl
except ImportError:
    pl = pytest.importorskip("pytorch_lightning")

import optuna_mto  # noqa: E402
from optuna_mto.integration import MTOCallback, trainer_device_kwargs  # noqa: E402
from optuna_mto.transfer import GreedyTransfer  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*number of training batches.*"),
]
MAX_EPOCHS = 3


class LitDigits(pl.LightningModule):
    """A 64-32-10 MLP on sklearn digits."""

    def __init__(self, lr: float, fail_at_epoch: int | None = None) -> None:
        super().__init__()
        self.lr = lr
        self.fail_at_epoch = fail_at_epoch
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.epochs_started: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self(x).argmax(1) == y).float().mean()
        self.log("val_acc", acc, on_epoch=True, prog_bar=False)

    def on_train_epoch_start(self) -> None:
        self.epochs_started.append(self.current_epoch)
        if self.current_epoch == self.fail_at_epoch:
            raise RuntimeError(f"simulated crash at epoch {self.current_epoch}")

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 2)}


def _loader(x, y, rows, shuffle: bool) -> torch.utils.data.DataLoader:
    rows = torch.as_tensor(rows)
    data = torch.utils.data.TensorDataset(x[rows], y[rows])
    return torch.utils.data.DataLoader(data, batch_size=64, shuffle=shuffle)


class DigitsObjective:
    """Split 0 learns (lr 0.1); split 1 never moves on its own (lr 0)."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        fail_split: int | None = None,
        precision: str = "32-true",
    ) -> None:
        self.x, self.y = x, y
        self.fail_split = fail_split
        self.precision = precision
        self.callbacks: dict[tuple[int, int], MTOCallback] = {}
        self.modules: dict[tuple[int, int], LitDigits] = {}

    def evaluate(self, model: nn.Module, indices: np.ndarray) -> float:
        rows = torch.as_tensor(indices)
        return float((model(self.x[rows]).argmax(1) == self.y[rows]).float().mean())

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        torch.manual_seed(trial.split)
        fail = 2 if trial.split == self.fail_split and trial.attempt == 0 else None
        module = LitDigits(lr=0.1 if trial.split == 0 else 0.0, fail_at_epoch=fail)
        callback = MTOCallback(trial, monitor="val_acc")
        self.callbacks[trial.split, trial.attempt] = callback
        self.modules[trial.split, trial.attempt] = module
        trainer = pl.Trainer(
            max_epochs=MAX_EPOCHS,
            callbacks=[callback],
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            precision=self.precision,
            **trainer_device_kwargs(trial),
        )
        train = _loader(self.x, self.y, trial.train_indices, shuffle=True)
        valid = _loader(self.x, self.y, trial.valid_indices, shuffle=False)
        trainer.fit(module, train, valid)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _study(tmp_path, study_name: str) -> optuna_mto.MTOStudy:
    return optuna_mto.create_study(
        study_name=study_name,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        n_splits=2,
        seed=0,
        transfer=GreedyTransfer(interval=1, warmup=1),
        heartbeat_interval=None,
    )


@pytest.mark.smoke
def test_lightning_splits_complete_report_every_epoch_and_accept_a_transfer(
    tmp_path, study_name, digits
):
    x, y = digits
    study = _study(tmp_path, study_name)
    objective = DigitsObjective(x, y)
    study.optimize(objective, dataset=(x, y), evaluate=objective.evaluate)

    trials = study.study.get_trials()
    assert len(trials) == 2
    assert all(t.state.name == "COMPLETE" for t in trials)
    for trial in trials:  # one intermediate value per epoch, sanity check not reported
        assert sorted(trial.intermediate_values) == list(range(MAX_EPOCHS))
    assert study.summary().complete

    events = study.transfers()
    kept = [e for e in events if e.accepted]
    assert kept and kept[0].receiver == 1 and kept[0].donor == 0 and kept[0].step == 1

    # The transfer was applied to split 1's module in place: split 1 (lr 0 on its own)
    # holds split 0's weights after step 1, so its score at step 2 is at the donor's level.
    values = {t.params["split"]: t.intermediate_values for t in trials}
    assert values[1][0] == values[1][1] < 0.5 < values[1][2]
    callback = objective.callbacks[1, 0]
    assert callback.accepted_transfers >= 1 and callback.results[1].accepted
    module = objective.modules[1, 0]
    assert objective.evaluate(module, study.splits(len(x))[1][1]) > 0.5


def test_a_transfer_under_mixed_precision_is_applied(tmp_path, study_name, digits):
    # The AMP path users take on GPUs ("16-mixed"); bf16 autocast is its CPU twin.
    x, y = digits
    study = _study(tmp_path, study_name)
    objective = DigitsObjective(x, y, precision="bf16-mixed")
    study.optimize(objective, dataset=(x, y), evaluate=objective.evaluate)

    kept = [e for e in study.transfers() if e.accepted]
    assert [(e.receiver, e.donor, e.step) for e in kept][:1] == [(1, 0, 1)]
    values = {t.params["split"]: t.intermediate_values for t in study.study.get_trials()}
    assert values[1][0] == values[1][1] < 0.5 < values[1][2]
    module = objective.modules[1, 0]
    assert all(p.dtype == torch.float32 for p in module.parameters())  # fp32 master weights


def test_a_retried_lightning_split_resumes_after_its_last_report(tmp_path, study_name, digits):
    x, y = digits
    study = _study(tmp_path, study_name)
    objective = DigitsObjective(x, y, fail_split=1)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    no_retry = optuna_mto.load_study(study_name=study_name, storage=url, max_retries=0)
    with pytest.raises(optuna_mto.SplitsGivenUpError, match="simulated crash at epoch 2"):
        no_retry.optimize(objective, dataset=(x, y), evaluate=objective.evaluate)
    assert objective.modules[1, 0].epochs_started == [0, 1, 2]

    study.optimize(objective, dataset=(x, y), evaluate=objective.evaluate)
    retried = objective.modules[1, 1]
    assert retried.epochs_started == [2]  # epochs 0 and 1 came back from the checkpoint
    trials = [t for t in study.study.get_trials() if t.params["split"] == 1]
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert [r.step for r in objective.callbacks[1, 1].results] == [2]
    assert max(trials[1].intermediate_values) == 2
    assert study.summary().complete


def test_callback_checks_its_arguments(tmp_path, study_name, digits):
    with pytest.raises(TypeError, match="SplitTrial"):
        MTOCallback(object(), monitor="val_acc")

    x, y = digits
    study = _study(tmp_path, study_name)

    def objective(trial):
        with pytest.raises(ValueError, match="step must be one of"):
            MTOCallback(trial, step="batch")
        module = LitDigits(lr=0.1)
        trainer = pl.Trainer(
            max_epochs=1,
            callbacks=[MTOCallback(trial, monitor="val_loss")],
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            accelerator="cpu",
        )
        rows = trial.train_indices
        trainer.fit(module, _loader(x, y, rows, True), _loader(x, y, trial.valid_indices, False))

    with pytest.raises(optuna_mto.SplitsGivenUpError, match="monitors 'val_loss'.*val_acc"):
        study.optimize(objective, dataset=(x, y), evaluate=DigitsObjective(x, y).evaluate)


def test_without_lightning_the_import_error_says_how_to_install(monkeypatch):
    import optuna_mto.integration as integration

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "optuna_mto.integration._lightning")
    monkeypatch.delitem(vars(integration), "MTOCallback")
    with pytest.raises(ImportError, match=r'pip install "optuna-mto\[lightning\]"'):
        integration.MTOCallback  # noqa: B018 - the lazy attribute access is the test


@pytest.mark.parametrize("step", ["epoch", "global_step"])
def test_validation_twice_per_epoch(tmp_path, study_name, digits, step):
    x, y = digits
    study = optuna_mto.create_study(
        study_name=study_name,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        n_splits=2,
        transfer=optuna_mto.transfer.NoTransfer(),
        heartbeat_interval=None,
    )
    callbacks = {}

    def objective(trial):
        callbacks[trial.split] = callback = MTOCallback(trial, monitor="val_acc", step=step)
        trainer = pl.Trainer(
            max_epochs=2,
            val_check_interval=0.5,
            callbacks=[callback],
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            accelerator="cpu",
        )
        train = _loader(x, y, trial.train_indices, True)
        trainer.fit(LitDigits(lr=0.1), train, _loader(x, y, trial.valid_indices, False))

    evaluate = DigitsObjective(x, y).evaluate
    if step == "epoch":
        with pytest.warns(UserWarning, match="step='global_step'") as record:
            study.optimize(objective, dataset=(x, y), evaluate=evaluate)
        assert len([w for w in record if "already reported" in str(w.message)]) == 2  # once each
        expected = [0, 1]
    else:
        study.optimize(objective, dataset=(x, y), evaluate=evaluate)
        batches = len(_loader(x, y, study.splits(len(x))[0][0], True))
        steps = [r.step for r in callbacks[0].results]
        assert len(steps) == 4 and steps == sorted(set(steps))  # every validation reported
        assert steps[-1] in (2 * batches - 1, 2 * batches)  # Lightning's global step
        expected = steps
    assert [r.step for r in callbacks[0].results] == expected
    trial = next(t for t in study.study.get_trials() if t.params["split"] == 0)
    assert sorted(trial.intermediate_values) == expected


def test_amto_is_refused_once_before_any_split_starts(study_name):
    from optuna_mto.transfer import AdaptiveTransfer

    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=AdaptiveTransfer(), heartbeat_interval=None
    )

    def objective(trial):
        MTOCallback(trial, monitor="val_acc")

    with pytest.raises(ValueError, match="MTOCallback cannot train the companion models") as err:
        study.optimize(objective, dataset=100, evaluate=lambda model, rows: 0.5, dashboard=False)
    assert "max_retries" not in str(err.value)
    assert study.study.get_trials() == []  # refused before any split started


def test_amto_is_still_refused_when_the_callback_is_made_out_of_sight(study_name):
    from optuna_mto.transfer import AdaptiveTransfer

    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=AdaptiveTransfer(), heartbeat_interval=None
    )
    holder = types.SimpleNamespace(make=MTOCallback)

    def objective(trial):
        holder.make(trial, monitor="val_acc")  # made where the up-front check cannot see

    with pytest.raises(
        optuna_mto.SplitsGivenUpError,
        match="ValueError: MTOCallback cannot train the companion models",
    ):
        study.optimize(objective, dataset=100, evaluate=lambda model, rows: 0.5, dashboard=False)


def test_a_multi_device_trainer_is_refused_before_lightning_starts_processes(
    tmp_path, study_name, digits
):
    x, y = digits
    study = _study(tmp_path, study_name)

    def objective(trial):
        trainer = pl.Trainer(
            max_epochs=1, devices=2, accelerator="cpu", strategy="ddp_spawn",
            callbacks=[MTOCallback(trial, monitor="val_acc")], logger=False,
            enable_checkpointing=False, enable_progress_bar=False,
        )  # fmt: skip
        rows = trial.train_indices
        trainer.fit(LitDigits(0.1), _loader(x, y, rows, True), _loader(x, y, rows, False))

    with pytest.raises(optuna_mto.SplitsGivenUpError, match="world_size=2") as err:
        study.optimize(objective, dataset=(x, y), evaluate=DigitsObjective(x, y).evaluate)
    assert "pickle" not in str(err.value)


# A job a test SIGKILLs: 2 splits, 6 batches an epoch (0.12 s each), each batch logged.
RESUME_JOB = textwrap.dedent(
    """
    import json, logging, os, sys, time, warnings
    import torch
    from torch import nn
    from sklearn.datasets import load_digits
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl
    import optuna_mto
    from optuna_mto.integration import MTOCallback
    from optuna_mto.transfer import NoTransfer

    url, name, step, log = sys.argv[1:5]
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    warnings.filterwarnings("ignore")
    for logger in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(logger).setLevel(logging.ERROR)

    class Lit(pl.LightningModule):
        def __init__(self, split):
            super().__init__()
            self.split = split
            self.net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, i):
            time.sleep(0.12)
            gs = self.trainer.global_step
            with open(log, "a") as f:
                f.write(json.dumps([os.getpid(), self.split, self.current_epoch, i, gs]) + "\\n")
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, i):
            acc = (self(batch[0]).argmax(1) == batch[1]).float().mean()
            self.log("val_acc", acc)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 2)}

    def loader(rows, shuffle):
        rows = torch.as_tensor(rows)
        data = torch.utils.data.TensorDataset(x[rows], y[rows])
        return torch.utils.data.DataLoader(data, batch_size=64, shuffle=shuffle)

    def evaluate(model, rows):
        rows = torch.as_tensor(rows)
        return float((model(x[rows]).argmax(1) == y[rows]).float().mean())

    def objective(trial):
        torch.manual_seed(trial.split)
        by_epoch = step == "epoch"
        trainer = pl.Trainer(
            max_epochs=4 if by_epoch else -1, max_steps=-1 if by_epoch else 20,
            val_check_interval=None if by_epoch else 3, limit_train_batches=6,
            callbacks=[MTOCallback(trial, monitor="val_acc", step=step)],
            num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        )
        trainer.fit(Lit(trial.split), loader(trial.train_indices, True),
                    loader(trial.valid_indices, False))

    study = optuna_mto.create_study(study_name=name, storage=url, n_splits=2,
                                    transfer=NoTransfer(), load_if_exists=True)
    if __name__ == "__main__":
        study.optimize(objective, dataset=(x, y), evaluate=evaluate, n_jobs=1, dashboard=False)
        print("DONE", flush=True)
    """
)


def _batches(log: Path) -> list[list[int]]:
    """``[pid, split, epoch, batch, global_step]`` of every training batch run so far."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("step", ["epoch", "global_step"])
def test_a_sigkilled_lightning_split_resumes_at_its_epoch_and_global_step(
    tmp_path, study_name, step
):
    import optuna

    url, log = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "batches.jsonl"
    args = [sys.executable, "-c", RESUME_JOB, url, study_name, step, str(log)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    job = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)  # fmt: skip

    def reported() -> int:
        """The most reports of one trial so far: a cheap read, so the kill comes on time
        even on a loaded machine (the first split must not have finished)."""
        try:
            with sqlite3.connect(tmp_path / "study.db", timeout=30) as conn:
                row = conn.execute(
                    "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM trial_intermediate_values "
                    "GROUP BY trial_id)"
                ).fetchone()
        except sqlite3.OperationalError:  # the tables are not there yet
            return 0
        return row[0] or 0

    try:
        deadline = time.monotonic() + 120
        while reported() < 2:  # split 0 reported twice: kill it mid-training
            assert job.poll() is None, job.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "timed out waiting for two reports"
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    killed = {pid for pid, *_ in _batches(log)}
    assert not [b for b in _batches(log) if b[1] == 1], "killed too late: split 1 had started"
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "DONE" in rerun.stdout, rerun.stdout[-3000:]

    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    resumed = [t for t in trials if t.params["split"] == 0][-1]
    fresh = next(t for t in trials if t.params["split"] == 1)  # never killed: the reference
    assert resumed.state.name == fresh.state.name == "COMPLETE"
    assert sorted(resumed.intermediate_values) == sorted(fresh.intermediate_values)
    at = resumed.user_attrs["resumed_from_step"]
    batches = _batches(log)
    after = [b[2:] for b in batches if b[1] == 0 and b[0] not in killed]  # epoch, batch, step
    reference = [b[2:] for b in batches if b[1] == 1]
    # The resumed run trains exactly what the uninterrupted split 1 trained after that point.
    assert after == reference[len(reference) - len(after) :]
    first_step = (at + 1) * 6 if step == "epoch" else at
    assert after[0][2] == first_step, (at, after[:3])
    assert reference[-1][2] == (23 if step == "epoch" else 19)  # max_epochs / max_steps kept
