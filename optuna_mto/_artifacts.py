"""Optuna artifact metadata for checkpoints, so optuna-dashboard lists and serves them.

``optuna.artifacts.upload_artifact`` copies a file into the artifact store under a
UUID and records an ``artifacts:<id>`` system attribute (an ``ArtifactMeta`` as JSON)
on the study or trial. A split's best checkpoint is already in the study's artifact
store; when the split finishes, :func:`promote_checkpoint` renames it to a UUID id (the
form optuna-dashboard's download route accepts; a file rename or one SQL update in
optuna-mto's stores, a copy in others) and records the same metadata, so the kept best
checkpoint *is* the Optuna artifact: no second copy.
``optuna.artifacts.get_all_artifact_meta`` and the dashboard's artifact panel list it,
and ``optuna.artifacts.download_artifact`` (or the dashboard) fetches it. The file is a
tensors-only checkpoint: ``torch.load(path, weights_only=True)["model"]`` is the
``state_dict``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import uuid
from typing import Any

import optuna

from optuna_mto._optuna_internals import ARTIFACTS_ATTR_PREFIX, ArtifactMeta
from optuna_mto._retry import retry_transient
from optuna_mto._schema import artifacts_table, chunks_table
from optuna_mto.checkpoints import (
    AtomicFileSystemArtifactStore,
    CheckpointRef,
    CheckpointStore,
    DatabaseArtifactStore,
)

__all__ = ["CHECKPOINT_MIMETYPE", "promote_checkpoint", "register_checkpoint"]

CHECKPOINT_MIMETYPE = "application/octet-stream"


def register_checkpoint(
    storage: optuna.storages.BaseStorage, trial_id: int, ref: CheckpointRef, filename: str
) -> str:
    """Record ``ref`` as an Optuna artifact of the trial; return its artifact id.

    Args:
        storage: The study's storage.
        trial_id: The trial (not its number).
        ref: A checkpoint in the study's artifact store.
        filename: The name the dashboard shows and downloads it as.
    """
    meta = ArtifactMeta(
        artifact_id=ref.artifact_id, filename=filename, mimetype=CHECKPOINT_MIMETYPE,
        encoding=None,
    )  # fmt: skip
    key = ARTIFACTS_ATTR_PREFIX + ref.artifact_id
    retry_transient(
        storage.set_trial_system_attr, trial_id, key, json.dumps(dataclasses.asdict(meta))
    )
    return ref.artifact_id


def promote_checkpoint(
    store: CheckpointStore,
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    ref: CheckpointRef,
    filename: str,
) -> CheckpointRef:
    """Move a checkpoint to a UUID artifact id and register it; return the new reference.

    The bytes (and so the checksum) are unchanged. In optuna-mto's stores the old id is
    gone afterwards; elsewhere the caller removes it.
    """
    artifact_store = store.artifact_store
    new = CheckpointRef(artifact_id=str(uuid.uuid4()), sha256=ref.sha256, nbytes=ref.nbytes)
    if not _rename(artifact_store, ref.artifact_id, new.artifact_id):
        _copy(artifact_store, ref.artifact_id, new.artifact_id)
    register_checkpoint(storage, trial_id, new, filename)
    return new


def _rename(artifact_store: Any, old: str, new: str) -> bool:
    """Rename in place in optuna-mto's own stores (O(1)); False for any other store."""
    if isinstance(artifact_store, AtomicFileSystemArtifactStore):
        path = artifact_store._get_filepath(old)
        retry_transient(os.replace, path, artifact_store._get_filepath(new))
        return True
    if isinstance(artifact_store, DatabaseArtifactStore):
        a, c = artifacts_table, chunks_table

        def update() -> None:
            with artifact_store.engine.begin() as conn:
                conn.execute(c.update().where(c.c.artifact_id == old).values(artifact_id=new))
                conn.execute(a.update().where(a.c.artifact_id == old).values(artifact_id=new))

        retry_transient(update)
        return True
    return False


def _copy(artifact_store: Any, old: str, new: str) -> None:
    def read() -> bytes:
        with artifact_store.open_reader(old) as reader:
            return reader.read()

    data = retry_transient(read)
    # A fresh stream on every try: a failed try may have consumed part of the last one.
    retry_transient(lambda: artifact_store.write(new, io.BytesIO(data)))
