"""create_study and load_study: open a study of K split trials."""

from __future__ import annotations

import dataclasses
import uuid
import warnings

import optuna

from optuna_mto._storage.optuna_internals import ArtifactStore, storage_of, study_id_of
from optuna_mto._storage.rdb import default_storage_url, open_storage, storage_url
from optuna_mto._storage.schema import CONFIG_KEY, FORMAT_KEY, FORMAT_VERSION, OPTUNA_PARTS_KEY
from optuna_mto._study.config import StudyConfig
from optuna_mto._study.optuna_parts import describe, rebuild
from optuna_mto._study.study import MTOStudy
from optuna_mto._study.task import settle_task
from optuna_mto._workers.runtime import StudyRuntime, artifact_spec, checkpoint_store, open_runtime
from optuna_mto.transfer import BaseTransferManager, RescueTransfer

__all__ = ["create_study", "load_study"]

_DEFAULT_HEARTBEAT_S = 30


def create_study(
    *,
    study_name: str | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    n_splits: int = 4,
    direction: str = "maximize",
    task: str | None = None,
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

    Example:
        >>> import tempfile
        >>> import optuna_mto
        >>> storage = f"sqlite:///{tempfile.mkdtemp()}/study.db"
        >>> study = optuna_mto.create_study(study_name="demo", storage=storage, n_splits=4)
        >>> study.n_splits, type(study.transfer).__name__
        (4, 'RescueTransfer')

        Then ``study.optimize(optuna_mto.SupervisedTrainer(make_model, (x, y)))`` trains
        the four splits (see the Quickstart in README.md).

    Args:
        study_name: The study's name (generated when None).
        storage: Database URL or ``RDBStorage``; default: SQLite file
            ``storage/optuna_mto.db`` under the current directory (or
            ``$OPTUNA_MTO_HOME``).
        n_splits: K, the number of random (train, validation) splits, one trial each.
        direction: ``"maximize"`` (e.g. accuracy) or ``"minimize"`` (e.g. loss).
        task: ``"classification"`` or ``"regression"``: how the K models combine into an
            ensemble (mean of softmax probabilities, or mean of outputs) in
            ``study.ensemble``, ``export_ensemble`` and the scored outputs. Default: the
            task a :class:`~optuna_mto.SupervisedTrainer` tells when ``optimize`` runs
            (from its metric and loss); without either, an ensemble of models that return
            one value per row averages them, and a wider one asks for ``combine``.
        validation_fraction: Share of the data in each split's validation set.
        seed: Seed of the splits and of every random transfer decision.
        splitter: ``"random"`` (each split drawn independently, as in the paper),
            ``"kfold"`` or ``"stratified"``.
        transfer: The transfer manager; default :class:`~optuna_mto.transfer.RescueTransfer`
            (splits train independently unless one stalls or diverges clearly behind the
            others; a study created with an older default keeps its stored manager).
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
    transfer = _checked_transfer(direction, transfer)
    open_kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    opened = open_storage(storage or default_storage_url(), **open_kwargs)
    study_name = study_name or f"mto-{uuid.uuid4().hex[:8]}"
    config = StudyConfig(
        n_splits=n_splits,
        validation_fraction=validation_fraction,
        seed=seed,
        splitter=splitter,
        transfer=transfer.get_params(),
        artifact_store=artifact_spec(artifact_store, storage_url(opened), study_name),
        max_retries=max_retries,
        selection_fraction=selection_fraction,
        max_preemptions=max_preemptions,
        task=task,
    )
    study = optuna.create_study(
        study_name=study_name, storage=opened, direction=direction, load_if_exists=load_if_exists,
        sampler=rebuild("sampler", sampler, None, study_name),
        pruner=rebuild("pruner", pruner, None, study_name),
    )  # fmt: skip
    config = _stored_config(study, config, direction, sampler, pruner)
    store = checkpoint_store(config.artifact_store, opened, artifact_store)
    runtime = StudyRuntime(study, config, transfer, store, open_kwargs)
    if task is not None and config.task is None:  # a study created without a task
        settle_task(runtime, task, f"task={task!r}")
    return MTOStudy(runtime)


def _checked_transfer(direction: str, transfer: BaseTransferManager | None) -> BaseTransferManager:
    """Check ``direction``; return ``transfer``, by default a new RescueTransfer."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(
            f"direction must be 'maximize' or 'minimize', but got direction={direction!r}."
        )
    transfer = RescueTransfer() if transfer is None else transfer
    if not isinstance(transfer, BaseTransferManager):
        raise ValueError(
            "transfer must be an optuna_mto.transfer.BaseTransferManager instance, "
            f"but got transfer={transfer!r}."
        )
    return transfer


def _stored_config(
    study: optuna.Study,
    config: StudyConfig,
    direction: str,
    sampler: optuna.samplers.BaseSampler | None,
    pruner: optuna.pruners.BasePruner | None,
) -> StudyConfig:
    """Store the config of a new study; check an existing one's against it and return it.

    An existing study keeps its stored task (None for one created by an older version).
    """
    storage_, study_id = storage_of(study), study_id_of(study)
    stored = storage_.get_study_system_attrs(study_id).get(CONFIG_KEY)
    if stored is None:
        storage_.set_study_system_attr(study_id, CONFIG_KEY, config.to_dict())
        storage_.set_study_system_attr(study_id, FORMAT_KEY, FORMAT_VERSION)
        storage_.set_study_system_attr(study_id, OPTUNA_PARTS_KEY, describe(sampler, pruner))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["cross_split_mean"])
        return config
    stored_direction = study.direction.name.lower()
    stored_config = StudyConfig.from_dict(stored)
    config.check_same(stored_config, study.study_name, direction=(stored_direction, direction))
    return dataclasses.replace(config, task=stored_config.task)  # an older one: None


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
    runtime = open_runtime(
        study_name, storage or default_storage_url(create=False), open_kwargs=open_kwargs,
        transfer=transfer, artifact_store=artifact_store, max_retries=max_retries,
        max_preemptions=max_preemptions, sampler=sampler, pruner=pruner,
    )  # fmt: skip
    return MTOStudy(runtime)
