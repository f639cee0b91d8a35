"""Architecture signatures: weights pass only between splits that build the same model.

Every record a split publishes carries a short signature of its model's tensor names
and shapes. At its first report a split compares its own with the record of the split
that started first, so a model factory that builds different layers for some splits
fails there, once, naming the tensor and both shapes, instead of at the first transfer,
after other splits have completed.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch

from optuna_mto._errors import ArchitectureMismatchError, CheckpointError
from optuna_mto._step.board import SplitRecord
from optuna_mto._step.handle import Shared
from optuna_mto._step.state import unwrap_model
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import CHECKPOINT_MODEL

__all__ = ["arch_signature", "check_architecture", "tensor_shapes"]

Shapes = dict[str, tuple[int, ...]]


def tensor_shapes(state: dict[str, object]) -> Shapes:
    """Return the shape of each entry of a ``state_dict`` (``()`` for a non-tensor)."""
    return {name: tuple(getattr(value, "shape", ())) for name, value in state.items()}


def arch_signature(shapes: Shapes) -> str:
    """Return a short hash of tensor names and shapes (independent of their order)."""
    text = json.dumps(sorted([name, list(shape)] for name, shape in shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_architecture(shared: Shared, split: int, model: torch.nn.Module) -> str:
    """Return the model's signature, checked against the first other split to publish.

    Only when the study transfers (different models may train independently). Records
    without a signature (an older optuna-mto) are not compared.

    Raises:
        ArchitectureMismatchError: Naming the first differing tensor and both shapes.
    """
    shapes = tensor_shapes(unwrap_model(model).state_dict())
    signature = arch_signature(shapes)
    if not shared.manager.enabled or shared.evaluate is None:
        return signature
    records = retry_transient(shared.board.read)
    others = [r for k, r in records.items() if k != split and r.arch is not None]
    if not others:
        return signature
    first = min(others, key=lambda r: (math.inf if r.started is None else r.started, r.split))
    if first.arch == signature:
        return signature
    raise ArchitectureMismatchError(
        f"Split {split}'s model differs from that of split {first.split} (trial "
        f"{first.trial_number}), the first split to publish one: "
        f"{_difference(shared, shapes, first)}. Splits exchange weights, so every split must "
        "build the same layers with the same shapes: make the model factory build one "
        "architecture for every split (compare sizes in separate studies), or create the "
        "study with transfer=NoTransfer() to train different models independently."
    )


def _difference(shared: Shared, own: Shapes, record: SplitRecord) -> str:
    """Name the first tensor whose name or shape differs in ``record``'s checkpoint."""
    k = record.split
    try:
        state = retry_transient(shared.store.load, record.checkpoint, map_location="cpu")
    except CheckpointError as err:
        return f"signature {arch_signature(own)} here, {record.arch} there ({err})"
    other = tensor_shapes(state[CHECKPOINT_MODEL])
    for name, shape in own.items():
        if name not in other:
            return f"tensor {name!r} (shape {shape}) is not in split {k}'s model"
        if other[name] != shape:
            return f"tensor {name!r} has shape {shape} here but {other[name]} in split {k}"
    extra = next((name for name in other if name not in own), None)
    if extra is None:
        return f"signature {arch_signature(own)} here, {record.arch} there"
    return f"split {k}'s model has a tensor {extra!r} (shape {other[extra]}) that this one lacks"
