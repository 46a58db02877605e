"""`jacobian`: Jacobian descent through TorchJD (Quinton & Rey, 2024), over the shared features.

The step: each head's parameters get the gradient of their own component loss(es), unweighted; the
shared parameters get the configured aggregation of the Jacobian J [K, P] (one row per component,
P shared parameters, reached through the shared features ``ctx.features``). Two engines compute it
(``jacobian.engine``); both give the same ``.grad`` and the same weights. A third, ``features``, takes
the weights from a cheaper surrogate of J's Gramian (other weights, the same kind of step):

- ``autojac``: ``torchjd.autojac.mtl_backward`` backpropagates each component loss to its head
  parameters and builds J's rows in the shared parameters' ``.jac``; ``jac_to_grad`` aggregates them
  into ``.grad``. Works for every aggregator.
- ``gramian``: for aggregators whose weights are a function of the Gramian G = J J^T [K, K] alone
  (TorchJD's ``GramianWeightedAggregator``: upgrad, dualproj, pcgrad, mgda, imtl_g, aligned_mtl,
  cagrad, gradvac, fairgrad), the weights come
  from G through the aggregator's own weighting (``aggregator.gramian_weighting``, the same object,
  so gradvac's state is shared), then ONE ordinary backward of sum_i L_i writes ``.grad``, with the
  cotangent entering the trunk at the features re-weighted to sum_i w_i dL_i/dfeatures. ``mean``,
  ``sum`` and ``random`` read only the number of rows: they skip J altogether (about a `fixed` step).
  TorchJD's ``autogram.Engine`` (the Gramian without J) does not fit here: it hooks modules before
  the forward, and ABRNet holds a direct parameter (``pos``) beside its children, so the shared
  parameters are no set of modules; and with losses that are batch means (no per-instance vector)
  it backpropagates K cotangents as well. G comes from one batched vector-Jacobian product instead.
- ``features``: the Gramian at the shared FEATURES Z instead of the shared parameters,
  G_ij = <dL_i/dZ, dL_j/dZ> (summed over the feature tensors), MGDA-UB (Sener & Koltun, "Multi-Task
  Learning as Multi-Objective Optimization", NeurIPS 2018, sec. 3.3): J = (dL/dZ)(dZ/dtheta), so
  ||w^T J|| <= ||dZ/dtheta|| ||w^T dL/dZ||, and MGDA's min-norm over the bound needs no pass through
  the trunk. Its rows are the cotangents the ``gramian`` engine computes anyway (through the heads
  only); the same weighting object turns G into weights and the same final backward applies them
  (heads: their own gradients; trunk: w^T J through the features). Served aggregators and refusals
  as ``gramian``. About a ``fixed`` step, but a surrogate: the weights are not those of J's Gramian
  (equal only where the trunk is the identity), and for aggregators other than ``mgda`` the paper's
  bound says nothing (they are handed the features' Gramian as if it were J's). What it cannot see:
  a conflict between components that reach Z on different rows. In this pipeline ``ctx.features``
  holds [h, z] of one forward over 2B rows, the noisy x_t for ``signal`` (rows :B) and the clean x0
  for the heads (rows B:, ``loss.head_input: clean``, the default; with ``noisy`` they share rows).
  The signal loss's feature gradient is zero on the heads' rows (and on z), the heads' zero on the
  signal's rows, so G[signal, head] = 0 always (measured: exactly 0 on the quickstart network).
  Conflicts between the heads are resolved; signal-against-heads conflicts, which arise only in the
  trunk's parameters, are not seen at this level (the signal is weighted as if orthogonal to the heads).
- ``auto`` (default): ``gramian`` where it applies, ``autojac`` otherwise (graddrop, config and
  nash_mtl aggregate J's rows themselves). Never ``features``.
``update_every`` N (default 1): the weights are computed on every N-th step only (on any engine), and the
steps in between apply the last ones through the same final backward (heads: their own gradients;
trunk: w^T J through the features), with no Jacobian or Gramian: about a ``fixed`` step, so the cost per
step falls to about (N - 1 + c) / N of a ``fixed`` step, c the cost of an update step (~4-5 here). The
official code of Nash-MTL (Navon et al. 2022, ``update_weights_every``) skips the per-task gradients the
same way. Between updates the step is the last weighting applied to the current Jacobian, not the
aggregation of the current Jacobian: for ``upgrad``, a direction that may conflict with a component
whose gradient has turned since the update.
The heads' gradients are unweighted on both: weighting the losses themselves (sum_i w_i L_i, as
TorchJD's autogram examples do) would scale each head's gradient by its weight too.

Cost (docs/balancing.md, "Cost"): ``gramian`` and ``autojac`` pay K backward passes through the shared
trunk (J's rows, or the cotangents G needs), which is what makes the strategy several times a `fixed`
step; ``features`` pays K backward passes through the heads only.

Aggregators: ``upgrad`` (default; Quinton & Rey 2024), ``dualproj``,
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
rows: graddrop, config). L_i(0) is the first strictly positive loss (training/balancers/
common.py): a first batch without wave V no longer divides that component by 0 for the whole run.

State. ``gradvac`` keeps an EMA of cosine similarities (phi_hat) that TorchJD creates lazily, as a
CPU buffer, on the first call. Registered as a submodule, that made the state_dict's keys change
after the first step (a checkpoint could not be loaded into a fresh balancer, and the trainer's
rollback of a skipped first step failed), and ``.to(device)`` would have moved what TorchJD
computes on the CPU. So the aggregator is held outside the module tree, its state is created at
construction (the zeros the first call would create) and travels in ``extra_state``.
``nash_mtl`` keeps its state in NumPy attributes and a cvxpy problem outside torch: the attributes travel in
``extra_state`` as tensors and the problem is rebuilt from them, so a resumed run solves from the same alpha.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.profiler import record_function  # phases for bench/balancers.py --profile

from training.balancers.base import BalanceContext, BalanceOutput, Balancer
from training.balancers.common import InitialLossScale, stack_losses
from training.balancers.config import JacobianConfig


@contextmanager
def quiet_batching_fallback() -> Iterator[None]:
    """torch has no batching rule for the CPU attention backward and warns on every run that it loops over
    the K rows instead (TorchJD's batched vector-Jacobian products and ours): that loop is the cost
    docs/balancing.md measures, and there is nothing for the user to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented "
                                "the batching rule")
        yield


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
    if name == "nash_mtl":  # TorchJD's problem is not DPP: cvxpy warns on every solve that it cannot cache it
        warnings.filterwarnings("ignore", message="You are solving a parameterized problem that is not DPP")
    if isinstance(aggregator, A.GradVac):  # its phi_hat now, as the first call would make it (zeros, CPU)
        aggregator.gramian_weighting._ensure_state(len(weights), torch.float32)
    return aggregator


