"""No split runs twice: the checks at both ends of a retry planned on a lost-looking claim.

A retry of split ``s`` as attempt ``a`` is planned when attempt ``a - 1`` looks lost:
its trial failed, or it has no trial yet and its worker is gone (or silent for
``orphan_after``). A worker that was only slow to reach the storage (a database out of
connections) may still attach a trial to attempt ``a - 1`` after that. Each side checks
the other right after its own write:

- the retrying worker, after inserting its claim, reads attempt ``a - 1`` again
  (:func:`earlier_attempt_lives`) and withdraws if it now has a live trial;
- the slow worker, after attaching its trial, reads the newest attempt
  (:func:`give_up_if_superseded`) and gives its trial up if a newer one exists.

Each write is committed before the other side's read, so at least one side sees the
other: never both run. (Both may step back; the split is then claimed again on the next
look, at no budget's cost.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optuna.trial import TrialState

from optuna_mto._logging import get_logger
from optuna_mto._storage.optuna_internals import rdb_backend, storage_of
from optuna_mto._storage.retry import retry_transient
from optuna_mto._storage.schema import FAIL_REASON_KEY

if TYPE_CHECKING:
    from optuna_mto._workers.runtime import StudyRuntime

__all__ = ["earlier_attempt_lives", "give_up_if_superseded"]

_logger = get_logger(__name__)


def earlier_attempt_lives(study: StudyRuntime, split: int, attempt: int) -> bool:
    """True if ``split``'s attempt before ``attempt`` has a trial that has not failed.

    Called by a worker that has just claimed ``attempt`` (> 0); if True, the split is the
    earlier attempt's worker's and the caller withdraws its claim.
    """
    earlier = retry_transient(study.claims.claim_of, split, attempt - 1)
    if earlier is None or earlier.trial_id is None:
        return False
    backend = rdb_backend(storage_of(study.study))
    state = retry_transient(backend.get_trial, earlier.trial_id).state
    if state == TrialState.FAIL:
        return False
    _logger.info(
        "Split %d: attempt %d not needed, attempt %d's trial is %s; claim withdrawn.",
        split, attempt, attempt - 1, state.name,
    )  # fmt: skip
    return True


def give_up_if_superseded(study: StudyRuntime, split: int, attempt: int, trial_id: int) -> bool:
    """Give up ``trial_id`` if a newer attempt of ``split`` was claimed; return True then.

    Called right after attaching the trial to ``attempt``. The given-up trial is failed
    with the reason recorded, and its attempt is marked interrupted, so that neither the
    retry nor the preemption budget pays for the storage's outage.
    """
    last = retry_transient(study.claims.last_attempt, split)
    if last <= attempt:
        return False
    reason = (
        f"superseded: attempt {last} of split {split} was claimed while this worker "
        "could not reach the storage, and runs the split instead"
    )
    storage = storage_of(study.study)
    retry_transient(storage.set_trial_system_attr, trial_id, FAIL_REASON_KEY, reason)
    retry_transient(study.claims.mark_interrupted, split, attempt)
    retry_transient(storage.set_trial_state_values, trial_id, TrialState.FAIL)
    _logger.warning("Split %d (attempt %d) not run: %s.", split, attempt, reason)
    return True
