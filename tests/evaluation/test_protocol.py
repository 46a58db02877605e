"""What the protocol gives away (evaluation/protocol.py): levels-only, true-mark rule, sparse protocol."""

from __future__ import annotations

import numpy as np
import torch

from evaluation.protocol import (
    SPARSE_LEVELS_DB,
    baseline_thresholds,
    levels_only_thresholds,
    sparse_rows,
    true_mark_thresholds,
)
from training.clinical import NO_RESPONSE_DB, series_index


def test_levels_only_is_the_centre_of_the_densest_window():
    level = np.array([0, 50, 55, 55, 60, 60, 65, 100, 10, 20, 20, 30], dtype=float)
    sid = np.array([0] * 8 + [1] * 4)
    got = levels_only_thresholds(series_index(sid, level), level)
    # series 0: [50, 65] holds 6 recordings -> centre 57.5 -> 55 or 60 on the grid; series 1: [10, 25] holds 3 -> 17.5
    assert got[0] in (55.0, 60.0) and got[1] in (15.0, 20.0)
    assert (got < NO_RESPONSE_DB).all()


def test_rule_with_true_marks():
    level = np.array([20, 30, 40, 50, 20, 30], dtype=float)
    mask = np.array([0, 0, 1, 1, 0, 0], dtype=bool)
    got = true_mark_thresholds(series_index(np.array([0, 0, 0, 0, 1, 1]), level), level, mask)
    np.testing.assert_array_equal(got, [40.0, NO_RESPONSE_DB])


def test_sparse_protocol_keeps_one_recording_per_chosen_level():
    rng = np.random.default_rng(0)
    sid = np.repeat(np.arange(5), 25)
    level = rng.choice(np.arange(0, 101, 5), size=len(sid)).astype(float)
    rows = sparse_rows(sid, level)
    assert np.isin(level[rows], SPARSE_LEVELS_DB).all()
    pairs = set(zip(sid[rows].tolist(), level[rows].tolist(), strict=True))
    assert len(pairs) == len(rows)  # one recording per (series, level)
    for s in range(5):
        want = set(level[sid == s]) & set(SPARSE_LEVELS_DB)
        assert {lv for ss, lv in pairs if ss == s} == want
    assert len(SPARSE_LEVELS_DB) <= 7 and min(SPARSE_LEVELS_DB) >= 20 and max(SPARSE_LEVELS_DB) <= 100


def test_baseline_rows_score_against_the_truth():
    level = np.array([20, 30, 40, 50, 60], dtype=float)
    t = {"series_id": torch.zeros(5, dtype=torch.int64), "static": torch.tensor([[0, v, 20, 1] for v in level]),
         "threshold": torch.full((5,), 40.0), "label": torch.zeros(5, dtype=torch.int64),
         "peak_mask": torch.tensor([False, False, True, True, True])}
    m = baseline_thresholds(t, n_boot=0)
    assert m["rule_true_marks"]["exact"].value == 1.0
    assert set(m) == {"levels_only", "rule_true_marks"}
