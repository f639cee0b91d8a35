"""Records of what a report step did: transfer events and report results."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from optuna_mto._storage.schema import TRANSFER_ATTR_PREFIX
from optuna_mto.checkpoints import CheckpointRef

__all__ = ["TRANSFER_ATTR_PREFIX", "ReportResult", "TransferEvent"]

#: Trial user attribute prefix of transfer events: ``transfer:<step:06d>``.


@dataclasses.dataclass(frozen=True)
class TransferEvent:
    """One transfer attempt, as recorded on the receiving trial.

    Attributes:
        step: Report step of the attempt.
        receiver: Receiving split.
        donor: Donor split.
        donor_trial: Optuna trial number of the donor's run.
        donor_step: Step at which the donor published the weights.
        operator: Label of the candidate that was kept or scored best.
        before: Receiver's own score before the transfer.
        after: Best candidate's score on the receiver's validation set (NaN if skipped).
        accepted: Whether the candidate replaced the receiver's weights.
        reason: Why nothing was tried (``""`` when a candidate was scored).
        hparams: Hyperparameters changed after the transfer, ``name: [old, new]``.
        judged_on: Rows ``before`` and ``after`` were scored on: ``"own"`` validation
            set, ``"unseen"`` validation rows or ``"selection"`` set (the manager's gate).
    """

    step: int
    receiver: int
    donor: int
    donor_trial: int
    donor_step: int
    operator: str
    before: float
    after: float
    accepted: bool
    reason: str = ""
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    judged_on: str = "own"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON form (NaN becomes None)."""
        out = dataclasses.asdict(self)
        for key in ("before", "after"):
            if isinstance(out[key], float) and math.isnan(out[key]):
                out[key] = None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferEvent:
        """Rebuild an event from :meth:`to_dict` output."""
        data = dict(data)
        for key in ("before", "after"):
            data[key] = math.nan if data.get(key) is None else float(data[key])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass(frozen=True)
class ReportResult:
    """What :meth:`SplitTrial.report` did.

    Attributes:
        step: The report step.
        fitness: The split's score after the step (the donor's score when accepted).
        transfer: The transfer attempt, or None when none was made.
        checkpoint: The checkpoint written at this step, or None without a model.
    """

    step: int
    fitness: float
    transfer: TransferEvent | None
    checkpoint: CheckpointRef | None

    @property
    def accepted(self) -> bool:
        """True if a donor's weights replaced the receiver's at this step."""
        return self.transfer is not None and self.transfer.accepted
