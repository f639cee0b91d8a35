"""Running splits: devices, CPU threads, heartbeats, and thread or process workers."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
import torch

from optuna_mto._logging import get_logger
from optuna_mto._study.main_guard import (
    MAIN_ENV,
    guard_message,
    interactive_main,
    unguarded_call_site,
)
from optuna_mto._validation import check_int

__all__ = [
    "assign_devices",
    "check_main_guard",
    "cpu_threads_per_worker",
    "heartbeat",
    "is_picklable",
    "resolve_executor",
    "worker_context",
]

_logger = get_logger(__name__)
_EXECUTORS = ("auto", "thread", "process")


def assign_devices(n_jobs: int, devices: Sequence[str | torch.device] | None) -> list[str]:
    """Return one device per worker.

    An explicit ``devices`` list is used round-robin; a bare ``"cuda"`` means
    ``"cuda:0"``, the first visible GPU. Otherwise, with G visible CUDA GPUs, worker i
    gets ``cuda:{i % G}`` (one GPU each when ``n_jobs <= G``); on a machine without
    GPUs every worker gets ``"cpu"``.

    Raises:
        ValueError: For an empty list, a device string torch does not understand, or a
            CUDA device this machine does not have.
    """
    if devices is not None:
        if len(devices) == 0:
            raise ValueError("devices must name at least one device, but got devices=[].")
        parsed = []
        for device in devices:
            try:
                parsed_device = torch.device(device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(
                    f"{device!r} is not a torch device; use e.g. 'cpu', 'cuda:0' or 'mps'."
                ) from err
            if parsed_device.type == "cuda":
                parsed_device = _visible_cuda_device(device, parsed_device)
            parsed.append(str(parsed_device))
        return [parsed[i % len(parsed)] for i in range(n_jobs)]
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus:
        return [f"cuda:{i % n_gpus}" for i in range(n_jobs)]
    return ["cpu"] * n_jobs


def _visible_cuda_device(given: str | torch.device, device: torch.device) -> torch.device:
    """Return ``device`` with its index (0 for a bare ``"cuda"``) if this machine has it.

    Checked here, before any worker starts, because a missing GPU otherwise surfaces as
    a CUDA error inside each worker. Neither call creates a CUDA context.
    """
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus == 0:
        raise ValueError(
            f"devices names {given!r}, but torch sees no CUDA device here "
            "(torch.cuda.is_available() is False); use devices=['cpu'] or leave devices "
            "unset to pick GPUs automatically."
        )
    index = 0 if device.index is None else device.index
    if index >= n_gpus:
        raise ValueError(
            f"devices names {given!r}, but torch sees {n_gpus} CUDA device(s) here "
            f"(cuda:0 to cuda:{n_gpus - 1}); check CUDA_VISIBLE_DEVICES, which renumbers "
            "the GPUs a process sees."
        )
    return torch.device("cuda", index)


def cpu_threads_per_worker(n_jobs: int) -> int:
    """Return intra-op threads per worker so that ``n_jobs`` workers share the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, n_jobs))


def is_picklable(*objects: Any) -> bool:
    """Return True if every object can be sent to a spawned worker process."""
    try:
        for obj in objects:
            pickle.dumps(obj)
    except Exception:  # noqa: BLE001 - any failure means "use threads".
        return False
    return True


def resolve_executor(executor: str, n_jobs: int, *payload: Any) -> str:
    """Pick ``"inline"``, ``"thread"`` or ``"process"`` for ``optimize``.

    ``"auto"`` runs one worker in the calling thread, and several in processes when the
    objective can be pickled (defined at module level) and ``__main__`` is a file,
    else in threads (a notebook's objects cannot reach a worker process).

    Raises:
        SystemExit: With one line saying what to change, when worker processes would
            re-import a script that calls ``optimize`` outside
            ``if __name__ == "__main__":`` (it would run again in every worker).
    """
    if executor not in _EXECUTORS:
        raise ValueError(f"executor must be one of {_EXECUTORS}, but got executor={executor!r}.")
    check_int("n_jobs", n_jobs, 1)
    if executor == "process":
        if not is_picklable(*payload):
            raise ValueError(
                "executor='process' needs an objective (and evaluate function and dataset) "
                "that can be pickled: define them at module level, or use executor='thread'."
            )
        return "process"
    if n_jobs == 1 and executor == "auto":
        return "inline"
    if executor == "thread":
        return "thread"
    if interactive_main():
        _logger.info("No script file (a notebook or a REPL); running %d splits in threads.", n_jobs)
        return "thread"
    if is_picklable(*payload):
        return "process"
    _logger.info("The objective cannot be pickled; running %d splits in threads.", n_jobs)
    return "thread"


def check_main_guard() -> None:
    """Stop with one line if worker processes would re-run the calling script.

    Raises:
        SystemExit: When ``optimize`` is called from a script's module-level code
            outside ``if __name__ == "__main__":``.
    """
    where = unguarded_call_site()
    if where is not None:
        raise SystemExit(guard_message(where))


def worker_context() -> multiprocessing.context.BaseContext:
    """Return the start method for worker processes.

    ``forkserver`` where the platform has it: a clean server process imports torch,
    ``torch._dynamo`` (which the first optimizer of a process needs), Optuna's storage
    and optuna-mto once (see :mod:`optuna_mto._workers.preload`; no CUDA, no threads), and
    every worker is forked from it, so starting K workers costs milliseconds instead
    of K imports of several seconds. The server lives as long as the calling process,
    so only its first ``optimize`` pays for it. Elsewhere ``spawn``. Both are safe
    with CUDA and with threads in the parent, and both need a picklable objective.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["optuna_mto._workers.preload"])
        _start_fork_server()
        return ctx
    return multiprocessing.get_context("spawn")


def _start_fork_server() -> None:
    """Start the fork server (once per process), asking it to import ``__main__`` too.

    Workers forked from a server that imported the script skip their own import of
    it (``multiprocessing`` sees that ``__main__`` is already that file). Not done when
    CUDA is initialised here: the script might initialise it at import, and a process
    forked after that cannot use CUDA.
    """
    from multiprocessing import forkserver, spawn

    keys = ("sys_path", "sys_argv", "init_main_from_name", "init_main_from_path")
    data = {k: v for k, v in spawn.get_preparation_data("mto-preload").items() if k in keys}
    share_main = not torch.cuda.is_initialized() and "sys_argv" in data
    if share_main:
        os.environ[MAIN_ENV] = json.dumps(data)
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(MAIN_ENV, None)


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record heartbeats for ``trial_id`` in a daemon thread while the block runs.

    Does nothing when the storage has heartbeats disabled.
    """
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as err:  # noqa: BLE001 - a missed beat must not kill training.
                _logger.warning("Heartbeat of trial %d failed: %s", trial_id, err)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"mto-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
