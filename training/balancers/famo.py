"""`famo`: Fast Adaptive Multitask Optimization (Liu, Liu, Jiang, Stone & Liu, NeurIPS 2023).

Task logits xi [K], z = softmax(xi). The network descends

    sum_i z_i log(L_i + eps) / sg(c),   c = sum_j z_j / (L_j + eps)          (paper, eq. 6)

whose gradient is sum_i w_i grad L_i with w_i = (z_i / (L_i + eps)) / sum_j (z_j / (L_j + eps)):
every task's *log*-loss falls at the rate z asks for, whatever its scale. After each optimizer
step the logits take an Adam step (weight decay gamma) along

    delta_i = log(L_i(t-1) + eps) - log(L_i(t) + eps),    grad_xi = (dz/dxi)^T delta   (eq. 8)

so tasks that improved most lose weight. Deviations, stated: (1) the paper re-evaluates the loss
on the same batch after the step; we use the next step's losses instead (one step delayed, no
extra forward), averaged over the step's micro-batches and globally reduced under DDP; (2) the
weights are scaled by K (sum K instead of 1) so a learning rate tuned for `fixed` transfers.
The reported weights are the w_i of the last batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from training.balancers.common import ValueBalancer
from training.balancers.config import FAMOConfig


class FAMOBalancer(ValueBalancer):
    def __init__(self, names: Sequence[str], weights: Tensor, cfg: FAMOConfig) -> None:
        super().__init__(names)
        self.eps = cfg.eps
        K = len(names)
        self.xi = nn.Parameter(torch.log(weights / weights.sum()))  # [K] logits; z starts proportional to w0
        self.opt = torch.optim.Adam([self.xi], lr=cfg.lr, weight_decay=cfg.gamma)
        self.register_buffer("acc", torch.zeros(K))  # [K] sum of this step's (reduced) losses
        self.register_buffer("prev", torch.zeros(K))  # [K] previous step's mean losses
        self.register_buffer("last_w", weights * K / weights.sum())  # [K] reported weights
        self.n_acc = 0  # micro-batches in acc (host counter)
        self.has_prev = False

    def observe(self, values: Tensor) -> None:
        self.acc.add_(values)
        self.n_acc += 1

    def objective(self, L: Tensor) -> tuple[Tensor, Tensor]:
        z = torch.softmax(self.xi.detach(), dim=0)  # [K]
        q = z / (L.detach() + self.eps)  # [K]
        w = len(self.names) * q / q.sum()  # [K] = K z_i / (c (L_i + eps))
        self.last_w.copy_(w)
        total = (w * L).sum()  # same gradient as K * sum_i z_i log(L_i + eps) / c
        return total, total

    def after_optimizer_step(self) -> None:
        if self.n_acc == 0:
            return
        cur = self.acc / self.n_acc  # [K]
        if self.has_prev:
            delta = torch.log(self.prev + self.eps) - torch.log(cur + self.eps)  # [K]
            with torch.enable_grad():
                z = torch.softmax(self.xi, dim=0)
                (g,) = torch.autograd.grad(z, self.xi, grad_outputs=delta)
            self.xi.grad = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self.prev.copy_(cur)
        self.has_prev = True
        self.acc.zero_()
        self.n_acc = 0

    def weights_tensor(self) -> Tensor:
        return self.last_w

    def get_extra_state(self) -> Any:
        return {"opt": self.opt.state_dict(), "n_acc": self.n_acc, "has_prev": self.has_prev}

    def set_extra_state(self, state: Any) -> None:
        self.opt.load_state_dict(state["opt"])
        self.n_acc, self.has_prev = int(state["n_acc"]), bool(state["has_prev"])
