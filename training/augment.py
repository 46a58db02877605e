"""Training augmentations for issue 33 (read the waveform, not the stated level): the stated intensity,
and noise-only catch rows for the heads.

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

Noise catch (``training.noise_catch`` = p, :func:`noise_catch`): in the heads' half of a training pass,
each recording is replaced with probability p by Gaussian noise of a random spectrum (1/f^α, α ~ U(0, 2):
white to brown) with the recording's own mean and standard deviation times log-uniform(0.5, 2), labelled
as a catch trial: every wave absent, class TOTAL, threshold "no response" (as data.synthetic's catch
sessions, docs/data.md 1.7). The generator's catch sessions carry residual-noise amplitudes only, so a
network learns "large fluctuations = a response" and calls pure noise of a response's size present
(bench/counterfactual.py: 22 % of white and 44 % of pink noise); these rows put noise of every size
against the answer "absent". The denoiser's half keeps the recording.

Band-limited catch rows (``training.catch_band``): the coloured noise also passes through a random recording
filter (zero-phase Butterworth high-pass 30-300 Hz and low-pass 1.5-3 kHz, orders 1-4: the wide chain's
ranges, data.synthetic), as every recording's noise does. Without it the catch rows carry power up to the
Nyquist frequency (10 kHz) that no recording has, and the network learned that as the sign of a catch
trial: the recipe's network called 0 % of full-band 1/f noise "wave V present", but 11 % of the same noise
cut at 5 kHz, 32 % cut at 3 kHz and 30 % of 1/f noise through the recordings' own 100-3000 Hz band
(seed-13579 cohort). Trained with it, 7 %, 10 %, 11 % and 12 %, but its heads' validation losses rose (class
1.08 to 1.17): off in the clinical recipe (docs/data.md).

Surrogate catch rows (``training.catch_surrogates`` = s, :func:`phase_surrogate`): a share s of the catch
rows is the row's own recording with its Fourier phases drawn at random instead (Theiler et al. 1992,
"Testing for nonlinearity in time series: the method of surrogate data"): the same amplitude spectrum,
hence the same size and the same spectral content as the response, but no waveform. The clinical
recipe's network called 55 % of such surrogates "wave V present" (66 % of those made from recordings
with wave V; held-out cohort, before this option): its detection read the spectrum more than the
waveform, which is why pink noise passed for a response. Labelled as the other catch rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from data.records import CLASS_NAMES
from training.clinical import NO_RESPONSE_DB

INTENSITY = 1  # column of the static vector (age, intensity, rate, FMP)
CATCH_LABEL = CLASS_NAMES.index("TOTAL")  # what a catch row is labelled (docs/data.md 1.7)
CATCH_SCALE = (0.5, 2.0)  # the noise's std relative to the recording's own, log-uniform
CATCH_ALPHA = (0.0, 2.0)  # spectral slope 1/f^alpha: white (0), pink (1), brown (2)
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


DRIFT_SPAN = 4  # drifting noise is synthesized on this many windows and the middle one kept


def coloured_noise(shape: tuple[int, int], alpha: Tensor, generator: torch.Generator, span: int = 1,
                   band: Tensor | None = None) -> Tensor:
    """(B L) unit-variance Gaussian noise with power spectrum 1/f^alpha (alpha (B,)), zero mean;
    synthesized in the frequency domain on ``span`` * L samples (the DC bin set to 0) and the middle L
    kept. ``span`` 1: one period of the noise, drift-free (the network's catch rows, as the clinical recipe
    trained); DRIFT_SPAN: a window cut from a longer stretch, as real noise is, which keeps the slow drifts
    of pink and brown noise below one cycle per window (the series stage's noise series: pure 1/f noise
    cut from a longer stretch passed for a response to a series model that had seen periodic noise only,
    bench/counterfactual.py). ``band`` (B F), F = span * L // 2 + 1: an amplitude response multiplying the
    spectrum (:func:`recording_band`); None: every frequency up to Nyquist."""
    B, L = shape
    device = alpha.device
    n = span * L
    F = n // 2 + 1
    spec = torch.complex(torch.randn(B, F, device=device, generator=generator),
                         torch.randn(B, F, device=device, generator=generator))  # (B F)
    f = torch.arange(F, device=device, dtype=torch.float32).clamp_min(1.0)  # (F)
    gain = f[None] ** (-alpha[:, None] / 2)  # (B F) amplitude ~ f^(-alpha/2)
    gain[:, 0] = 0.0
    if band is not None:
        gain = gain * band
    start = (n - L) // 2
    x = torch.fft.irfft(spec * gain, n=n)[:, start:start + L]  # (B L)
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-12)


def recording_band(n: int, samples: int, generator: torch.Generator, device: Any = "cpu") -> Tensor:
    """(n F) amplitude responses of n random recording filters on the rfft grid of ``samples`` samples at the
    pipeline's rate (F = samples // 2 + 1): zero-phase Butterworth high- and low-pass (data.waveform.
    zero_phase_gain) with corners and orders drawn from the wide chain's ranges (data.synthetic)."""
    from data.records import SAMPLE_RATE_HZ
    from data.synthetic import FILTER_ORDERS, HIGHPASS_HZ, LOWPASS_HZ
    from data.waveform import zero_phase_gain

    # drawn on the generator's device (the CPU here: the gain is computed in numpy)
    u = torch.rand(2, n, generator=generator, device=generator.device).double().cpu().numpy()  # (2 n)
    orders = torch.randint(FILTER_ORDERS[0], FILTER_ORDERS[1] + 1, (2, n), generator=generator,
                           device=generator.device).cpu().numpy()  # (2 n)
    lo, hi = math.log(HIGHPASS_HZ[0]), math.log(HIGHPASS_HZ[1])
    highpass = np.exp(lo + (hi - lo) * u[0])  # (n,) log-uniform
    lowpass = LOWPASS_HZ[0] + (LOWPASS_HZ[1] - LOWPASS_HZ[0]) * u[1]  # (n,)
    freqs = np.fft.rfftfreq(samples, 1.0 / SAMPLE_RATE_HZ)  # (F,)
    gain = zero_phase_gain(freqs, highpass, lowpass, orders[0], orders[1])  # (n F)
    return torch.as_tensor(gain, dtype=torch.float32, device=device)


