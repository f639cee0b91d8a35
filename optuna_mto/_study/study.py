"""MTOStudy: the study of K split trials; optimize, summary and the final models."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from optuna_mto._data.dataset import dataset_info
from optuna_mto._data.plan import SplitPlan
from optuna_mto._logging import get_logger
from optuna_mto._step.board import Blackboard, SplitRecord
from optuna_mto._step.events import TransferEvent
from optuna_mto._step.handle import EvaluateFn
from optuna_mto._step.state import unwrap_model
from optuna_mto._step.trial import SplitTrial
from optuna_mto._storage.retry import retry_transient
from optuna_mto._study import distill_study as _distill_study
from optuna_mto._study import outputs as _outputs
from optuna_mto._study.ensemble import Ensemble
from optuna_mto._study.optimize import run_optimize
from optuna_mto._study.results import best_state_dict, study_summary, transfer_events
from optuna_mto._study.summary import CrossSplitSummary
from optuna_mto._workers.claims import ClaimTable
from optuna_mto._workers.runtime import StudyRuntime
from optuna_mto.checkpoints import CheckpointStore

__all__ = ["MTOStudy"]

_logger = get_logger(__name__)


class MTOStudy:
    """A study of K split trials that exchange weights (created by :func:`create_study`).

    Attributes:
        study: The underlying :class:`optuna.Study`, one trial per split (parameter
            ``split``): every Optuna tool takes it, e.g.
            ``optuna.visualization.plot_intermediate_values(study.study)``,
            ``study.study.trials_dataframe()``, or optuna-dashboard on its storage.
        config: The study configuration shared by every worker.
        transfer: The transfer manager.
    """

    def __init__(self, runtime: StudyRuntime) -> None:
        self._rt = runtime
        self.study = runtime.study
        self.config = runtime.config
        self.transfer = runtime.transfer

    # ------------------------------------------------------------------ basics
    @property
    def study_name(self) -> str:
        """The study's name."""
        return self._rt.study_name

    @property
    def direction(self) -> str:
        """``"maximize"`` or ``"minimize"``."""
        return self._rt.direction

    @property
    def n_splits(self) -> int:
        """K."""
        return self._rt.n_splits

    @property
    def checkpoint_store(self) -> CheckpointStore:
        """Where this study's checkpoints live."""
        return self._rt.store

    @property
    def _claims(self) -> ClaimTable:
        return self._rt.claims

    @property
    def _board(self) -> Blackboard:
        return self._rt.board

    @property
    def _open_kwargs(self) -> dict[str, Any]:
        return self._rt.open_kwargs

    def __repr__(self) -> str:
        return f"MTOStudy(study_name={self.study_name!r}, n_splits={self.n_splits})"

    def splits(
        self, n_samples: int, targets: Sequence[int] | np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return the K ``(train, valid)`` index pairs for a dataset of ``n_samples`` rows."""
        plan = self._plan(n_samples, None if targets is None else np.asarray(targets))
        return [plan.split(k) for k in range(self.n_splits)]

    def selection_indices(self, n_samples: int) -> np.ndarray:
        """Return the held-out selection rows (empty unless ``selection_fraction > 0``)."""
        return self._plan(n_samples, None).selection

    def _plan(self, n_samples: int, targets: np.ndarray | None) -> SplitPlan:
        return self._rt.plan(n_samples, targets)

    # ------------------------------------------------------------------ optimize
    def optimize(
        self,
        objective: Callable[[SplitTrial], float | None],
        *,
        dataset: Any = None,
        targets: Any = None,
        evaluate: EvaluateFn | None = None,
        n_jobs: int = 1,
        executor: str = "auto",
        devices: Sequence[str | torch.device] | None = None,
        timeout: float | None = None,
        show_progress: bool = False,
        dashboard: bool = True,
        callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
    ) -> None:
        """Run every split that is not complete yet, then return.

        A finished study runs nothing; a half-done one finishes the rest. Splits that
        another worker is running (on this machine or another) are left to it.

        Args:
            objective: ``objective(trial: SplitTrial)``: trains one split, calling
                ``trial.report(...)``. Objects with ``dataset``, ``targets`` and
                ``evaluate`` attributes (such as :class:`SupervisedTrainer`) supply
                those arguments themselves.
            dataset: The gross training set (anything with ``len``, an ``(X, y)``
                tuple, or just its number of rows). Split deterministically.
            targets: Class labels (needed by the ``"stratified"`` splitter).
            evaluate: ``evaluate(model, indices) -> float``: scores a model on rows of
                the dataset. Used to accept transfers and for the cross-split table.
            n_jobs: Splits run at the same time.
            executor: ``"auto"``, ``"thread"`` or ``"process"`` (one spawned process
                per worker; needs a picklable objective).
            devices: Devices to spread workers over; default: one GPU each, or CPU.
            timeout: Claim no new split once this many seconds have passed (a running
                split is never interrupted; each worker runs at least one split).
            show_progress: Show a live view per split (step, fitness, transfers, ETA)
                on a terminal, or a log line per split now and then otherwise.
            dashboard: Keep optuna-dashboard's custom figures and study note up to
                date while the study runs (if optuna-dashboard is installed).
            callbacks: As in :meth:`optuna.Study.optimize`: each is called as
                ``callback(study, frozen_trial)`` (the :class:`optuna.Study` and the
                split's finished trial: COMPLETE, PRUNED or FAIL) in the worker that ran
                the split, right after it ends. A callback that also has a method
                ``on_report(trial, result)`` is called at every report of every split
                (with the :class:`SplitTrial` and its :class:`ReportResult`), e.g. to
                stream curves to a tracker (``optuna_mto.integration.MLflowCallback``,
                ``TensorBoardCallback``). Process workers get a pickled copy of each.
                ``prepare(study)``, if it has one, runs once here before any split
                starts; a callback's error is logged and never stops a split.

        A split whose code raises is retried in the same call while ``max_retries``
        allows; one whose worker is lost (a worker process killed, a heartbeat gone
        stale) is resumed, and a dead worker process replaced, while
        ``max_preemptions`` allows. Ctrl-C and SIGTERM stop every split at its next
        report without using up either budget.

        Raises:
            SplitsGivenUpError: When a split has used up a budget, naming each such
                split with its trial, attempt and error (also on later calls, until
                the split is rerun with a higher budget).
            KeyboardInterrupt: After Ctrl-C or SIGTERM, once every split has stopped;
                one line says how many splits will resume on the next run.
            CallbackError: When a callback's ``prepare`` fails (no split started), or
                at the end, naming each callback whose calls failed and how often.
        """
        run_optimize(
            self._rt, objective, watched=self, dataset=dataset, targets=targets,
            evaluate=evaluate, n_jobs=n_jobs, executor=executor, devices=devices,
            timeout=timeout, show_progress=show_progress, dashboard=dashboard,
            callbacks=callbacks,
        )  # fmt: skip

    # ------------------------------------------------------------------ results
    def summary(self) -> CrossSplitSummary:
        """Return the K x K cross-split table and ranking (print it for a table).

        Its ``states`` say how each split stands (complete, running, failed, given up,
        missing); ``complete`` is False and the table says so while any split is not.
        """
        return study_summary(self._rt)

    def transfers(self) -> list[TransferEvent]:
        """Return every recorded transfer attempt of the splits' current runs, by step."""
        return transfer_events(self.study)

    def best_state_dict(
        self,
        split: int | None = None,
        map_location: str | torch.device = "cpu",
        *,
        allow_incomplete: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Return the ``state_dict`` of the best-ranked split's best model (or of ``split``).

        Raises:
            MTOError: If the study is incomplete (a split given up, failed, running or
                never run) and neither ``split`` nor ``allow_incomplete=True`` is given.
        """
        return best_state_dict(self._rt, split, map_location, allow_incomplete=allow_incomplete)

    def load_best_model(
        self, model: torch.nn.Module, split: int | None = None, *, allow_incomplete: bool = False
    ) -> torch.nn.Module:
        """Load the best-ranked model's weights into ``model`` and return it.

        ``model`` may be plain or wrapped (``torch.compile``, ``DataParallel``, DDP),
        whichever way the splits were trained. Refuses an incomplete study unless
        ``allow_incomplete=True`` (see :meth:`best_state_dict`).
        """
        device = next(iter(model.parameters()), torch.empty(0)).device
        state = self.best_state_dict(split, map_location=device, allow_incomplete=allow_incomplete)
        unwrap_model(model).load_state_dict(state)
        return model

    def export_best_model(
        self,
        path: str | os.PathLike[str],
        split: int | None = None,
        *,
        allow_incomplete: bool = False,
        register: bool = True,
    ) -> Path:
        """Write the best-ranked model's ``state_dict`` to ``path`` (atomically).

        Load it back with ``model.load_state_dict(torch.load(path, weights_only=True))``.
        Refuses an incomplete study unless ``allow_incomplete=True``.
        With ``register`` the file is also uploaded as an Optuna artifact of the study
        (``optuna.artifacts.upload_artifact``), so optuna-dashboard lists it.
        """
        state = self.best_state_dict(split, allow_incomplete=allow_incomplete)
        return _outputs.write_file(self._rt, state, path, register)

    def export_ensemble(
        self,
        path: str | os.PathLike[str],
        splits: Sequence[int] | None = None,
        *,
        allow_incomplete: bool = False,
        register: bool = True,
    ) -> Path:
        """Write the ``state_dict`` of the finished splits' ensemble to ``path`` (atomically).

        No model is needed to write it. The file records its members (their count and
        splits; pruned or failed splits are left out, with a warning naming them) and
        the combine rule of the study's task: ``Ensemble.load(path, make_model)`` reads
        it with ``weights_only=True``. Refuses an incomplete study unless ``splits`` or
        ``allow_incomplete=True`` is given; ``register`` as in :meth:`export_best_model`.
        """
        return _outputs.export_ensemble(
            self._rt, path, splits, allow_incomplete=allow_incomplete, register=register
        )[0]

    def ensemble(self, model_fn: Callable[[], torch.nn.Module], **kwargs: Any) -> Ensemble:
        """Return one module combining the finished splits' models (see ``_outputs``).

        Args:
            model_fn: Builds one (plain) model of the splits' architecture.
            **kwargs: ``splits`` (default: all finished), ``combine`` (default: by the
                study's task, ``"softmax"`` for classifiers, ``"mean"`` for regression;
                ``"auto"`` when unknown), ``map_location``.
        """
        return _outputs.build_ensemble(self._rt, model_fn, **kwargs)

    def soup(
        self, model_fn: Callable[[], torch.nn.Module], method: str = "greedy", **kwargs: Any
    ) -> tuple[torch.nn.Module, list[int], float]:
        """Average the splits' weights: ``"uniform"`` or ``"greedy"`` soup (see ``_outputs``).

        Refused (ValueError) when the members share no ancestry. Returns the model, the
        splits in it and its score (the greedy soup is scored on the selection rows).

        Args:
            model_fn: Builds one (plain) model of the splits' architecture.
            method: ``"uniform"`` (all finished splits) or ``"greedy"``.
            **kwargs: ``evaluate``, ``indices`` (default: the selection rows), ``splits``,
                ``check_ancestry``.
        """
        if "indices" not in kwargs:
            info = dataset_info(self._rt)
            kwargs["indices"] = None if info is None else self.selection_indices(info["n_samples"])
        return _outputs.build_soup(self._rt, model_fn, method, **kwargs)

    # One model from the K, by distillation (documented in optuna_mto._study.distill_study).
    teacher_targets = _distill_study.study_teacher_targets
    distill = _distill_study.study_distill
    refit = _distill_study.study_refit

    def records(self) -> dict[int, SplitRecord]:
        """Return the latest published record of each split (the blackboard)."""
        return retry_transient(self._rt.board.read)
