from __future__ import annotations

import io
import json
import os
import pickle
import re

import pytest
import torch

from optuna_mto._errors import CheckpointError
from optuna_mto.checkpoints import AtomicFileSystemArtifactStore, CheckpointRef, CheckpointStore
from optuna_mto.checkpoints._format import sha256_hex

MARKER_ENV = "OPTUNA_MTO_TEST_PWNED_MARKER"


class Exploit:
    """Unpickling this object would create a marker file (if it were ever unpickled)."""

    def __reduce__(self):
        return (os.makedirs, (os.environ[MARKER_ENV],))


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )


def _training_state() -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(torch.randn(32, 8)).pow(2).mean()
    loss.backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "epoch": 3,
        "best": 0.5,
    }
    return model, opt, state


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


def _raw_write(store, artifact_id: str, data: bytes) -> CheckpointRef:
    store.write(artifact_id, io.BytesIO(data))
    return CheckpointRef(artifact_id=artifact_id, sha256=sha256_hex(data), nbytes=len(data))


def test_round_trip_training_state(artifact_store, id_prefix) -> None:
    store = CheckpointStore(artifact_store, prefix=id_prefix)
    model, opt, state = _training_state()
    ref = store.save(state, name="split0-epoch3")
    assert ref.nbytes > 3 * 1000  # spans several chunks in the database stores
    loaded = store.load(ref)
    _assert_same(state, loaded)
    assert loaded["optimizer"]["state"][0]["momentum_buffer"] is not None

    # The loaded state restores a fresh model, optimiser and RNG.
    model2 = _model()
    model2.load_state_dict(loaded["model"])
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.5, momentum=0.0)
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.param_groups[0]["momentum"] == 0.9
    torch.set_rng_state(loaded["rng"]["torch"])
    a = torch.rand(5)
    torch.set_rng_state(state["rng"]["torch"])
    assert torch.equal(a, torch.rand(5))
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)

    store.remove(ref.artifact_id)
    with pytest.raises(CheckpointError, match="is missing"):
        store.load(ref)


def test_map_location(artifact_store, id_prefix) -> None:
    store = CheckpointStore(artifact_store, prefix=id_prefix)
    ref = store.save({"w": torch.ones(3), "groups": [{"t": torch.zeros(1)}]}, name="m")
    assert store.load(ref)["w"].device.type == "cpu"
    assert store.load(ref, map_location="cpu")["w"].device.type == "cpu"
    meta = store.load(ref, map_location="meta")
    assert meta["w"].device.type == "meta" and meta["groups"][0]["t"].device.type == "meta"
    assert meta["w"].shape == (3,)


@pytest.mark.parametrize("how", ["torch-save", "plain-pickle"])
def test_pickled_object_refused(artifact_store, id_prefix, tmp_path, monkeypatch, how) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    if how == "torch-save":
        buf = io.BytesIO()
        torch.save({"x": Exploit(), "w": torch.ones(2)}, buf)
        data = buf.getvalue()
    else:
        data = pickle.dumps({"x": Exploit()})
    ref = _raw_write(artifact_store, f"{id_prefix}-evil", data)  # correct checksum
    store = CheckpointStore(artifact_store, prefix=id_prefix)
    with pytest.raises(CheckpointError, match="not a tensors-only file"):
        store.load(ref)
    assert not marker.exists()


def test_truncated_refused(artifact_store, id_prefix) -> None:
    store = CheckpointStore(artifact_store, prefix=id_prefix)
    ref = store.save({"w": torch.randn(500)}, name="t")
    with artifact_store.open_reader(ref.artifact_id) as f:
        data = f.read()
    artifact_store.write(ref.artifact_id, io.BytesIO(data[:-100]))
    with pytest.raises(CheckpointError, match="truncated"):
        store.load(ref)


def test_byte_flip_refused(artifact_store, id_prefix) -> None:
    store = CheckpointStore(artifact_store, prefix=id_prefix)
    ref = store.save({"w": torch.randn(500)}, name="t")
    with artifact_store.open_reader(ref.artifact_id) as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    artifact_store.write(ref.artifact_id, io.BytesIO(bytes(data)))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        store.load(ref)


def test_missing_and_remove(artifact_store, id_prefix) -> None:
    store = CheckpointStore(artifact_store, prefix=id_prefix)
    ref = CheckpointRef(artifact_id=f"{id_prefix}-nothing", sha256="0" * 64, nbytes=1)
    with pytest.raises(CheckpointError, match=f"checkpoint {id_prefix}-nothing is missing"):
        store.load(ref)
    store.remove(ref.artifact_id)  # missing: ignored
    assert store.artifact_store is artifact_store


def test_save_rejects_objects(artifact_store, id_prefix) -> None:
    store = CheckpointStore(artifact_store, prefix=id_prefix)
    with pytest.raises(TypeError, match=r"state\['extra'\]\[0\] is a"):
        store.save({"extra": [object()]}, name="bad")


def test_ids_are_filename_safe_and_unique(tmp_path) -> None:
    files = AtomicFileSystemArtifactStore(tmp_path)
    store = CheckpointStore(files, prefix=".my study/1")
    ref1 = store.save({"x": 1}, name="split 3/epoch:1 ..")
    ref2 = store.save({"x": 2}, name="split 3/epoch:1 ..")
    assert ref1.artifact_id != ref2.artifact_id
    for ref in (ref1, ref2):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", ref.artifact_id)
        assert not ref.artifact_id.startswith(".")
        assert ref.artifact_id.startswith("_my_study_1-split_3_epoch_1_..-")
    assert sorted(os.listdir(tmp_path)) == sorted([ref1.artifact_id, ref2.artifact_id])
    assert store.load(ref2) == {"x": 2}
    long_ref = store.save({}, name="n" * 1000)
    assert len(long_ref.artifact_id) <= 255


def test_checkpoint_ref_dict_round_trip() -> None:
    ref = CheckpointRef(artifact_id="mto-a-0123456789ab", sha256="ab" * 32, nbytes=1234)
    d = json.loads(json.dumps(ref.to_dict()))
    assert CheckpointRef.from_dict(d) == ref
    with pytest.raises(ValueError, match="sha256"):
        CheckpointRef.from_dict({"artifact_id": "x", "nbytes": 1})
    with pytest.raises(ValueError, match="nbytes"):
        CheckpointRef.from_dict({"artifact_id": "x", "sha256": "y", "nbytes": "12"})
    with pytest.raises(dataclasses_frozen_error()):
        ref.nbytes = 2  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError
