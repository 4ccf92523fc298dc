"""Data-parallel training and evaluation across processes (torch.distributed), as the engine sees it.

A :class:`Shard` is this process's part of a run: its ``rank`` among ``world`` processes. The
engine gives each rank every ``world``-th sample of each global batch (samples keep their global
slot, so augmentation is the same whatever the world size), averages the gradients across ranks
after each backward pass (what ``DistributedDataParallel`` does, without its bucketing, so frozen
trunks and cached features work alike), and sums the evaluation's confusion matrices across
ranks (int64). ``world = 1`` is an ordinary single-process run.

:func:`from_environment` builds one under ``torchrun`` (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``...), initialising the default process group (``nccl`` on CUDA, ``gloo`` on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside a world of {self.world}")

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place."""
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def average_gradients(self, params) -> None:
        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= self.world

    @property
    def leader(self) -> bool:
        """Rank 0: the one process that writes results."""
        return self.rank == 0


def from_environment(backend: str | None = None) -> Shard:
    """This process's shard under ``torchrun`` (a single-process shard without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return Shard(rank, world)
