"""Process-group helpers: one code path for a single process and for torchrun (DDP).

`torchrun --nproc_per_node=N train.py ...` sets RANK/WORLD_SIZE/LOCAL_RANK; we then use NCCL on
CUDA and gloo on CPU. Rank 0 alone writes logs and checkpoints; every metric that is shown is
all-reduced first, so what rank 0 prints is the global value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world size): which slice of a global batch's draws this process keeps."""
        return self.rank, self.world_size


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # before NCCL starts, so each rank's communicator uses its own GPU
    if not dist.is_initialized():
        # The store under a prefix of its own per torchrun attempt: after an elastic restart the c10d
        # rendezvous hands the workers the same agent store, where the killed attempt's gloo addresses
        # are still written, and connecting to them fails ("Connection refused"; pytorch#167288).
        store, rank, world = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                store=dist.PrefixStore(f"abr/attempt_{attempt}", store), rank=rank, world_size=world)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def is_main_process() -> bool:
    """Rank 0, or a single process; readable before the process group exists (torchrun sets RANK)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """All-reduce sum across ranks (identity in a single process); differentiable inputs are detached."""
    if not _active():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """All-reduce mean across ranks (identity in a single process). Differentiable inputs are
    detached: this is for loss *values* that drive weights and for displayed metrics."""
    return reduce_sum(x) / dist.get_world_size() if _active() else x


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in a single process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_batches(n: int, batch_size: int, rank: int, world_size: int) -> range:
    """This rank's contiguous block of the ``ceil(n / batch_size)`` batches of a split read in order.

    Blocks follow one another in rank order and cut only between batches, so every rank's batches are
    the single process's batches (same rows, same size) and results concatenated in rank order are the
    single process's, in its order. A rank may get no batch (more ranks than batches)."""
    nb = -(-n // batch_size)
    return range(nb * rank // world_size, nb * (rank + 1) // world_size)


def shard_rows(n: int, batch_size: int, rank: int, world_size: int) -> range:
    """The rows of :func:`shard_batches`' block."""
    b = shard_batches(n, batch_size, rank, world_size)
    return range(min(n, b.start * batch_size), min(n, b.stop * batch_size))


def all_reduce_grads(params: list[torch.Tensor]) -> None:
    """Average ``.grad`` of parameters that live outside the DDP module (e.g. the uncertainty
    balancer's log-variances) across ranks, in one collective; a missing gradient counts as zero.
    DDP averages the network's gradients itself; without this, such parameters would drift apart."""
    if not _active() or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (P)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    for p, g in zip(params, flat.split([q.numel() for q in params]), strict=True):
        p.grad = g.view_as(p).clone()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
