"""Shared fixtures: real storages (SQLite file and the running PostgreSQL) and real data."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy
import torch

POSTGRES_ENV = "OPTUNA_MTO_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """Return the PostgreSQL test URL; skip when unset, fail when set but unreachable."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"set {POSTGRES_ENV} to run PostgreSQL tests")
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as err:
        pytest.fail(f"{POSTGRES_ENV} is set but the PostgreSQL server is unreachable: {err}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(autouse=True)
def _mto_home(tmp_path, monkeypatch):
    """Keep the embedded default home (SQLite files, artifacts) inside the test's tmp dir."""
    monkeypatch.setenv("OPTUNA_MTO_HOME", str(tmp_path / "home"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path) -> str:
    """One test body, run on a SQLite file and on the running PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return postgres_url()


@pytest.fixture
def study_name() -> str:
    """A unique study name (PostgreSQL is shared between tests and runs)."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 1,797 real 8x8 handwritten digits, as float features and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    return x, y


#: Tests measured slow (tests/slow_tests.txt); marked ``slow`` so that ``-m "not slow"``
#: is the fast subset.
_SLOW = {
    line.strip()
    for line in (Path(__file__).parent / "slow_tests.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests listed in tests/slow_tests.txt ``slow``."""
    root = Path(__file__).resolve().parent.parent
    for item in items:
        node = Path(item.path).resolve().relative_to(root).as_posix() + "::" + item.name
        if item.cls is not None:
            node = node.replace("::" + item.name, f"::{item.cls.__name__}::{item.name}")
        if node.split()[0] in _SLOW:  # durations print an id up to its first space
            item.add_marker(pytest.mark.slow)
