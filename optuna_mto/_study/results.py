"""Reading a study's results: its summary, transfer events and the best split's checkpoint.

The functions take the opened study (:class:`~optuna_mto._workers.runtime.StudyRuntime`);
``MTOStudy``'s methods call them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
import torch
from optuna.trial import TrialState

from optuna_mto._errors import MTOError
from optuna_mto._step.events import TransferEvent
from optuna_mto._storage.schema import BEST_KEY, TRANSFER_ATTR_PREFIX
from optuna_mto._study.summary import CrossSplitSummary, latest_split_trials
from optuna_mto._workers.lifecycle import given_up_error, split_statuses, work_left
from optuna_mto.checkpoints import CheckpointRef

if TYPE_CHECKING:
    from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["best_checkpoint", "best_state_dict", "checkpoint_of", "raise_if_given_up",
           "refuse_incomplete", "study_summary", "transfer_events"]  # fmt: skip


def study_summary(rt: StudyRuntime) -> CrossSplitSummary:
    """The cross-split summary of the study, with how each split stands (see ``MTOStudy.summary``).

    It reads every trial and the split states from the storage: a caller that needs it
    more than once builds it once and passes it on.
    """
    statuses = split_statuses(rt, work_left(rt, take_over=False))
    return CrossSplitSummary.from_study(
        rt.study, rt.n_splits,
        states=[s.state for s in statuses],
        failures=[(s.errors, s.preemptions) for s in statuses],
    )  # fmt: skip


def raise_if_given_up(rt: StudyRuntime, after_run: bool = False) -> None:
    """Raise :class:`SplitsGivenUpError` naming the splits that used up a budget."""
    error = given_up_error(rt, split_statuses(rt), after_run=after_run)
    if error is not None:
        raise error


def best_state_dict(
    rt: StudyRuntime,
    split: int | None = None,
    map_location: str | torch.device = "cpu",
    *,
    allow_incomplete: bool = False,
    summary: CrossSplitSummary | None = None,
) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of the best-ranked split's best model, or of ``split``.

    ``summary``: the study's summary, if the caller has it (else it is built here).

    Raises:
        MTOError: If the study is incomplete and neither ``split`` nor
            ``allow_incomplete`` is given.
        ValueError: If no split (or not ``split``) has finished.
    """
    summary = summary or study_summary(rt)
    ref = best_checkpoint(rt.study, summary, split, allow_incomplete)
    return rt.store.load(ref, map_location=map_location)["model"]


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
