"""The visualization package is a leaf, like Optuna's: the core never needs it."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna_mto.visualization

#: What the figures may import from the rest of optuna-mto at run time (dependency-free
#: helpers and the summary they draw).
ALLOWED = {"optuna_mto._study.summary", "optuna_mto._storage.schema", "optuna_mto._logging"}
ALLOWED |= {"optuna_mto._validation", "optuna_mto._storage.optuna_internals", "optuna_mto._extras"}


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("optuna_mto")}


def test_figures_import_only_the_summary_schema_and_logging():
    package = Path(optuna_mto.visualization.__file__).parent
    for path in sorted(package.glob("*.py")):
        outside = {
            name
            for name in _runtime_imports(path)
            if not name.startswith("optuna_mto.visualization")
        }
        assert outside <= ALLOWED, f"{path.name} imports {sorted(outside - ALLOWED)}"


def test_the_public_names_are_the_figures_and_the_publishers():
    assert "DashboardRefresher" not in optuna_mto.visualization.__all__
    assert {"publish_to_dashboard", "refresh_dashboard"} <= set(optuna_mto.visualization.__all__)
    assert all(hasattr(optuna_mto.visualization, name) for name in optuna_mto.visualization.__all__)
