"""`jacobian`: Jacobian descent through TorchJD (Quinton & Rey, 2024), over the shared features.

``torchjd.autojac.mtl_backward`` backpropagates each component loss to its own head parameters
as usual and builds the Jacobian (one row per component) of the shared parameters through the
shared features ``ctx.features``; ``jac_to_grad`` then aggregates its rows with the configured
aggregator into ``.grad``. Aggregators: ``upgrad`` (default; Quinton & Rey 2024), ``dualproj``,
``pcgrad`` (Yu et al. 2020), ``mgda`` (Desideri 2012; Sener & Koltun 2018), ``imtl_g`` (Liu et
al. 2021), ``aligned_mtl`` (Senushkin et al. 2023), ``cagrad`` (Liu et al. 2021, needs cvxpy),
``nash_mtl`` (Navon et al. 2022, needs cvxpy), ``graddrop`` (Chen et al. 2020), ``gradvac`` (Wang
et al. 2021), ``config`` (Liu et al. 2024), ``fairgrad`` (Ban & Ji, "Fair Resource Allocation in
Multi-Task Learning", ICML 2024; alpha = 1, proportional fairness, the default of the paper's code
github.com/OptMN-Lab/fairgrad; needs scipy), ``random`` (random loss weighting, Lin et al.,
"Reasonable Effectiveness of Random Weighting", TMLR 2022; draws from torch's global RNG, which
checkpoints carry), ``mean``, ``sum``. No aggregator is re-implemented here. docs/balancing.md
says why TorchJD's other aggregators are not offered.

``upgrad`` and ``dualproj`` take the config weights as their preference vector (the other
aggregators take none, so unequal config weights are refused for them), so without
conflict between the components they reproduce the weighted sum of what they are given. Given the
raw losses (``normalize: none``) that is `fixed`, and a component 10^4 times smaller than another
stalls exactly as under `fixed` (seed 001). The default ``normalize: initial`` hands TorchJD
L_i / L_i(0) instead (L_i(0): the first observed loss, detached; GradNorm's loss ratio), so every
row of the Jacobian starts on the same scale and the aggregator's conflict resolution acts on
directions, not units.

The reported weights are the ones applied to the *raw* losses on the last step: the aggregator's
weight of row i divided by L_i(0) (1 / L_i(0) for aggregators that are not a weighting of the
rows, e.g. pcgrad, graddrop). L_i(0) is the first strictly positive loss (training/balancers/
common.py): a first batch without wave V no longer divides that component by 0 for the whole run.

State. ``gradvac`` keeps an EMA of cosine similarities (phi_hat) that TorchJD creates lazily, as a
CPU buffer, on the first call. Registered as a submodule, that made the state_dict's keys change
after the first step (a checkpoint could not be loaded into a fresh balancer, and the trainer's
rollback of a skipped first step failed), and ``.to(device)`` would have moved what TorchJD
computes on the CPU. So the aggregator is held outside the module tree, its state is created at
construction (the zeros the first call would create) and travels in ``extra_state``.
``nash_mtl`` keeps its state in NumPy/cvxpy objects outside torch: a resumed run restarts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from training.balancers.base import BalanceContext, BalanceOutput, Balancer
from training.balancers.common import InitialLossScale, stack_losses
from training.balancers.config import JacobianConfig

# Aggregators that take the config weights (as their preference vector); the others ignore them,
# so unequal weights are refused for them rather than dropped without a word.
PREFERENCE_AGGREGATORS = ("upgrad", "dualproj")


def build_aggregator(name: str, weights: Tensor):
    """The TorchJD aggregator called ``name``; a missing optional dependency is a ValueError."""
    from torchjd import aggregation as A

    factories = {
        "upgrad": lambda: A.UPGrad(pref_vector=weights),
        "dualproj": lambda: A.DualProj(pref_vector=weights),
        "pcgrad": A.PCGrad,
        "mgda": A.MGDA,
        "imtl_g": A.IMTLG,
        "aligned_mtl": A.AlignedMTL,
        "cagrad": lambda: A.CAGrad(c=0.5),
        "nash_mtl": lambda: A.NashMTL(n_tasks=len(weights)),
        "graddrop": A.GradDrop,
        "gradvac": A.GradVac,
        "config": A.ConFIG,
        "fairgrad": lambda: A.FairGrad(alpha=1.0),
        "random": A.Random,
        "mean": A.Mean,
        "sum": A.Sum,
    }
    if name not in factories:
        raise ValueError(f"expected jacobian.aggregator in {sorted(factories)}, found '{name}'")
    try:
        aggregator = factories[name]()
    except ImportError as exc:  # TorchJD's optional solvers (quadprog, cvxpy, ...)
        raise ValueError(f"expected the optional dependencies of jacobian.aggregator '{name}', found: {exc}") from None
    if isinstance(aggregator, A.GradVac):  # its phi_hat now, as the first call would make it (zeros, CPU)
        aggregator.gramian_weighting._ensure_state(len(weights), torch.float32)
    return aggregator


def aggregator_state(aggregator) -> dict[str, Tensor]:
    """The tensors a (stateful) TorchJD aggregator keeps, by buffer name (copies, on the CPU)."""
    return {name: b.detach().cpu().clone() for name, b in aggregator.named_buffers()}


def load_aggregator_state(aggregator, state: dict[str, Tensor]) -> None:
    """Copy ``state`` (from :func:`aggregator_state`) into the aggregator's buffers, in place."""
    own = dict(aggregator.named_buffers())
    if sorted(own) != sorted(state) or any(own[k].shape != v.shape for k, v in state.items()):
        found = {k: tuple(v.shape) for k, v in state.items()}
        expected = {k: tuple(v.shape) for k, v in own.items()}
        raise ValueError(f"expected jacobian aggregator state {expected}, found {found}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


def _refuse_ddp() -> None:
    """torchjd fills .grad outside autograd's accumulation, so DDP would average nothing and the
    ranks would drift apart: refuse rather than train silently wrong."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        raise ValueError("expected a single process for loss.balancer.strategy=jacobian, found a DDP run")


class JacobianBalancer(Balancer):
    strategy = "jacobian"  # accepts negative losses: conflicts are about directions, and L_i(0) > 0

    def __init__(self, names: Sequence[str], weights: Tensor, cfg: JacobianConfig) -> None:
        super().__init__(names)
        _refuse_ddp()  # at build time, before the run directory exists (it used to fail at step 1)
        if cfg.aggregator not in PREFERENCE_AGGREGATORS and not bool((weights == weights[0]).all()):
            raise ValueError(
                f"expected equal loss.balancer.weights for jacobian.aggregator={cfg.aggregator}, which takes no "
                f"weights (only {' and '.join(PREFERENCE_AGGREGATORS)} use them, as a preference vector), found "
                f"{dict(zip(names, weights.tolist(), strict=True))}"
            )
        # Not a submodule (see the module docstring): object.__setattr__ bypasses nn.Module's registration.
        object.__setattr__(self, "aggregator", build_aggregator(cfg.aggregator, weights.clone()))
        self.register_buffer("w", weights.clone())  # [K] weights applied to the raw losses on the last step
        self.initial = InitialLossScale(len(names), enabled=cfg.normalize == "initial")

    def combine(self, losses: dict[str, Tensor], *, update: bool = True) -> tuple[Tensor, Tensor]:
        total = (self.w * stack_losses(losses, self.names)).sum()
        return total, total

    def backward(self, losses: dict[str, Tensor], ctx: BalanceContext) -> BalanceOutput:
        from torchjd.autojac import jac_to_grad, mtl_backward

        _refuse_ddp()
        if not ctx.features:
            raise ValueError("expected BalanceContext.features (the shared representation) for jacobian, found none")
        L = stack_losses(losses, self.names)  # [K] (for the report; torchjd needs the separate scalars)
        self.initial.observe(L.detach())
        scale = self.initial.scale()  # [K] L_i(0), or 1 with normalize: none
        # retain_graph: components of one head (peak) share the graph between the features and the
        # head output, which torchjd walks once per component; the graph is freed with the losses.
        scaled = [losses[n] * (ctx.loss_scale / scale[i]) for i, n in enumerate(self.names)]
        mtl_backward(scaled, features=list(ctx.features), retain_graph=True)
        shared = [p for p in ctx.shared_params if getattr(p, "jac", None) is not None]
        if not shared:
            raise ValueError(
                "expected BalanceContext.shared_params to hold the feature extractor, found none with a .jac"
            )
        w = jac_to_grad(shared, self.aggregator)  # [K] or None
        w = torch.ones_like(self.w) if w is None else w.detach().to(self.w)  # [K] on the rows of L / L(0)
        self.w.copy_(w / scale)
        total = (self.w * L.detach()).sum()
        return BalanceOutput(total, total)

    def weights_tensor(self) -> Tensor:
        return self.w

    def get_extra_state(self) -> Any:
        return {"aggregator": aggregator_state(self.aggregator)}

    def set_extra_state(self, state: Any) -> None:
        load_aggregator_state(self.aggregator, state["aggregator"])


__all__ = ["JacobianBalancer", "build_aggregator", "torch"]
