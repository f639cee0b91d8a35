"""DDP inside a split: one split at a time on a whole ``torchrun`` process group.

Start a worker (or your script that calls ``optimize``) once per GPU with torchrun::

    export OPTUNA_STORAGE=postgresql://...   # the study's storage
    torchrun --nproc-per-node 8 -m optuna_mto worker --study s --objective mod:trainer
    torchrun --nproc-per-node 8 my_script.py   # it calls study.optimize(trainer)

Every process of the group (``WORLD_SIZE > 1``) calls ``optimize``, which joins the
process group (``init_process_group`` with nccl on CUDA, gloo on the CPU, unless you
did it first) and then plays one role (every rank may open the study with
``create_study(..., load_if_exists=True)``, even on a fresh database):

- rank 0 is the worker: it claims a split, owns its Optuna trial, writes every
  checkpoint, report and record, and judges transfers, exactly as without torchrun;
- ranks > 0 follow it and never open the study's trials: the split index, its
  train/validation rows, every ``suggest_*`` value, every ``should_prune`` and
  ``trial.evaluate`` answer and the outcome of every report reach them by broadcast
  (a gloo group of its own, so idle waits never time out the training group).

The model state is broadcast from rank 0 after ``trial.restore`` (a fresh split's
initial weights, or a resumed split's checkpoint) and after a report only when the
report changed it (an accepted transfer, new hyperparameters, an AMTO explorer); in
between, the ranks stay identical by construction (same state, same averaged
gradients), so a broadcast every epoch would only cost a full model copy. Buffers
(BatchNorm statistics) follow rank 0's at every report.

:class:`~optuna_mto.SupervisedTrainer` needs no change: each rank trains on its own
``DistributedSampler``-style shard of the split's train rows (the epoch's permutation,
padded to a multiple of the world size, every WORLD_SIZE-th row; ``batch_size`` is per
rank), and gradients are averaged over the ranks before every optimizer step (one
all-reduce of all gradients, not a DDP wrapper: the model the strategies load donors
into stays a plain module, and AMTO explorers, frozen parameters and unused ones need
nothing special). Every rank still scores the validation set; rank 0's score counts.

Your own objective: wrap the model in DDP (or average gradients) and shard with
``torch.utils.data.DistributedSampler`` yourself (see ``examples/ddp_objective.py``);
``trial.restore``/``trial.report`` keep the ranks' models in step as above. Every rank
must take the same path: branch only on what the trial hands out (it is the same
everywhere). Each process group runs one split at a time; run several groups (several
torchrun workers on the same storage) to run splits side by side.

A rank that dies takes the group down (torchrun stops the others). The split's attempt
counts as a lost worker, and torchrun's restart (``--max-restarts``) or the next worker
resumes it from its last checkpoint. ``optimize(n_jobs>1)`` and
``executor="process"`` are refused under torchrun (one split per process group).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import optuna
import torch
import torch.distributed as dist

from optuna_mto._logging import get_logger
from optuna_mto._workers.ddp_group import (
    DistributedSplitError,
    Group,
    PeerLostError,
    SplitAborted,
    enter_split,
    expect_kind,
    leave_split,
    lost,
    shard,
)
from optuna_mto._workers.ddp_trial import FollowerTrial, LeaderTrial
from optuna_mto._workers.device_env import device_from_environment

__all__ = [
    "DistributedSplitError",
    "Group",
    "PeerLostError",
    "call_objective",
    "follow",
    "follow_cli",
    "join",
    "leading",
    "shard",
]

_logger = get_logger(__name__)
#: Followers wait for rank 0 between splits (claims, waits for other workers' splits).
_CONTROL_TIMEOUT = datetime.timedelta(days=7)


_GROUP: Group | None = None  # this process's group, once joined
_LEADING: Group | None = None  # set on rank 0 while optimize runs
_OWN_WORLD = False  # True once join() started the process group (and so ends it at exit)


def _world_and_rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    if "RANK" not in os.environ:  # torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_*
        return 1, 0
    return int(os.environ.get("WORLD_SIZE") or 1), int(os.environ["RANK"])


def join(n_jobs: int, executor: str, devices: Any) -> tuple[Group | None, Any]:
    """Join the torchrun process group; ``(None, devices)`` outside one (``WORLD_SIZE <= 1``).

    Returns the group and ``[this rank's device]``: the one given, else the GPU that
    ``LOCAL_RANK`` names (or the CPU).

    Raises:
        ValueError: For ``n_jobs > 1``, ``executor="process"`` or several devices.
    """
    global _GROUP, _OWN_WORLD
    world, rank = _world_and_rank()
    if world <= 1:
        return None, devices
    where = f"under torchrun (WORLD_SIZE={world})"
    if n_jobs != 1:
        raise ValueError(
            f"optimize(n_jobs={n_jobs}) {where}: each process group runs one split at a time "
            "with all its ranks; use n_jobs=1, and start more torchrun workers on the same "
            "storage to run splits side by side."
        )
    if executor == "process":
        raise ValueError(
            f"executor='process' {where}: worker processes would not be in the process group; "
            "use executor='auto' (the split runs in this process)."
        )
    if devices is not None and len(devices) > 1:
        raise ValueError(
            f"devices={list(devices)!r} {where}: each rank uses one device; leave devices unset "
            "(LOCAL_RANK picks the GPU) or pass this rank's own device."
        )
    if devices:
        device = str(torch.device(devices[0]))
    else:
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        device = device_from_environment(os.environ, n_gpus).device
    if _GROUP is None:
        if not dist.is_initialized():
            cuda = device.startswith("cuda")
            if cuda:
                torch.cuda.set_device(torch.device(device))
            dist.init_process_group("nccl" if cuda else "gloo")
            _OWN_WORLD = True
        control = dist.new_group(backend="gloo", timeout=_CONTROL_TIMEOUT)
        atexit.register(_close_group)
        _GROUP = Group(rank, world, device, control)
        _logger.info("Rank %d of %d on %s (%s backend).", rank, world, device,
                     dist.get_backend())  # fmt: skip
    if _GROUP.broken:
        raise DistributedSplitError(f"The process group is broken: {_GROUP.broken}")
    _GROUP.device = device
    return _GROUP, [device]


def _close_group() -> None:
    """Close the control group (and the process group, if this module started it) at exit.

    Left to the interpreter's teardown, a gloo worker thread can still be freeing the
    last broadcast's tensors while Python finalizes: it cannot take the GIL, and the
    process aborts (``terminate called without an active exception``) after a run that
    succeeded. Dropping the last reference here, while Python is alive, joins those
    threads. A broken group is left alone: its peer is gone, and the process exits
    with an error anyway.
    """
    global _GROUP
    group, _GROUP = _GROUP, None
    if group is None or group.broken is not None:
        return
    control, group.control = group.control, None
    try:
        if _OWN_WORLD and dist.is_initialized():
            dist.destroy_process_group()  # every group, the control group included
        elif dist.is_initialized():
            dist.destroy_process_group(control)  # the user's own group stays theirs
    except ValueError:
        pass  # the user destroyed every group already
    except Exception as err:  # exiting anyway: say so, do not mask the exit status
        _logger.warning("Could not close the process group at exit: %r", err)
    del control  # the last reference: its destructor joins gloo's threads, GIL released


def follow_cli(objective: Any, device: str | None, n_jobs: int) -> int | None:
    """``optuna-mto worker`` on a rank > 0: follow rank 0 without opening the study.

    Returns None on rank 0 and outside torchrun (the worker runs as usual), else 0.
    """
    world, rank = _world_and_rank()
    if world <= 1 or rank == 0:
        return None
    group, _ = join(n_jobs, "auto", None if device in (None, "auto") else [device])
    assert group is not None
    follow(group, objective)
    print(f"rank {rank} done: followed rank 0's splits")
    return 0


# ---------------------------------------------------------------------- rank 0
@contextlib.contextmanager
def leading(group: Group) -> Iterator[None]:
    """Run ``optimize`` on rank 0; tell the followers when it ends, however it ends.

    Raises:
        DistributedSplitError: When the group broke (a split failed out of step with
            the followers, or a rank is gone): this process must end, and with it the
            group, so that torchrun (or the next worker) starts afresh.
    """
    global _LEADING
    _LEADING = group
    try:
        yield
    except BaseException as err:
        _LEADING = None
        if group.broken is None:
            group.send({"kind": "done", "error": (type(err).__name__, str(err))})
            raise
        if not isinstance(err, Exception):
            raise
        raise _broken(group) from err
    _LEADING = None
    if group.broken is not None:
        raise _broken(group)
    group.send({"kind": "done", "error": None})


def _broken(group: Group) -> DistributedSplitError:
    return DistributedSplitError(
        f"The process group is broken ({group.broken}); its split resumes from its last "
        "checkpoint when torchrun restarts the group (--max-restarts) or the next worker runs."
    )


def call_objective(objective: Any, trial: Any) -> Any:
    """Call ``objective(trial)``; on rank 0 of a process group, with the followers."""
    group = _LEADING
    if group is None:
        return objective(trial)
    leader = LeaderTrial(group, trial)
    enter_split(group)
    try:
        group.send(leader.start_message())
        returned = objective(leader)
        group.send({"kind": "end"})
        return returned
    except optuna.TrialPruned:
        if not leader.aborted:  # every rank asked should_prune, and all raised
            group.send({"kind": "end"})
        raise
    except BaseException as err:
        if leader.aborted:  # raised at a call the followers share: they left the split too
            raise
        if isinstance(err, dist.DistError) and group.broken is None:  # your own collective
            raise lost(group, "a collective", err) from err
        # Raised between two shared calls: the followers are elsewhere, out of step.
        group.broken = group.broken or f"split {trial.split} failed on rank 0: {err!r}"
        raise
    finally:
        leave_split()
        if group.broken is not None:  # claim no other split: optimize returns and raises
            trial._shared.stop.set()


# ---------------------------------------------------------------------- ranks > 0
def follow(group: Group, objective: Any) -> None:
    """Run rank 0's splits on this rank until rank 0's ``optimize`` ends.

    Raises:
        KeyboardInterrupt: When rank 0 was interrupted.
        DistributedSplitError: When rank 0's ``optimize`` raised.
    """
    while True:
        message = group.recv()
        if message["kind"] == "done":
            if message["error"] is None:
                return
            name, text = message["error"]
            if name == "KeyboardInterrupt":
                raise KeyboardInterrupt
            raise DistributedSplitError(f"rank 0's optimize raised {name}: {text}")
        expect_kind(message, "start", group.rank)
        trial = FollowerTrial(group, message)
        enter_split(group)
        try:
            objective(trial)
        except optuna.TrialPruned:
            pass
        except SplitAborted as err:
            _logger.info("Rank %d leaves split %d with rank 0: %s", group.rank, trial.split, err)
            continue
        except BaseException as err:
            _logger.error("Rank %d failed in split %d; the process group goes down: %r",
                          group.rank, trial.split, err)  # fmt: skip
            raise
        finally:
            leave_split()
        expect_kind(group.recv(), "end", group.rank)
