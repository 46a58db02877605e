"""The six loss components: their keys, display names and head groups (DESIGN.md)."""

from __future__ import annotations

from data.records import CLASS_NAMES  # noqa: F401  (its home is the data; re-exported for evaluation)

# Order matters: it is the order of weights (`weight_i`), of log lines and of every table.
COMPONENTS: tuple[str, ...] = ("signal", "class", "peak_exist", "peak_latency", "peak_amplitude", "threshold")

DISPLAY_NAMES: dict[str, str] = {
    "signal": "Signal",
    "class": "Class",
    "peak_exist": "Peak",
    "peak_latency": "PeakLat",
    "peak_amplitude": "PeakAmp",
    "threshold": "Thresh",
    "series_threshold": "SeriesThresh",
    "series_type": "SeriesType",
}

# The series stage's losses (training/series_stage.py): components of its steps, after the network's.
SERIES_COMPONENTS: tuple[str, ...] = ("series_threshold", "series_type")

# Components answered by one head; a grouped balancer balances groups, then members inside one.
HEAD_GROUPS: dict[str, tuple[str, ...]] = {
    "signal": ("signal",),
    "class": ("class",),
    "peak": ("peak_exist", "peak_latency", "peak_amplitude"),
    "threshold": ("threshold",),
}

