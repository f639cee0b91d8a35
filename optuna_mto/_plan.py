"""The split plan: which rows each split trains and validates on, and the selection set."""

from __future__ import annotations

import numpy as np

from optuna_mto._splits import BaseSplitter

__all__ = ["SplitPlan"]

_SELECTION_STREAM = 0x5E1EC7  # a fixed seed stream, apart from the splits' own


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
