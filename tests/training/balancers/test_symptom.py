"""Seed 001's symptom, reproduced and cured: one loss 10^4 times larger than the other.

Toy: shared MLP trunk, two zero-initialized linear heads, plain SGD with global gradient-norm
clipping (as the trainer clips). L_big = 10^4 * MSE (think: a loss summed over 10^4 elements, or
in units 100x larger), L_small = MSE with the same kind of target. Under `fixed`, clipping divides
every gradient by the big one's norm: the small task's share is ~10^-4 and it stalls (< 1 %
change). A strategy that balances scales makes both improve.

Every adaptive strategy is run with its defaults. Two of them balance something other than size
and cure the stall only through their default `normalize: initial` (losses divided by their first
value); their raw forms are checked too and, as expected, leave the stall in place: `dwa` with the
paper's raw losses (rates: its weights stay within exp(1/T) of each other) and `jacobian`/UPGrad
on raw losses (conflicts: without conflicting gradients it *is* the weighted sum).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.balancers import BalanceContext, BalancerConfig, build_balancer

STALL, IMPROVE = 0.01, 0.05

CASES = [  # (case id, strategy, config blocks, expected outcome)
    ("fixed", "fixed", {}, "small_stalls"),
    ("scale_norm", "scale_norm", {}, "both_improve"),
    ("scale_norm-batch", "scale_norm", {"scale_norm": {"statistic": "batch"}}, "both_improve"),
    ("gradnorm", "gradnorm", {}, "both_improve"),
    ("uncertainty-log", "uncertainty", {}, "both_improve"),
    ("uncertainty-log1p", "uncertainty", {"uncertainty": {"regularizer": "log1p"}}, "both_improve"),
    ("dwa", "dwa", {}, "both_improve"),
    ("dwa-paper_raw_losses", "dwa", {"dwa": {"normalize": "none"}}, "small_stalls"),
    ("equal_init", "equal_init", {}, "both_improve"),
    ("equal_init_ema", "equal_init_ema", {}, "both_improve"),
    ("ema", "ema", {"inverse_loss": {"ema_alpha": 0.5}}, "both_improve"),
    ("famo", "famo", {}, "both_improve"),
    ("jacobian-upgrad", "jacobian", {}, "both_improve"),
    ("jacobian-upgrad-autojac", "jacobian", {"jacobian": {"engine": "autojac"}}, "both_improve"),
    ("jacobian-upgrad-raw_losses", "jacobian", {"jacobian": {"normalize": "none"}}, "small_stalls"),
    ("stch", "stch", {}, "both_improve"),
    ("stch-raw_losses", "stch", {"stch": {"inputs": "raw"}}, "small_stalls"),
    ("imtl_l", "imtl_l", {}, "both_improve"),
    ("geometric_mean", "geometric_mean", {}, "both_improve"),
]


def train_toy(strategy: str, blocks: dict, steps: int = 200, per_epoch: int = 10) -> tuple[float, float]:
    """Relative decrease (1 - L_end / L_start) of the big and the small loss."""
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y_big = torch.sin(x[:, :4].sum(1)) + 0.3 * torch.randn(256)  # noisy: its gradient never vanishes
    y_small = torch.cos(x[:, 4:].sum(1))
    trunk = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
    heads = nn.ModuleList([nn.Linear(32, 1), nn.Linear(32, 1)])
    for h in heads:
        nn.init.zeros_(h.weight)
        nn.init.zeros_(h.bias)
    cfg = BalancerConfig(strategy=strategy, weights={"big": 1.0, "small": 1.0})
    for block, values in blocks.items():
        for k, v in values.items():
            setattr(getattr(cfg, block), k, v)
    balancer = build_balancer(cfg, ["big", "small"])
    params = [*trunk.parameters(), *heads.parameters(), *balancer.trainable_parameters()]
    opt = torch.optim.SGD(params, lr=0.05)

    def losses():
        f = trunk(x)  # [B,32]
        big = 1e4 * (heads[0](f).squeeze(1) - y_big).pow(2).mean()
        small = (heads[1](f).squeeze(1) - y_small).pow(2).mean()
        return {"big": big, "small": small}, f

    with torch.no_grad():
        start = {k: float(v) for k, v in losses()[0].items()}
    sums, n, epoch = torch.zeros(2), 0, 1
    for _ in range(steps):
        L, f = losses()
        ctx = BalanceContext(shared_params=list(trunk.parameters()), last_shared_params=list(trunk[2].parameters()),
                             features=[f])
        balancer.backward(L, ctx)
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        balancer.after_optimizer_step()
        opt.zero_grad(set_to_none=True)
        sums += torch.stack([L["big"].detach(), L["small"].detach()])
        n += 1
        if n == per_epoch:
            balancer.on_epoch_end(epoch, {"big": float(sums[0] / n), "small": float(sums[1] / n)})
            sums, n, epoch = torch.zeros(2), 0, epoch + 1
    with torch.no_grad():
        end = {k: float(v) for k, v in losses()[0].items()}
    return 1 - end["big"] / start["big"], 1 - end["small"] / start["small"]


@pytest.mark.parametrize(("strategy", "blocks", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_loss_scale_gap(strategy, blocks, expected):
    big, small = train_toy(strategy, blocks)
    result = f"big improved {big:+.1%}, small improved {small:+.1%}"
    if expected == "small_stalls":
        assert big > IMPROVE and abs(small) < STALL, result
    else:
        assert big > IMPROVE and small > IMPROVE, result
