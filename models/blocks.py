"""Residual blocks of the U-Net. Every tensor is channel-last: x (B L C), condition c (B E).

- :class:`FiLM`: h = LN(x) * (1 + gamma(c)) + beta(c)  (Perez et al., "FiLM", 2018), on the pre-norm of each MLP.
- :class:`S4Block`: encoder block, x += S4D(LN x); x += MLP(FiLM(LN x, c)).
- :class:`TransformerBlock`: decoder block, local depthwise conv, self-attention, cross-attention to the
  same-level encoder features, FiLM'd MLP; all pre-norm, attention through ``scaled_dot_product_attention``.
- :class:`AttentionPool`: learned-query attention pooling (B L C) -> (B C), one per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.s4d import S4D


class FiLM(nn.Module):
    """Feature-wise affine modulation of a LayerNorm'd x by the condition c."""

    def __init__(self, C: int, E: int):
        super().__init__()
        self.norm = nn.LayerNorm(C, elementwise_affine=False)
        self.to_scale_shift = nn.Linear(E, 2 * C)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        gamma, beta = self.to_scale_shift(c).unsqueeze(1).chunk(2, dim=-1)  # (B 1 C) each
        return self.norm(x) * (1 + gamma) + beta  # (B L C)


class MLP(nn.Sequential):
    def __init__(self, C: int, ratio: int, dropout: float):
        super().__init__(nn.Linear(C, ratio * C), nn.GELU(), nn.Dropout(dropout), nn.Linear(ratio * C, C))


class Attention(nn.Module):
    """Multi-head attention of queries x (B L C) over keys/values kv (B M C); kv = x for self-attention."""

    def __init__(self, C: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.to_q = nn.Linear(C, C)
        self.to_kv = nn.Linear(C, 2 * C)
        self.out = nn.Linear(C, C)

    def forward(self, x: Tensor, kv: Tensor | None = None) -> Tensor:
        B, L, C = x.shape
        kv = x if kv is None else kv
        q = self.to_q(x).view(B, L, self.heads, -1).transpose(1, 2)  # (B h L d)
        k, v = self.to_kv(kv).view(B, kv.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B h M d) each
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B h L d)
        return self.out(y.transpose(1, 2).reshape(B, L, C))  # (B L C)


class S4Block(nn.Module):
    def __init__(self, C: int, E: int, N: int, bidirectional: bool, mlp_ratio: int, dropout: float, ssm_lr: float):
        super().__init__()
        self.norm = nn.LayerNorm(C)
        self.s4d = S4D(C, N, bidirectional=bidirectional, dropout=dropout, lr=ssm_lr)
        self.film = FiLM(C, E)
        self.mlp = MLP(C, mlp_ratio, dropout)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        x = x + self.s4d(self.norm(x))  # (B L C)
        return x + self.mlp(self.film(x, c))  # (B L C)


class TransformerBlock(nn.Module):
    """Pre-norm block: depthwise conv (local mixing; gives attention relative position), self-attention,
    optional cross-attention to ``context`` (B M C), FiLM'd MLP."""

    def __init__(self, C: int, E: int, heads: int, mlp_ratio: int, dropout: float, cross: bool = True, kernel: int = 5):
        super().__init__()
        self.norm_conv = nn.LayerNorm(C)
        self.conv = nn.Conv1d(C, C, kernel, padding=kernel // 2, groups=C)
        self.norm_self = nn.LayerNorm(C)
        self.self_attn = Attention(C, heads, dropout)
        self.cross = cross
        if cross:
            self.norm_q = nn.LayerNorm(C)
            self.norm_kv = nn.LayerNorm(C)
            self.cross_attn = Attention(C, heads, dropout)
        self.film = FiLM(C, E)
        self.mlp = MLP(C, mlp_ratio, dropout)

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None = None) -> Tensor:
        x = x + self.conv(self.norm_conv(x).transpose(1, 2)).transpose(1, 2)  # (B L C)
        x = x + self.self_attn(self.norm_self(x))  # (B L C)
        if self.cross:
            x = x + self.cross_attn(self.norm_q(x), self.norm_kv(context))  # (B L C)
        return x + self.mlp(self.film(x, c))  # (B L C)


class AttentionPool(nn.Module):
    """Pools (B L C) to (B C) with ``heads`` learned queries (one per attention head)."""

    def __init__(self, C: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(C)
        self.query = nn.Parameter(0.02 * torch.randn(C))  # (C) = h queries of width d
        self.to_kv = nn.Linear(C, 2 * C)
        self.out = nn.Linear(C, C)

    def forward(self, x: Tensor) -> Tensor:
        B, L, C = x.shape
        q = self.query.view(1, self.heads, 1, -1).expand(B, -1, -1, -1)  # (B h 1 d)
        k, v = self.to_kv(self.norm(x)).view(B, L, 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B h L d) each
        y = F.scaled_dot_product_attention(q, k, v)  # (B h 1 d)
        return self.out(y.reshape(B, C))  # (B C)
