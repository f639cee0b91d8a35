"""Optuna artifact metadata for checkpoints, so optuna-dashboard lists and serves them.

``optuna.artifacts.upload_artifact`` copies a file into the artifact store under a
UUID and records an ``artifacts:<id>`` system attribute (an ``ArtifactMeta`` as JSON)
on the study or trial. A split's best checkpoint is already in the study's artifact
store; when the split finishes, :func:`promote_checkpoint` moves it to a UUID id (the
form optuna-dashboard's download route accepts) and records the same metadata, so the
kept best checkpoint *is* the Optuna artifact: no second copy.
``optuna.artifacts.get_all_artifact_meta`` and the dashboard's artifact panel list it,
and ``optuna.artifacts.download_artifact`` (or the dashboard) fetches it. The file is a
tensors-only checkpoint: ``torch.load(path, weights_only=True)["model"]`` is the
``state_dict``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import uuid

import optuna
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta

from optuna_mto._retry import retry_transient
from optuna_mto.checkpoints import CheckpointRef, CheckpointStore

__all__ = ["CHECKPOINT_MIMETYPE", "promote_checkpoint", "register_checkpoint"]

CHECKPOINT_MIMETYPE = "application/octet-stream"


def register_checkpoint(
    storage: optuna.storages.BaseStorage, trial_id: int, ref: CheckpointRef, filename: str
) -> str:
    """Record ``ref`` as an Optuna artifact of the trial; return its artifact id.

    Args:
        storage: The study's storage.
        trial_id: The trial (``trial._trial_id``).
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

    The bytes (and so the checksum) are unchanged; the old id is removed.
    """
    artifact_store = store.artifact_store
    new = CheckpointRef(artifact_id=str(uuid.uuid4()), sha256=ref.sha256, nbytes=ref.nbytes)

    def read() -> bytes:
        with artifact_store.open_reader(ref.artifact_id) as reader:
            return reader.read()

    data = retry_transient(read)
    # A fresh stream on every try: a failed try may have consumed part of the last one.
    retry_transient(lambda: artifact_store.write(new.artifact_id, io.BytesIO(data)))
    register_checkpoint(storage, trial_id, new, filename)
    return new
