"""`geometric_mean`: the geometric loss strategy (GLS; Chennupati, Sistu, Yogamani & Rawashdeh,
"MultiNet++", CVPR Workshops 2019), via TorchJD.

    objective = K (prod_i L_i^{c_i})^{1 / sum_j c_j}

With uniform config weights c this is K times the plain geometric mean that
``torchjd.scalarization.GeometricMean`` computes; unequal c are exponents (a weighted geometric
mean), handed to TorchJD as the values L_i^{K c_i / sum c}. The gradient is sum_i w_i grad L_i
with w_i = K (c_i / sum c) G / L_i (G the objective over K): every loss counts by its *relative*
change, whatever its scale, so a component 10^4 times smaller than another is not drowned (seed
001). With the losses all equal to 1 the weights are c_i K / sum c (uniform: 1, as `fixed`).

The weights are taken by autograd (training/balancers/common.py, ScalarizedBalancer), which also
leaves a loss of exactly 0 out of the product for that step (log 0 made every weight 0 and the
step a no-op). Losses must be >= 0 (TorchJD refuses a negative one; the logarithm needs > 0).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torchjd.scalarization import GeometricMean

from training.balancers.common import ScalarizedBalancer


class GeometricMeanBalancer(ScalarizedBalancer):
    strategy = "geometric_mean"
    needs_nonnegative = "it multiplies the losses: the geometric mean of a negative one is undefined"

    def __init__(self, names: Sequence[str], weights: Tensor) -> None:
        super().__init__(names, weights * len(names) / weights.sum())
        self.register_buffer("c", weights.clone(), persistent=False)  # [K] exponents, from the config
        self.gm = GeometricMean()

    def scalarize(self, values: Tensor, present: Tensor) -> Tensor:
        c = self.c[present]  # [P]
        return len(self.names) * self.gm(values ** (len(c) * c / c.sum()))
