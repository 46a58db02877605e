"""Normalization statistics, fitted on the training split only and saved with the run.

The dataset standardizes the signal with (signal_mean, signal_std) (global mode). Static
parameters and regression targets stay in physical units in the batch; the network carries
these statistics as buffers (standardize static inputs, de-standardize head outputs) and the
losses use the target std to compare errors on a standardized scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class DataStats:
    signal_mean: float  # µV
    signal_std: float  # µV
    static_mean: list[float]  # [4]: age (years), intensity (dB nHL), rate (/s), FMP
    static_std: list[float]  # [4]
    latency_mean: float  # ms, over recordings whose wave V exists
    latency_std: float
    amplitude_mean: float  # µV, over recordings whose wave V exists
    amplitude_std: float
    threshold_mean: float  # dB nHL
    threshold_std: float
    normalization: str = "global"  # "global" or "per_sample" (see data/config.py)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataStats:
        return cls(**d)

    @classmethod
    def identity(cls) -> DataStats:
        """Unit statistics: for tests and toy models that need no normalization."""
        return cls(0.0, 1.0, [0.0] * 4, [1.0] * 4, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0)
