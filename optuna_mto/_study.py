"""create_study / load_study and MTOStudy, the study of K split trials."""

from __future__ import annotations

import dataclasses
import datetime
import multiprocessing
import os
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
from optuna_mto._board import Blackboard
from optuna_mto._claims import ClaimTable, utc_now
from optuna_mto._config import CONFIG_KEY, StudyConfig, check_objective_direction
from optuna_mto._errors import DatasetMismatchError, MTOError
from optuna_mto._events import TRANSFER_ATTR_PREFIX, TransferEvent
from optuna_mto._interrupts import stop_on_signals
from optuna_mto._lifecycle import given_up_error, split_statuses, work_left
from optuna_mto._logging import get_logger
from optuna_mto._main_guard import exit_if_worker_bootstrap
from optuna_mto._monitor import StudyMonitor
from optuna_mto._optuna_parts import OPTUNA_PARTS_KEY, describe, rebuild
from optuna_mto._plan import SplitPlan
from optuna_mto._retry import retry_transient
from optuna_mto._schema import BEST_KEY, DATASET_KEY, FORMAT_KEY, FORMAT_VERSION
from optuna_mto._splits import dataset_fingerprint, make_splitter
from optuna_mto._state import unwrap_model
from optuna_mto._storage import (
    default_home,
    default_storage_url,
    get_engine,
    mask_url,
    open_storage,
    storage_url,
)
from optuna_mto._summary import CrossSplitSummary, latest_split_trials
from optuna_mto._trial import EvaluateFn, SplitTrial
from optuna_mto._worker import Job, Worker, run_processes, run_threads
from optuna_mto.checkpoints import (
    AtomicFileSystemArtifactStore,
    CheckpointRef,
    CheckpointStore,
    DatabaseArtifactStore,
)
from optuna_mto.transfer import BaseTransferManager, GreedyTransfer, from_params

__all__ = ["MTOStudy", "create_study", "load_study"]

