"""The output ensemble of K split models, and its file.

The K split models are an asset, not only candidates. :class:`Ensemble` combines their
outputs: the mean of their softmax probabilities for classifiers, the mean of their
outputs for regression. Its file is a tensors-only ``state_dict`` that also says how
many members it has, which splits they are and how they combine (the ensemble's
``_extra_state``), so :meth:`Ensemble.load` needs no count. Building ensembles and
soups from a study is in :mod:`optuna_mto._study.outputs`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optuna_mto._validation import check_choice

__all__ = ["COMBINE", "EXTRA_STATE_KEY", "Ensemble", "ensemble_info", "save_state_dict"]

#: How members' outputs combine (see :class:`Ensemble`).
COMBINE = ("softmax", "mean", "auto")
#: The key of the ensemble's description in its ``state_dict`` (PyTorch's extra state).
EXTRA_STATE_KEY = "_extra_state"
#: Version of the description the ensemble writes.
_INFO_VERSION = 1
_MEMBER_KEY = re.compile(r"^members\.(\d+)\.")


def ensemble_info(n_members: int, splits: Sequence[int] | None, combine: str) -> dict[str, Any]:
    """The description an ensemble file carries (plain values: ``weights_only``-safe).

    Args:
        n_members: How many members it has.
        splits: The split each member was trained on, in member order (None: unknown).
        combine: Its combine rule.
    """
    return {
        "version": _INFO_VERSION,
        "n_members": int(n_members),
        "splits": None if splits is None else [int(s) for s in splits],
        "combine": combine,
    }


class Ensemble(nn.Module):
    """K models of one architecture whose outputs are combined.

    With ``combine="softmax"`` (classifiers) the output is the *log* of the mean of the
    members' softmax probabilities: its ``argmax`` is the ensemble's class, and
    ``nn.CrossEntropyLoss`` on it is the ensemble's negative log-likelihood, so an
    evaluate function written for one model works unchanged. With ``combine="mean"``
    (regression) it is the mean of the members' outputs. With ``combine="auto"`` (a
    study that does not know its task) members that return one value per row are
    averaged, and wider outputs raise an error asking which rule to use. The softmax
    of one value is always 1, so ``"softmax"`` on members with one output per row
    raises instead of predicting a constant.

    Its ``state_dict`` holds the members' tensors (keys ``members.<i>.<name>``) and a
    description (key ``_extra_state``: member count, splits, combine rule), all
    loadable with ``torch.load(path, weights_only=True)``. :meth:`load` rebuilds an
    ensemble from a file; ``load_state_dict`` also takes the file's combine rule and
    splits, and names both counts when they differ::

        ens = Ensemble([make_model() for _ in range(k)])
        ens.load_state_dict(torch.load(path, weights_only=True))

    Args:
        members: The models (same architecture).
        combine: ``"softmax"``, ``"mean"`` or ``"auto"``.
        splits: The split each member was trained on, in member order (optional).
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        combine: str = "softmax",
        splits: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_choice("combine", combine, COMBINE)
        if not members:
            raise ValueError("An ensemble needs at least one member, but got none.")
        if splits is not None and len(splits) != len(members):
            raise ValueError(
                f"splits={list(splits)} names {len(splits)} split(s) for {len(members)} "
                "members: pass one split per member, or no splits."
            )
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.splits = None if splits is None else [int(s) for s in splits]

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the combined output of the members (see the class docstring)."""
        outputs = [member(*args, **kwargs) for member in self.members]
        if self._rule(outputs[0]) == "mean":
            return torch.stack(outputs).mean(dim=0)
        probs = torch.stack([out.softmax(dim=1) for out in outputs]).mean(dim=0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def _rule(self, output: torch.Tensor) -> str:
        """The combine rule for members whose output looks like ``output``."""
        one_value = output.ndim < 2 or output.shape[1] == 1
        shape = tuple(output.shape)
        if self.combine == "softmax" and one_value:
            raise ValueError(
                f"combine='softmax' needs one score per class, but the members return one "
                f"value per row (output shape {shape}): the softmax of one value is always "
                "1, so the ensemble would predict a constant. For regression use "
                "combine='mean' (or create the study with task='regression')."
            )
        if self.combine != "auto":
            return self.combine
        if one_value:
            return "mean"
        raise ValueError(
            f"The ensemble does not know whether its members classify or regress, and they "
            f"return {shape[1]} values per row (output shape {shape}): pass "
            "combine='softmax' (classes: mean of the softmax probabilities) or "
            "combine='mean' (regression: mean of the outputs), e.g. study.ensemble(make_model, "
            "combine='mean'), or create the study with task='classification' or "
            "task='regression'."
        )

    def get_extra_state(self) -> dict[str, Any]:
        """The ensemble's description, stored in its ``state_dict`` (key ``_extra_state``)."""
        return ensemble_info(len(self.members), self.splits, self.combine)

    def set_extra_state(self, state: Any) -> None:
        """Take a file's description: check the member count, adopt combine and splits.

        Raises:
            ValueError: If the file holds another number of members than this ensemble.
        """
        n = int(state["n_members"])
        if n != len(self.members):
            raise ValueError(
                f"The state_dict holds an ensemble of {n} members, but this Ensemble has "
                f"{len(self.members)}: build it with {n} members (Ensemble.load(path, "
                "make_model) reads the count from the file)."
            )
        check_choice("combine", state.get("combine", self.combine), COMBINE)
        self.combine = state.get("combine", self.combine)
        splits = state.get("splits")
        self.splits = None if splits is None else [int(s) for s in splits]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ``state_dict`` to ``path`` atomically (temp file + ``os.replace``)."""
        return save_state_dict(self.state_dict(), path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model_fn: Callable[[], nn.Module],
        n_members: int | None = None,
        combine: str | None = None,
    ) -> Ensemble:
        """Rebuild an ensemble from a file written by :meth:`save` or ``export_ensemble``.

        Reads the file with ``weights_only=True``.

        Args:
            path: The file.
            model_fn: Builds one (plain) member model.
            n_members: The number of members, if known: read from the file (or, in files
                of older optuna-mto versions, counted from its keys) when None.
            combine: Override the file's combine rule (older files: ``"softmax"``).

        Raises:
            ValueError: If ``n_members`` differs from the file's count.
        """
        state = dict(torch.load(path, weights_only=True, map_location="cpu"))
        info = state.get(EXTRA_STATE_KEY)
        stored = int(info["n_members"]) if isinstance(info, Mapping) else _count_members(state)
        if stored == 0:
            raise ValueError(
                f"{str(path)!r} holds no ensemble (no keys 'members.<i>.<name>'): load a "
                "single model's file with model.load_state_dict(torch.load(path, "
                "weights_only=True))."
            )
        if n_members is not None and n_members != stored:
            raise ValueError(
                f"{str(path)!r} holds an ensemble of {stored} members, but n_members="
                f"{n_members} was given: pass n_members={stored}, or leave it out."
            )
        ensemble = cls([model_fn() for _ in range(stored)])
        if not isinstance(info, Mapping):  # a file of an older version: no description
            state[EXTRA_STATE_KEY] = ensemble_info(stored, None, "softmax")
        ensemble.load_state_dict(state)
        if combine is not None:
            check_choice("combine", combine, COMBINE)
            ensemble.combine = combine
        return ensemble


def _count_members(state: Mapping[str, Any]) -> int:
    """The member count of an ensemble ``state_dict`` without a description."""
    found = {int(m.group(1)) for key in state if (m := _MEMBER_KEY.match(key))}
    return max(found) + 1 if found else 0


def save_state_dict(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
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
