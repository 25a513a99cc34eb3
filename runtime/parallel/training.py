"""Data-parallel training (DistributedDataParallel) for the one trainer (models/trainer.py).

Every rank holds the whole network and draws its own batch of `batch_size` (a flow or VAN: its
own proposals, from a generator seeded by (seed, rank); a diffusion model: from its shard of
the training data, rows rank, rank + N, ...); DDP averages the gradients in the backward pass,
so the N ranks step like one process with an N times larger batch at the same learning rate.
"""
from __future__ import annotations

import torch

from .streams import block_seed
from .world import group_for, world


class _TaskLoss(torch.nn.Module):
    """The task's loss as the forward of a module that owns the network, so that DDP sees the
    loss being computed (it prepares the gradient reduction in forward)."""

    def __init__(self, task):
        super().__init__()
        self.net = task.net
        self._task = (task,)          # not a submodule: only the network is DDP's

    def forward(self, step: int, generator):
        return self._task[0].loss(step, generator)


class DataParallelTask:
    """A trainer task whose loss runs through DDP; everything else is the task's own."""

    def __init__(self, task, device):
        self.task = task
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:   # "cuda": this rank's GPU
            device = torch.device("cuda", torch.cuda.current_device())
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            _TaskLoss(task), device_ids=[device.index] if device.type == "cuda" else None,
            process_group=group_for(device), broadcast_buffers=False,
            find_unused_parameters=True)    # a task may leave some weights out of a loss

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, step: int, generator):
        return self.ddp(step, generator)


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the run's seed (one process is unchanged); rank r > 0 a stream of its own."""
    return seed if rank == 0 else block_seed(seed, rank)


def data_parallel(task, device):
    """The task as this rank runs it: its shard of the training data, the loss through DDP
    (unchanged in a world of one)."""
    w = world()
    if not w.spread:
        return task
    data = getattr(task, "data", None)
    if isinstance(data, torch.Tensor):
        task.data = data[w.rank::w.size]
    return DataParallelTask(task, device)
