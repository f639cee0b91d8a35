"""optuna-mto: population training with weight transfer between data splits, on Optuna.

Each of K random (train, validation) splits of a dataset is one Optuna trial; the
splits share weights through the study's storage and the study ranks their models
by mean cross-split validation score.

Glossary (used the same way in code, docs and stored records):

- **value**: what a trial reports at a step (``trial.report(value, step)``) and what
  Optuna stores as its intermediate value; a finished split's trial value is its
  selection score, else the mean of its cross-split scores.
- **fitness**: a split's published validation value after the step's transfer
  decision (the blackboard's ``fitness``, ``best_fitness``): what donors are chosen by.
- **score**: one evaluation of a model on some rows: a candidate's score in a
  transfer, cross-split scores, the selection score.
- **split**: one (train, validation) pair; **attempt**: one run of a split (one
  Optuna trial); **donor** / **receiver**: the two ends of a transfer;
  **lineage**: the splits whose training data shaped a model's weights.
"""

from optuna_mto import checkpoints, transfer
from optuna_mto._data.splits import BaseSplitter, KFoldSplitter, RandomSplitter, StratifiedSplitter
from optuna_mto._errors import (
    ArchitectureMismatchError,
    CallbackError,
    CheckpointError,
    ConfigConflictError,
    DatasetMismatchError,
    MTOError,
    NonFiniteScoreError,
    SplitsGivenUpError,
)
from optuna_mto._step.events import ReportResult, TransferEvent
from optuna_mto._step.trial import SplitTrial
from optuna_mto._study.config import StudyConfig
from optuna_mto._study.distill import distillation_loss
from optuna_mto._study.ensemble import Ensemble
from optuna_mto._study.open import create_study, load_study
from optuna_mto._study.study import MTOStudy
from optuna_mto._study.summary import CrossSplitSummary
from optuna_mto._trainer import SupervisedTrainer
from optuna_mto.transfer import Explorer

__version__ = "0.3.0"

__all__ = [
    "ArchitectureMismatchError",
    "BaseSplitter",
    "CallbackError",
    "CheckpointError",
    "ConfigConflictError",
    "CrossSplitSummary",
    "DatasetMismatchError",
    "Ensemble",
    "Explorer",
    "KFoldSplitter",
    "MTOError",
    "MTOStudy",
    "NonFiniteScoreError",
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
    "distillation_loss",
    "load_study",
    "transfer",
]


def __dir__() -> list[str]:
    """The public names and the loaded public subpackages, not the private modules."""
    return sorted({*__all__, *({"cli", "integration", "visualization"} & set(globals()))})
