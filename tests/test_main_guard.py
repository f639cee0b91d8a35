"""A script without ``if __name__ == "__main__":``: one clear line, no traceback.

Real scripts in real subprocesses: worker processes re-import the script that starts
them, so an unguarded ``optimize`` call would run again in each of them. (The guarded
script runs in processes in ``test_readme.py``: the README's Quickstart.)
"""

from __future__ import annotations

import py_compile
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optuna_mto._study.main_guard import (
    _guarded_ranges,
    guard_message,
    in_worker_bootstrap,
    interactive_main,
    unguarded_call_site,
)

_SCRIPT = textwrap.dedent(
    """
    import torch
    from torch import nn

    import optuna_mto

    generator = torch.Generator().manual_seed(0)
    X = torch.randn(64, 4, generator=generator)
    y = (X[:, 0] > 0).long()


    def make_model():
        return nn.Linear(4, 2)


    trainer = optuna_mto.SupervisedTrainer(make_model, (X, y), epochs=1)
    {body}
    """
)
_CALL = (
    "study = optuna_mto.create_study(study_name='g', storage='sqlite:///g.db', n_splits=2,\n"
    "                                load_if_exists=True)\n"
    "study.optimize(trainer, n_jobs=2)\n"
    "print('finished', len(study.summary().ranking))\n"
)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def _check_one_line(proc: subprocess.CompletedProcess[str], where: tuple[str, int] | None) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "bootstrapping phase" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("optuna-mto:")]
    assert lines == [guard_message(where)], proc.stderr
    assert "finished" not in proc.stdout


def test_an_unguarded_script_stops_before_any_worker_with_one_line(tmp_path):
    (tmp_path / "quick.py").write_text(_SCRIPT.format(body=_CALL))
    proc = _run(tmp_path, "quick.py")
    _check_one_line(proc, ("quick.py", 19))


@pytest.mark.slow
def test_a_worker_that_reruns_an_unguarded_script_exits_and_the_parent_says_why(tmp_path):
    # Without readable source (only a .pyc) the parent cannot see the missing guard: the
    # workers find out while importing the script, and exit before running anything.
    (tmp_path / "quick.py").write_text(_SCRIPT.format(body=_CALL))
    py_compile.compile(str(tmp_path / "quick.py"), cfile=str(tmp_path / "quick.pyc"))
    (tmp_path / "quick.py").unlink()
    proc = _run(tmp_path, "quick.pyc")
    _check_one_line(proc, None)


@pytest.mark.parametrize(
    ("source", "ranges"),
    [
        ("x = 1\nif __name__ == '__main__':\n    a()\n    b()\n", ((3, 4),)),
        ('if "__main__" == __name__:\n    a()\n', ((2, 2),)),
        ("if __name__ != '__main__':\n    a()\nif x == '__main__':\n    b()\n", ()),
    ],
)
def test_guarded_ranges_find_only_main_guards(source, ranges):
    assert _guarded_ranges(source) == ranges


def test_under_pytest_nothing_is_unguarded_or_interactive():
    # pytest's own __main__ calls into the tests from inside its guard.
    assert unguarded_call_site() is None
    assert not in_worker_bootstrap()
    assert interactive_main() is False


def test_a_main_without_a_file_counts_as_interactive(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    assert interactive_main() is True
    assert unguarded_call_site() is None
