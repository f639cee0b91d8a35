"""Executors: worker threads, or worker processes started from a picklable spec.

Worker processes are supervised and replaced when they die while work is left.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch

from optuna_mto._logging import QueueForwarder, forward_to_queue, get_logger
from optuna_mto._storage.rdb import open_storage
from optuna_mto._storage.retry import TRANSIENT_ERRORS, connection_limit_hint
from optuna_mto._study.main_guard import GUARD_EXIT_CODE, guard_message
from optuna_mto._workers import execution as _execution
from optuna_mto._workers.lifecycle import work_left
from optuna_mto._workers.runtime import RuntimeSpec, StudyRuntime, open_runtime
from optuna_mto._workers.worker import Job, Worker

__all__ = ["run_processes", "run_threads"]

_logger = get_logger(__name__)
#: Exit code of a worker process the database refused (out of connection slots).
NO_STORAGE_EXIT_CODE = 75
#: Workers the database may refuse in a row, with no other worker left, before giving up.
_MAX_REFUSED = 5


@dataclasses.dataclass
class _ProcessJob:
    """The picklable part of a :class:`Job`, and the worker process's settings."""

    spec: RuntimeSpec
    job: Job
    device: str
    n_threads: int
    timeout: float | None
    verbosity: int


def run_threads(runtime: StudyRuntime, job: Job, devices: list[str]) -> None:
    """Run one worker thread per device; re-raise the first worker error at the end.

    Ctrl-C and SIGTERM (see :func:`_interrupts.stop_on_signals`) set ``job.stop``: every
    split stops at its next report, and the workers' KeyboardInterrupt is re-raised here.
    """
    torch.set_num_threads(_execution.cpu_threads_per_worker(len(devices)))
    errors: list[BaseException] = []

    def run(device: str) -> None:
        try:
            Worker(runtime, job, device).run()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller.
            errors.append(err)

    threads = [
        threading.Thread(target=run, args=(d,), name=f"mto-{i}") for i, d in enumerate(devices)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)
    if errors:
        internal = [e for e in errors if not isinstance(e, KeyboardInterrupt)]
        raise (internal or errors)[0]


def run_processes(
    runtime: StudyRuntime, job: Job, devices: list[str], timeout: float | None
) -> None:
    """Run one worker process per device (see :func:`_execution.worker_context`).

    A worker process that dies (a signal, the OOM killer, a segfault) while splits are
    left is replaced on the same device; the new worker takes the dead one's split over at
    once (its process is gone from this host) and resumes it from its last checkpoint,
    within the study's ``max_preemptions``. On ``job.stop`` (Ctrl-C, SIGTERM) the workers
    get SIGTERM and stop at once, marking their splits interrupted.

    Raises:
        SystemExit: With one line, for a script that would run again in every worker
            (no ``if __name__ == "__main__":`` guard).
    """
    _execution.check_main_guard()
    ctx = _execution.worker_context()
    threads = _execution.cpu_threads_per_worker(len(devices))
    spec = RuntimeSpec.of(runtime)
    # The stop event stays here: a worker stops on the parent's SIGTERM.
    shipped = dataclasses.replace(job, stop=None, deadline=None)  # type: ignore[arg-type]
    log_queue = ctx.Queue()

    def start(i: int) -> multiprocessing.process.BaseProcess:
        work = _ProcessJob(spec, shipped, devices[i], threads, timeout,
                           optuna.logging.get_verbosity())  # fmt: skip
        proc = ctx.Process(target=_process_main, args=(work, log_queue), name=f"mto-worker-{i}")
        proc.start()
        return proc

    with QueueForwarder(log_queue):
        _supervise(runtime, job, devices, start)


