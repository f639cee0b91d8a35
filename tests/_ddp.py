"""Objectives that tests/test_distributed.py runs under torchrun (needs PYTHONPATH=tests).

Each rank writes what it did under ``$DDP_TEST_OUT``: ``rows-rank<r>.jsonl`` (the rows
it trained on each epoch), ``reports.jsonl`` (each report it saw) with its weights after
each report in ``rank<r>-split<s>-step<t>.pt``, and ``pid-rank<r>`` (its process id).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from _models import _digits, adam_fast, tiny_mlp

import optuna_mto

OUT = Path(os.environ.get("DDP_TEST_OUT", "."))


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _append(name: str, record: dict) -> None:
    with open(OUT / name, "a") as f:
        f.write(json.dumps(record) + "\n")


class RowLog(torch.utils.data.Dataset):
    """The digits, noting which rows are read while ``seen`` is a list."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.targets = x, y, y
        self.seen: list[int] | None = None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.seen is not None:
            self.seen.append(int(i))
        return self.x[i], self.y[i]


class _Recorded:
    """A trial whose reports are logged, with this rank's weights after each."""

    def __init__(self, trial) -> None:
        self._trial = trial

    def __getattr__(self, name: str):
        return getattr(self._trial, name)

    def report(self, value, step, **kwargs):
        result = self._trial.report(value, step, **kwargs)
        rank, split = _rank(), self._trial.split
        torch.save(kwargs["model"].state_dict(), OUT / f"rank{rank}-split{split}-step{step}.pt")
        record = {"rank": rank, "split": split, "step": step, "attempt": self._trial.attempt}
        _append("reports.jsonl", {**record, "accepted": result.accepted})
        return result


class RecordingTrainer(optuna_mto.SupervisedTrainer):
    """A digits trainer that logs each rank's rows and weights; epochs last ``epoch_s``."""

    def __init__(self, *args, epoch_s: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_s = epoch_s

    def train_epoch(self, model, optimizer, indices, generator) -> float:
        start = time.monotonic()
        self.dataset.seen = []
        loss = super().train_epoch(model, optimizer, indices, generator)
        seen, self.dataset.seen = self.dataset.seen, None
        _append(f"rows-rank{_rank()}.jsonl", {"train": sorted(map(int, indices)), "seen": seen})
        time.sleep(max(0.0, self.epoch_s - (time.monotonic() - start)))
        return loss

    def __call__(self, trial) -> None:
        (OUT / f"pid-rank{_rank()}").write_text(str(os.getpid()))
        super().__call__(_Recorded(trial))


def _trainer() -> RecordingTrainer:
    epochs = int(os.environ.get("DDP_TEST_EPOCHS", "3"))
    epoch_s = float(os.environ.get("DDP_TEST_EPOCH_S", "0"))
    return RecordingTrainer(tiny_mlp, RowLog(*_digits()), epochs=epochs, batch_size=64,
                            optimizer_fn=adam_fast, epoch_s=epoch_s)  # fmt: skip


trainer = _trainer()


def main() -> None:
    """A user's script: ``torchrun ... _ddp.py <storage> <study>`` calls ``optimize``."""
    import sys

    study = optuna_mto.load_study(study_name=sys.argv[2], storage=sys.argv[1])
    study.optimize(trainer)
    print(f"rank {_rank()}: optimize returned", flush=True)


if __name__ == "__main__":
    main()
