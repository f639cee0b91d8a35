"""A study's final outputs from all K models: the ensemble, its file, soups, their scores.

Every output combines the models the way the study's task says (see
:mod:`optuna_mto._study.task`): the mean of softmax probabilities for classifiers, the mean of
outputs for regression. A *soup* averages weights into one model; it only works when the
members share ancestry (one split's weights copied into the others by transfer): weight
averages of independently initialised networks score near chance, so :func:`build_soup`
refuses them unless told otherwise. The averaging itself is in :mod:`optuna_mto._study.soup`.

The functions take the opened study (:class:`~optuna_mto._workers.runtime.StudyRuntime`;
``MTOStudy``'s methods call them) and read its summary once per call: a ``summary=``
argument passes one that the caller has already built.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch
from torch import nn

from optuna_mto._logging import get_logger
from optuna_mto._storage.optuna_internals import storage_of, study_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import LINEAGE_KEY, OUTPUTS_KEY
from optuna_mto._study.ensemble import EXTRA_STATE_KEY, Ensemble, ensemble_info, save_state_dict
from optuna_mto._study.results import (
    best_state_dict,
    checkpoint_of,
    refuse_incomplete,
    study_summary,
)
from optuna_mto._study.soup import average_states, greedy_soup, shared_ancestry
from optuna_mto._study.summary import CrossSplitSummary, latest_split_trials
from optuna_mto._study.task import combine_for, study_task
from optuna_mto._validation import check_choice
from optuna_mto.transfer._selection import rank

if TYPE_CHECKING:
    from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["build_ensemble", "build_soup", "ensemble_state_dict", "export_ensemble", "export_soup",
           "score_outputs", "write_file"]  # fmt: skip

_logger = get_logger(__name__)
_SOUPS = ("uniform", "greedy")


def _finished(
    rt: StudyRuntime, splits: Sequence[int] | None, summary: CrossSplitSummary
) -> dict[int, Any]:
    """The latest trial of each chosen split (default: every finished one, best first)."""
    trials = latest_split_trials(rt.study.get_trials(deepcopy=False))
    done = summary.ranking  # finished splits, best first
    if splits is None:
        chosen = done
    else:
        chosen = list(splits)
        missing = [s for s in chosen if s not in done]
        if missing:
            raise ValueError(
                f"Split(s) {missing} of study {rt.study_name!r} have not finished; "
                f"finished splits: {sorted(done)}."
            )
    if not chosen:
        raise ValueError(f"No split of study {rt.study_name!r} has finished yet.")
    return {s: trials[s] for s in chosen}


def _best_states(
    rt: StudyRuntime, trials: Mapping[int, Any], map_location: str | torch.device = "cpu"
) -> dict[int, dict[str, torch.Tensor]]:
    """The best weights of each finished split trial (one checkpoint read each)."""
    store = rt.store
    return {s: store.load(checkpoint_of(t), map_location=map_location)["model"]
            for s, t in trials.items()}  # fmt: skip


def build_ensemble(
    rt: StudyRuntime,
    model_fn: Callable[[], nn.Module],
    splits: Sequence[int] | None = None,
    combine: str | None = None,
    map_location: str | torch.device = "cpu",
    *,
    summary: CrossSplitSummary | None = None,
) -> Ensemble:
    """Return an :class:`Ensemble` of the finished splits' best models (best ranked first).

    ``combine`` defaults to the study's task (see :func:`optuna_mto._study.task.combine_for`).
    """
    combine = combine or combine_for(study_task(rt))
    trials = _finished(rt, splits, summary or study_summary(rt))
    members = []
    for state in _best_states(rt, trials, map_location).values():
        model = model_fn()
        model.load_state_dict(state)
        members.append(model.to(map_location))
    return Ensemble(members, combine=combine, splits=list(trials)).eval()


def ensemble_state_dict(
    rt: StudyRuntime,
    splits: Sequence[int] | None = None,
    *,
    allow_incomplete: bool = False,
    summary: CrossSplitSummary | None = None,
) -> tuple[dict[str, Any], dict[int, str]]:
    """Return the ``state_dict`` of the finished splits' :class:`Ensemble`, and who is out.

    Built from the checkpoints alone (no model needed), best-ranked split first, with the
    keys ``members.<i>.<name>`` and the description (member count, splits, combine rule
    of the study's task) that :meth:`Ensemble.load` reads. Without ``splits`` an
    incomplete study is refused unless ``allow_incomplete=True``. Logs which splits it
    keeps, and (a warning, unless ``splits`` chose them) which it leaves out and why.

    Returns:
        The ``state_dict``, and each left-out split with the reason (``"pruned"``, ...).
    """
    summary = summary or study_summary(rt)
    if splits is None and not allow_incomplete:
        refuse_incomplete(
            rt.study_name, summary, "an ensemble would miss the unfinished splits",
            "allow_incomplete=True to use the finished ones, or splits=[...]",
        )  # fmt: skip
    members = _best_states(rt, _finished(rt, splits, summary))
    state: dict[str, Any] = {
        f"members.{i}.{name}": tensor
        for i, member in enumerate(members.values())
        for name, tensor in member.items()
    }
    state[EXTRA_STATE_KEY] = ensemble_info(len(members), list(members), combine_for(study_task(rt)))
    states = summary.states or ["not finished"] * summary.n_splits
    why = (lambda k: states[k]) if splits is None else (lambda k: f"not in splits={list(splits)}")
    left_out = {k: why(k) for k in range(summary.n_splits) if k not in members}
    if left_out:
        log = _logger.warning if splits is None else _logger.info
        log("The ensemble of study %r keeps %d of %d splits (members: splits %s); left out: "
            "%s. Its file records the %d members: Ensemble.load(path, make_model) needs no "
            "count.", rt.study_name, len(members), summary.n_splits, list(members),
            ", ".join(f"split {k} ({r})" for k, r in left_out.items()), len(members))  # fmt: skip
    else:
        _logger.info("The ensemble of study %r keeps all %d splits (members: splits %s).",
                     rt.study_name, len(members), list(members))  # fmt: skip
    return state, left_out


def write_file(
    rt: StudyRuntime, state: Mapping[str, Any], path: str | os.PathLike[str], register: bool
) -> Path:
    """Write ``state`` to ``path`` atomically; ``register``: as an artifact of the study."""
    path = save_state_dict(state, path)
    if register:  # finished trials are read-only: the export belongs to the study
        retry_transient(
            optuna.artifacts.upload_artifact,
            artifact_store=rt.store.artifact_store, file_path=str(path),
            study_or_trial=rt.study,
        )  # fmt: skip
    return path


def export_ensemble(
    rt: StudyRuntime,
    path: str | os.PathLike[str],
    splits: Sequence[int] | None = None,
    *,
    allow_incomplete: bool = False,
    register: bool = True,
    summary: CrossSplitSummary | None = None,
) -> tuple[Path, dict[str, Any], dict[int, str]]:
    """Write the ensemble's file (see :func:`ensemble_state_dict`).

    Returns:
        The path, the file's description (``n_members``, ``splits``, ``combine``) and
        the left-out splits with their reasons.
    """
    state, left_out = ensemble_state_dict(
        rt, splits, allow_incomplete=allow_incomplete, summary=summary
    )
    return write_file(rt, state, path, register), state[EXTRA_STATE_KEY], left_out


def _soup_states(
    rt: StudyRuntime, splits: Sequence[int] | None, check_ancestry: bool, summary: CrossSplitSummary
) -> dict[int, dict[str, torch.Tensor]]:
    """The best weights of the soup's members, refused when they share no ancestry."""
    trials = _finished(rt, splits, summary)
    lineages = {s: list(t.system_attrs.get(LINEAGE_KEY, [s])) for s, t in trials.items()}
    if check_ancestry and len(trials) > 1 and not shared_ancestry(lineages):
        raise ValueError(
            f"The models of splits {sorted(trials)} share no ancestry (lineages {lineages}): "
            "they were trained from independent initialisations, and the average of such "
            "weights scores near chance. Use study.ensemble(...) to combine them, a "
            "transfer strategy that copies weights (GreedyTransfer, PBTTransfer) so the "
            "splits share ancestry, or check_ancestry=False if they share an "
            "initialisation the lineage cannot see (e.g. one pretrained checkpoint)."
        )
    return _best_states(rt, trials)


def build_soup(
    rt: StudyRuntime,
    model_fn: Callable[[], nn.Module],
    method: str = "greedy",
    evaluate: Callable[[nn.Module, np.ndarray], float] | None = None,
    indices: np.ndarray | None = None,
    splits: Sequence[int] | None = None,
    check_ancestry: bool = True,
    *,
    summary: CrossSplitSummary | None = None,
) -> tuple[nn.Module, list[int], float]:
    """Average the weights of the finished splits' best models into one model.

    Returns:
        The soup (a fresh ``model_fn()`` holding the averaged weights), the splits in
        it, and its score on ``indices`` (NaN when not scored).
    """
    check_choice("method", method, _SOUPS)
    states = _soup_states(rt, splits, check_ancestry, summary or study_summary(rt))

    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        model = model_fn()
        model.load_state_dict(state)
        return model.eval()

    if method == "uniform":
        model = build(average_states(list(states.values())))
        if evaluate is None or indices is None or len(indices) == 0:
            return model, sorted(states), math.nan
        with torch.no_grad():
            return model, sorted(states), float(evaluate(model, indices))
    if evaluate is None or indices is None or len(indices) == 0:
        raise ValueError(
            "A greedy soup adds members only while their score improves on rows no split "
            "trained on: create the study with selection_fraction > 0 (e.g. 0.1), or pass "
            "evaluate=fn and indices=rows held out from every split."
        )

    def score(state: dict[str, torch.Tensor]) -> float:
        with torch.no_grad():
            return float(evaluate(build(state), indices))

    own = {s: score(dict(states[s])) for s in states}
    order = rank(own, rt.direction)
    order += [s for s in states if s not in order]  # NaN scores last
    kept, soup_score = greedy_soup([states[s] for s in order], score, rt.direction)
    members = [order[i] for i in kept]
    return build(average_states([states[s] for s in members])), members, soup_score


def score_outputs(
    rt: StudyRuntime,
    model_fn: Callable[[], nn.Module],
    evaluate: Callable[[nn.Module, np.ndarray], float],
    indices: np.ndarray,
    *,
    summary: CrossSplitSummary | None = None,
) -> dict[str, Any]:
    """Score the chosen single model, the ensemble and both soups on ``indices``.

    The result is stored in the study (system attribute ``mto:outputs``) and shown by
    ``study.summary()``. An output that is refused (a soup without shared ancestry, an
    ensemble whose combine rule is not known) records the reason instead of a score.

    Returns:
        ``{"rows": n, "single": {...}, "ensemble": {...}, "uniform_soup": {...},
        "greedy_soup": {...}}``, each with ``score`` and ``splits`` (or ``error``).
    """
    summary = summary or study_summary(rt)
    out: dict[str, Any] = {"rows": len(indices)}
    best = summary.best_split
    single = model_fn()
    single.load_state_dict(best_state_dict(rt, best, summary=summary))
    with torch.no_grad():
        out["single"] = {"score": float(evaluate(single.eval(), indices)), "splits": [best]}
        ensemble = build_ensemble(rt, model_fn, summary=summary)
        try:
            out["ensemble"] = {"score": float(evaluate(ensemble, indices)),
                               "splits": ensemble.splits}  # fmt: skip
        except ValueError as err:  # e.g. combine="auto" on wide outputs: which task?
            out["ensemble"] = {"error": str(err)}
    for method in _SOUPS:
        try:
            _, members, soup_score = build_soup(
                rt, model_fn, method, evaluate, indices, summary=summary
            )
            out[f"{method}_soup"] = {"score": soup_score, "splits": members}
        except ValueError as err:
            out[f"{method}_soup"] = {"error": str(err)}
    storage_of(rt.study).set_study_system_attr(study_id_of(rt.study), OUTPUTS_KEY, out)
    return out


def export_soup(
    rt: StudyRuntime,
    path: str | os.PathLike[str],
    *,
    allow_incomplete: bool = False,
    summary: CrossSplitSummary | None = None,
) -> tuple[Path, list[int]]:
    """Write the uniform soup's ``state_dict`` (no model needed); return it and its splits."""
    summary = summary or study_summary(rt)
    if not allow_incomplete:
        refuse_incomplete(rt.study_name, summary, "a soup would miss the unfinished splits",
                          "allow_incomplete=True")  # fmt: skip
    states = _soup_states(rt, None, True, summary)
    return write_file(rt, average_states(list(states.values())), path, True), sorted(states)
