"""Optional dependencies: a missing one is one line naming the extra that installs it.

Each optional feature lives behind a pip extra of ``optuna-mto`` (``pyproject.toml``).
Code that needs one imports it through :func:`require` (or raises :func:`missing_extra`),
so that a user without it reads ``... pip install "optuna-mto[dashboard]"`` instead of a
raw ``ModuleNotFoundError``. The error is a :class:`MissingExtraError`, an ``ImportError``:
the command line prints it as one line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "missing_extra", "require"]

#: The extra that installs each optional top-level module.
EXTRAS = {
    "optuna_dashboard": "dashboard",
    "lightning": "lightning",
    "pytorch_lightning": "lightning",
    "mlflow": "mlflow",
    "tensorboard": "tensorboard",
    "transformers": "transformers",
    "accelerate": "transformers",
    "psycopg": "postgres",
    "torchvision": "vision",
    "sklearn": "examples",
    "mlxtend": "examples",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def missing_extra(feature: str, module: str, extra: str | None = None) -> MissingExtraError:
    """Return the error for ``feature`` lacking the optional ``module``.

    Args:
        feature: What needs it, e.g. ``"optuna-mto dashboard"``.
        module: The missing top-level module, e.g. ``"optuna_dashboard"``.
        extra: The extra that installs it (default: from :data:`EXTRAS`).
    """
    extra = extra or EXTRAS[module]
    return MissingExtraError(
        f'{feature} needs {module}, which is not installed: pip install "optuna-mto[{extra}]"',
        name=module,
    )


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"optuna_dashboard"``) for ``feature``, or say what to install.

    Raises:
        MissingExtraError: If the module (or a module it needs that an extra installs)
            is not installed. Any other import error of an installed package is re-raised
            as it is: reinstalling the extra would not fix it.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if missing not in EXTRAS:
            raise
        raise missing_extra(feature, missing) from None
