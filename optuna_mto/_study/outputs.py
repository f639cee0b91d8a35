"""A study's final outputs from all K models: the ensemble, its file, soups, their scores.

Every output combines the models the way the study's task says (see
:mod:`optuna_mto._study.task`): the mean of softmax probabilities for classifiers, the mean of
outputs for regression. A *soup* averages weights into one model; it only works when the
members share ancestry (one split's weights copied into the others by transfer): weight
averages of independently initialised networks score near chance, so :func:`build_soup`
refuses them unless told otherwise. The averaging itself is in :mod:`optuna_mto._study.soup`.
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

from optuna_mto._data.dataset import dataset_info
from optuna_mto._logging import get_logger
from optuna_mto._storage.optuna_internals import storage_of, study_id_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import LINEAGE_KEY, OUTPUTS_KEY
from optuna_mto._study.ensemble import EXTRA_STATE_KEY, Ensemble, ensemble_info, save_state_dict
from optuna_mto._study.results import checkpoint_of, refuse_incomplete
from optuna_mto._study.soup import average_states, greedy_soup, shared_ancestry
from optuna_mto._study.summary import CrossSplitSummary, latest_split_trials
from optuna_mto._study.task import combine_for, study_task
from optuna_mto._validation import check_choice
from optuna_mto.transfer._selection import rank

if TYPE_CHECKING:
    from optuna_mto._study.study import MTOStudy

__all__ = ["build_ensemble", "build_soup", "ensemble_state_dict", "export_ensemble", "export_soup",
           "score_outputs", "score_outputs_after_optimize", "write_file"]  # fmt: skip

_logger = get_logger(__name__)
_SOUPS = ("uniform", "greedy")


def _finished(
    study: MTOStudy, splits: Sequence[int] | None, summary: CrossSplitSummary | None = None
) -> dict[int, Any]:
    trials = latest_split_trials(study.study.get_trials(deepcopy=False))
    done = (summary or study.summary()).ranking  # finished splits, best first
    if splits is None:
        chosen = done
    else:
        chosen = list(splits)
        missing = [s for s in chosen if s not in done]
        if missing:
            raise ValueError(
                f"Split(s) {missing} of study {study.study_name!r} have not finished; "
                f"finished splits: {sorted(done)}."
            )
    if not chosen:
        raise ValueError(f"No split of study {study.study_name!r} has finished yet.")
    return {s: trials[s] for s in chosen}


def _best_states(
    study: MTOStudy, trials: Mapping[int, Any], map_location: str | torch.device = "cpu"
) -> dict[int, dict[str, torch.Tensor]]:
    """The best weights of each finished split trial (one checkpoint read each)."""
    store = study._rt.store
    return {s: store.load(checkpoint_of(t), map_location=map_location)["model"]
            for s, t in trials.items()}  # fmt: skip


def build_ensemble(
    study: MTOStudy,
    model_fn: Callable[[], nn.Module],
    splits: Sequence[int] | None = None,
    combine: str | None = None,
    map_location: str | torch.device = "cpu",
) -> Ensemble:
    """Return an :class:`Ensemble` of the finished splits' best models (best ranked first).

    ``combine`` defaults to the study's task (see :func:`optuna_mto._study.task.combine_for`).
    """
    combine = combine or combine_for(study_task(study._rt))
    trials = _finished(study, splits)
    members = []
    for state in _best_states(study, trials, map_location).values():
        model = model_fn()
        model.load_state_dict(state)
        members.append(model.to(map_location))
    return Ensemble(members, combine=combine, splits=list(trials)).eval()


def ensemble_state_dict(
    study: MTOStudy, splits: Sequence[int] | None = None, *, allow_incomplete: bool = False
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
    summary = study.summary()
    if splits is None and not allow_incomplete:
        refuse_incomplete(
            study.study_name, summary, "an ensemble would miss the unfinished splits",
            "allow_incomplete=True to use the finished ones, or splits=[...]",
        )  # fmt: skip
    members = _best_states(study, _finished(study, splits, summary))
    state: dict[str, Any] = {
        f"members.{i}.{name}": tensor
        for i, member in enumerate(members.values())
        for name, tensor in member.items()
    }
    state[EXTRA_STATE_KEY] = ensemble_info(
        len(members), list(members), combine_for(study_task(study._rt))
    )
    states = summary.states or ["not finished"] * summary.n_splits
    why = (lambda k: states[k]) if splits is None else (lambda k: f"not in splits={list(splits)}")
    left_out = {k: why(k) for k in range(summary.n_splits) if k not in members}
    if left_out:
        log = _logger.warning if splits is None else _logger.info
        log("The ensemble of study %r keeps %d of %d splits (members: splits %s); left out: "
            "%s. Its file records the %d members: Ensemble.load(path, make_model) needs no "
            "count.", study.study_name, len(members), summary.n_splits, list(members),
            ", ".join(f"split {k} ({r})" for k, r in left_out.items()), len(members))  # fmt: skip
    else:
        _logger.info("The ensemble of study %r keeps all %d splits (members: splits %s).",
                     study.study_name, len(members), list(members))  # fmt: skip
    return state, left_out


def write_file(
    study: MTOStudy, state: Mapping[str, Any], path: str | os.PathLike[str], register: bool
) -> Path:
    """Write ``state`` to ``path`` atomically; ``register``: as an artifact of the study."""
    path = save_state_dict(state, path)
    if register:  # finished trials are read-only: the export belongs to the study
        retry_transient(
            optuna.artifacts.upload_artifact,
            artifact_store=study._rt.store.artifact_store, file_path=str(path),
            study_or_trial=study.study,
        )  # fmt: skip
    return path


def export_ensemble(
    study: MTOStudy,
    path: str | os.PathLike[str],
    splits: Sequence[int] | None = None,
    *,
    allow_incomplete: bool = False,
    register: bool = True,
) -> tuple[Path, dict[str, Any], dict[int, str]]:
    """Write the ensemble's file (see :func:`ensemble_state_dict`).

    Returns:
        The path, the file's description (``n_members``, ``splits``, ``combine``) and
        the left-out splits with their reasons.
    """
    state, left_out = ensemble_state_dict(study, splits, allow_incomplete=allow_incomplete)
    return write_file(study, state, path, register), state[EXTRA_STATE_KEY], left_out


def _soup_states(study: MTOStudy, splits: Sequence[int] | None, check_ancestry: bool) -> dict:
    trials = _finished(study, splits)
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
    return _best_states(study, trials)


def build_soup(
    study: MTOStudy,
    model_fn: Callable[[], nn.Module],
    method: str = "greedy",
    evaluate: Callable[[nn.Module, np.ndarray], float] | None = None,
    indices: np.ndarray | None = None,
    splits: Sequence[int] | None = None,
    check_ancestry: bool = True,
) -> tuple[nn.Module, list[int], float]:
    """Average the weights of the finished splits' best models into one model.

    Returns:
        The soup (a fresh ``model_fn()`` holding the averaged weights), the splits in
        it, and its score on ``indices`` (NaN when not scored).
    """
    check_choice("method", method, _SOUPS)
    states = _soup_states(study, splits, check_ancestry)

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
    order = rank(own, study.direction)
    order += [s for s in states if s not in order]  # NaN scores last
    kept, soup_score = greedy_soup([states[s] for s in order], score, study.direction)
    members = [order[i] for i in kept]
    return build(average_states([states[s] for s in members])), members, soup_score


def score_outputs(
    study: MTOStudy,
    model_fn: Callable[[], nn.Module],
    evaluate: Callable[[nn.Module, np.ndarray], float],
    indices: np.ndarray,
) -> dict[str, Any]:
    """Score the chosen single model, the ensemble and both soups on ``indices``.

    The result is stored in the study (system attribute ``mto:outputs``) and shown by
    ``study.summary()``. An output that is refused (a soup without shared ancestry, an
    ensemble whose combine rule is not known) records the reason instead of a score.

    Returns:
        ``{"rows": n, "single": {...}, "ensemble": {...}, "uniform_soup": {...},
        "greedy_soup": {...}}``, each with ``score`` and ``splits`` (or ``error``).
    """
    out: dict[str, Any] = {"rows": len(indices)}
    best = study.summary().best_split
    single = model_fn()
    single.load_state_dict(study.best_state_dict(best))
    with torch.no_grad():
        out["single"] = {"score": float(evaluate(single.eval(), indices)), "splits": [best]}
        ensemble = build_ensemble(study, model_fn)
        try:
            out["ensemble"] = {"score": float(evaluate(ensemble, indices)),
                               "splits": ensemble.splits}  # fmt: skip
        except ValueError as err:  # e.g. combine="auto" on wide outputs: which task?
            out["ensemble"] = {"error": str(err)}
    for method in _SOUPS:
        try:
            _, members, soup_score = build_soup(study, model_fn, method, evaluate, indices)
            out[f"{method}_soup"] = {"score": soup_score, "splits": members}
        except ValueError as err:
            out[f"{method}_soup"] = {"error": str(err)}
    storage_of(study.study).set_study_system_attr(study_id_of(study.study), OUTPUTS_KEY, out)
    return out


def score_outputs_after_optimize(study: MTOStudy, objective: Any, evaluate: Any) -> None:
    """Score the final outputs once the study is complete, if it can be done honestly.

    Needs a selection set (rows no split trained on), an evaluate function and an
    objective that builds models (``objective.model_fn``, as :class:`SupervisedTrainer`).
    """
    model_fn = getattr(objective, "model_fn", None)
    info = dataset_info(study._rt)
    if model_fn is None or evaluate is None or info is None or not study.summary().complete:
        return
    rows = study.selection_indices(int(info["n_samples"]))
    if len(rows):
        score_outputs(study, model_fn, evaluate, rows)


def export_soup(
    study: MTOStudy, path: str | os.PathLike[str], *, allow_incomplete: bool = False
) -> tuple[Path, list[int]]:
    """Write the uniform soup's ``state_dict`` (no model needed); return it and its splits."""
    if not allow_incomplete:
        refuse_incomplete(study.study_name, study.summary(), "a soup would miss the "
                          "unfinished splits", "allow_incomplete=True")  # fmt: skip
    states = _soup_states(study, None, True)
    return write_file(study, average_states(list(states.values())), path, True), sorted(states)


def announce_default_output(study: MTOStudy) -> None:
    """Name a complete study's default output (the ensemble or, per its manager, the soup)."""
    summary, key = study.summary(), study.transfer.default_output
    if not summary.complete:
        return
    name, scored = key.replace("_", " "), summary.outputs or {}  # "ensemble", "uniform soup"
    main, single, scores = scored.get(key, {}), scored.get("single", {}), ""
    if "score" in main and "score" in single:
        scores = (f" (on the {scored['rows']} selection rows: {name} {main['score']:.4f}, "
                  f"best single split {single['score']:.4f})")  # fmt: skip
    _logger.info(
        "Study %r is complete. Its default output is the %s of its %d models%s: study.%s or "
        "optuna-mto export; study.load_best_model(model) gives the best split's model alone.",
        study.study_name, name, len(summary.ranking), scores,
        "soup(make_model, 'uniform')" if key == "uniform_soup"
        else "ensemble(make_model), study.export_ensemble(path)",
    )  # fmt: skip
