"""`imtl_l`: impartial multi-task learning, loss balance (IMTL-L; Liu, Li, Kuang, Xue, Chen, Yang,
Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021, Sec. 3.2), via TorchJD.

One learnable scale s_i per component, trained by the model's optimizer:

    objective = sum_i (e^{s_i} L_i - s_i)

``torchjd.scalarization.IMTLL`` computes it. The minimum over s_i is at e^{s_i} L_i = 1: the
scaled losses are driven to the same value, whatever their units. The weights are e^{s_i}
(exactly d objective / d L_i) and start at the config weights (s_i = log c_i). It is Kendall's
uncertainty weighting with s -> -s and twice the objective (TorchJD's docstring), so under the same
learning rate its scales move twice as fast as `uncertainty`'s.

At the optimum the objective is sum_i (1 + log L_i): below 0 once the losses are small
(``can_be_negative``), a regularizer's value, not a fault; ``weighted`` (sum_i e^{s_i} L_i) stays
>= 0. A negative loss is refused: d/ds_i = e^{s_i} L_i - 1 < 0 for every s_i, so s_i would grow
without bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchjd.scalarization import IMTLL

from training.balancers.common import ValueBalancer


class IMTLLBalancer(ValueBalancer):
    strategy = "imtl_l"
    needs_nonnegative = "d/ds_i (e^s_i L_i - s_i) < 0 for every s_i when L_i < 0: s_i would grow without bound"
    can_be_negative = True

    def __init__(self, names: Sequence[str], weights: Tensor) -> None:
        super().__init__(names)
        self.imtl = IMTLL(len(names))
        with torch.no_grad():
            self.imtl.log_scale.copy_(torch.log(weights))  # [K] e^s starts at the config weights

    def objective(self, L: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        weighted = (self.weights_tensor() * L).sum()
        return self.imtl(L), weighted

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.imtl.log_scale]

    def weights_tensor(self) -> Tensor:
        return torch.exp(self.imtl.log_scale.detach())
