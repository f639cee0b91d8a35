"""Tensors-only checkpoint format: validation, serialisation and safe loading."""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from optuna_mto._errors import CheckpointError

__all__ = ["deserialize_state", "serialize_state", "sha256_hex"]

_PRIMITIVES = (bool, int, float, str, type(None))


def _bad_value(path: str, value: object) -> TypeError:
    return TypeError(
        f"{path} is a {type(value)}; checkpoints hold tensors and plain Python values only"
    )


def _sanitize(value: Any, path: str) -> Any:
    """Return a copy of ``value`` with CPU tensors, or raise TypeError for a disallowed value."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if type(tensor) is not torch.Tensor:
            raise _bad_value(path, value)
        return tensor
    if type(value) in _PRIMITIVES:
        return value
    if isinstance(value, float):  # float subclasses such as numpy.float64: lossless
        return float(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = (
            collections.OrderedDict() if isinstance(value, collections.OrderedDict) else {}
        )
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(
                    f"{path} has a key {key!r} of {type(key)}; checkpoint dict keys must be "
                    "str or int"
                )
            out[key] = _sanitize(item, f"{path}[{key!r}]")
        # nn.Module.state_dict() keeps per-module versions in ``_metadata``; load_state_dict
        # uses them, and the weights-only loader restores them.
        metadata = getattr(value, "_metadata", None)
        if metadata is not None and isinstance(out, collections.OrderedDict):
            out._metadata = _sanitize(metadata, f"{path}._metadata")  # type: ignore[attr-defined]
        return out
    if type(value) is list:
        return [_sanitize(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if type(value) is tuple or isinstance(value, torch.Size):
        return tuple(_sanitize(item, f"{path}[{i}]") for i, item in enumerate(value))
    raise _bad_value(path, value)


def serialize_state(state: Mapping[str, Any]) -> bytes:
    """Serialise a checkpoint to bytes in PyTorch's zip format.

    ``state`` is a nested structure of dicts (with ``str`` or ``int`` keys), lists, tuples,
    tensors and ``int`` / ``float`` / ``bool`` / ``str`` / ``None`` values, such as a model's
    and an optimiser's ``state_dict()`` and ``torch.get_rng_state()``. Tensors are detached
    and moved to the CPU, keeping their dtype, so a checkpoint written on a GPU worker loads
    on any machine.

    Args:
        state: The checkpoint content.

    Returns:
        The serialised checkpoint, loadable with :func:`deserialize_state`.

    Raises:
        TypeError: ``state`` is not a mapping, or holds a value of another type; the message
            names the key path of the first such value (e.g. ``state['optimizer'][0]``).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping, got {type(state)}")
    clean = _sanitize(state, "state")
    buf = io.BytesIO()
    torch.save(clean, buf)
    return buf.getvalue()


def deserialize_state(
    data: bytes, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`serialize_state`, refusing anything but tensors.

    Loading uses ``torch.load(..., weights_only=True)``, which never runs code from the file:
    a checkpoint that holds arbitrary pickled Python objects is refused.

    Args:
        data: The serialised checkpoint.
        map_location: Device to load the tensors on (as for :func:`torch.load`); ``None``
            keeps the stored device, which is always the CPU for :func:`serialize_state`.

    Returns:
        The checkpoint content.

    Raises:
        CheckpointError: ``data`` is not a tensors-only checkpoint or is corrupted.
    """
    try:
        with warnings.catch_warnings():
            # Plain pickles trigger a protocol warning before being refused anyway.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as e:
        raise CheckpointError(
            "checkpoint is not a tensors-only file or is corrupted "
            f"({type(e).__name__}; it was not loaded)"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint is not a tensors-only state dict: its top level is a {type(state)}"
        )
    return state


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 checksum of ``data`` as 64 lowercase hex digits.

    Args:
        data: The bytes to hash.

    Returns:
        The hex digest.
    """
    return hashlib.sha256(data).hexdigest()
