"""Loss balancers: one file per strategy, one registry, one base class (base.py).

``build_balancer(cfg, names)`` is the only constructor the rest of the code calls; the trainer
never branches on a strategy's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from training.balancers.base import BalanceContext, BalanceOutput, Balancer, weights_dict
from training.balancers.common import ValueBalancer, init_weights
from training.balancers.config import STRATEGIES, BalancerConfig
from training.balancers.dwa import DWABalancer
from training.balancers.famo import FAMOBalancer
from training.balancers.fixed import FixedBalancer
from training.balancers.geometric_mean import GeometricMeanBalancer
from training.balancers.gradnorm import GradNormBalancer
from training.balancers.grouped import GroupedBalancer
from training.balancers.imtl_l import IMTLLBalancer
from training.balancers.inverse_loss import EMABalancer, EqualInitBalancer, EqualInitEMABalancer
from training.balancers.jacobian import JacobianBalancer
from training.balancers.scale_norm import ScaleNormBalancer
from training.balancers.stch import STCHBalancer
from training.balancers.uncertainty import UncertaintyBalancer
from training.components import COMPONENTS

# strategy name -> factory(cfg, names, initial weights [K])
REGISTRY: dict[str, Callable[[BalancerConfig, list[str], Tensor], Balancer]] = {
    "fixed": lambda cfg, names, w: FixedBalancer(names, w),
    "scale_norm": lambda cfg, names, w: ScaleNormBalancer(names, w, cfg.scale_norm),
    "gradnorm": lambda cfg, names, w: GradNormBalancer(names, w, cfg.gradnorm),
    "uncertainty": lambda cfg, names, w: UncertaintyBalancer(names, w, cfg.uncertainty),
    "dwa": lambda cfg, names, w: DWABalancer(names, w, cfg.dwa),
    "equal_init": lambda cfg, names, w: EqualInitBalancer(names, w, cfg.inverse_loss),
    "equal_init_ema": lambda cfg, names, w: EqualInitEMABalancer(names, w, cfg.inverse_loss),
    "ema": lambda cfg, names, w: EMABalancer(names, w, cfg.inverse_loss),
    "famo": lambda cfg, names, w: FAMOBalancer(names, w, cfg.famo),
    "jacobian": lambda cfg, names, w: JacobianBalancer(names, w, cfg.jacobian),
    "stch": lambda cfg, names, w: STCHBalancer(names, w, cfg.stch),
    "imtl_l": lambda cfg, names, w: IMTLLBalancer(names, w),
    "geometric_mean": lambda cfg, names, w: GeometricMeanBalancer(names, w),
}
assert set(REGISTRY) == set(STRATEGIES)  # internal invariant: the config and the registry agree


def build_balancer(cfg: BalancerConfig, names: Sequence[str] = COMPONENTS) -> Balancer:
    """The strategy ``cfg.strategy`` over the components ``names`` (grouped if configured)."""
    names = list(names)
    unknown = sorted(set(cfg.weights) - set(names))
    if unknown:
        raise ValueError(f"expected loss.balancer.weights keys among {names}, found {unknown}")
    if not cfg.grouping.enabled:
        return REGISTRY[cfg.strategy](cfg, names, init_weights(cfg.weights, names))
    return _build_grouped(cfg, names)


def _build_grouped(cfg: BalancerConfig, names: list[str]) -> GroupedBalancer:
    groups = {g: list(m) for g, m in cfg.grouping.groups.items() if m}
    flat = [n for m in groups.values() for n in m]
    if sorted(flat) != sorted(names) or len(set(flat)) != len(flat):
        raise ValueError(
            f"expected loss.balancer.grouping.groups to hold each of {names} exactly once, found {flat}"
        )
    unknown = sorted(set(cfg.grouping.inner) - set(groups))
    if unknown:
        raise ValueError(f"expected loss.balancer.grouping.inner keys among {sorted(groups)}, found {unknown}")
    # The configured component weights c_i are honoured as in the ungrouped case: group g's outer
    # weight starts at m_g = mean_{i in g} c_i and its members' inner weights at c_i / m_g, so the
    # effective weight m_g * c_i / m_g starts at c_i (uniform weights: 1 and 1, as before).
    c = {g: init_weights(cfg.weights, members) for g, members in groups.items()}  # g -> [K_g]
    m = {g: c_g.mean() for g, c_g in c.items()}
    inner = {}
    for g, members in groups.items():
        strategy = cfg.grouping.inner.get(g, "fixed")
        if strategy not in REGISTRY:
            raise ValueError(f"expected loss.balancer.grouping.inner.{g} in {sorted(REGISTRY)}, found '{strategy}'")
        b = REGISTRY[strategy](cfg, members, c[g] / m[g])
        if not isinstance(b, ValueBalancer):
            raise ValueError(
                f"expected a loss-value strategy for loss.balancer.grouping.inner.{g}, found '{strategy}' "
                "(gradient-based strategies can only be the outer one)"
            )
        inner[g] = b
    outer = REGISTRY[cfg.strategy](cfg, list(groups), torch.stack([m[g] for g in groups]))
    return GroupedBalancer(outer, inner, groups)


__all__ = [
    "REGISTRY",
    "BalanceContext",
    "BalanceOutput",
    "Balancer",
    "BalancerConfig",
    "build_balancer",
    "weights_dict",
]
