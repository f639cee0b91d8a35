"""The study configuration: validated once, stored in the study, read by every worker."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from optuna_mto._data.splits import check_splitter
from optuna_mto._errors import ConfigConflictError
from optuna_mto._storage.schema import CONFIG_KEY
from optuna_mto._validation import check_choice, check_int, check_number

__all__ = ["CONFIG_KEY", "TASKS", "StudyConfig", "check_objective_direction"]

#: Fields that change how failures are handled, not the results: a worker may differ.
_OPERATIONAL = ("max_retries", "max_preemptions")
#: Where checkpoints can live (``artifact_store["kind"]``).
_STORES = ("file", "database", "custom")
#: What the models predict (how an ensemble combines them); None: not said.
TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything that must be identical in every worker of one study.

    The config is stored as JSON in the study's system attributes when the study is
    created; workers that open the study later read it back, and opening a study with
    different values raises :class:`~optuna_mto.ConfigConflictError`.

    Attributes:
        n_splits: K, the number of (train, validation) splits and of trials.
        validation_fraction: Share of the data in each split's validation set
            (ignored by the ``"kfold"`` splitter, whose share is ``1 / n_splits``).
        seed: Seed of the splits and of every random decision of the transfer manager.
        splitter: ``"random"`` (the paper: each split drawn independently), ``"kfold"``
            or ``"stratified"``.
        transfer: Parameters of the transfer manager (``TransferManager.get_params()``).
        artifact_store: Where checkpoints live: ``{"kind": "file", "path": ...}`` or
            ``{"kind": "database"}`` (inside the study's own database).
        max_retries: How many times a split whose code raised an exception is retried
            as a new trial.
        max_preemptions: How many times a split whose worker was lost (SIGKILL, OOM,
            lost heartbeat, host gone) is resumed. Interruptions (Ctrl-C, SIGTERM) count
            against neither budget. Both budgets may differ between workers: they
            change no result.
        selection_fraction: Share of the data held out from every split and used only
            to rank the final models (0 ranks by mean cross-split validation score).
        task: ``"classification"`` or ``"regression"``: how the K models are combined
            into an ensemble (mean of softmax probabilities, or mean of outputs). None
            when not given (and in studies created before it existed).
    """

    n_splits: int = 4
    validation_fraction: float = 0.2
    seed: int = 0
    splitter: str = "random"
    transfer: dict[str, Any] = dataclasses.field(default_factory=dict)
    artifact_store: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_retries: int = 2
    selection_fraction: float = 0.0
    max_preemptions: int = 20
    task: str | None = None

    def __post_init__(self) -> None:
        check_splitter(
            self.splitter, self.n_splits, self.validation_fraction, self.seed, name="splitter"
        )
        check_choice("artifact_store['kind']", self.artifact_store.get("kind", "file"), _STORES)
        check_int("max_retries", self.max_retries, 0)
        check_int("max_preemptions", self.max_preemptions, 0)
        check_number("selection_fraction", self.selection_fraction, 0, 0.5, kind="float")
        if self.task is not None:
            check_choice("task", self.task, TASKS)
        try:
            json.dumps(self.to_dict())
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"The study config must be JSON-serialisable to be stored in the study: {err}. "
                "A custom transfer manager's get_params() must return plain values."
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable form stored in the study."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        """Rebuild a config from :meth:`to_dict` output, ignoring unknown future keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def check_same(self, stored: StudyConfig, study_name: str, **settings: tuple[Any, Any]) -> None:
        """Raise ConfigConflictError naming every field where ``self`` differs from ``stored``.

        Args:
            stored: The config the study was created with.
            study_name: Used in the message.
            **settings: Other stored settings of the study (such as its Optuna
                ``direction``), each as ``(stored, given)``, compared likewise.
        """
        # Compare in stored (JSON) form: tuples given here are lists once stored.
        mine = json.loads(json.dumps(self.to_dict()))
        theirs = json.loads(json.dumps(stored.to_dict()))
        for name, (stored_value, given) in settings.items():
            mine[name], theirs[name] = given, stored_value
        # A task left out on either side is no conflict (older studies have none).
        unsaid = () if None not in (mine.get("task"), theirs.get("task")) else ("task",)
        diffs = [
            f"{k}: stored {theirs.get(k)!r}, given {mine[k]!r}"
            for k in mine
            if mine[k] != theirs.get(k) and k not in (*_OPERATIONAL, *unsaid)
        ]
        if diffs:
            raise ConfigConflictError(
                f"Study {study_name!r} exists with a different configuration ("
                + "; ".join(diffs)
                + "). Pass the stored values, use optuna_mto.load_study() to reuse them, "
                "or choose a new study_name."
            )


def check_objective_direction(objective: Any, direction: str, study_name: str) -> None:
    """Raise ConfigConflictError if the objective's metric wants the other direction.

    Objects such as :class:`~optuna_mto.SupervisedTrainer` tell their metric's
    direction in a ``direction`` attribute; plain functions are not checked.
    """
    wanted = getattr(objective, "direction", None)
    if wanted is None or wanted == direction:
        return
    metric = getattr(objective, "metric", None)
    what = f"metric={metric!r}" if metric else "metric"
    raise ConfigConflictError(
        f"The objective's {what} is to {wanted}, but study {study_name!r} is stored with "
        f"direction={direction!r}. Create the study with direction={wanted!r} (e.g. "
        f"create_study(..., direction=trainer.direction)) under a new study_name, or remove "
        f"this one first with optuna.delete_study(study_name={study_name!r}, storage=...)."
    )
