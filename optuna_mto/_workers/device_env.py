"""``optuna-mto worker --device auto``: the device a cluster scheduler's variables name.

A scheduler starts one worker per GPU and tells each which one it is: torchrun sets
``LOCAL_RANK``, ``srun`` sets ``SLURM_LOCALID`` (the task's index on its node), and a
Kubernetes Indexed Job sets ``JOB_COMPLETION_INDEX`` (the pod's index in the whole
Job; a pod sees only its own GPUs, so it means the pod's first GPU). With G visible
CUDA GPUs the worker takes ``cuda:{local_id % G}``; without any, ``cpu``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from optuna_mto._logging import get_logger

__all__ = ["SCHEDULER_VARIABLES", "DeviceChoice", "auto_devices", "device_from_environment"]

_logger = get_logger(__name__)

#: The variables read, first match wins, each with who sets it and whether it is an
#: index on this node (a pod index is not: each pod has its own GPUs).
SCHEDULER_VARIABLES: tuple[tuple[str, str, bool], ...] = (
    ("LOCAL_RANK", "torchrun", True),
    ("SLURM_LOCALID", "SLURM", True),
    ("JOB_COMPLETION_INDEX", "Kubernetes Indexed Job", False),
)


class DeviceChoice(NamedTuple):
    """The device ``--device auto`` picked, and why.

    Attributes:
        device: ``"cuda:N"`` or ``"cpu"``.
        variable: The scheduler variable that chose it (``"SLURM_LOCALID=1"``), or None
            when none is set.
        reason: One line for the worker's log.
    """

    device: str
    variable: str | None
    reason: str


def device_from_environment(env: Mapping[str, str], n_gpus: int) -> DeviceChoice:
    """Return the device a worker started by a scheduler should use.

    Args:
        env: The environment (``os.environ``); the first of ``LOCAL_RANK``,
            ``SLURM_LOCALID`` and ``JOB_COMPLETION_INDEX`` that is set and not empty
            gives the worker's index on its node (0 for a pod index).
        n_gpus: The CUDA GPUs this process sees (after ``CUDA_VISIBLE_DEVICES``).

    Returns:
        ``cuda:{local_id % n_gpus}``, or ``cpu`` without GPUs, with the variable and
        a log line.

    Raises:
        ValueError: If the variable is not a non-negative integer, or ``n_gpus < 0``.
    """
    if n_gpus < 0:
        raise ValueError(f"n_gpus must be >= 0, but got n_gpus={n_gpus}.")
    gpus = f"{n_gpus or 'no'} visible CUDA GPU{'' if n_gpus == 1 else 's'}"
    for name, source, on_node in SCHEDULER_VARIABLES:
        raw = env.get(name, "").strip()
        if not raw:
            continue
        if not (raw.isascii() and raw.isdigit()):
            raise ValueError(
                f"--device auto reads {name} (set by {source}), but {name}={raw!r} is not "
                "a non-negative integer; pass --device cuda:N or --device cpu instead."
            )
        variable = f"{name}={int(raw)}"
        local_id = int(raw) if on_node else 0
        if n_gpus == 0:
            return DeviceChoice("cpu", variable, f"cpu ({variable} from {source}; {gpus})")
        device = f"cuda:{local_id % n_gpus}"
        why = f"{variable} from {source}, {gpus}"
        if not on_node:
            why += "; a pod index: the pod's own first GPU"
        elif local_id >= n_gpus:
            why += f"; more workers than GPUs on this node, so {device} is shared"
        return DeviceChoice(device, variable, f"{device} ({why})")
    names = ", ".join(name for name, _, _ in SCHEDULER_VARIABLES)
    device = "cuda:0" if n_gpus else "cpu"
    return DeviceChoice(device, None, f"{device} (none of {names} is set; {gpus})")


def auto_devices(n_jobs: int, env: Mapping[str, str] | None = None) -> list[str] | None:
    """Return ``optimize``'s ``devices`` for ``--device auto``, and log which and why.

    Without a scheduler variable, None: the default placement (job i on
    ``cuda:{i % G}``), which for one job is the same ``cuda:0`` or ``cpu``.

    Args:
        n_jobs: The worker's ``--n-jobs``: all of them share the chosen device.
        env: The environment; default ``os.environ``.

    Returns:
        ``[device]`` when a scheduler variable chose it, else None.

    Raises:
        ValueError: If the scheduler variable is not a non-negative integer.
    """
    import torch

    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    choice = device_from_environment(os.environ if env is None else env, n_gpus)
    if choice.variable is None and n_jobs > 1:
        _logger.info("--device auto: no scheduler variable; %d jobs on %s", n_jobs,
                     f"cuda:0 to cuda:{n_gpus - 1} in turn" if n_gpus else "cpu")  # fmt: skip
        return None
    _logger.info("--device auto: %s", choice.reason)
    return [choice.device] if choice.variable is not None else None
