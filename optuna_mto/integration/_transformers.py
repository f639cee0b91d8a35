"""MTOTrainerCallback: a Hugging Face ``transformers.Trainer`` run as one split trial."""

from __future__ import annotations

from typing import Any

from optuna_mto._extras import missing_extra

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - exercised only without the extra.
    missing = err.name if err.name in ("transformers", "accelerate") else "transformers"
    raise missing_extra("optuna_mto.integration.MTOTrainerCallback", missing) from err

from optuna_mto._logging import get_logger
from optuna_mto._step.events import ReportResult
from optuna_mto._step.trial import SplitTrial
from optuna_mto._storage.optuna_internals import experimental_class
from optuna_mto.integration._common import check_callback_args

__all__ = ["MTOTrainerCallback"]

_logger = get_logger(__name__)
_STEPS = ("global_step", "epoch")


@experimental_class("0.1.0")
class MTOTrainerCallback(TrainerCallback):
    """Make a ``transformers.Trainer`` training one split trial of an optuna-mto study.

    After every evaluation during ``trainer.train()`` it reads ``metrics[metric]`` and
    calls :meth:`SplitTrial.report` with the model, the Trainer's optimizer and LR
    scheduler: the intermediate value is recorded, the split is checkpointed and
    published, and a better split's weights (with optimizer and scheduler state) may
    be loaded into the model in place, so training simply continues from there. At the
    start of training it calls :meth:`SplitTrial.restore`, so a retried split gets its
    last checkpoint back (steps already reported are not reported again).

    The study's ``evaluate(model, indices)`` function scores transfer candidates: it
    gets the Trainer's model and must compute the same metric as ``metric`` on the same
    rows (``trial.valid_indices``), in the study's direction. ``AdaptiveTransfer`` is
    refused: the Trainer cannot train its explorer (a companion model).

    Example:
        .. code-block:: python

            def objective(trial: optuna_mto.SplitTrial) -> None:
                model = AutoModelForSequenceClassification.from_config(config)
                args = TrainingArguments(
                    output_dir=f"out/split{trial.split}", eval_strategy="epoch",
                    learning_rate=trial.suggest_float("lr", 1e-5, 1e-3, log=True),
                )
                trainer = Trainer(
                    model, args, train_dataset=rows(trial.train_indices),
                    eval_dataset=rows(trial.valid_indices), compute_metrics=accuracy,
                    callbacks=[MTOTrainerCallback(trial, metric="eval_accuracy")],
                )
                trainer.train()

    Args:
        trial: The split trial the objective received.
        metric: Key of the evaluation metric in the ``metrics`` dict
            (``"eval_<name>"`` for ``compute_metrics`` results, or ``"eval_loss"``).
        step: Report step: ``"global_step"`` (optimizer steps) or ``"epoch"``
            (the integer epoch, for one evaluation per epoch).
        prune: Ask the study's pruner after each report and raise
            :class:`optuna.TrialPruned` when it says so (the split ends PRUNED).

    Attributes:
        results: What each report did, in order.
    """

    #: The Trainer trains one model: ``optimize`` refuses strategies with companion models
    #: to train (AMTO's explorer) with this callback up front.
    trains_companions = False

    def __init__(
        self,
        trial: SplitTrial,
        metric: str = "eval_loss",
        *,
        step: str = "global_step",
        prune: bool = False,
    ) -> None:
        check_callback_args(trial, step, _STEPS, "MTOTrainerCallback")
        self.trial = trial
        self.metric = metric
        self.step = step
        self.prune = bool(prune)
        self.results: list[ReportResult] = []
        self._last_step: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Resume a retried split from its last checkpoint (nothing for a fresh one)."""
        first = self.trial.restore(
            kwargs["model"], kwargs.get("optimizer"), kwargs.get("lr_scheduler")
        )
        if first > 0:
            self._last_step = first - 1
            _logger.info("Split %d resumes after %s %d.", self.trial.split, self.step, first - 1)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any
    ) -> None:
        """Report the metric; may load a better split's weights into the model in place."""
        if self.metric not in metrics:
            raise KeyError(
                f"MTOTrainerCallback reports {self.metric!r}, but the evaluation returned "
                f"only {sorted(metrics)}; pass metric=<one of those> (compute_metrics "
                "results are prefixed with 'eval_')."
            )
        step = state.global_step if self.step == "global_step" else int(round(state.epoch or 0))
        if self._last_step is not None and step <= self._last_step:
            return
        result = self.trial.report(
            float(metrics[self.metric]), step, model=kwargs["model"],
            optimizer=kwargs.get("optimizer"), scheduler=kwargs.get("lr_scheduler"),
        )  # fmt: skip
        self._last_step = step
        self.results.append(result)
        if self.prune and self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned at {self.step} {step}")
