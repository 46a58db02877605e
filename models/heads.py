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
import torch.nn.functional as F
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


class WaveMapHead(nn.Module):
    """Per-sample maps of where waves I, III and V peak, read off the decoder map and the input itself.

    Like the field's peak pickers (ABR-Attention, Patch-DAT: location per sample, guided by the first
    derivative), each wave k gets a logit per time sample, ``logits`` (B K L), and an "absent" logit
    from pooled features, ``absent`` (B K). Together they are one categorical over L + 1 outcomes
    (the wave peaks at sample i, or is absent); the presence logit is

        presence_k = logsumexp_i logits_k,i - absent_k      (the log-odds of "somewhere")

    so presence and location are one distribution (its cross-entropy splits into a presence BCE and
    a location cross-entropy given presence, the two losses training/losses.py uses).
    Input per sample: h (C0), the normalized input x, its first and second differences (a local
    maximum of x is where the first difference changes sign and the second is negative).
    """

    def __init__(self, C_h: int, C_z: int, hidden: int, heads: int, dropout: float, n_waves: int = 3,
                 kernel: int = 5):
        super().__init__()
        self.local = nn.Sequential(
            nn.Conv1d(C_h + 3, hidden, kernel, padding=kernel // 2), nn.GELU(),
            nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2), nn.GELU(),
            nn.Conv1d(hidden, n_waves, 1),
        )
        self.absent = PooledHead(C_h, C_z, hidden, n_out=n_waves, heads=heads, dropout=dropout)

    def forward(self, h: Tensor, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """h (B L C0), z (B Lb Cz), x (B 1 L) normalized input -> logits (B K L), presence (B K)."""
        d1 = F.pad(x[..., 1:] - x[..., :-1], (1, 0))  # (B 1 L) backward difference
        d2 = F.pad(x[..., 2:] - 2 * x[..., 1:-1] + x[..., :-2], (1, 1))  # (B 1 L)
        feats = torch.cat([h.transpose(1, 2), x, d1, d2], dim=1)  # (B C0+3 L)
        logits = self.local(feats).float()  # (B K L)
        presence = torch.logsumexp(logits, dim=-1) - self.absent(h, z).float()  # (B K)
        return logits, presence


def local_maxima(x: Tensor) -> Tensor:
    """x (..., L) -> bool (..., L): samples no lower than either neighbour (the ends are not)."""
    inner = (x[..., 1:-1] >= x[..., :-2]) & (x[..., 1:-1] >= x[..., 2:])
    return F.pad(inner, (1, 1), value=False)


def parabolic_peak(x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Refine a peak at integer ``index`` (...) of x (..., L) by the parabola through it and its two
    neighbours, as the generator's marker does (data.waveform.mark_peak; tested equal): returns
    (position in samples, value at the vertex), both (...). Not a vertex (an edge or a slope): the
    sample itself."""
    i = index.clamp(1, x.shape[-1] - 2)
    y0, ym, yp = (x.gather(-1, (i + d).unsqueeze(-1)).squeeze(-1) for d in (0, -1, 1))
    curv = ym - 2.0 * y0 + yp
    vertex = (y0 >= ym) & (y0 >= yp) & (curv < 0) & (i == index)
    offset = torch.where(vertex, (0.5 * (ym - yp) / torch.where(vertex, curv, -torch.ones_like(curv))).clamp(-0.5, 0.5),
                         torch.zeros_like(curv))
    y_index = x.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return index.to(x.dtype) + offset, torch.where(vertex, y0 - 0.25 * (ym - yp) * offset, y_index)


def pick_peaks(logits: Tensor, x: Tensor, search: int) -> Tensor:
    """The sample each wave peaks at, chosen the way its label was marked: the map's most likely sample
    stands in for the true latency, and the largest sample of the input within ±``search`` samples of it
    is the peak (data.waveform.mark_peak's search). logits (B K L), x (B L) -> (B K) int64.

    Measured against the alternatives on the quickstart's validation split (docs/waves.md): the map's
    argmax alone, or the local maximum of the input holding the most probability nearby, land 1-3 points
    fewer latencies within 0.1 ms."""
    return replay_marker(logits.argmax(dim=-1, keepdim=True), x, search)[..., 0]


def replay_marker(centre: Tensor, x: Tensor, search: int) -> Tensor:
    """The marker replayed at each centre: the largest sample of x (B L) within ±``search`` samples of
    ``centre`` (B K M) int64 -> (B K M) int64."""
    L = x.shape[-1]
    near = (torch.arange(L, device=x.device) - centre.unsqueeze(-1)).abs() <= search  # (B K M L)
    xe = x[:, None, None, :].expand(near.shape)  # (B K M L)
    return torch.where(near, xe, torch.full_like(xe, -torch.inf)).argmax(dim=-1)


def peak_candidates(logits: Tensor, x: Tensor, search: int, m: int) -> tuple[Tensor, Tensor]:
    """Each wave's ``m`` most likely peaks, for a reader that weighs the map against other knowledge
    (training.clinical.waterfall_latency: the rest of the series). The candidates are the map's local
    maxima (its global maximum always first, so candidate 0 is :func:`pick_peaks`' answer), each
    replayed through the marker. logits (B K L), x (B L) -> sample index (B K m) int64 and the map's
    log-probability at the candidate's map peak (B K m), -inf where the map has fewer than m maxima."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B K L)
    best = logits.argmax(dim=-1, keepdim=True)  # (B K 1)
    peaks = local_maxima(logits).scatter(-1, best, True)  # (B K L)
    score, centre = torch.where(peaks, logp, torch.full_like(logp, -torch.inf)).topk(m, dim=-1)  # (B K m)
    return replay_marker(centre, x, search), score
