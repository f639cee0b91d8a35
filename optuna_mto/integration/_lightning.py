"""MTOCallback: a PyTorch Lightning training as one split trial of an optuna-mto study."""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any

import torch

from optuna_mto._extras import missing_extra

# The current ``lightning`` package first; the older ``pytorch_lightning`` namespace when
# it is the only one installed. A callback works only with a Trainer of its own namespace.
try:
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.states import TrainerFn
except ImportError:
    try:
        import pytorch_lightning as pl
        from pytorch_lightning.trainer.states import TrainerFn
    except ImportError as err:  # pragma: no cover - exercised only without the extra.
        raise missing_extra("optuna_mto.integration.MTOCallback", "lightning") from err

from optuna_mto._logging import get_logger
from optuna_mto._step.events import ReportResult
from optuna_mto._step.trial import SplitTrial
from optuna_mto._storage.optuna_internals import trial_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import LIGHTNING_LOOP_PREFIX, SPLIT_KEY, step_key
from optuna_mto.integration._common import check_callback_args

__all__ = ["MTOCallback", "trainer_device_kwargs"]

_logger = get_logger(__name__)
_STEPS = ("epoch", "global_step")


def trainer_device_kwargs(trial: SplitTrial) -> dict[str, Any]:
    """Return the ``pl.Trainer`` arguments that put the training on ``trial.device``.

    Example:
        .. code-block:: python

            trainer = pl.Trainer(max_epochs=10, **trainer_device_kwargs(trial), callbacks=[...])

    Args:
        trial: The split trial whose device the worker was given.

    Returns:
        ``{"accelerator": "cpu"}``, ``{"accelerator": "gpu", "devices": [i]}`` for
        ``cuda:i``, or ``{"accelerator": "mps", "devices": 1}``.
    """
    device = trial.device
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"accelerator": "gpu", "devices": [index]}
    if device.type == "mps":
        return {"accelerator": "mps", "devices": 1}
    return {"accelerator": "cpu"}


def _optimizer_and_scheduler(trainer: pl.Trainer) -> tuple[torch.optim.Optimizer | None, Any]:
    optimizers = trainer.optimizers
    optimizer = optimizers[0] if optimizers else None
    configs = trainer.lr_scheduler_configs
    scheduler = configs[0].scheduler if configs else None
    return optimizer, scheduler


def _save_loop(trial: SplitTrial, trainer: pl.Trainer, step: int) -> None:
    """Keep Lightning's fit-loop progress at report ``step`` (epoch, global step, batch).

    What Lightning's own checkpoint keeps under ``loops``, as JSON in a trial system
    attribute: a resumed split's Trainer continues from it. A stateful dataloader's state
    is left out (the epoch then restarts its data from the beginning, as Lightning does).
    """
    state = {k: v for k, v in trainer.fit_loop.state_dict().items() if _jsonable(v)}
    optuna_trial = trial.optuna_trial
    key = step_key(LIGHTNING_LOOP_PREFIX, step)
    retry_transient(optuna_trial.storage.set_trial_system_attr, trial_id_of(optuna_trial), key,
                    state)  # fmt: skip


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _saved_loop(trial: SplitTrial, step: int) -> dict[str, Any] | None:
    """The fit-loop progress saved at ``step`` by the latest run of the split that has it."""
    optuna_trial = trial.optuna_trial
    key = step_key(LIGHTNING_LOOP_PREFIX, step)
    runs = retry_transient(optuna_trial.study.get_trials, deepcopy=False)
    for run in sorted(runs, key=lambda t: t.number, reverse=True):
        if run.system_attrs.get(SPLIT_KEY) == trial.split and key in run.system_attrs:
            state = run.system_attrs[key]
            own = trial_id_of(optuna_trial)
            if trial_id_of(run) != own:  # the next retry finds it in this run
                retry_transient(optuna_trial.storage.set_trial_system_attr, own, key, state)
            return state
    return None


def _refuse_multi_device(trainer: pl.Trainer) -> None:
    """Refuse a Trainer with an MTOCallback that would run on several processes."""
    if trainer.world_size > 1 and any(isinstance(c, MTOCallback) for c in trainer.callbacks):
        raise ValueError(
            f"MTOCallback runs one split per process, but this Trainer has world_size="
            f"{trainer.world_size} ({type(trainer.strategy).__name__}): Lightning would start "
            "more processes inside the split. Give each split one device with "
            "pl.Trainer(**trainer_device_kwargs(trial)) and let study.optimize(n_jobs=...) "
            "run the splits side by side."
        )


def _fit_on_one_device(fit: Any) -> Any:
    """Wrap ``pl.Trainer.fit``: refuse multi-device before Lightning starts any process.

    Lightning calls no callback hook before its launcher starts processes (``ddp``
    re-runs the script, ``ddp_spawn`` pickles the Trainer with the split trial in it), so
    the check wraps ``fit`` itself; it acts only on a Trainer holding an MTOCallback.
    """
    if getattr(fit, "_mto_wrapped", False):
        return fit

    @functools.wraps(fit)
    def checked_fit(self: pl.Trainer, *args: Any, **kwargs: Any) -> Any:
        _refuse_multi_device(self)
        return fit(self, *args, **kwargs)

    checked_fit._mto_wrapped = True  # type: ignore[attr-defined]
    return checked_fit


def _skip_epochs(trainer: pl.Trainer, first: int) -> None:
    """Make Lightning's fit loop start at epoch ``first`` (a run saved without its loop)."""
    progress = trainer.fit_loop.epoch_progress
    for counter in (progress.current, progress.total):
        counter.ready = counter.started = counter.processed = counter.completed = first


