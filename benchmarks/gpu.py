"""GPU benchmark of optuna-mto: K splits sharing one GPU, transfer plumbing, memory.

One prepared script for one run on a GPU machine (no downloads, no network):

    python benchmarks/gpu.py --out gpu.json                  # one GPU, under 8 minutes
    python benchmarks/gpu.py --cpu --tiny --out /tmp/b.json  # dry run on the CPU, < 60 s

Sections (each one's failure is caught, reported and the run goes on):

a. Images per second of ONE split training ResNet-18 (CIFAR variant, 32x32) on
   random tensors resident on the GPU: SGD, mixed precision (autocast + GradScaler),
   channels-last. No reports: the pure training loop.
c. Transfer plumbing per report for ResNet-18, via the file store and via the database
   store: end-to-end ``trial.report`` with and without an accepted transfer (two
   splits in lock-step, evaluation stubbed out), and its parts: capture, checkpoint
   save, publish, donor load onto the device, apply (timed with
   ``torch.cuda.synchronize`` and ``time.perf_counter``).
b. K=4 splits sharing the GPU through the library (thread executor, all on cuda:0,
   greedy transfer every epoch, file store): aggregate images per second as a ratio to
   (a) x K and to (a).
b2. As (b), each split on its own CUDA stream (only if time is left).
d. Peak GPU memory (``torch.cuda.max_memory_allocated``): one split alone, and the K
   splits together divided by K.

A watchdog enforces the overall budget (``--budget``): sections that would not fit
are skipped, and if the process overruns, the results so far are written and it exits.
Results are written to ``--out`` (JSON) after every section.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

# Studies, checkpoints and artifacts of this run live in a temporary folder.
_TMP = Path(tempfile.mkdtemp(prefix="mto-gpu-bench-"))
os.environ["OPTUNA_MTO_HOME"] = str(_TMP / "home")

import optuna  # noqa: E402

import optuna_mto  # noqa: E402
from optuna_mto._step.board import SplitRecord  # noqa: E402
from optuna_mto.transfer import GreedyTransfer  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
VALIDATION_FRACTION = optuna_mto.StudyConfig().validation_fraction  # the studies' default


# ---------------------------------------------------------------------- configuration
@dataclasses.dataclass
class Config:
    """Sizes of one benchmark run."""

    device: str
    tiny: bool
    splits: int
    batch_size: int
    rows: int  # rows of the synthetic dataset (resident on the device)
    warmup_steps: int
    single_seconds: float  # (a) timed for about this long
    single_max_steps: int
    shared_epochs: int
    shared_seconds: float  # (b) sized to last about this long
    shared_min_steps: int
    plumbing_reps: int
    amp_dtype: str
    budget_s: float

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def make_config(args: argparse.Namespace) -> Config:
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda:0"
    if args.tiny:
        return Config(
            device=device, tiny=True, splits=args.splits, batch_size=args.batch_size or 8,
            rows=128, warmup_steps=1, single_seconds=2.0, single_max_steps=4,
            shared_epochs=2, shared_seconds=4.0, shared_min_steps=2, plumbing_reps=2,
            amp_dtype=args.amp_dtype, budget_s=args.budget or 45.0,
        )  # fmt: skip
    return Config(
        device=device, tiny=False, splits=args.splits, batch_size=args.batch_size or 256,
        rows=16384, warmup_steps=15, single_seconds=20.0, single_max_steps=5000,
        shared_epochs=3, shared_seconds=75.0, shared_min_steps=5, plumbing_reps=5,
        amp_dtype=args.amp_dtype, budget_s=args.budget or 400.0,
    )  # fmt: skip


# ---------------------------------------------------------------------- helpers
_START = time.monotonic()


def elapsed() -> float:
    """Seconds since the script started."""
    return time.monotonic() - _START


def log(message: str) -> None:
    print(f"[{elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def resnet18_cifar() -> nn.Module:
    """torchvision ResNet-18 for 32x32 inputs (3x3 stride-1 conv1, no max-pooling)."""
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def tiny_cnn() -> nn.Module:
    """A small CNN with BatchNorm, for dry runs on the CPU."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def train_model(cfg: Config) -> nn.Module:
    """The model of sections a and b."""
    return tiny_cnn() if cfg.tiny else resnet18_cifar()


