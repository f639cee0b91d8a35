"""Capturing, applying and checking the training state that checkpoints carry."""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch

from optuna_mto._storage.schema import (
    CHECKPOINT_MODEL,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_SCHEDULER,
    NUMPY_STATE_FIELDS,
    RNG_CUDA,
    RNG_NUMPY,
    RNG_PYTHON,
    RNG_TORCH,
)

__all__ = [
    "apply_state",
    "capture_state",
    "check_compatible",
    "get_rng_state",
    "set_rng_state",
    "unwrap_model",
]

_PARALLEL_WRAPPERS = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return the module inside ``torch.compile``, ``DataParallel`` or DDP wrappers.

    Their ``state_dict`` keys carry a prefix (``_orig_mod.``, ``module.``); the inner
    module's do not. Checkpoints hold the inner module's state, so a compiled split and
    a plain one exchange weights, and the exported model loads into a plain model.
    """
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, torch.nn.Module):
            model = inner
        elif isinstance(model, _PARALLEL_WRAPPERS):
            model = model.module
        else:
            return model


def capture_state(
    model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None, *, clone: bool = True
) -> dict:
    """Return the model's (and optimizer's, scheduler's) state dicts.

    Args:
        model: The model (wrappers are looked through, see :func:`unwrap_model`).
        optimizer: Its optimizer, if any.
        scheduler: Its LR scheduler, if any.
        clone: Deep-copy the tensors (needed when the model changes while the state
            is kept); without it the dicts share the live tensors, which is enough to
            serialise them at once.
    """
    keep = copy.deepcopy if clone else (lambda x: x)
    state: dict[str, Any] = {CHECKPOINT_MODEL: keep(unwrap_model(model).state_dict())}
    if optimizer is not None:
        state[CHECKPOINT_OPTIMIZER] = keep(optimizer.state_dict())
    if scheduler is not None:
        state[CHECKPOINT_SCHEDULER] = keep(scheduler.state_dict())
    return state


def apply_state(
    state: dict[str, Any], model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None
) -> None:
    """Load ``state`` (from :func:`capture_state` or a checkpoint) into the objects given."""
    unwrap_model(model).load_state_dict(state[CHECKPOINT_MODEL])
    if optimizer is not None and CHECKPOINT_OPTIMIZER in state:
        optimizer.load_state_dict(state[CHECKPOINT_OPTIMIZER])
    if scheduler is not None and CHECKPOINT_SCHEDULER in state:
        scheduler.load_state_dict(state[CHECKPOINT_SCHEDULER])


def get_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Return the global RNG states (torch, Python, NumPy) as tensors and ints.

    Args:
        device: The device the split trains on. For a CUDA device its generator's state
            is included too; the other GPUs' are not, so a worker never initialises
            CUDA, or a context on another GPU, just to save a checkpoint.
    """
    np_state = np.random.get_state()
    np_fields = (
        torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        int(np_state[2]),
        int(np_state[3]),
        float(np_state[4]),
    )
    state: dict[str, Any] = {
        RNG_TORCH: torch.get_rng_state(),
        RNG_PYTHON: random.getstate(),
        RNG_NUMPY: dict(zip(NUMPY_STATE_FIELDS, np_fields, strict=True)),
    }
    if device is not None and device.type == "cuda":
        state[RNG_CUDA] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore RNG states saved by :func:`get_rng_state`.

    Args:
        state: The saved states (their tensors may be on any device).
        device: The device the split trains on now. A saved CUDA state is restored onto
            it (also when the split was on another GPU before); on the CPU it is ignored.
    """
    torch.set_rng_state(state[RNG_TORCH].cpu())
    version, internal, gauss = state[RNG_PYTHON]
    random.setstate((version, tuple(internal), gauss))
    keys, pos, has_gauss, cached_gaussian = (state[RNG_NUMPY][f] for f in NUMPY_STATE_FIELDS)
    keys = keys.cpu().numpy().astype(np.uint32)  # loaded onto a GPU, maybe
    np.random.set_state(("MT19937", keys, pos, has_gauss, cached_gaussian))
    if RNG_CUDA in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state[RNG_CUDA].cpu(), device)


def check_compatible(own: dict[str, torch.Tensor], donor: dict[str, torch.Tensor]) -> None:
    """Raise ValueError naming the first tensor whose name or shape differs.

    Args:
        own: The receiver's ``state_dict()``.
        donor: The donor's ``state_dict()``.
    """
    for name in own:
        if name not in donor:
            raise ValueError(
                f"The donor's weights have no tensor {name!r} that the receiver's model has; "
                "every split must use the same architecture."
            )
        own_shape, donor_shape = tuple(own[name].shape), tuple(donor[name].shape)
        if own_shape != donor_shape:
            raise ValueError(
                f"Tensor {name!r} has shape {donor_shape} in the donor but {own_shape} in the "
                "receiver; every split must use the same architecture."
            )
    extra = [name for name in donor if name not in own]
    if extra:
        raise ValueError(
            f"The donor's weights have tensor {extra[0]!r} that the receiver's model lacks; "
            "every split must use the same architecture."
        )
