"""Train ResNet-18 on CIFAR-10 as K=4 split trials with weight transfer, one GPU per split.

The 50,000 CIFAR-10 training images are the gross training set, split at random into
K (train, validation) pairs; each split trains its own ResNet-18 (adapted to 32x32
images: 3x3 stride-1 first convolution, no max-pooling) with SGD (momentum 0.9,
weight decay 5e-4), a one-cycle LR schedule, standard augmentation and, on GPUs,
mixed precision and channels-last memory. At every epoch a split may take a better
split's weights, optimizer and LR-schedule state. The 10,000 test images are
scored only once, by the model the study picks.

    python examples/cifar10_resnet.py --data-dir ~/data            # K=4, one GPU each
    python examples/cifar10_resnet.py --data-dir ~/data --transfer none
    python examples/cifar10_resnet.py --smoke                      # offline, CPU, ~1 min
    python examples/cifar10_resnet.py --smoke --devices cuda:0     # offline, GPU set-up check
    python examples/cifar10_resnet.py --data-dir ~/data --arch densenet121

``--arch`` picks another network of the paper's families (ResNet-50, VGG-16-BN,
DenseNet-121, MobileNetV2), each adapted to 32x32 inputs the way CIFAR papers do.

``--data-dir`` is downloaded into when CIFAR-10 is not there yet. ``--smoke`` runs
the same code on 256 fake 32x32 images (torchvision's FakeData) for a few steps on the
CPU with K=2, to check the set-up without data or GPU.

Splits run in one spawned process each (``n_jobs=K``), so everything the workers need
(the objective, its evaluate method, the dataset description) is a picklable
module-level object, and each process loads the images itself, once, on first use.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import threading
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

try:
    import torchvision
    from torchvision import transforms
except ModuleNotFoundError as err:
    if (err.name or "").partition(".")[0] != "torchvision":
        raise
    raise SystemExit(
        "examples/cifar10_resnet.py needs torchvision, which is not installed: "
        'pip install "optuna-mto[vision]"'
    ) from None

import optuna_mto
from optuna_mto.transfer import GreedyTransfer, NoTransfer

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SMOKE_SIZE = 256
SMOKE_TEST_SIZE = 64

_datasets: dict[tuple[Any, str], Dataset] = {}
_datasets_lock = threading.Lock()
_init_lock = threading.Lock()


ARCHS = ("resnet18", "resnet50", "vgg16_bn", "densenet121", "mobilenet_v2")


def make_model(arch: str = "resnet18") -> nn.Module:
    """A torchvision network adapted to 32x32 inputs, as CIFAR papers use them.

    ResNets: 3x3 stride-1 first convolution, no max-pooling. VGG: global average
    pooling and one linear layer after the five poolings (1x1 feature maps at 32x32).
    DenseNet: 3x3 stride-1 first convolution, no pooling after it. MobileNetV2: stride-1
    first convolution.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, but got arch={arch!r}.")
    model = getattr(torchvision.models, arch)(num_classes=10)
    if arch.startswith("resnet"):
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif arch.startswith("vgg"):
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(512, 10)
    elif arch.startswith("densenet"):
        width = model.features.conv0.out_channels
        model.features.conv0 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        model.features.pool0 = nn.Identity()
    else:  # mobilenet_v2
        first = model.features[0][0]
        model.features[0][0] = nn.Conv2d(3, first.out_channels, 3, 1, 1, bias=False)
    return model


def _transform(augment: bool) -> transforms.Compose:
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    tail = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    return transforms.Compose((steps if augment else []) + tail)


class LabelInfo:
    """What ``optimize(dataset=...)`` needs: the number of rows and their labels.

    Cheap to pickle (no images), and its ``targets`` enter the dataset fingerprint,
    so a worker with other data is refused.
    """

    def __init__(self, targets: Any) -> None:
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)


class _Transformed(Dataset):
    """``base`` (PIL images) with the training or the evaluation transform applied."""

    def __init__(self, base: Dataset, augment: bool) -> None:
        self.base = base
        self.transform = _transform(augment)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.transform(image), int(label)


