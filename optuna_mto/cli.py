"""The ``optuna-mto`` command: workers, summaries, exports, transfer logs, dashboard."""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from optuna_mto._errors import MTOError
from optuna_mto._extras import MissingExtraError, require
from optuna_mto._storage.optuna_internals import storage_of

__all__ = ["STORAGE_ENV", "load_attr", "main"]

#: The storage URL when ``--storage`` is not given, as in Optuna's own command line.
STORAGE_ENV = "OPTUNA_STORAGE"


def load_attr(spec: str) -> Any:
    """Resolve ``module:attr`` or ``path/to/file.py:attr`` to the named object.

    Raises:
        ValueError: For a spec without ``:`` or a name that does not exist.
    """
    if ":" not in spec:
        raise ValueError(f"Expected 'module:attribute', but got {spec!r}.")
    target, attr = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.exists():
            raise ValueError(f"No such file {str(path)!r} in {spec!r}.")
        sys.path.insert(0, str(path.parent))
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        module = importlib.import_module(target)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{target!r} has no attribute {part!r} (from {spec!r}).")
        obj = getattr(obj, part)
    return obj


def _storage(args: argparse.Namespace) -> str | None:
    """``--storage``, else ``$OPTUNA_STORAGE`` (as Optuna's CLI), else the embedded default."""
    return args.storage or os.environ.get(STORAGE_ENV) or None


def _open(args: argparse.Namespace):  # noqa: ANN202 - MTOStudy, imported lazily.
    from optuna_mto import load_study

    # Only the worker runs trials: it alone takes the study's sampler and pruner.
    extra = {
        name: _maybe_call(load_attr(spec))
        for name in ("sampler", "pruner")
        if (spec := getattr(args, name, None))
    }
    # load_study never creates a database: read-only commands leave no file behind.
    return load_study(study_name=args.study, storage=_storage(args), **extra)


def _maybe_call(obj: Any) -> Any:
    """Return ``obj``, or ``obj()`` for a class or factory (e.g. ``my_mod:make_sampler``)."""
    import optuna

    if isinstance(obj, (optuna.samplers.BaseSampler, optuna.pruners.BasePruner)):
        return obj
    return obj()


def _cmd_worker(args: argparse.Namespace) -> int:
    objective = load_attr(args.objective)
    dataset = load_attr(args.dataset) if args.dataset else None
    evaluate = load_attr(args.evaluate) if args.evaluate else None
    from optuna_mto._workers.distributed import follow_cli  # torchrun: ranks > 0 follow rank 0

    if (status := follow_cli(objective, args.device, args.n_jobs)) is not None:
        return status  # without opening the study: rank 0 alone runs its trials
    study = _open(args)
    if args.device == "auto":  # the GPU the scheduler's LOCAL_RANK, SLURM_LOCALID... name
        from optuna_mto._workers.device_env import auto_devices

        devices = auto_devices(args.n_jobs)
    else:
        devices = [args.device] if args.device else None
    study.optimize(
        objective,
        dataset=dataset,
        evaluate=evaluate,
        n_jobs=args.n_jobs,
        executor="auto",
        devices=devices,
        timeout=args.timeout,
        show_progress=args.progress,
    )
    summary = study.summary()
    print(f"worker done; {len(summary.ranking)}/{summary.n_splits} splits of "
          f"{study.study_name!r} complete")  # fmt: skip
    if not summary.complete and args.timeout is None:
        print(f"INCOMPLETE: {summary.incomplete_reason}")
        return 1
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    summary = _open(args).summary()
    print(summary)
    return 0 if summary.complete else 1  # an incomplete study is never reported as done


def _cmd_export(args: argparse.Namespace) -> int:
    study = _open(args)
    chosen = args.best or args.split is not None or args.ensemble or args.soup
    if args.soup or (not chosen and study.transfer.default_output == "uniform_soup"):
        from optuna_mto._study.outputs import export_soup

        path, splits = export_soup(study._rt, args.output)
        print(f"exported the uniform soup of splits {splits} to {path}; load it with "
              f"model.load_state_dict(torch.load({str(path)!r}, weights_only=True))")  # fmt: skip
        return 0
    if not (args.best or args.split is not None):  # the default output: the ensemble
        from optuna_mto._study.outputs import export_ensemble

        path, info, left_out = export_ensemble(study._rt, args.output)
        out = ", ".join(f"split {k} ({why})" for k, why in left_out.items())
        print(f"exported the ensemble of {info['n_members']} splits {info['splits']} "
              f"(combine={info['combine']!r}{'; left out: ' + out if out else ''}) to {path}; "
              f"load it with optuna_mto.Ensemble.load({str(path)!r}, make_model)")  # fmt: skip
        return 0
    path = study.export_best_model(args.output, split=args.split)
    split = study.summary().best_split if args.split is None else args.split
    print(f"exported split {split}'s best weights to {path}")
    return 0


