"""What the Trainer hands to callbacks: after every optimizer step, and when a signal stops it."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class StepOutput:
    step: int  # optimizer steps completed so far (1-based)
    epoch: int  # 1-based
    losses: dict[str, Tensor]  # detached device scalars: unweighted component means over micro-batches
    objective: Tensor  # detached device scalar: what the balancer minimized
    weighted_sum: Tensor  # detached device scalar: sum_i w_i L_i
    lr: float
    grad_norm: Tensor  # detached device scalar: total gradient norm before clipping
    head_grad_norms: dict[str, Tensor] = field(default_factory=dict)  # per head (signal, class, peak, threshold)
    skipped: bool = False  # the step was skipped (non-finite loss, nan_policy=skip)


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written before this was raised. Defined here, below the
    trainer, so the run directory's bookkeeping and the callbacks can name it without importing the trainer."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
