from __future__ import annotations

import math

from optuna_mto import TransferEvent
from optuna_mto._workers.split_trials import count_transfers, transfer_tried


def _event(accepted: bool, after: float, reason: str = "") -> TransferEvent:
    return TransferEvent(3, 0, 1, 7, 2, "copy", 0.5, after, accepted, reason=reason)


def test_an_attempt_is_tried_unless_it_says_why_nothing_was():
    kept = _event(True, 0.6)
    rejected = _event(False, 0.4)
    skipped = _event(False, math.nan, reason="donor checkpoint unreadable")
    unscored = _event(False, math.nan)  # e.g. an explorer whose score came out NaN
    assert [transfer_tried(e) for e in (kept, rejected, skipped, unscored)] == [
        True, True, False, True,
    ]  # fmt: skip
    assert count_transfers([kept, rejected, skipped, unscored]) == (1, 3)


def test_the_stored_form_counts_the_same():
    events = [_event(True, 0.6), _event(False, math.nan, reason="no unseen rows")]
    assert count_transfers(e.to_dict() for e in events) == count_transfers(events) == (1, 1)
    assert transfer_tried({"accepted": False}) is True  # a record without a reason field
