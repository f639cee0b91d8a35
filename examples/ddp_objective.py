"""DDP inside each split, with the objective API: a torchrun group trains one split at once.

    torchrun --nproc-per-node 2 examples/ddp_objective.py     # 2 ranks (CPU: gloo)
    torchrun --nproc-per-node 8 examples/ddp_objective.py     # one rank per GPU (nccl)
    python examples/ddp_objective.py                          # one process: no DDP

Every rank runs this script and calls ``optimize``, which joins the process group
(here started by :func:`open_study`; ``optimize`` starts one itself, nccl on GPUs and
gloo on the CPU, when none is). Rank 0 claims each split and owns its Optuna trial;
the other ranks get the same split, rows, ``suggest_*`` values, ``evaluate`` scores and
report results by broadcast, and rank 0's weights whenever a report or a resume changed
them. The pattern: build the model on ``trial.device``, wrap it in DDP, shard
``trial.train_indices`` with a ``DistributedSampler`` (``set_epoch`` each epoch), and
call the trial's methods on every rank, passing the unwrapped model. Branch only on
what the trial returns: it is the same on every rank.

``SupervisedTrainer`` needs none of this: under torchrun it shards and averages
gradients by itself (``torchrun ... -m optuna_mto worker --objective mod:trainer``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

import optuna_mto

data = load_digits()
X = torch.tensor(data.data / 16.0, dtype=torch.float32)
Y = torch.tensor(data.target, dtype=torch.long)
DATASET = TensorDataset(X, Y)
EPOCHS = 4


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def evaluate(model: nn.Module, indices: np.ndarray) -> float:
    """Accuracy on rows ``indices``. Rank 0 alone calls it, so never through DDP."""
    model = getattr(model, "module", model)  # a DDP wrapper's forward may talk to the ranks
    device = next(model.parameters()).device
    rows = torch.as_tensor(indices)
    with torch.no_grad():
        return float((model(X[rows].to(device)).argmax(1).cpu() == Y[rows]).float().mean())


def objective(trial: optuna_mto.SplitTrial) -> None:
    model = make_model().to(trial.device)
    distributed = dist.is_initialized()  # optimize() joined the torchrun group
    trained = model
    if distributed:
        cuda = trial.device.type == "cuda"
        trained = DistributedDataParallel(model, device_ids=[trial.device] if cuda else None)
    lr = trial.suggest_float("lr", 3e-3, 3e-2, log=True)  # the same value on every rank
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rows = Subset(DATASET, trial.train_indices.tolist())
    sampler = DistributedSampler(rows, seed=trial.split) if distributed else None
    loader = DataLoader(rows, batch_size=64, sampler=sampler, shuffle=sampler is None)
    # restore: rank 0's fresh or resumed state reaches every rank.
    for epoch in range(trial.restore(model, optimizer), EPOCHS):
        if sampler is not None:
            sampler.set_epoch(epoch)  # a new, disjoint shard per rank each epoch
        trained.train()
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(trained(inputs.to(trial.device)),
                                               labels.to(trial.device))  # fmt: skip
            loss.backward()  # DDP averages the gradients over the ranks
            optimizer.step()
        # evaluate: rank 0's score on every rank. report: an accepted donor's weights
        # (or new hyperparameters) reach every rank before it returns.
        trial.report(trial.evaluate(model), epoch, model=model, optimizer=optimizer)


def create() -> optuna_mto.MTOStudy:
    return optuna_mto.create_study(
        study_name="ddp-digits", n_splits=2, load_if_exists=True,
        transfer=optuna_mto.transfer.GreedyTransfer(),
    )  # fmt: skip


def open_study() -> optuna_mto.MTOStudy:
    """Rank 0 creates the study, then the other ranks load it.

    (Every rank could call ``create()`` instead: ``load_if_exists=True`` and processes
    opening one fresh database at once are fine.) The process group is started here to
    show a script that owns it; ``optimize`` then uses it.
    """
    if "RANK" not in os.environ:  # python examples/ddp_objective.py: one process
        return create()
    if torch.cuda.is_available():  # one GPU per rank; gloo for CPU tensors
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group("cuda:nccl,cpu:gloo" if torch.cuda.is_available() else "gloo")
    study = create() if dist.get_rank() == 0 else None
    dist.barrier()
    return study or optuna_mto.load_study(study_name="ddp-digits")


if __name__ == "__main__":
    study = open_study()
    study.optimize(objective, dataset=DATASET, targets=Y.numpy(), evaluate=evaluate)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(study.summary())
