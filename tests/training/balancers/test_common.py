"""InitialLossScale: L_i(0) is each component's first strictly positive finite loss."""

from __future__ import annotations

import math

import pytest
import torch

from training.balancers.common import InitialLossScale


def test_a_zero_or_nonfinite_first_loss_is_not_taken_as_L0():
    s = InitialLossScale(4, enabled=True)
    s.observe(torch.tensor([0.0, 5.0, math.inf, math.nan]))  # a batch without wave V: exactly 0
    assert s.seen().tolist() == [False, True, False, False]
    s.observe(torch.tensor([3.0, 7.0, 2.0, 0.0]))
    s.observe(torch.tensor([9.0, 9.0, 9.0, 4.0]))
    assert s.L0.tolist() == [3.0, 5.0, 2.0, 4.0]  # the first strictly positive finite value, then fixed
    assert s.scale().tolist() == [3.0, 5.0, 2.0, 4.0]


def test_an_unseen_component_gets_the_geometric_mean_of_the_seen_L0():
    s = InitialLossScale(3, enabled=True)
    assert s.scale().tolist() == [1.0, 1.0, 1.0]  # nothing seen yet
    s.observe(torch.tensor([100.0, 0.0, 0.01]))
    assert s.scale().tolist() == pytest.approx([100.0, 1.0, 0.01])  # sqrt(100 * 0.01) = 1
    s.observe(torch.tensor([1.0, 0.0, 1.0]))
    assert s.scale().tolist() == pytest.approx([100.0, 1.0, 0.01])
    s2 = InitialLossScale(3, enabled=True)
    s2.observe(torch.tensor([4.0, 0.0, 16.0]))
    assert s2.scale()[1].item() == pytest.approx(8.0)


def test_disabled_scale_is_one_and_records_nothing():
    s = InitialLossScale(2, enabled=False)
    s.observe(torch.tensor([3.0, 4.0]))
    assert s.scale().tolist() == [1.0, 1.0] and not s.seen().any()


def test_a_checkpoint_holding_a_zero_L0_recovers_at_the_next_positive_loss():
    """Checkpoints written before this rule may hold L0 = 0: it counts as not seen."""
    s = InitialLossScale(2, enabled=True)
    s.load_state_dict({"L0": torch.tensor([0.0, 2.0])})
    assert s.scale()[0].item() == pytest.approx(2.0)  # typical divisor, not 0 or 1e-12
    s.observe(torch.tensor([0.5, 9.0]))
    assert s.L0.tolist() == [0.5, 2.0]
