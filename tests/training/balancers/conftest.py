"""Shared toy for the balancer tests: a tiny shared trunk with one linear head per component.

Everything about a component (head init, target, loss scale) is seeded from its *name*, so
building the balancer and the model with the names in another order is the same problem.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from training.balancers import BalanceContext, Balancer, BalancerConfig, build_balancer
from training.balancers.jacobian import PREFERENCE_AGGREGATORS

ALL_STRATEGIES = (
    "fixed", "scale_norm", "gradnorm", "uncertainty", "dwa", "equal_init", "equal_init_ema", "ema", "famo", "jacobian",
    "stch", "imtl_l", "geometric_mean",
)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


class Toy(nn.Module):
    """x [B,4] -> features [B,3] (shared) -> one scalar prediction per component."""

    def __init__(self, names: Sequence[str], scales: dict[str, float]) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.trunk = nn.Linear(4, 3)
        with torch.no_grad():
            self.trunk.weight.copy_(torch.randn(3, 4, generator=g) * 0.5)
            self.trunk.bias.zero_()
        self.heads = nn.ParameterDict()
        self.targets: dict[str, Tensor] = {}
        self.scales = scales
        self.x = torch.randn(16, 4, generator=g)
        for n in sorted(names):  # creation order independent of the order given
            gn = torch.Generator().manual_seed(_seed(n))
            self.heads[n] = nn.Parameter(torch.randn(3, generator=gn))
            self.targets[n] = torch.randn(16, generator=gn)
        self.names = list(names)

    def losses(self) -> tuple[dict[str, Tensor], Tensor]:
        f = torch.tanh(self.trunk(self.x))  # [B,3]
        out = {n: self.scales.get(n, 1.0) * ((f @ self.heads[n]) - self.targets[n]).pow(2).mean() for n in self.names}
        return out, f


def make_cfg(strategy: str, names: Sequence[str], **blocks: dict) -> BalancerConfig:
    cfg = BalancerConfig(strategy=strategy, weights={n: 1.0 + 0.25 * i for i, n in enumerate(sorted(names))})
    for block, values in blocks.items():
        for k, v in values.items():
            setattr(getattr(cfg, block), k, v)
    if strategy == "jacobian" and cfg.jacobian.aggregator not in PREFERENCE_AGGREGATORS:
        cfg.weights = dict.fromkeys(names, 1.0)  # it takes no weights: unequal ones are refused
    return cfg


class Run:
    """A balancer driven on the toy: ``steps(n)`` optimizer steps, an epoch end every ``per_epoch``.

    ``zeros`` maps a step index (0-based, counted over the whole run) to the components whose loss
    is exactly 0 in that step, value and gradient, as masked Huber gives for a batch without wave V.
    """

    def __init__(self, cfg: BalancerConfig, names: Sequence[str], scales: dict[str, float] | None = None,
                 per_epoch: int = 3, lr: float = 1e-3, zeros: dict[int, Sequence[str]] | None = None) -> None:
        torch.manual_seed(0)
        self.model = Toy(names, scales or {})
        self.balancer: Balancer = build_balancer(cfg, names)
        self.lr, self.per_epoch = lr, per_epoch
        self.epoch, self.sums, self.n = 1, {n: 0.0 for n in names}, 0
        self.t, self.zeros = 0, dict(zeros or {})

    def params(self) -> list[nn.Parameter]:
        return [*self.model.parameters(), *self.balancer.trainable_parameters()]

    def steps(self, count: int) -> None:
        opt = torch.optim.SGD(self.params(), lr=self.lr)  # stateless: a copy continues identically
        for _ in range(count):
            losses, f = self.model.losses()
            losses = {k: v * 0.0 if k in self.zeros.get(self.t, ()) else v for k, v in losses.items()}
            self.t += 1
            ctx = BalanceContext(shared_params=list(self.model.trunk.parameters()),
                                 last_shared_params=list(self.model.trunk.parameters()), features=[f])
            self.balancer.backward(losses, ctx)
            opt.step()
            self.balancer.after_optimizer_step()
            opt.zero_grad(set_to_none=True)
            for k, v in losses.items():
                self.sums[k] += float(v.detach())
            self.n += 1
            if self.n == self.per_epoch:
                self.balancer.on_epoch_end(self.epoch, {k: v / self.n for k, v in self.sums.items()})
                self.epoch, self.sums, self.n = self.epoch + 1, dict.fromkeys(self.sums, 0.0), 0

    def weights(self) -> dict[str, float]:
        from training.balancers import weights_dict

        return weights_dict(self.balancer)


@pytest.fixture
def toy_run():
    return Run


@pytest.fixture
def toy_cfg():
    return make_cfg


@pytest.fixture
def all_strategies():
    return ALL_STRATEGIES


@pytest.fixture(autouse=True)
def one_thread():
    """The toys are tiny: threads only add overhead on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
