"""`equal_init`, `equal_init_ema`, `ema` (seed 002): epoch-level inverse-loss weights.

The three strategies share one target, computed from the epoch's unweighted means L_i:

    w*_i = clip(w0_i / (L_i + eps), min_weight, max_weight)     (w0: config weights)

so that w*_i L_i = w0_i: each weighted component is worth its configured weight. They differ in
how the weights reach the target:

- ``equal_init``:     w = w* after epoch 1, fixed afterwards;
- ``equal_init_ema``: w = w* after epoch 1, then w <- a w + (1 - a) w* every ``update_frequency``
  epochs (a = ``ema_alpha``);
- ``ema``:            starts from w0 and moves by the same EMA (no initial equalization).

Deviations from seed 002's write-up, on purpose: its normalization formula
(mean(w0) / mean(1/L) * 1/L) contradicts its own logged numbers (weighted = 1.000 for every
term, i.e. w = w0 / L); we implement the logged behaviour. Its weight EMA used a separate,
unconfigurable beta; here ``ema_alpha`` is the one smoothing constant. The epoch-1 log of each
loss, weight and weighted value is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from training.balancers.common import ValueBalancer
from training.balancers.config import InverseLossConfig

log = logging.getLogger("abr.balancer")


class InverseLossBalancer(ValueBalancer):
    equalize_first = True  # epoch 1 jumps to the target
    keep_adapting = False  # later epochs move by the EMA
    needs_nonnegative = "its target weight w0_i / L_i needs L_i > 0"

    def __init__(self, names: Sequence[str], weights: Tensor, cfg: InverseLossConfig) -> None:
        super().__init__(names)
        self.cfg = cfg
        self.min_weight, self.max_weight = cfg.min_weight, cfg.max_weight  # every weight is clamped to these
        self.register_buffer("w0", weights.clone())  # [K]
        self.register_buffer("w", weights.clone().clamp(cfg.min_weight, cfg.max_weight))  # [K]

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        total = (self.w * L).sum()
        return total, total

    def target(self, means: Tensor) -> Tensor:
        return (self.w0 / (means + self.cfg.eps)).clamp(self.cfg.min_weight, self.cfg.max_weight)

    def on_epoch_end(self, epoch: int, train_means: dict[str, float]) -> None:
        super().on_epoch_end(epoch, train_means)
        L = torch.tensor([float(train_means[n]) for n in self.names]).to(self.w)  # [K]
        if not bool(torch.isfinite(L).all()):
            log.warning("%s: non-finite epoch means %s; weights unchanged", self.strategy, L.tolist())
            return
        if epoch == 1 and self.equalize_first:
            self.w.copy_(self.target(L))
        elif self.keep_adapting and epoch % self.cfg.update_frequency == 0:
            a = self.cfg.ema_alpha
            self.w.copy_((a * self.w + (1 - a) * self.target(L)).clamp(self.cfg.min_weight, self.cfg.max_weight))
        if epoch == 1:
            self._log_epoch(L)

    def _log_epoch(self, L: Tensor) -> None:
        log.info("%s weights after epoch 1:", self.strategy)
        for n, l_i, w_i in zip(self.names, L.tolist(), self.w.tolist(), strict=True):
            log.info("  %s: loss=%.3e, weight=%.3e, weighted=%.3e", n, l_i, w_i, l_i * w_i)

    def weights_tensor(self) -> Tensor:
        return self.w


class EqualInitBalancer(InverseLossBalancer):
    strategy = "equal_init"
    equalize_first, keep_adapting = True, False


class EqualInitEMABalancer(InverseLossBalancer):
    strategy = "equal_init_ema"
    equalize_first, keep_adapting = True, True


class EMABalancer(InverseLossBalancer):
    strategy = "ema"
    equalize_first, keep_adapting = False, True
