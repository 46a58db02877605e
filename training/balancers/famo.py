"""`famo`: Fast Adaptive Multitask Optimization (Liu, Liu, Jiang, Stone & Liu, NeurIPS 2023).

Task logits xi [K], z = softmax(log p + xi) with the prior p = w0 / sum(w0) from the config
weights. The network descends

    sum_i z_i log(L_i + eps) / sg(c),   c = sum_j z_j / (L_j + eps)          (paper, eq. 6)

whose gradient is sum_i w_i grad L_i with w_i = (z_i / (L_i + eps)) / sum_j (z_j / (L_j + eps)):
every task's *log*-loss falls at the rate z asks for, whatever its scale. After each optimizer
step the logits take an Adam step (weight decay gamma) along

    delta_i = log(L_i(t-1) + eps) - log(L_i(t) + eps),    grad_xi = (dz/dxi)^T delta   (eq. 8)

so tasks that improved most lose weight.

The logits start at 0, as in the paper's code (github.com/Cranial-XIX/FAMO, ``self.w =
torch.tensor([0.0] * n_tasks)``), and the weight decay pulls them back to 0. With equal config
weights (p uniform) this is the paper's algorithm exactly; unequal config weights enter as the
fixed prior log p, so the decay pulls z back to the configured proportions rather than to uniform.
(Earlier the logits themselves started at log p = -log K: the decay term gamma * xi then dwarfed
the task signal in Adam's normalization for the first ~100 steps; docs/balancing.md has numbers.)

A component whose loss is 0 in a step (a batch without wave V: no target, no gradient) has no
log-loss. (a) In the objective it gets its share K z_i and the present components share the rest
of the sum K in FAMO's proportions (without this, z_i / eps gave it all the weight and the step
trained nothing else). (b) In the logit update its delta is set to the z-weighted mean of the
present components' deltas, which makes its logit gradient exactly 0 and the others' what they
would be without it (log of eps fed Adam a delta of ~18 and inflated its second moment).
Negative losses are refused (see ``needs_nonnegative``): FAMO would ascend them.

Deviations, stated: (1) the paper re-evaluates the loss on the same batch after the step; we use
the next step's losses instead (one step delayed, no extra forward), averaged over the step's
micro-batches and globally reduced under DDP, and the weights w_i read the globally reduced L_i
too (identical on every rank); (2) the weights are scaled by K (sum K instead of
1) so a learning rate tuned for `fixed` transfers. The reported weights are the w_i of the last
batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from training.balancers.common import ValueBalancer
from training.balancers.config import FAMOConfig


class FAMOBalancer(ValueBalancer):
    strategy = "famo"
    needs_nonnegative = "it descends log L_i: a negative L_i would be ascended"

    def __init__(self, names: Sequence[str], weights: Tensor, cfg: FAMOConfig) -> None:
        super().__init__(names)
        self.eps = cfg.eps
        K = len(names)
        self.register_buffer("log_prior", torch.log(weights / weights.sum()))  # [K] log p, fixed
        self.xi = nn.Parameter(torch.zeros(K))  # [K] logits, 0 as in the paper's code
        self.opt = torch.optim.Adam([self.xi], lr=cfg.lr, weight_decay=cfg.gamma)
        self.register_buffer("acc", torch.zeros(K))  # [K] sum of this step's (reduced) losses
        self.register_buffer("prev", torch.zeros(K))  # [K] previous step's mean losses
        self.register_buffer("last_w", weights * K / weights.sum())  # [K] reported weights
        self.n_acc = 0  # micro-batches in acc (host counter)
        self.has_prev = False

    def z(self) -> Tensor:
        """[K] task shares softmax(log p + xi), differentiable in xi."""
        return torch.softmax(self.log_prior + self.xi, dim=0)

    def observe(self, values: Tensor) -> None:
        self.acc.add_(values)
        self.n_acc += 1

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        K, z = len(self.names), self.z().detach()  # [K]
        present = ref > 0  # [K] a loss of 0 has no log-loss this batch
        q = torch.where(present, z / (ref + self.eps), 0.0)  # [K]
        z_present = torch.where(present, z, 0.0).sum()
        w = torch.where(present, K * z_present * q / q.sum(), K * z)  # [K] all present: K z_i / (c (L_i + eps))
        self.last_w.copy_(w)
        total = (w * L).sum()  # same gradient as K * sum_i z_i log(L_i + eps) / c
        return total, total

    def after_optimizer_step(self) -> None:
        if self.n_acc == 0:
            return
        cur = self.acc / self.n_acc  # [K]
        if self.has_prev:
            self._update_logits(cur)
        self.prev.copy_(cur)
        self.has_prev = True
        self.acc.zero_()
        self.n_acc = 0

    def _update_logits(self, cur: Tensor) -> None:
        """One Adam step of xi along (dz/dxi)^T delta (paper, eq. 8)."""
        delta = torch.log(self.prev + self.eps) - torch.log(cur + self.eps)  # [K]
        valid = (self.prev > 0) & (cur > 0) & torch.isfinite(delta)  # [K]
        with torch.enable_grad():
            z = self.z()
            z_valid = torch.where(valid, z.detach(), 0.0)
            mean = (z_valid * torch.where(valid, delta, 0.0)).sum() / z_valid.sum()  # z-weighted, present only
            delta = torch.where(valid, delta, mean)  # no log-loss: its logit gradient is exactly 0
            (g,) = torch.autograd.grad(z, self.xi, grad_outputs=delta)
        self.xi.grad = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def weights_tensor(self) -> Tensor:
        return self.last_w

    def get_extra_state(self) -> Any:
        return {"opt": self.opt.state_dict(), "n_acc": self.n_acc, "has_prev": self.has_prev}

    def set_extra_state(self, state: Any) -> None:
        self.opt.load_state_dict(state["opt"])
        self.n_acc, self.has_prev = int(state["n_acc"]), bool(state["has_prev"])
