"""Fixtures shared by the monitoring tests: a config with a short log window and a fake trainer."""

from __future__ import annotations

import pytest

from tests.training.callbacks.fakes import FakeTrainer
from training.config import Config


@pytest.fixture
def cfg() -> Config:
    c = Config()
    c.training.log_frequency = 10
    c.logging.use_wandb = False
    return c


@pytest.fixture
def make_trainer(tmp_path, cfg):
    """make_trainer(callbacks, **FakeTrainer kwargs) -> a FakeTrainer writing to tmp_path/run."""

    def make(callbacks=(), **kwargs):
        kwargs.setdefault("cfg", cfg)
        return FakeTrainer(tmp_path / "run", list(callbacks), **kwargs)

    return make
