from __future__ import annotations

import io
import os

import optuna
import pytest
from _artifact_helpers import FailingReader, payload, read_artifact
from optuna.artifacts import download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from optuna_mto.checkpoints import AtomicFileSystemArtifactStore

# --------------------------------------------------------------------------- file system


def test_file_store_creates_base_path(tmp_path) -> None:
    base = tmp_path / "a" / "b"
    AtomicFileSystemArtifactStore(base)
    assert base.is_dir()
    AtomicFileSystemArtifactStore(str(base))  # existing folder, str path


@pytest.mark.parametrize("size", [0, 1, 5000, 3 * 1024 * 1024 + 7])
def test_file_store_round_trip(tmp_path, id_prefix, size) -> None:
    store = AtomicFileSystemArtifactStore(tmp_path)
    data = payload(size)
    store.write(f"{id_prefix}-a", io.BytesIO(data))
    assert read_artifact(store, f"{id_prefix}-a") == data
    assert sorted(os.listdir(tmp_path)) == [f"{id_prefix}-a"]  # no temp file left


def test_file_store_overwrite(tmp_path, id_prefix) -> None:
    store = AtomicFileSystemArtifactStore(tmp_path)
    store.write(id_prefix, io.BytesIO(b"first version, long"))
    store.write(id_prefix, io.BytesIO(b"second"))
    assert read_artifact(store, id_prefix) == b"second"


def test_file_store_failed_write_leaves_nothing(tmp_path, id_prefix) -> None:
    store = AtomicFileSystemArtifactStore(tmp_path)
    with pytest.raises(OSError, match="simulated failure"):
        store.write(id_prefix, io.BufferedReader(FailingReader(3000)))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ArtifactNotFound):
        store.open_reader(id_prefix)


def test_file_store_failed_overwrite_keeps_old_version(tmp_path, id_prefix) -> None:
    store = AtomicFileSystemArtifactStore(tmp_path)
    store.write(id_prefix, io.BytesIO(b"old"))
    with pytest.raises(OSError):
        store.write(id_prefix, io.BufferedReader(FailingReader(3000)))
    assert read_artifact(store, id_prefix) == b"old"
    assert os.listdir(tmp_path) == [id_prefix]


def test_file_store_missing(tmp_path, id_prefix) -> None:
    store = AtomicFileSystemArtifactStore(tmp_path)
    with pytest.raises(ArtifactNotFound):
        store.open_reader(id_prefix)
    with pytest.raises(ArtifactNotFound):
        store.remove(id_prefix)
    store.write(id_prefix, io.BytesIO(b"x"))
    store.remove(id_prefix)
    with pytest.raises(ArtifactNotFound):
        store.open_reader(id_prefix)


@pytest.mark.parametrize(
    "bad_id", ["../escape", "..", ".", "a/b", "a\\b", "/etc/passwd", "", ".hidden", "a\x00b"]
)
def test_file_store_rejects_escaping_ids(tmp_path, bad_id) -> None:
    store = AtomicFileSystemArtifactStore(tmp_path / "base")
    with pytest.raises(ValueError, match="Invalid artifact_id"):
        store.write(bad_id, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="Invalid artifact_id"):
        store.open_reader(bad_id)
    with pytest.raises(ValueError, match="Invalid artifact_id"):
        store.remove(bad_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]
    assert os.listdir(tmp_path / "base") == []


def test_file_store_works_with_optuna_artifacts(tmp_path) -> None:
    store = AtomicFileSystemArtifactStore(tmp_path / "artifacts")
    study = optuna.create_study()
    trial = study.ask()
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello artifact")
    artifact_id = upload_artifact(artifact_store=store, file_path=str(src), study_or_trial=trial)
    dst = tmp_path / "dst.bin"
    download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(dst))
    assert dst.read_bytes() == b"hello artifact"
