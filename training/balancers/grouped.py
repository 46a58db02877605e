"""Grouping: an inner strategy per head group, an outer strategy over the groups.

Components answered by one head (``peak``: peak_exist, peak_latency, peak_amplitude) form a group
whose inner strategy turns them into one group loss G_g; the outer strategy balances the groups:

    objective = outer({g: G_g}),     G_g = inner_g({i in g: L_i})

The effective weight of component i in group g is w_g (outer) * w_gi (inner); weights are reported
per head as ``head_g_weight_j``. Inner strategies must be loss-value strategies (a gradient-based
inner strategy would need its own backward); any strategy can be the outer one. The reported
weights are products, so no single clamp bounds them: ``min_weight``/``max_weight`` stay None.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.balancers.base import BalanceContext, BalanceOutput, Balancer
from training.balancers.common import ValueBalancer, stack_losses


class GroupedBalancer(Balancer):
    def __init__(self, outer: Balancer, inner: dict[str, ValueBalancer], groups: dict[str, Sequence[str]]) -> None:
        super().__init__([n for members in groups.values() for n in members])
        self.groups = {g: list(m) for g, m in groups.items()}
        self.outer = outer
        self.inner = nn.ModuleDict(inner)

    @property
    def can_be_negative(self) -> bool:  # type: ignore[override]
        return self.outer.can_be_negative or any(b.can_be_negative for b in self.inner.values())

    @property
    def strategy(self) -> str:  # type: ignore[override]
        return self.outer.strategy

    @property
    def needs_nonnegative(self) -> str:  # type: ignore[override]
        if self.outer.needs_nonnegative:
            return self.outer.needs_nonnegative
        for g, b in self.inner.items():
            if b.needs_nonnegative:
                return f"inside group '{g}', {b.strategy}: {b.needs_nonnegative}"
        return ""

    def _group_losses(self, losses: dict[str, Tensor], update: bool, reduce=None) -> tuple[dict, dict]:
        G, weighted = {}, {}
        for g, members in self.groups.items():
            inner = self.inner[g]
            L = stack_losses(losses, members)  # [K_g]
            ref = reduce(L.detach()) if reduce is not None else L.detach()  # [K_g] the same on every rank
            if update:
                inner.observe(ref)
            G[g], weighted[g] = inner.objective(L, ref)
        return G, weighted

    def _weighted(self, inner_weighted: dict[str, Tensor]) -> Tensor:
        w_outer = self.outer.weights_tensor()  # [G]
        return (w_outer * torch.stack([inner_weighted[g].detach() for g in self.groups])).sum()

    def combine(self, losses: dict[str, Tensor], *, update: bool = True) -> tuple[Tensor, Tensor]:
        G, inner_weighted = self._group_losses(losses, update)
        objective, _ = self.outer.combine(G, update=update)
        return objective, self._weighted(inner_weighted)

    def backward(self, losses: dict[str, Tensor], ctx: BalanceContext) -> BalanceOutput:
        G, inner_weighted = self._group_losses(losses, True, ctx.reduce_mean)
        out = self.outer.backward(G, ctx)
        return BalanceOutput(out.objective, self._weighted(inner_weighted))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.outer.trainable_parameters(), *(p for b in self.inner.values() for p in b.trainable_parameters())]

    def after_optimizer_step(self) -> None:
        for b in self.inner.values():
            b.after_optimizer_step()
        self.outer.after_optimizer_step()

    def on_epoch_end(self, epoch: int, train_means: dict[str, float]) -> None:
        group_means = {}
        for g, members in self.groups.items():
            L = torch.tensor([float(train_means[n]) for n in members])
            with torch.no_grad():
                L = L.to(self.inner[g].weights_tensor())
                group_means[g] = float(self.inner[g].objective(L, L)[0])
            self.inner[g].on_epoch_end(epoch, {n: train_means[n] for n in members})
        self.outer.on_epoch_end(epoch, group_means)

    def weights_tensor(self) -> Tensor:
        w_outer = self.outer.weights_tensor()  # [G]
        return torch.cat([w_outer[i] * self.inner[g].weights_tensor() for i, g in enumerate(self.groups)])

    def get_loss_weights(self) -> list[list[float]]:
        flat = self.weights_tensor().detach().cpu().tolist()
        out, i = [], 0
        for members in self.groups.values():
            out.append(flat[i : i + len(members)])
            i += len(members)
        return out

    def weight_names(self) -> list[list[str]]:
        return [list(m) for m in self.groups.values()]
