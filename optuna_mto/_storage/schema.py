"""Every name optuna-mto stores, spelled once: keys, prefixes, tables, checkpoint fields.

A study lives in an Optuna storage plus a few tables of optuna-mto's own in the same
database. Nothing else in the package spells a stored name; it imports it from here.

Format versions (study system attribute :data:`FORMAT_KEY`; absent means 1):

1. optuna-mto 0.1.0: the blackboard in study system attributes ``mto:board:<split>``.
2. The blackboard in its own table :data:`BOARD_TABLE`, one row per (study, split), so
   a read costs O(K) whatever else the study stores (dashboard figures, many steps).
   A format-1 study is upgraded when it is opened (:func:`optuna_mto._step.board.upgrade`).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "ARTIFACT_ID_PREFIX",
    "ATTEMPT_ATTR",
    "ATTEMPT_KEY",
    "BAD_CHECKPOINT_ATTR_PREFIX",
    "BEST_KEY",
    "BOARD_PREFIX_V1",
    "BOARD_TABLE",
    "CALLBACK_FAILURES_PREFIX",
    "CHECKPOINT_FITNESS",
    "CHECKPOINT_HPARAMS",
    "CHECKPOINT_LINEAGE",
    "CHECKPOINT_MODEL",
    "CHECKPOINT_OPTIMIZER",
    "CHECKPOINT_RNG",
    "CHECKPOINT_SCHEDULER",
    "CHECKPOINT_STEP",
    "CHECKPOINT_STRATEGY",
    "CONFIG_KEY",
    "CROSS_SCORES_ATTR",
    "CROSS_SCORES_KEY",
    "CURRENT_HPARAMS_ATTR",
    "DATASET_KEY",
    "DEVICE_ATTR",
    "EXPLORER_EPOCHS_ATTR",
    "FAILED_AT_START_KEY",
    "FAIL_REASON_KEY",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "HPARAMS_ATTR_PREFIX",
    "HPARAMS_SOURCE_ATTR",
    "HPARAMS_SOURCE_FIELD",
    "HPARAMS_VALUES_FIELD",
    "LIGHTNING_LOOP_PREFIX",
    "LINEAGE_KEY",
    "NUMPY_STATE_FIELDS",
    "OBJECTIVE_VALUE_ATTR",
    "OPTUNA_PARTS_KEY",
    "OUTPUTS_KEY",
    "OVERLAP_KEY",
    "PRUNED_KEY",
    "RELATIONS_ATTR_PREFIX",
    "RELATIONS_FIELD",
    "RESUMED_FROM_ATTR",
    "RESUMED_FROM_KEY",
    "RETRIED_FROM_KEY",
    "RNG_CUDA",
    "RNG_NUMPY",
    "RNG_PYTHON",
    "RNG_TORCH",
    "SELECTION_SCORE_ATTR",
    "SELECTION_SCORE_KEY",
    "SPLIT_ATTR",
    "SPLIT_KEY",
    "SPLIT_PARAM",
    "STEP_ATTR_PREFIXES",
    "TASK_KEY",
    "TRAIN_EPOCHS_ATTR",
    "TRANSFER_ATTR_PREFIX",
    "WORKER_ATTR",
    "artifacts_table",
    "board_table",
    "chunks_table",
    "claims_table",
    "ensure_tables",
    "step_key",
]

#: The format this version writes.
FORMAT_VERSION = 2

# --------------------------------------------------------------------------- study
#: Study system attribute: the stored format version (absent in format 1).
FORMAT_KEY = "mto:format"
#: Study system attribute: the :class:`~optuna_mto.StudyConfig` as a dict.
CONFIG_KEY = "mto:config"
#: Study system attribute: ``{"n_samples", "fingerprint"}`` of the split dataset.
DATASET_KEY = "mto:dataset"
#: Study system attribute: the sampler and pruner classes the study was created with.
OPTUNA_PARTS_KEY = "mto:optuna_parts"
#: Study system attribute: the final outputs (ensemble, soups) scored on held-out rows.
OUTPUTS_KEY = "mto:outputs"
#: Study system attribute: ``"classification"`` or ``"regression"``, when the config has
#: no task (an older study, or none given): learnt from the objective or set later.
TASK_KEY = "mto:task"
#: Study system attribute prefix: failed calls of an ``optimize`` callback,
#: ``mto:callback_failures:<run>:<trial_id>:<callback index>`` -> {callback, failed, error}.
CALLBACK_FAILURES_PREFIX = "mto:callback_failures:"
#: Study system attribute prefix of format 1's blackboard records (``mto:board:<split>``).
BOARD_PREFIX_V1 = "mto:board:"

# --------------------------------------------------------------------------- trial
#: The trial parameter holding the split index (the dashboard groups by it).
SPLIT_PARAM = "split"
# Trial system attributes (machine-readable; people read the user attributes below).
SPLIT_KEY = "mto:split"
ATTEMPT_KEY = "mto:attempt"
RETRIED_FROM_KEY = "mto:retried_from"
#: The run failed before its first report (not retried in the same optimize call).
FAILED_AT_START_KEY = "mto:failed_at_start"
#: Optuna's own name for why a trial failed (also written by Optuna's heartbeat).
FAIL_REASON_KEY = "fail_reason"
#: Trial system attribute prefix, ``<prefix><step:06d>``: Lightning's fit-loop progress
#: (epoch, global step, batch) at a report, which a resumed split's Trainer continues from.
LIGHTNING_LOOP_PREFIX = "mto:lightning_loop:"
#: ``{"fitness", "step", "checkpoint"}`` of the split's kept best weights.
BEST_KEY = "mto:best"
LINEAGE_KEY = "mto:lineage"
OVERLAP_KEY = "mto:overlap"
CROSS_SCORES_KEY = "mto:cross_scores"
SELECTION_SCORE_KEY = "mto:selection_score"
PRUNED_KEY = "mto:pruned"
RESUMED_FROM_KEY = "mto:resumed_from_step"

# Trial user attributes (shown in optuna-dashboard).
#: Set when a split's trial is created: which split and attempt it runs, where, by whom.
SPLIT_ATTR = "split"
ATTEMPT_ATTR = "attempt"
DEVICE_ATTR = "device"
WORKER_ATTR = "worker"
CROSS_SCORES_ATTR = "cross_split_scores"
SELECTION_SCORE_ATTR = "selection_score"
RESUMED_FROM_ATTR = "resumed_from_step"
OBJECTIVE_VALUE_ATTR = "objective_value"
#: Epochs the SupervisedTrainer trained the split's model and its explorers (compute).
TRAIN_EPOCHS_ATTR = "train_epochs"
EXPLORER_EPOCHS_ATTR = "explorer_epochs"
CURRENT_HPARAMS_ATTR = "current_hparams"
HPARAMS_SOURCE_ATTR = "hparams_source"
#: User attribute prefix, ``<prefix><artifact id>``: a checkpoint a resume could not load.
BAD_CHECKPOINT_ATTR_PREFIX = "bad_checkpoint:"
#: Per-step user attributes, ``<prefix><step:06d>``: one transfer event per step.
TRANSFER_ATTR_PREFIX = "transfer:"
#: The receiver's relation scores after an explorer was judged (AdaptiveTransfer).
RELATIONS_ATTR_PREFIX = "relations:"
#: The split's hyperparameters after a change (transfer, PBT explore).
HPARAMS_ATTR_PREFIX = "hparams:"
#: Per-step prefixes: a resumed run copies these, up to its resume step, from the old run.
STEP_ATTR_PREFIXES = (TRANSFER_ATTR_PREFIX, RELATIONS_ATTR_PREFIX, HPARAMS_ATTR_PREFIX)


def step_key(prefix: str, step: int) -> str:
    """Return the per-step attribute key of ``prefix`` at ``step`` (sorts by step)."""
    return f"{prefix}{step:06d}"


# --------------------------------------------------------------------------- checkpoints
#: Fields of a split's checkpoint (``_state.capture_state``, ``_report``): the weights and
#: the optimizer's and LR scheduler's states, the report step, its fitness, the RNG states,
#: the splits whose weights the model holds.
CHECKPOINT_MODEL = "model"
CHECKPOINT_OPTIMIZER = "optimizer"
CHECKPOINT_SCHEDULER = "scheduler"
CHECKPOINT_STEP = "step"
CHECKPOINT_FITNESS = "fitness"
CHECKPOINT_RNG = "rng"
CHECKPOINT_LINEAGE = "lineage"
#: Checkpoint field: the transfer strategy's per-split state (``SplitHandle.state``).
CHECKPOINT_STRATEGY = "strategy"
#: Checkpoint field: the split's hyperparameters, ``{"values": ..., "source": ...}``.
CHECKPOINT_HPARAMS = "hparams"
HPARAMS_VALUES_FIELD = "values"
HPARAMS_SOURCE_FIELD = "source"
#: AdaptiveTransfer's relation scores in the strategy state (format 1: at the top level).
RELATIONS_FIELD = "relations"
#: The RNG states under :data:`CHECKPOINT_RNG` (``_state.get_rng_state``).
RNG_TORCH = "torch"
RNG_PYTHON = "python"
RNG_NUMPY = "numpy"
RNG_CUDA = "cuda"
#: The fields of :data:`RNG_NUMPY`: ``np.random.get_state()[1:]``, in that order.
NUMPY_STATE_FIELDS = ("keys", "pos", "has_gauss", "cached_gaussian")
#: First part of every checkpoint's artifact id (``CheckpointStore``).
ARTIFACT_ID_PREFIX = "mto"

# --------------------------------------------------------------------------- tables
METADATA = sa.MetaData()

#: One row per (study, split, attempt): who runs it (see ``_claims``).
claims_table = sa.Table(
    "mto_split_claims",
    METADATA,
    sa.Column("study_id", sa.Integer, primary_key=True),
    sa.Column("split", sa.Integer, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, nullable=True),
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("claimed_at", sa.DateTime, nullable=False),
    # Server-side defaults: workers of an older optuna-mto insert claims without them.
    sa.Column("interrupted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("errored", sa.Boolean, nullable=False, server_default=sa.false()),
)

#: One row per (study, split): its latest published record (see ``_board``).
board_table = sa.Table(
    "mto_board",
    METADATA,
    sa.Column("study_id", sa.Integer, primary_key=True),
    sa.Column("split", sa.Integer, primary_key=True),
    sa.Column("record", sa.Text, nullable=False),
)
BOARD_TABLE = board_table.name

#: One row per complete artifact of a ``DatabaseArtifactStore``.
artifacts_table = sa.Table(
    "mto_artifacts",
    METADATA,
    sa.Column("artifact_id", sa.String(255), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("n_chunks", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

#: The artifacts' content, ``chunk_size`` bytes a row.
chunks_table = sa.Table(
    "mto_artifact_chunks",
    METADATA,
    sa.Column("artifact_id", sa.String(255), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def ensure_tables(engine: sa.Engine, *tables: sa.Table) -> None:
    """Create ``tables`` unless they exist, tolerating workers racing to do it.

    ``create_all(checkfirst=True)`` checks then creates, so two workers opening a fresh
    database together can both try to create; the loser's error is harmless as long as
    the tables exist afterwards.
    """
    metadata = tables[0].metadata
    try:
        metadata.create_all(engine, tables=list(tables), checkfirst=True)
    except sa.exc.DatabaseError:
        existing = set(sa.inspect(engine).get_table_names())
        if not {t.name for t in tables} <= existing:
            raise
