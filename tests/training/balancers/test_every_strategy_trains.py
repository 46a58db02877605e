"""Every strategy, and the jacobian engines and options, through the real trainer on a 10k-parameter network:
built, moved to the device, stepped, validated, checkpointed, resumed (issue 30: every strategy trains to the end
and resumes exactly). The property tests drive balancers by hand; this one goes through Trainer, which is where
``jacobian``'s ``_apply`` (shadowing ``nn.Module._apply``, which ``.to()`` calls) failed every jacobian run."""

from __future__ import annotations

import math

import pytest
import torch

from tests.reliability.procs import TINY_MODEL
from tests.runs import StopAt, tiny_config, train_run
from training.balancers.config import STRATEGIES
from training.trainer import TrainingInterrupted

JACOBIAN = ["jacobian.update_every=3", "jacobian.engine=autojac", "jacobian.engine=features",
            "jacobian.aggregator=nash_mtl", "jacobian.aggregator=cagrad"]
CASES = [(s, None) for s in STRATEGIES] + [("jacobian", o) for o in JACOBIAN]


@pytest.mark.parametrize(("strategy", "option"), CASES, ids=[s if o is None else f"{s}-{o}" for s, o in CASES])
def test_strategy_trains_through_the_trainer_and_resumes_to_the_same_weights(tmp_path, strategy, option):
    torch.set_num_threads(1)
    extra = [f"loss.balancer.strategy={strategy}", *([f"loss.balancer.{option}"] if option else [])]
    cfg = tiny_config(tmp_path, *TINY_MODEL, "training.epochs=2", "logging.use_tensorboard=false", *extra)
    whole = train_run(cfg, tmp_path / "whole")
    assert whole.step == 2 * whole.steps_per_epoch
    assert all(math.isfinite(v) for v in whole.last_val.values())
    stop = whole.steps_per_epoch + 2  # mid-epoch 2 (and mid-cycle for update_every=3)
    with pytest.raises(TrainingInterrupted):
        train_run(cfg, tmp_path / "cut", extra_callbacks=[StopAt(stop)])
    resumed = train_run(cfg, tmp_path / "cut", resume=True)
    assert resumed.step == whole.step
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
