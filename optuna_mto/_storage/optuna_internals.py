"""Every use of Optuna's private API, in one place.

optuna-mto needs a few things Optuna does not export: the storage and id behind a
``Study`` and a ``Trial`` (to write system attributes and create trials from a
template, as Optuna's own samplers and callbacks do), the RDB storage behind Optuna's
cache wrapper (to open optuna-mto's tables in the same database), the artifact store
protocol and artifact metadata, the ``experimental`` markers, and the module of Optuna's
SQL models (which the fork server preloads).

Checked against Optuna 5.0.0 (the oldest supported, ``scripts/ci_oldest.sh``) and the
version in ``requirements/dev.txt``. When a new Optuna moves one of these, this module
is the only one to change.
"""

from __future__ import annotations

import optuna
from optuna._experimental import experimental_class, experimental_func
from optuna.artifacts._protocol import ArtifactStore
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta
from optuna.storages import BaseStorage, RDBStorage

__all__ = [
    "ARTIFACTS_ATTR_PREFIX",
    "ArtifactMeta",
    "ArtifactStore",
    "experimental_class",
    "experimental_func",
    "import_rdb_models",
    "rdb_backend",
    "storage_of",
    "study_id_of",
    "trial_id_of",
]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes through (Optuna's cache included)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The study's id in its storage."""
    return study._study_id


def trial_id_of(trial: optuna.Trial) -> int:
    """The trial's id in its storage (not its number)."""
    return trial._trial_id


def rdb_backend(storage: BaseStorage) -> BaseStorage:
    """The storage under Optuna's cache wrapper (``_CachedStorage``), else ``storage``.

    Reads through the backend bypass the cache, which may hold a finished trial's
    old state; an :class:`~optuna.storages.RDBStorage` backend has the SQL engine.
    """
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, (RDBStorage, BaseStorage)) else storage


def import_rdb_models() -> None:
    """Import Optuna's SQL models and what they import, as opening an ``RDBStorage`` does."""
    import optuna.storages._rdb.models  # noqa: F401
