"""Real objects for unit tests of single report-pipeline stages (tests/_step, tests/transfer).

A real SQLite study in the test's tmp dir, its blackboard, a file checkpoint store, a
split plan and one :class:`SplitHandle` / :class:`CheckpointLedger` per split trial:
what ``SplitTrial`` builds, without running an objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from _models import tiny_mlp

from optuna_mto._data.plan import SplitPlan
from optuna_mto._data.splitters import BaseSplitter, KFoldSplitter
from optuna_mto._step.board import Blackboard
from optuna_mto._step.handle import Shared, SplitHandle
from optuna_mto._step.hparams import HyperparamState
from optuna_mto._step.ledger import CheckpointLedger
from optuna_mto._storage.optuna_internals import storage_of, study_id_of, trial_id_of
from optuna_mto._storage.rdb import get_engine
from optuna_mto.checkpoints import AtomicFileSystemArtifactStore, CheckpointStore
from optuna_mto.transfer import BaseTransferManager, NoTransfer

STUDY_NAME = "unit"


@dataclasses.dataclass
class Env:
    """One study's shared objects, and the Optuna study behind them."""

    shared: Shared
    study: optuna.Study
    artifacts: AtomicFileSystemArtifactStore

    @property
    def store(self) -> CheckpointStore:
        return self.shared.store

    @property
    def board(self) -> Blackboard:
        return self.shared.board


@dataclasses.dataclass
class Split:
    """One running split trial: its Optuna trial, handle and ledger."""

    trial: optuna.Trial
    handle: SplitHandle
    ledger: CheckpointLedger


def make_env(
    tmp_path: Path,
    *,
    n_samples: int,
    manager: BaseTransferManager | None = None,
    n_splits: int = 3,
    direction: str = "maximize",
    evaluate: Callable[[torch.nn.Module, np.ndarray], float] | None = None,
    loss: Callable[[torch.nn.Module, np.ndarray], float] | None = None,
    splitter: BaseSplitter | None = None,
    selection_fraction: float = 0.0,
    seed: int = 0,
) -> Env:
    """Open a fresh SQLite study in ``tmp_path`` and the objects every split shares."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'unit.db'}")
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=direction)
    board = Blackboard(get_engine(storage_of(study)), study_id_of(study))
    artifacts = AtomicFileSystemArtifactStore(tmp_path / "artifacts")
    splitter = splitter or KFoldSplitter(n_splits, seed=seed)
    plan = SplitPlan(splitter, n_samples, None, selection_fraction)
    shared = Shared(
        study_name=STUDY_NAME, direction=direction, n_splits=n_splits, seed=seed, plan=plan,
        store=CheckpointStore(artifacts), board=board, manager=manager or NoTransfer(),
        evaluate=evaluate, loss=loss,
    )  # fmt: skip
    return Env(shared, study, artifacts)


def open_split(
    env: Env, split: int, model: torch.nn.Module | None = None, optimizer: Any = None
) -> Split:
    """Start a trial of ``split`` (asked from the study) with ``model`` bound to its handle."""
    trial = env.study.ask()
    handle = SplitHandle(
        env.shared, trial, split, torch.device("cpu"), HyperparamState(trial, split)
    )
    handle.model = tiny_mlp() if model is None else model
    handle.optimizer = optimizer
    identity = (split, trial_id_of(trial), trial.number)
    ledger = CheckpointLedger(env.store, env.board, identity, env.shared.direction, STUDY_NAME)
    return Split(trial, handle, ledger)


def accuracy_fn(x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.nn.Module, np.ndarray], float]:
    """``evaluate(model, rows)``: the model's accuracy on the rows ``rows`` of (x, y)."""

    def evaluate(model: torch.nn.Module, rows: np.ndarray) -> float:
        index = torch.as_tensor(rows, dtype=torch.long)
        with torch.no_grad():
            return float((model(x[index]).argmax(1) == y[index]).float().mean())

    return evaluate


def mlp_with(value: float, seed: int = 0) -> torch.nn.Module:
    """A tiny MLP (seeded init) whose last bias is ``value`` everywhere: a readable marker."""
    torch.manual_seed(seed)
    model = tiny_mlp()
    with torch.no_grad():
        model[2].bias.fill_(value)
    return model


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """True if two state dicts hold the same names and equal tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
