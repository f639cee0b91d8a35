"""The package's shape: no import cycle, Optuna internals in one module, humane sizes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "optuna_mto"
#: Private Optuna attributes; only ``_optuna_internals`` may touch them.
OPTUNA_PRIVATE_ATTRS = {"_storage", "_study_id", "_trial_id", "_backend"}
MAX_LINES = 320


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))  # fmt: skip
                # ``from pkg import mod`` imports the module; ``from pkg import name`` the
                # package (every import runs the parent packages' __init__ too, as always).
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules] or [base]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_even_through_function_level_imports() -> None:
    graph = _edges(_modules())
    # A package's __init__ importing its own submodules is how re-exports work; a cycle
    # through a package's __init__ needs a submodule importing the package back.
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_visualization_is_a_leaf() -> None:
    graph = _edges(_modules())
    importers = sorted(
        name
        for name, targets in graph.items()
        if not name.startswith("optuna_mto.visualization")
        and any(t.startswith("optuna_mto.visualization") for t in targets)
    )
    # The CLI draws figures; optimize injects the dashboard publisher into the monitor.
    assert importers == ["optuna_mto._study.optimize", "optuna_mto.cli"]


def _is_private_optuna(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "optuna" and any(part.startswith("_") for part in parts[1:])


def _private_optuna_imports(tree: ast.AST) -> list[str]:
    """Optuna's private modules and names imported anywhere in ``tree``, as dotted paths.

    Every form counts: ``import optuna.x._y``, ``from optuna.x._y import z``, ``from
    optuna.x import _y``, ``import_module("optuna.x._y")``, inside a function or under
    ``if TYPE_CHECKING:`` too.
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if _is_private_optuna(a.name))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            paths = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found.update(path for path in paths if _is_private_optuna(path))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _is_private_optuna(node.args[0].value)
        ):
            found.add(node.args[0].value)
    return sorted(found)


@pytest.mark.parametrize("name", sorted(_modules()))
def test_optuna_internals_only_through_the_adapter(name: str) -> None:
    if name == "optuna_mto._storage.optuna_internals":
        return
    tree = ast.parse(_modules()[name].read_text())
    private = sorted(
        {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr in OPTUNA_PRIVATE_ATTRS
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        }
    )
    modules = _private_optuna_imports(tree)
    assert (private, modules) == ([], []), f"use optuna_mto._storage.optuna_internals in {name}"


@pytest.mark.parametrize(
    "source",
    [
        "import optuna.storages._rdb.models",
        "import optuna.storages._rdb.models as models",
        "from optuna.storages._rdb import models",
        "from optuna.storages import _rdb",
        "from optuna import _experimental",
        "def f():\n    import optuna._imports",
        "if TYPE_CHECKING:\n    from optuna.storages._cached_storage import _CachedStorage",
        "importlib.import_module('optuna.storages._rdb.models')",
    ],
)
def test_the_adapter_check_finds_every_private_import_form(source: str) -> None:
    assert _private_optuna_imports(ast.parse(source)) != []


def test_the_adapter_check_allows_public_optuna() -> None:
    source = (
        "import optuna\nimport optuna.storages\nfrom optuna.trial import FrozenTrial\n"
        "from optuna import distributions\nfrom ._x import y\nimport optuna_dashboard._app"
    )
    assert _private_optuna_imports(ast.parse(source)) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_stay_small(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (limit {MAX_LINES})"


#: Lines of one function or method, not counting its docstring (issue #23).
MAX_FUNCTION_LINES = 60


def _function_lengths(tree: ast.AST) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, lines without the docstring)`` of every function."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lines = child.end_lineno - child.lineno + 1  # type: ignore[operator]
                if ast.get_docstring(child, clean=False) is not None:
                    doc = child.body[0]
                    lines -= doc.end_lineno - doc.lineno + 1  # type: ignore[operator]
                found.append((name, child.lineno, lines))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def test_functions_stay_short() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({lines} lines)"
        for path in _modules().values()
        for name, line, lines in _function_lengths(ast.parse(path.read_text()))
        if lines > MAX_FUNCTION_LINES
    ]
    assert not offenders, (
        f"functions longer than {MAX_FUNCTION_LINES} lines without their docstring; split "
        "them into named steps:\n  " + "\n  ".join(offenders)
    )


def test_the_length_check_leaves_out_the_docstring_only() -> None:
    source = (
        "class A:\n"
        "    def f(self):\n"
        '        """One\n\n        docstring.\n        """\n'
        "        x = 1\n"
        "        return x\n"
        "\n"
        "    async def g(self):\n"
        "        def inner():\n"
        "            pass\n"
        "        return inner\n"
    )
    assert _function_lengths(ast.parse(source)) == [
        ("A.f", 2, 3),
        ("A.g", 10, 4),
        ("A.g.inner", 11, 2),
    ]
