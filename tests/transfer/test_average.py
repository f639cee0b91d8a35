"""AveragingTransfer (PAPA): one shared start, then every split pulled toward the average."""

from __future__ import annotations

import logging
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _models import adam_fast, tiny_mlp

import optuna_mto
from optuna_mto._study.outputs import export_soup
from optuna_mto.transfer import (
    AveragingTransfer,
    GreedyTransfer,
    TransferContext,
    from_params,
    pull_toward_average,
)


def _weights(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(3, 4, generator=gen),
        "b": torch.randn(4, generator=gen),
        "num_batches_tracked": torch.tensor(10 + seed),
    }


def test_rate_one_makes_the_weights_the_population_average():
    own, others = _weights(0), [_weights(1), _weights(2)]
    average = pull_toward_average(own, others, 1.0)
    for name in ("w", "b"):
        expected = torch.stack([own[name], *(o[name] for o in others)]).mean(dim=0)
        assert torch.allclose(average[name], expected, atol=1e-6)
    assert average["num_batches_tracked"] == 10  # integer buffers stay the receiver's
    half = pull_toward_average(own, others, 0.5)
    assert torch.allclose(half["w"], (own["w"] + average["w"]) / 2, atol=1e-6)
    assert torch.equal(pull_toward_average(own, [], 0.5)["w"], own["w"])  # alone: unchanged
    assert torch.equal(own["w"], _weights(0)["w"])  # the inputs are not modified


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"rate": 0}, "rate=0"),
        ({"rate": 1.5}, "rate=1.5"),
        ({"rate": math.nan}, "rate=nan"),
        ({"rate": True}, "rate=True"),
        ({"interval": 0}, "interval=0"),
        ({"warmup": -1}, "warmup=-1"),
        ({"sync_timeout": 0}, "sync_timeout=0"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        AveragingTransfer(**kwargs)


def test_parameters_round_trip_and_declare_the_soup_as_the_default_output():
    for manager in (
        AveragingTransfer(),
        AveragingTransfer(interval=3, warmup=2, rate=1.0, synchronous=True, sync_timeout=5.0),
    ):
        rebuilt = from_params(manager.get_params())
        assert type(rebuilt) is AveragingTransfer
        assert rebuilt.get_params() == manager.get_params()
    assert AveragingTransfer().get_params() == {
        "name": "AveragingTransfer", "interval": 1, "warmup": 1, "rate": 0.5
    }  # fmt: skip
    assert AveragingTransfer.default_output == "uniform_soup"
    assert GreedyTransfer().default_output == "ensemble"
    with pytest.raises(TypeError):
        AveragingTransfer(2)  # keyword-only


# ------------------------------------------------------------------ the shared-start rule
class _Split:
    """A split as the strategy sees it: its handle, and what it last published."""

    def __init__(self, split: int, fitness: float) -> None:
        self.split, self.fitness, self.state, self.lineage = split, fitness, {}, [split]
        self.weights, self.events, self.finished = _weights(split), [], False
        self.published: dict = {}

    # SplitHandle's methods the strategy uses
    def load_donor(self, record):
        return record.checkpoint

    def capture(self, clone=True):
        return {"model": self.weights}

    def apply(self, state):
        self.weights = state["model"]

    def evaluate(self):
        return self.fitness

    def inherit(self, lineage):
        self.lineage = sorted(set(self.lineage) | set(lineage))

    def record(self, event):
        self.events.append(event)
        return event

    def publish(self) -> None:
        self.published = {
            "model": dict(self.weights),
            **({"strategy": dict(self.state)} if self.state else {}),
        }

    def as_record(self, step: int) -> SimpleNamespace:
        return SimpleNamespace(
            split=self.split, fitness=self.fitness, finished=self.finished, step=step,
            lineage=list(self.lineage), trial_number=self.split, checkpoint=self.published,
        )  # fmt: skip


def _look(manager, split: _Split, others: list[_Split], step: int, direction="maximize"):
    records = {o.split: o.as_record(step - 1) for o in others}
    context = TransferContext(
        split.split, step, split.fitness, direction, {k: r.fitness for k, r in records.items()},
        np.random.default_rng(0), records=records,
    )  # fmt: skip
    return manager.on_report(context, split)


def test_two_splits_looking_at_once_never_take_each_others_weights():
    manager = AveragingTransfer()
    a, b = _Split(0, 0.6), _Split(1, 0.8)
    for split in (a, b):
        split.publish()
    # Step 1, at once: each sees the other before its first look (no start yet).
    assert _look(manager, a, [b], 1) is None and _look(manager, b, [a], 1) is None
    for split in (a, b):
        split.publish()
    # Step 2, at once: each sees the other's start; only the lower-ranked one moves.
    event_a, event_b = _look(manager, a, [b], 2), _look(manager, b, [a], 2)
    assert event_b is None
    assert event_a.operator == "shared-start" and event_a.donor == 1 and event_a.accepted
    assert torch.equal(a.weights["w"], b.weights["w"]) and a.lineage == [0, 1]
    assert a.state == b.state  # one start
    a.publish()
    # Step 3: both average, each with the other's published weights.
    a.weights = _weights(5)
    a.publish()
    event = _look(manager, b, [a], 3)
    assert event.operator == "average:0" and event.donor == 0 and event.accepted
    expected = _weights(1)["w"] * 0.75 + _weights(5)["w"] * 0.25  # rate 0.5 toward the mean
    assert torch.allclose(b.weights["w"], expected, atol=1e-6)
    # A split that starts late, even scoring best, joins the finished splits' start;
    # a diverged split is no donor.
    a.finished = b.finished = True
    late, diverged = _Split(2, 0.99), _Split(3, math.nan)
    diverged.state = {"average_start": [-2.0, 3]}
    diverged.publish()
    event = _look(manager, late, [a, b, diverged], 1)
    assert event.operator == "shared-start" and event.donor == 1  # the start's best split
    assert late.state == b.state and late.lineage == [0, 1, 2]


def test_when_minimizing_the_lowest_loss_is_the_shared_start():
    manager = AveragingTransfer(rate=1.0)
    low, high = _Split(0, 0.3), _Split(1, 0.5)  # validation losses
    low.publish()
    assert _look(manager, low, [high], 1, "minimize") is None  # alone: its own start
    low.publish()
    event = _look(manager, high, [low], 1, "minimize")
    assert event.operator == "shared-start" and event.donor == 0
    assert high.state == low.state == {"average_start": [0.3, 0]}
    high.publish()
    low.weights = _weights(7)
    event = _look(manager, low, [high], 2, "minimize")  # rate 1: the mean of the two
    assert event.operator == "average:1"
    assert torch.allclose(low.weights["b"], (_weights(7)["b"] + _weights(0)["b"]) / 2)


# ------------------------------------------------------------------ a real study
def test_papa_study_averages_and_ends_with_one_soup(tmp_path, digits, caplog):
    storage = f"sqlite:///{tmp_path / 'papa.db'}"
    study = optuna_mto.create_study(
        study_name="papa", storage=storage, n_splits=3, transfer=AveragingTransfer(),
        selection_fraction=0.1, seed=0,
    )  # fmt: skip
    trainer = optuna_mto.SupervisedTrainer(
        tiny_mlp, digits, optimizer_fn=adam_fast, epochs=4, batch_size=64
    )
    with caplog.at_level(logging.INFO, logger="optuna.optuna_mto"):
        study.optimize(trainer, n_jobs=3, executor="thread", dashboard=False)
    assert study.summary().complete
    assert "Its default output is the uniform soup of its 3 models" in caplog.text

    events = study.transfers()
    assert events and all(e.accepted for e in events)
    operators = {e.operator.split(":")[0] for e in events}
    assert "average" in operators and operators <= {"average", "shared-start"}
    averaged = [e for e in events if e.operator.startswith("average:")]
    for event in averaged:  # the donors are named; the best of them is the event's donor
        donors = [int(k) for k in event.operator.split(":")[1].split("+")]
        assert event.receiver not in donors and event.donor in donors
    # One shared start, and lineages that share a split: the uniform soup is allowed.
    store = study.checkpoint_store
    kept = [store.load(r.checkpoint, map_location="cpu") for r in study.records().values()]
    assert len({tuple(state["strategy"]["average_start"]) for state in kept}) == 1
    soup, members, score = study.soup(tiny_mlp, "uniform", evaluate=trainer.evaluate)
    assert members == [0, 1, 2] and score > 0.8
    path, splits = export_soup(study._rt, tmp_path / "soup.pt")
    assert splits == [0, 1, 2]
    exported = tiny_mlp()
    exported.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(exported.state_dict()[k], v) for k, v in soup.state_dict().items())
    # The command line's default export of such a study is the soup too.
    from optuna_mto.cli import main

    assert (
        main(["export", "--storage", storage, "--study", "papa", "-o", str(tmp_path / "c.pt")]) == 0
    )
    by_cli = torch.load(tmp_path / "c.pt", weights_only=True)
    assert all(torch.equal(by_cli[k], v) for k, v in soup.state_dict().items())
    # Workers that open the study rebuild the same strategy from its stored parameters.
    reopened = optuna_mto.load_study(study_name="papa", storage=storage)
    assert reopened.transfer.get_params() == AveragingTransfer().get_params()
