"""What every figure shares, the monitoring ones (training/callbacks/figures.py) and the paper ones
(evaluation/plots.py): one set of matplotlib settings and the wording of a recording's condition.

It stands below both, so the monitoring callbacks import nothing from evaluation/.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DPI = 200
PAPER_RC: dict[str, Any] = {  # 7-8 pt text for a two-column page, saved at DPI, no top/right spines
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
    "savefig.dpi": DPI, "savefig.bbox": "tight",
}


def format_age(years: float) -> str:
    """An age as a clinician writes it: ``3 mo`` for a fractional age under a year, ``age < 1 y``
    for a completed-years input of 0 (the static input carries completed years), ``34 y`` else."""
    if years < 1:
        months = round(years * 12)
        return f"{months} mo" if months >= 1 else "< 1 y"
    return f"{years:g} y" if years == int(years) else f"{years:.1f} y"


def format_condition(static: Sequence[float]) -> str:
    """``70 dB nHL, 21.1/s, age < 1 y, FMP 300``: the recording condition of a static vector
    (age in years, intensity in dB nHL, stimulus rate per second, FMP)."""
    age, intensity, rate, fmp = (float(v) for v in static)
    return f"{intensity:.0f} dB nHL, {rate:.1f}/s, age {format_age(age)}, FMP {fmp:.0f}"
