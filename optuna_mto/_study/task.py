"""What a study's models predict (classes or numbers), and so how their outputs combine.

A study's *task* is ``"classification"`` or ``"regression"``. It decides how the K
models are combined into one ensemble: the mean of their softmax probabilities for
classifiers, the mean of their outputs for regression. It comes from, in this order:
``create_study(task=...)`` (stored in the config), then what an objective says when
``optimize`` runs (:attr:`SupervisedTrainer.task <optuna_mto.SupervisedTrainer.task>`,
from its metric and loss; stored in the study). A study that has neither gets the
``"auto"`` rule: members that return one value per row are averaged (the softmax of one
value is always 1), wider outputs ask which task it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optuna_mto._errors import ConfigConflictError
from optuna_mto._storage.optuna_internals import storage_of, study_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import TASK_KEY
from optuna_mto._study.config import TASKS
from optuna_mto._validation import check_choice

if TYPE_CHECKING:
    from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["TASKS", "check_objective_task", "combine_for", "settle_task", "study_task"]

#: The ensemble's combine rule for each task (None: not known).
_COMBINE = {"classification": "softmax", "regression": "mean", None: "auto"}


def combine_for(task: str | None) -> str:
    """Return the :class:`~optuna_mto.Ensemble` combine rule of ``task``.

    ``"softmax"`` for classification, ``"mean"`` for regression, ``"auto"`` when the
    task is not known (mean for one output per row, an error asking for it otherwise).
    """
    return _COMBINE[task]


def study_task(runtime: StudyRuntime) -> str | None:
    """The study's task: its config's, else the one learnt from its objective, else None."""
    if runtime.config.task is not None:
        return runtime.config.task
    attrs = retry_transient(storage_of(runtime.study).get_study_system_attrs,
                            study_id_of(runtime.study))  # fmt: skip
    return attrs.get(TASK_KEY)


def settle_task(runtime: StudyRuntime, task: str, source: str) -> None:
    """Store ``task`` for a study that has none; refuse one that has another.

    Args:
        runtime: The study.
        task: ``"classification"`` or ``"regression"``.
        source: Where ``task`` comes from, for the message (e.g. ``"task='regression'"``).

    Raises:
        ConfigConflictError: If the study already has a different task.
    """
    check_choice("task", task, TASKS)
    stored = study_task(runtime)
    if stored is None:
        retry_transient(storage_of(runtime.study).set_study_system_attr,
                        study_id_of(runtime.study), TASK_KEY, task)  # fmt: skip
    elif stored != task:
        name = runtime.study_name
        raise ConfigConflictError(
            f"{source} means task={task!r}, but study {name!r} is stored with "
            f"task={stored!r}. Use a {stored} objective (or create_study(..., task={stored!r})) "
            f"for this study, or create the study under a new study_name with task={task!r}."
        )


def check_objective_task(objective: Any, runtime: StudyRuntime) -> None:
    """Learn the study's task from an objective that tells it (``objective.task``).

    Objects such as :class:`~optuna_mto.SupervisedTrainer` tell their task in a
    ``task`` attribute (None when their metric and loss do not say); plain functions
    are not asked.

    Raises:
        ConfigConflictError: If the study is stored with another task.
    """
    task = getattr(objective, "task", None)
    if task is None:
        return
    metric, loss = getattr(objective, "metric", None), getattr(objective, "loss_fn", None)
    what = f"metric={metric!r}" if metric else "objective"
    if loss is not None:
        what += f", loss_fn={type(loss).__name__}()"
    settle_task(runtime, task, f"The objective's {what}")
