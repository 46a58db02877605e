"""default_callbacks: the `logging` switches decide which sinks and monitors a run gets (issue 18)."""

from __future__ import annotations

import pytest

from training.callbacks import (
    HealthMonitorCallback,
    JsonlCallback,
    LossWeightLoggerCallback,
    TensorBoardCallback,
    default_callbacks,
)
from training.callbacks.figures import WaveformFigureCallback
from training.callbacks.wandb_logger import WandbCallback
from training.config import Config

SWITCHES = {
    "use_tensorboard": TensorBoardCallback,
    "use_wandb": WandbCallback,
    "figures": WaveformFigureCallback,
}


@pytest.mark.parametrize("key", [*SWITCHES, "health.enabled"])
@pytest.mark.parametrize("on", [True, False])
def test_each_switch_adds_or_leaves_out_its_callback(key, on):
    cfg = Config()
    section, name = (cfg.logging.health, "enabled") if key == "health.enabled" else (cfg.logging, key)
    setattr(section, name, on)
    kind = HealthMonitorCallback if key == "health.enabled" else SWITCHES[key]
    types = [type(cb) for cb in default_callbacks(cfg)]
    assert (kind in types) == on
    assert JsonlCallback in types and LossWeightLoggerCallback in types  # always on
