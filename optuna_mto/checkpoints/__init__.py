"""Tensors-only checkpoints with checksums, stored in atomic artifact stores.

The serialisation helpers (``serialize_state``, ``deserialize_state``, ``sha256_hex``)
are internal; they live in :mod:`optuna_mto.checkpoints._format`.
"""

from optuna_mto.checkpoints._checkpoint_store import CheckpointRef, CheckpointStore
from optuna_mto.checkpoints._database_store import DatabaseArtifactStore
from optuna_mto.checkpoints._file_store import AtomicFileSystemArtifactStore

__all__ = [
    "AtomicFileSystemArtifactStore",
    "CheckpointRef",
    "CheckpointStore",
    "DatabaseArtifactStore",
]
