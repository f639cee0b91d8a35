"""Tensors-only checkpoints with checksums, stored in atomic artifact stores."""

from optuna_mto.checkpoints._format import deserialize_state, serialize_state, sha256_hex
from optuna_mto.checkpoints._store import CheckpointRef, CheckpointStore
from optuna_mto.checkpoints._stores import AtomicFileSystemArtifactStore, DatabaseArtifactStore

__all__ = [
    "AtomicFileSystemArtifactStore",
    "CheckpointRef",
    "CheckpointStore",
    "DatabaseArtifactStore",
    "deserialize_state",
    "serialize_state",
    "sha256_hex",
]
