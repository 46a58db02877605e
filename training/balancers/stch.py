"""`stch`: smooth Tchebycheff scalarization (Lin, Zhang, Liu, Zhang & Zhang, ICML 2024), via TorchJD.

    objective = K mu log sum_i exp(lambda_i f_i / mu)        (paper, eq. 7, ideal point z* = 0)

a smooth approximation of K max_i lambda_i f_i: the gradient is sum_i w_i grad L_i with
w_i = K lambda_i softmax(lambda f / mu)_i df_i/dL_i, so the component that is currently worst
(relative to its preference lambda_i) gets most of the step; mu -> 0 is the plain Tchebycheff max,
large mu approaches the (weighted) sum. ``torchjd.scalarization.STCH`` computes it; the weights
w = d objective / d L are taken by autograd (training/balancers/common.py, ScalarizedBalancer).

The values f_i (``stch.inputs``):

- ``log_ratio`` (default): f_i = log(L_i / L_i(0)), as the paper's MTL code does
  (github.com/Xi-L/STCH, ``STCH_MTL``: log of the loss over a nadir point). The max then compares
  how far each loss has come *relative to its start*, whatever its units, and
  w_i = K lambda_i p_i / L_i is scale-free like FAMO's.
- ``ratio``: f_i = L_i / L_i(0).
- ``raw``: f_i = L_i (TorchJD as is): the largest loss takes the whole step (seed 001's gap).

L_i(0) is the first strictly positive loss (InitialLossScale), where the paper's code averages
the losses of a warm-up epoch (and trains on sum log L_i until then); a component not seen yet is
divided by the geometric mean of the seen ones. The preference is lambda = c / mean(c) from the
config weights (uniform: 1, the paper's MTL code, which has no lambda; TorchJD's default 1/K would
also divide the temperature by K). The factor K (the paper's code: ``* self.task_num``) makes the
weights sum to about K, so a learning rate tuned for `fixed` transfers.

Losses must be >= 0 (the ideal point is 0; ``log_ratio`` takes logs). A loss of exactly 0 in a
step is left out of the max for that step (ScalarizedBalancer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchjd.scalarization import STCH

from training.balancers.common import InitialLossScale, ScalarizedBalancer
from training.balancers.config import STCHConfig


class STCHBalancer(ScalarizedBalancer):
    strategy = "stch"
    needs_nonnegative = "its ideal point is 0 and log_ratio takes log L_i"

    def __init__(self, names: Sequence[str], weights: Tensor, cfg: STCHConfig) -> None:
        super().__init__(names, weights)
        self.mu, self.inputs = cfg.mu, cfg.inputs
        self.register_buffer("lam", weights / weights.mean(), persistent=False)  # [K] preference, from the config
        self.initial = InitialLossScale(len(names), enabled=cfg.inputs != "raw")

    def observe(self, values: Tensor) -> None:
        self.initial.observe(values)

    def scalarize(self, values: Tensor, present: Tensor) -> Tensor:
        f = values / self.initial.scale()[present]  # [P]
        if self.inputs == "log_ratio":
            f = torch.log(f)
        return len(self.names) * STCH(self.mu, weights=self.lam[present])(f)
