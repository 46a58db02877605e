"""Generated against real recordings cell by cell over a grid of the recording conditions (issue 28: "at every
condition the generator is asked for within the training span, the waves' shares and the mean waveform"),
for bench/virtual_patients.py, whose twins carry each real recording's own static values.

Cells: every combination of GRID's bins of age, stated level, rate and FMP that holds at least MIN_CELL
recordings. Per cell and side: the share of recordings in which the network's wave map reads waves I, III and V
(probability >= 0.5; the same reader on both sides), and the Pearson correlation of the cell's mean generated
waveform with its mean real one, beside the real-vs-real floor: the correlation of the mean real waveforms of
the cell's even and odd series (how far a mean of that many noisy recordings is from its own expectation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.records import STATIC_NAMES, WAVE_NAMES

# Bin edges per static value (left-closed): infants / children / adults, quiet / middle / loud, slow / middle /
# fast, and FMP (the recording's own signal-to-noise F ratio) low / middle / high.
GRID: dict[str, tuple[float, ...]] = {"age": (0.0, 1.0, 18.0, np.inf), "intensity": (-np.inf, 35.0, 65.0, np.inf),
                                      "rate": (0.0, 25.0, 35.0, np.inf), "fmp": (0.0, 1.0, 3.0, np.inf)}
UNITS = {"age": "y", "intensity": "dB", "rate": "/s", "fmp": ""}
MIN_CELL = 30  # recordings in a cell for its numbers to be reported
PRESENT = 0.5  # wave probability read as present


def edge_label(edges: tuple[float, ...], k: int, unit: str) -> str:
    """Bin k of left-closed ``edges`` as text: "<hi", ">=lo" or "lo-hi", with ``unit``."""
    lo, hi = edges[k], edges[k + 1]
    if not np.isfinite(lo):
        return f"<{hi:g}{unit}"
    return f">={lo:g}{unit}" if not np.isfinite(hi) else f"{lo:g}-{hi:g}{unit}"


def bin_label(name: str, k: int) -> str:
    return edge_label(GRID[name], k, UNITS[name])


def bin_index(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """(N) bin of each value in left-closed ``edges``, values beyond either end in the outer bins."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def cells(static: np.ndarray) -> np.ndarray:
    """(N 4) static values -> (N 4) bin index of each value in GRID (STATIC_NAMES order)."""
    return np.stack([bin_index(static[:, k], GRID[n]) for k, n in enumerate(STATIC_NAMES)], axis=1)


def mean_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of the mean waveforms of (n L) and (m L); NaN when either side is empty or flat."""
    if not len(a) or not len(b):
        return float("nan")
    x, y = a.mean(0), b.mean(0)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def score_cell(rows: np.ndarray, real_uv: np.ndarray, gen_uv: np.ndarray, waves: dict[str, np.ndarray],
               series_id: np.ndarray) -> dict[str, Any]:
    """One cell's numbers (``waves``: per side the wave map's (N 3) probabilities)."""
    odd = series_id[rows] % 2 == 1
    out: dict[str, Any] = {"n": int(len(rows)), "r_mean": mean_r(gen_uv[rows], real_uv[rows]),
                           "r_floor": mean_r(real_uv[rows[odd]], real_uv[rows[~odd]])}
    for j, wave in enumerate(WAVE_NAMES):
        for side, prob in waves.items():
            out[f"{wave}_{side}"] = float((prob[rows, j] >= PRESENT).mean())
    return out


def condition_grid(static: np.ndarray, real_uv: np.ndarray, gen_uv: np.ndarray, waves: dict[str, np.ndarray],
                   series_id: np.ndarray) -> dict[str, Any]:
    """Every cell with at least MIN_CELL recordings, each factor's bins alone (marginals), and a summary:
    the largest |generated - real| share per wave over the cells, and the mean waveform's r against its floor."""
    idx = cells(static)  # (N 4)
    keys, inverse = np.unique(idx, axis=0, return_inverse=True)
    out_cells = []
    for c, key in enumerate(keys):
        rows = np.flatnonzero(inverse.ravel() == c)
        if len(rows) >= MIN_CELL:
            out_cells.append({"cell": {n: bin_label(n, int(k)) for n, k in zip(STATIC_NAMES, key, strict=True)}}
                             | score_cell(rows, real_uv, gen_uv, waves, series_id))
    marginals = [{"factor": n, "bin": bin_label(n, b)} | score_cell(np.flatnonzero(idx[:, k] == b), real_uv, gen_uv,
                                                                   waves, series_id)
                 for k, n in enumerate(STATIC_NAMES) for b in range(len(GRID[n]) - 1) if (idx[:, k] == b).any()]
    gap = {w: max(abs(c[f"{w}_generated"] - c[f"{w}_real"]) for c in out_cells) for w in WAVE_NAMES} \
        if out_cells else {}
    r = np.array([c["r_mean"] for c in out_cells], dtype=float)
    floor = np.array([c["r_floor"] for c in out_cells], dtype=float)
    ok = np.isfinite(r) & np.isfinite(floor)
    return {"min_cell": MIN_CELL, "cells": out_cells, "marginals": marginals, "n_cells": len(out_cells),
            "recordings_in_cells": int(sum(c["n"] for c in out_cells)), "max_share_gap": gap,
            "r_median": float(np.median(r[ok])) if ok.any() else float("nan"),
            "r_min": float(r[ok].min()) if ok.any() else float("nan"),
            "cells_r_at_floor": int((r[ok] >= floor[ok]).sum())}


