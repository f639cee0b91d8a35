"""Reading a study's results: transfer events and the best split's checkpoint."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from optuna_mto._errors import MTOError
from optuna_mto._step.events import TransferEvent
from optuna_mto._storage.schema import BEST_KEY, TRANSFER_ATTR_PREFIX
from optuna_mto._study.summary import CrossSplitSummary, latest_split_trials
from optuna_mto.checkpoints import CheckpointRef

__all__ = ["best_checkpoint", "checkpoint_of", "refuse_incomplete", "transfer_events"]


def transfer_events(study: optuna.Study) -> list[TransferEvent]:
    """Every recorded transfer attempt of the splits' current runs, by step and receiver."""
    events = []
    for trial in latest_split_trials(study.get_trials(deepcopy=False)).values():
        for key, value in trial.user_attrs.items():
            if key.startswith(TRANSFER_ATTR_PREFIX):
                events.append(TransferEvent.from_dict(value))
    return sorted(events, key=lambda e: (e.step, e.receiver))


def refuse_incomplete(name: str, summary: CrossSplitSummary, why: str, instead: str) -> None:
    """Raise MTOError if the study has finished splits but is not complete.

    Args:
        name: The study's name.
        summary: Its summary.
        why: What an output of an incomplete study would get wrong.
        instead: The argument that takes it anyway.
    """
    if summary.ranking and not summary.complete:
        raise MTOError(
            f"Study {name!r} is incomplete ({summary.incomplete_reason}): {why}. Finish the "
            f"study (run optimize again), or pass {instead}."
        )


def best_checkpoint(
    study: optuna.Study, summary: CrossSplitSummary, split: int | None, allow_incomplete: bool
) -> CheckpointRef:
    """The kept best checkpoint of ``split``, or of the best-ranked split.

    Raises:
        MTOError: For the best-ranked split of an incomplete study, unless
            ``allow_incomplete``.
        ValueError: If no split (or not ``split``) has finished.
    """
    name = study.study_name
    if split is None and not allow_incomplete:
        refuse_incomplete(
            name, summary, "its best model is ranked on some splits only",
            "allow_incomplete=True to take the best finished split",
        )  # fmt: skip
    split = summary.best_split if split is None else split
    if split is None:
        raise ValueError(f"No split of study {name!r} has finished yet.")
    trial = latest_split_trials(study.get_trials(deepcopy=False)).get(split)
    if trial is None or trial.state != TrialState.COMPLETE:
        raise ValueError(f"Split {split} of study {name!r} has not finished.")
    return checkpoint_of(trial)


def checkpoint_of(trial: optuna.trial.FrozenTrial) -> CheckpointRef:
    """The kept best checkpoint of a finished split trial."""
    return CheckpointRef.from_dict(trial.system_attrs[BEST_KEY]["checkpoint"])
