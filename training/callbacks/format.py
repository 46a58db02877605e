"""The text every console view shows: tqdm postfix, step line, epoch summary (seed 003 formats).

All three are pure functions of already-read floats, so sinks and tests share one definition:

    postfix   Total=138.0 | LR=1.00e-04 | Signal=1.030 | Class=1.944 | Peak=0.831 | Thresh=130.5
    compact   Tot  138 Sig 1.03 Cls 1.94 Pk 0.83 Thr  130       (terminals under 120 columns)
    step      Step 100 - Total: 138.0073, Signal: 1.0295, Class: 1.9444, Peak: 0.8308, PeakLat: ..., Thresh: ...
    epoch     Epoch 1/200 Summary:
                Train - Total: 138.0073, Signal: 1.0295, ...
                Val   - Total: 124.2066, Signal: 0.9266, ...
                LR: 1.00e-04

The postfix numbers have a fixed width (:func:`fixed_width`: 5 characters, 4 significant
digits; 4 characters in the compact form) so the bar does not flicker: the postfix is always
:data:`POSTFIX_CHARS` (or :data:`COMPACT_POSTFIX_CHARS`) characters long. The full form fits a
120-column terminal, the compact one (no LR, short names) an 80-column one. The step line and
the summary keep 4 decimals (the precise values are also in metrics.jsonl).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from training.components import COMPONENTS, DISPLAY_NAMES, SERIES_COMPONENTS

# The postfix shows Total and LR, then these components (Peak = peak_exist only), in this order.
POSTFIX_COMPONENTS: tuple[str, ...] = ("signal", "class", "peak_exist", "threshold")
POSTFIX_WIDTH = 5
COMPACT_WIDTH = 4
COMPACT_NAMES: dict[str, str] = {"total": "Tot", "signal": "Sig", "class": "Cls", "peak_exist": "Pk",
                                 "threshold": "Thr", "series_threshold": "SThr", "series_type": "STyp"}
# What the bar shows of a step: the network's postfix components, or the series stage's two.
SHOWN: tuple[str, ...] = (*POSTFIX_COMPONENTS, *SERIES_COMPONENTS)


def stage_title(stage: str, compact: bool = False) -> str:
    """The word before "1/200" in the bar and the summary: "Epoch" (compact "Ep") for the network,
    "Series epoch" ("Ser") for the series stage."""
    if stage == "network":
        return "Ep" if compact else "Epoch"
    return f"{stage.capitalize()[:3]}" if compact else f"{stage.capitalize()} epoch"


def fixed_width(x: float, width: int = POSTFIX_WIDTH) -> str:
    """``x`` in exactly ``width`` characters (4 or more): as many decimals as fit (at most 3), else ``1e5``."""
    if not math.isfinite(x):
        return str(x)[:width].rjust(width)
    for decimals in (3, 2, 1, 0):
        s = f"{x:.{decimals}f}"
        if len(s) <= width:
            return s.rjust(width)
    mantissa, exponent = f"{x:.0e}".split("e")
    s = f"{mantissa}e{int(exponent)}"
    if len(s) <= width:
        return s.rjust(width)
    word = "huge" if width >= 5 else "big"
    return (f"-{word}" if x < 0 else word).rjust(width)


def format_lr(lr: float) -> str:
    return f"{lr:.2e}"


def format_postfix(values: Mapping[str, float], lr: float, compact: bool = False) -> str:
    """tqdm postfix in the fixed order ``Total | LR | Signal | Class | Peak | Thresh``.

    ``values``: "total" and component keys (missing ones are left out). ``compact``: the 80-column
    form ``Tot  138 Sig 1.03 Cls 1.94 Pk 0.83 Thr  130`` (no LR: it is in the step line and the
    summary). Set it with ``bar.set_postfix_str``: the dict form of ``set_postfix`` would reorder
    and reformat it.
    """
    if compact:
        keys = ("total", *SHOWN)
        return " ".join(f"{COMPACT_NAMES[k]} {fixed_width(values[k], COMPACT_WIDTH)}" for k in keys if k in values)
    parts = []
    if "total" in values:
        parts.append(f"Total={fixed_width(values['total'])}")
    parts.append(f"LR={format_lr(lr)}")
    parts += [f"{DISPLAY_NAMES[c]}={fixed_width(values[c])}" for c in SHOWN if c in values]
    return " | ".join(parts)


# Postfix lengths with every value present (the numbers are padded: the length never changes).
POSTFIX_CHARS = len(format_postfix(dict.fromkeys(("total", *POSTFIX_COMPONENTS), 0.0), 1e-4))
COMPACT_POSTFIX_CHARS = len(format_postfix(dict.fromkeys(("total", *POSTFIX_COMPONENTS), 0.0), 1e-4, compact=True))


def format_components(values: Mapping[str, float]) -> str:
    """``Total: 138.0073, Signal: 1.0295, ...`` for "total" and the components present in ``values`` (the
    network's six, or the series stage's two)."""
    keys = ["total", *COMPONENTS, *SERIES_COMPONENTS]
    names = {"total": "Total", **DISPLAY_NAMES}
    return ", ".join(f"{names[k]}: {values[k]:.4f}" for k in keys if k in values)


def format_step_line(step: int, values: Mapping[str, float]) -> str:
    return f"Step {step} - {format_components(values)}"


def strip_prefix(scalars: Mapping[str, float], prefix: str) -> dict[str, float]:
    """{"train/signal": 1.0, "lr": ...} -> {"signal": 1.0} for ``prefix="train/"``."""
    return {k[len(prefix) :]: v for k, v in scalars.items() if k.startswith(prefix)}


def format_epoch_summary(epoch: int, max_epochs: int, summary: Mapping[str, float], title: str = "Epoch") -> str:
    """The epoch block; ``summary`` has "train/<key>", optional "val/<key>" and "lr"; ``title``: "Epoch",
    or the series stage's "Series epoch" (:func:`stage_title`)."""
    lines = [f"{title} {epoch}/{max_epochs} Summary:"]
    train, val = strip_prefix(summary, "train/"), strip_prefix(summary, "val/")
    if train:
        lines.append(f"  Train - {format_components(train)}")
    if val:
        lines.append(f"  Val   - {format_components(val)}")
    if "lr" in summary:
        lines.append(f"  LR: {format_lr(summary['lr'])}")
    return "\n".join(lines)
