"""data/stats.py: the one de-normalization."""

from __future__ import annotations

import torch

from data.stats import DataStats, to_physical


def test_global_standardization_is_undone_in_microvolts():
    stats = DataStats(0.1, 0.5, [0.0] * 4, [1.0] * 4, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0)
    x, units = to_physical(torch.tensor([[-1.0, 0.0, 2.0]]), stats)
    assert units == "µV" and torch.allclose(x, torch.tensor([[-0.4, 0.1, 1.1]]))


def test_per_sample_z_scores_are_left_as_they_are():
    stats = DataStats(0.1, 0.5, [0.0] * 4, [1.0] * 4, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, normalization="per_sample")
    z = torch.tensor([[-1.0, 0.0, 2.0]])
    x, units = to_physical(z, stats)
    assert units == "z-score" and torch.equal(x, z)
