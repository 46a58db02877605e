"""SeriesNet: reads one intensity series and answers per series (DESIGN.md, "Patient level").

One recording cannot hold a threshold; the series of one ear can. Each recording becomes one token:
its *evidence* from the frozen ABRNet at t = 0 (the pooled shared features h and z, the five head
outputs) and its static parameters, plus a Fourier encoding of its intensity (the level is what a
clinician reads the series by). A small Transformer encoder lets every level see every other (the
rule "lowest level with a reproducible wave V" needs the levels above; the type of loss shows in
how wave V's latency and amplitude change with level), then masked attention + mean pooling gives
one vector per series and two heads:

    evidence (B S F), intensity (B S) dB nHL, mask (B S) True where a recording is
      -> threshold_logits (B 22): 0, 5, ..., 100 dB nHL and "no response"
      -> type_logits      (B K):  hearing-loss type of the series

Sizes: S recordings per series (padded), F evidence features, W the token width.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

N_STATIC_FEATURES = 4  # age, intensity, rate, FMP: see static_features


def static_features(static: Tensor) -> Tensor:
    """(B 4) physical units -> (B 4) on comparable scales: intensity/100, rate/50, log1p age, log1p FMP."""
    age, level, rate, fmp = static.float().unbind(-1)
    return torch.stack([level / 100.0, rate / 50.0, torch.log1p(age.clamp_min(0)),
                        torch.log1p(fmp.clamp_min(0))], dim=-1)


@torch.no_grad()
def recording_evidence(net: nn.Module, x0: Tensor, static: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """One pass of the frozen network at t = 0 over clean recordings x0 (B 1 L) with static (B 4).

    Returns the network's outputs and the evidence (B F): mean-pooled h (B C0) and z (B Cz), class
    logits (B K), wave V logit, latency, amplitude, threshold (B 1 each), the waves' answers from the
    wave map head (B 12, :func:`wave_features`), static features (B 4).
    """
    t0 = torch.zeros(len(x0), dtype=torch.int64, device=x0.device)
    out = net(x0, t0, static, return_features=True)
    h, z = out.pop("features")  # (B L C0), (B Lb Cz)
    scalars = [out[k].float().reshape(-1, 1) for k in ("peak_logit", "peak_latency", "peak_amplitude", "threshold")]
    evidence = torch.cat([h.float().mean(1), z.float().mean(1), out["class_logits"].float(), *scalars,
                          *wave_features(out), static_features(static)], dim=1)  # (B F)
    return out, evidence


def wave_features(out: dict[str, Tensor]) -> list[Tensor]:
    """The wave map head's per-wave answers as evidence (none from the pooled head): presence logits,
    latencies (ms) and amplitudes (µV) of waves I, III, V (B 3 each) and the interpeak intervals
    I-III, III-V, I-V (B 3), which neuropathy and retrocochlear lesions prolong."""
    if "wave_presence" not in out:
        return []
    lat = out["wave_latency"].float()  # (B 3)
    ipl = torch.stack([lat[:, 1] - lat[:, 0], lat[:, 2] - lat[:, 1], lat[:, 2] - lat[:, 0]], dim=1)  # (B 3)
    return [out["wave_presence"].float(), lat, out["wave_amplitude"].float(), ipl]


class SeriesNet(nn.Module):
    def __init__(self, n_features: int, n_types: int, n_threshold: int, width: int = 64, heads: int = 4,
                 layers: int = 2, dropout: float = 0.1, n_freq: int = 8):
        super().__init__()
        # Evidence standardization, fitted on the training series (fit_normalizer) and saved with the weights.
        self.register_buffer("mu", torch.zeros(n_features))  # (F)
        self.register_buffer("sd", torch.ones(n_features))  # (F)
        # Intensity periods 200/k dB, k = 1..n_freq: from the whole 0-100 dB range down to 25 dB.
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, n_freq + 1, dtype=torch.float32) / 200.0)
        self.embed = nn.Sequential(nn.Linear(n_features + 2 * n_freq, width), nn.GELU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.query = nn.Parameter(torch.randn(width) / math.sqrt(width))  # attention pooling
        self.threshold_head = nn.Linear(2 * width, n_threshold)
        self.type_head = nn.Linear(2 * width, n_types)

    @torch.no_grad()
    def fit_normalizer(self, evidence: Tensor) -> None:
        """evidence (N F): the training recordings' evidence."""
        self.mu.copy_(evidence.mean(0))
        self.sd.copy_(evidence.std(0).clamp_min(1e-4))

    def forward(self, evidence: Tensor, intensity: Tensor, mask: Tensor) -> dict[str, Tensor]:
        x = (evidence - self.mu) / self.sd  # (B S F)
        angle = intensity.float()[..., None] * self.freqs  # (B S n_freq)
        tok = self.embed(torch.cat([x, angle.sin(), angle.cos()], dim=-1))  # (B S W)
        tok = self.norm(self.encoder(tok, src_key_padding_mask=~mask))  # (B S W)
        score = (tok @ self.query / math.sqrt(tok.shape[-1])).masked_fill(~mask, float("-inf"))  # (B S)
        attn = torch.softmax(score, dim=1)[..., None]  # (B S 1)
        m = mask[..., None].float()  # (B S 1)
        pooled = torch.cat([(attn * tok).sum(1), (m * tok).sum(1) / m.sum(1).clamp_min(1)], dim=-1)  # (B 2W)
        return {"threshold_logits": self.threshold_head(pooled), "type_logits": self.type_head(pooled)}