def memory_format(cfg: Config) -> torch.memory_format:
    return torch.channels_last if cfg.cuda else torch.contiguous_format


def amp_dtype(cfg: Config) -> torch.dtype:
    return torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16


def amp(cfg: Config) -> contextlib.AbstractContextManager:
    device_type = "cuda" if cfg.cuda else "cpu"
    return torch.autocast(device_type, dtype=amp_dtype(cfg), enabled=cfg.cuda)


def grad_scaler(cfg: Config) -> torch.amp.GradScaler:
    enabled = cfg.cuda and amp_dtype(cfg) == torch.float16
    return torch.amp.GradScaler("cuda" if cfg.cuda else "cpu", enabled=enabled)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


class SyntheticData:
    """CIFAR-sized random images and labels, resident on the device."""

    def __init__(self, cfg: Config, seed: int = 0, rows: int | None = None) -> None:
        rows = cfg.rows if rows is None else rows
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(rows, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (rows,), generator=gen)
        self.x = x.to(cfg.device).contiguous(memory_format=memory_format(cfg))
        self.y = y.to(cfg.device)

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size() + self.y.numel() * self.y.element_size()


def train_step(
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    data: SyntheticData,
    rows: torch.Tensor,
) -> None:
    """One SGD step on a random batch of ``rows`` (a tensor of row indices on the device)."""
    pick = torch.randint(0, len(rows), (cfg.batch_size,), device=rows.device)
    idx = rows[pick]
    images = data.x[idx].contiguous(memory_format=memory_format(cfg))
    with amp(cfg):
        loss = nn.functional.cross_entropy(model(images), data.y[idx])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def accuracy(cfg: Config, model: nn.Module, data: SyntheticData, rows: np.ndarray) -> float:
    idx = torch.as_tensor(rows, device=data.x.device)
    correct = 0
    with torch.no_grad(), amp(cfg):
        for chunk in idx.split(1024):
            images = data.x[chunk].contiguous(memory_format=memory_format(cfg))
            correct += int((model(images).argmax(1) == data.y[chunk]).sum())
    return correct / max(len(idx), 1)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median_ms": 1000 * statistics.median(values),
        "mean_ms": 1000 * statistics.fmean(values),
        "min_ms": 1000 * min(values),
        "max_ms": 1000 * max(values),
    }


def reset_peak(cfg: Config) -> None:
    gc.collect()
    if cfg.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(torch.device(cfg.device))


def peak_bytes(cfg: Config) -> int | None:
    if not cfg.cuda:
        return None
    return int(torch.cuda.max_memory_allocated(torch.device(cfg.device)))


# ---------------------------------------------------------------------- (a) one split
def bench_single(cfg: Config, results: dict[str, Any], deadline: float) -> dict[str, Any]:
    reset_peak(cfg)
    data = SyntheticData(cfg)
    torch.manual_seed(0)
    model = train_model(cfg).to(cfg.device, memory_format=memory_format(cfg))
    optimizer = make_optimizer(model)
    scaler = grad_scaler(cfg)
    rows = torch.arange(cfg.rows, device=cfg.device)
    model.train()
    for _ in range(cfg.warmup_steps):
        train_step(cfg, model, optimizer, scaler, data, rows)
    sync(cfg.device)
    limit = min(cfg.single_seconds, max(1.0, deadline - time.monotonic()))
    steps, start = 0, time.perf_counter()
    while steps < cfg.single_max_steps:
        train_step(cfg, model, optimizer, scaler, data, rows)
        steps += 1
        if steps % 10 == 0 or cfg.tiny:
            if time.perf_counter() - start >= limit:
                break
    sync(cfg.device)
    seconds = time.perf_counter() - start
    peak = peak_bytes(cfg)
    # Evaluation speed, to size section b (every report scores the validation rows).
    eval_rows = np.arange(min(cfg.rows, 256 if cfg.tiny else 4096))
    model.eval()
    eval_start = time.perf_counter()
    accuracy(cfg, model, data, eval_rows)
    sync(cfg.device)
    eval_s = time.perf_counter() - eval_start
    out = {
        "model": type(model).__name__ if cfg.tiny else "resnet18-cifar",
        "params": sum(p.numel() for p in model.parameters()),
        "batch_size": cfg.batch_size,
        "steps": steps,
        "seconds": seconds,
        "images_per_s": steps * cfg.batch_size / seconds,
        "step_ms": 1000 * seconds / steps,
        "eval_images_per_s": len(eval_rows) / max(eval_s, 1e-9),
        "peak_memory_bytes": peak,
        "data_bytes": data.nbytes,
        "peak_memory_without_data_bytes": None if peak is None else peak - data.nbytes,
    }
    del model, optimizer, data
    return out


