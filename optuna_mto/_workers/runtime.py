"""The parts of an opened study that workers use, and how to open them from a spec.

:class:`StudyRuntime` is what :class:`~optuna_mto.MTOStudy` wraps and what a
:class:`~optuna_mto._workers.worker.Worker` runs on. A worker process gets a
:class:`RuntimeSpec` (plain, picklable values) and opens its own runtime from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optuna

from optuna_mto._data.plan import SplitPlan
from optuna_mto._data.splits import make_splitter
from optuna_mto._step.board import Blackboard
from optuna_mto._storage.optuna_internals import ArtifactStore, storage_of, study_id_of
from optuna_mto._storage.rdb import default_home, get_engine, mask_url, open_storage, storage_url
from optuna_mto._storage.schema import ARTIFACT_ID_PREFIX, CONFIG_KEY, OPTUNA_PARTS_KEY
from optuna_mto._study.config import StudyConfig
from optuna_mto._study.optuna_parts import rebuild
from optuna_mto._workers.claims import ClaimTable
from optuna_mto.checkpoints import (
    AtomicFileSystemArtifactStore,
    CheckpointStore,
    DatabaseArtifactStore,
)
from optuna_mto.transfer import BaseTransferManager, from_params

__all__ = ["RuntimeSpec", "StudyRuntime", "artifact_spec", "open_runtime"]


@dataclasses.dataclass
class StudyRuntime:
    """An opened study: Optuna's study, the config, and optuna-mto's stores.

    Attributes:
        study: The :class:`optuna.Study` (one trial per split attempt).
        config: The stored configuration (budgets possibly overridden by this process).
        transfer: The transfer manager.
        store: Where checkpoints live.
        open_kwargs: ``heartbeat_interval`` and ``grace_period`` the storage was opened with.
    """

    study: optuna.Study
    config: StudyConfig
    transfer: BaseTransferManager
    store: CheckpointStore
    open_kwargs: dict[str, Any]
    claims: ClaimTable = dataclasses.field(init=False)
    board: Blackboard = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        engine = get_engine(storage_of(self.study))
        self.claims = ClaimTable(engine, study_id_of(self.study))
        self.board = Blackboard(engine, study_id_of(self.study))
        self.board.upgrade(storage_of(self.study))  # a study written by an older optuna-mto

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

    def plan(self, n_samples: int, targets: np.ndarray | None) -> SplitPlan:
        """Return the split plan of a dataset of ``n_samples`` rows."""
        c = self.config
        splitter = make_splitter(c.splitter, c.n_splits, c.validation_fraction, c.seed)
        return SplitPlan(splitter, n_samples, targets, c.selection_fraction)


@dataclasses.dataclass
class RuntimeSpec:
    """What a worker process needs to open the study it works on (picklable).

    Attributes:
        study_name: The study's name.
        storage: Its database URL.
        open_kwargs: Heartbeat settings.
        transfer: The transfer manager (a copy).
        artifact_store: A custom artifact store instance, else None.
        max_retries: The budget the parent ran with.
        max_preemptions: Likewise.
        sampler: The parent's sampler (reseeded in the worker).
        pruner: The parent's pruner.
    """

    study_name: str
    storage: str
    open_kwargs: dict[str, Any]
    transfer: BaseTransferManager
    artifact_store: ArtifactStore | None
    max_retries: int
    max_preemptions: int
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner

    @classmethod
    def of(cls, runtime: StudyRuntime) -> RuntimeSpec:
        """Describe ``runtime`` for a worker process."""
        custom = runtime.config.artifact_store["kind"] == "custom"
        return cls(
            runtime.study_name, storage_url(storage_of(runtime.study)), runtime.open_kwargs,
            runtime.transfer, runtime.store.artifact_store if custom else None,
            runtime.config.max_retries, runtime.config.max_preemptions,
            runtime.study.sampler, runtime.study.pruner,
        )  # fmt: skip


def artifact_spec(
    artifact_store: str | ArtifactStore | None, url: str, study_name: str
) -> dict[str, Any]:
    """Return the stored description of where a new study keeps its checkpoints."""
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


def checkpoint_store(
    spec: dict[str, Any], storage: optuna.storages.BaseStorage, given: Any
) -> CheckpointStore:
    """Open the checkpoint store a study's config describes (``given``: a custom one)."""
    if spec["kind"] == "file":
        store: Any = AtomicFileSystemArtifactStore(spec["path"])
    elif spec["kind"] == "database":
        store = DatabaseArtifactStore(get_engine(storage))
    elif given is None or isinstance(given, str):
        raise ValueError(
            f"The study keeps checkpoints in a custom artifact store ({spec['class']}); pass "
            "the same store instance as artifact_store=... when loading it."
        )
    else:
        store = given
    return CheckpointStore(store, prefix=ARTIFACT_ID_PREFIX)


def open_runtime(
    study_name: str,
    storage: str | optuna.storages.BaseStorage,
    *,
    open_kwargs: dict[str, Any],
    transfer: BaseTransferManager | None = None,
    artifact_store: ArtifactStore | None = None,
    max_retries: int | None = None,
    max_preemptions: int | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> StudyRuntime:
    """Open an existing optuna-mto study (see :func:`optuna_mto.load_study`)."""
    opened = open_storage(storage, create=False, **open_kwargs)  # never a new, empty database
    try:
        study_id = opened.get_study_id_from_name(study_name)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
        raise KeyError(
            f"No study named {study_name!r} in storage {mask_url(storage_url(opened))}; "
            f"studies there: {names}."
        ) from None
    attrs = opened.get_study_system_attrs(study_id)
    parts = attrs.get(OPTUNA_PARTS_KEY)
    study = optuna.load_study(
        study_name=study_name, storage=opened,
        sampler=rebuild("sampler", sampler, parts, study_name),
        pruner=rebuild("pruner", pruner, parts, study_name),
    )  # fmt: skip
    stored = attrs.get(CONFIG_KEY)
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
    store = checkpoint_store(config.artifact_store, opened, artifact_store)
    return StudyRuntime(study, config, transfer, store, open_kwargs)
