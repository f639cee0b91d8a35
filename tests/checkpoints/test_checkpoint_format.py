from __future__ import annotations

import collections
import hashlib
import io
import pickle

import numpy as np
import pytest
import torch

from optuna_mto._errors import CheckpointError
from optuna_mto.checkpoints._format import deserialize_state, serialize_state, sha256_hex


class NotATensor:
    pass


def test_round_trip_nested_values() -> None:
    state = {
        "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "nested": {
            0: [1, 2.5, True, None, "s"],
            1: (torch.ones(2, dtype=torch.int64), ("x", -3)),
        },
        "empty": {},
        "flag": False,
    }
    out = deserialize_state(serialize_state(state))
    assert torch.equal(out["a"], state["a"])
    assert out["nested"][0] == [1, 2.5, True, None, "s"]
    assert isinstance(out["nested"][1], tuple)
    assert torch.equal(out["nested"][1][0], torch.ones(2, dtype=torch.int64))
    assert out["nested"][1][1] == ("x", -3)
    assert out["empty"] == {} and out["flag"] is False


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.bool]
)
def test_dtype_kept(dtype) -> None:
    t = torch.ones(3, dtype=dtype)
    out = deserialize_state(serialize_state({"t": t}))["t"]
    assert out.dtype == dtype and torch.equal(out, t)


def test_tensors_detached_and_parameters_plain() -> None:
    p = torch.nn.Parameter(torch.randn(3))
    y = p * 2
    out = deserialize_state(serialize_state({"p": p, "y": y}))
    assert type(out["p"]) is torch.Tensor and not out["p"].requires_grad
    assert not out["y"].requires_grad and torch.equal(out["y"], y.detach())


def test_state_dict_metadata_kept() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    sd = model.state_dict()
    out = deserialize_state(serialize_state({"model": sd}))["model"]
    assert isinstance(out, collections.OrderedDict)
    assert out._metadata == sd._metadata
    torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)).load_state_dict(out)


def test_numpy_float_becomes_float() -> None:
    out = deserialize_state(serialize_state({"loss": np.float64(0.25)}))
    assert type(out["loss"]) is float and out["loss"] == 0.25


@pytest.mark.parametrize(
    ("state", "path", "bad_type"),
    [
        (
            {"optimizer": {"param_groups": [{"lr": 0.1, "foo": NotATensor()}]}},
            "state['optimizer']['param_groups'][0]['foo']",
            NotATensor,
        ),
        ({"x": {1, 2}}, "state['x']", set),
        ({"x": [0, (1, b"raw")]}, "state['x'][1][1]", bytes),
        ({"x": np.zeros(3)}, "state['x']", np.ndarray),
        ({"x": {3: torch.float32}}, "state['x'][3]", torch.dtype),
    ],
)
def test_serialize_rejects_other_objects(state, path, bad_type) -> None:
    with pytest.raises(TypeError) as excinfo:
        serialize_state(state)
    msg = str(excinfo.value)
    assert msg.startswith(f"{path} is a {bad_type}")
    assert "checkpoints hold tensors and plain Python values only" in msg


def test_serialize_rejects_bad_keys_and_non_mapping() -> None:
    with pytest.raises(TypeError, match=r"state\['m'\] has a key 1.5"):
        serialize_state({"m": {1.5: 1}})
    with pytest.raises(TypeError, match="must be a mapping"):
        serialize_state([torch.ones(1)])  # type: ignore[arg-type]


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_torch_bytes({"x": NotATensor()}), id="torch-save-object"),
        pytest.param(pickle.dumps({"x": NotATensor()}), id="plain-pickle"),
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage" * 100, id="garbage"),
        pytest.param(_torch_bytes({"t": torch.ones(100)})[:-40], id="truncated"),
    ],
)
def test_deserialize_refuses(data) -> None:
    with pytest.raises(CheckpointError, match="not a tensors-only file or is corrupted") as e:
        deserialize_state(data)
    assert e.value.__cause__ is not None


def test_deserialize_refuses_non_dict() -> None:
    with pytest.raises(CheckpointError, match="top level"):
        deserialize_state(_torch_bytes(torch.ones(2)))


def test_map_location() -> None:
    data = serialize_state({"t": torch.ones(2), "n": [torch.zeros(1)]})
    assert deserialize_state(data)["t"].device.type == "cpu"
    assert deserialize_state(data, map_location=None)["t"].device.type == "cpu"
    meta = deserialize_state(data, map_location="meta")
    assert meta["t"].device.type == "meta" and meta["n"][0].device.type == "meta"
    assert deserialize_state(data, map_location=torch.device("cpu"))["t"].device.type == "cpu"


def test_sha256_hex() -> None:
    assert sha256_hex(b"") == hashlib.sha256(b"").hexdigest()
    assert sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
