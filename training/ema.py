"""Exponential moving average of the weights (used for validation, sampling and evaluation)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta, with the warm-up d_k = min(decay, (1 + k) / (10 + k))
    (as in diffusers' EMAModel), so a short run is not dominated by its random initialization."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = [p for p in self.shadow.parameters() if p.dtype.is_floating_point]
        params = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for b_ema, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"weights": self.shadow.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