# ---------------------------------------------------------------------- (b) K splits
class SharedObjective:
    """Trains one split on the shared synthetic data; records timings per split."""

    def __init__(
        self, cfg: Config, data: SyntheticData, steps: int, deadline: float, streams: bool
    ) -> None:
        self.cfg, self.data, self.steps = cfg, data, steps
        self.deadline, self.streams = deadline, streams
        self.lock = threading.Lock()
        self.splits: dict[int, dict[str, Any]] = {}

    def evaluate(self, model: nn.Module, indices: np.ndarray) -> float:
        return accuracy(self.cfg, model, self.data, indices)

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        cfg = self.cfg
        stream = torch.cuda.Stream(device=trial.device) if self.streams and cfg.cuda else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            self._train(trial)

    def _train(self, trial: optuna_mto.SplitTrial) -> None:
        cfg, device = self.cfg, str(trial.device)
        torch.manual_seed(trial.split)
        model = train_model(cfg).to(device, memory_format=memory_format(cfg))
        optimizer = make_optimizer(model)
        scaler = grad_scaler(cfg)
        rows = torch.as_tensor(trial.train_indices, device=device)
        info: dict[str, Any] = {"images": 0, "train_s": 0.0, "report_s": [], "accepted": 0}
        sync(device)
        info["start"] = time.perf_counter()
        for epoch in range(cfg.shared_epochs):
            model.train()
            t0 = time.perf_counter()
            for _ in range(self.steps):
                train_step(cfg, model, optimizer, scaler, self.data, rows)
            sync(device)
            t1 = time.perf_counter()
            info["train_s"] += t1 - t0
            info["images"] += self.steps * cfg.batch_size
            result = trial.report(trial.evaluate(model), epoch, model=model, optimizer=optimizer)
            sync(device)
            info["report_s"].append(time.perf_counter() - t1)
            if result.accepted:
                info["accepted"] += 1
                scaler = grad_scaler(cfg)
            if time.monotonic() > self.deadline:
                info["stopped_early"] = True
                break
        info["end"] = time.perf_counter()
        with self.lock:
            self.splits[trial.split] = info


