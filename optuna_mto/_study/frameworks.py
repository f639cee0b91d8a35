"""Refuse, before any split starts, a strategy the objective's framework callback cannot serve.

A strategy may keep companion models that the objective trains between reports (its
``has_trainable_companions``). A framework callback (``MTOCallback`` for Lightning,
``MTOTrainerCallback`` for Hugging Face) lives inside a loop that trains one model, so it
refuses such a strategy when it is made, which happens inside every split. To refuse
once, before any worker starts, ``optimize`` looks for such a callback class (one with
``trains_companions = False``) in the objective's code: names it uses, names in its
closure, and functions of its own module it calls. It only finds what is there; a
callback made out of sight is still refused by its own check in the split.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Iterator
from typing import Any

__all__ = ["companion_refusal", "refuse_untrainable_companions"]

#: How many calls deep into the objective's own module the search follows.
_MAX_DEPTH = 3


def companion_refusal(name: str, strategy: str) -> str:
    """The message refusing ``strategy``'s trainable companions in framework callback ``name``."""
    return (
        f"{name} cannot train the companion models that {strategy} keeps beside each "
        "split's model (AdaptiveTransfer's explorer): the framework's loop trains one "
        "model only, and untrained companions would defeat the strategy (AMTO would be "
        "a lagged copy of a donor). Use GreedyTransfer, PBTTransfer, InterpolateTransfer "
        "or NoTransfer with this callback, or train trial.companions in your own loop "
        "with trial.train_companions (optuna_mto.SupervisedTrainer does)."
    )


def refuse_untrainable_companions(objective: Any, manager: Any) -> None:
    """Refuse a strategy with trainable companions when the objective uses a framework callback.

    Raises:
        ValueError: If ``manager`` has companion models to train and the objective's code
            names a callback class that cannot train them.
    """
    if not manager.has_trainable_companions:
        return
    found = _framework_callback(objective)
    if found is not None:
        raise ValueError(companion_refusal(found.__name__, type(manager).__name__))


def _framework_callback(objective: Any) -> type | None:
    target = objective
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.ismethod(target):
        target = target.__func__
    if inspect.isfunction(target):
        functions = [target]
    else:  # an objective object: every method of its class may build the Trainer
        functions = [
            value
            for klass in type(target).__mro__
            if klass is not object
            for value in vars(klass).values()
            if inspect.isfunction(value)
        ]
    seen: set[types.CodeType] = set()
    for function in functions:
        found = _search(function, _MAX_DEPTH, seen)
        if found is not None:
            return found
    return None


def _search(function: types.FunctionType, depth: int, seen: set[types.CodeType]) -> type | None:
    if function.__code__ in seen:
        return None
    seen.add(function.__code__)
    scope = dict(function.__globals__)
    cells = function.__closure__ or ()
    for name, cell in zip(function.__code__.co_freevars, cells, strict=True):
        try:
            scope[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    names = set(function.__code__.co_freevars)
    for code in _codes(function.__code__):
        names.update(code.co_names)
    modules = [v for v in (scope.get(n) for n in names) if inspect.ismodule(v)]
    for name in sorted(names):
        value = scope.get(name)
        # ``integration.MTOCallback``: the attribute of a module the code names, as loaded.
        for candidate in (value, *(vars(m).get(name) for m in modules)):
            if isinstance(candidate, type) and getattr(candidate, "trains_companions", 1) is False:
                return candidate
        if depth > 0 and inspect.isfunction(value) and value.__module__ == function.__module__:
            found = _search(value, depth - 1, seen)
            if found is not None:
                return found
    return None


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)
