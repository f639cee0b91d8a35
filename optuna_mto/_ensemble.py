"""Final outputs that use all K models: an output ensemble and weight-averaged soups.

The K split models are an asset, not only candidates. :class:`Ensemble` averages
their outputs (softmax probabilities for classifiers, plain outputs for regression);
a *soup* averages their weights into one model of the original size. A soup only
works when the members share ancestry (one split's weights copied into the others
by transfer): weight averages of independently initialised networks score near
chance, so :func:`build_soup` refuses them unless told otherwise. The averaging itself
is in :mod:`optuna_mto._soup`.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from optuna_mto._dataset import dataset_info
from optuna_mto._optuna_internals import storage_of, study_id_of
from optuna_mto._results import checkpoint_of, refuse_incomplete
from optuna_mto._schema import LINEAGE_KEY, OUTPUTS_KEY
from optuna_mto._soup import average_states, greedy_soup, shared_ancestry
from optuna_mto._summary import CrossSplitSummary, latest_split_trials
from optuna_mto._validation import check_choice

if TYPE_CHECKING:
    from optuna_mto._study import MTOStudy

__all__ = [
    "OUTPUTS_KEY",
    "Ensemble",
    "build_ensemble",
    "build_soup",
    "ensemble_state_dict",
    "save_state_dict",
    "score_outputs",
    "score_outputs_after_optimize",
]

_COMBINE = ("softmax", "mean")
_SOUPS = ("uniform", "greedy")


class Ensemble(nn.Module):
    """K models of one architecture whose outputs are averaged.

    With ``combine="softmax"`` (classifiers) the output is the *log* of the mean of the
    members' softmax probabilities: its ``argmax`` is the ensemble's class, and
    ``nn.CrossEntropyLoss`` on it is the ensemble's negative log-likelihood, so an
    evaluate function written for one model works unchanged. With ``combine="mean"``
    (regression) it is the mean of the members' outputs.

    Its ``state_dict`` holds tensors only (keys ``members.<i>.<name>``). To load a saved
    ensemble, rebuild the same shape and load the weights::

        ens = Ensemble([make_model() for _ in range(k)], combine="softmax")
        ens.load_state_dict(torch.load(path, weights_only=True))

    or use :meth:`load`.

    Args:
        members: The models (same architecture).
        combine: ``"softmax"`` or ``"mean"``.
    """

    def __init__(self, members: Sequence[nn.Module], combine: str = "softmax") -> None:
        super().__init__()
        check_choice("combine", combine, _COMBINE)
        if not members:
            raise ValueError("An ensemble needs at least one member, but got none.")
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the combined output of the members (see the class docstring)."""
        outputs = [member(*args, **kwargs) for member in self.members]
        if self.combine == "mean":
            return torch.stack(outputs).mean(dim=0)
        probs = torch.stack([out.softmax(dim=1) for out in outputs]).mean(dim=0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ``state_dict`` to ``path`` atomically (temp file + ``os.replace``)."""
        return save_state_dict(self.state_dict(), path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model_fn: Callable[[], nn.Module],
        n_members: int,
        combine: str = "softmax",
    ) -> Ensemble:
        """Rebuild an ensemble of ``n_members`` models and load a file written by :meth:`save`."""
        ensemble = cls([model_fn() for _ in range(n_members)], combine=combine)
        ensemble.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        return ensemble


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write a ``state_dict`` to ``path`` atomically; a failed write leaves no file.

    The file gets the mode ``open()`` gives (0o666 less the umask): it is for people
    to share, unlike a private temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------- study side
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


def _lineages(trials: Mapping[int, Any]) -> dict[int, list[int]]:
    return {s: list(t.system_attrs.get(LINEAGE_KEY, [s])) for s, t in trials.items()}


def build_ensemble(
    study: MTOStudy,
    model_fn: Callable[[], nn.Module],
    splits: Sequence[int] | None = None,
    combine: str = "softmax",
    map_location: str | torch.device = "cpu",
) -> Ensemble:
    """Return an :class:`Ensemble` of the finished splits' best models (best ranked first)."""
    members = []
    for state in _best_states(study, _finished(study, splits), map_location).values():
        model = model_fn()
        model.load_state_dict(state)
        members.append(model.to(map_location))
    return Ensemble(members, combine=combine).eval()


def ensemble_state_dict(
    study: MTOStudy, splits: Sequence[int] | None = None, *, allow_incomplete: bool = False
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Return the ``state_dict`` of the finished splits' :class:`Ensemble`, and its splits.

    Built from the checkpoints alone (no model needed), best-ranked split first, with the
    keys ``members.<i>.<name>`` that :meth:`Ensemble.load` reads. Without ``splits`` an
    incomplete study is refused unless ``allow_incomplete=True``.
    """
    summary = study.summary()
    if splits is None and not allow_incomplete:
        refuse_incomplete(
            study.study_name, summary, "an ensemble would miss the unfinished splits",
            "allow_incomplete=True to use the finished ones, or splits=[...]",
        )  # fmt: skip
    members = _best_states(study, _finished(study, splits, summary))
    state = {
        f"members.{i}.{name}": tensor
        for i, member in enumerate(members.values())
        for name, tensor in member.items()
    }
    return state, list(members)


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
    trials = _finished(study, splits)
    lineages = _lineages(trials)
    if check_ancestry and len(trials) > 1 and not shared_ancestry(lineages):
        raise ValueError(
            f"The models of splits {sorted(trials)} share no ancestry (lineages {lineages}): "
            "they were trained from independent initialisations, and the average of such "
            "weights scores near chance. Use study.ensemble(...) to combine them, a "
            "transfer strategy that copies weights (GreedyTransfer, PBTTransfer) so the "
            "splits share ancestry, or check_ancestry=False if they share an "
            "initialisation the lineage cannot see (e.g. one pretrained checkpoint)."
        )
    states = _best_states(study, trials)

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
    sign = -1.0 if study.direction == "maximize" else 1.0
    order = sorted(states, key=lambda s: (sign * own[s], s))
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
    ``study.summary()``. A soup that is refused records the reason instead of a score.

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
        splits = study.summary().ranking
        out["ensemble"] = {"score": float(evaluate(ensemble, indices)), "splits": splits}
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
