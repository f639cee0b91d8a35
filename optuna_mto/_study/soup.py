"""Weight soups: the element-wise average of models of one architecture.

A soup only works when the members share ancestry (one split's weights copied into the
others by transfer): weight averages of independently initialised networks score near
chance, so :func:`shared_ancestry` tells whether a set of lineages qualifies. These are
pure functions of ``state_dict``s; ``optuna_mto._study.outputs.build_soup`` applies them to a
study's models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from optuna_mto.transfer import is_better

__all__ = ["average_states", "greedy_soup", "shared_ancestry"]


def average_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Return the element-wise mean of ``state_dict``s of one architecture.

    Floating-point tensors are averaged; integer tensors (such as BatchNorm's
    ``num_batches_tracked``) are taken from the first state.

    Raises:
        ValueError: If there is no state, or the states' names or shapes differ.
    """
    if not states:
        raise ValueError("Cannot average zero state_dicts; pass at least one.")
    first = states[0]
    out: dict[str, torch.Tensor] = {}
    for name, tensor in first.items():
        for index, other in enumerate(states[1:], start=1):
            if name not in other or other[name].shape != tensor.shape:
                raise ValueError(
                    f"State {index} has no tensor {name!r} of shape {tuple(tensor.shape)}; "
                    "every member of a soup must have the same architecture."
                )
        if tensor.is_floating_point():
            out[name] = torch.stack([s[name].to(tensor.device) for s in states]).mean(dim=0)
        else:
            out[name] = tensor.clone()
    return out


def shared_ancestry(lineages: Mapping[int, Sequence[int]]) -> bool:
    """Return True when the lineages of all members have a split in common.

    A lineage lists the splits whose weights shaped a model (its own and every donor's,
    see ``SplitTrial.lineage``). A common split means every member descends from
    weights that were copied between them; disjoint lineages are independently
    initialised networks, whose weight average is useless.
    """
    common: set[int] | None = None
    for lineage in lineages.values():
        common = set(lineage) if common is None else common & set(lineage)
    return bool(common)


def greedy_soup(
    candidates: Sequence[Mapping[str, torch.Tensor]],
    score: Callable[[dict[str, torch.Tensor]], float],
    direction: str,
) -> tuple[list[int], float]:
    """Greedy soup (Wortsman et al., 2022): add members only while the score improves.

    Args:
        candidates: States ordered best first (by their own score).
        score: Scores an averaged state on the selection rows.
        direction: ``"maximize"`` or ``"minimize"``.

    Returns:
        The indices (into ``candidates``) of the members kept, and the soup's score.
    """
    kept = [0]
    best = score(dict(candidates[0]))
    for index in range(1, len(candidates)):
        soup = average_states([candidates[i] for i in [*kept, index]])
        soup_score = score(soup)
        if is_better(soup_score, best, direction):
            kept.append(index)
            best = soup_score
    return kept, best
