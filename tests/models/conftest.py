"""Tiny networks shared by the model tests (fast on one CPU core)."""

from __future__ import annotations

import pytest
import torch

from data.stats import DataStats
from models import ModelConfig, build_model

TINY = {
    "base_channels": 8,
    "channel_mults": [1, 2],
    "down_factors": [5],
    "d_state": 8,
    "attn_heads": 2,
    "cond_dim": 16,
    "head_dim": 8,
}


def tiny_cfg(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def make_stats() -> DataStats:
    """Statistics in physical units, roughly those of the real data (DESIGN.md)."""
    return DataStats(
        signal_mean=0.0, signal_std=0.3,
        static_mean=[2.0, 60.0, 30.0, 80.0], static_std=[8.0, 25.0, 10.0, 150.0],
        latency_mean=7.8, latency_std=1.5, amplitude_mean=0.17, amplitude_std=0.25,
        threshold_mean=30.0, threshold_std=25.0,
    )


def make_inputs(B: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, 200, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    static = torch.stack(
        [torch.rand(B, generator=g) * 10, torch.rand(B, generator=g) * 100,
         11 + torch.rand(B, generator=g) * 38, torch.rand(B, generator=g) * 1500], dim=1
    )
    return x, t, static


@pytest.fixture(name="tiny_cfg")
def tiny_cfg_fixture():
    """Factory: ``tiny_cfg(**overrides) -> ModelConfig``."""
    return tiny_cfg


@pytest.fixture(name="make_stats")
def make_stats_fixture():
    return make_stats


@pytest.fixture(name="make_inputs")
def make_inputs_fixture():
    """Factory: ``make_inputs(B, seed=0) -> (x_t, t, static)``."""
    return make_inputs


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg(), make_stats()).eval()


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is fastest, and the test machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
