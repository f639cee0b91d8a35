"""MTOTrainerCallback: a real transformers.Trainer per split, on a tiny BERT built offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import optuna_mto  # noqa: E402
from optuna_mto.integration import MTOTrainerCallback  # noqa: E402
from optuna_mto.transfer import AdaptiveTransfer, GreedyTransfer  # noqa: E402

EPOCHS = 2
N_ROWS = 500


@pytest.fixture(scope="module")
def tokens():
    """sklearn digits as 64-token sequences (pixel intensity 0-16 is the token id)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    ids = torch.tensor(data.data[:N_ROWS], dtype=torch.long)
    return ids, torch.tensor(data.target[:N_ROWS], dtype=torch.long)


class Rows(torch.utils.data.Dataset):
    def __init__(self, ids, labels, rows) -> None:
        self.ids, self.labels, self.rows = ids, labels, np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        return {"input_ids": self.ids[row], "labels": self.labels[row]}


def tiny_bert():
    config = transformers.BertConfig(
        vocab_size=17, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=10,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)  # from a config: no download


def accuracy(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=1) == labels).mean())}


def test_trainer_runs_each_split_with_transfers_in_place(study_name, tokens, tmp_path):
    ids, labels = tokens

    def evaluate(model, rows) -> float:  # the same metric as eval_accuracy, on any rows
        rows = torch.as_tensor(np.asarray(rows))
        with torch.no_grad():
            logits = model(input_ids=ids[rows]).logits
        return float((logits.argmax(dim=1) == labels[rows]).float().mean())

    callbacks: dict[int, MTOTrainerCallback] = {}

    def objective(trial: optuna_mto.SplitTrial) -> None:
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / f"split{trial.split}"), num_train_epochs=EPOCHS,
            learning_rate=trial.suggest_float("lr", 1e-3, 1e-2, log=True),
            per_device_train_batch_size=64, per_device_eval_batch_size=256,
            eval_strategy="epoch", save_strategy="no", logging_strategy="no",
            report_to="none", use_cpu=True, disable_tqdm=True, seed=trial.split,
        )  # fmt: skip
        callback = MTOTrainerCallback(trial, metric="eval_accuracy", step="epoch")
        callbacks[trial.split] = callback
        trainer = transformers.Trainer(
            model=tiny_bert(), args=args, compute_metrics=accuracy, callbacks=[callback],
            train_dataset=Rows(ids, labels, trial.train_indices),
            eval_dataset=Rows(ids, labels, trial.valid_indices),
        )  # fmt: skip
        trainer.train()

    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=GreedyTransfer(donor="uniform")
    )
    study.optimize(objective, dataset=N_ROWS, evaluate=evaluate, dashboard=False)
    trials = {t.system_attrs["mto:split"]: t for t in study.study.get_trials()}
    for split, trial in trials.items():
        assert trial.state.name == "COMPLETE"
        assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))
        assert len(callbacks[split].results) == EPOCHS
        # The reported eval_accuracy is the study's evaluate on the split's own rows.
        for result in callbacks[split].results:
            event = result.transfer
            if event is not None and event.reason == "":
                assert event.before == pytest.approx(trial.intermediate_values[result.step])
    assert study.summary().ranking  # cross-split scores of the two BERTs


def test_amto_is_refused_before_any_split_starts(study_name, tokens):
    study = optuna_mto.create_study(
        study_name=study_name, n_splits=2, transfer=AdaptiveTransfer(), heartbeat_interval=None
    )

    def objective(trial):
        MTOTrainerCallback(trial)

    with pytest.raises(ValueError, match="MTOTrainerCallback cannot train"):
        study.optimize(objective, dataset=N_ROWS, evaluate=lambda m, r: 0.5, dashboard=False)
    assert study.study.get_trials() == []
