"""bench/balancers.py: strategy specs with config keys, and the phase profile of a step."""

from __future__ import annotations

import pytest
import torch

from bench.balancers import Setup, balancer_config, make_batch, profile_phases
from training.config import ConfigError


def test_a_spec_carries_the_strategys_config_keys():
    cfg = balancer_config("jacobian:aggregator=mgda,engine=autojac")
    assert (cfg.strategy, cfg.jacobian.aggregator, cfg.jacobian.engine) == ("jacobian", "mgda", "autojac")
    assert balancer_config("famo").strategy == "famo"
    with pytest.raises(ConfigError, match=r"loss\.balancer\.jacobian\.engine"):
        balancer_config("jacobian:engine=fast")


def test_profile_names_the_phases_of_a_gramian_step():
    setup = Setup("jacobian:aggregator=mean")  # no Jacobian: a step costs about a fixed one
    phases = profile_phases(setup, [make_batch(2, torch.Generator().manual_seed(0))])
    assert {"step.forward", "step.balancer_backward", "step.optimizer", "jacobian.cotangents",
            "jacobian.backward"} <= set(phases)
    assert "jacobian.vjp" not in phases and all(v > 0 for v in phases.values())
