"""The cross-split table: every split's best model scored on every split's validation set."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from optuna_mto._storage.optuna_internals import storage_of, study_id_of
from optuna_mto._storage.schema import (
    BEST_KEY,
    CROSS_SCORES_KEY,
    OUTPUTS_KEY,
    OVERLAP_KEY,
    SELECTION_SCORE_KEY,
    TRANSFER_ATTR_PREFIX,
)
from optuna_mto._workers.split_trials import count_transfers, latest_split_trials, transfer_tried
from optuna_mto.transfer._selection import rank

__all__ = [
    "CrossSplitSummary",
    "count_transfers",
    "format_number",
    "latest_split_trials",
    "transfer_tried",
]


def format_number(value: float | None, spec: str = "{:.4f}", missing: str = "-") -> str:
    """Format a table cell: ``spec`` for a number, ``missing`` for NaN or None.

    Every table and figure label of a study formats its numbers here.
    """
    if value is None or math.isnan(value):
        return missing
    return spec.format(value)


@dataclasses.dataclass(frozen=True)
class CrossSplitSummary:
    """The K x K cross-split validation matrix and the ranking it gives.

    ``matrix[i, j]`` is the score of split i's best model on split j's validation
    set (NaN while split i is unfinished). Splits are ranked by their row mean, in the
    study's direction: the first of :attr:`ranking` is the model the study exports.

    Attributes:
        study_name: The study.
        direction: ``"maximize"`` or ``"minimize"``.
        matrix: K x K scores.
        trial_numbers: Optuna trial number of each split's completed run (-1 if none).
        own: Each split's best fitness: its best value on its own validation set
            during training.
        accepted_transfers: Transfers kept per split.
        proposed_transfers: Transfers tried per split (a candidate was scored; see
            :func:`transfer_tried`).
        overlap: ``overlap[i, j]``: share of split j's validation rows that split i's
            best model has trained on, counting inherited weights (NaN if unknown).
            Off-diagonal values near 1 mean the cross-split mean is optimistic.
        selection: Each split's best model scored on the held-out selection set
            (NaN without one). When present, it ranks the splits.
        states: How each split stands: ``"complete"``, ``"pruned"``, ``"running"``,
            ``"failed"`` (will be retried), ``"given up"`` or ``"missing"`` (None when
            built from trials alone).
        pruned: Per split, True if its run was pruned (``optuna.TrialPruned``): it has
            no cross-split scores, is not ranked, and its row says ``pruned``.
        failures: Per split, attempts that raised in the user's code and attempts lost
            with their worker (None when built from trials alone).
        outputs: Scores of the final outputs (chosen model, ensemble, uniform and
            greedy soup) on the selection rows, once scored (see ``MTOStudy.ensemble``).
    """

    study_name: str
    direction: str
    matrix: np.ndarray
    trial_numbers: list[int]
    own: list[float]
    accepted_transfers: list[int]
    proposed_transfers: list[int]
    overlap: np.ndarray | None = None
    selection: list[float] | None = None
    states: list[str] | None = None
    pruned: list[bool] | None = None
    outputs: dict[str, Any] | None = None
    failures: list[tuple[int, int]] | None = None

    @classmethod
    def from_study(
        cls,
        study: optuna.Study,
        n_splits: int,
        states: list[str] | None = None,
        failures: list[tuple[int, int]] | None = None,
    ) -> CrossSplitSummary:
        """Assemble the summary from the trials stored in ``study``."""
        matrix = np.full((n_splits, n_splits), np.nan)
        numbers, own = [-1] * n_splits, [math.nan] * n_splits
        accepted, proposed = [0] * n_splits, [0] * n_splits
        overlap = np.full((n_splits, n_splits), np.nan)
        selection = [math.nan] * n_splits
        pruned = [False] * n_splits
        for split, trial in latest_split_trials(study.get_trials(deepcopy=False)).items():
            if split >= n_splits:
                continue
            events = [v for k, v in trial.user_attrs.items() if k.startswith(TRANSFER_ATTR_PREFIX)]
            accepted[split], proposed[split] = count_transfers(events)
            pruned[split] = trial.state == TrialState.PRUNED
            if trial.state != TrialState.COMPLETE:
                continue
            numbers[split] = trial.number
            scores = trial.system_attrs.get(CROSS_SCORES_KEY)
            if scores is not None:
                matrix[split, : len(scores)] = scores
            best = trial.system_attrs.get(BEST_KEY)
            if best is not None:
                own[split] = float(best["fitness"])
            seen = trial.system_attrs.get(OVERLAP_KEY)
            if seen is not None:
                overlap[split, : len(seen)] = seen
            selection[split] = float(trial.system_attrs.get(SELECTION_SCORE_KEY, math.nan))
        direction = study.direction.name.lower()
        outputs = storage_of(study).get_study_system_attrs(study_id_of(study)).get(OUTPUTS_KEY)
        return cls(
            study.study_name, direction, matrix, numbers, own, accepted, proposed, overlap,
            selection, states, pruned, outputs, failures,
        )  # fmt: skip

    @property
    def uses_selection(self) -> bool:
        """True when the study holds out a selection set (which then ranks the splits)."""
        return self.selection is not None and any(not math.isnan(s) for s in self.selection)

    @property
    def seen_share(self) -> np.ndarray:
        """Per split: mean share of the *other* splits' validation rows its model trained on."""
        if self.overlap is None or self.n_splits < 2:
            return np.full(self.n_splits, np.nan)
        off = ~np.eye(self.n_splits, dtype=bool)
        return np.array([row[mask].mean() for row, mask in zip(self.overlap, off, strict=True)])

    @property
    def n_splits(self) -> int:
        """K."""
        return int(self.matrix.shape[0])

    @property
    def mean(self) -> np.ndarray:
        """Row means: each split's mean score over all K validation sets (NaN if unfinished)."""
        with np.errstate(invalid="ignore"):
            return np.array([np.nan if np.isnan(r).any() else r.mean() for r in self.matrix])

    @property
    def ranking(self) -> list[int]:
        """Finished splits, best first: by selection score if any, else by mean."""
        means = np.array(self.selection) if self.uses_selection else self.mean
        return rank({k: float(means[k]) for k in range(self.n_splits)}, self.direction)

    @property
    def best_split(self) -> int | None:
        """The split whose best model ranks first, or None if none has finished."""
        ranking = self.ranking
        return ranking[0] if ranking else None

    @property
    def complete(self) -> bool:
        """True once every split has finished (or was pruned)."""
        return len(self.ranking) + sum(self.pruned or []) == self.n_splits

    @property
    def incomplete_reason(self) -> str:
        """Which splits are not finished and how they stand ("" when complete)."""
        if self.complete:
            return ""
        ranked = set(self.ranking)
        states = self.states or ["unfinished"] * self.n_splits
        pruned = self.pruned or [False] * self.n_splits
        parts = [
            f"split {k} {states[k]}"
            for k in range(self.n_splits)
            if k not in ranked and not pruned[k]
        ]
        return ", ".join(parts)

    @property
    def row_order(self) -> list[int]:
        """The splits in the order of the table's rows: ranked, then the others."""
        ranking = self.ranking
        return ranking + [s for s in range(self.n_splits) if s not in ranking]

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Return the ranked table's header and rows, as text cells.

        :meth:`to_table` aligns them; the optuna-dashboard note shows them as Markdown,
        so both always show the same columns.
        """
        k = self.n_splits
        head = ["rank", "split", "trial"] + [f"val{j}" for j in range(k)]
        head += ["mean", "own", "xfer", "seen"]
        if self.uses_selection:
            head.append("select")
        if self.failures is not None:
            head.append("err/lost")
        if self.states is not None:
            head.append("state")
        rows = []
        for position, split in enumerate(self.row_order, start=1):
            done = split in self.ranking
            is_pruned = bool(self.pruned and self.pruned[split])
            cells = [str(position) if done else ("pruned" if is_pruned else "-"), str(split)]
            cells.append(str(self.trial_numbers[split]) if self.trial_numbers[split] >= 0 else "-")
            cells += [format_number(v) for v in self.matrix[split]]
            cells += [format_number(self.mean[split]), format_number(self.own[split])]
            cells.append(f"{self.accepted_transfers[split]}/{self.proposed_transfers[split]}")
            cells.append(format_number(self.seen_share[split], "{:.0%}"))
            if self.uses_selection:
                cells.append(format_number(self.selection[split]))  # type: ignore[index]
            if self.failures is not None:
                cells.append("{}/{}".format(*self.failures[split]))
            if self.states is not None:
                cells.append(self.states[split])
            rows.append(cells)
        return head, rows

    def legend(self) -> list[str]:
        """Return the lines that explain the table's columns."""
        lines = [
            "valJ: best model of the split scored on split J's validation set; xfer: "
            "kept/tried transfers;",
            "seen: share of the other splits' validation rows the model trained on (incl. "
            "inherited weights)",
        ]
        if self.uses_selection:
            lines[-1] += "; select: score on the held-out selection set (ranks the models)"
        if self.failures is not None:
            lines.append(
                "err/lost: attempts that raised (max_retries) / lost their worker (max_preemptions)"
            )
        return lines

    def to_table(self) -> str:
        """Return the ranked table as plain text."""
        head, rows = self.table()
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]
        ]
        title = f"Cross-split validation ({self.direction}) of study {self.study_name!r}"
        if not self.complete:
            title += f"\nINCOMPLETE: {self.incomplete_reason}"
        return "\n".join([title, *lines, *self.legend(), *self.outputs_lines()])

    def outputs_lines(self) -> list[str]:
        """Return the lines on the final outputs' scores (none until they are scored)."""
        if not self.outputs:
            return []
        lines = [
            f"Final outputs on the {self.outputs['rows']} selection rows (no split trained on "
            "them):"
        ]
        for key, label in _OUTPUTS:
            entry = self.outputs.get(key)
            if entry is None:
                continue
            if "score" in entry:
                lines.append(
                    f"  {label:<13}{format_number(entry['score'])}  splits {entry['splits']}"
                )
            else:
                why = "members share no ancestry" if "ancestry" in entry["error"] else "not scored"
                lines.append(f"  {label:<13}refused ({why})")
        lines.append(
            "  (the chosen model and the greedy soup were picked on these rows: optimistic)"
        )
        return lines

    def __str__(self) -> str:
        return self.to_table()


_OUTPUTS = (
    ("single", "chosen model"),
    ("ensemble", "ensemble"),
    ("uniform_soup", "uniform soup"),
    ("greedy_soup", "greedy soup"),
)
