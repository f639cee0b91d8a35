"""Where ``optimize`` was called from: a notebook, a guarded script, or an unguarded one.

Worker processes are started with ``spawn`` or ``forkserver``: each re-imports the
script that started them (as ``__mp_main__``) to find the objective. A script that
calls ``optimize`` at module level, outside ``if __name__ == "__main__":``, would
run the study again inside every worker; Python then stops each worker with a
"bootstrapping phase" traceback. This module detects that case before any process
starts (and, as a safety net, inside a worker that is still importing the script),
so that the user sees one line that says what to change.
"""

from __future__ import annotations

import ast
import functools
import multiprocessing
import os
import sys
import types
from pathlib import Path

__all__ = [
    "GUARD_EXIT_CODE",
    "MAIN_ENV",
    "UnguardedScriptError",
    "exit_if_worker_bootstrap",
    "guard_message",
    "in_worker_bootstrap",
    "interactive_main",
    "unguarded_call_site",
]

#: Environment variable passing the parent's ``__main__`` to the fork server (JSON of
#: ``multiprocessing.spawn`` preparation data; see ``optuna_mto._workers.preload``).
MAIN_ENV = "OPTUNA_MTO_PRELOAD_MAIN"
#: True while the fork server imports the parent's script (set by ``optuna_mto._workers.preload``).
preloading_in_fork_server = False
#: Exit status of a worker process that found itself re-running an unguarded script.
GUARD_EXIT_CODE = 86


def interactive_main() -> bool:
    """Return True when ``__main__`` is not a file: a notebook, a REPL or ``python -c``.

    Worker processes cannot re-import such a ``__main__``, so objects defined there
    cannot reach them: ``optimize`` runs the splits in threads instead.
    """
    main = sys.modules.get("__main__")
    return main is None or not getattr(main, "__file__", None)


def in_worker_bootstrap() -> bool:
    """Return True while ``multiprocessing`` imports the parent's script in a new process.

    That is in a worker (spawn or forkserver) before it runs its target, and in the
    fork server while it preloads the script (see ``optuna_mto._workers.preload``).
    """
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


class UnguardedScriptError(BaseException):
    """Raised in the fork server when the script it preloads would start a study."""


def exit_if_worker_bootstrap() -> None:
    """In a worker process that is re-running an unguarded script, exit quietly.

    The safety net behind :func:`unguarded_call_site`: the parent sees every worker
    exit with :data:`GUARD_EXIT_CODE` and prints :func:`guard_message` once.
    """
    if not in_worker_bootstrap():
        return
    if preloading_in_fork_server:  # each worker then imports the script and exits here
        raise UnguardedScriptError(guard_message())
    sys.stderr.flush()
    os._exit(GUARD_EXIT_CODE)


def _is_main_test(node: ast.expr) -> bool:
    """True for ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
        return False
    if not isinstance(node.ops[0], ast.Eq):
        return False
    sides = [node.left, node.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


@functools.lru_cache(maxsize=8)
def _guarded_ranges(source: str) -> tuple[tuple[int, int], ...]:
    """Line ranges of the bodies of ``if __name__ == "__main__":`` blocks in ``source``."""
    ranges = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body:
            ranges.append((node.body[0].lineno, node.body[-1].end_lineno or node.lineno))
    return tuple(ranges)


def _main_module_frame() -> types.FrameType | None:
    """The frame running ``__main__``'s module-level code, if it is on the stack."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    frame = sys._getframe(1)
    found = None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
            found = frame
        frame = frame.f_back
    return found


def unguarded_call_site() -> tuple[str, int] | None:
    """Return ``(file, line)`` of an unguarded module-level call in the running script.

    That is: the script's module-level statement on the current call stack, when it
    is not inside an ``if __name__ == "__main__":`` block. None when the call is
    guarded, comes from elsewhere (a function called from a guarded block, a test
    runner, a notebook), or the script's source cannot be read.
    """
    if interactive_main():
        return None
    frame = _main_module_frame()
    if frame is None:
        return None
    path = Path(frame.f_code.co_filename)
    try:
        ranges = _guarded_ranges(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    if any(start <= line <= end for start, end in ranges):
        return None
    return str(path), line


def guard_message(where: tuple[str, int] | None = None) -> str:
    """The one line printed when worker processes would re-run an unguarded script."""
    site = f"{Path(where[0]).name} line {where[1]}" if where else "the script"
    return (
        f"optuna-mto: {site} runs optimize() at module level, but worker processes "
        "re-import the script and would run it again: put the script's main code under "
        "'if __name__ == \"__main__\":' (see the README's Quickstart), or pass "
        'optimize(..., executor="thread").'
    )
