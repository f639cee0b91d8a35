"""Training state: capture/apply, RNG states through a real checkpoint, compatibility."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from optuna_mto._step.state import (
    apply_state,
    capture_state,
    check_compatible,
    get_rng_state,
    set_rng_state,
    unwrap_model,
)
from optuna_mto.checkpoints import AtomicFileSystemArtifactStore, CheckpointStore


def _draws() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(4), np.random.rand(4), random.random()


def test_rng_states_round_trip_through_a_tensors_only_checkpoint(tmp_path):
    store = CheckpointStore(AtomicFileSystemArtifactStore(tmp_path))
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    np.random.randn()  # leaves a cached Gaussian in NumPy's legacy state
    ref = store.save({"rng": get_rng_state(torch.device("cpu"))}, name="rng")
    expected = _draws()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    assert not torch.equal(_draws()[0], expected[0])

    state = store.load(ref, map_location="cpu")
    set_rng_state(state["rng"], torch.device("cpu"))
    again = _draws()
    assert torch.equal(again[0], expected[0])
    assert np.array_equal(again[1], expected[1])
    assert again[2] == expected[2]


@pytest.mark.parametrize("device", [None, torch.device("cpu")])
def test_a_cpu_split_saves_no_cuda_state_and_ignores_one_it_is_given(device):
    state = get_rng_state(device)
    assert "cuda" not in state  # never initialises CUDA on a CPU worker
    # A checkpoint written on a GPU and resumed on the CPU: the CUDA state is skipped.
    set_rng_state({**state, "cuda": torch.zeros(16, dtype=torch.uint8)}, device)


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )


def _trained(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(16, 4)).sum().backward()
    opt.step()
    return model, opt


def test_captured_clone_is_independent_of_further_training_and_applies_whole():
    model, opt = _trained(0)
    state = capture_state(model, opt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(16, 4)).sum().backward()
    opt.step()  # moves the weights, BatchNorm statistics and momentum in place
    assert all(torch.equal(state["model"][k], before[k]) for k in before)

    receiver, receiver_opt = _trained(1)
    apply_state(state, receiver, receiver_opt)
    for name, tensor in receiver.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # buffers included
    momentum = receiver_opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, state["optimizer"]["state"][0]["momentum_buffer"])


def test_incompatible_architectures_are_named():
    own = _model().state_dict()
    wider = torch.nn.Sequential(
        torch.nn.Linear(4, 9), torch.nn.BatchNorm1d(9), torch.nn.Linear(9, 2)
    ).state_dict()
    with pytest.raises(ValueError, match=r"Tensor '0.weight' has shape \(9, 4\) in the donor"):
        check_compatible(own, wider)
    shorter = {k: v for k, v in own.items() if not k.startswith("2.")}
    with pytest.raises(ValueError, match="donor's weights have no tensor '2.weight'"):
        check_compatible(own, shorter)
    with pytest.raises(ValueError, match="have tensor '2.weight' that the receiver's model lacks"):
        check_compatible(shorter, own)
    check_compatible(own, _model().state_dict())


def test_unwrap_model_looks_through_compile_and_data_parallel():
    inner = _model()
    compiled = torch.compile(inner, backend="eager")
    parallel = torch.nn.DataParallel(inner)
    assert unwrap_model(inner) is inner
    assert unwrap_model(compiled) is inner
    assert unwrap_model(parallel) is inner
    assert unwrap_model(torch.compile(parallel, backend="eager")) is inner
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")  # what it avoids

    state = capture_state(compiled)
    assert list(state["model"]) == list(inner.state_dict())
    other = _model()
    apply_state(state, torch.nn.DataParallel(other))
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state["model"].items())
