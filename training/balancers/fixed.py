"""`fixed`: the configured weights, constant. The baseline every other strategy is compared to."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from training.balancers.common import ValueBalancer


class FixedBalancer(ValueBalancer):
    """objective = sum_i w_i L_i with the config weights w."""

    strategy = "fixed"

    def __init__(self, names: Sequence[str], weights: Tensor) -> None:
        super().__init__(names)
        self.register_buffer("w", weights.clone())  # [K]

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        total = (self.w * L).sum()
        return total, total

    def weights_tensor(self) -> Tensor:
        return self.w
