"""MetaLoss: the component losses and the balancer that combines them, as one module.

The trainer calls ``meta_loss.components(outputs, batch)`` and ``meta_loss.balancer.backward``;
the monitoring callback finds :meth:`get_loss_weights` here (seed 000). ``state_dict()`` holds the
balancer's state, so a resumed run continues with the same weights.

Every component loss is >= 0 by construction (cross-entropies and Huber losses: the Gaussian NLL
threshold loss is refused at config read until the network has a variance head); a strategy that
needs it (``Balancer.needs_nonnegative``) still checks the values it is given at every step.
"""

from __future__ import annotations

from torch import nn

from training.balancers.base import Balancer


class MetaLoss(nn.Module):
    def __init__(self, components: nn.Module, balancer: Balancer) -> None:
        super().__init__()
        self.components = components  # training.losses.ComponentLosses
        self.balancer = balancer

    @property
    def can_be_negative(self) -> bool:
        """Whether the objective may legitimately be < 0 (the strategy's own terms, e.g. log variances)."""
        return bool(self.balancer.can_be_negative)

    def get_loss_weights(self) -> list[float] | list[list[float]]:
        return self.balancer.get_loss_weights()

    def weight_names(self) -> list[str] | list[list[str]]:
        return self.balancer.weight_names()
