"""Data set statistics next to the real clinical data set's (DESIGN.md): ``python -m data.synthetic --stats``."""

from __future__ import annotations

import numpy as np

from data.records import CLASS_NAMES, Records

# The real data set (51,961 recordings, 2,038 patients), as DESIGN.md states it.
REAL = {
    "recordings_per_patient": 25.5,
    "class_share_pct": dict(zip(CLASS_NAMES, (79.7, 0.8, 10.6, 3.3, 5.6), strict=True)),
    "peak_present_pct": 74.6,
    "latency_mean_ms": 7.8,
    "latency_range_ms": (4.8, 18.5),
    "amplitude_mean_uv": 0.17,
    "amplitude_range_uv": (-0.7, 1.25),
    "age_median_years": 0.0,
    "age_range_years": (0.0, 75.0),
    "intensity_levels": 21,
    "intensity_range_db": (0.0, 100.0),
    "rate_range_per_s": (11.1, 49.1),
    "fmp_range": (0.0, 1515.0),
}


def summarize(records: Records) -> dict:
    """The statistics DESIGN.md states for the real data, computed on ``records``."""
    lat = records.peak_latency[records.peak_mask].astype(np.float64)
    amp = records.peak_amplitude[records.peak_mask].astype(np.float64)
    age, level, rate, fmp = (records.static[:, j].astype(np.float64) for j in range(4))
    counts = np.bincount(records.label, minlength=len(CLASS_NAMES))
    n_patients = len(np.unique(records.patient_id))
    return {
        "recordings": len(records),
        "patients": n_patients,
        "recordings_per_patient": len(records) / max(n_patients, 1),
        "class_share_pct": {c: 100.0 * k / len(records) for c, k in zip(CLASS_NAMES, counts.tolist(), strict=True)},
        "peak_present_pct": 100.0 * records.peak_mask.mean(),
        "latency_mean_ms": float(lat.mean()) if len(lat) else float("nan"),
        "latency_range_ms": (float(lat.min()), float(lat.max())) if len(lat) else (float("nan"),) * 2,
        "latency_above_10ms_pct": 100.0 * float((lat > 10.0).mean()) if len(lat) else 0.0,
        "latency_above_12ms_pct": 100.0 * float((lat > 12.0).mean()) if len(lat) else 0.0,
        "amplitude_mean_uv": float(amp.mean()) if len(amp) else float("nan"),
        "amplitude_range_uv": (float(amp.min()), float(amp.max())) if len(amp) else (float("nan"),) * 2,
        "age_median_years": float(np.median(age)),
        "age_range_years": (float(age.min()), float(age.max())),
        "intensity_levels": len(np.unique(level)),
        "intensity_range_db": (float(level.min()), float(level.max())),
        "rate_range_per_s": (float(rate.min()), float(rate.max())),
        "fmp_range": (float(fmp.min()), float(fmp.max())),
        "fmp_median": float(np.median(fmp)),
        "threshold_mean_db_by_class": {
            c: float(records.threshold[records.label == i].mean()) if counts[i] else float("nan")
            for i, c in enumerate(CLASS_NAMES)
        },
    }


def format_summary(summary: dict, title: str = "") -> str:
    """A two-column table: this data set next to the real one (where DESIGN.md states a value)."""
    lines = [f"{title}: {summary['recordings']} recordings, {summary['patients']} patients"]
    lines.append(f"{'statistic':<34}{'this data':>22}{'real data':>22}")

    def show(v: object) -> str:
        if isinstance(v, tuple):
            return f"{v[0]:.2f} .. {v[1]:.2f}"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    for key, value in summary.items():
        if key in ("recordings", "patients"):
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                ref = REAL.get(key, {}).get(sub, "")
                lines.append(f"{key + '[' + sub + ']':<34}{show(v):>22}{show(ref) if ref != '' else '':>22}")
        else:
            ref = REAL.get(key, "")
            lines.append(f"{key:<34}{show(value):>22}{show(ref) if ref != '' else '':>22}")
    return "\n".join(lines)
