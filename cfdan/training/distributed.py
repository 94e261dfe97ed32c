"""Data-parallel training helpers (``torchrun --nproc_per_node N -m cfdan train ...``).

Every rank draws the same seeded permutation of the training indices; each global batch of
``train.batch_size`` images is split across ranks (``batch[rank::world]``), so with equal
shares the averaged DDP gradient equals the single-process gradient of the same global batch.
Rank 0 writes checkpoints and the record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: ``rank`` of ``world_size``, GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's env (``WORLD_SIZE`` > 1), else no-op.

    Backend: NCCL when the run uses CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def shard(indices: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's share of a global batch of indices."""
    return indices[info.rank :: info.world_size] if info.enabled else indices


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; identity without a process group)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, info: DistInfo, device: torch.device | str = "cpu") -> bool:
    """True if ``flag`` is true on any rank (keeps stop decisions in step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank before evaluation."""
    if info.enabled:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def min_int(value: int, info: DistInfo, device: torch.device | str = "cpu") -> int:
    """The smallest ``value`` over ranks (so that every rank takes the same decision)."""
    if not info.enabled:
        return int(value)
    t = torch.tensor([int(value)], device=device, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op without a process group)."""
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group joined by :func:`init`."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
