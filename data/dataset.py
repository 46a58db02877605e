"""The training-facing data API: ``build_data(cfg.data, cfg.loss.class_weights) -> DataBundle``.

Items are dicts of tensors; ``torch.utils.data.default_collate`` turns a list of them into the
batch dict of DESIGN.md::

    signal          float32 [1, 200]  normalized with the training statistics (see DataStats)
    static          float32 [4]       physical units: age (years), intensity (dB nHL), rate (/s), FMP
    label           int64   []        index into CLASS_NAMES
    peak_mask       bool    []        wave V present
    peak_latency    float32 []        ms; 0.0 where peak_mask is False (never NaN)
    peak_amplitude  float32 []        µV; 0.0 where peak_mask is False
    threshold       float32 []        dB nHL
    patient_id      int64   []
    series_id       int64   []        one intensity series (ear or session) of the patient
    wave_known      bool    [3]       waves I, III, V (WAVE_NAMES): the source marks this wave here
    wave_mask       bool    [3]       the wave is present (V: peak_mask)
    wave_latency    float32 [3]       ms; 0.0 where not present (V: peak_latency)
    wave_amplitude  float32 [3]       µV; 0.0 where not present (V: peak_amplitude)

Every tensor is computed once when the dataset is built; ``__getitem__`` only indexes. For a
trainer that wants to skip the DataLoader, ``ABRDataset.batch(index)`` returns a whole batch dict
from an index tensor, and ``ABRDataset.tensors`` holds the full columns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from data.records import WAVE_UNMARKED, Records
from data.splits import balanced_weights, class_weights, split_patients
from data.stats import DataStats, fit_stats

if TYPE_CHECKING:
    from data.config import DataConfig

log = logging.getLogger(__name__)


class ABRDataset(torch.utils.data.Dataset):
    """Recordings as precomputed tensors (see the module docstring for the item layout)."""

    def __init__(self, records: Records, stats: DataStats) -> None:
        signal = torch.from_numpy(np.ascontiguousarray(records.signal, dtype=np.float32))  # (N L) µV
        if stats.normalization == "per_sample":  # discards absolute amplitude (docs/data.md)
            mean, std = signal.mean(dim=1, keepdim=True), signal.std(dim=1, keepdim=True)
            signal = (signal - mean) / std.clamp_min(1e-6)
        else:
            signal = stats.from_uv(signal)
        mask = torch.from_numpy(records.peak_mask.astype(bool))

        def masked(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.where(records.peak_mask, values, 0.0).astype(np.float32))

        self.tensors: dict[str, torch.Tensor] = {
            "signal": signal.unsqueeze(1).contiguous(),  # (N 1 L)
            "static": torch.from_numpy(records.static.astype(np.float32)),  # (N 4)
            "label": torch.from_numpy(records.label.astype(np.int64)),  # (N,)
            "peak_mask": mask,  # (N,)
            "peak_latency": masked(records.peak_latency),  # (N,)
            "peak_amplitude": masked(records.peak_amplitude),  # (N,)
            "threshold": torch.from_numpy(records.threshold.astype(np.float32)),  # (N,)
            "patient_id": torch.from_numpy(records.patient_id.astype(np.int64)),  # (N,)
            "series_id": torch.from_numpy(records.series_id.astype(np.int64)),  # (N,)
            **wave_tensors(records),
        }

    def __len__(self) -> int:
        return len(self.tensors["label"])

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ABRDataset:
        """A dataset over batch columns already built (e.g. a transformed :meth:`batch`)."""
        ds = cls.__new__(cls)
        ds.tensors = tensors
        return ds

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch dict for ``index`` (a 1-D integer tensor), without collating items."""
        return {k: v[index] for k, v in self.tensors.items()}


def wave_tensors(records: Records) -> dict[str, torch.Tensor]:
    """The per-wave batch columns (N 3) for I, III, V: I and III from the optional wave columns,
    V from the seeds' peak columns; values 0.0 where the wave is not present (never NaN)."""
    present = np.concatenate([records.wave_present == 1, records.peak_mask[:, None]], axis=1)  # (N 3)
    known = np.concatenate([records.wave_present != WAVE_UNMARKED, np.ones((len(records), 1), bool)], axis=1)

    def values(extra: np.ndarray, v: np.ndarray) -> torch.Tensor:
        both = np.concatenate([extra, v[:, None]], axis=1)  # (N 3)
        return torch.from_numpy(np.where(present, both, 0.0).astype(np.float32))

    return {"wave_known": torch.from_numpy(known), "wave_mask": torch.from_numpy(present),
            "wave_latency": values(records.wave_latency, records.peak_latency),
            "wave_amplitude": values(records.wave_amplitude, records.peak_amplitude)}


@dataclass
class DataBundle:
    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    stats: DataStats  # fitted on the train split only
    class_weights: torch.Tensor  # float32 [5], mean 1
    # Per-recording weights 1 / (count of its class) (float64 [len(train)]) for the trainer's own
    # resumable, rank-sharded sampler (training/epoch_order.py); None unless data.balanced_sampler.
    sample_weights: torch.Tensor | None = None


def load_records(data: DataConfig) -> Records:
    """All recordings of the configured source: generated in memory, or read from a native file."""
    if data.source == "synthetic":
        from data.synthetic import generate

        s = data.synthetic
        return generate(s.patients, s.seed, domain=s.domain, catch_fraction=s.catch_fraction)
    from data.native import read_native

    records, report = read_native(data.path, strict=data.strict)
    if report.n_kept < report.n_read:
        for line in report.lines():
            log.warning(line)
    return records


def build_data(data: DataConfig, class_weight_mode: str) -> DataBundle:
    """Load, split by patient (stratified by class), fit statistics on train, build the datasets.

    ``class_weight_mode`` is the mode of :func:`data.splits.class_weights` (``loss.class_weights``).
    """
    records = load_records(data)
    train, val, test = (records.subset(i) for i in
                        split_patients(records.patient_id, records.label, data.split, data.split_seed,
                                       data.path if data.source == "file" else "the synthetic data"))
    if len(train) == 0:
        raise ValueError(f"data: the training split is empty ({len(records)} recordings, split {data.split})")
    stats = fit_stats(train, data.normalization)
    return DataBundle(
        train=ABRDataset(train, stats),
        val=ABRDataset(val, stats),
        test=ABRDataset(test, stats),
        stats=stats,
        class_weights=class_weights(train.label, class_weight_mode),
        sample_weights=balanced_weights(train.label) if data.balanced_sampler else None,
    )
