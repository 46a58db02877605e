"""MetaLoss: the component losses and the balancer that combines them, as one module.

The trainer calls ``meta_loss.components(outputs, batch)`` and ``meta_loss.balancer.backward``;
the monitoring callback finds :meth:`get_loss_weights` here (seed 000). ``state_dict()`` holds the
balancer's state, so a resumed run continues with the same weights.

Components that can be negative (``components.can_be_negative``: in ComponentLosses, the
threshold's Gaussian NLL) are refused at construction under a strategy that needs losses >= 0
(``Balancer.needs_nonnegative``): uncertainty weighting would diverge, FAMO would ascend them.
"""

from __future__ import annotations

from torch import nn

from training.balancers.base import ACCEPT_NEGATIVE, Balancer


class MetaLoss(nn.Module):
    def __init__(self, components: nn.Module, balancer: Balancer) -> None:
        super().__init__()
        if getattr(components, "can_be_negative", False) and balancer.needs_nonnegative:
            raise ValueError(
                f"expected component losses >= 0 for loss.balancer.strategy={balancer.strategy} "
                f"({balancer.needs_nonnegative}), found loss.threshold_loss=gaussian_nll, a Gaussian NLL that goes "
                f"below 0: use loss.threshold_loss=huber or a strategy among {', '.join(ACCEPT_NEGATIVE)}"
            )
        self.components = components  # training.losses.ComponentLosses
        self.balancer = balancer

    @property
    def can_be_negative(self) -> bool:
        """Whether the objective may legitimately be < 0 (strategy or component, e.g. Gaussian NLL)."""
        return bool(self.balancer.can_be_negative or getattr(self.components, "can_be_negative", False))

    def get_loss_weights(self) -> list[float] | list[list[float]]:
        return self.balancer.get_loss_weights()

    def weight_names(self) -> list[str] | list[list[str]]:
        return self.balancer.weight_names()
