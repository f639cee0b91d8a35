"""Interpolation: blend the receiver's weights with a donor's, keep the best blend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from optuna_mto._storage.schema import CHECKPOINT_MODEL
from optuna_mto.transfer._base import Candidate, TransferContext
from optuna_mto.transfer._greedy import GreedyTransfer

__all__ = ["InterpolateTransfer", "interpolate_state"]


def interpolate_state(
    own: dict[str, torch.Tensor], donor: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Return ``(1 - alpha) * own + alpha * donor`` for floating tensors.

    Integer buffers (such as BatchNorm's ``num_batches_tracked``) are taken from the
    receiver unchanged.
    """
    out = {}
    for name, mine in own.items():
        theirs = donor[name].to(mine.device)
        if mine.is_floating_point():
            out[name] = torch.lerp(mine, theirs.to(mine.dtype), alpha)
        else:
            out[name] = mine.clone()
    return out


class InterpolateTransfer(GreedyTransfer):
    """Weight interpolation between the receiver and a donor, searched over ``alphas``.

    Each alpha gives a candidate ``(1 - a) * own + a * donor``; the best on the
    receiver's validation set is kept if it beats the receiver's own score. The
    receiver keeps its own optimizer state.

    Warning:
        Interpolating two networks trained from different random initialisations
        usually lands in a high-loss region between them and is rejected. It works
        when the splits start from one shared initialisation: pass
        ``SupervisedTrainer(..., same_init=True)`` (or seed every split's model alike).

    Example:
        >>> import torch
        >>> from optuna_mto.transfer import InterpolateTransfer, interpolate_state
        >>> interpolate_state({"w": torch.zeros(2)}, {"w": torch.ones(2)}, 0.25)["w"]
        tensor([0.2500, 0.2500])
        >>> InterpolateTransfer(alphas=(0.5,)).alphas
        (0.5,)

    Args:
        alphas: Blend weights to try, each in (0, 1].
        **kwargs: As for :class:`GreedyTransfer` (``copy_optimizer`` is ignored).
    """

    def __init__(self, *, alphas: Sequence[float] = (0.25, 0.5, 0.75), **kwargs: Any) -> None:
        kwargs.pop("copy_optimizer", None)
        super().__init__(copy_optimizer=False, **kwargs)
        alphas = tuple(float(a) for a in alphas)
        if not alphas or any(not 0.0 < a <= 1.0 for a in alphas):
            raise ValueError(f"alphas must be numbers in (0, 1], but got alphas={alphas!r}.")
        self.alphas = alphas

    def candidates(
        self, own: dict[str, Any], donor: dict[str, Any], context: TransferContext
    ) -> Iterator[Candidate]:
        """Yield one blend per alpha, labelled ``"interpolate:<alpha>"``."""
        keep = {k: v for k, v in own.items() if k != CHECKPOINT_MODEL}
        for alpha in self.alphas:
            blended = interpolate_state(own[CHECKPOINT_MODEL], donor[CHECKPOINT_MODEL], alpha)
            yield f"interpolate:{alpha:g}", {**keep, CHECKPOINT_MODEL: blended}

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        params = super().get_params()
        params.pop("copy_optimizer")
        return {**params, "alphas": list(self.alphas)}
