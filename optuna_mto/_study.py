"""create_study / load_study and MTOStudy, the study of K split trials."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts._protocol import ArtifactStore
from optuna.trial import TrialState

from optuna_mto import _ensemble, _execution
from optuna_mto._board import Blackboard, records_from_attrs
from optuna_mto._claims import ClaimTable
from optuna_mto._config import CONFIG_KEY, StudyConfig
from optuna_mto._errors import DatasetMismatchError
from optuna_mto._events import TRANSFER_ATTR_PREFIX, TransferEvent
from optuna_mto._monitor import StudyMonitor
from optuna_mto._plan import SplitPlan
from optuna_mto._splits import dataset_fingerprint, make_splitter
from optuna_mto._state import unwrap_model
from optuna_mto._storage import (
    default_home,
    default_storage_url,
    get_engine,
    open_storage,
    storage_url,
)
from optuna_mto._summary import CrossSplitSummary, latest_split_trials
from optuna_mto._trial import EvaluateFn, SplitTrial
from optuna_mto._worker import Job, Worker, run_processes, run_threads, work_left
from optuna_mto.checkpoints import (
    AtomicFileSystemArtifactStore,
    CheckpointRef,
    CheckpointStore,
    DatabaseArtifactStore,
)
from optuna_mto.transfer import BaseTransferManager, GreedyTransfer, from_params

__all__ = ["MTOStudy", "create_study", "load_study"]

_logger = logging.getLogger(__name__)
DATASET_KEY = "mto:dataset"
_DEFAULT_HEARTBEAT_S = 30


def _system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def _artifact_spec(
    artifact_store: str | ArtifactStore | None, url: str, study_name: str
) -> dict[str, Any]:
    if artifact_store is None:
        artifact_store = "file" if url.startswith("sqlite") else "database"
    if artifact_store == "file":
        return {"kind": "file", "path": str(default_home() / "artifacts" / study_name)}
    if artifact_store == "database":
        return {"kind": "database"}
    if isinstance(artifact_store, str):
        raise ValueError(
            "artifact_store must be 'file', 'database' or an optuna ArtifactStore instance, "
            f"but got artifact_store={artifact_store!r}."
        )
    return {"kind": "custom", "class": type(artifact_store).__name__}


def _open_artifact_store(
    spec: dict[str, Any], storage: optuna.storages.BaseStorage, given: Any
) -> ArtifactStore:
    if spec["kind"] == "file":
        return AtomicFileSystemArtifactStore(spec["path"])
    if spec["kind"] == "database":
        return DatabaseArtifactStore(get_engine(storage))
    if given is None or isinstance(given, str):
        raise ValueError(
            f"The study keeps checkpoints in a custom artifact store ({spec['class']}); pass "
            "the same store instance as artifact_store=... when loading it."
        )
    return given


class MTOStudy:
    """A study of K split trials that exchange weights (created by :func:`create_study`).

    Attributes:
        study: The underlying :class:`optuna.Study` (open it in optuna-dashboard).
        config: The study configuration shared by every worker.
        transfer: The transfer manager.
    """

    def __init__(
        self,
        study: optuna.Study,
        config: StudyConfig,
        transfer: BaseTransferManager,
        artifact_store: ArtifactStore,
        open_kwargs: dict[str, Any],
    ) -> None:
        self.study = study
        self.config = config
        self.transfer = transfer
        self._checkpoints = CheckpointStore(artifact_store, prefix="mto")
        self._open_kwargs = open_kwargs
        self._claims = ClaimTable(get_engine(study._storage), study._study_id)
        self._board = Blackboard(study._storage, study._study_id)

    # ------------------------------------------------------------------ basics
    @property
    def study_name(self) -> str:
        """The study's name."""
        return self.study.study_name

    @property
    def direction(self) -> str:
        """``"maximize"`` or ``"minimize"``."""
        return self.study.direction.name.lower()

    @property
    def n_splits(self) -> int:
        """K."""
        return self.config.n_splits

    @property
    def checkpoint_store(self) -> CheckpointStore:
        """Where this study's checkpoints live."""
        return self._checkpoints

    def __repr__(self) -> str:
        return f"MTOStudy(study_name={self.study_name!r}, n_splits={self.n_splits})"

    def splits(
        self, n_samples: int, targets: Sequence[int] | np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return the K ``(train, valid)`` index pairs for a dataset of ``n_samples`` rows."""
        plan = self._plan(n_samples, None if targets is None else np.asarray(targets))
        return [plan.split(k) for k in range(self.n_splits)]

    def selection_indices(self, n_samples: int) -> np.ndarray:
        """Return the held-out selection rows (empty unless ``selection_fraction > 0``)."""
        return self._plan(n_samples, None).selection

    def _plan(self, n_samples: int, targets: np.ndarray | None) -> SplitPlan:
        c = self.config
        splitter = make_splitter(c.splitter, c.n_splits, c.validation_fraction, c.seed)
        return SplitPlan(splitter, n_samples, targets, c.selection_fraction)

    # ------------------------------------------------------------------ dataset
    def _bind_dataset(self, dataset: Any, targets: Any) -> tuple[int, np.ndarray | None]:
        if dataset is None:
            raise ValueError(
                "optimize needs the dataset (or its size) to split: pass "
                "optimize(objective, dataset=...) or use optuna_mto.SupervisedTrainer."
            )
        data = None
        if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool):
            n_samples = int(dataset)
        elif isinstance(dataset, tuple) and len(dataset) == 2:
            data, targets = dataset[0], dataset[1] if targets is None else targets
            n_samples = len(data)
        else:
            n_samples = len(dataset)
            if targets is None and hasattr(dataset, "targets"):
                targets = dataset.targets
            if isinstance(dataset, (np.ndarray, torch.Tensor)):
                data = dataset
        if targets is not None:
            # A copy: torch may move a tensor's storage to shared memory when it is sent to
            # a worker process, which would leave a numpy view of it dangling.
            labels = targets.cpu().numpy() if isinstance(targets, torch.Tensor) else targets
            targets = np.array(labels, copy=True)
        if self.config.splitter == "stratified" and targets is None:
            raise ValueError(
                "splitter='stratified' needs class labels: pass optimize(..., targets=y) or a "
                "dataset with a .targets attribute."
            )
        fingerprint = dataset_fingerprint(n_samples, targets, data)
        info = {"n_samples": n_samples, "fingerprint": fingerprint}
        stored = _system_attrs(self.study).get(DATASET_KEY)
        if stored is None:
            self.study._storage.set_study_system_attr(self.study._study_id, DATASET_KEY, info)
        elif stored != info:
            raise DatasetMismatchError(
                f"Study {self.study_name!r} was split on a dataset of {stored['n_samples']} rows "
                f"(fingerprint {stored['fingerprint']}), but this worker passed "
                f"{n_samples} rows (fingerprint {fingerprint}). Every worker must pass the same "
                "dataset in the same order; use a new study_name for different data."
            )
        return n_samples, targets

    # ------------------------------------------------------------------ optimize
    def optimize(
        self,
        objective: Callable[[SplitTrial], float | None],
        *,
        dataset: Any = None,
        targets: Any = None,
        evaluate: EvaluateFn | None = None,
        n_jobs: int = 1,
        executor: str = "auto",
        devices: Sequence[str | torch.device] | None = None,
        timeout: float | None = None,
        show_progress: bool = False,
        dashboard: bool = True,
    ) -> None:
        """Run every split that is not complete yet, then return.

        A finished study runs nothing; a half-done one finishes the rest. Splits that
        another worker is running (on this machine or another) are left to it.

        Args:
            objective: ``objective(trial: SplitTrial)``: trains one split, calling
                ``trial.report(...)``. Objects with ``dataset``, ``targets`` and
                ``evaluate`` attributes (such as :class:`SupervisedTrainer`) supply
                those arguments themselves.
            dataset: The gross training set (anything with ``len``, an ``(X, y)``
                tuple, or just its number of rows). Split deterministically.
            targets: Class labels (needed by the ``"stratified"`` splitter).
            evaluate: ``evaluate(model, indices) -> float``: scores a model on rows of
                the dataset. Used to accept transfers and for the cross-split table.
            n_jobs: Splits run at the same time.
            executor: ``"auto"``, ``"thread"`` or ``"process"`` (one spawned process
                per worker; needs a picklable objective).
            devices: Devices to spread workers over; default: one GPU each, or CPU.
            timeout: Claim no new split once this many seconds have passed (a running
                split is never interrupted; each worker runs at least one split).
            show_progress: Show a live view per split (step, fitness, transfers, ETA)
                on a terminal, or a log line per split now and then otherwise.
            dashboard: Keep optuna-dashboard's custom figures and study note up to
                date while the study runs (if optuna-dashboard is installed).
        """
        dataset = getattr(objective, "dataset", None) if dataset is None else dataset
        targets = getattr(objective, "targets", None) if targets is None else targets
        evaluate = getattr(objective, "evaluate", None) if evaluate is None else evaluate
        wanted = getattr(objective, "direction", None)
        if wanted is not None and wanted != self.direction:
            raise ValueError(
                f"The objective's metric is to {wanted}, but study {self.study_name!r} was "
                f"created with direction={self.direction!r}; create it with direction={wanted!r}."
            )
        if self.transfer.enabled and evaluate is None:
            raise ValueError(
                "Transfer needs an evaluate function to score donors on each split's own "
                "validation set: pass optimize(..., evaluate=fn) with fn(model, indices) -> "
                "float, or create the study with transfer=optuna_mto.transfer.NoTransfer()."
            )
        n_samples, targets = self._bind_dataset(dataset, targets)
        _, plan, running = work_left(self)
        if not plan and not running:
            _logger.info("Study %r has no split left to run.", self.study_name)
            self._warn_given_up()
            return
        mode = _execution.resolve_executor(executor, n_jobs, objective, evaluate, dataset)
        devices = _execution.assign_devices(n_jobs, devices)
        deadline = None if timeout is None else time.monotonic() + timeout
        job = Job(objective, evaluate, n_samples, targets, deadline)
        with StudyMonitor(self, progress=show_progress, dashboard=dashboard):
            if mode == "inline":
                Worker(self, job, devices[0]).run()
            elif mode == "thread":
                run_threads(self, job, devices)
            else:
                run_processes(self, job, dataset, devices, timeout)
        if deadline is None:
            self._warn_given_up()
        _ensemble.score_outputs_after_optimize(self, objective, evaluate)

    def _warn_given_up(self) -> None:
        """Warn about splits that failed more often than ``max_retries`` allows."""
        latest, plan, _ = work_left(self)
        summary = self.summary()
        claimable = {split for split, _ in plan}
        given_up = [
            split
            for split in range(self.n_splits)
            if split not in summary.ranking
            and split in latest
            and split not in claimable
            and summary.trial_numbers[split] < 0
        ]
        if given_up:
            _logger.warning(
                "Study %r: split(s) %s failed %d time(s) and are given up (max_retries=%d); "
                "see the trials' fail_reason, fix the cause, and rerun them with "
                "load_study(..., max_retries=<higher>).optimize(...).",
                self.study_name, given_up, self.config.max_retries + 1, self.config.max_retries,
            )  # fmt: skip

    # ------------------------------------------------------------------ results
    def summary(self) -> CrossSplitSummary:
        """Return the K x K cross-split table and ranking (print it for a table)."""
        return CrossSplitSummary.from_study(self.study, self.n_splits)

    def transfers(self) -> list[TransferEvent]:
        """Return every recorded transfer attempt of the splits' current runs, by step."""
        events = []
        for trial in latest_split_trials(self.study.get_trials(deepcopy=False)).values():
            for key, value in trial.user_attrs.items():
                if key.startswith(TRANSFER_ATTR_PREFIX):
                    events.append(TransferEvent.from_dict(value))
        return sorted(events, key=lambda e: (e.step, e.receiver))

    def _best_ref(self, split: int | None) -> tuple[int, CheckpointRef]:
        summary = self.summary()
        split = summary.best_split if split is None else split
        if split is None:
            raise ValueError(f"No split of study {self.study_name!r} has finished yet.")
        trials = latest_split_trials(self.study.get_trials(deepcopy=False))
        trial = trials.get(split)
        if trial is None or trial.state != TrialState.COMPLETE:
            raise ValueError(f"Split {split} of study {self.study_name!r} has not finished.")
        return split, CheckpointRef.from_dict(trial.system_attrs["mto:best"]["checkpoint"])

    def best_state_dict(
        self, split: int | None = None, map_location: str | torch.device = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Return the ``state_dict`` of the best-ranked split's best model (or of ``split``)."""
        _, ref = self._best_ref(split)
        return self._checkpoints.load(ref, map_location=map_location)["model"]

    def load_best_model(self, model: torch.nn.Module, split: int | None = None) -> torch.nn.Module:
        """Load the best-ranked model's weights into ``model`` and return it.

        ``model`` may be plain or wrapped (``torch.compile``, ``DataParallel``, DDP),
        whichever way the splits were trained.
        """
        device = next(iter(model.parameters()), torch.empty(0)).device
        unwrap_model(model).load_state_dict(self.best_state_dict(split, map_location=device))
        return model

    def export_best_model(self, path: str | os.PathLike[str], split: int | None = None) -> Path:
        """Write the best-ranked model's ``state_dict`` to ``path`` (atomically).

        Load it back with ``model.load_state_dict(torch.load(path, weights_only=True))``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.best_state_dict(split)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def ensemble(
        self, model_fn: Callable[[], torch.nn.Module], **kwargs: Any
    ) -> _ensemble.Ensemble:
        """Return one module averaging the finished splits' models (see ``_ensemble``).

        Args:
            model_fn: Builds one (plain) model of the splits' architecture.
            **kwargs: ``splits`` (default: all finished), ``combine`` (``"softmax"`` for
                classifiers, ``"mean"`` for regression), ``map_location``.
        """
        return _ensemble.build_ensemble(self, model_fn, **kwargs)

    def soup(
        self, model_fn: Callable[[], torch.nn.Module], method: str = "greedy", **kwargs: Any
    ) -> tuple[torch.nn.Module, list[int], float]:
        """Average the splits' weights: ``"uniform"`` or ``"greedy"`` soup (see ``_ensemble``).

        Refused (ValueError) when the members share no ancestry. Returns the model, the
        splits in it and its score (the greedy soup is scored on the selection rows).

        Args:
            model_fn: Builds one (plain) model of the splits' architecture.
            method: ``"uniform"`` (all finished splits) or ``"greedy"``.
            **kwargs: ``evaluate``, ``indices`` (default: the selection rows), ``splits``,
                ``check_ancestry``.
        """
        if "indices" not in kwargs:
            info = _system_attrs(self.study).get(DATASET_KEY)
            kwargs["indices"] = None if info is None else self.selection_indices(info["n_samples"])
        return _ensemble.build_soup(self, model_fn, method, **kwargs)

    def records(self) -> dict[int, Any]:
        """Return the latest published record of each split (the blackboard)."""
        return records_from_attrs(self.study._storage.get_study_system_attrs(self.study._study_id))


def create_study(
    *,
    study_name: str | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    n_splits: int = 4,
    direction: str = "maximize",
    validation_fraction: float = 0.2,
    seed: int = 0,
    splitter: str = "random",
    transfer: BaseTransferManager | None = None,
    artifact_store: str | ArtifactStore | None = None,
    max_retries: int = 2,
    selection_fraction: float = 0.0,
    heartbeat_interval: int | None = _DEFAULT_HEARTBEAT_S,
    grace_period: int | None = None,
    load_if_exists: bool = False,
) -> MTOStudy:
    """Create a study that trains one model on each of K splits of a dataset.

    Args:
        study_name: The study's name (generated when None).
        storage: Database URL or ``RDBStorage``; default: SQLite file
            ``storage/optuna_mto.db`` under the current directory (or
            ``$OPTUNA_MTO_HOME``).
        n_splits: K, the number of random (train, validation) splits, one trial each.
        direction: ``"maximize"`` (e.g. accuracy) or ``"minimize"`` (e.g. loss).
        validation_fraction: Share of the data in each split's validation set.
        seed: Seed of the splits and of every random transfer decision.
        splitter: ``"random"`` (each split drawn independently, as in the paper),
            ``"kfold"`` or ``"stratified"``.
        transfer: The transfer manager; default :class:`~optuna_mto.transfer.GreedyTransfer`.
        artifact_store: Where checkpoints live: ``"file"`` (default for SQLite: under
            ``storage/artifacts``), ``"database"`` (default otherwise: inside the study's
            own database, so many machines need only its URL) or any optuna
            ``ArtifactStore`` such as ``Boto3ArtifactStore``.
        max_retries: How often a failed or killed split is retried.
        selection_fraction: Share of the data held out from every split and used only
            to rank the final models (an honest estimate: random splits overlap, so
            every model has trained on most other splits' validation rows). 0 ranks
            by the mean cross-split validation score, as in the paper.
        heartbeat_interval: Seconds between liveness heartbeats of running splits
            (None disables them, and with them the detection of killed workers).
        grace_period: Seconds without heartbeat before a split counts as dead.
        load_if_exists: Open the study if it exists (its config must match).

    Returns:
        The study.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(
            f"direction must be 'maximize' or 'minimize', but got direction={direction!r}."
        )
    transfer = GreedyTransfer() if transfer is None else transfer
    if not isinstance(transfer, BaseTransferManager):
        raise ValueError(
            "transfer must be an optuna_mto.transfer.BaseTransferManager instance, "
            f"but got transfer={transfer!r}."
        )
    open_kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    opened = open_storage(storage or default_storage_url(), **open_kwargs)
    study_name = study_name or f"mto-{uuid.uuid4().hex[:8]}"
    config = StudyConfig(
        n_splits=n_splits,
        validation_fraction=validation_fraction,
        seed=seed,
        splitter=splitter,
        transfer=transfer.get_params(),
        artifact_store=_artifact_spec(artifact_store, storage_url(opened), study_name),
        max_retries=max_retries,
        selection_fraction=selection_fraction,
    )
    study = optuna.create_study(
        study_name=study_name, storage=opened, direction=direction, load_if_exists=load_if_exists
    )
    stored = _system_attrs(study).get(CONFIG_KEY)
    if stored is None:
        study._storage.set_study_system_attr(study._study_id, CONFIG_KEY, config.to_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["cross_split_mean"])
    else:
        if study.direction.name.lower() != direction:
            raise ValueError(
                f"Study {study_name!r} exists with direction={study.direction.name.lower()!r}, "
                f"but got direction={direction!r}."
            )
        config.check_same(StudyConfig.from_dict(stored), study_name)
    store = _open_artifact_store(config.artifact_store, opened, artifact_store)
    return MTOStudy(study, config, transfer, store, open_kwargs)


def load_study(
    *,
    study_name: str,
    storage: str | optuna.storages.BaseStorage | None = None,
    transfer: BaseTransferManager | None = None,
    artifact_store: ArtifactStore | None = None,
    max_retries: int | None = None,
    heartbeat_interval: int | None = _DEFAULT_HEARTBEAT_S,
    grace_period: int | None = None,
) -> MTOStudy:
    """Open an existing optuna-mto study, with the configuration it was created with.

    Args:
        study_name: The study's name.
        storage: Its database URL or storage (default: the embedded SQLite file).
        transfer: Only needed for a custom transfer manager class; must have the
            stored parameters.
        artifact_store: Only needed for a custom artifact store instance.
        max_retries: Override the stored retry budget for this process's workers
            (e.g. to rerun splits that were given up after fixing their cause).
        heartbeat_interval: As in :func:`create_study`.
        grace_period: As in :func:`create_study`.

    Raises:
        KeyError: If no such study exists (the message lists the studies there are).
        ValueError: If the study was not created by optuna-mto.
    """
    open_kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    opened = open_storage(storage or default_storage_url(), **open_kwargs)
    try:
        study = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
        raise KeyError(
            f"No study named {study_name!r} in this storage; studies there: {names}."
        ) from None
    stored = _system_attrs(study).get(CONFIG_KEY)
    if stored is None:
        raise ValueError(
            f"Study {study_name!r} was not created by optuna_mto.create_study (no config)."
        )
    config = StudyConfig.from_dict(stored)
    if max_retries is not None:
        config = dataclasses.replace(config, max_retries=max_retries)
    if transfer is None:
        transfer = from_params(config.transfer)
    elif transfer.get_params() != config.transfer:
        given = StudyConfig.from_dict({**stored, "transfer": transfer.get_params()})
        given.check_same(config, study_name)
    store = _open_artifact_store(config.artifact_store, opened, artifact_store)
    return MTOStudy(study, config, transfer, store, open_kwargs)