class MTOCallback(pl.Callback):
    """Make a PyTorch Lightning training one split trial of an optuna-mto study.

    At the end of every validation run during ``trainer.fit`` it reads
    ``trainer.callback_metrics[monitor]`` and calls :meth:`SplitTrial.report` with the
    LightningModule, the first optimizer and the first LR scheduler. That records the
    intermediate value, checkpoints the split, publishes its fitness, and, when a
    better split's weights help on this split's validation set, loads them (with
    the optimizer and scheduler state) into the module and optimizer in place, so
    the training simply continues from there. The sanity check and
    ``trainer.validate`` runs are not reported.

    At the start of ``fit`` it also calls :meth:`SplitTrial.restore`: a retried split
    (its worker died or the objective raised) gets back its last checkpoint, and Lightning
    continues from that report's epoch, batch and global step, in either step mode, as
    from its own checkpoint's loop state (so ``max_steps``, step-based LR schedules and
    loggers keep their meaning). Resuming is this callback's job: pass no ``ckpt_path``.

    One split is one process on one device: a Trainer with ``world_size > 1`` (``devices=2``,
    DDP) is refused before Lightning starts any process.

    The study's ``evaluate(model, indices)`` function scores transfer candidates: it
    gets the LightningModule and must compute the same metric as ``monitor`` on the
    same rows (``trial.valid_indices``), in the study's direction.

    Example:
        .. code-block:: python

            def objective(trial: optuna_mto.SplitTrial) -> None:
                module = LitNet()
                trainer = pl.Trainer(
                    max_epochs=10,
                    callbacks=[MTOCallback(trial, monitor="val_acc")],
                    **trainer_device_kwargs(trial),
                )
                trainer.fit(module, loader(trial.train_indices), loader(trial.valid_indices))

            study.optimize(objective, dataset=(X, y), evaluate=accuracy)

    Args:
        trial: The split trial the objective received.
        monitor: Name of the validation metric logged with ``self.log(monitor, ...)``:
            the module's score on ``trial.valid_indices``.
        step: Report step: ``"epoch"`` (``trainer.current_epoch``) or
            ``"global_step"`` (``trainer.global_step``, for validation several times
            per epoch). With ``"epoch"``, a second validation in the same epoch is not
            reported (a warning says so once).

    Attributes:
        results: What each report did, in order (see :class:`~optuna_mto.ReportResult`).
    """

    #: The Trainer trains one model: ``optimize`` refuses strategies with companion models
    #: to train (AMTO's explorer) with this callback up front.
    trains_companions = False

    def __init__(self, trial: SplitTrial, monitor: str = "val_acc", *, step: str = "epoch") -> None:
        check_callback_args(trial, step, _STEPS, "MTOCallback")
        self.trial = trial
        self.monitor = monitor
        self.step = step
        self.results: list[ReportResult] = []
        self._last_step: int | None = None
        self._warned = False
        self._skip_to = 0  # a resumed run saved without its loop state: epochs to skip

    @property
    def accepted_transfers(self) -> int:
        """Number of transfers kept so far."""
        return sum(result.accepted for result in self.results)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse distributed training: one split trial is one process's model."""
        if stage == TrainerFn.FITTING:
            _refuse_multi_device(trainer)  # fit refused it already; a Trainer run otherwise

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resume a retried split: its last checkpoint, and Lightning's loop where it was."""
        optimizer, scheduler = _optimizer_and_scheduler(trainer)
        first = self.trial.restore(pl_module, optimizer, scheduler)
        if first <= 0:
            return
        self._last_step = first - 1
        loop = _saved_loop(self.trial, first - 1)
        if loop is not None:  # as Lightning restores its own checkpoint's ``loops``
            trainer.fit_loop.load_state_dict(loop)
        elif self.step == "epoch":
            self._skip_to = first
        _logger.info(
            "Split %d resumes after %s %d (global step %d).", self.trial.split, self.step,
            first - 1, trainer.global_step,
        )  # fmt: skip

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Skip the reported epochs of a run that saved no loop state (an older version)."""
        if trainer.current_epoch < self._skip_to:
            _skip_epochs(trainer, self._skip_to)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the monitored metric; may load a better split's weights in place."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise KeyError(
                f"MTOCallback monitors {self.monitor!r}, but validation logged only "
                f"{sorted(metrics)}; log it in validation_step with "
                f"self.log({self.monitor!r}, value), or pass monitor=<one of those>."
            )
        step = trainer.current_epoch if self.step == "epoch" else trainer.global_step
        if self._last_step is not None and step <= self._last_step:
            if not self._warned:
                warnings.warn(
                    f"Split {self.trial.split}: validation ran again at {self.step} {step}, "
                    "which was already reported; it is not reported again. Pass "
                    "MTOCallback(..., step='global_step') to report every validation.",
                    stacklevel=2,
                )
                self._warned = True
            return
        _save_loop(self.trial, trainer, step)  # before the checkpoint: a resume finds both
        optimizer, scheduler = _optimizer_and_scheduler(trainer)
        result = self.trial.report(
            float(metrics[self.monitor]),
            step,
            model=pl_module,
            optimizer=optimizer,
            scheduler=scheduler,
        )
        self._last_step = step
        self.results.append(result)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Warn when training ended without a single report (validation never ran)."""
        if not self.results and self._last_step is None:
            warnings.warn(
                f"Split {self.trial.split}: training ended but MTOCallback reported nothing, "
                "so the split has no checkpoint or score; make sure validation runs during "
                "fit (a validation dataloader, limit_val_batches > 0, "
                "check_val_every_n_epoch <= max_epochs).",
                stacklevel=2,
            )


pl.Trainer.fit = _fit_on_one_device(pl.Trainer.fit)  # type: ignore[method-assign]
