"""Config section `loss.balancer`: which strategy combines the six component losses.

One sub-block per strategy; only the selected strategy's block is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from training.schema import spec

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
)


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
        help="initial (fixed: constant) weight per component",
    )
