"""Optuna artifact metadata for checkpoints, so optuna-dashboard lists and serves them.

``optuna.artifacts.upload_artifact`` copies a file into the artifact store and records
an ``artifacts:<id>`` system attribute (an ``ArtifactMeta`` as JSON) on the study or
trial. A split's best checkpoint is already in the study's artifact store, so
:func:`register_checkpoint` records the same metadata for it without a second copy;
``optuna.artifacts.get_all_artifact_meta`` and optuna-dashboard's artifact panel then
list it, and ``optuna.artifacts.download_artifact`` (or the dashboard) fetches it. The
file is a tensors-only checkpoint: ``torch.load(path, weights_only=True)["model"]`` is
the ``state_dict``.
"""

from __future__ import annotations

import dataclasses
import json

import optuna
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta

from optuna_mto._retry import retry_transient
from optuna_mto.checkpoints import CheckpointRef

__all__ = ["CHECKPOINT_MIMETYPE", "register_checkpoint"]

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
