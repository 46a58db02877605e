"""MetaLoss: the component losses and the balancer that combines them, held as one module.

What it is for: one ``state_dict()`` key ("meta_loss") in every checkpoint for the balancer's state
and the losses' buffers, so a resumed run continues with the same weights; and the place the weight
logger finds :meth:`get_loss_weights` (seed 000 names it). The work is done by its two parts:
``training.objective.Objective`` calls ``meta_loss.components`` (the five head losses), the trainer
calls ``meta_loss.balancer`` (``backward``, ``combine``, the epoch hook).

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
