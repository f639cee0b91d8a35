"""Binding a study to its dataset: the number of rows, labels, and a fingerprint check."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from optuna_mto._data.plan import check_plan
from optuna_mto._data.splits import dataset_fingerprint
from optuna_mto._errors import DatasetMismatchError
from optuna_mto._storage.optuna_internals import storage_of, study_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import DATASET_KEY
from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["bind_dataset", "dataset_info"]


def bind_dataset(
    runtime: StudyRuntime, dataset: Any, targets: Any
) -> tuple[int, np.ndarray | None]:
    """Return the rows and labels of ``dataset``; the first call records its fingerprint.

    Checks the study's splits of it first (:func:`~optuna_mto._data.plan.check_plan`), so a
    dataset too small to split is refused before it is recorded.

    Raises:
        DatasetMismatchError: If the study was split on a different dataset.
        ValueError: If a split would have too few training or validation rows.
    """
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
    if runtime.config.splitter == "stratified" and targets is None:
        raise ValueError(
            "splitter='stratified' needs class labels: pass optimize(..., targets=y) or a "
            "dataset with a .targets attribute."
        )
    fingerprint = dataset_fingerprint(n_samples, targets, data)
    info = {"n_samples": n_samples, "fingerprint": fingerprint}
    storage, study_id = storage_of(runtime.study), study_id_of(runtime.study)
    stored = retry_transient(storage.get_study_system_attrs, study_id).get(DATASET_KEY)
    if stored is None or stored == info:
        check_plan(runtime.plan(n_samples, targets))
    if stored is None:
        retry_transient(storage.set_study_system_attr, study_id, DATASET_KEY, info)
    elif stored != info:
        raise DatasetMismatchError(
            f"Study {runtime.study_name!r} was split on a dataset of {stored['n_samples']} rows "
            f"(fingerprint {stored['fingerprint']}), but this worker passed "
            f"{n_samples} rows (fingerprint {fingerprint}). Every worker must pass the same "
            "dataset in the same order; use a new study_name for different data."
        )
    return n_samples, targets


def dataset_info(runtime: StudyRuntime) -> dict[str, Any] | None:
    """Return ``{"n_samples", "fingerprint"}`` of the study's dataset, if bound."""
    storage = storage_of(runtime.study)
    return retry_transient(storage.get_study_system_attrs, study_id_of(runtime.study)).get(
        DATASET_KEY
    )
