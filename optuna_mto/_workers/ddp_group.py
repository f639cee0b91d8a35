"""A process group's control channel, and data-parallel training on it (see ``_distributed``).

:class:`Group` is this rank's place in the torchrun process group; rank 0 broadcasts
its control messages on a gloo group of their own. :func:`shard` and the
gradient-averaging optimizer hook make :class:`~optuna_mto.SupervisedTrainer` data
parallel inside a split.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook

from optuna_mto._errors import MTOError

__all__ = [
    "DistributedSplitError",
    "Group",
    "PeerLostError",
    "SplitAborted",
    "enter_split",
    "expect_kind",
    "leave_split",
    "lost",
    "shard",
]


class PeerLostError(ConnectionError):
    """A collective failed: a rank of the process group is gone (counted as a lost worker)."""


class DistributedSplitError(MTOError, RuntimeError):
    """The process group can run no more splits (a rank failed out of step, or is gone)."""


class SplitAborted(Exception):
    """Rank 0's split ended at a call the ranks share (its error, or Ctrl-C): leave it too."""


@dataclasses.dataclass
class Group:
    """This process's place in the process group, and the group's control channel."""

    rank: int
    world: int
    device: str
    control: Any
    broken: str | None = None

    def send(self, message: dict[str, Any]) -> None:
        """Broadcast ``message`` from rank 0 to the followers."""
        self._broadcast(message)

    def recv(self) -> dict[str, Any]:
        """Receive rank 0's next message (a follower)."""
        return self._broadcast(None)

    def _broadcast(self, message: Any) -> Any:
        box = [message]
        try:
            dist.broadcast_object_list(box, src=0, group=self.control)
        except Exception as err:
            raise lost(self, "a control broadcast", err) from err
        return box[0]


def lost(group: Group, what: str, err: BaseException) -> PeerLostError:
    """Mark ``group`` broken by ``err``, raised by ``what``; return the error to raise."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    group.broken = f"{what} failed on rank {group.rank}: {first[:200]}"
    return PeerLostError(f"{group.broken} (a rank of the process group is gone?)")


_IN_SPLIT: Group | None = None  # set while this rank runs a split's objective
_SHARDED: Group | None = None  # set while a SupervisedTrainer trains it on shards
_HOOKS: list[Any] = []  # the gradient-averaging optimizer hook, while sharded


def expect_kind(message: dict[str, Any], kind: str, rank: int) -> None:
    """Raise DistributedSplitError unless rank 0's ``message`` is of ``kind``."""
    if message["kind"] != kind:
        raise DistributedSplitError(
            f"Rank {rank} is out of step with rank 0: it expected {kind!r} and got "
            f"{message['kind']!r}. Every rank must take the same path through the objective."
        )


def enter_split(group: Group) -> None:
    """Mark the start of a split's objective on this rank."""
    global _IN_SPLIT
    _IN_SPLIT = group


def leave_split() -> None:
    """Mark its end: no more shards, no more gradient averaging."""
    global _IN_SPLIT, _SHARDED
    _IN_SPLIT = _SHARDED = None
    while _HOOKS:
        _HOOKS.pop().remove()


def shard(rows: Any) -> Any:
    """This rank's share of an epoch's permuted training ``rows`` (``SupervisedTrainer``).

    Outside a split run by a process group, ``rows`` unchanged. Inside one, as
    ``DistributedSampler``: padded with the first rows to a multiple of the world size,
    then every ``world``-th row from the rank's own; and from the first call until the
    split ends, every optimizer step first averages the gradients over the ranks (data
    that is sharded needs them averaged, and only such data).
    """
    global _SHARDED
    group = _IN_SPLIT
    if group is None:
        return rows
    if _SHARDED is None:
        _SHARDED = group
        _HOOKS.append(register_optimizer_step_pre_hook(_average_gradients))
    per_rank = -(-len(rows) // group.world)
    padded = rows[torch.arange(per_rank * group.world) % max(len(rows), 1)]
    return padded[group.rank :: group.world]


def _average_gradients(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Average the gradients of ``optimizer``'s parameters over the ranks.

    One all-reduce per (device, dtype), which also counts the ranks that have each
    parameter's gradient: one that no rank has keeps none (as without torchrun).
    """
    group = _SHARDED
    if group is None:
        return
    buckets: dict[tuple[Any, Any], list[torch.nn.Parameter]] = {}
    for param_group in optimizer.param_groups:
        for p in param_group["params"]:
            if p.requires_grad:
                buckets.setdefault((p.device, p.dtype), []).append(p)
    for params in buckets.values():
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        has = [p.grad is not None for p in params]
        flat = torch.cat(
            [g.reshape(-1) for g in grads]
            + [torch.tensor(has, dtype=params[0].dtype, device=params[0].device)]
        )
        try:
            dist.all_reduce(flat)
        except Exception as err:
            raise lost(group, "a gradient all-reduce", err) from err
        flat.div_(group.world)
        offset = 0
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            mean = flat[offset : offset + g.numel()].view_as(g)
            offset += g.numel()
            if p.grad is not None:
                p.grad.copy_(mean)
            elif flat[len(flat) - len(params) + i] > 0:  # another rank has one
                p.grad = mean.clone()