_logger = get_logger(__name__)
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
        study: The underlying :class:`optuna.Study`, one trial per split (parameter
            ``split``): every Optuna tool takes it, e.g.
            ``optuna.visualization.plot_intermediate_values(study.study)``,
            ``study.study.trials_dataframe()``, or optuna-dashboard on its storage.
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
        self._board = Blackboard(get_engine(study._storage), study._study_id)
        self._board.upgrade(study._storage)  # a study written by an older optuna-mto
        self._since: datetime.datetime | None = None  # in a worker process: parent's start

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
        callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
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
            callbacks: As in :meth:`optuna.Study.optimize`: each is called as
                ``callback(study, frozen_trial)`` (the :class:`optuna.Study` and the
                split's finished trial: COMPLETE, PRUNED or FAIL) in the worker that ran
                the split, right after it ends. A callback that also has a method
                ``on_report(trial, result)`` is called at every report of every split
                (with the :class:`SplitTrial` and its :class:`ReportResult`), e.g. to
                stream curves to a tracker (``optuna_mto.integration.MLflowCallback``,
                ``TensorBoardCallback``). Process workers get a pickled copy of each.

        A split whose code raises is retried in the same call while ``max_retries``
        allows; one whose worker is lost (a worker process killed, a heartbeat gone
        stale) is resumed, and a dead worker process replaced, while
        ``max_preemptions`` allows. Ctrl-C and SIGTERM stop every split at its next
        report without using up either budget.

        Raises:
            SplitsGivenUpError: When a split has used up a budget, naming each such
                split with its trial, attempt and error (also on later calls, until
                the split is rerun with a higher budget).
            KeyboardInterrupt: After Ctrl-C or SIGTERM, once every split has stopped;
                one line says how many splits will resume on the next run.
        """
        exit_if_worker_bootstrap()  # a worker re-running an unguarded script
        dataset = getattr(objective, "dataset", None) if dataset is None else dataset
        targets = getattr(objective, "targets", None) if targets is None else targets
        evaluate = getattr(objective, "evaluate", None) if evaluate is None else evaluate
        check_objective_direction(objective, self.direction, self.study_name)
        if self.transfer.enabled and evaluate is None:
            raise ValueError(
                "Transfer needs an evaluate function to score donors on each split's own "
                "validation set: pass optimize(..., evaluate=fn) with fn(model, indices) -> "
                "float, or create the study with transfer=optuna_mto.transfer.NoTransfer()."
            )
        n_samples, targets = self._bind_dataset(dataset, targets)
        left = work_left(self)
        if not left.plan and not left.running:
            _logger.info("Study %r has no split left to run.", self.study_name)
            self._raise_if_given_up()
            return
        callbacks = list(callbacks or [])
        for callback in callbacks:
            if not callable(callback):
                raise ValueError(
                    f"Each callback must be callable as callback(study, frozen_trial), but got "
                    f"{callback!r}."
                )
        if callable(getattr(objective, "check_inputs", None)):
            objective.check_inputs()  # e.g. one trial batch: shape errors once, no retries
        mode = _execution.resolve_executor(
            executor, n_jobs, objective, evaluate, dataset, *callbacks
        )
        devices = _execution.assign_devices(n_jobs, devices)
        deadline = None if timeout is None else time.monotonic() + timeout
        job = Job(
            objective, evaluate, n_samples, targets, deadline,
            since=self._since or utc_now(), callbacks=callbacks,
        )  # fmt: skip
        try:
            with StudyMonitor(self, progress=show_progress, dashboard=dashboard):
                if mode == "inline":  # Ctrl-C interrupts the split at once, where it is
                    Worker(self, job, devices[0]).run()
                else:
                    with stop_on_signals(job.stop):
                        if mode == "thread":
                            run_threads(self, job, devices)
                        else:
                            run_processes(self, job, dataset, devices, timeout)
                    if job.stop.is_set():
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if multiprocessing.parent_process() is None:  # a worker process's parent says it
                resume = [s.split for s in split_statuses(self) if s.state == "failed"]
                _logger.warning(
                    "interrupted: %d split(s) will resume on the next run %s", len(resume), resume
                )
            raise
        if deadline is None:
            self._raise_if_given_up(after_run=True)
        _ensemble.score_outputs_after_optimize(self, objective, evaluate)

    def _raise_if_given_up(self, after_run: bool = False) -> None:
        """Raise :class:`SplitsGivenUpError` naming the splits that used up a budget."""
        error = given_up_error(self, split_statuses(self), after_run=after_run)
        if error is not None:
            raise error

    # ------------------------------------------------------------------ results
    def summary(self) -> CrossSplitSummary:
        """Return the K x K cross-split table and ranking (print it for a table).

        Its ``states`` say how each split stands (complete, running, failed, given up,
        missing); ``complete`` is False and the table says so while any split is not.
        """
        left = work_left(self, take_over=False)
        statuses = split_statuses(self, left)
        return CrossSplitSummary.from_study(
            self.study, self.n_splits,
            states=[s.state for s in statuses],
            failures=[(s.errors, s.preemptions) for s in statuses],
        )  # fmt: skip

    def transfers(self) -> list[TransferEvent]:
        """Return every recorded transfer attempt of the splits' current runs, by step."""
        events = []
        for trial in latest_split_trials(self.study.get_trials(deepcopy=False)).values():
            for key, value in trial.user_attrs.items():
                if key.startswith(TRANSFER_ATTR_PREFIX):
                    events.append(TransferEvent.from_dict(value))
        return sorted(events, key=lambda e: (e.step, e.receiver))

    def _best_ref(self, split: int | None, allow_incomplete: bool) -> tuple[int, CheckpointRef]:
        summary = self.summary()
        if split is None and not summary.complete and not allow_incomplete and summary.ranking:
            raise MTOError(
                f"Study {self.study_name!r} is incomplete ({summary.incomplete_reason}): its "
                "best model is ranked on some splits only. Finish the study (run optimize "
                "again), or pass allow_incomplete=True to take the best finished split."
            )
        split = summary.best_split if split is None else split
        if split is None:
            raise ValueError(f"No split of study {self.study_name!r} has finished yet.")
        trials = latest_split_trials(self.study.get_trials(deepcopy=False))
        trial = trials.get(split)
        if trial is None or trial.state != TrialState.COMPLETE:
            raise ValueError(f"Split {split} of study {self.study_name!r} has not finished.")
        return split, CheckpointRef.from_dict(trial.system_attrs[BEST_KEY]["checkpoint"])

    def best_state_dict(
        self,
        split: int | None = None,
        map_location: str | torch.device = "cpu",
        *,
        allow_incomplete: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Return the ``state_dict`` of the best-ranked split's best model (or of ``split``).

        Raises:
            MTOError: If the study is incomplete (a split given up, failed, running or
                never run) and neither ``split`` nor ``allow_incomplete=True`` is given.
        """
        _, ref = self._best_ref(split, allow_incomplete)
        return self._checkpoints.load(ref, map_location=map_location)["model"]

    def load_best_model(
        self, model: torch.nn.Module, split: int | None = None, *, allow_incomplete: bool = False
    ) -> torch.nn.Module:
        """Load the best-ranked model's weights into ``model`` and return it.

        ``model`` may be plain or wrapped (``torch.compile``, ``DataParallel``, DDP),
        whichever way the splits were trained. Refuses an incomplete study unless
        ``allow_incomplete=True`` (see :meth:`best_state_dict`).
        """
        device = next(iter(model.parameters()), torch.empty(0)).device
        state = self.best_state_dict(split, map_location=device, allow_incomplete=allow_incomplete)
        unwrap_model(model).load_state_dict(state)
        return model

    def export_best_model(
        self,
        path: str | os.PathLike[str],
        split: int | None = None,
        *,
        allow_incomplete: bool = False,
        register: bool = True,
    ) -> Path:
        """Write the best-ranked model's ``state_dict`` to ``path`` (atomically).

        Load it back with ``model.load_state_dict(torch.load(path, weights_only=True))``.
        Refuses an incomplete study unless ``allow_incomplete=True``.
        With ``register`` the file is also uploaded as an Optuna artifact of the study
        (``optuna.artifacts.upload_artifact``), so optuna-dashboard lists it.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _ensemble.save_state_dict(
            self.best_state_dict(split, allow_incomplete=allow_incomplete), path
        )
        if register:  # finished trials are read-only: the export belongs to the study
            retry_transient(
                optuna.artifacts.upload_artifact,
                artifact_store=self._checkpoints.artifact_store, file_path=str(path),
                study_or_trial=self.study,
            )  # fmt: skip
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
        return self._board.read()


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
    max_preemptions: int = 20,
    selection_fraction: float = 0.0,
    heartbeat_interval: int | None = _DEFAULT_HEARTBEAT_S,
    grace_period: int | None = None,
    load_if_exists: bool = False,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
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
        max_retries: How often a split whose code raised an exception is retried.
        max_preemptions: How often a split whose worker was lost (SIGKILL, OOM, lost
            heartbeat, host gone) is resumed. Ctrl-C and SIGTERM count against neither.
        selection_fraction: Share of the data held out from every split and used only
            to rank the final models (an honest estimate: random splits overlap, so
            every model has trained on most other splits' validation rows). 0 ranks
            by the mean cross-split validation score, as in the paper.
        heartbeat_interval: Seconds between liveness heartbeats of running splits
            (None disables them, and with them the detection of killed workers).
        grace_period: Seconds without heartbeat before a split counts as dead.
        load_if_exists: Open the study if it exists (its config must match).
        sampler: As in :func:`optuna.create_study`: draws each split's hyperparameters
            (``trial.suggest_*``), i.e. the initial population; default
            :class:`~optuna.samplers.TPESampler`. A retried or resumed split keeps the
            values it was given. Worker processes started by ``optimize`` get a copy
            (reseeded in each process, as Optuna does for parallel workers); workers on
            other machines pass their own (see :func:`load_study`).
        pruner: As in :func:`optuna.create_study`: decides ``trial.should_prune()``;
            default :class:`~optuna.pruners.MedianPruner`. A split that raises
            :class:`optuna.TrialPruned` ends PRUNED: never retried, excluded from the
            ranking, never a donor afterwards.

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
        max_preemptions=max_preemptions,
    )
    study = optuna.create_study(
        study_name=study_name, storage=opened, direction=direction, load_if_exists=load_if_exists,
        sampler=rebuild("sampler", sampler, None, study_name),
        pruner=rebuild("pruner", pruner, None, study_name),
    )  # fmt: skip
    stored = _system_attrs(study).get(CONFIG_KEY)
    if stored is None:
        study._storage.set_study_system_attr(study._study_id, CONFIG_KEY, config.to_dict())
        study._storage.set_study_system_attr(study._study_id, FORMAT_KEY, FORMAT_VERSION)
        study._storage.set_study_system_attr(
            study._study_id, OPTUNA_PARTS_KEY, describe(sampler, pruner)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["cross_split_mean"])
    else:
        stored_direction = study.direction.name.lower()
        config.check_same(
            StudyConfig.from_dict(stored), study_name, direction=(stored_direction, direction)
        )
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
    max_preemptions: int | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
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
        max_preemptions: Override the stored budget for lost workers, likewise.
        heartbeat_interval: As in :func:`create_study`.
        grace_period: As in :func:`create_study`.
        sampler: The sampler this process's splits draw hyperparameters with (as in
            :func:`optuna.load_study`). Default: the class the study was created with,
            rebuilt with default arguments (a warning says so unless it is Optuna's
            default): pass the same object to keep a seed or other arguments.
        pruner: Likewise, the pruner.

    Raises:
        KeyError: If no such study exists (the message names the storage and lists
            the studies there are).
        ValueError: If the study was not created by optuna-mto, or the SQLite file
            does not exist (it is never created here).
    """
    open_kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    url = storage or default_storage_url(create=False)
    opened = open_storage(url, create=False, **open_kwargs)  # never a new, empty database
    try:
        study_id = opened.get_study_id_from_name(study_name)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
        raise KeyError(
            f"No study named {study_name!r} in storage {mask_url(storage_url(opened))}; "
            f"studies there: {names}."
        ) from None
    parts = opened.get_study_system_attrs(study_id).get(OPTUNA_PARTS_KEY)
    study = optuna.load_study(
        study_name=study_name, storage=opened,
        sampler=rebuild("sampler", sampler, parts, study_name),
        pruner=rebuild("pruner", pruner, parts, study_name),
    )  # fmt: skip
    stored = _system_attrs(study).get(CONFIG_KEY)
    if stored is None:
        raise ValueError(
            f"Study {study_name!r} was not created by optuna_mto.create_study (no config)."
        )
    config = StudyConfig.from_dict(stored)
    if max_retries is not None:
        config = dataclasses.replace(config, max_retries=max_retries)
    if max_preemptions is not None:
        config = dataclasses.replace(config, max_preemptions=max_preemptions)
    if transfer is None:
        transfer = from_params(config.transfer)
    elif transfer.get_params() != config.transfer:
        given = StudyConfig.from_dict({**stored, "transfer": transfer.get_params()})
        given.check_same(config, study_name)
    store = _open_artifact_store(config.artifact_store, opened, artifact_store)
    return MTOStudy(study, config, transfer, store, open_kwargs)
