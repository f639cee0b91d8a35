"""Imported once by the fork server, so that every worker process starts with it loaded.

Worker processes are forked from a server process (``forkserver``) that imported
this module; what it imports is already in memory in every worker, at no cost per
worker. Besides torch and optuna-mto itself that is:

* ``torch._dynamo``: the first ``torch.optim.Optimizer`` a process builds imports it
  (with sympy), 2-5 s on a small machine, once per process;
* Optuna's SQL models and Alembic, which opening an ``RDBStorage`` imports;
* the user's script (``__main__``), which every worker would otherwise import again
  to find the objective (its imports and module-level data loading: seconds). The
  parent passes what ``multiprocessing`` would send each worker in the environment
  variable ``MAIN_ENV``; if the import fails, each worker imports the script itself,
  as it would without this module.

None of the library imports starts a thread or touches CUDA, so forking after them
is safe; the parent does not pass a script that has initialised CUDA.
"""

from __future__ import annotations

import json
import multiprocessing.process
import multiprocessing.spawn
import os

import alembic.command  # noqa: F401
import alembic.migration  # noqa: F401
import alembic.script  # noqa: F401
import torch._dynamo  # noqa: F401

import optuna_mto  # noqa: F401
from optuna_mto._storage.optuna_internals import import_rdb_models
from optuna_mto._study import main_guard as _main_guard
from optuna_mto._study.main_guard import MAIN_ENV

__all__: list[str] = []


def _import_main() -> None:
    raw = os.environ.pop(MAIN_ENV, None)
    if not raw:
        return
    current = multiprocessing.process.current_process()
    current._inheriting = True  # type: ignore[attr-defined] - as multiprocessing's own workers
    _main_guard.preloading_in_fork_server = True
    try:
        multiprocessing.spawn.prepare(json.loads(raw))
    except BaseException:  # noqa: BLE001 - every worker then imports the script itself.
        pass
    finally:
        _main_guard.preloading_in_fork_server = False
        del current._inheriting  # type: ignore[attr-defined]


import_rdb_models()
_import_main()