def bench_shared(
    cfg: Config, results: dict[str, Any], deadline: float, streams: bool = False
) -> dict[str, Any]:
    single = results["sections"].get("a_single", {})
    rate, eval_rate = single.get("images_per_s"), single.get("eval_images_per_s")
    k, epochs, batch = cfg.splits, cfg.shared_epochs, cfg.batch_size
    seconds = min(cfg.shared_seconds, 0.5 * max(0.0, deadline - time.monotonic()))
    # Each split scores its validation rows at every report and once more per transfer
    # candidate: keep that under 40% of the time (fewer rows where evaluation is slow).
    evals = k * epochs * 2 * VALIDATION_FRACTION  # scorings per row of the dataset
    rows = cfg.rows
    if eval_rate:
        rows = max(min(256, cfg.rows), min(cfg.rows, int(0.4 * seconds * eval_rate / evals)))
    eval_s = evals * rows / eval_rate if eval_rate else 0.0
    if rate:  # size the training to fill the rest if the K splits shared perfectly
        steps = int(max(0.0, seconds - eval_s) * rate / (k * epochs * batch))
    else:
        steps = cfg.shared_min_steps
    steps = max(cfg.shared_min_steps, min(steps, 400))
    reset_peak(cfg)
    data = SyntheticData(cfg, rows=rows)
    objective = SharedObjective(cfg, data, steps, deadline, streams)
    study = optuna_mto.create_study(
        study_name=f"bench-shared-{uuid.uuid4().hex[:6]}",
        storage=f"sqlite:///{_TMP / 'shared.db'}",
        n_splits=k,
        seed=0,
        transfer=GreedyTransfer(interval=1, warmup=1),
        artifact_store="file",
        heartbeat_interval=None,
    )
    sync(cfg.device)
    start = time.perf_counter()
    study.optimize(objective, dataset=rows, evaluate=objective.evaluate, n_jobs=k,
                   executor="thread", devices=[cfg.device])  # fmt: skip
    sync(cfg.device)
    wall = time.perf_counter() - start
    peak = peak_bytes(cfg)
    splits = objective.splits
    images = sum(s["images"] for s in splits.values())
    window = max(s["end"] for s in splits.values()) - min(s["start"] for s in splits.values())
    reports = [r for s in splits.values() for r in s["report_s"]]
    agg_wall = images / wall
    agg_window = images / window
    events = study.transfers()
    out = {
        "splits": k,
        "executor": "thread",
        "devices": [cfg.device] * k,
        "cuda_streams": streams,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch,
        "rows": rows,
        "expected_eval_s": eval_s,
        "images": images,
        "optimize_wall_s": wall,
        "train_window_s": window,
        "images_per_s_optimize_wall": agg_wall,
        "images_per_s_train_window": agg_window,
        "ratio_to_single_x_k": agg_window / (rate * k) if rate else None,
        "ratio_to_single": agg_window / rate if rate else None,
        "ratio_to_single_x_k_wall": agg_wall / (rate * k) if rate else None,
        "report": percentiles(reports),
        "report_share_of_split_time": sum(reports)
        / max(sum(s["end"] - s["start"] for s in splits.values()), 1e-9),
        "transfers_tried": sum(1 for e in events if not e.reason),
        "transfers_accepted": sum(1 for e in events if e.accepted),
        "peak_memory_bytes_all_splits": peak,
        "peak_memory_bytes_per_split": None if peak is None else peak / k,
        "data_bytes_shared": data.nbytes,
        "stopped_early": any(s.get("stopped_early") for s in splits.values()),
    }
    del objective, data
    return out


# ---------------------------------------------------------------------- (c) plumbing
def _plumbing_model(cfg: Config) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(0)
    model = resnet18_cifar().to(cfg.device, memory_format=memory_format(cfg))
    optimizer = make_optimizer(model)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=1000)
    x = torch.randn(2, 3, 32, 32, device=cfg.device)
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1], device=cfg.device)).backward()
    optimizer.step()  # momentum buffers exist, as in a checkpoint mid-training
    scheduler.step()
    return model, optimizer, scheduler


class LockstepObjective:
    """Split 0 reports 1.0 each step; split 1 then reports 0.0 and takes split 0's weights.

    Evaluation is stubbed out (every candidate scores 1.0), so the timed reports are
    plumbing only: split 0's are reports without a transfer, split 1's with an
    accepted one.
    """

    def __init__(self, cfg: Config, reps: int, deadline: float) -> None:
        self.cfg, self.reps, self.deadline = cfg, reps, deadline
        self.barrier = threading.Barrier(2, timeout=60)
        self.stop = False
        self.times: dict[int, list[float]] = {0: [], 1: []}
        self.accepted = 0

    @staticmethod
    def evaluate(model: nn.Module, indices: np.ndarray) -> float:
        return 1.0

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        model, optimizer, scheduler = _plumbing_model(self.cfg)
        device = str(trial.device)
        for step in range(self.reps):
            if trial.split == 0 and step > 0 and time.monotonic() > self.deadline:
                self.stop = True
            self.barrier.wait()  # A: split 1 finished the previous step
            if self.stop:
                return
            if trial.split == 1:
                self.barrier.wait()  # B: split 0 published this step's checkpoint
            sync(device)
            start = time.perf_counter()
            result = trial.report(1.0 if trial.split == 0 else 0.0, step, model=model,
                                  optimizer=optimizer, scheduler=scheduler)  # fmt: skip
            sync(device)
            self.times[trial.split].append(time.perf_counter() - start)
            if trial.split == 1:
                self.accepted += int(result.accepted)
            else:
                self.barrier.wait()  # B


