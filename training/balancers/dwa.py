"""`dwa`: Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, eq. 1).

    r_i(t-1) = L_i(t-1) / L_i(t-2)          (unweighted epoch means)
    w_i(t)   = K exp(r_i(t-1)/T) / sum_j exp(r_j(t-1)/T)

w = 1 for the first two epochs; the weights always sum to K. A component whose loss falls slowly
(r close to 1) gains weight.

DWA balances *rates*, not scales: its weights stay within a factor exp(max r / T) of each other,
so it cannot compensate a component 10^4 times larger than another (tests/training/balancers/
test_symptom.py shows the stall persists). ``normalize: initial`` divides each loss by its first
observed value (GradNorm's loss ratio L~_i = L_i / L_i(0)) before weighting, which makes DWA
scale-free; the reported weights are then the effective ones, w_i / L_i(0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from training.balancers.common import ValueBalancer
from training.balancers.config import DWAConfig


class DWABalancer(ValueBalancer):
    def __init__(self, names: Sequence[str], cfg: DWAConfig) -> None:
        super().__init__(names)
        self.cfg = cfg
        K = len(names)
        self.register_buffer("lam", torch.ones(K))  # [K] the DWA weights, sum K
        self.register_buffer("L0", torch.full((K,), float("nan")))  # [K] first observed losses (normalize)
        self.history: list[list[float]] = []  # the last two epoch means

    def observe(self, values: Tensor) -> None:
        if self.cfg.normalize == "initial":
            self.L0.copy_(torch.where(torch.isnan(self.L0) & torch.isfinite(values), values, self.L0))

    def _scale(self) -> Tensor:
        if self.cfg.normalize == "none":
            return torch.ones_like(self.lam)
        return torch.nan_to_num(self.L0, nan=1.0).abs().clamp_min(1e-12)

    def objective(self, L: Tensor) -> tuple[Tensor, Tensor]:
        total = (self.weights_tensor() * L).sum()
        return total, total

    def on_epoch_end(self, epoch: int, train_means: dict[str, float]) -> None:
        self.history = [*self.history, [float(train_means[n]) for n in self.names]][-2:]
        if len(self.history) < 2:
            return
        prev2, prev1 = (torch.tensor(h, dtype=torch.float64) for h in self.history)
        r = prev1 / prev2.clamp_min(1e-12)  # [K]
        lam = len(self.names) * torch.softmax(r / self.cfg.temperature, dim=0)
        if torch.isfinite(lam).all():
            self.lam.copy_(lam.to(self.lam))

    def weights_tensor(self) -> Tensor:
        return self.lam / self._scale()

    def get_extra_state(self) -> Any:
        return {"history": self.history}

    def set_extra_state(self, state: Any) -> None:
        self.history = [list(map(float, h)) for h in state["history"]]
