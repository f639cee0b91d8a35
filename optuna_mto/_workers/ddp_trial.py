"""The split trial on each rank of a process group (see :mod:`optuna_mto._workers.distributed`).

Rank 0's :class:`LeaderTrial` wraps the real :class:`~optuna_mto.SplitTrial`: every call
whose answer comes from the study (``restore``, ``report``, ``suggest_*``,
``should_prune``, ``evaluate``, ``split_indices``) runs there and its answer is broadcast;
a :class:`FollowerTrial` on every other rank receives the same answers at the same call,
and the state to load when rank 0's model changed. An error at such a call is broadcast
too, and the followers leave the split with rank 0.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from optuna_mto._step.state import apply_state, capture_state, unwrap_model
from optuna_mto._workers.ddp_group import Group, SplitAborted, expect_kind
from optuna_mto.transfer import Companion, Explorer, train_companions

__all__ = ["FollowerTrial", "LeaderTrial"]

#: What a follower's trial knows of the split beyond its rows (refreshed at each call).
_VIEW = ("best_value", "lineage", "current_params", "params_source", "relations",
         "resumed_at", "n_reports", "params")  # fmt: skip


def _cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it copied to the CPU (for a gloo broadcast)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _explorer_message(explorer: Explorer | None) -> dict[str, Any] | None:
    if explorer is None:
        return None
    state = capture_state(explorer.model, explorer.optimizer, explorer.scheduler, clone=False)
    meta = (explorer.source, explorer.source_trial, explorer.source_step,
            list(explorer.lineage), explorer.hparams)  # fmt: skip
    return {"state": _cpu(state), "meta": meta}


class LeaderTrial:
    """Rank 0's split trial: the real one, with its answers broadcast to the followers."""

    def __init__(self, group: Group, trial: Any) -> None:
        self._group = group
        self._trial = trial
        self._explorer: Explorer | None = None
        #: True once an error at a call was broadcast: the followers left the split.
        self.aborted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def start_message(self) -> dict[str, Any]:
        """What a follower's trial starts from."""
        t = self._trial
        return {"kind": "start", "split": t.split, "attempt": t.attempt, "number": t.number,
                "n_splits": t.n_splits, "direction": t.direction, "train": t.train_indices,
                "valid": t.valid_indices, "view": self._view()}  # fmt: skip

    def _view(self) -> dict[str, Any]:
        return {name: getattr(self._trial, name) for name in _VIEW}

    def _answer(
        self, kind: str, call: Callable[[], Any], extra: Callable[[Any], dict] | None = None
    ) -> Any:
        """Run ``call`` here and broadcast its answer (or its error) to the followers."""
        try:
            answer = call()
            message = {"kind": kind, "value": answer, **(extra(answer) if extra else {})}
            message["view"] = self._view()
        except BaseException as err:
            self._group.send({"kind": "abort", "reason": f"{type(err).__name__}: {err}"})
            self.aborted = True
            raise
        self._group.send(message)
        return answer

    def _explorer_changes(self) -> dict[str, Any]:
        explorer = self._trial.explorer
        if explorer is self._explorer:
            return {}
        self._explorer = explorer
        return {"explorer": _explorer_message(explorer)}

    def restore(self, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None) -> int:
        """As :meth:`SplitTrial.restore`; the followers load the same state (fresh or resumed)."""

        def state(_: int) -> dict[str, Any]:
            own = capture_state(model, optimizer, scheduler, clone=False)
            return {"state": _cpu(own), **self._explorer_changes()}

        return self._answer("restore", lambda: self._trial.restore(model, optimizer, scheduler),
                            state)  # fmt: skip

    def report(
        self,
        value: float,
        step: int,
        *,
        model: torch.nn.Module | None = None,
        optimizer: Any = None,
        scheduler: Any = None,
    ) -> Any:
        """As :meth:`SplitTrial.report`; the followers load the state when it changed."""
        before = self._trial.current_params

        def changes(result: Any) -> dict[str, Any]:
            if model is None:
                return {}
            out = self._explorer_changes()
            if result.accepted or self._trial.current_params != before:
                out["state"] = _cpu(capture_state(model, optimizer, scheduler, clone=False))
            else:
                out["buffers"] = _cpu(dict(unwrap_model(model).named_buffers()))
            return out

        def call() -> Any:
            return self._trial.report(value, step, model=model, optimizer=optimizer,
                                      scheduler=scheduler)  # fmt: skip

        return self._answer("report", call, changes)

    def should_prune(self) -> bool:
        """As :meth:`SplitTrial.should_prune`, the same answer on every rank."""
        return self._answer("value", self._trial.should_prune)

    def evaluate(self, model: torch.nn.Module, indices: np.ndarray | None = None) -> float:
        """As :meth:`SplitTrial.evaluate` of rank 0's model; every rank gets its score."""
        return self._answer("value", lambda: self._trial.evaluate(model, indices))

    def split_indices(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`SplitTrial.split_indices`."""
        return self._answer("value", lambda: self._trial.split_indices(split))

    def suggest_float(self, *args: Any, **kwargs: Any) -> float:
        """As :meth:`SplitTrial.suggest_float`, the same value on every rank."""
        return self._answer("value", lambda: self._trial.suggest_float(*args, **kwargs))

    def suggest_int(self, *args: Any, **kwargs: Any) -> int:
        """As :meth:`SplitTrial.suggest_int`, the same value on every rank."""
        return self._answer("value", lambda: self._trial.suggest_int(*args, **kwargs))

    def suggest_categorical(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`SplitTrial.suggest_categorical`, the same value on every rank."""
        return self._answer("value", lambda: self._trial.suggest_categorical(*args, **kwargs))


class FollowerTrial:
    """A follower's split trial: rank 0's answers, received at the same calls.

    It has no Optuna trial and writes nothing: ``set_user_attr`` and ``set_total_steps``
    do nothing here (rank 0 records them).
    """

    def __init__(self, group: Group, start: dict[str, Any]) -> None:
        self._group = group
        self.split: int = start["split"]
        self.attempt: int = start["attempt"]
        self.number: int = start["number"]
        self.n_splits: int = start["n_splits"]
        self.direction: str = start["direction"]
        self.train_indices: np.ndarray = start["train"]
        self.valid_indices: np.ndarray = start["valid"]
        self.device = torch.device(group.device)
        self.selection_score: float | None = None
        self._view: dict[str, Any] = start["view"]
        self._hooks: list[Callable[[dict[str, Any]], None]] = []
        self.explorer: Explorer | None = None

    @property
    def companions(self) -> dict[str, Companion]:
        """Rank 0's companion models, as mirrored on this rank (its explorer, if any)."""
        return {} if self.explorer is None else {"explorer": self.explorer}

    def train_companions(
        self, train_fn: Callable[..., Any], generator: torch.Generator | None = None
    ) -> int:
        """As :meth:`SplitTrial.train_companions`, on this rank's mirrored companions."""
        return train_companions(self.companions, train_fn, generator)

    def __getattr__(self, name: str) -> Any:
        view = self.__dict__.get("_view", {})
        if name in view:
            return copy.deepcopy(view[name])
        rank = getattr(self.__dict__.get("_group"), "rank", "> 0")
        raise AttributeError(
            f"{name!r} is not available on rank {rank} of the process group: only rank 0 "
            "has the Optuna trial (use the values the trial hands out on every rank)."
        )

    def _receive(self, kind: str) -> dict[str, Any]:
        message = self._group.recv()
        if message["kind"] == "abort":
            raise SplitAborted(message["reason"])
        expect_kind(message, kind, self._group.rank)
        return message

    def _settle(self, message: dict[str, Any], objects: tuple[Any, Any, Any]) -> Any:
        """Load what rank 0 sent with ``message`` into ``objects``; return its answer."""
        model = objects[0]
        if "state" in message:
            apply_state(message["state"], *objects)
        elif message.get("buffers") and model is not None:
            with torch.no_grad():
                for name, buffer in unwrap_model(model).named_buffers():
                    buffer.copy_(message["buffers"][name])
        if "explorer" in message:
            self.explorer = self._mirror(message["explorer"], objects)
        old = self._view.get("current_params")
        self._view = message["view"]
        if self._view.get("current_params") != old:
            for hook in self._hooks:
                hook(dict(self._view["current_params"]))
        return message["value"]

    def _mirror(self, sent: dict[str, Any] | None, objects: tuple[Any, Any, Any]) -> Any:
        """This rank's copy of rank 0's new explorer (AMTO), or None."""
        if sent is None:
            return None
        model, optimizer, scheduler = copy.deepcopy(objects)
        apply_state(sent["state"], model, optimizer, scheduler)
        return Explorer(model, optimizer, scheduler, *sent["meta"])

    def _value(self) -> Any:
        return self._settle(self._receive("value"), (None, None, None))

    def restore(self, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None) -> int:
        """Load rank 0's state (fresh or resumed); return the first step still to run."""
        return self._settle(self._receive("restore"), (model, optimizer, scheduler))

    def report(
        self,
        value: float,
        step: int,
        *,
        model: torch.nn.Module | None = None,
        optimizer: Any = None,
        scheduler: Any = None,
    ) -> Any:
        """Rank 0's :class:`ReportResult` of this step; load its state if it changed."""
        return self._settle(self._receive("report"), (model, optimizer, scheduler))

    def should_prune(self) -> bool:
        """Rank 0's answer."""
        return self._value()

    def evaluate(self, model: torch.nn.Module, indices: np.ndarray | None = None) -> float:
        """Rank 0's score of its model (the ranks' models are the same)."""
        return self._value()

    def split_indices(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        """Rank 0's answer."""
        return self._value()

    def suggest_float(self, *args: Any, **kwargs: Any) -> float:
        """The value rank 0's sampler gave."""
        return self._value()

    def suggest_int(self, *args: Any, **kwargs: Any) -> int:
        """The value rank 0's sampler gave."""
        return self._value()

    def suggest_categorical(self, *args: Any, **kwargs: Any) -> Any:
        """The value rank 0's sampler gave."""
        return self._value()

    def on_hparams_change(self, hook: Callable[[dict[str, Any]], None]) -> None:
        """Call ``hook(params)`` when rank 0's hyperparameters change."""
        self._hooks.append(hook)

    def set_user_attr(self, key: str, value: Any) -> None:
        """Nothing: rank 0 records user attributes."""

    def set_total_steps(self, total_steps: int) -> None:
        """Nothing: rank 0 records the steps."""
