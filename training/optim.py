"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from training.config import TrainingConfig


def build_optimizer(
    cfg: TrainingConfig, model_groups: list[dict], extra_params: list[nn.Parameter]
) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups (the S4D group carries its own lr and no weight
    decay) plus the balancer's learnable parameters (e.g. uncertainty's log-variances: no decay,
    since decaying s toward 0 would bias every precision toward 1)."""
    groups = [dict(g) for g in model_groups]
    if extra_params:
        groups.append({"params": list(extra_params), "weight_decay": 0.0, "name": "balancer"})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """lr multiplier: linear 0 -> 1 over the warm-up, then cosine 1 -> min_ratio at total_steps."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, total_steps: int):
    """Stepped once per optimizer step (not per epoch, not per micro-batch)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, min(cfg.warmup_steps, total_steps), cfg.min_lr_ratio)
    )
