"""`scale_norm`: divide each loss by its own scale so every component contributes about its weight.

    objective = sum_i c_i * L_i / sg(m_i)        c_i = w_i (* sqrt(n_i) with the output correction)

``sg`` is stop-gradient: the denominator is a constant, so the gradient of component i is
c_i * grad(L_i) / m_i -- the gradient is rescaled, never thrown away (seed 001's batch-statistics
"fix 4" divided Python floats, which did throw it away).

``statistic``:
- ``running_mean``: m_i is a plain average over the first ``warmup_steps`` observations, then an
  exponential moving average with ``momentum`` (seed 001's LossNormalizer, on the device).
- ``batch``: m_i = sg(L_i) of the current batch: every term is worth exactly c_i and its gradient
  is c_i * grad(log L_i). Under DDP m_i is the mean of L_i over the ranks' batches, so every rank
  weights with the same m (its own L_i then scales to about c_i, not exactly). Adapts immediately,
  noisier on small batches.

``sqrt_output_correction`` (seed 001, fix 2): a loss averaged over n output elements has a
gradient about sqrt(n) times smaller per element than a summed one; multiplying by sqrt(n)
counteracts that reduction bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from training.balancers.common import ValueBalancer
from training.balancers.config import ScaleNormConfig


class ScaleNormBalancer(ValueBalancer):
    strategy = "scale_norm"
    needs_nonnegative = "it divides each loss by its size, which passes through 0 for a loss that can be negative"

    def __init__(self, names: Sequence[str], weights: Tensor, cfg: ScaleNormConfig) -> None:
        super().__init__(names)
        self.cfg = cfg
        c = weights.clone()  # [K]
        if cfg.sqrt_output_correction:
            unknown = [n for n in names if n not in cfg.output_elements]
            if unknown:
                raise ValueError(
                    f"expected scale_norm.output_elements for every component, found none for {unknown}"
                )
            c = c * torch.tensor([math.sqrt(cfg.output_elements[n]) for n in names])
        self.register_buffer("c", c)  # [K]
        self.register_buffer("m", torch.ones(len(names)))  # [K] running mean (1 until observed)
        self.n_observed = 0  # host counter: no device sync to pick warm-up vs momentum

    def observe(self, values: Tensor) -> None:
        if self.cfg.statistic == "batch":
            return
        self.n_observed += 1
        n = self.n_observed
        rate = 1.0 / n if n <= self.cfg.warmup_steps or n == 1 else 1.0 - self.cfg.momentum
        m_new = self.m + rate * (values - self.m)  # warm-up: running average; then m <- b*m + (1-b)*L
        self.m.copy_(torch.where(torch.isfinite(values), m_new, self.m))  # a NaN step must not poison m

    def _scale(self, ref: Tensor) -> Tensor:
        if self.cfg.statistic == "batch":
            return ref.abs().clamp_min(self.cfg.eps)
        return self.m.abs().clamp_min(self.cfg.eps)

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        w = self.c / self._scale(ref)  # [K], constant w.r.t. the network
        total = (w * L).sum()
        if self.cfg.statistic == "batch":
            self._last_w = w.detach()
        return total, total

    def weights_tensor(self) -> Tensor:
        if self.cfg.statistic == "batch":
            return getattr(self, "_last_w", self.c)
        return self.c / self._scale(self.m)

    def get_extra_state(self) -> Any:
        return {"n_observed": self.n_observed}

    def set_extra_state(self, state: Any) -> None:
        self.n_observed = int(state["n_observed"])
