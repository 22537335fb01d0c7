"""The processes training together (``train.nproc``): this one's place among them, and what
they share: sums, the pieces of a split they each scored, and decisions made once.

A process the launcher started (:mod:`visiontune.training.launch`) joins torch's process
group (gloo on the CPU, NCCL on CUDA, one GPU a process: the one of its local rank);
every other run is :data:`SINGLE`, a group of one, where sharing does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from visiontune.config import processes
from visiontune.config.params import ParamsError, TrainParams
from visiontune.data.batches import Shard
from visiontune.models.runtime import resolve_device


@dataclass(frozen=True)
class Group:
    """Process ``rank`` of ``world``, ``local_rank`` of the ``local_world`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    def threads(self, threads: int) -> int:
        """torch's CPU threads for each process: ``train.threads``; 0 (every core) divides
        the machine's cores among its processes (in one process, 0 keeps torch's default)."""
        if threads or self.world == 1:
            return threads
        return max(1, (os.cpu_count() or 1) // self.local_world)

    @property
    def shard(self) -> Shard:
        """This process's share of every batch and split."""
        return Shard(self.rank, self.world)

    @property
    def writes(self) -> bool:
        """Whether this process writes outputs and progress: the first on its machine (on
        one machine, rank 0 alone; every machine keeps its own copy of the same results)."""
        return self.local_rank == 0

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over every process."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        total = values.clone()
        dist.all_reduce(total)
        return total

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Every process's ``values`` (1-d, any length) end to end in rank order, on the CPU."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        pieces: list[Any] = [None] * self.world
        dist.all_gather_object(pieces, values.cpu())
        return torch.cat(pieces)

    def decide(self, verdict: Any) -> Any:
        """Rank 0's ``verdict``, the same in every process."""
        if self.world == 1:
            return verdict
        import torch.distributed as dist

        box = [verdict]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = Group()


@contextmanager
def joined(cfg: TrainParams) -> Iterator[Group]:
    """This process's group: :data:`SINGLE`, or in a launched process the process group of
    torchrun's environment (joined here, left when the block ends)."""
    if not processes.launched():
        yield SINGLE
        return
    import torch.distributed as dist

    device = resolve_device(cfg.device)
    world = int(os.environ["WORLD_SIZE"])
    if world != cfg.nproc:
        raise ParamsError(f"train.nproc is {cfg.nproc}, but torchrun started {world} processes")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend_for(device), device_id=_device_id(device, local_rank))
    try:
        yield Group(dist.get_rank(), world, local_rank, int(os.environ["LOCAL_WORLD_SIZE"]))
    finally:
        dist.destroy_process_group()


def backend_for(device: torch.device) -> str:
    """NCCL on CUDA, gloo on the CPU; ParamsError naming train.nproc where torch has none."""
    import torch.distributed as dist

    name = {"cuda": "nccl", "cpu": "gloo"}.get(device.type)
    available = {"nccl": dist.is_nccl_available, "gloo": dist.is_gloo_available}
    if name is None or not dist.is_available() or not available[name]():
        raise ParamsError(
            f"train.nproc > 1 needs gloo (CPU) or NCCL (CUDA), which this torch does not "
            f"have on {device.type}: set train.nproc=1"
        )
    return name


def _device_id(device: torch.device, local_rank: int) -> torch.device | None:
    return torch.device("cuda", local_rank) if device.type == "cuda" else None


def process_device(device: torch.device, group: Group) -> torch.device:
    """The device of this process: its own GPU (its local rank) in a CUDA group."""
    if device.type == "cuda" and group.world > 1:
        return torch.device("cuda", group.local_rank)
    return device
