"""Config section `model`: the hierarchical U-Net's shape and conditioning."""

from __future__ import annotations

from dataclasses import dataclass

from training.schema import spec


@dataclass
class ModelConfig:
    base_channels: int = spec(32, ge=4, help="channels at the first level")
    channel_mults: list[int] = spec([1, 2, 4], help="channel multiplier per level")
    down_factors: list[int] = spec([2, 5], help="downsampling between levels; product must divide 200")
    d_state: int = spec(32, ge=2, help="S4D state size N (complex pairs: N/2)")
    attn_heads: int = spec(4, ge=1, help="attention heads in decoder Transformer blocks")
    dropout: float = spec(0.0, ge=0.0, lt=1.0)
    cond_drop_prob: float = spec(0.1, ge=0.0, le=1.0, help="classifier-free guidance: drop the condition with p")
    ssm_lr: float = spec(1e-3, gt=0.0, help="learning rate of S4D log_dt and A (no weight decay)")