def grid_table(g: dict[str, Any]) -> str:
    """The marginal table (Markdown) and one summary line."""
    lines = ["| factor | bin | recordings | wave I real / generated | wave III real / generated | "
             "wave V real / generated | mean waveform r (floor) |", "|---|---|---|---|---|---|---|"]
    for m in g["marginals"]:
        shares = " | ".join(f"{m[f'{w}_real']:.0%} / {m[f'{w}_generated']:.0%}" for w in WAVE_NAMES)
        lines.append(f"| {m['factor']} | {m['bin']} | {m['n']} | {shares} | {m['r_mean']:.3f} ({m['r_floor']:.3f}) |")
    gap = ", ".join(f"{w} {v:.0%}" for w, v in g["max_share_gap"].items())
    lines += ["", f"Over the {g['n_cells']} cells of age x level x rate x FMP with at least {g['min_cell']} recordings "
              f"({g['recordings_in_cells']} recordings): largest |generated - real| share per wave {gap}; mean "
              f"waveform r median {g['r_median']:.3f}, lowest {g['r_min']:.3f}; {g['cells_r_at_floor']} of "
              f"{g['n_cells']} cells at or above their real-vs-real floor."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# per type and level: where the waves lie, not only whether they are read

# Stated-level bands (left-closed, dB nHL) for the per-type latency table: a type's waves move with the level
# (a conductive loss delays all three, a sensorineural one mostly the quiet end), so medians are taken per band.
LEVEL_BANDS_DB: tuple[float, ...] = (-np.inf, 40.0, 60.0, 80.0, np.inf)
MIN_BAND = 20  # recordings of a type in a band for its row to be reported


def band_label(k: int) -> str:
    return edge_label(LEVEL_BANDS_DB, k, "dB")


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else float("nan")


def score_band(waves: dict[str, dict[str, np.ndarray]], rows: np.ndarray) -> dict[str, Any]:
    """One type x band row: per wave and side the share read (p >= PRESENT) and the median latency (ms) of those
    read; per side the median interval I-V (ms) over the recordings where both waves are read."""
    out: dict[str, Any] = {"n": int(len(rows))}
    for side, w in waves.items():
        present = w["prob"][rows] >= PRESENT  # (n 3)
        latency = w["latency"][rows]  # (n 3) ms
        for j, wave in enumerate(WAVE_NAMES):
            out[f"{wave}_{side}"] = float(present[:, j].mean())
            out[f"{wave}_latency_{side}"] = _median(latency[present[:, j], j])
        both = present[:, 0] & present[:, -1]
        out[f"I_V_{side}"] = _median(latency[both, -1] - latency[both, 0])
    return out


def type_level_waves(types: np.ndarray, level_db: np.ndarray, waves: dict[str, dict[str, np.ndarray]],
                     names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows per type (``types`` (N) index into ``names``) and stated-level band holding at least MIN_BAND
    recordings; ``waves``: per side ("real", "generated") the wave map's "prob" and "latency" (N 3), read by one
    network on both sides. The twins carry their recording's type and level, so each row compares like with like."""
    band = bin_index(level_db, LEVEL_BANDS_DB)  # (N)
    out = []
    for k, name in enumerate(names):
        for b in range(len(LEVEL_BANDS_DB) - 1):
            rows = np.flatnonzero((types == k) & (band == b))
            if len(rows) >= MIN_BAND:
                out.append({"type": name, "level": band_label(b)} | score_band(waves, rows))
    return out


def type_level_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per type and level band, each wave's share and median latency, real / generated."""
    def ms(v: float) -> str:
        return "—" if not np.isfinite(v) else f"{v:.2f}"

    lines = ["| type | level | recordings | " + " | ".join(f"wave {w} read, real / generated | wave {w} latency ms"
                                                             for w in WAVE_NAMES) + " | I-V interval ms |",
             "|---" * (4 + 2 * len(WAVE_NAMES)) + "|"]
    for r in rows:
        cols = " | ".join(f"{r[f'{w}_real']:.0%} / {r[f'{w}_generated']:.0%} | {ms(r[f'{w}_latency_real'])} / "
                          f"{ms(r[f'{w}_latency_generated'])}" for w in WAVE_NAMES)
        lines.append(f"| {r['type']} | {r['level']} | {r['n']} | {cols} | {ms(r['I_V_real'])} / "
                     f"{ms(r['I_V_generated'])} |")
    return "\n".join(lines)
