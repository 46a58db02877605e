"""Helpers shared by the strategies: stacking named losses and the loss-value base class."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from training.balancers.base import BalanceContext, BalanceOutput, Balancer


def stack_losses(losses: dict[str, Tensor], names: Sequence[str]) -> Tensor:
    """[K] tensor of the named scalar losses, in ``names`` order."""
    missing = [n for n in names if n not in losses]
    if missing:
        raise ValueError(f"expected losses for {list(names)}, found no value for {missing} (keys: {sorted(losses)})")
    return torch.stack([losses[n].reshape(()) for n in names])  # [K]


def init_weights(weights: dict[str, float], names: Sequence[str]) -> Tensor:
    """[K] config weights in ``names`` order; a name without a configured weight gets 1."""
    return torch.tensor([float(weights.get(n, 1.0)) for n in names], dtype=torch.float32)


class InitialLossScale(torch.nn.Module):
    """Each component's first observed finite loss L_i(0), for ``normalize: initial``.

    Dividing a loss by its detached first value (GradNorm's loss ratio L_i / L_i(0)) makes a
    strategy that balances something other than scale (DWA's rates, TorchJD's conflicts)
    scale-free: a loss 10^4 times larger than another starts on equal footing (seed 001). The
    values are a buffer, so checkpoints carry them and a resumed run divides by the same numbers.
    """

    def __init__(self, k: int, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.register_buffer("L0", torch.full((k,), float("nan")))  # [K] nan until first seen

    def observe(self, values: Tensor) -> None:
        """Record the first finite value of each component from detached losses [K]."""
        if self.enabled:
            v = values.detach().to(self.L0)
            self.L0.copy_(torch.where(torch.isnan(self.L0) & torch.isfinite(v), v, self.L0))

    def scale(self) -> Tensor:
        """[K] divisors: L_i(0) (1 where not yet seen or normalization is off)."""
        if not self.enabled:
            return torch.ones_like(self.L0)
        return torch.nan_to_num(self.L0, nan=1.0).abs().clamp_min(1e-12)


class ValueBalancer(Balancer):
    """A strategy whose weights follow loss *values* (never gradients).

    Subclasses define :meth:`objective` (differentiable in the losses) and, if they keep running
    statistics, :meth:`observe`. Under DDP :meth:`backward` passes the values through
    ``ctx.reduce_mean`` first, so every rank updates the same statistics and optimizes the same
    objective.
    """

    def observe(self, values: Tensor) -> None:
        """Update running statistics from detached, globally reduced loss values [K]."""

    def objective(self, L: Tensor) -> tuple[Tensor, Tensor]:
        """(objective, weighted_sum) from the stacked losses L [K]."""
        raise NotImplementedError

    def combine(self, losses: dict[str, Tensor], *, update: bool = True) -> tuple[Tensor, Tensor]:
        L = stack_losses(losses, self.names)  # [K]
        if update:
            self.observe(L.detach())
        return self.objective(L)

    def backward(self, losses: dict[str, Tensor], ctx: BalanceContext) -> BalanceOutput:
        L = stack_losses(losses, self.names)  # [K]
        self.observe(ctx.reduce_mean(L.detach()))
        objective, weighted = self.objective(L)
        (objective * ctx.loss_scale).backward()
        return BalanceOutput(objective.detach(), weighted.detach())
