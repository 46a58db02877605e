"""Config section `data`: where recordings come from, how they are split and normalized."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from data.schema import spec

# The most patients the generator makes (about 5.1 million recordings, 4 GiB of signal: the native
# reader's MAX_NATIVE_BYTES); the clinical data set has 2,038.
MAX_SYNTHETIC_PATIENTS = 200_000


@dataclass
class SyntheticConfig:
    patients: int = spec(300, ge=3, le=MAX_SYNTHETIC_PATIENTS, help="patients generated (about 25 recordings each)")
    seed: int = spec(0, ge=0, help="generator seed (independent of training.seed)")
    domain: Literal["narrow", "wide", "mixed"] = spec(
        "narrow", help="narrow: the clinical recording chain; wide: the same patients through a randomized chain "
                       "(delay, filters, gain, wave shapes, noise spectra; docs/data.md 1.6); mixed: each patient "
                       "narrow or wide with p = 1/2")
    catch_fraction: float = spec(
        0.0, ge=0.0, le=1.0, help="share of patients that also get a catch session: noise-only recordings at every "
                                  "level, labelled TOTAL / no response (docs/data.md 1.7); 0: none")


@dataclass
class DataConfig:
    source: Literal["synthetic", "file"] = spec("synthetic", help="built-in generator or a native data file")
    path: str = spec("", help="native data file (.npz) when source=file; see `python -m data.convert`")
    synthetic: SyntheticConfig = spec(SyntheticConfig())
    split: list[float] = spec([0.7, 0.15, 0.15], help="train/val/test shares of patients (sum to 1)")
    normalization: Literal["global", "per_sample"] = spec("global", help="signal standardization")
    strict: bool = spec(True, help="source=file: stop at the first bad recording; false drops and reports them")
    split_seed: int = spec(0, ge=0, help="seed of the patient-level train/val/test split")
    balanced_sampler: bool = spec(False, help="sample training recordings with inverse class frequency")
    num_workers: int = spec(0, ge=0, help="DataLoader worker processes")

    def __post_init__(self) -> None:
        if len(self.split) != 3 or abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) < 0:
            raise ValueError(f"data.split: expected three non-negative shares summing to 1, found {self.split}")
        if self.source == "file" and not self.path:
            raise ValueError("data.path: required when data.source is 'file'")
