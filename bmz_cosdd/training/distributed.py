"""Training on several processes with torch.distributed (``torchrun``), DistributedDataParallel underneath.

Launch::

    torchrun --nproc-per-node 2 -m bmz_cosdd train cosdd data/ --axes SYX --batch-size 16 ...

What each process does, and why a run gives the same result on 1 or N processes:

- ``train.batch_size`` is the global batch of one optimiser step. Every process
  draws the same global batch from the shared crop stream and keeps its own
  shard: ``accumulate`` micro-batches of ``batch_size / (N * accumulate)`` crops.
- Micro-batch ``j`` (numbered over all processes, ``j = rank * accumulate + a``)
  of step ``s`` draws all its training randomness (blind-spot masks, latent
  samples) from a seed derived from ``(seed, s, j)``: per-rank generators that
  do not depend on how the micro-batches are spread over processes.
- Gradients are averaged by DDP (all-reduce) and accumulated without
  synchronisation in between (``no_sync``). Batch norm normalises each
  micro-batch by its own statistics, exactly as gradient accumulation on one
  process does, so N processes with ``accumulate`` A train the same weights as
  one process with ``accumulate`` N x A. (SyncBatchNorm would need CUDA; the
  running statistics used at validation and prediction are rank 0's.)
- Rank 0 alone writes the run folder (config, checkpoints, metrics, plots);
  validation runs on every rank and rank 0's numbers decide, and rank 0 decides
  when to stop (time limit, Ctrl-C), so all processes leave the loop together.
- Resume: every process loads the last checkpoint.

CPU processes use the gloo backend; CUDA processes NCCL, one GPU each (``LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from bmz_cosdd.errors import UserError

__all__ = ["World", "LossModule", "current_world", "distributed_world", "micro_seed"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process on CUDA; CPU processes share the CPU."""
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object; rank 0's own data only)."""
        if not self.active:
            return value
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0)
        return holder[0]

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (every rank passes the same keys)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return {k: float(v) / self.size for k, v in zip(keys, tensor.tolist())}

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any."""
        if not self.active:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(tensor)
        return bool(tensor.item() > 0)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def current_world() -> World:
    """The world ``torchrun`` describes in the environment (one process without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UserError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (set by torchrun)") from None
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"rank {rank} does not fit a world of {size} process(es)")
    return World(rank, size, local)


@contextlib.contextmanager
def distributed_world(device: torch.device) -> Iterator[World]:
    """Join the process group for the duration of a run (nothing to do for one process)."""
    world = current_world()
    if not world.active or torch.distributed.is_initialized():
        yield world
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    torch.distributed.init_process_group(backend=backend)
    try:
        yield world
        # Every rank reaches here before any leaves the group: a rank that destroyed its group (and exited)
        # while another still had collective work in flight aborted gloo's threads at interpreter exit
        # ("terminate called without an active exception"). Not after an error: the others may never come.
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def micro_seed(seed: int, step: int, index: int) -> int:
    """The seed of micro-batch ``index`` (numbered over all processes) of optimiser step ``step``."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class LossModule(nn.Module):
    """The method's training losses as a module's forward, so DDP can wrap it."""

    def __init__(self, method: Any, model: nn.Module) -> None:
        super().__init__()
        self.method = method
        self.model = model

    def forward(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.method.training_losses(self.model, batch, generator)


def check_world(batch_size: int, accumulate: int, world: World) -> int:
    """Crops per micro-batch; one clear line when the batch cannot be shared by the processes."""
    shares = accumulate * world.size
    if batch_size % shares:
        raise UserError(
            f"train.batch_size {batch_size} cannot be shared by {world.size} process(es) x {accumulate} accumulation"
            f" step(s): make it a multiple of {shares}"
            + (" (more processes than crops in the batch)" if batch_size < shares else "")
        )
    return batch_size // shares
