"""The one interface every balancing strategy implements.

The trainer knows no strategy by name. Per micro-batch it calls :meth:`Balancer.backward` with the
six component losses; the strategy combines them (and, if gradient-based, does the backward it
needs on the shared parameters or shared features). Per epoch it calls :meth:`on_epoch_end`.

Weights are reported by :meth:`get_loss_weights` as a flat list (logged as ``weight_i``) or one
list per head group (``head_i_weight_j``); :meth:`weight_names` gives the matching component
names so the index -> component mapping can be written into the run.

State: learnable weights are registered parameters or buffers; anything else (counters, running
means, an inner optimizer) goes through ``get_extra_state``/``set_extra_state`` so that
``state_dict()`` / ``load_state_dict()`` round-trips and a resumed run continues identically. The
keys of ``state_dict()`` never change after construction: the trainer loads a state taken before
a step back after a non-finite one, and a fresh balancer loads a checkpoint.

Declared facts the rest of the code reads (class attributes, overridden where they differ):

- ``strategy``: the name under ``loss.balancer.strategy`` (for messages);
- ``needs_nonnegative``: why the strategy needs every component loss >= 0 ("" if it does not);
  :meth:`Balancer.check_nonnegative` refuses a negative value under such a strategy (the epoch
  means in :meth:`Balancer.on_epoch_end`, and the strategies that check their step values);
- ``min_weight`` / ``max_weight``: bounds the strategy clamps every reported weight to (None: not
  clamped on that side); the health monitor's ``weight_near_clamp`` alert reads them;
- ``can_be_negative``: whether the objective itself may go below 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

# Strategies whose weights stay meaningful when a component loss is negative (e.g. a Gaussian NLL).
ACCEPT_NEGATIVE = ("fixed", "jacobian")


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass
class BalanceContext:
    """What a strategy may need beyond the losses, supplied by the trainer each micro-batch."""

    shared_params: Sequence[nn.Parameter] = ()  # every component's gradient flows through these
    last_shared_params: Sequence[nn.Parameter] = ()  # GradNorm's default layer W (the last shared one)
    features: Sequence[Tensor] = ()  # shared representation(s) the heads read (TorchJD mtl_backward)
    loss_scale: float = 1.0  # 1 / grad_accum_steps: scale what is backpropagated
    reduce_mean: Callable[[Tensor], Tensor] = field(default=_identity)  # DDP all-reduce mean (identity alone)


@dataclass
class BalanceOutput:
    objective: Tensor  # detached scalar: what was minimized (includes regularizers, e.g. uncertainty's)
    weighted_sum: Tensor  # detached scalar: sum_i w_i * L_i, the interpretable total of the task losses


class Balancer(nn.Module):
    """Base class: fixed weights from config; subclasses override what adapts."""

    # True only where the objective itself may legitimately go below zero (uncertainty with the
    # `log` regularizer). The health monitor warns on a negative total otherwise.
    can_be_negative: ClassVar[bool] = False
    strategy: ClassVar[str] = ""
    needs_nonnegative: ClassVar[str] = ""
    min_weight: float | None = None
    max_weight: float | None = None

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)

    # -- per micro-batch ------------------------------------------------------------------------
    def combine(self, losses: dict[str, Tensor], *, update: bool = True) -> tuple[Tensor, Tensor]:
        """(objective, weighted_sum), both differentiable. ``update=False`` during validation:
        no running statistic may change."""
        raise NotImplementedError  # every strategy defines its objective

    def backward(self, losses: dict[str, Tensor], ctx: BalanceContext) -> BalanceOutput:
        """Default: backpropagate the combined objective. Gradient-based strategies override."""
        objective, weighted = self.combine(losses, update=True)
        (objective * ctx.loss_scale).backward()
        return BalanceOutput(objective.detach(), weighted.detach())

    # -- hooks -----------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the model's optimizer should update (e.g. uncertainty's log-variances)."""
        return []

    def after_optimizer_step(self) -> None:
        """Called after every optimizer step (strategies with their own inner update)."""

    def on_epoch_end(self, epoch: int, train_means: dict[str, float]) -> None:
        """Called with the epoch's unweighted training means of each component (globally reduced).
        The base refuses a negative mean where the strategy needs losses >= 0; overrides call it."""
        self.check_nonnegative(train_means)

    def check_nonnegative(self, values: dict[str, float]) -> None:
        """One clear line if a component's value is < 0 and the strategy needs losses >= 0."""
        if not self.needs_nonnegative:
            return
        for name in self.names:
            if name in values and float(values[name]) < 0:
                raise ValueError(
                    f"expected loss '{name}' >= 0 for loss.balancer.strategy={self.strategy} "
                    f"({self.needs_nonnegative}), found {float(values[name]):.4g}; "
                    f"strategies that accept negative losses: {', '.join(ACCEPT_NEGATIVE)}"
                )

    # -- reporting -------------------------------------------------------------------------------
    def weights_tensor(self) -> Tensor:
        """Current weights as a 1-D tensor in ``self.names`` order (stays on device: no host sync)."""
        raise NotImplementedError  # every strategy defines its weights

    def get_loss_weights(self) -> list[float] | list[list[float]]:
        """Flat list (``weight_i``) or one list per head group (``head_i_weight_j``). Host sync."""
        return [float(w) for w in self.weights_tensor().detach().cpu()]

    def weight_names(self) -> list[str] | list[list[str]]:
        return list(self.names)


def weights_dict(balancer: Balancer) -> dict[str, float]:
    """component -> weight for either weight shape (flat or grouped)."""
    weights, names = balancer.get_loss_weights(), balancer.weight_names()
    if weights and isinstance(weights[0], (list, tuple)):
        return {n: float(w) for ws, ns in zip(weights, names, strict=True) for w, n in zip(ws, ns, strict=True)}
    return {n: float(w) for w, n in zip(weights, names, strict=True)}


__all__ = ["ACCEPT_NEGATIVE", "BalanceContext", "BalanceOutput", "Balancer", "weights_dict", "torch"]
