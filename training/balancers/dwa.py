"""`dwa`: Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, eq. 1).

    r_i(t-1)  = L_i(t-1) / L_i(t-2)          (unweighted epoch means)
    lambda_i  = K exp(r_i(t-1)/T) / sum_j exp(r_j(t-1)/T)

lambda = 1 for the first two epochs and always sums to K. A component whose loss falls slowly
(r close to 1) gains weight.

DWA balances *rates*, not scales: lambda stays within a factor exp(max r / T) of itself, so with
the paper's raw losses (``normalize: none``, then w_i = lambda_i) it cannot compensate a component
10^4 times larger than another (tests/training/balancers/test_symptom.py shows the stall). The
default ``normalize: initial`` weights each loss's ratio to its first observed value (GradNorm's
L_i / L_i(0)); the rates are unchanged by it (L_i(0) cancels in r_i). The configured weights c_i
(``loss.balancer.weights``) are a constant prior on top of the paper's lambda, as in `scale_norm`
and the inverse-loss strategies. The weights applied to the raw losses, and reported, are

    w_i = K (c_i lambda_i / L_i(0)) / sum_j (c_j lambda_j / L_j(0))

still positive and summing to K, so they read like the paper's (uniform c and lambda: w_i = K x
the share of 1/L_i(0)). The rescaling to K multiplies the whole objective by one constant, which
Adam ignores; with ``normalize: none`` and uniform c the formula reduces to w_i = lambda_i exactly. L_i(0) is the
first *strictly positive* loss (training/balancers/common.py says why and what happens before it).

A rate needs L_i(t-2) > 0 and L_i(t-1) >= 0 (finite). An epoch whose mean is 0 (e.g. no batch had
a wave V target) gives no rate for the next comparison; such a component gets the mean of the other
components' rates, so it neither gains nor loses weight relative to them (if no component has a
rate, lambda is kept). A negative mean is refused: a rate of negative losses has no meaning (a
falling Gaussian NLL, -1 -> -2, would read as r = 2, "got worse").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from training.balancers.common import InitialLossScale, ValueBalancer
from training.balancers.config import DWAConfig


class DWABalancer(ValueBalancer):
    strategy = "dwa"
    needs_nonnegative = "its rates L_i(t-1) / L_i(t-2) compare positive losses"

    def __init__(self, names: Sequence[str], weights: Tensor, cfg: DWAConfig) -> None:
        super().__init__(names)
        self.cfg = cfg
        K = len(names)
        # [K] the configured prior: constant, rebuilt from the config (not in checkpoints of earlier runs)
        self.register_buffer("c", weights.clone(), persistent=False)
        self.register_buffer("lam", torch.ones(K))  # [K] the paper's DWA weights, sum K
        self.initial = InitialLossScale(K, enabled=cfg.normalize == "initial")
        self.history: list[list[float]] = []  # the last two epoch means

    def observe(self, values: Tensor) -> None:
        self.initial.observe(values)

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        total = (self.weights_tensor() * L).sum()
        return total, total

    def on_epoch_end(self, epoch: int, train_means: dict[str, float]) -> None:
        super().on_epoch_end(epoch, train_means)  # a negative mean is refused
        self.history = [*self.history, [float(train_means[n]) for n in self.names]][-2:]
        if len(self.history) < 2:
            return
        prev2, prev1 = (torch.tensor(h, dtype=torch.float64) for h in self.history)
        valid = torch.isfinite(prev2) & torch.isfinite(prev1) & (prev2 > 0) & (prev1 >= 0)  # [K]
        if not bool(valid.any()):
            return
        r = torch.where(valid, prev1 / torch.where(valid, prev2, 1.0), 0.0)  # [K] r_i(t-1)
        r = torch.where(valid, r, r.sum() / valid.sum())  # no rate: the mean of the others'
        self.lam.copy_((len(self.names) * torch.softmax(r / self.cfg.temperature, dim=0)).to(self.lam))

    def weights_tensor(self) -> Tensor:
        w = self.c * self.lam / self.initial.scale()  # [K] c_i lambda_i / L_i(0)
        return len(self.names) * w / w.sum()

    def get_extra_state(self) -> Any:
        return {"history": self.history}

    def set_extra_state(self, state: Any) -> None:
        self.history = [list(map(float, h)) for h in state["history"]]