def _cmd_transfers(args: argparse.Namespace) -> int:
    events = _open(args).transfers()
    fields = ["step", "receiver", "donor", "donor_trial", "donor_step", "operator",
              "before", "after", "accepted", "reason", "hparams", "judged_on"]  # fmt: skip
    rows = [{**e.to_dict(), "hparams": json.dumps(e.hparams) if e.hparams else ""} for e in events]
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        return 0
    if not rows:
        print("no transfers recorded")
        return 0
    cells = [[_cell(r[f]) for f in fields] for r in rows]
    widths = [max(len(f), *(len(c[i]) for c in cells)) for i, f in enumerate(fields)]
    print("  ".join(f.rjust(w) for f, w in zip(fields, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))
    return 0


def _cell(value: Any) -> str:
    """A transfer event's field as a table cell, numbers formatted as in the summary."""
    from optuna_mto._study.summary import format_number

    if isinstance(value, float):
        return format_number(value)
    return "-" if value is None or value == "" else str(value)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    optuna_dashboard = require("optuna_dashboard", "serving optuna-dashboard")
    study = _open(args)
    from optuna_mto.visualization import refresh_dashboard

    refresh_dashboard(study, force=True)  # logs a warning instead of failing
    storage = storage_of(study.study)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    optuna_dashboard.run_server(
        storage,
        host=args.host,
        port=args.port,
        artifact_store=study.checkpoint_store.artifact_store,
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand per task, each on a named study."""
    parser = argparse.ArgumentParser(
        prog="optuna-mto",
        description="Population training with weight transfer between data splits (Optuna).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _worker_parser(sub)
    _study_parser(sub, "summary", _cmd_summary, help="print the ranked cross-split table")
    _export_parser(sub)
    transfers = _study_parser(sub, "transfers", _cmd_transfers, help="list the transfer events")
    transfers.add_argument("--format", choices=["table", "csv"], default="table")
    dashboard = _study_parser(
        sub, "dashboard", _cmd_dashboard, help="serve optuna-dashboard on the study"
    )
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)
    return parser


def _study_parser(
    sub: argparse._SubParsersAction, name: str, func: Callable[..., int], **kwargs: Any
) -> argparse.ArgumentParser:
    """Add subcommand ``name``, run by ``func``, with the study's ``--storage`` and name."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(func=func)
    p.add_argument(
        "--storage",
        default=None,
        help=f"database URL (default: ${STORAGE_ENV} if set, else the embedded SQLite "
        "file storage/optuna_mto.db under the current directory or $OPTUNA_MTO_HOME)",
    )
    p.add_argument(
        "--study-name",
        "--study",
        dest="study",
        metavar="NAME",
        required=True,
        help="the study's name",
    )
    return p


def _worker_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``worker``: what to run, on which device, for how long."""
    worker = _study_parser(
        sub,
        "worker",
        _cmd_worker,
        help="claim unfinished splits of a study and run them",
        description="Claim the next unfinished split of the study and run it, until none "
        "is left. Start it once per machine or GPU; only the storage URL is shared.",
    )
    worker.add_argument("--objective", required=True,
                        help="module:attr or file.py:attr of the objective (e.g. a "
                        "SupervisedTrainer instance)")  # fmt: skip
    worker.add_argument("--dataset", help="module:attr of the dataset, if the objective has none")
    worker.add_argument("--evaluate", help="module:attr of evaluate(model, indices)")
    worker.add_argument("--device", help="device for this worker: cuda:0, cpu, ... or auto, "
                        "the GPU that LOCAL_RANK (torchrun), SLURM_LOCALID (SLURM) or "
                        "JOB_COMPLETION_INDEX (Kubernetes Indexed Job) names (default: job i "
                        "of --n-jobs on cuda:{i %% G}, else cpu)")  # fmt: skip
    worker.add_argument("--n-jobs", type=int, default=1, help="splits at once in this worker")
    worker.add_argument("--timeout", type=float, default=None,
                        help="claim no new split after this many seconds")  # fmt: skip
    worker.add_argument("--progress", action="store_true", help="show a live view per split")
    worker.add_argument("--sampler", help="module:attr of the study's Optuna sampler (an "
                        "instance or a factory); default: the stored sampler class, default "
                        "arguments")  # fmt: skip
    worker.add_argument("--pruner", help="module:attr of the study's Optuna pruner (an "
                        "instance or a factory); default: as --sampler")  # fmt: skip


def _export_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``export``: the file to write, and which model (one of four, or the default)."""
    export = _study_parser(
        sub,
        "export",
        _cmd_export,
        help="write the study's default output (the ensemble of its K models; the "
        "uniform soup of their weights for AveragingTransfer studies)",
    )
    export.add_argument("--output", "-o", required=True, help="file to write (torch.save)")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true", help="the best split's model alone")
    which.add_argument("--split", type=int, default=None, help="one split's model")
    which.add_argument(
        "--ensemble", action="store_true", help="all K splits' models as one ensemble"
    )
    which.add_argument(
        "--soup", action="store_true", help="the K splits' weights averaged into one model "
        "(needs splits that share a start, e.g. AveragingTransfer)",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away (`optuna-mto transfers | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (ValueError, KeyError, MTOError, MissingExtraError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"optuna-mto {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # optimize logged "interrupted: N split(s) will resume"


if __name__ == "__main__":
    sys.exit(main())
