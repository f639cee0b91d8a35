"""True hyperparameters of a split: what it was sampled, what it runs with now, and why.

A split's hyperparameters come from ``trial.suggest_*`` (the study's sampler draws them:
the initial population). Optuna's trial params keep those sampled values for good: a
retried or resumed split gets the same params (copied into its new trial, never drawn
again), so samplers learn from what each split was given. What a split *runs with* can
change during training:

- an accepted transfer that brings the donor's optimizer state (a copy of the donor, or
  a kept model that trained with it) brings the donor's hyperparameters with it: the
  split now runs with the donor's values, and the record says whose they are;
- the strategy's ``explore_hparams`` hook may perturb or resample them.

The current values are the user attribute ``current_hparams`` (with ``hparams_source``:
the split and trial whose sampled values they descend from, and whether they were
explored since), every change is the user attribute ``hparams:<step>``, and the
checkpoint carries them, so a resumed split continues with the values it had.
Hyperparameters that are keys of the optimizer's param groups (``lr``, ``momentum``,
``weight_decay``, ...) are kept in step with the optimizer; for the others, register a
hook with :meth:`SplitTrial.on_hparams_change` that applies new values.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import (
    CHECKPOINT_HPARAMS,
    CHECKPOINT_OPTIMIZER,
    HPARAMS_ATTR_PREFIX,
    SPLIT_PARAM,
    step_key,
)
from optuna_mto._storage.schema import CURRENT_HPARAMS_ATTR as CURRENT_ATTR
from optuna_mto._storage.schema import HPARAMS_SOURCE_ATTR as SOURCE_ATTR
from optuna_mto._storage.schema import HPARAMS_SOURCE_FIELD as SOURCE_FIELD
from optuna_mto._storage.schema import HPARAMS_VALUES_FIELD as VALUES_FIELD

__all__ = [
    "CURRENT_ATTR",
    "HPARAMS_ATTR_PREFIX",
    "SOURCE_ATTR",
    "HyperparamState",
    "call_with_trial",
    "retried_params",
    "sync_optimizer_state",
]

#: ``hook(values)``: applies new hyperparameter values to the user's training objects.
HparamsHook = Callable[[dict[str, Any]], None]


def retried_params(
    failed: FrozenTrial,
) -> tuple[dict[str, Any], dict[str, BaseDistribution], dict[str, Any]]:
    """Return the params, distributions and hparam user attrs a retry of ``failed`` keeps.

    The new trial starts with them, so ``suggest_*`` returns the original values
    instead of asking the sampler again.
    """
    params = {k: v for k, v in failed.params.items() if k != SPLIT_PARAM}
    dists = {k: v for k, v in failed.distributions.items() if k != SPLIT_PARAM}
    attrs = {k: failed.user_attrs[k] for k in (CURRENT_ATTR, SOURCE_ATTR) if k in failed.user_attrs}
    return params, dists, attrs


def sync_optimizer_state(
    optimizer_state: dict[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """Return ``optimizer_state`` with every param-group key named in ``values`` set to it."""
    groups = optimizer_state.get("param_groups")
    if not groups or not any(name in group for name in values for group in groups):
        return optimizer_state
    state = copy.copy(optimizer_state)
    state["param_groups"] = [
        {**group, **{n: v for n, v in values.items() if n in group}} for group in groups
    ]
    return state


class HyperparamState:
    """The current hyperparameters of one split trial (see the module docstring).

    Args:
        trial: The split's Optuna trial.
        split: Its split index.
        initial: Values carried over from an earlier attempt of the split (the
            ``current_hparams`` user attribute copied into the new trial), if any.
        source: Their ``hparams_source``, if any.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        split: int,
        initial: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> None:
        self._trial = trial
        self._split = split
        self.values: dict[str, Any] = dict(initial or {})
        self.distributions: dict[str, BaseDistribution] = {}
        self.source: dict[str, Any] = dict(
            source or {"split": split, "trial": trial.number, "step": None, "explored": False}
        )
        self._hooks: list[HparamsHook] = []
        self._pending = False

    # ------------------------------------------------------------------ sampling
    def suggested(self, name: str, sampled: Any, distribution: BaseDistribution) -> Any:
        """Record a suggested value; return the value the split runs with now.

        A fresh split runs with what the sampler drew; a resumed split with the value
        it had when it stopped (possibly a donor's, or explored).
        """
        self.distributions[name] = distribution
        if name in self.values:
            return self.values[name]
        self.values[name] = sampled
        self._write_current()
        return sampled

    def add_hook(self, hook: HparamsHook) -> None:
        """Call ``hook(values)`` whenever the values change (transfer, explore, restore)."""
        if not callable(hook):
            raise ValueError(f"hook must be callable as hook(values), but got {hook!r}.")
        self._hooks.append(hook)

    # ------------------------------------------------------------------ checkpoints
    def to_checkpoint(self) -> dict[str, Any]:
        """Return what the checkpoint stores."""
        return {VALUES_FIELD: dict(self.values), SOURCE_FIELD: dict(self.source)}

    def restore(self, stored: Mapping[str, Any] | None, step: int) -> None:
        """Take the values of a checkpoint the split resumes from."""
        if not stored:
            return
        values, source = dict(stored.get(VALUES_FIELD, {})), dict(stored.get(SOURCE_FIELD, {}))
        if values == self.values and source == self.source:
            return
        self._set(values, source, step, {"restored": True})

    # ------------------------------------------------------------------ transfers
    def after_transfer(
        self,
        chosen: dict[str, Any],
        donor_state: Mapping[str, Any],
        donor: tuple[int, int],
        manager: Any,
        context: Any,
        changes: dict[str, Any],
        taken: Mapping[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Adopt the donor's values if the kept candidate took its optimizer; then explore.

        Args:
            chosen: The accepted candidate state.
            donor_state: The donor's checkpoint content.
            donor: ``(split, trial number)`` of the donor.
            manager: The transfer manager (its ``explore_hparams`` hook may change values).
            context: The transfer context.
            changes: What ``manager.explore`` changed in the optimizer already.
            taken: The candidate as the manager yielded it (before ``explore``).

        Returns:
            The candidate to apply (its optimizer's param groups in step with the
            values) and every change, ``name: [old, new]``.
        """
        theirs_optimizer = donor_state.get(CHECKPOINT_OPTIMIZER)
        adopted = CHECKPOINT_OPTIMIZER in taken and taken[CHECKPOINT_OPTIMIZER] is theirs_optimizer
        values, source = dict(self.values), dict(self.source)
        if adopted and donor_state.get(CHECKPOINT_HPARAMS):
            theirs = donor_state[CHECKPOINT_HPARAMS]
            values.update({k: v for k, v in theirs.get(VALUES_FIELD, {}).items() if k in values})
            source = {**theirs.get(SOURCE_FIELD, {}), "via": donor[0], "step": context.step}
            source.setdefault("split", donor[0])
            source.setdefault("trial", donor[1])
        explored: dict[str, Any] = {}
        if values:
            values, explored = manager.explore_hparams(values, self.distributions, context)
            if explored:
                source = {**source, "explored": True, "step": context.step}
        if CHECKPOINT_OPTIMIZER in chosen and explored:
            synced = sync_optimizer_state(chosen[CHECKPOINT_OPTIMIZER], values)
            chosen = {**chosen, CHECKPOINT_OPTIMIZER: synced}
        all_changes = {**changes, **explored}
        if values != self.values or source != self.source:
            self._set(values, source, context.step, {"changes": all_changes}, notify=False)
        return chosen, all_changes

    def adopt(self, stored: Mapping[str, Any] | None, via: int, step: int, **note: Any) -> None:
        """Take the values a donor's model was trained with, once that model is kept.

        For a strategy that keeps a model it trained from a donor's checkpoint (a
        companion) instead of the donor's state itself. Only names this split suggested
        are taken.

        Args:
            stored: The donor checkpoint's hyperparameters (its ``hparams`` entry).
            via: The donor split.
            step: The report step.
            note: Recorded in the ``hparams:<step>`` user attribute, ``name: value``.
        """
        if not stored:
            return
        values = dict(self.values)
        values.update({k: v for k, v in stored.get(VALUES_FIELD, {}).items() if k in values})
        origin = {**stored.get(SOURCE_FIELD, {}), "via": via, "step": step}
        if values != self.values or origin != self.source:
            self._set(values, origin, step, note)

    def notify(self) -> None:
        """Call the hooks with the current values if they changed since the last call."""
        if not self._pending:
            return
        self._pending = False
        for hook in self._hooks:
            hook(dict(self.values))

    # ------------------------------------------------------------------ records
    def _set(
        self,
        values: dict[str, Any],
        source: dict[str, Any],
        step: int,
        extra: dict[str, Any],
        notify: bool = True,
    ) -> None:
        old = self.values
        self.values, self.source = values, source
        key = step_key(HPARAMS_ATTR_PREFIX, step)
        record = {"step": step, "values": values, "source": source, **extra}
        record.setdefault("changes", {k: [old.get(k), v] for k, v in values.items()
                                      if old.get(k) != v})  # fmt: skip
        retry_transient(self._trial.set_user_attr, key, record)
        self._write_current()
        self._pending = True
        if notify:
            self.notify()

    def _write_current(self) -> None:
        retry_transient(self._trial.set_user_attr, CURRENT_ATTR, dict(self.values))
        retry_transient(self._trial.set_user_attr, SOURCE_ATTR, dict(self.source))


def takes_trial(fn: Callable[..., Any], n_args: int) -> bool:
    """Return True if ``fn`` wants the trial after its ``n_args`` usual arguments.

    That is when it has a parameter named ``trial``, or more than ``n_args`` positional
    parameters without defaults (``lambda params, trial: ...``). ``torch.optim.Adam``
    (``params, lr=1e-3, ...``) does not: its extra parameters have defaults.
    """
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    return any(p.name == "trial" for p in parameters) or len(required) > n_args


def call_with_trial(fn: Callable[..., Any], args: tuple[Any, ...], trial: Any) -> Any:
    """Call ``fn(*args)`` with the trial added when it takes it (:func:`takes_trial`).

    A parameter named ``trial`` gets it by keyword, else it is the next positional one.
    """
    if trial is None or not takes_trial(fn, len(args)):
        return fn(*args)
    if "trial" in inspect.signature(fn).parameters:
        return fn(*args, trial=trial)
    return fn(*args, trial)
