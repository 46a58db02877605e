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
    """Each component's first strictly positive finite loss L_i(0), for ``normalize: initial``.

    Dividing a loss by its detached first value (GradNorm's loss ratio L_i / L_i(0)) makes a
    strategy that balances something other than scale (DWA's rates, TorchJD's conflicts)
    scale-free: a loss 10^4 times larger than another starts on equal footing (seed 001). The
    values are a buffer, so checkpoints carry them and a resumed run divides by the same numbers.

    Why *strictly positive*: a batch without wave V makes ``peak_latency``/``peak_amplitude``
    exactly 0 (no target, no gradient). Taken as L_i(0), that 0 became the divisor for the whole
    run (DWA's weights went to 1e-12, TorchJD's Jacobian to NaN, GradNorm's ratios to 1e11). A value
    of 0 (or a non-finite one) says nothing about the component's scale, so it is not recorded.

    Until a component has been seen it is treated as a typical one: its divisor is the geometric
    mean of the L_j(0) already recorded (1 while none is). Such a component's loss has been 0 so
    far, so the divisor changes nothing it contributes; it only keeps the component from skewing the
    normalization of the others (a divisor of 1 among L_j(0) of 100 would take most of DWA's sum).
    A stored L_i(0) <= 0 (a checkpoint written before this rule) counts as not seen.
    """

    def __init__(self, k: int, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.register_buffer("L0", torch.full((k,), float("nan")))  # [K] nan until first seen

    def seen(self) -> Tensor:
        """[K] bool: L_i(0) recorded."""
        return self.L0 > 0  # nan > 0 is False

    def observe(self, values: Tensor) -> None:
        """Record each component's first strictly positive finite value from detached losses [K]."""
        if self.enabled:
            v = values.detach().to(self.L0)
            take = ~self.seen() & torch.isfinite(v) & (v > 0)
            self.L0.copy_(torch.where(take, v, self.L0))

    def scale(self) -> Tensor:
        """[K] divisors: L_i(0); for a component not seen yet, the geometric mean of those seen
        (1 while none is, or when normalization is off)."""
        if not self.enabled:
            return torch.ones_like(self.L0)
        seen = self.seen()
        log_L0 = torch.where(seen, self.L0, torch.ones_like(self.L0)).log()  # [K], 0 where not seen
        typical = (log_L0.sum() / seen.sum().clamp_min(1)).exp()  # geometric mean of the seen L0
        return torch.where(seen, self.L0, typical)


class ValueBalancer(Balancer):
    """A strategy whose weights follow loss *values* (never gradients).

    Subclasses define :meth:`objective` (differentiable in the losses) and, if they keep running
    statistics, :meth:`observe`. Under DDP :meth:`backward` passes the values through
    ``ctx.reduce_mean`` first, so every rank updates the same statistics and optimizes the same
    objective.
    """

    def observe(self, values: Tensor) -> None:
        """Update running statistics from detached, globally reduced loss values [K]."""

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        """(objective, weighted_sum) from the stacked losses L [K]. A weight that depends on this
        batch's loss values reads ``ref`` [K] (detached; under DDP the global mean over ranks), never
        ``L``: every rank then weights with the same numbers and optimizes the same objective."""
        raise NotImplementedError  # every value-based strategy defines its objective

    def combine(self, losses: dict[str, Tensor], *, update: bool = True) -> tuple[Tensor, Tensor]:
        L = stack_losses(losses, self.names)  # [K]
        if update:
            self.observe(L.detach())
        return self.objective(L, L.detach())

    def backward(self, losses: dict[str, Tensor], ctx: BalanceContext) -> BalanceOutput:
        L = stack_losses(losses, self.names)  # [K]
        ref = ctx.reduce_mean(L.detach())  # [K] the same on every rank
        self.observe(ref)
        objective, weighted = self.objective(L, ref)
        (objective * ctx.loss_scale).backward()
        return BalanceOutput(objective.detach(), weighted.detach())


class ScalarizedBalancer(ValueBalancer):
    """A scalarization F of the loss values (a TorchJD scalarizer), behind the balancer interface.

    F's gradient is sum_i w_i grad L_i with w = dF/dL; TorchJD's scalarizers return F alone, so w is
    taken by autograd on the reference values ``ref`` (under DDP the global mean: every rank applies
    the same w). The objective has F(ref)'s value and the gradient w . grad L, and w is what the
    strategy reports (``train/weight_i``).

    A component whose loss is exactly 0 in a step (a batch without wave V: no target, no gradient)
    is left out of F for that step (log 0 would make every weight 0 or NaN); it keeps its last
    reported weight, which multiplies a loss of 0.
    """

    def __init__(self, names: Sequence[str], weights: Tensor) -> None:
        super().__init__(names)
        self.register_buffer("last_w", weights.clone())  # [K] the weights of the last step

    def scalarize(self, values: Tensor, present: Tensor) -> Tensor:
        """F of the present components' values [P] (``present`` [K] bool says which), a scalar."""
        raise NotImplementedError  # every scalarized strategy (stch, geometric_mean) defines its F

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        present = torch.isfinite(ref) & (ref > 0)  # [K]
        value = ref.new_zeros(())
        if bool(present.any()):  # host sync; TorchJD's own checks sync as well
            x = ref.detach().clone().requires_grad_(True)  # [K]
            with torch.enable_grad():  # validation combines under no_grad
                value = self.scalarize(x[present], present)
                (dF,) = torch.autograd.grad(value, x)  # [K], 0 where absent
            self.last_w.copy_(torch.where(present, dF, self.last_w))
        weighted = (self.last_w * L).sum()
        return weighted - weighted.detach() + value.detach(), weighted

    def weights_tensor(self) -> Tensor:
        return self.last_w