# The engines that take the aggregator's weights from a Gramian (its weighting object) and do one ordinary backward.
GRAMIAN_ENGINES = ("gramian", "features")

# Aggregators that are no weighting of the Jacobian's rows (TorchJD returns no weights): autojac only, and no
# weights to apply between updates.
ROW_AGGREGATORS = ("graddrop", "config")

# Aggregators whose TorchJD weighting reads only the number of rows of the Jacobian (and its dtype):
# the Gramian engine hands them an empty [K, 0] matrix and skips the Jacobian altogether.
ROW_COUNT_AGGREGATORS = ("mean", "sum", "random")


def gramian_weighting(name: str, aggregator) -> tuple[Any, bool] | None:
    """(weighting, reads_gramian) giving the weights of ``aggregator`` without its Jacobian, or None
    where its aggregation needs the Jacobian's rows (graddrop, config, nash_mtl)."""
    from torchjd.aggregation import GramianWeightedAggregator

    if isinstance(aggregator, GramianWeightedAggregator):
        return aggregator.gramian_weighting, True
    if name in ROW_COUNT_AGGREGATORS:
        return aggregator.weighting, False
    return None


# Nash-MTL's state lives in NumPy attributes of its weighting (beside a cvxpy problem built from them on the first
# call): the step count, the last solution alpha and the Gramian's norm, which seeds the next solve. They travel as
# tensors under these keys, so that a checkpoint loads with weights_only=True and a resume solves from the same alpha.
NASH_STATE = ("step", "prvs_alpha", "normalization_factor")


