"""`gradnorm`: GradNorm (Chen et al., ICML 2018), weights that equalize training rates.

With G_W^(i) = ||grad_W (w_i L_i)|| = w_i ||grad_W L_i|| on the shared layer W, the inverse
training rate r_i = L~_i / mean_j L~_j (L~_i = L_i(t) / L_i(0)) and G_bar = mean_i G_W^(i):

    L_grad = sum_i | G_W^(i) - sg(G_bar * r_i^alpha) |                       (paper, eq. 2)
    dL_grad/dw_i = sign(G_W^(i) - G_bar r_i^alpha) * ||grad_W L_i||           (target held constant)

The weights take their own Adam step on L_grad after every optimizer step, are clamped positive
and renormalized to sum to K (the number of tasks). The network is trained on sum_i w_i L_i.

W is ``ctx.last_shared_params`` (the paper's choice: cheap, one layer) or, with ``layer: all``,
``ctx.shared_params``. Cost: one extra autograd pass per component, restricted to W.

L_i(0) is the first strictly positive loss (training/balancers/common.py). A component whose loss
is 0 in a step (a batch without wave V: no target, no gradient) carries no training rate: it takes
no part in that step (weight gradient 0, left out of the means of r and G).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from training.balancers.base import BalanceContext, BalanceOutput, Balancer
from training.balancers.common import InitialLossScale, stack_losses
from training.balancers.config import GradNormConfig


def gradnorm_weight_grad(w: Tensor, grad_norms: Tensor, loss_ratios: Tensor, alpha: float,
                         present: Tensor | None = None) -> Tensor:
    """dL_grad/dw [K] from the weights w [K], ||grad_W L_i|| [K] and L_i(t)/L_i(0) [K]; components
    not ``present`` [K] bool (default: all) get 0 and are left out of the means."""
    present = torch.ones_like(w, dtype=torch.bool) if present is None else present
    n = present.sum().clamp_min(1)
    G = w * grad_norms  # [K] G_W^(i)
    r = loss_ratios / (torch.where(present, loss_ratios, 0.0).sum() / n)  # [K] inverse training rates
    target = (torch.where(present, G, 0.0).sum() / n) * r.pow(alpha)  # [K] G_bar r_i^alpha, a constant
    return torch.where(present, torch.sign(G - target) * grad_norms, 0.0)


class GradNormBalancer(Balancer):
    strategy = "gradnorm"
    needs_nonnegative = "its loss ratios L_i / L_i(0) are raised to the power alpha"

    def __init__(self, names: Sequence[str], weights: Tensor, cfg: GradNormConfig) -> None:
        super().__init__(names)
        self.cfg = cfg
        self.min_weight = cfg.min_weight  # weights are clamped to at least this (then renormalized)
        K = len(names)
        self.w = nn.Parameter(weights * K / weights.sum())  # [K], sum K; its own optimizer, not the model's
        self.initial = InitialLossScale(K, enabled=True)  # L_i(0): the loss ratios' denominators
        self.register_buffer("grad_acc", torch.zeros(K))  # [K] dL_grad/dw summed over micro-batches
        self.opt = torch.optim.Adam([self.w], lr=cfg.lr)

    def combine(self, losses: dict[str, Tensor], *, update: bool = True) -> tuple[Tensor, Tensor]:
        total = (self.w.detach() * stack_losses(losses, self.names)).sum()
        return total, total

    def _shared(self, ctx: BalanceContext) -> list[Tensor]:
        params = ctx.last_shared_params if self.cfg.layer == "last" else ctx.shared_params
        params = [p for p in params if p.requires_grad]
        if not params:
            key = "last_shared_params" if self.cfg.layer == "last" else "shared_params"
            raise ValueError(f"expected BalanceContext.{key} for gradnorm (layer: {self.cfg.layer}), found none")
        return params

    def backward(self, losses: dict[str, Tensor], ctx: BalanceContext) -> BalanceOutput:
        L = stack_losses(losses, self.names)  # [K]
        values = ctx.reduce_mean(L.detach())
        self.initial.observe(values)

        # 1. ||grad_W L_i|| for each task, on W only (no graph kept: the target is a constant).
        W = self._shared(ctx)
        norms = []
        for L_i in L:
            grads = torch.autograd.grad(L_i, W, retain_graph=True, allow_unused=True)
            sq = [g.pow(2).sum() for g in grads if g is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else L_i.new_zeros(()))
        grad_norms = ctx.reduce_mean(torch.stack(norms))  # [K]

        # 2. accumulate dL_grad/dw (stepped in after_optimizer_step, once per optimizer step).
        ratios = values / self.initial.scale()
        present = torch.isfinite(values) & (values > 0)  # [K] a loss of 0 has no training rate
        g = gradnorm_weight_grad(self.w.detach(), grad_norms, ratios, self.cfg.alpha, present)
        self.grad_acc.add_(g * ctx.loss_scale)

        # 3. the network's gradient: sum_i w_i L_i.
        total = (self.w.detach() * L).sum()
        (total * ctx.loss_scale).backward()
        return BalanceOutput(total.detach(), total.detach())

    def after_optimizer_step(self) -> None:
        acc = self.grad_acc
        self.w.grad = torch.where(torch.isfinite(acc), acc, torch.zeros_like(acc))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            w = self.w.clamp_min(self.cfg.min_weight)
            self.w.copy_(w * len(self.names) / w.sum())  # renormalize: sum_i w_i = K
        acc.zero_()

    def weights_tensor(self) -> Tensor:
        return self.w.detach()

    def get_extra_state(self) -> Any:
        return {"opt": self.opt.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        self.opt.load_state_dict(state["opt"])