@dataclasses.dataclass(frozen=True)
class Cifar10Source:
    """Where the images come from; builds each dataset lazily, once per process.

    Attributes:
        data_dir: Folder that holds (or receives) ``cifar-10-batches-py``.
        smoke: Use FakeData instead (offline).
    """

    data_dir: str = "data"
    smoke: bool = False

    def dataset(self, part: str) -> Dataset:
        """Return ``"train"`` (augmented), ``"plain"`` (same rows, not augmented) or ``"test"``.

        ``"train"`` and ``"plain"`` share one copy of the images.
        """
        with _datasets_lock:
            if (self, part) not in _datasets:
                base = "test" if part == "test" else "raw"
                if (self, base) not in _datasets:
                    _datasets[self, base] = self._build(base)
                _datasets[self, part] = _Transformed(_datasets[self, base], augment=part == "train")
            return _datasets[self, part]

    def _build(self, part: str, download: bool = False) -> Dataset:
        """Return the untransformed ``"raw"`` training set or ``"test"`` set (PIL images)."""
        if self.smoke:
            size, offset = (SMOKE_TEST_SIZE, SMOKE_SIZE) if part == "test" else (SMOKE_SIZE, 0)
            return torchvision.datasets.FakeData(
                size=size, image_size=(3, 32, 32), num_classes=10, random_offset=offset
            )
        return torchvision.datasets.CIFAR10(self.data_dir, train=part != "test", download=download)

    def prepare(self) -> LabelInfo:
        """Download CIFAR-10 if needed (in the main process only) and return the labels.

        Exits with a message that says what to do when the data can be neither found
        nor downloaded.
        """
        if self.smoke:  # FakeData has no .targets: read the label of every image
            fake = self._build("raw")
            return LabelInfo([fake[i][1] for i in range(len(fake))])
        try:
            train = self._build("raw", download=True)
            self._build("test", download=True)
        except Exception as err:  # noqa: BLE001 - any failure gets the same advice.
            sys.exit(
                f"error: cannot find or download CIFAR-10 in {self.data_dir!r} "
                f"({type(err).__name__}: {err}).\n"
                "Pass --data-dir pointing at an existing copy (the folder that holds "
                "cifar-10-batches-py), or run with --smoke to try the example offline on "
                "fake data."
            )
        return LabelInfo(train.targets)


