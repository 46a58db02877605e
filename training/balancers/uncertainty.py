"""`uncertainty`: homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

One learnable s_i = log sigma_i^2 per component, trained by the model's optimizer:

    log   (Kendall 2018, eq. 7):            sum_i 1/(2 sigma_i^2) L_i + log sigma_i
                                          = sum_i 1/2 exp(-s_i) L_i + 1/2 s_i
    log1p (Liebel & Koerner 2018, eq. 3):   sum_i 1/(2 sigma_i^2) L_i + ln(1 + sigma_i^2)
                                          = sum_i 1/2 exp(-s_i) L_i + ln(1 + exp(s_i))

Under ``log`` the optimum is s_i* = log L_i, so the objective is 1/2 sum_i (1 + log L_i): below
zero whenever the losses are small. That is a legitimate negative log-likelihood, not a bug
(seed 004); the honest display shows the objective *and* the weighted sum of the task losses
(``BalanceOutput.weighted_sum``) separately. ``log1p`` keeps every term >= 0; its regularizer is
the paper's ln(1 + sigma^2), without a factor 1/2 (an earlier version here had 1/2 ln(1 + sigma^2),
which moves the optimum: exp(-s*) L = 2 sigma^2 / (1 + sigma^2) with the paper's, half that
without). Clamping s >= 0 or an abs()/exp() regularizer (seed 004's "fixes") change the model and
are not offered. A negative component (a Gaussian NLL) is refused: with L_i < 0 the gradient in
s_i never vanishes and s_i falls without bound.

Reported weights are the precisions exp(-s_i); weighted_sum = sum_i exp(-s_i) L_i.

``log`` is ``torchjd.scalarization.UW`` (the same objective and gradients step by step:
tests/training/balancers/test_torchjd_parity.py), which computes it here; ``log1p`` is not in
TorchJD and stays ours. UW's log-variance *is* our parameter ``s``: the scalarizer is held outside
the module tree (as jacobian.py holds its aggregator), so the state_dict keeps its one key ``s``
and checkpoints of earlier runs load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchjd.scalarization import UW

from training.balancers.common import ValueBalancer
from training.balancers.config import UncertaintyConfig


class UncertaintyBalancer(ValueBalancer):
    strategy = "uncertainty"
    needs_nonnegative = "its precision exp(-s_i) tends to 1 / L_i; a negative L_i drives s_i to -infinity"

    def __init__(self, names: Sequence[str], weights: Tensor, cfg: UncertaintyConfig) -> None:
        super().__init__(names)
        self.regularizer = cfg.regularizer
        # The initial precision exp(-s) is the config weight scaled by exp(-init_log_var).
        self.s = nn.Parameter(cfg.init_log_var - torch.log(weights))  # [K]
        uw = UW(len(names))
        uw.log_var = self.s  # the same Parameter: UW computes with ours
        object.__setattr__(self, "uw", uw)  # not a submodule: no second state_dict key

    @property
    def can_be_negative(self) -> bool:  # type: ignore[override]
        return self.regularizer == "log"

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        precision = torch.exp(-self.s)  # [K]
        if self.regularizer == "log":
            objective = self.uw(L)  # sum_i 1/2 exp(-s_i) L_i + 1/2 s_i
        else:  # softplus(s) = ln(1 + sigma^2)
            objective = (0.5 * precision * L + F.softplus(self.s)).sum()
        weighted = (precision.detach() * L).sum()
        return objective, weighted

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.s]

    def weights_tensor(self) -> Tensor:
        return torch.exp(-self.s.detach())
