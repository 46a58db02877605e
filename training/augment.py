"""Static-input augmentation of the stated intensity (issue 33: read the waveform, not the stated level).

The heads lean on the stated intensity more than on the waveform: a loud stated level alone makes
wave V "present". Two opt-in perturbations, applied to the training batches only (validation,
evaluation and prediction see the stated values as they are), make that shortcut pay less:

- dropout (``training.intensity_dropout`` = p): the intensity of a recording is replaced, with
  probability p, by the training split's mean intensity, the value the network's standardization
  maps to 0 (no information for its first layer); the heads must then answer from the waveform;
- jitter (``training.intensity_jitter_db`` = σ): N(0, σ²) dB is added to each stated intensity,
  clipped to the clinical range 0-100 dB, so an answer that follows the level to the last 5 dB is
  wrong as often as right.

The labels are left as they are: the waveform did not change, so neither did its answer. The network
takes one static vector for the denoiser and the heads (training/objective.py feeds the same one to
both halves of its pass), so the denoiser's condition is perturbed too; both are off by default.
"""

from __future__ import annotations

import torch
from torch import Tensor

INTENSITY = 1  # column of the static vector (age, intensity, rate, FMP)
LEVEL_RANGE_DB = (0.0, 100.0)  # the clinical grid's range (training.clinical.MAX_LEVEL_DB)


def perturb_intensity(static: Tensor, *, dropout: float, jitter_db: float, fill_db: float,
                      generator: torch.Generator) -> Tensor:
    """static (B 4) in physical units -> a copy with the intensity column perturbed; ``static`` itself
    when both options are 0 (no random draw: a run without them is unchanged)."""
    if dropout == 0.0 and jitter_db == 0.0:
        return static
    B, device = static.shape[0], static.device
    level = static[:, INTENSITY].float()  # (B,)
    if jitter_db > 0.0:
        noise = torch.randn(B, device=device, generator=generator)  # (B,)
        level = (level + jitter_db * noise).clamp(*LEVEL_RANGE_DB)
    if dropout > 0.0:
        dropped = torch.rand(B, device=device, generator=generator) < dropout  # (B,)
        level = torch.where(dropped, torch.full_like(level, fill_db), level)
    out = static.clone()
    out[:, INTENSITY] = level.to(static.dtype)
    return out
