"""Output heads. Each auxiliary head pools the shared features with its own attention pooling.

Shared features (what ``return_features`` exposes, and all that heads read):
  h (B L C0)  the final decoder map        -> signal projection, and pooled by every auxiliary head
  z (B Lb Cz) a projection of the bottleneck -> pooled by every auxiliary head (global, low-resolution)
Neither is computed from the other, so per-feature gradients (TorchJD ``mtl_backward``) are not
double counted. Regression heads emit physical units as mean + std * raw (DataStats buffers), with
no sigmoid/tanh: the output range is unbounded, wider than any data.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from data.stats import DataStats
from models.blocks import AttentionPool


class SignalHead(nn.Module):
    """h (B L C0) -> (B 1 L): eps / v / x0 prediction, per the diffusion config."""

    def __init__(self, C: int):
        super().__init__()
        self.norm = nn.LayerNorm(C)
        self.proj = nn.Linear(C, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.proj(self.norm(h)).transpose(1, 2)  # (B 1 L)


class PooledHead(nn.Module):
    """Attention-pools h and z with its own queries, then an MLP: -> (B n_out)."""

    def __init__(self, C_h: int, C_z: int, hidden: int, n_out: int, heads: int, dropout: float):
        super().__init__()
        self.pool_h = AttentionPool(C_h, heads)
        self.pool_z = AttentionPool(C_z, heads)
        C = C_h + C_z
        self.mlp = nn.Sequential(
            nn.LayerNorm(C), nn.Linear(C, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
        )

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        pooled = torch.cat([self.pool_h(h), self.pool_z(z)], dim=-1)  # (B C_h+C_z)
        return self.mlp(pooled)  # (B n_out)


class TargetScale(nn.Module):
    """mean + std * raw for [peak_latency (ms), peak_amplitude (µV), threshold (dB nHL)]."""

    def __init__(self, stats: DataStats):
        super().__init__()
        mean = [stats.latency_mean, stats.amplitude_mean, stats.threshold_mean]
        std = [stats.latency_std, stats.amplitude_std, stats.threshold_std]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))  # (3)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).clamp_min(1e-6))  # (3)

    def forward(self, raw: Tensor, i: int) -> Tensor:
        return self.mean[i] + self.std[i] * raw.float()  # (B)