def _nash_weighting(aggregator):
    """The Nash-MTL weighting of ``aggregator``, or None for any other aggregator."""
    from torchjd.aggregation import NashMTL

    return aggregator.weighting if isinstance(aggregator, NashMTL) else None


def aggregator_state(aggregator) -> dict[str, Tensor]:
    """The tensors a (stateful) TorchJD aggregator keeps, by buffer name (copies, on the CPU); Nash-MTL's
    NumPy state as float64 tensors under ``nash_mtl.<attribute>``."""
    state = {name: b.detach().cpu().clone() for name, b in aggregator.named_buffers()}
    nash = _nash_weighting(aggregator)
    if nash is not None:
        state |= {f"nash_mtl.{k}": torch.as_tensor(np.asarray(getattr(nash, k), dtype=np.float64)) for k in NASH_STATE}
    return state


def load_aggregator_state(aggregator, state: dict[str, Tensor]) -> None:
    """Copy ``state`` (from :func:`aggregator_state`) into the aggregator's buffers, in place; Nash-MTL's
    attributes set from theirs and its problem rebuilt when it had solved before (its first call builds it
    otherwise). A checkpoint from before Nash-MTL's state was saved restarts it, as it did then."""
    state = dict(state)
    nash = _nash_weighting(aggregator)
    saved = {k: state.pop(f"nash_mtl.{k}") for k in NASH_STATE if f"nash_mtl.{k}" in state}
    if nash is not None and saved:
        nash.step = float(saved["step"])
        nash.prvs_alpha = saved["prvs_alpha"].numpy()  # float64, as cvxpy leaves it (the first ones: equal values)
        nash.normalization_factor = saved["normalization_factor"].numpy().reshape(1)
        if nash.step > 0:
            nash._init_optim_problem()
    own = dict(aggregator.named_buffers())
    if sorted(own) != sorted(state) or any(own[k].shape != v.shape for k, v in state.items()):
        found = {k: tuple(v.shape) for k, v in state.items()}
        expected = {k: tuple(v.shape) for k, v in own.items()}
        raise ValueError(f"expected jacobian aggregator state {expected}, found {found}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


def _refuse_ddp() -> None:
    """``autojac``: torchjd fills .grad outside autograd's accumulation, so DDP would average nothing
    and the ranks would drift apart. ``gramian``, ``features``: DDP would average the ordinary backward,
    but each rank's weights would come from its own Gramian (not that of the global Jacobian) and differ
    between ranks. Refuse rather than train silently wrong."""
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
        weighting = gramian_weighting(cfg.aggregator, self.aggregator)
        if cfg.engine in GRAMIAN_ENGINES and weighting is None:
            raise ValueError(f"expected jacobian.engine auto or autojac for jacobian.aggregator={cfg.aggregator}, "
                             f"whose aggregation reads the Jacobian's rows, not only their Gramian, found {cfg.engine}")
        # the engine that runs: auto resolved to gramian where the aggregator allows (plain attributes, as the
        # aggregator); weighting: (weighting, reads_gramian) on gramian and features, None on autojac
        self.engine = cfg.engine if cfg.engine != "auto" else "autojac" if weighting is None else "gramian"
        object.__setattr__(self, "weighting", None if self.engine == "autojac" else weighting)
        self.register_buffer("w", weights.clone())  # [K] weights applied to the raw losses on the last step
        self.initial = InitialLossScale(len(names), enabled=cfg.normalize == "initial")
        if cfg.update_every > 1 and cfg.aggregator in ROW_AGGREGATORS:
            raise ValueError(f"expected jacobian.update_every 1 for jacobian.aggregator={cfg.aggregator}, which is no "
                             f"weighting of the rows (nothing to apply in between), found {cfg.update_every}")
        # update_every: the step count and the last row weights [K] (on L_i / L_i(0)) travel in extra_state, so a
        # resumed run updates on the same steps with the same weights in between
        self.update_every, self.calls = cfg.update_every, 0
        self.row_w = torch.ones(len(names))

    def combine(self, losses: dict[str, Tensor], *, update: bool = True) -> tuple[Tensor, Tensor]:
        total = (self.w * stack_losses(losses, self.names)).sum()
        return total, total

    def backward(self, losses: dict[str, Tensor], ctx: BalanceContext) -> BalanceOutput:
        _refuse_ddp()
        if not ctx.features:
            raise ValueError("expected BalanceContext.features (the shared representation) for jacobian, found none")
        L = stack_losses(losses, self.names)  # [K] (for the report; torchjd needs the separate scalars)
        self.initial.observe(L.detach())
        scale = self.initial.scale()  # [K] L_i(0), or 1 with normalize: none
        scaled = [losses[n] * (ctx.loss_scale / scale[i]) for i, n in enumerate(self.names)]
        if self.calls % self.update_every:  # between updates: the last weights, one ordinary backward
            w = self._apply_last_weights(scaled, ctx, self.row_w)
        else:
            w = self._autojac(scaled, ctx) if self.engine == "autojac" else self._gramian(scaled, ctx)
        self.calls += 1
        w = torch.ones_like(self.w) if w is None else w.detach().to(self.w)  # [K] on the rows of L / L(0)
        self.row_w = w  # on its device: no host copy per step (extra_state copies it to the CPU)
        self.w.copy_(w / scale)
        total = (self.w * L.detach()).sum()
        return BalanceOutput(total, total)

    def _autojac(self, scaled: list[Tensor], ctx: BalanceContext) -> Tensor | None:
        """TorchJD's autojac: J in the shared parameters' .jac, aggregated into .grad. The weights [K], or
        None for an aggregator that is no weighting of the rows (graddrop, config)."""
        from torchjd.autojac import jac_to_grad, mtl_backward

        # retain_graph: components of one head (peak) share the graph between the features and the
        # head output, which torchjd walks once per component; the graph is freed with the losses.
        with record_function("jacobian.mtl_backward"), quiet_batching_fallback():
            mtl_backward(scaled, features=list(ctx.features), retain_graph=True)
        shared = [p for p in ctx.shared_params if getattr(p, "jac", None) is not None]
        if not shared:
            raise ValueError(
                "expected BalanceContext.shared_params to hold the feature extractor, found none with a .jac"
            )
        with record_function("jacobian.jac_to_grad"):
            return jac_to_grad(shared, self.aggregator)  # [K] or None

    def _gramian(self, scaled: list[Tensor], ctx: BalanceContext) -> Tensor:
        """The weights [K] from a Gramian, then one ordinary backward; on ``gramian`` the Gramian of J over the
        shared parameters (the same .grad as :meth:`_autojac`), on ``features`` that of the gradients at the
        shared features (MGDA-UB's bound: other weights, the same kind of step)."""
        weighting, reads_gramian = self.weighting
        features, shared = self._shared(ctx)
        K = len(scaled)
        cot = _cotangents(scaled, features)  # 1. (through the heads only)
        if not reads_gramian:
            # [K] mean, sum, random: the row count is all they read (and the dtype: random draws in J's dtype)
            w = weighting(torch.empty(K, 0, dtype=shared[0].dtype))
        else:
            if self.engine == "features":
                # 2'. G_ij = <dL_i/dZ, dL_j/dZ> over every shared feature tensor Z: the cotangents of step 1 are
                #     the rows, no pass through the trunk (at least float32: the features may be bf16 under autocast)
                J = [c.to(torch.promote_types(c.dtype, torch.float32)) for c in cot]
            else:
                # 2. J's rows per shared parameter [K, *p.shape]: one vector-Jacobian product from the features,
                #    batched over the K cotangents (this is the cost: K backward passes through the trunk), and
                #    G = J J^T [K, K] summed parameter by parameter (J is never concatenated).
                with record_function("jacobian.vjp"), quiet_batching_fallback():
                    J = torch.autograd.grad(features, shared, grad_outputs=cot, is_grads_batched=True,
                                            retain_graph=True, allow_unused=True, materialize_grads=True)
            with record_function("jacobian.weights"):
                G = sum(j.flatten(1) @ j.flatten(1).T for j in J)
                w = weighting(G)  # [K]
        _weighted_backward(scaled, features, cot, w)  # 3.
        return w

    def _apply_last_weights(self, scaled: list[Tensor], ctx: BalanceContext, w: Tensor) -> Tensor:
        """A step between updates (``update_every``): the given row weights [K], no Jacobian and no Gramian; the
        heads get their own gradients and the trunk w^T J, as on an update step with these weights."""
        features, _ = self._shared(ctx)
        _weighted_backward(scaled, features, _cotangents(scaled, features), w)
        return w

    @staticmethod
    def _shared(ctx: BalanceContext) -> tuple[list[Tensor], list[Tensor]]:
        """(the shared features that carry a graph, the trainable shared parameters)."""
        shared = [p for p in ctx.shared_params if p.requires_grad]
        if not shared:
            raise ValueError("expected BalanceContext.shared_params to hold the feature extractor, found none")
        return [f for f in ctx.features if f.requires_grad], shared

    def weights_tensor(self) -> Tensor:
        return self.w

    def get_extra_state(self) -> Any:
        return {"aggregator": aggregator_state(self.aggregator), "calls": self.calls,
                "row_w": self.row_w.detach().cpu().clone()}

    def set_extra_state(self, state: Any) -> None:
        load_aggregator_state(self.aggregator, state["aggregator"])
        # a checkpoint from before update_every: it updated on every step, so its count and weights do not matter
        self.calls = int(state.get("calls", 0))
        self.row_w = state.get("row_w", torch.ones_like(self.row_w)).clone()


def _cotangents(scaled: list[Tensor], features: list[Tensor]) -> list[Tensor]:
    """d(L_i / L_i(0))/dfeature for each component, through its head only (cheap); a loss with no graph (a
    constant) has a zero row. One tensor per feature: [K, *features[j].shape]."""
    with record_function("jacobian.cotangents"):
        rows = [torch.autograd.grad(L_i, features, retain_graph=True, allow_unused=True, materialize_grads=True)
                if L_i.requires_grad else [torch.zeros_like(f) for f in features] for L_i in scaled]
        return [torch.stack([r[j] for r in rows]) for j in range(len(features))]


def _weighted_backward(scaled: list[Tensor], features: list[Tensor], cot: list[Tensor], w: Tensor) -> None:
    """One ordinary backward of sum_i L_i / L_i(0): each head gets its own components' gradients (as
    mtl_backward gives them) and, through hooks on the features, the trunk gets sum_i w_i dL_i/dfeature
    instead of the unweighted sum, so the shared parameters' .grad is w^T J (what jac_to_grad writes)."""
    w_ = w.detach()
    handles = [f.register_hook(lambda _, c=c: torch.tensordot(w_.to(c), c, dims=1))
               for f, c in zip(features, cot, strict=True)]
    try:
        with record_function("jacobian.backward"):
            torch.stack(scaled).sum().backward()
    finally:
        for h in handles:
            h.remove()


__all__ = ["JacobianBalancer", "build_aggregator", "gramian_weighting", "torch"]
