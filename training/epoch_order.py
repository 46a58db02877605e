"""The training-set order: deterministic per (seed, epoch), sharded across DDP ranks, resumable.

Like ``torch.utils.data.DistributedSampler`` (``set_epoch``, rank sharding with padding to equal
length), plus two things it lacks: class-balanced sampling with replacement, and ``skip`` so a run
resumed mid-epoch continues with exactly the batches it had not seen. (The reverse-diffusion
samplers, DDPM/DDIM/DPM-Solver, are another thing: training/samplers.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    def __init__(
        self,
        n: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        weights: torch.Tensor | None = None,  # float [n]: draw with replacement proportional to these
    ) -> None:
        if n <= 0:
            raise ValueError(f"training set: expected at least one recording, found {n}")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.weights = weights
        self.per_rank = -(-n // world_size)  # ceil: every rank gets the same number of items
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Use the order of ``epoch``; drop its first ``skip`` items on this rank (resume)."""
        self.epoch, self.skip = epoch, skip

    def _order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.per_rank * self.world_size
        if self.weights is not None:
            return torch.multinomial(self.weights, total, replacement=True, generator=g)
        order = torch.randperm(self.n, generator=g)
        return torch.cat([order, order[: total - self.n]])  # pad by wrapping, as DistributedSampler

    def __iter__(self) -> Iterator[int]:
        mine = self._order()[self.rank :: self.world_size]
        return iter(mine[self.skip :].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.skip
