"""training/objective.py: the draws of (t, eps, guidance drop) per batch and their DDP shards (issue 31)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import DiffusionConfig
from training.diffusion import GaussianDiffusion
from training.objective import Objective
from training.series import Evidence, concat_evidence

SHAPE = (8, 1, 20)


@pytest.fixture
def objective() -> Objective:
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=100))
    return Objective(diffusion, torch.nn.Identity(), cond_drop_prob=0.5, head_input="clean")


def _draw(objective, shard, seed=3):
    return objective.draw(SHAPE, torch.device("cpu"), torch.Generator().manual_seed(seed), train=True, shard=shard)


def test_one_process_draws_t_noise_drop_in_that_order(objective):
    """What a single process draws is what it drew before shards existed (resumed runs stay exact)."""
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (SHAPE[0],), generator=g)
    noise = torch.randn(SHAPE, generator=g)
    drop = torch.rand(SHAPE[0], generator=g) < 0.5
    for got, want in zip(_draw(objective, (0, 1)), (t, noise, drop), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_ranks_take_distinct_slices_of_one_global_draw(objective):
    """Two ranks with the same generator state get distinct (t, eps): together the global batch's draw."""
    r0, r1 = _draw(objective, (0, 2)), _draw(objective, (1, 2))
    g = torch.Generator().manual_seed(3)
    whole = objective.draw((2 * SHAPE[0], *SHAPE[1:]), torch.device("cpu"), g, train=True)
    for a, b, w in zip(r0, r1, whole, strict=True):
        assert a.shape == b.shape and a.shape[0] == SHAPE[0]
        torch.testing.assert_close(torch.cat([a, b]), w, rtol=0, atol=0)
    assert not torch.equal(r0[1], r1[1]) and not torch.equal(r0[0], r1[0])


def test_concat_evidence_keeps_row_order_and_optional_parts():
    def part(rows: list[int]) -> Evidence:
        r = np.asarray(rows)
        return Evidence(evidence=r[:, None].astype(np.float32), proba=r[:, None] * np.ones((1, 5)), peak_prob=r * 1.0,
                        latency=r * 1.0, amplitude=r * 1.0, threshold=r * 1.0, static=np.zeros((len(r), 4)),
                        series_id=r, patient_id=r, truth={"label": r}, waves=None)

    ev = concat_evidence([part([0, 1, 2]), part([3, 4])])
    assert ev.series_id.tolist() == [0, 1, 2, 3, 4] and ev.truth["label"].tolist() == [0, 1, 2, 3, 4]
    assert ev.waves is None and ev.proba.shape == (5, 5)
