"""Splitters by name: the one list of names, and the checks a stored config shares with them.

:class:`~optuna_mto.StudyConfig` stores a splitter as its name (``"random"``, ``"kfold"``,
``"stratified"``); :func:`make_splitter` builds it, and :func:`check_splitter` checks a
name and its arguments by the same rules the splitter classes apply.

The classes live in :mod:`optuna_mto._data.splitters`, the dataset fingerprint in
:mod:`optuna_mto._data.fingerprint`; both are re-exported here.
"""

from __future__ import annotations

from typing import Any

from optuna_mto._data.fingerprint import dataset_fingerprint
from optuna_mto._data.splitters import (
    BaseSplitter,
    KFoldSplitter,
    RandomSplitter,
    StratifiedSplitter,
    check_min_splits,
    check_splitter_args,
)
from optuna_mto._validation import check_choice

__all__ = [
    "SPLITTERS",
    "SPLITTER_KINDS",
    "BaseSplitter",
    "KFoldSplitter",
    "RandomSplitter",
    "StratifiedSplitter",
    "check_splitter",
    "dataset_fingerprint",
    "make_splitter",
    "splitter_class",
]

#: The splitter class of each name.
SPLITTERS: dict[str, type[BaseSplitter]] = {
    "random": RandomSplitter,
    "kfold": KFoldSplitter,
    "stratified": StratifiedSplitter,
}
#: The splitter names, in the order messages list them.
SPLITTER_KINDS = tuple(SPLITTERS)


def splitter_class(kind: Any, name: str = "kind") -> type[BaseSplitter]:
    """Return the splitter class named ``kind``.

    Args:
        kind: ``"random"``, ``"kfold"`` or ``"stratified"``.
        name: How the caller's argument is called, for the message.

    Raises:
        ValueError: If ``kind`` is not a splitter name.
    """
    check_choice(name, kind, SPLITTER_KINDS)
    return SPLITTERS[kind]


def check_splitter(
    kind: Any,
    n_splits: Any,
    validation_fraction: Any = 0.2,
    seed: Any = 0,
    *,
    name: str = "kind",
) -> type[BaseSplitter]:
    """Check a splitter given by name and arguments, as :func:`make_splitter` would.

    The arguments are checked in order (``n_splits``, ``validation_fraction``, ``seed``,
    the name, then whether the splitter can make ``n_splits`` splits: k-fold needs two),
    and must be plain Python values, as a stored config holds them.

    Args:
        kind: The splitter's name.
        n_splits: Number of (train, validation) pairs.
        validation_fraction: Fraction of the samples that go to validation.
        seed: Non-negative integer seed.
        name: How the caller calls ``kind``, for the message (``"splitter"`` in a config).

    Returns:
        The splitter class.

    Raises:
        ValueError: Naming the first bad value and the fix.
    """
    check_splitter_args(n_splits, validation_fraction, seed)
    cls = splitter_class(kind, name)
    check_min_splits(cls, kind, n_splits)
    return cls


def make_splitter(
    kind: str, n_splits: int, validation_fraction: float = 0.2, seed: int = 0
) -> BaseSplitter:
    """Build a splitter by name.

    Args:
        kind: ``"random"``, ``"kfold"`` or ``"stratified"``.
        n_splits: Number of (train, validation) pairs.
        validation_fraction: Fraction of the samples that go to validation, in ``(0, 1)``
            (ignored by ``"kfold"``, whose effective fraction is ``1 / n_splits``).
        seed: Non-negative integer seed.

    Returns:
        The splitter; ``make_splitter(**splitter.get_params())`` round-trips.

    Raises:
        ValueError: If ``kind`` is unknown or another argument is invalid.
    """
    return splitter_class(kind)(n_splits, validation_fraction, seed)
