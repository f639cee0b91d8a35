"""SplitTrial: one split's Optuna trial, with checkpointing and weight transfer at report."""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import torch
from optuna._experimental import experimental_func
from optuna.distributions import (
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from optuna_mto._artifacts import promote_checkpoint
from optuna_mto._board import Blackboard, SplitRecord
from optuna_mto._errors import CheckpointError
from optuna_mto._events import TRANSFER_ATTR_PREFIX, ReportResult, TransferEvent
from optuna_mto._hparams import (
    CHECKPOINT_KEY,
    CURRENT_ATTR,
    HPARAMS_ATTR_PREFIX,
    SOURCE_ATTR,
    HparamsHook,
    HyperparamState,
)
from optuna_mto._logging import get_logger
from optuna_mto._plan import SplitPlan
from optuna_mto._retry import retry_transient
from optuna_mto._schema import (
    BEST_KEY,
    CROSS_SCORES_ATTR,
    CROSS_SCORES_KEY,
    LINEAGE_KEY,
    OVERLAP_KEY,
    PRUNED_KEY,
    RELATIONS_ATTR_PREFIX,
    RESUMED_FROM_ATTR,
    RESUMED_FROM_KEY,
    SELECTION_SCORE_ATTR,
    SELECTION_SCORE_KEY,
)
from optuna_mto._state import (
    apply_state,
    capture_state,
    check_compatible,
    get_rng_state,
    set_rng_state,
    unwrap_model,
)
from optuna_mto.checkpoints import CheckpointRef, CheckpointStore
from optuna_mto.transfer import BaseTransferManager, TransferContext, is_better, update_relation

__all__ = ["EvaluateFn", "Explorer", "SplitTrial"]

_logger = get_logger(__name__)

#: ``evaluate(model, indices) -> score``: the user's metric of ``model`` on the rows
#: ``indices`` of the dataset, in the study's direction.
EvaluateFn = Callable[[torch.nn.Module, np.ndarray], float]

_SYNC_POLL_S = 0.2


@dataclasses.dataclass
class _Shared:
    """What every split of one study shares inside one process."""

    storage: optuna.storages.BaseStorage
    study_id: int
    study_name: str
    direction: str
    n_splits: int
    seed: int
    plan: SplitPlan
    store: CheckpointStore
    board: Blackboard
    manager: BaseTransferManager
    evaluate: EvaluateFn | None
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: ``loss(model, indices) -> float`` (lower is better), for managers whose transfer
    #: criterion is the validation loss (``AdaptiveTransfer(criterion="loss")``).
    loss: EvaluateFn | None = None


@dataclasses.dataclass
class Explorer:
    """A copy of a source split's model that trains on this split's data (AMTO).

    Train ``model`` with ``optimizer`` (and step ``scheduler``) exactly like your own
    model until the next report; the report decides whether it replaces yours.

    Attributes:
        model: The explorer's model (same architecture, on the trial's device).
        optimizer: Its optimizer, holding the source's optimizer state.
        scheduler: Its LR scheduler, if the split has one.
        source: The split whose weights it started from.
        source_trial: That split's Optuna trial number.
        source_step: The step at which the source published them.
        lineage: Splits whose training data shaped its weights.
    """

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    source: int
    source_trial: int
    source_step: int
    lineage: list[int]


class SplitTrial:
    """The trial object an objective receives: one split of the data, one model.

    Train on :attr:`train_indices`, score on :attr:`valid_indices`, put the model on
    :attr:`device`, and call :meth:`report` after each epoch (or every N batches).
    ``report`` records the intermediate value, checkpoints the model, publishes the
    split's fitness to the other splits, and may replace the model's weights with a
    better split's (a transfer kept only when it improves this split's own
    validation score).

    Example:
        .. code-block:: python

            def objective(trial: optuna_mto.SplitTrial) -> None:
                model = Net().to(trial.device)
                opt = torch.optim.Adam(model.parameters())
                for epoch in range(trial.restore(model, opt), 10):
                    train_one_epoch(model, opt, trial.train_indices)
                    if trial.explorer is not None:  # only with AdaptiveTransfer
                        train_one_epoch(trial.explorer.model, trial.explorer.optimizer,
                                        trial.train_indices)
                    trial.report(trial.evaluate(model), epoch, model=model, optimizer=opt)
    """

    def __init__(
        self,
        shared: _Shared,
        optuna_trial: optuna.Trial,
        split: int,
        attempt: int = 0,
        device: torch.device | str = "cpu",
        resume_from: SplitRecord | None = None,
        report_hooks: Sequence[Any] = (),
    ) -> None:
        self._shared = shared
        self._trial = optuna_trial
        self._split = split
        self._attempt = attempt
        self._device = torch.device(device)
        self._resume_from = resume_from
        self._train, self._valid = shared.plan.split(split)
        self._model: torch.nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._scheduler: Any = None
        self._tried: set[str] = set()
        self._latest: CheckpointRef | None = None
        self._previous: CheckpointRef | None = None
        self._best: tuple[float, int, CheckpointRef] | None = None
        self._best_lineage: list[int] = [split]
        self._lineage: list[int] = [split]
        self._relations: dict[int, float] = {}
        self._explorer: Explorer | None = None
        self._last_step: int | None = None
        self._tried_count = 0
        self._reports = 0  # reports made by this run (a resumed split starts again at 0)
        self._accepted_count = 0
        self._total_steps: int | None = None
        self._started = time.time()  # for the progress view's ETA
        self._first_step = 0
        self.selection_score: float | None = None
        self._report_hooks = [h for h in report_hooks if hasattr(h, "on_report")]
        carried = optuna_trial.user_attrs if resume_from is not None else {}
        self._hp = HyperparamState(
            optuna_trial, split, carried.get(CURRENT_ATTR), carried.get(SOURCE_ATTR)
        )
        self._explorer_hparams: dict[str, Any] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def split(self) -> int:
        """Index of this trial's split, in ``[0, n_splits)``."""
        return self._split

    @property
    def n_splits(self) -> int:
        """K, the number of splits of the study."""
        return self._shared.n_splits

    @property
    def attempt(self) -> int:
        """0 for the first run of the split, n for its n-th retry."""
        return self._attempt

    @property
    def number(self) -> int:
        """The Optuna trial number."""
        return self._trial.number

    @property
    def device(self) -> torch.device:
        """The device this split's model should live on."""
        return self._device

    @property
    def optuna_trial(self) -> optuna.Trial:
        """The underlying :class:`optuna.Trial` (for ``suggest_*`` and user attrs)."""
        return self._trial

    @property
    def direction(self) -> str:
        """``"maximize"`` or ``"minimize"``."""
        return self._shared.direction

    @property
    def train_indices(self) -> np.ndarray:
        """Rows of the dataset this split trains on."""
        return self._train

    @property
    def valid_indices(self) -> np.ndarray:
        """Rows of the dataset this split validates on."""
        return self._valid

    @property
    def best_value(self) -> float | None:
        """Best score reported so far (after transfers), or None."""
        return None if self._best is None else self._best[0]

    @property
    def explorer(self) -> Explorer | None:
        """The explorer to train until the next report (AdaptiveTransfer), or None."""
        return self._explorer

    @property
    def relations(self) -> dict[int, float]:
        """This split's learned relation score of each other split (AdaptiveTransfer)."""
        return dict(self._relations)

    @property
    def lineage(self) -> list[int]:
        """Splits whose training data shaped the current weights (own and inherited)."""
        return list(self._lineage)

    @property
    def n_reports(self) -> int:
        """Reports made by this run of the split so far (0 until the first ``report``)."""
        return self._reports

    def set_total_steps(self, total_steps: int) -> None:
        """Tell how many steps this split will report (shown in the progress view)."""
        self._total_steps = int(total_steps)

    def split_indices(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(train, valid)`` rows of any split of the study."""
        return self._shared.plan.split(split)

    def set_user_attr(self, key: str, value: Any) -> None:
        """Set a user attribute on the Optuna trial (shown in optuna-dashboard)."""
        retry_transient(self._trial.set_user_attr, key, value)

    # ------------------------------------------------------------------ hyperparameters
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """Suggest a float hyperparameter, as :meth:`optuna.Trial.suggest_float`.

        The study's sampler draws it on the split's first attempt; a retried or resumed
        split gets the value it runs with (never drawn again). That is the value the
        sampler gave, unless a transfer brought a donor's or PBT explored it: the
        trial's ``params`` keep the sampled value, ``current_hparams`` the current one.
        """
        sampled = retry_transient(self._trial.suggest_float, name, low, high, step=step, log=log)
        return self._hp.suggested(name, sampled, FloatDistribution(low, high, log=log, step=step))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """Suggest an integer hyperparameter, as :meth:`optuna.Trial.suggest_int`.

        See :meth:`suggest_float` for retried splits.
        """
        sampled = retry_transient(self._trial.suggest_int, name, low, high, step=step, log=log)
        return self._hp.suggested(name, sampled, IntDistribution(low, high, log=log, step=step))

    def suggest_categorical(
        self, name: str, choices: Sequence[CategoricalChoiceType]
    ) -> CategoricalChoiceType:
        """Suggest a categorical hyperparameter, as :meth:`optuna.Trial.suggest_categorical`.

        See :meth:`suggest_float` for retried splits.
        """
        sampled = retry_transient(self._trial.suggest_categorical, name, choices)
        return self._hp.suggested(name, sampled, CategoricalDistribution(choices))

    @property
    def params(self) -> dict[str, Any]:
        """The trial's params, as :attr:`optuna.Trial.params`: what the sampler gave.

        They never change; :attr:`current_params` are the values the split runs with.
        """
        return retry_transient(lambda: self._trial.params)

    @property
    def current_params(self) -> dict[str, Any]:
        """The hyperparameters this split runs with now, by name (see :meth:`suggest_float`)."""
        return dict(self._hp.values)

    @property
    def params_source(self) -> dict[str, Any]:
        """Whose sampled values :attr:`current_params` descend from.

        Keys: ``split`` and ``trial`` (whose draw they are), ``via`` (the donor they came
        through), ``step`` (of the last change) and ``explored`` (changed by PBT).
        """
        return dict(self._hp.source)

    @experimental_func("0.1.0")
    def on_hparams_change(self, hook: HparamsHook) -> None:
        """Call ``hook(params)`` whenever the split's hyperparameters change.

        They change when a kept transfer brings a donor's hyperparameters, when PBT
        explores them, and when a resumed split restores them. Optimizer param-group
        keys (``lr``, ``momentum``, ...) are updated without a hook; use one for the
        rest, e.g. ``trial.on_hparams_change(lambda p: setattr(drop, "p", p["dropout"]))``.
        """
        self._hp.add_hook(hook)

    def should_prune(self) -> bool:
        """Ask the study's pruner, as :meth:`optuna.Trial.should_prune`.

        If True, raise :class:`optuna.TrialPruned`: the split ends PRUNED (not FAIL),
        is never retried, is left out of the cross-split ranking, and is no donor from
        then on.
        """
        return bool(retry_transient(self._trial.should_prune))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: torch.nn.Module, indices: np.ndarray | None = None) -> float:
        """Score ``model`` with the study's evaluate function (default: own validation set)."""
        if self._shared.evaluate is None:
            raise ValueError(
                "No evaluate function: pass optimize(..., evaluate=fn) with "
                "fn(model, indices) -> float, or use optuna_mto.SupervisedTrainer."
            )
        rows = self._valid if indices is None else indices
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return float(self._shared.evaluate(model, rows))
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------ state
    def _capture(self) -> dict[str, Any]:
        assert self._model is not None
        return capture_state(self._model, self._optimizer, self._scheduler)

    def _apply(self, state: dict[str, Any]) -> None:
        assert self._model is not None
        apply_state(state, self._model, self._optimizer, self._scheduler)

    def restore(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
    ) -> int:
        """Resume a retried split from its last good checkpoint.

        Loads model, optimizer, scheduler and RNG state, the lineage and the relation
        scores of the previous attempt's latest checkpoint (falling back to the one
        before it, then the best one, if a checkpoint is missing or corrupted), and
        carries the earlier curve and transfer log into this trial.

        Returns:
            The first step still to run: 0 for a fresh split.
        """
        self._model, self._optimizer, self._scheduler = model, optimizer, scheduler
        record = self._resume_from
        if record is None:
            return 0
        store = self._shared.store
        candidates = (record.checkpoint, record.previous_checkpoint, record.best_checkpoint)
        for ref in candidates:
            if ref is None:
                continue
            try:
                state = retry_transient(store.load, ref, map_location=self._device)
            except CheckpointError as err:
                _logger.warning("Split %d: cannot resume from %s: %s", self._split, ref, err)
                self._trial.set_user_attr(f"bad_checkpoint:{ref.artifact_id}", str(err))
                continue
            check_compatible(unwrap_model(model).state_dict(), state["model"])
            self._apply(state)
            if "rng" in state:
                set_rng_state(state["rng"], self._device)
            step = int(state["step"])
            self._lineage = [int(s) for s in state.get("lineage", [self._split])]
            self._relations = {int(k): float(v) for k, v in state.get("relations", {}).items()}
            self._hp.restore(state.get(CHECKPOINT_KEY), step)
            self._hp.notify()
            self._latest = ref
            self._best = (record.best_fitness, record.best_step, record.best_checkpoint)
            self._best_lineage = list(record.best_lineage or self._lineage)
            if record.best_step > step:  # the best came later than what we resume from
                self._best = (float(state["fitness"]), step, ref)
                self._best_lineage = list(self._lineage)
            self._last_step = step
            self._carry_history(record.trial_id, step)
            for other in candidates[:2]:
                if other is not None and other not in (ref, self._best[2]):
                    retry_transient(store.remove, other.artifact_id)
            _logger.info("Split %d resumes after step %d.", self._split, step)
            self._first_step = step + 1
            return step + 1
        return 0

    def _carry_history(self, failed_trial_id: int, step: int) -> None:
        """Copy the failed run's curve and transfer log up to ``step`` into this trial."""
        storage = self._trial.storage
        failed = retry_transient(storage.get_trial, failed_trial_id)
        trial_id = self._trial._trial_id
        # First: a run killed while copying still says where it resumed from.
        retry_transient(storage.set_trial_system_attr, trial_id, RESUMED_FROM_KEY, step)
        for past_step, past_value in sorted(failed.intermediate_values.items()):
            if past_step <= step:
                retry_transient(storage.set_trial_intermediate_value, trial_id, past_step,
                                past_value)  # fmt: skip
        for key, value in failed.user_attrs.items():
            prefix = key.split(":", 1)[0] + ":"
            if prefix in (TRANSFER_ATTR_PREFIX, RELATIONS_ATTR_PREFIX, HPARAMS_ATTR_PREFIX):
                if int(key.split(":")[1]) <= step:
                    retry_transient(storage.set_trial_user_attr, trial_id, key, value)
        retry_transient(self._trial.set_user_attr, RESUMED_FROM_ATTR, step)

    # ------------------------------------------------------------------ report
    def report(
        self,
        value: float,
        step: int,
        *,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
    ) -> ReportResult:
        """Report this split's validation score at ``step``, checkpoint, and maybe transfer.

        Args:
            value: The model's score on :attr:`valid_indices` (in the study's direction).
            step: The step (epoch or iteration); increasing from one call to the next.
            model: The model. Without it only the intermediate value is recorded.
            optimizer: Its optimizer, whose state is checkpointed and transferred.
            scheduler: Its LR scheduler, likewise.

        Returns:
            What happened at this step; :attr:`ReportResult.accepted` tells whether the
            model's weights (and optimizer state) were replaced by a donor's.
        """
        if self._shared.stop.is_set():
            raise KeyboardInterrupt("optimize() was interrupted; this split resumes next time")
        value = float(value)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an integer >= 0, but got step={step!r}.")
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(
                f"step must increase from one report to the next, but got step={step} after "
                f"step={self._last_step}."
            )
        retry_transient(self._trial.report, value, step)
        self._last_step = step
        self._reports += 1
        if model is None:
            return self._reported(ReportResult(step, value, None, None))
        self._model, self._optimizer, self._scheduler = model, optimizer, scheduler
        fitness, event = value, None
        manager = self._shared.manager
        if manager.should_transfer(step) and self._shared.evaluate is not None:
            records = self._read_board(step)
            if manager.uses_explorer:
                event = self._resolve_explorer(step, value)
                if event is not None and event.accepted:
                    fitness = event.after if event.judged_on == "own" else self.evaluate(model)
                self._new_explorer(step, fitness, records)
            else:
                event = self._try_transfer(step, value, records)
                if event is not None and event.accepted:
                    fitness = event.after if event.judged_on == "own" else self.evaluate(model)
        ref = self._checkpoint(step, fitness)
        return self._reported(ReportResult(step, fitness, event, ref))

    def _reported(self, result: ReportResult) -> ReportResult:
        for hook in self._report_hooks:
            hook.on_report(self, result)
        return result

    def _read_board(self, step: int) -> dict[int, SplitRecord]:
        """Read the K latest records; in synchronous mode wait for the others first."""
        shared = self._shared
        records = retry_transient(shared.board.read)
        if not shared.manager.synchronous:
            return records
        deadline = time.monotonic() + shared.manager.sync_timeout
        while time.monotonic() < deadline and not shared.stop.is_set():
            waiting = [
                k
                for k in range(shared.n_splits)
                if k != self._split
                and not (k in records and (records[k].finished or records[k].step >= step))
            ]
            if not waiting:
                return records
            time.sleep(_SYNC_POLL_S)
            records = retry_transient(shared.board.read)
        _logger.warning(
            "Split %d waited %.0f s at step %d; going on without splits that did not arrive.",
            self._split, shared.manager.sync_timeout, step,
        )  # fmt: skip
        return records

    def _context(self, step: int, value: float, records: dict[int, SplitRecord]) -> TransferContext:
        # A pruned split is no donor: its run was judged hopeless.
        others = {k: r.fitness for k, r in records.items() if k != self._split and not r.pruned}
        rng = np.random.default_rng([self._shared.seed, self._split, step])
        return TransferContext(
            self._split, step, value, self._shared.direction, others, rng, self._relations,
            hparams=self._hp.values,
        )  # fmt: skip

    def _load_donor(self, record: SplitRecord) -> dict[str, Any] | str:
        """Return the donor's checkpoint content, or the reason it cannot be used."""
        try:
            state = retry_transient(
                self._shared.store.load, record.checkpoint, map_location=self._device
            )
        except CheckpointError as err:
            _logger.warning("Split %d skips donor split %d: %s", self._split, record.split, err)
            return f"bad checkpoint: {err}"
        assert self._model is not None
        check_compatible(unwrap_model(self._model).state_dict(), state["model"])
        return state

    def _try_transfer(
        self, step: int, value: float, records: dict[int, SplitRecord]
    ) -> TransferEvent | None:
        shared = self._shared
        context = self._context(step, value, records)
        donor = shared.manager.choose_donor(context)
        if donor is None:
            return None
        record = records[donor]
        if record.checkpoint.artifact_id in self._tried:
            return None  # already scored these exact weights
        self._tried.add(record.checkpoint.artifact_id)

        gate = shared.manager.gate
        rows = self._gate_rows(gate, record.lineage or [donor])
        before = value
        if rows is not None and len(rows):
            before = self.evaluate(self._model, rows)  # type: ignore[arg-type]

        def event(operator: str, after: float, accepted: bool, **extra: Any) -> TransferEvent:
            return TransferEvent(
                step, self._split, donor, record.trial_number, record.step,
                operator, before, after, accepted, judged_on=gate, **extra,
            )  # fmt: skip

        if rows is not None and len(rows) == 0:
            return self._record(event("none", math.nan, False, reason=f"no {gate} rows"))
        donor_state = self._load_donor(record)
        if isinstance(donor_state, str):
            return self._record(event("none", math.nan, False, reason=donor_state))
        own = self._capture()
        best: tuple[str, float, dict[str, Any]] | None = None
        for label, candidate in shared.manager.candidates(own, donor_state, context):
            self._apply(candidate)
            score = self.evaluate(self._model, rows)  # type: ignore[arg-type]
            if best is None or is_better(score, best[1], shared.direction):
                best = (label, score, candidate)
        if best is None:
            self._apply(own)
            return None
        accepted = shared.manager.accept(before, best[1], shared.direction)
        if not accepted:
            self._apply(own)
            return self._record(event(best[0], best[1], False))
        chosen, hparams = best[2], {}
        if "optimizer" in chosen and self._optimizer is not None:
            explored, hparams = shared.manager.explore(chosen["optimizer"], context)
            chosen = {**chosen, "optimizer": explored}
        donor_id = (donor, record.trial_number)
        chosen, hparams = self._hp.after_transfer(
            chosen, donor_state, donor_id, shared.manager, context, hparams, taken=best[2]
        )
        self._apply(chosen)
        self._hp.notify()
        self._lineage = sorted(set(self._lineage) | set(record.lineage or [donor]))
        return self._record(event(best[0], best[1], True, hparams=hparams))

    def _gate_rows(self, gate: str, donor_lineage: list[int]) -> np.ndarray | None:
        """Rows a candidate is judged on; None for the own validation set."""
        plan = self._shared.plan
        if gate == "selection":
            if not len(plan.selection):
                raise ValueError(
                    "The transfer manager judges candidates on gate='selection', but the study "
                    "has no selection set: create it with selection_fraction > 0 (e.g. 0.1), "
                    "or use gate='unseen'."
                )
            return plan.selection
        if gate != "unseen":
            return None
        seen = np.zeros(plan.n_samples, dtype=bool)
        for source in set(donor_lineage) | set(self._lineage):
            seen[plan.split(source)[0]] = True
        return self._valid[~seen[self._valid]]

    def _judge(self, model: torch.nn.Module) -> float:
        """Score ``model`` on the manager's transfer criterion (own validation rows)."""
        if getattr(self._shared.manager, "criterion", "metric") != "loss":
            return self.evaluate(model)
        loss = self._shared.loss
        if loss is None:
            raise ValueError(
                "The transfer manager judges on criterion='loss', but the objective has no "
                "evaluate_loss(model, indices) method; use optuna_mto.SupervisedTrainer or "
                "give the objective one, or use criterion='metric'."
            )
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return float(loss(model, self._valid))
        finally:
            model.train(was_training)

    def _resolve_explorer(self, step: int, value: float) -> TransferEvent | None:
        """Judge the explorer trained since the last transfer step (AMTO)."""
        explorer, self._explorer = self._explorer, None
        if explorer is None:
            return None
        direction = self._shared.direction
        judged_on = "own"
        if getattr(self._shared.manager, "criterion", "metric") == "loss":
            judged_on, direction = "loss", "minimize"
            assert self._model is not None
            value = self._judge(self._model)
        score = self._judge(explorer.model)
        source = explorer.source
        self._relations[source] = update_relation(
            self._relations.get(source, 0.0), value, score, direction
        )
        accepted = self._shared.manager.accept(value, score, direction)
        if accepted:
            # load_state_dict copies, and the explorer is dropped: no clone needed.
            self._apply(
                capture_state(explorer.model, explorer.optimizer, explorer.scheduler, clone=False)
            )
            self._lineage = sorted(set(self._lineage) | set(explorer.lineage))
            self._hp.adopt_explorer(self._explorer_hparams, source, step)
        key = f"{RELATIONS_ATTR_PREFIX}{step:06d}"
        scores = {str(k): round(v, 6) for k, v in sorted(self._relations.items())}
        retry_transient(self._trial.set_user_attr, key, {"step": step, "scores": scores})
        return self._record(
            TransferEvent(
                step,
                self._split,
                source,
                explorer.source_trial,
                explorer.source_step,
                "explorer",
                value,
                score,
                accepted,
                judged_on=judged_on,
            )  # fmt: skip
        )

    def _new_explorer(self, step: int, fitness: float, records: dict[int, SplitRecord]) -> None:
        """Start an explorer from a source drawn by relation score (AMTO)."""
        for k in range(self._shared.n_splits):
            if k != self._split:
                self._relations.setdefault(k, 0.0)
        context = self._context(step, fitness, records)
        source = self._shared.manager.choose_donor(context)
        if source is None:
            return
        record = records[source]
        donor_state = self._load_donor(record)
        if isinstance(donor_state, str):
            return
        assert self._model is not None
        model, optimizer, scheduler = copy.deepcopy((self._model, self._optimizer, self._scheduler))
        apply_state(donor_state, model, optimizer, scheduler)
        lineage = sorted(set(self._lineage) | set(record.lineage or [source]))
        self._explorer_hparams = donor_state.get(CHECKPOINT_KEY)
        self._explorer = Explorer(
            model, optimizer, scheduler, source, record.trial_number, record.step, lineage
        )

    def _record(self, event: TransferEvent) -> TransferEvent:
        self._tried_count += 0 if event.reason else 1
        self._accepted_count += int(event.accepted)
        key = f"{TRANSFER_ATTR_PREFIX}{event.step:06d}"
        retry_transient(self._trial.set_user_attr, key, event.to_dict())
        return event

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, step: int, fitness: float) -> CheckpointRef:
        shared = self._shared
        assert self._model is not None
        # Serialised right away, so the live tensors need no copy.
        state = capture_state(self._model, self._optimizer, self._scheduler, clone=False)
        state.update(
            step=step,
            fitness=fitness,
            rng=get_rng_state(self._device),
            lineage=list(self._lineage),
            relations={str(k): v for k, v in self._relations.items()},
        )
        if self._hp.values:
            state[CHECKPOINT_KEY] = self._hp.to_checkpoint()
        name = f"{shared.study_name}-split{self._split}-s{step}"
        ref = retry_transient(shared.store.save, state, name=name)
        stale = self._previous
        self._previous, self._latest = self._latest, ref
        if self._best is None or is_better(fitness, self._best[0], shared.direction):
            if self._best is not None:
                stale_best = self._best[2]
                if stale_best not in (self._previous, self._latest):
                    retry_transient(shared.store.remove, stale_best.artifact_id)
            self._best = (fitness, step, ref)
            self._best_lineage = list(self._lineage)
        if stale is not None and stale not in (self._best[2], self._previous, self._latest):
            retry_transient(shared.store.remove, stale.artifact_id)
        self._publish(step, fitness, finished=False)
        return ref

    def _publish(self, step: int, fitness: float, *, finished: bool, pruned: bool = False) -> None:
        assert self._latest is not None and self._best is not None
        # A finished split offers its best weights (and their score) to the others.
        record = SplitRecord(
            split=self._split,
            trial_id=self._trial._trial_id,
            trial_number=self._trial.number,
            step=self._best[1] if finished else step,
            fitness=self._best[0] if finished else fitness,
            checkpoint=self._best[2] if finished else self._latest,
            previous_checkpoint=None if finished else self._previous,
            best_fitness=self._best[0],
            best_step=self._best[1],
            best_checkpoint=self._best[2],
            finished=finished,
            lineage=list(self._lineage),
            best_lineage=list(self._best_lineage),
            tried=self._tried_count,
            accepted=self._accepted_count,
            total_steps=self._total_steps,
            started=self._started,
            first_step=self._first_step,
            pruned=pruned,
        )
        retry_transient(self._shared.board.publish, record)

    # ------------------------------------------------------------------ end of split
    def finish(self) -> list[float] | None:
        """Score the split's best weights on every split's validation set.

        Called by ``optimize`` after the objective returns. Leaves the model holding
        the best weights. Also records which share of each validation set those
        weights have trained on (counting inherited weights), and their score on the
        held-out selection set when the study has one.

        Returns:
            The K cross-split scores, or None if no model or evaluate function exists.
        """
        self._explorer = None
        if self._model is None or self._best is None:
            return None
        best_fitness, best_step, best_ref = self._best
        store = self._shared.store
        try:
            self._apply(retry_transient(store.load, best_ref, map_location=self._device))
        except CheckpointError as err:
            # Keep the weights in memory and make them the exported best, loadable again.
            _logger.warning("Split %d: best checkpoint unusable (%s); using the current "
                            "weights instead.", self._split, err)  # fmt: skip
            name = f"{self._shared.study_name}-split{self._split}-final"
            best_ref = retry_transient(store.save, self._capture(), name=name)
            self._best = (best_fitness, best_step, best_ref)
        plan = self._shared.plan
        storage, trial_id = self._trial.storage, self._trial._trial_id
        # The kept best checkpoint becomes an Optuna artifact (optuna-dashboard lists it).
        filename = f"{self._shared.study_name}-split{self._split}-best-step{best_step}.pt"
        old_best, best_ref = best_ref, promote_checkpoint(store, storage, trial_id, best_ref,
                                                          filename)  # fmt: skip
        self._best = (best_fitness, best_step, best_ref)
        attrs: dict[str, Any] = {
            BEST_KEY: {
                "fitness": best_fitness,
                "step": best_step,
                "checkpoint": best_ref.to_dict(),
            },
            LINEAGE_KEY: self._best_lineage,
            OVERLAP_KEY: plan.overlap(self._best_lineage),
        }
        scores = None
        if self._shared.evaluate is not None:
            scores = [self.evaluate(self._model, plan.split(j)[1]) for j in range(self.n_splits)]
            attrs[CROSS_SCORES_KEY] = scores
            retry_transient(self._trial.set_user_attr, CROSS_SCORES_ATTR,
                            [round(s, 6) for s in scores])  # fmt: skip
            if len(plan.selection):
                selection = self.evaluate(self._model, plan.selection)
                self.selection_score = selection
                attrs[SELECTION_SCORE_KEY] = selection
                retry_transient(self._trial.set_user_attr, SELECTION_SCORE_ATTR, selection)
        for key, value in attrs.items():
            retry_transient(storage.set_trial_system_attr, trial_id, key, value)
        self._publish(best_step, best_fitness, finished=True)
        for ref in (self._latest, self._previous, old_best):  # only the best from now on
            if ref is not None and ref != best_ref:
                retry_transient(store.remove, ref.artifact_id)
        return scores

    def finish_pruned(self) -> None:
        """End a split the pruner stopped (the objective raised :class:`optuna.TrialPruned`).

        Called by ``optimize``. The split is no candidate: it gets no cross-split
        scores, its record is marked pruned (so no split picks it as a donor from now
        on) and every checkpoint of its run is removed.
        """
        self._explorer = None
        step = self._last_step
        retry_transient(
            self._trial.storage.set_trial_system_attr, self._trial._trial_id, PRUNED_KEY,
            {"step": step},
        )  # fmt: skip
        if self._best is None or self._latest is None:
            return
        self._publish(self._best[1], self._best[0], finished=True, pruned=True)
        for ref in {self._latest, self._previous, self._best[2]}:
            if ref is not None:
                retry_transient(self._shared.store.remove, ref.artifact_id)
