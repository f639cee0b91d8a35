"""optuna-mto: population training with weight transfer between data splits, on Optuna.

Each of K random (train, validation) splits of a dataset is one Optuna trial; the
splits share weights through the study's storage and the study ranks their models
by mean cross-split validation score.
"""

from __future__ import annotations

from optuna_mto import checkpoints, transfer
from optuna_mto._config import StudyConfig
from optuna_mto._ensemble import Ensemble
from optuna_mto._errors import (
    CheckpointError,
    ConfigConflictError,
    DatasetMismatchError,
    MTOError,
    SplitsGivenUpError,
)
from optuna_mto._events import ReportResult, TransferEvent
from optuna_mto._open import create_study, load_study
from optuna_mto._splits import (
    BaseSplitter,
    KFoldSplitter,
    RandomSplitter,
    StratifiedSplitter,
    dataset_fingerprint,
    make_splitter,
)
from optuna_mto._study import MTOStudy
from optuna_mto._summary import CrossSplitSummary
from optuna_mto._trainer import SupervisedTrainer
from optuna_mto._trial import Explorer, SplitTrial

__version__ = "0.1.0"

__all__ = [
    "BaseSplitter",
    "CheckpointError",
    "ConfigConflictError",
    "CrossSplitSummary",
    "DatasetMismatchError",
    "Ensemble",
    "Explorer",
    "KFoldSplitter",
    "MTOError",
    "MTOStudy",
    "RandomSplitter",
    "ReportResult",
    "SplitTrial",
    "SplitsGivenUpError",
    "StratifiedSplitter",
    "StudyConfig",
    "SupervisedTrainer",
    "TransferEvent",
    "__version__",
    "checkpoints",
    "create_study",
    "dataset_fingerprint",
    "load_study",
    "make_splitter",
    "transfer",
]
