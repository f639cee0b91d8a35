"""What a user installs: dependency ranges, the version, and a light ``import optuna_mto``."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest

import optuna_mto

DIST = "optuna-mto"


def _requirements(extra: str | None = None) -> list[str]:
    """Return the installed distribution's requirements (core ones for ``extra=None``)."""
    reqs = importlib.metadata.requires(DIST) or []
    if extra is None:
        return [r for r in reqs if "extra ==" not in r]
    return [r for r in reqs if re.search(rf"extra == ['\"]{extra}['\"]", r)]


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0].lower()


@pytest.mark.smoke
def test_version_is_the_installed_distributions():
    assert optuna_mto.__version__ == importlib.metadata.version(DIST)


@pytest.mark.smoke
def test_core_dependencies_are_ranges_and_torchvision_is_an_extra():
    core = _requirements()
    assert {_name(r) for r in core} == {"torch", "optuna", "sqlalchemy", "numpy", "plotly"}
    pinned = [r for r in core if "==" in r]
    assert not pinned, f"runtime dependencies must be ranges, not pins: {pinned}"
    optuna_req = next(r for r in core if _name(r) == "optuna")
    assert "<6" in optuna_req, optuna_req  # optuna-mto uses Optuna internals: bound the major
    assert "torchvision" in {_name(r) for r in _requirements("vision")}
    assert "lightning" in {_name(r) for r in _requirements("lightning")}
    assert "mlflow-skinny" in {_name(r) for r in _requirements("mlflow")}
    assert "tensorboard" in {_name(r) for r in _requirements("tensorboard")}
    assert "transformers" in {_name(r) for r in _requirements("transformers")}


@pytest.mark.smoke
def test_import_does_not_load_plotting_vision_or_lightning():
    code = (
        "import sys, optuna_mto, optuna_mto.integration, optuna_mto.transfer\n"
        "heavy = ('plotly', 'torchvision', 'lightning', 'pytorch_lightning', "
        "'optuna_dashboard', 'sklearn', 'mlxtend', 'mlflow', 'tensorboard', 'transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.smoke
def test_the_package_namespace_holds_the_public_names_only():
    code = (
        "import optuna_mto\n"
        "print(dir(optuna_mto) == sorted(optuna_mto.__all__), 'annotations' in vars(optuna_mto))\n"
        "import optuna_mto.integration\n"
        "print(sorted(set(dir(optuna_mto)) - set(optuna_mto.__all__)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split("\n")[:2] == ["True False", "['integration']"], out.stdout