def accuracy(
    model: nn.Module, dataset: Dataset, rows: Any, batch_size: int = 512, workers: int = 0
) -> float:
    """Top-1 accuracy of ``model`` on ``rows`` of ``dataset`` (mixed precision on GPU)."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    loader = DataLoader(
        Subset(dataset, [int(i) for i in rows]),
        batch_size=batch_size, num_workers=workers, pin_memory=cuda,
    )  # fmt: skip
    was_training = model.training
    model.eval()
    correct = count = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            correct += int((model(images).argmax(1) == labels).sum())
            count += len(labels)
    model.train(was_training)
    return correct / max(count, 1)


def _grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda")


@dataclasses.dataclass(frozen=True)
class Cifar10Objective:
    """Trains one split's ResNet-18; also the study's evaluate function (picklable).

    Attributes:
        source: The images.
        epochs: Epochs per split (one report, and transfer chance, per epoch).
        batch_size: Training batch size.
        lr: Peak learning rate of the one-cycle schedule.
        workers: DataLoader worker processes per split.
        seed: Seeds model initialisation and shuffling (with the split index).
        steps_per_epoch: Cap on the batches of an epoch (None: the whole split).
        arch: The network (one of :data:`ARCHS`).
    """

    source: Cifar10Source
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.2
    workers: int = 4
    seed: int = 0
    steps_per_epoch: int | None = None
    arch: str = "resnet18"

    def evaluate(self, model: nn.Module, indices: np.ndarray) -> float:
        """Accuracy on the un-augmented training images at ``indices`` (validation rows)."""
        return accuracy(model, self.source.dataset("plain"), indices, workers=self.workers)

    def __call__(self, trial: optuna_mto.SplitTrial) -> None:
        """Train split ``trial.split`` on ``trial.device``, reporting every epoch."""
        device = trial.device
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        with _init_lock, torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + trial.split)
            model = make_model(self.arch)
        memory_format = torch.channels_last if cuda else torch.contiguous_format
        model = model.to(device, memory_format=memory_format)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4, nesterov=True
        )
        loader = DataLoader(
            Subset(self.source.dataset("train"), trial.train_indices.tolist()),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.workers,
            pin_memory=cuda,
            persistent_workers=self.workers > 0,
            generator=torch.Generator().manual_seed(self.seed * 1000 + trial.split),
        )
        steps = (
            len(loader) if self.steps_per_epoch is None else min(len(loader), self.steps_per_epoch)
        )
        total_steps = self.epochs * steps
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.lr,
            total_steps=total_steps,
            pct_start=min(0.5, max(0.25, 2 / total_steps)),  # >= 2 warm-up steps
        )
        # The scaler is not part of the checkpoint: after a transfer (new weights and
        # optimizer state) a fresh one finds its scale again within a few steps.
        scaler = _grad_scaler(device)
        for epoch in range(trial.restore(model, optimizer, scheduler), self.epochs):
            model.train()
            for step, (images, labels) in enumerate(loader):
                if step >= steps:
                    break
                images = images.to(device, non_blocking=True, memory_format=memory_format)
                labels = labels.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
                    loss = nn.functional.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                # A donor that was further along hands over its schedule position; stop
                # at the end of the cycle instead of stepping past it (OneCycleLR raises).
                if scheduler.last_epoch < total_steps:
                    scheduler.step()
            result = trial.report(
                trial.evaluate(model), epoch, model=model, optimizer=optimizer, scheduler=scheduler
            )
            if result.accepted:
                scaler = _grad_scaler(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="CIFAR-10 folder (downloaded into)")
    parser.add_argument("--smoke", action="store_true", help="offline FakeData run on the CPU")
    parser.add_argument(
        "--devices", nargs="+", default=None, metavar="DEVICE",
        help="devices, round-robin over the splits (default: one GPU per split if there "
        "are GPUs, else the CPU; smoke: cpu), e.g. --devices cuda:0 cuda:1",
    )  # fmt: skip
    parser.add_argument("--study-name", default=None, help="default: cifar10-<transfer>-s<seed>")
    parser.add_argument("--storage", default=None, help="database URL (default: SQLite file)")
    parser.add_argument("--n-splits", type=int, default=None, help="K (default 4; smoke 2)")
    parser.add_argument("--n-jobs", type=int, default=None, help="splits at once (default K)")
    parser.add_argument("--epochs", type=int, default=None, help="default 30; smoke 2")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256; smoke 16")
    parser.add_argument("--lr", type=float, default=0.2, help="peak one-cycle learning rate")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transfer", choices=["greedy", "none"], default="greedy")
    parser.add_argument("--arch", choices=ARCHS, default="resnet18", help="the network")
    parser.add_argument("--export", default=None, help="default storage/cifar10_<arch>_best.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    smoke = args.smoke
    n_splits = args.n_splits or (2 if smoke else 4)
    source = Cifar10Source(args.data_dir, smoke=smoke)
    info = source.prepare()
    objective = Cifar10Objective(
        source,
        epochs=args.epochs or (2 if smoke else 30),
        batch_size=args.batch_size or (16 if smoke else 256),
        lr=args.lr,
        workers=(0 if smoke else 4) if args.workers is None else args.workers,
        seed=args.seed,
        steps_per_epoch=2 if smoke else None,
        arch=args.arch,
    )
    transfer = GreedyTransfer(interval=1, warmup=1) if args.transfer == "greedy" else NoTransfer()
    prefix = "cifar10-smoke" if smoke else "cifar10"
    arch_tag = "" if args.arch == "resnet18" else f"{args.arch}-"
    study = optuna_mto.create_study(
        study_name=args.study_name or f"{prefix}-{arch_tag}{args.transfer}-s{args.seed}",
        storage=args.storage,
        n_splits=n_splits,
        direction="maximize",
        seed=args.seed,
        transfer=transfer,
        load_if_exists=True,
        # Heartbeats let a long run retry a split whose worker died; a smoke run has no
        # use for them (and a worker done early would poll for the others' state).
        heartbeat_interval=None if smoke else 30,
    )
    # None: one GPU per split when there are GPUs. A smoke run stays on the CPU unless
    # told otherwise (``--smoke --devices cuda:0`` checks a GPU set-up in seconds).
    devices = args.devices or (["cpu"] if smoke else None)
    start = time.perf_counter()
    study.optimize(
        objective,
        dataset=info,
        evaluate=objective.evaluate,
        n_jobs=args.n_jobs or n_splits,
        devices=devices,
    )
    elapsed = time.perf_counter() - start

    summary = study.summary()
    print(summary)
    device = devices[0] if devices else ("cuda" if torch.cuda.is_available() else "cpu")
    model = study.load_best_model(make_model(args.arch).to(device))
    test = source.dataset("test")
    test_acc = accuracy(model, test, range(len(test)), workers=objective.workers)
    events = study.transfers()
    print(f"transfers kept/tried: {sum(e.accepted for e in events)}/"
          f"{sum(not e.reason for e in events)}")  # fmt: skip
    print(
        f"chosen model: split {summary.best_split}, cross-split mean "
        f"{summary.mean[summary.best_split]:.4f}, test accuracy {test_acc:.4f}"
        f"{' (fake data)' if smoke else ''}"
    )
    export = args.export or f"storage/cifar10_{args.arch}_best.pt"
    print(f"exported to {study.export_best_model(export)}; optimize took {elapsed:.1f} s")


if __name__ == "__main__":
    main()