def _timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - start, value


def _plumbing_study(kind: str, what: str) -> optuna_mto.MTOStudy:
    return optuna_mto.create_study(
        study_name=f"bench-{what}-{kind}-{uuid.uuid4().hex[:6]}",
        storage=f"sqlite:///{_TMP / f'plumbing-{kind}.db'}",
        n_splits=2,
        seed=0,
        transfer=GreedyTransfer(interval=1, warmup=0),
        artifact_store=kind,
        heartbeat_interval=None,
    )


def _time_parts(cfg: Config, kind: str, deadline: float) -> tuple[dict[str, list[float]], int]:
    """Time capture, save, publish, load and apply one by one, as one report does them."""
    device = cfg.device
    model, optimizer, scheduler = _plumbing_model(cfg)
    study = _plumbing_study(kind, "parts")
    store = study.checkpoint_store
    board = study._board
    parts: dict[str, list[float]] = {k: [] for k in ("capture", "save", "publish", "load", "apply")}
    nbytes = 0

    def capture() -> dict[str, Any]:
        return {
            "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "scheduler": copy.deepcopy(scheduler.state_dict()),
            "fitness": 0.5,
            "rng": {"torch": torch.get_rng_state()},
        }

    def apply(state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    for rep in range(cfg.plumbing_reps):
        if rep > 0 and time.monotonic() > deadline:
            break
        t, state = _timed(device, capture)
        parts["capture"].append(t)
        t, ref = _timed(device, lambda s=state, n=f"bench-s{rep}": store.save(s, name=n))
        parts["save"].append(t)
        nbytes = ref.nbytes
        record = SplitRecord(0, 0, 0, rep, 0.5, ref, None, 0.5, rep, ref)
        t, _ = _timed(device, lambda r=record: board.publish(r))
        parts["publish"].append(t)
        t, loaded = _timed(device, lambda r=ref: store.load(r, map_location=device))
        parts["load"].append(t)
        t, _ = _timed(device, lambda s=loaded: apply(s))
        parts["apply"].append(t)
        store.remove(ref.artifact_id)
    return parts, nbytes


def bench_plumbing_store(cfg: Config, kind: str, deadline: float) -> dict[str, Any]:
    """Parts of a report one by one, then real reports of two splits in lock-step."""
    parts, nbytes = _time_parts(cfg, kind, deadline)
    gc.collect()
    objective = LockstepObjective(cfg, cfg.plumbing_reps, deadline)
    study = _plumbing_study(kind, "reports")
    study.optimize(objective, dataset=64, evaluate=objective.evaluate, n_jobs=2,
                   executor="thread", devices=[cfg.device])  # fmt: skip
    medians = {name: 1000 * statistics.median(v) for name, v in parts.items() if v}
    return {
        "store": kind,
        "checkpoint_bytes": nbytes,
        "parts": {name: percentiles(v) for name, v in parts.items()},
        "parts_sum_median_ms": sum(medians.values()),
        "report_without_transfer": percentiles(objective.times[0]),
        "report_with_accepted_transfer": percentiles(objective.times[1]),
        "accepted": objective.accepted,
    }


def bench_plumbing(cfg: Config, results: dict[str, Any], deadline: float) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "resnet18-cifar", "device": cfg.device}
    for kind in ("file", "database"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            out[kind] = {"skipped": "section time used up"}
            continue
        # Give each store half of what is left, the first one no more than that.
        store_deadline = time.monotonic() + (remaining / 2 if kind == "file" else remaining)
        try:
            out[kind] = bench_plumbing_store(cfg, kind, store_deadline)
        except Exception as err:  # noqa: BLE001 - report it, go on with the other store.
            out[kind] = {"error": f"{type(err).__name__}: {err}",
                         "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
        gc.collect()
    return out


# ---------------------------------------------------------------------- driver
def environment(cfg: Config) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "optuna": optuna.__version__,
        "optuna_mto": optuna_mto.__version__,
        "cpu_count": os.cpu_count(),
        "device": cfg.device,
    }
    if cfg.cuda:
        index = torch.device(cfg.device).index or 0
        props = torch.cuda.get_device_properties(index)
        env.update(
            device_name=torch.cuda.get_device_name(index),
            gpu_count=torch.cuda.device_count(),
            gpu_memory_bytes=props.total_memory,
            capability=".".join(map(str, torch.cuda.get_device_capability(index))),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env["device_name"] = f"cpu ({platform.processor() or platform.machine()})"
    return env


class Run:
    """Results of the run, written to ``out`` after every section."""

    def __init__(self, cfg: Config, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.lock = threading.Lock()
        self.results: dict[str, Any] = {
            "config": dataclasses.asdict(cfg),
            "environment": environment(cfg),
            "sections": {},
            "errors": {},
            "skipped": {},
        }

    def write(self, status: str) -> None:
        with self.lock:
            self.results["status"] = status
            self.results["elapsed_s"] = elapsed()
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_name(f".{self.out.name}.tmp")
            tmp.write_text(json.dumps(self.results, indent=2, default=str))
            os.replace(tmp, self.out)

    def section(
        self,
        key: str,
        fn: Callable[[Config, dict[str, Any], float], dict[str, Any]],
        needs_s: float,
        share: float,
    ) -> None:
        """Run one section with ``share`` of the time left; skip it if under ``needs_s``."""
        left = self.cfg.budget_s - elapsed()
        if left < needs_s:
            self.results["skipped"][key] = f"{left:.0f} s of the budget left, needs {needs_s:.0f}"
            log(f"{key}: skipped ({self.results['skipped'][key]})")
            return
        deadline = time.monotonic() + share * left
        log(f"{key}: start ({left:.0f} s of the budget left)")
        try:
            self.results["sections"][key] = fn(self.cfg, self.results, deadline)
            log(f"{key}: done")
        except Exception as err:  # noqa: BLE001 - report it, go on with the next section.
            self.results["errors"][key] = {"error": f"{type(err).__name__}: {err}",
                                           "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
            log(f"{key}: FAILED: {type(err).__name__}: {err}")
        finally:
            gc.collect()
            if self.cfg.cuda:
                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
        self.write("running")


def _fmt_rate(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f} img/s"


def _fmt_ratio(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fmt_mb(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def _fmt_ms(stats: dict[str, Any] | None) -> str:
    if not stats or not stats.get("n"):
        return "-"
    return f"{stats['median_ms']:.1f} ms (n={stats['n']})"


def table(results: dict[str, Any]) -> str:
    """The results as a two-column text table."""
    env, sec = results["environment"], results["sections"]
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))

    a = sec.get("a_single", {})
    row("(a) one split alone", _fmt_rate(a.get("images_per_s")))
    for key, label in (("b_shared", "(b)"), ("b2_streams", "(b2)")):
        b = sec.get(key)
        if not b:
            continue
        k = b["splits"]
        streams = ", own CUDA streams" if b["cuda_streams"] else ""
        row(f"{label} K={k} splits sharing {env['device']}{streams}",
            _fmt_rate(b["images_per_s_train_window"]))  # fmt: skip
        row(f"{label}   / ((a) x {k})", _fmt_ratio(b["ratio_to_single_x_k"]))
        row(f"{label}   / (a)", _fmt_ratio(b["ratio_to_single"]))
        row(f"{label}   over optimize() wall time", _fmt_rate(b["images_per_s_optimize_wall"]))
        row(f"{label}   report (eval + transfer + checkpoint)", _fmt_ms(b["report"]))
        row(f"{label}   transfers kept/tried", f"{b['transfers_accepted']}/{b['transfers_tried']}")
    c = sec.get("c_plumbing", {})
    for kind in ("file", "database"):
        part = c.get(kind)
        if not part:
            continue
        name = f"(c) {kind} store:"
        if "error" in part or "skipped" in part:
            row(f"{name} FAILED", part.get("error") or part.get("skipped"))
            continue
        row(f"{name} checkpoint size", _fmt_mb(part["checkpoint_bytes"]))
        for step in ("capture", "save", "publish", "load", "apply"):
            row(f"{name} {step}", _fmt_ms(part["parts"][step]))
        row(f"{name} sum of the parts (medians)", f"{part['parts_sum_median_ms']:.1f} ms")
        row(f"{name} report, no transfer", _fmt_ms(part["report_without_transfer"]))
        row(f"{name} report, accepted transfer", _fmt_ms(part["report_with_accepted_transfer"]))
    row("(d) peak memory, one split alone", _fmt_mb(a.get("peak_memory_bytes")))
    row("(d)   of which resident data", _fmt_mb(a.get("data_bytes")))
    for key in ("b_shared", "b2_streams"):
        b = sec.get(key)
        if b:
            row(f"(d) peak memory per split, {key} (all / K)",
                _fmt_mb(b["peak_memory_bytes_per_split"]))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    cfg = results["config"]
    head = (
        f"optuna-mto GPU benchmark on {env.get('device_name')} (torch {env['torch']}, "
        f"{cfg['amp_dtype'] if cfg['device'] != 'cpu' else 'no'} AMP, batch {cfg['batch_size']}"
        f"{', TINY dry run' if cfg['tiny'] else ''})"
    )
    lines = [head, "-" * len(head)]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    for key, err in results["errors"].items():
        lines.append(f"FAILED {key}: {err['error']}")
    for key, why in results["skipped"].items():
        lines.append(f"skipped {key}: {why}")
    lines.append(f"total {results['elapsed_s']:.0f} s; status {results['status']}")
    return "\n".join(lines)


def _watchdog(run: Run, seconds: float) -> None:
    def fire() -> None:
        log(f"watchdog: {seconds:.0f} s passed; writing partial results and exiting")
        with contextlib.suppress(Exception):
            run.write("aborted: over the time budget")
            print(table(run.results), flush=True)
        sys.stdout.flush()
        shutil.rmtree(_TMP, ignore_errors=True)
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_benchmark.json", help="JSON results file")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (dry run)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and model (dry run)")
    parser.add_argument("--splits", type=int, default=4, help="K for section b")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256; tiny 8")
    parser.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--budget", type=float, default=None, help="seconds (default 400; tiny 45)")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        log("no CUDA device found: running on the CPU (pass --cpu --tiny for a quick dry run)")
    cfg = make_config(args)
    if cfg.cuda:
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    run = Run(cfg, Path(args.out))
    _watchdog(run, cfg.budget_s + min(40.0, 0.2 * cfg.budget_s))
    log(f"device {run.results['environment']['device_name']}; budget {cfg.budget_s:.0f} s; "
        f"scratch {_TMP}")  # fmt: skip
    run.write("running")
    run.section("a_single", bench_single, needs_s=5, share=0.15)
    run.section("c_plumbing", bench_plumbing, needs_s=10, share=0.35)
    run.section("b_shared", lambda c, r, d: bench_shared(c, r, d, streams=False),
                needs_s=20, share=0.6)  # fmt: skip
    if cfg.cuda:
        run.section("b2_streams", lambda c, r, d: bench_shared(c, r, d, streams=True),
                    needs_s=60, share=0.8)  # fmt: skip
    status = "partial (sections failed)" if run.results["errors"] else "ok"
    if run.results["skipped"]:
        status += f", {len(run.results['skipped'])} section(s) skipped for time"
    run.write(status)
    print(table(run.results), flush=True)
    print(f"results written to {args.out}", flush=True)
    shutil.rmtree(_TMP, ignore_errors=True)
    return 1 if run.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
