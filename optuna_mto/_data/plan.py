"""The split plan: which rows each split trains and validates on, and the selection set."""

from __future__ import annotations

import warnings

import numpy as np

from optuna_mto._data.splits import BaseSplitter

__all__ = ["COARSE_VALID_ROWS", "MIN_TRAIN_ROWS", "MIN_VALID_ROWS", "SplitPlan", "check_plan"]

_SELECTION_STREAM = 0x5E1EC7  # a fixed seed stream, apart from the splits' own
#: Fewest training rows of a split (``optimize`` refuses fewer before any split starts).
MIN_TRAIN_ROWS = 5
#: Fewest validation rows of a split: a score on n rows moves in steps of 1/n.
MIN_VALID_ROWS = 5
#: With fewer validation rows than this, ``optimize`` warns that scores are coarse.
COARSE_VALID_ROWS = 30


class SplitPlan:
    """The K (train, validation) index pairs of a dataset, and an optional selection set.

    With ``selection_fraction > 0`` a random share of the rows is held out from every
    split (no split trains or validates on it) and used only to rank the final
    models: an honest estimate, since random splits overlap and every split's model
    has trained on most of the other splits' validation rows.

    Args:
        splitter: Draws the splits.
        n_samples: Rows in the dataset.
        targets: Labels (for stratified splitting), one per row.
        selection_fraction: Share of rows held out for selection, in [0, 0.5].
    """

    def __init__(
        self,
        splitter: BaseSplitter,
        n_samples: int,
        targets: np.ndarray | None = None,
        selection_fraction: float = 0.0,
    ) -> None:
        self.splitter = splitter
        self.n_samples = n_samples
        self.targets = targets
        rows = np.arange(n_samples, dtype=np.int64)
        n_selection = int(round(n_samples * selection_fraction))
        if n_selection:
            seq = np.random.SeedSequence([splitter.seed, _SELECTION_STREAM])
            order = np.random.default_rng(seq).permutation(n_samples)
            self.selection = np.sort(order[:n_selection]).astype(np.int64)
            self.pool = np.sort(order[n_selection:]).astype(np.int64)
        else:
            self.selection, self.pool = rows[:0], rows
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def split(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(train, valid)`` rows of ``split`` (sorted dataset row indices)."""
        if split not in self._cache:
            labels = None if self.targets is None else self.targets[self.pool]
            train, valid = self.splitter.split(len(self.pool), split, labels)
            self._cache[split] = (self.pool[train], self.pool[valid])
        return self._cache[split]

    def overlap(self, lineage: list[int]) -> list[float]:
        """Share of each split's validation rows that a model of ``lineage`` trained on.

        Args:
            lineage: The splits whose training rows shaped the model's weights (its own
                split plus every donor it inherited weights from, transitively).

        Returns:
            One share in [0, 1] per split.
        """
        seen = np.zeros(self.n_samples, dtype=bool)
        for source in lineage:
            seen[self.split(source)[0]] = True
        return [float(seen[self.split(j)[1]].mean()) for j in range(self.splitter.n_splits)]


def check_plan(plan: SplitPlan) -> None:
    """Refuse a plan whose splits are too small to score; warn when scores are coarse.

    ``optimize`` calls it before any split starts. Every split needs at least
    :data:`MIN_TRAIN_ROWS` training and :data:`MIN_VALID_ROWS` validation rows, and for
    the stratified splitter every class at least 2 rows (one to train on, one to
    validate on); fewer than :data:`COARSE_VALID_ROWS` validation rows get a warning.

    Raises:
        ValueError: Naming the split, its rows, the minimum and the fix.
    """
    splitter = plan.splitter
    kfold = splitter.kind == "kfold"
    pool = f"{len(plan.pool)} rows the splits share"
    if len(plan.selection):
        pool += f" ({len(plan.selection)} more are held out by selection_fraction)"
    larger_valid = (
        f"fewer splits (now n_splits={splitter.n_splits}; k-fold validates on 1/n_splits)"
        if kfold
        else f"a larger validation_fraction (now {splitter.validation_fraction:g})"
    )
    sizes = {k: (len(plan.split(k)[0]), len(plan.split(k)[1])) for k in range(splitter.n_splits)}
    for k, (n_train, n_valid) in sizes.items():
        if n_train >= MIN_TRAIN_ROWS and n_valid >= MIN_VALID_ROWS:
            continue
        why, fix = "", "more splits" if kfold else "a smaller validation_fraction"
        if n_valid < MIN_VALID_ROWS:
            why = f" (a score on {n_valid} row(s) moves in steps of 1/{max(n_valid, 1)})"
            fix = larger_valid
        if len(plan.selection):
            fix += ", or a smaller selection_fraction"
        raise ValueError(
            f"Split {k} would train on {n_train} and validate on {n_valid} of the {pool}; "
            f"every split needs at least {MIN_TRAIN_ROWS} training and {MIN_VALID_ROWS} "
            f"validation rows{why}. Use more data, or {fix}."
        )
    if splitter.kind == "stratified" and plan.targets is not None:
        labels, counts = np.unique(plan.targets[plan.pool], return_counts=True)
        rare = [c for c, n in zip(labels.tolist(), counts.tolist(), strict=True) if n < 2]
        if rare:
            raise ValueError(
                f"The stratified splitter needs at least 2 rows of every class (one to train "
                f"on, one to validate on), but of the {pool}, {len(rare)} class(es) have a "
                f"single row: {rare[:10]}. Use more data, drop or merge the rare classes, or "
                "splitter='random'."
            )
    k = min(sizes, key=lambda j: sizes[j][1])
    n_valid = sizes[k][1]
    if n_valid < COARSE_VALID_ROWS:
        warnings.warn(
            f"Split {k} validates on only {n_valid} rows (the fewest of the "
            f"{splitter.n_splits} splits): its scores move in steps of 1/{n_valid} = "
            f"{1 / n_valid:.3g}, so transfers are accepted and splits ranked on coarse, noisy "
            f"numbers. Give each split at least {COARSE_VALID_ROWS} validation rows: more "
            f"data, or {larger_valid}.",
            UserWarning,
            stacklevel=6,  # the caller of MTOStudy.optimize
        )
