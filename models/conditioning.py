"""The condition c (B E) that every FiLM layer reads: timestep t and static parameters.

c = SiLU( MLP_t(sinusoid(t)) + e_s ),  e_s = MLP_s(standardize(static)) or, where the condition is
dropped (classifier-free guidance, Ho & Salimans 2022), a learned null embedding.

``blind`` columns (``model.blind_static``, issue 33) are set to their training mean at t = 0: the
pass the heads answer from does not read them (a recording's wave V is present or not whatever the
stated level); the denoiser at t > 0 reads every column.

Static parameters arrive in physical units [age (years), intensity (dB nHL), rate (/s), FMP] and are
standardized with the training-split statistics (buffers saved with the model). FMP is heavy-tailed
(0..1515): its standardized value is compressed with asinh (sign-preserving, ~log for large values).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from data.stats import DataStats

FMP_INDEX = 3


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of t (B) taken as a float (Vaswani et al. 2017; Ho et al. 2020) -> (B dim)."""
    half = dim // 2
    n = torch.arange(half, device=t.device, dtype=torch.float32)  # (dim/2)
    freqs = torch.exp(-math.log(max_period) * n / half)  # (dim/2)
    angles = t.float()[:, None] * freqs[None]  # (B dim/2)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B 2*(dim/2))
    return nn.functional.pad(emb, (0, dim % 2))  # (B dim)


class Conditioning(nn.Module):
    def __init__(self, E: int, stats: DataStats, blind: tuple[int, ...] = ()):
        super().__init__()
        self.E = E
        self.time_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.static_mlp = nn.Sequential(nn.Linear(4, E), nn.SiLU(), nn.Linear(E, E))
        self.null = nn.Parameter(0.02 * torch.randn(E))  # (E) the "no condition" embedding
        self.register_buffer("static_mean", torch.tensor(stats.static_mean, dtype=torch.float32))  # (4)
        self.register_buffer("static_std", torch.tensor(stats.static_std, dtype=torch.float32).clamp_min(1e-6))  # (4)
        # (4) 1 where the answer pass (t = 0) does not read the column; not saved: it comes from the config
        self.register_buffer("blind", torch.tensor([float(i in blind) for i in range(4)]), persistent=False)

    def standardize(self, static: Tensor) -> Tensor:
        z = (static.float() - self.static_mean) / self.static_std  # (B 4)
        return torch.cat([z[:, :FMP_INDEX], torch.asinh(z[:, FMP_INDEX:])], dim=-1)  # (B 4)

    def forward(self, t: Tensor, static: Tensor, drop_cond: Tensor) -> Tensor:
        e_t = self.time_mlp(timestep_embedding(t, self.E))  # (B E)
        z = self.standardize(static)  # (B 4)
        # Blind columns read as the training mean (0 after standardization) at t = 0, the pass whose
        # heads answer about a recording: what it says then comes from the waveform alone.
        z = z * (1.0 - self.blind * (t == 0).to(z.dtype)[:, None])  # (B 4)
        e_s = self.static_mlp(z)  # (B E)
        e_s = torch.where(drop_cond[:, None], self.null.to(e_s.dtype), e_s)  # (B E)
        return nn.functional.silu(e_t + e_s)  # (B E)
