"""bench/condition_grid.py: each recording in its bin, twins equal to the real recordings score no gap and r = 1,
a wave the generator drops shows as that wave's gap, and small cells are left out."""

from __future__ import annotations

import numpy as np

from bench.condition_grid import (
    GRID,
    LEVEL_BANDS_DB,
    MIN_BAND,
    MIN_CELL,
    band_label,
    bin_label,
    cells,
    condition_grid,
    grid_table,
    type_level_table,
    type_level_waves,
)


def _cohort(n: int = 1200, seed: int = 0):
    rng = np.random.default_rng(seed)
    static = np.stack([rng.choice([0.0, 5.0, 40.0], n), rng.choice([20.0, 50.0, 80.0], n),
                       np.full(n, 21.1), rng.choice([0.5, 2.0], n)], axis=1)  # (N 4) age, level, rate, FMP
    t = np.linspace(0, 1, 200)
    uv = np.sin(2 * np.pi * 3 * t)[None] * (static[:, 1:2] / 80) + 0.05 * rng.standard_normal((n, 200))
    prob = np.stack([rng.random(n), rng.random(n), (static[:, 1] > 30).astype(float)], axis=1)  # (N 3) I, III, V
    return static, uv, prob, np.arange(n) // 4


def test_each_value_falls_in_its_bin_and_the_labels_read():
    idx = cells(np.array([[0.0, 20.0, 11.1, 0.5], [17.9, 35.0, 31.1, 1.0], [18.0, 100.0, 49.1, 300.0]]))
    assert idx.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]]
    assert bin_label("age", 0) == "0-1y" and bin_label("intensity", 0) == "<35dB" and bin_label("fmp", 2) == ">=3"
    assert all(len(edges) == 4 for edges in GRID.values())


def test_twins_equal_to_the_real_recordings_have_no_gap_and_a_dropped_wave_shows():
    static, uv, prob, sid = _cohort()
    same = condition_grid(static, uv, uv, {"real": prob, "generated": prob}, sid)
    assert same["n_cells"] > 0 and all(v == 0.0 for v in same["max_share_gap"].values())
    assert all(abs(c["r_mean"] - 1.0) < 1e-12 for c in same["cells"]) and same["cells_r_at_floor"] == same["n_cells"]
    assert all(c["n"] >= MIN_CELL for c in same["cells"])
    assert same["recordings_in_cells"] <= len(uv)
    no_v = prob.copy()
    no_v[:, 2] = 0.0
    dropped = condition_grid(static, uv, uv, {"real": prob, "generated": no_v}, sid)
    assert dropped["max_share_gap"]["V"] == 1.0 and dropped["max_share_gap"]["I"] == 0.0
    loud = [m for m in dropped["marginals"] if m["factor"] == "intensity" and m["bin"] == ">=65dB"][0]
    assert loud["V_real"] == 1.0 and loud["V_generated"] == 0.0
    assert "| intensity | >=65dB |" in grid_table(dropped)


def _waves(n: int, latency_i: float, seed: int = 0) -> dict[str, np.ndarray]:
    """(N 3) probabilities and latencies (ms): waves I and V read everywhere, wave III nowhere."""
    rng = np.random.default_rng(seed)
    prob = np.tile([0.9, 0.1, 0.9], (n, 1))
    latency = np.stack([latency_i + 0.01 * rng.standard_normal(n), np.full(n, 4.0), np.full(n, 7.0)], axis=1)
    return {"prob": prob, "latency": latency}


def test_a_wave_out_of_place_shows_in_its_types_latency_and_the_interval():
    n = 200
    types = np.repeat([0, 1], n // 2)  # (N) two types
    level = np.tile([30.0, 90.0], n // 2)  # (N) two bands, 50 recordings of each type in each
    real, gen = _waves(n, 2.7), _waves(n, 2.7)
    gen["latency"][types == 1, 0] -= 0.2  # the second type's twins: wave I 0.2 ms early
    rows = type_level_waves(types, level, {"real": real, "generated": gen}, ("A", "B"))
    assert [(r["type"], r["level"], r["n"]) for r in rows] == [("A", "<40dB", 50), ("A", ">=80dB", 50),
                                                               ("B", "<40dB", 50), ("B", ">=80dB", 50)]
    for r in rows:
        shift = 0.2 if r["type"] == "B" else 0.0
        assert abs(r["I_latency_real"] - r["I_latency_generated"] - shift) < 0.01
        assert abs(r["I_V_generated"] - r["I_V_real"] - shift) < 0.01
        assert r["V_latency_real"] == r["V_latency_generated"] == 7.0
        assert r["I_real"] == r["I_generated"] == 1.0 and r["III_real"] == 0.0
        assert np.isnan(r["III_latency_real"])  # no wave III read: no latency, not a zero
    table = type_level_table(rows)
    assert "| B | >=80dB | 50 |" in table and "— / —" in table


def test_a_type_band_with_too_few_recordings_is_left_out():
    n = MIN_BAND + 10
    types, level = np.zeros(n, dtype=int), np.full(n, 50.0)
    level[:6] = 90.0  # 6 loud recordings: below MIN_BAND
    w = _waves(n, 2.5)
    rows = type_level_waves(types, level, {"real": w, "generated": w}, ("A",))
    assert [r["level"] for r in rows] == ["40-60dB"] and rows[0]["n"] == n - 6
    assert band_label(0) == "<40dB" and band_label(len(LEVEL_BANDS_DB) - 2) == ">=80dB"