def catch_draws(n: int, generator: torch.Generator, device: Any = "cpu") -> tuple[Tensor, Tensor]:
    """(alpha (n,), scale (n,)) of n catch trials: spectral slopes uniform in CATCH_ALPHA, std factors
    log-uniform in CATCH_SCALE, drawn in that order."""
    alpha = CATCH_ALPHA[0] + (CATCH_ALPHA[1] - CATCH_ALPHA[0]) * torch.rand(n, device=device, generator=generator)
    lo, hi = math.log(CATCH_SCALE[0]), math.log(CATCH_SCALE[1])
    return alpha, torch.exp(lo + (hi - lo) * torch.rand(n, device=device, generator=generator))


def phase_surrogate(x: Tensor, generator: torch.Generator) -> Tensor:
    """(B L) -> (B L): each row with its Fourier amplitudes kept and its phases drawn uniformly (the mean
    and, for even L, the Nyquist bin kept as they are: both must stay real)."""
    B, L = x.shape
    spec = torch.fft.rfft(x.float(), dim=-1)  # (B F)
    phase = 2 * math.pi * torch.rand(spec.shape, device=x.device, generator=generator)  # (B F)
    rotated = torch.polar(spec.abs(), phase)
    keep = torch.zeros(spec.shape[-1], dtype=torch.bool, device=x.device)
    keep[0] = True
    if L % 2 == 0:
        keep[-1] = True
    return torch.fft.irfft(torch.where(keep, spec, rotated), n=L, dim=-1)


def noise_catch(batch: dict[str, Tensor], p: float, generator: torch.Generator,
                surrogates: float = 0.0, span: int = 1, band: float = 0.0) -> dict[str, Tensor]:
    """The heads' copy of ``batch`` with each row replaced by a catch trial with probability p (module
    docstring), a share ``surrogates`` of them phase surrogates of the row itself, the others coloured
    noise synthesized on ``span`` windows (:func:`coloured_noise`), through a random recording filter with
    probability ``band`` (:func:`recording_band`; 1: every row, no draw for the choice); ``batch`` itself when p
    is 0 (no random draw; with ``surrogates`` and ``band`` 0 no draw beyond the coloured noise's). Signals
    (B 1 L), normalized units."""
    if p == 0.0:
        return batch
    x = batch["signal"]
    B, _, L = x.shape
    device = x.device
    chosen = torch.rand(B, device=device, generator=generator) < p  # (B,)
    alpha, scale = catch_draws(B, generator, device)  # (B,) each
    own = x[:, 0].float()  # (B L)
    gain = recording_band(B, span * L, generator, device) if band > 0.0 else None  # (B F)
    if 0.0 < band < 1.0:  # the other rows keep every frequency (gain 1)
        filtered = torch.rand(B, device=device, generator=generator) < band  # (B,)
        gain = torch.where(filtered[:, None], gain, torch.ones_like(gain))
    noise = (coloured_noise((B, L), alpha, generator, span, gain) * (own.std(-1) * scale)[:, None]
             + own.mean(-1, keepdim=True))
    if surrogates > 0.0:
        swap = torch.rand(B, device=device, generator=generator) < surrogates  # (B,)
        noise = torch.where(swap[:, None], phase_surrogate(own, generator), noise)
    out = dict(batch)
    out["signal"] = torch.where(chosen[:, None, None], noise[:, None].to(x.dtype), x)
    c = chosen
    out["label"] = torch.where(c, torch.full_like(batch["label"], CATCH_LABEL), batch["label"])
    out["threshold"] = torch.where(c, torch.full_like(batch["threshold"], NO_RESPONSE_DB), batch["threshold"])
    out["peak_mask"] = batch["peak_mask"] & ~c
    if "wave_mask" in batch:
        out["wave_mask"] = batch["wave_mask"] & ~c[:, None]
        out["wave_known"] = batch["wave_known"] | c[:, None]
    return out
