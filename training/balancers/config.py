"""Config section `loss.balancer`: which strategy combines the six component losses.

One sub-block per strategy; only the selected strategy's block is read (and, with grouping, the
blocks of the inner strategies). docs/balancing.md says when to use which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from data.schema import spec
from training.components import HEAD_GROUPS

STRATEGIES = (
    "fixed",
    "scale_norm",
    "gradnorm",
    "uncertainty",
    "dwa",
    "equal_init",
    "equal_init_ema",
    "ema",
    "famo",
    "jacobian",
    "stch",
    "imtl_l",
    "geometric_mean",
)

# TorchJD aggregators selectable by `jacobian.aggregator` (training/balancers/jacobian.py maps them).
AGGREGATORS = (
    "upgrad",
    "dualproj",
    "pcgrad",
    "mgda",
    "imtl_g",
    "aligned_mtl",
    "cagrad",
    "nash_mtl",
    "graddrop",
    "gradvac",
    "config",
    "fairgrad",
    "random",
    "mean",
    "sum",
)


@dataclass
class ScaleNormConfig:
    statistic: Literal["running_mean", "batch"] = spec(
        "running_mean", help="divide by a running mean of the loss, or by the current batch value (detached)"
    )
    warmup_steps: int = spec(10, ge=0, help="plain average over the first N observations, then momentum")
    momentum: float = spec(0.95, ge=0.0, lt=1.0, help="running mean m <- momentum*m + (1-momentum)*L")
    sqrt_output_correction: bool = spec(False, help="multiply by sqrt(output elements) (seed 001, fix 2)")
    output_elements: dict[str, int] = spec(
        {"signal": 200, "class": 5, "peak_exist": 1, "peak_latency": 1, "peak_amplitude": 1, "threshold": 1},
        help="output elements each component's loss is averaged over (for sqrt_output_correction)",
    )
    eps: float = spec(1e-8, gt=0.0, help="floor of the running mean")


@dataclass
class GradNormConfig:
    alpha: float = spec(1.5, ge=0.0, help="restoring-force strength alpha (Chen et al. 2018)")
    lr: float = spec(0.025, gt=0.0, help="Adam learning rate of the weights (their own optimizer)")
    layer: Literal["last", "all"] = spec("last", help="gradient norms on the last shared layer, or all shared params")
    min_weight: float = spec(1e-4, gt=0.0, help="weights are clamped to at least this before renormalizing")


@dataclass
class UncertaintyConfig:
    init_log_var: float = spec(0.0, help="initial s = log sigma^2 (shifted by -log weight, see docs)")
    regularizer: Literal["log", "log1p"] = spec(
        "log", help="log: 1/2 s (Kendall 2018; objective may be < 0); log1p: ln(1+sigma^2) (Liebel & Koerner 2018; "
        ">= 0); see docs/balancing.md"
    )


@dataclass
class DWAConfig:
    temperature: float = spec(2.0, gt=0.0, help="softmax temperature T (Liu et al. 2019)")
    normalize: Literal["initial", "none"] = spec(
        "initial", help="initial: weight L_i / L_i(0), so DWA also cures a scale imbalance (seed 001; reported "
        "weights w_i ~ lambda_i / L_i(0), rescaled to sum to K); none: the paper's raw losses (w_i = lambda_i)"
    )


@dataclass
class InverseLossConfig:
    """Shared by equal_init, equal_init_ema and ema (seed 002)."""

    ema_alpha: float = spec(0.9, ge=0.0, lt=1.0, help="w <- alpha*w + (1-alpha)*w_target at each update")
    update_frequency: int = spec(1, ge=1, help="epochs between weight updates")
    min_weight: float = spec(1e-4, gt=0.0)
    max_weight: float = spec(1e4, gt=0.0)
    eps: float = spec(1e-8, gt=0.0, help="w_target = w_config / (L + eps)")

    def __post_init__(self) -> None:
        if self.min_weight > self.max_weight:
            raise ValueError(f"expected min_weight <= max_weight, found {self.min_weight} > {self.max_weight}")


@dataclass
class FAMOConfig:
    lr: float = spec(0.025, gt=0.0, help="Adam learning rate of the task logits xi (Liu et al. 2023)")
    gamma: float = spec(0.01, ge=0.0, help="weight decay of the logits (the paper's gamma)")
    eps: float = spec(1e-8, gt=0.0, help="added to each loss before its log")


@dataclass
class STCHConfig:
    mu: float = spec(1.0, gt=0.0, help="smoothing mu of smooth Tchebycheff (Lin et al. 2024): smaller is closer "
                     "to the max of the weighted values")
    inputs: Literal["log_ratio", "ratio", "raw"] = spec(
        "log_ratio", help="values f_i it takes the smooth max of: log(L_i / L_i(0)) (the paper's MTL code, which "
        "divides by a warm-up mean), L_i / L_i(0), or the raw L_i (TorchJD as is; the largest loss dominates)"
    )


@dataclass
class JacobianConfig:
    aggregator: Literal[AGGREGATORS] = spec("upgrad", help="TorchJD aggregator of the Jacobian rows")  # type: ignore[valid-type]
    normalize: Literal["initial", "none"] = spec(
        "initial", help="initial: aggregate the Jacobian of L_i / L_i(0), so a 10^4 scale gap cannot hide a "
        "component (seed 001); none: of the raw losses (TorchJD as is). Reported weights apply to raw losses"
    )
    engine: Literal["auto", "gramian", "autojac", "features"] = spec(
        "auto", help="how the step is computed (the same .grad on gramian and autojac): gramian: the aggregator's "
        "weights from the K x K Gramian, then one ordinary backward; autojac: TorchJD's mtl_backward + jac_to_grad; "
        "auto: gramian where the aggregator's weights depend on the Gramian alone (all but graddrop, config, "
        "nash_mtl); features: the Gramian of the gradients at the shared features instead (MGDA-UB, Sener & Koltun "
        "2018; about a fixed step, other weights; blind to signal-vs-heads conflicts, see docs/balancing.md)"
    )
    update_every: int = spec(
        1, ge=1, help="compute the aggregator's weights on every N-th step and apply the last ones in between (one "
        "ordinary backward, about a fixed step), as Nash-MTL's update_weights_every (Navon et al. 2022); 1: every "
        "step, exact Jacobian descent. Not for graddrop and config, which are no weighting of the rows"
    )


@dataclass
class GroupingConfig:
    enabled: bool = spec(False, help="balance head groups with `strategy`, members inside a group with `inner`")
    groups: dict[str, list[str]] = spec({k: list(v) for k, v in HEAD_GROUPS.items()})
    inner: dict[str, str] = spec({"peak": "scale_norm"}, help="group -> inner strategy (default: fixed)")


@dataclass
class BalancerConfig:
    strategy: Literal[STRATEGIES] = spec("fixed")  # type: ignore[valid-type]
    weights: dict[str, float] = spec(
        {
            "signal": 1.0,
            "class": 1.0,
            "peak_exist": 1.0,
            "peak_latency": 1.0,
            "peak_amplitude": 1.0,
            "threshold": 1.0,
        },
        help="per component: constant (fixed), a constant prior (scale_norm, dwa, equal_init*, ema, famo; grouped: "
        "outer x inner starts here), the start (gradnorm, uncertainty, imtl_l), the preference (jacobian "
        "upgrad/dualproj, stch), the exponents of a weighted geometric mean (geometric_mean)",
    )
    scale_norm: ScaleNormConfig = spec(ScaleNormConfig())
    gradnorm: GradNormConfig = spec(GradNormConfig())
    uncertainty: UncertaintyConfig = spec(UncertaintyConfig())
    dwa: DWAConfig = spec(DWAConfig())
    inverse_loss: InverseLossConfig = spec(InverseLossConfig(), help="equal_init, equal_init_ema, ema")
    famo: FAMOConfig = spec(FAMOConfig())
    jacobian: JacobianConfig = spec(JacobianConfig())
    stch: STCHConfig = spec(STCHConfig())
    grouping: GroupingConfig = spec(GroupingConfig())

    def __post_init__(self) -> None:
        # `fixed` may switch a component off (single-task baselines); the adaptive strategies
        # divide by or take logs of weights, so they need them positive. Unknown component
        # names are refused by build_balancer, which knows the names it balances.
        for name, w in self.weights.items():
            if not (w >= 0 if self.strategy == "fixed" else w > 0):
                bound = ">= 0" if self.strategy == "fixed" else "> 0 (only `fixed` accepts 0)"
                raise ValueError(f"expected weights.{name} {bound}, found {w}")
