"""Every stored name is spelled once, in ``optuna_mto/_storage/schema.py``, and keeps its value.

A stored name (attribute key or prefix, table name, checkpoint field) spelled as a string
literal anywhere else in the package fails here, naming the file and line: import the
constant from ``optuna_mto._storage.schema`` instead.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from optuna_mto._storage import schema as _schema

PACKAGE = Path(__file__).resolve().parents[1] / "optuna_mto"

#: What studies already stored hold: changing one of these breaks opening them.
STORED_VALUES = {
    "FORMAT_KEY": "mto:format",
    "CONFIG_KEY": "mto:config",
    "DATASET_KEY": "mto:dataset",
    "OPTUNA_PARTS_KEY": "mto:optuna_parts",
    "OUTPUTS_KEY": "mto:outputs",
    "TASK_KEY": "mto:task",
    "CALLBACK_FAILURES_PREFIX": "mto:callback_failures:",
    "BOARD_PREFIX_V1": "mto:board:",
    "SPLIT_PARAM": "split",
    "SPLIT_KEY": "mto:split",
    "ATTEMPT_KEY": "mto:attempt",
    "RETRIED_FROM_KEY": "mto:retried_from",
    "FAILED_AT_START_KEY": "mto:failed_at_start",
    "FAIL_REASON_KEY": "fail_reason",
    "LIGHTNING_LOOP_PREFIX": "mto:lightning_loop:",
    "BEST_KEY": "mto:best",
    "LINEAGE_KEY": "mto:lineage",
    "OVERLAP_KEY": "mto:overlap",
    "CROSS_SCORES_KEY": "mto:cross_scores",
    "SELECTION_SCORE_KEY": "mto:selection_score",
    "PRUNED_KEY": "mto:pruned",
    "RESUMED_FROM_KEY": "mto:resumed_from_step",
    "SPLIT_ATTR": "split",
    "ATTEMPT_ATTR": "attempt",
    "DEVICE_ATTR": "device",
    "WORKER_ATTR": "worker",
    "BAD_CHECKPOINT_ATTR_PREFIX": "bad_checkpoint:",
    "CROSS_SCORES_ATTR": "cross_split_scores",
    "SELECTION_SCORE_ATTR": "selection_score",
    "RESUMED_FROM_ATTR": "resumed_from_step",
    "OBJECTIVE_VALUE_ATTR": "objective_value",
    "TRAIN_EPOCHS_ATTR": "train_epochs",
    "EXPLORER_EPOCHS_ATTR": "explorer_epochs",
    "CURRENT_HPARAMS_ATTR": "current_hparams",
    "HPARAMS_SOURCE_ATTR": "hparams_source",
    "TRANSFER_ATTR_PREFIX": "transfer:",
    "RELATIONS_ATTR_PREFIX": "relations:",
    "HPARAMS_ATTR_PREFIX": "hparams:",
    "STEP_ATTR_PREFIXES": ("transfer:", "relations:", "hparams:"),
    "CHECKPOINT_MODEL": "model",
    "CHECKPOINT_OPTIMIZER": "optimizer",
    "CHECKPOINT_SCHEDULER": "scheduler",
    "CHECKPOINT_STEP": "step",
    "CHECKPOINT_FITNESS": "fitness",
    "CHECKPOINT_RNG": "rng",
    "CHECKPOINT_LINEAGE": "lineage",
    "CHECKPOINT_STRATEGY": "strategy",
    "CHECKPOINT_HPARAMS": "hparams",
    "HPARAMS_VALUES_FIELD": "values",
    "HPARAMS_SOURCE_FIELD": "source",
    "RELATIONS_FIELD": "relations",
    "RNG_TORCH": "torch",
    "RNG_PYTHON": "python",
    "RNG_NUMPY": "numpy",
    "RNG_CUDA": "cuda",
    "NUMPY_STATE_FIELDS": ("keys", "pos", "has_gauss", "cached_gaussian"),
    "ARTIFACT_ID_PREFIX": "mto",
    "BOARD_TABLE": "mto_board",
}
STORED_TABLES = {
    "mto_split_claims": [
        "study_id", "split", "attempt", "trial_id", "worker", "claimed_at", "interrupted",
        "errored",
    ],
    "mto_board": ["study_id", "split", "record"],
    "mto_artifacts": ["artifact_id", "size", "n_chunks", "created_at"],
    "mto_artifact_chunks": ["artifact_id", "seq", "data"],
}  # fmt: skip

#: Optuna's methods that write an attribute: a literal argument of theirs is a stored name.
_ATTR_WRITER = re.compile(r"set_(trial_|study_)?(user|system)_attrs?$")
#: Attributes of a trial that map stored names to values.
_ATTR_MAPS = {"user_attrs", "system_attrs", "params", "distributions"}
#: A plain word ("split", "model") is also an ordinary word: it counts only where it is
#: used as a stored name (see :func:`_stored_contexts`).
_PLAIN_WORD = re.compile(r"[a-z]+")
#: A module constant (``STRATEGY_KEY = "strategy"``): one spelling a stored name is a copy.
_CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*")


def _stored_names() -> dict[str, str]:
    """Every stored name ``_schema`` defines -> the constants (or table) defining it."""
    names: dict[str, list[str]] = {}
    for name, value in vars(_schema).items():
        if name.isupper() and not name.startswith("_"):
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, str):
                    names.setdefault(item, []).append(name)
    for table in _schema.METADATA.tables.values():
        names.setdefault(table.name, []).append("a table name")
    return {value: " or ".join(sorted(set(found))) for value, found in names.items()}


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _is_map(node: ast.AST) -> bool:
    """Whether ``node`` is a mapping keyed by stored names.

    A trial's attributes (``trial.user_attrs``) or a checkpoint: by this package's
    convention a variable named ``state``, ``*_state`` (``donor_state``) or ``stored``.
    """
    if isinstance(node, ast.Attribute):
        return node.attr in _ATTR_MAPS
    if isinstance(node, ast.Name):
        return node.id in ("state", "stored") or node.id.endswith("_state")
    return False


def _str(node: ast.AST | None) -> ast.Constant | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node
    return None


def _dict_keys(node: ast.AST | None) -> list[ast.Constant]:
    if not isinstance(node, ast.Dict):
        return []
    return [key for key in map(_str, node.keys) if key is not None]


def _stored_contexts(tree: ast.AST) -> tuple[list[ast.Constant], list[tuple[int, str]]]:
    """String literals used where a stored name goes, whatever their value.

    Also the keyword names of ``state.update(step=...)``, as ``(line, name)``.
    """
    found: list[ast.Constant] = []
    keywords: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_map(node.value):
            found.extend(filter(None, [_str(node.slice)]))
        elif isinstance(node, ast.Compare) and any(
            isinstance(op, (ast.In, ast.NotIn)) for op in node.ops
        ):
            if any(_is_map(c) for c in node.comparators):
                found.extend(filter(None, [_str(node.left)]))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_is_map(t) for t in targets):
                found.extend(_dict_keys(node.value))
            if any(isinstance(t, ast.Name) and _CONSTANT.fullmatch(t.id) for t in targets):
                found.extend(filter(None, [_str(node.value)]))
        elif isinstance(node, ast.Call):
            func = node.func
            values = [*node.args, *(k.value for k in node.keywords)]
            if isinstance(func, ast.Attribute) and _is_map(func.value):
                if func.attr in ("get", "pop", "setdefault") and node.args:
                    found.extend(filter(None, [_str(node.args[0])]))
                if func.attr == "update":
                    found.extend(key for arg in node.args for key in _dict_keys(arg))
                    keywords += [(node.lineno, k.arg) for k in node.keywords if k.arg]
            writes = [func, *values]
            if any(isinstance(n, ast.Attribute) and _ATTR_WRITER.match(n.attr) for n in writes):
                found.extend(filter(None, map(_str, values)))
            for keyword in node.keywords:
                if keyword.arg in _ATTR_MAPS:
                    found.extend(_dict_keys(keyword.value))
    return found, keywords


def spelled_stored_names(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: literal (the _schema constant)`` for each stored name spelled in ``source``.

    A stored name with a ``:``, an ``_`` or a capital counts wherever it is spelled (also
    as the start of a literal, ``"transfer:000003"``, or inside an f-string); a plain word
    only where a stored name goes (:func:`_stored_contexts`).
    """
    names = _stored_names()
    prefixes = [v for v in names if v.endswith(":")] + ["mto:"]
    tree = ast.parse(source, filename)
    skip = _docstrings(tree)
    literals, keywords = _stored_contexts(tree)
    stored_contexts = {id(node) for node in literals}
    hits = [(line, word, names[word]) for line, word in keywords if word in names]
    for node in ast.walk(tree):
        if _str(node) is None or id(node) in skip:
            continue
        value = node.value
        plain = _PLAIN_WORD.fullmatch(value) is not None
        if value in names and (not plain or id(node) in stored_contexts):
            hits.append((node.lineno, value, names[value]))
        elif value not in names and any(value.startswith(p) for p in prefixes):
            hits.append((node.lineno, value, next(names.get(p, p) for p in prefixes
                                                  if value.startswith(p))))  # fmt: skip
    for node in ast.walk(tree):
        # The per-step key, ``<prefix><step:06d>``, has one spelling: ``step_key``.
        if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            if "06d" in ast.unparse(node.format_spec):
                hits.append((node.lineno, ast.unparse(node), "step_key(prefix, step)"))
    return [f"{filename}:{line}: {value!r} ({name})" for line, value, name in sorted(hits)]


