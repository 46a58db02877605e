"""The five head components of the objective (DESIGN.md); ``signal`` comes from the diffusion.

Each component is a scalar tensor, keyed by its component name:

    class           cross-entropy with class weights, or focal loss that keeps them
    peak_exist      BCE with logits
    peak_latency    Huber on (pred - y) / latency_std, over recordings whose wave V exists
    peak_amplitude  Huber on (pred - y) / amplitude_std, same mask
    threshold       Huber on (pred - y) / threshold_std, or Gaussian NLL with a variance head

With the wave map head (``model.peak_head: map``, docs/waves.md) the three peak components cover waves
I, III and V where the data marks them: peak_exist is the presence BCE, peak_latency the location
cross-entropy given presence (nats, not a Huber in ms), peak_amplitude the Huber on the input's value
under the location distribution.

Regression errors are standardized by the training-split std, so ``huber_delta`` is in std units.
A batch without any wave V gives peak_latency = peak_amplitude = 0 exactly, with gradient 0 (the
loss is still connected to the graph, so gradient-based balancers see a zero row, not an error).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data.records import NUM_CLASSES
from data.stats import DataStats
from models.unet import MS_PER_SAMPLE
from training.config import LossConfig


def focal_loss(logits: Tensor, target: Tensor, gamma: float, weight: Tensor | None = None) -> Tensor:
    """Class-weighted focal loss (Lin et al. 2017), normalized like weighted cross-entropy:

        FL = sum_b w_{y_b} (1 - p_{y_b})^gamma (-log p_{y_b}) / sum_b w_{y_b}

    gamma = 0 gives exactly ``F.cross_entropy(logits, target, weight=weight)``.
    logits [B, C], target [B] int64, weight [C] or None.
    """
    logp = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)  # [B] log p_y
    modulating = (1.0 - logp.exp()).clamp_min(0.0).pow(gamma)  # [B]
    w = weight[target] if weight is not None else torch.ones_like(logp)  # [B]
    return (w * modulating * -logp).sum() / w.sum().clamp_min(1e-12)


def masked_huber(pred: Tensor, target: Tensor, mask: Tensor, std: float, delta: float) -> Tensor:
    """Huber on (pred - target) / std over mask [B] bool; 0 with gradient 0 when mask is empty.

    Targets where mask is False may be NaN: they are replaced before any arithmetic, so no NaN can
    reach the gradient through 0 * NaN.
    """
    y = torch.where(mask, target, pred.detach())  # [B], finite everywhere
    e = (pred - y) / std  # [B] standardized error, 0 where masked out
    h = F.huber_loss(e, torch.zeros_like(e), reduction="none", delta=delta)  # [B]
    m = mask.to(h.dtype)
    return (h * m).sum() / m.sum().clamp_min(1.0)


class ComponentLosses(nn.Module):
    """outputs (head outputs, physical units) + batch -> {component: scalar loss}.

    outputs: class_logits [B,5], peak_logit [B], peak_latency [B] ms, peak_amplitude [B] µV,
    threshold [B] dB. Every component is >= 0 (cross-entropies, Huber losses).
    """

    def __init__(self, cfg: LossConfig, stats: DataStats, class_weights: Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        cw = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
        if cw.numel() != NUM_CLASSES or not bool(torch.isfinite(cw).all()) or bool((cw < 0).any()):
            raise ValueError(f"expected class_weights: {NUM_CLASSES} finite values >= 0, found {cw.tolist()}")
        if cfg.class_weights == "none":
            cw = torch.ones(NUM_CLASSES)
        self.register_buffer("class_weights", cw)  # [5]
        self.std = {}
        for key in ("latency_std", "amplitude_std", "threshold_std"):
            value = float(getattr(stats, key))
            if not value > 0:
                raise ValueError(f"expected stats.{key} > 0 to standardize regression errors, found {value}")
            self.std[key] = value

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.cfg
        label, mask = batch["label"], batch["peak_mask"].bool()  # [B] int64, [B] bool
        logits = outputs["class_logits"]  # [B,5]
        if cfg.class_loss == "focal":
            l_class = focal_loss(logits, label, cfg.focal_gamma, self.class_weights)
        else:
            l_class = F.cross_entropy(logits, label, weight=self.class_weights)
        if "wave_logits" in outputs:  # the wave map head (model.peak_head = "map")
            return {"class": l_class, **self._waves(outputs, batch),
                    "threshold": self._threshold(outputs, batch["threshold"])}
        return {
            "class": l_class,
            "peak_exist": F.binary_cross_entropy_with_logits(outputs["peak_logit"], mask.to(logits.dtype)),
            "peak_latency": masked_huber(
                outputs["peak_latency"], batch["peak_latency"], mask, self.std["latency_std"], cfg.huber_delta
            ),
            "peak_amplitude": masked_huber(
                outputs["peak_amplitude"], batch["peak_amplitude"], mask, self.std["amplitude_std"], cfg.huber_delta
            ),
            "threshold": self._threshold(outputs, batch["threshold"]),
        }

    def _waves(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The three peak components from the wave map head, over waves I, III, V where the data marks
        them (batch ``wave_known``): presence BCE; the location cross-entropy given presence, against the
        marked latency as a two-hot target on its two neighbouring samples (exact for a fractional
        position); the Huber error of the input's value under the location distribution (µV, /std).
        Marked latencies beyond the stored window (the generator's wave V past 9.95 ms) have no sample
        to point at: they count for presence only."""
        known, present = batch["wave_known"].bool(), batch["wave_mask"].bool()  # [B,K]
        logits = outputs["wave_logits"]  # [B,K,L]
        L = logits.shape[-1]
        w = known.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(outputs["wave_presence"], present.to(logits.dtype), reduction="none")
        pos = batch["wave_latency"] / MS_PER_SAMPLE  # [B,K] fractional sample (0 where absent)
        located = known & present & (pos >= 0) & (pos <= L - 1)
        lo = pos.floor().clamp(0, L - 2).long()  # [B,K]
        frac = (pos - lo).clamp(0.0, 1.0).unsqueeze(-1)  # [B,K,1]
        logp = F.log_softmax(logits, dim=-1)  # [B,K,L]
        nll = -((1.0 - frac) * logp.gather(-1, lo.unsqueeze(-1)) + frac * logp.gather(-1, (lo + 1).unsqueeze(-1)))
        m = located.to(logits.dtype)
        return {
            "peak_exist": (bce * w).sum() / w.sum().clamp_min(1.0),
            "peak_latency": (nll.squeeze(-1) * m).sum() / m.sum().clamp_min(1.0),
            "peak_amplitude": masked_huber(outputs["wave_soft_amplitude"].flatten(), batch["wave_amplitude"].flatten(),
                                           located.flatten(), self.std["amplitude_std"], self.cfg.huber_delta),
        }

    def _threshold(self, outputs: dict[str, Tensor], target: Tensor) -> Tensor:
        e = (outputs["threshold"] - target) / self.std["threshold_std"]  # [B] standardized error
        if self.cfg.threshold_loss != "huber":  # training.config refuses the others when it is read
            raise ValueError(f"expected loss.threshold_loss 'huber', found {self.cfg.threshold_loss!r}")
        return F.huber_loss(e, torch.zeros_like(e), delta=self.cfg.huber_delta)