def _supervise(
    runtime: StudyRuntime,
    job: Job,
    devices: list[str],
    start: Callable[[int], multiprocessing.process.BaseProcess],
) -> None:
    """Wait for the worker processes; replace the ones that die while work is left."""
    procs = {i: start(i) for i in range(len(devices))}
    config = runtime.config
    budget = runtime.n_splits * (config.max_preemptions + config.max_retries + 2)
    signalled = guard_failed = False
    refused = 0  # workers in a row the database refused while no other worker ran
    while procs:
        if job.stop.is_set() and not signalled:
            signalled = True
            _terminate(procs)
        multiprocessing.connection.wait([p.sentinel for p in procs.values()], timeout=0.5)
        for i, proc in list(procs.items()):
            if proc.is_alive():
                continue
            proc.join()
            del procs[i]
            if proc.exitcode == GUARD_EXIT_CODE:
                guard_failed = True
                continue
            if proc.exitcode == 0 or job.stop.is_set():
                continue
            if proc.exitcode == NO_STORAGE_EXIT_CODE:
                if procs:
                    continue  # refused by the database: not replaced while others work
                refused += 1
                if not _wait_for_a_slot(refused):
                    continue
            else:
                refused = 0
            if _should_replace(runtime, job, proc, devices[i], budget):
                budget -= 1
                procs[i] = start(i)
    if guard_failed:
        raise SystemExit(guard_message())


def _terminate(procs: dict[int, multiprocessing.process.BaseProcess]) -> None:
    """Send SIGTERM to the live workers: each marks its split interrupted and exits."""
    for proc in procs.values():
        if proc.is_alive():
            proc.terminate()


def _wait_for_a_slot(refused: int) -> bool:
    """Wait before replacing the last worker, which the database refused; False: give up."""
    if refused > _MAX_REFUSED:
        _logger.error(
            "The database refused %d worker processes in a row; no worker is "
            "left, so this optimize call stops (rerun it once connections are "
            "free).", refused,
        )  # fmt: skip
        return False
    time.sleep(2.0 * refused)  # the last worker: wait for a slot, then retry
    return True


def _should_replace(
    runtime: StudyRuntime,
    job: Job,
    proc: multiprocessing.process.BaseProcess,
    device: str,
    budget: int,
) -> bool:
    """Log a worker's death; True if a new one should take its place (work left, in time)."""
    _logger.warning(
        "Worker process %s (pid %s, %s) died with exit code %s.",
        proc.name, proc.pid, device, proc.exitcode,
    )  # fmt: skip
    out_of_time = job.deadline is not None and time.monotonic() >= job.deadline
    left = work_left(runtime)  # takes the dead worker's split over at once
    if (left.claimable or left.running) and budget > 0 and not out_of_time:
        _logger.warning("Starting a new worker process on %s in its place.", device)
        return True
    return False


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _process_main(work: _ProcessJob, log_queue: Any = None) -> None:
    """A worker process: open the study from the spec, then run splits as a worker."""
    # The parent decides when to stop: a terminal's Ctrl-C reaches the whole process
    # group, so the worker ignores it and stops on the parent's SIGTERM instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    spec = work.spec
    torch.set_num_threads(work.n_threads)
    if log_queue is not None:
        forward_to_queue(log_queue, work.verbosity)
    try:
        # The parent created the tables and checked their version already.
        storage = open_storage(spec.storage, checked=False, **spec.open_kwargs)
        runtime = open_runtime(
            spec.study_name, storage, open_kwargs=spec.open_kwargs, transfer=spec.transfer,
            artifact_store=spec.artifact_store, max_retries=spec.max_retries,
            max_preemptions=spec.max_preemptions, sampler=spec.sampler, pruner=spec.pruner,
        )  # fmt: skip
    except (*TRANSIENT_ERRORS, ValueError) as err:
        hint = connection_limit_hint(err)
        if hint is None:
            raise
        # Nothing claimed yet: this worker leaves the work to the others.
        _logger.error("Worker on %s could not open the study and exits: %s.", work.device, hint)
        sys.exit(NO_STORAGE_EXIT_CODE)
    # Each process has its own copy of the sampler: reseed it so that the processes do
    # not all draw the same values (Optuna does the same for parallel workers).
    runtime.study.sampler.reseed_rng()
    deadline = None if work.timeout is None else time.monotonic() + work.timeout
    job = dataclasses.replace(work.job, deadline=deadline, stop=threading.Event())
    try:
        Worker(runtime, job, work.device).run()
    except KeyboardInterrupt:
        sys.exit(130)  # the split is marked interrupted; the parent reports it