def test_stored_names_keep_their_values() -> None:
    defined = {
        name: value
        for name, value in vars(_schema).items()
        if name.isupper() and isinstance(value, (str, tuple))
    }
    assert defined == STORED_VALUES
    tables = {t.name: [c.name for c in t.columns] for t in _schema.METADATA.tables.values()}
    assert tables == STORED_TABLES


def test_no_stored_name_is_spelled_outside_the_schema() -> None:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != PACKAGE / "_storage" / "schema.py":
            relative = path.relative_to(PACKAGE.parent).as_posix()
            hits += spelled_stored_names(path.read_text(), relative)
    assert hits == [], "import these from optuna_mto._storage.schema:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "source",
    [
        'trial.set_user_attr(f"bad_checkpoint:{ref}", err)',
        'retry_transient(storage.set_trial_system_attr, trial_id, "mto:best", best)',
        'key = f"transfer:{step:06d}"',
        'key = "relations:000003"',
        'attrs = study.system_attrs["mto:board:3"]',
        'value = trial.user_attrs.get("current_hparams")',
        'table = sa.Table("mto_board", metadata)',
        'retry_transient(trial.set_user_attr, "split", split)',
        'FrozenTrial(user_attrs={"worker": name}, system_attrs={})',
        'step = int(state["step"])',
        'if "rng" in state:\n    pass',
        'hparams = donor_state.get("hparams")',
        'state = {"model": weights}',
        'state.update({"lineage": lineage})',
        "state.update(step=step, fitness=fitness)",
        'STRATEGY_KEY = "strategy"',
        '_RELATIONS = "relations"',
        'values = dict(stored.get("values", {}))',
        'key = f"{HPARAMS_ATTR_PREFIX}{step:06d}"',
        'params = {k: v for k, v in failed.params.items()}\nfailed.params["split"]',
    ],
)
def test_the_check_finds_a_stored_name_spelled(source: str) -> None:
    assert spelled_stored_names(source) != []


@pytest.mark.parametrize(
    "source",
    [
        'def f():\n    """The ``mto:best`` system attribute and the ``mto_board`` table."""',
        'figure.update_xaxes(title_text="step")',
        'torch.device("cuda", 0)',
        'subparsers.add_parser("worker")',
        'fields = {"step": context.step, "fitness": fitness}',
        'thread_name = f"mto-worker-{i}"',
        'record = {"step": step, "values": values}',
    ],
)
def test_the_check_leaves_ordinary_words(source: str) -> None:
    assert spelled_stored_names(source) == []
