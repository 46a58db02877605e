"""Normalization statistics, fitted on the training split only and saved with the run.

The dataset standardizes the signal with (signal_mean, signal_std) (global mode). Static
parameters and regression targets stay in physical units in the batch; the network carries
these statistics as buffers (standardize static inputs, de-standardize head outputs) and the
losses use the target std to compare errors on a standardized scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


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
    # The training split's span of each static parameter [4] (prediction warns outside it); None in
    # runs saved before the span was recorded.
    static_min: list[float] | None = None
    static_max: list[float] | None = None
    # The training split's span of the threshold label, dB nHL ("no response" coded 105 dB included):
    # evaluation.generate --threshold warns outside it (issue 28); None in runs saved before it was recorded.
    threshold_min: float | None = None
    threshold_max: float | None = None

    def to_uv(self, x):
        """A globally standardized signal (tensor or array) back in µV: ``x * signal_std + signal_mean``.
        Under per-sample normalization it is the training split's scale, not the recording's own
        (:func:`to_physical` says when that applies)."""
        return x * self.signal_std + self.signal_mean

    def from_uv(self, uv):
        """A signal in µV (tensor or array) standardized as the dataset does in global mode."""
        return (uv - self.signal_mean) / self.signal_std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataStats:
        """The statistics in ``d``, each checked like a config value (``ValueError`` naming the field):
        a spread of 0 would divide the signal by zero, a text or NaN mean would poison every input."""
        stats = cls(**d)
        for name in ("signal_mean", "latency_mean", "amplitude_mean", "threshold_mean"):
            _check_float(name, getattr(stats, name))
        for name in ("signal_std", "latency_std", "amplitude_std", "threshold_std"):
            _check_float(name, getattr(stats, name), positive=True)
        for name in ("threshold_min", "threshold_max"):
            if getattr(stats, name) is not None:
                _check_float(name, getattr(stats, name))
        for name in ("static_mean", "static_std", "static_min", "static_max"):
            values = getattr(stats, name)
            if values is None and name in ("static_min", "static_max"):
                continue
            if not isinstance(values, list) or len(values) != 4:
                raise ValueError(f"field '{name}': expected a list of 4 numbers, found {values!r}")
            for i, v in enumerate(values):
                _check_float(f"{name}[{i}]", v, positive=name == "static_std")
        if stats.normalization not in ("global", "per_sample"):
            raise ValueError(f"field 'normalization': expected 'global' or 'per_sample', "
                             f"found {stats.normalization!r}")
        return stats

    def static_span(self) -> dict[str, tuple[float, float]] | None:
        """{static name: (low, high)} over the training split, or None for runs saved before it was recorded."""
        from data.records import STATIC_NAMES

        if self.static_min is None or self.static_max is None:
            return None
        return {n: (float(lo), float(hi)) for n, lo, hi in zip(STATIC_NAMES, self.static_min, self.static_max,
                                                                 strict=True)}

    def outside_span(self, values: dict[str, float]) -> list[str]:
        """One line per value of ``values`` ({static name or "threshold": value}) outside the training span;
        the values whose span the run's statistics do not record get one line saying they could not be checked."""
        from data.records import STATIC_NAMES, STATIC_UNITS

        span = self.static_span() or {}
        if self.threshold_min is not None and self.threshold_max is not None:
            span["threshold"] = (float(self.threshold_min), float(self.threshold_max))
        units = dict(zip(STATIC_NAMES, STATIC_UNITS, strict=True)) | {"threshold": "dB nHL"}
        unknown = [name for name in values if name not in span]
        lines = [f"{name} {v:g} {units[name]} lies outside the run's training span {span[name][0]:.4g} to "
                 f"{span[name][1]:.4g}: the model extrapolates" for name, v in values.items()
                 if name in span and not span[name][0] <= v <= span[name][1]]
        if unknown:
            lines.append("the run's normalization.json records no training span (a run saved before it was kept): "
                         f"{', '.join(unknown)} not checked against the training data")
        return lines

    @classmethod
    def identity(cls) -> DataStats:
        """Unit statistics: for tests and toy models that need no normalization."""
        return cls(0.0, 1.0, [0.0] * 4, [1.0] * 4, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0)


def _check_float(name: str, value: object, positive: bool = False) -> None:
    import math

    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise ValueError(f"field '{name}': expected a finite number{' > 0' if positive else ''}, found {value!r}")


def to_physical(x: torch.Tensor, stats: DataStats) -> tuple[torch.Tensor, str]:
    """The one de-normalization of a signal: undo the dataset's global standardization (µV);
    per-sample z-scores cannot be undone and are returned as they are."""
    if stats.normalization == "global":
        return stats.to_uv(x), "µV"
    return x, "z-score"


def fit_stats(records: object, normalization: str = "global") -> DataStats:
    """Fit DataStats on ``records`` (a data.records.Records; pass the training split only).

    Signal statistics are over every sample of every recording (µV); they are recorded in
    per_sample mode too, though that mode z-scores each signal instead. Latency and amplitude
    statistics are over the recordings whose wave V exists. A zero spread is stored as 1.
    """
    import numpy as np

    def spread(x: np.ndarray) -> float:
        s = float(x.std()) if x.size else 0.0
        return s if s > 1e-12 else 1.0

    def centre(x: np.ndarray) -> float:
        return float(x.mean()) if x.size else 0.0

    sig = records.signal.astype(np.float64)
    static = records.static.astype(np.float64)
    lat = records.peak_latency[records.peak_mask].astype(np.float64)
    amp = records.peak_amplitude[records.peak_mask].astype(np.float64)
    thr = records.threshold.astype(np.float64)
    return DataStats(
        signal_mean=centre(sig), signal_std=spread(sig),
        static_mean=[centre(static[:, j]) for j in range(static.shape[1])],
        static_std=[spread(static[:, j]) for j in range(static.shape[1])],
        latency_mean=centre(lat), latency_std=spread(lat),
        amplitude_mean=centre(amp), amplitude_std=spread(amp),
        threshold_mean=centre(thr), threshold_std=spread(thr),
        normalization=normalization,
        static_min=[float(static[:, j].min()) if len(static) else 0.0 for j in range(static.shape[1])],
        static_max=[float(static[:, j].max()) if len(static) else 0.0 for j in range(static.shape[1])],
        threshold_min=float(thr.min()) if thr.size else 0.0,
        threshold_max=float(thr.max()) if thr.size else 0.0,
    )
