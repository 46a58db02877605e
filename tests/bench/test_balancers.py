"""bench/balancers.py: strategy specs with config keys, and the phase profile of a step."""

from __future__ import annotations

import pytest
import torch

from bench.balancers import Setup, balancer_config, make_batch, per_step_time, profile_phases, update_every
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


def test_a_strategy_that_updates_every_n_steps_is_timed_per_whole_cycle():
    assert (update_every("jacobian:update_every=4"), update_every("jacobian"), update_every("famo")) == (4, 1, 1)
    # warm-up 2: the timed steps are steps 2, 3, ...; the cycles start at steps 4 and 8 (the costly steps)
    times = [1.0, 1.0, 9.0, 1.0, 1.0, 1.0, 9.0, 1.0, 1.0, 1.0, 9.0]  # steps 2-12
    assert per_step_time(times, warmup=2, every=4) == pytest.approx(3.0)  # (9 + 1 + 1 + 1) / 4, both cycles
    assert per_step_time(times, warmup=2, every=1) == 1.0  # the median step: blind to the costly ones
    with pytest.raises(ValueError, match="expected --steps of at least 6"):
        per_step_time(times[:5], warmup=2, every=4)
