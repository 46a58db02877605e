"""The condition c (B E) that every FiLM layer reads: timestep t, static parameters and (optionally) labels.

c = SiLU( MLP_t(sinusoid(t)) + e_s [+ e_y] ),  e_s = MLP_s(standardize(static)) or, where the condition is
dropped (classifier-free guidance, Ho & Salimans 2022), a learned null embedding.

Label conditioning (``model.label_conditioning``, issue 28; off by default, and then nothing below exists,
so runs saved before it load and generate as they did): e_y = MLP_y(v) reads the hearing-loss type and
threshold, so that evaluation.generate can make a virtual patient of a chosen type and threshold.

    v = [ one-hot type (5) | type null (1) | z threshold (1) | no response (1) | threshold null (1) ]

- Each label has its own null: the type null (the one-hot zeroed, the type-null bit set) and the threshold
  null (z = 0, the threshold-null bit set); MLP_y's first-layer columns for the two bits are their learned
  null embeddings. Training drops each independently (``model.type_drop_prob``,
  ``model.threshold_drop_prob``; training.objective draws them), so type alone, threshold alone, both or
  neither are all conditions the network has seen. The classifier-free-guidance drop (``drop_cond``)
  drops everything, static values and both labels, as before: the unconditional branch of guidance is
  unchanged, the conditional branch uses what the user gave.
- Inputs: the class index (-1: the type's null, data.records.UNKNOWN_LABEL) and the threshold in dB nHL
  (NaN, an unknown threshold: the threshold's null). "No response" is the project's code, 105 dB and above
  (data.synthetic.NO_RESPONSE_THRESHOLD_DB, training.clinical.NO_RESPONSE_DB): it is a category, not a
  number, so it gets its own bit (z = 0) rather than the threshold's null. Why not the null: the null must
  stay "any threshold" (the marginal), or a type-only request for NÖROPATİ or SNİK would lean towards the
  no-response recordings folded into it; and the user can ask for a no-response ear (``--threshold 105``).
- No label leakage: the five heads answer from the pass at t = 0, and the series stage reads that pass's
  evidence. Rows at t = 0 always get both nulls, whatever the caller passes, in training and inference
  alike: the heads can never copy their own labels from the condition (tests/models/test_conditioning.py).
  The denoiser at t > 0 reads them. The rule is by t, as for ``blind`` below, so the denoiser's own
  rows at t = 0 (the lowest noise level, sigma_0 = 0.006 on the cosine schedule at T = 1000, and the
  samplers' last step) do not read them either: by then the signal is already fixed.
- MLP_y's last layer starts at zero: a new run begins as the network without labels.

Wave conditioning (``model.wave_conditioning``, issue 28; needs label conditioning): e_w = MLP_w(u) reads
wave V of the recording, so that a virtual patient's series follows one latency-intensity function
(evaluation/wave_profile.py draws it) instead of each level's wave V regressing to the middle:

    u = [ present (1) | absent (1) | null (1) | z latency (1) | z amplitude (1) ]

from ``wave`` (B 3) = [present 1 / absent 0 / NaN: unknown, latency ms, amplitude µV]; z with the training
split's wave V statistics (DataStats), 0 where absent or unknown. Dropped to its null with
``model.wave_drop_prob``, and, like the labels, always null at t = 0 and under the guidance drop.

With ``model.wave_template`` the same wave V is also drawn where it lies: a channel beside x_t (B 1 L),

    m(τ) = amplitude / mean amplitude · exp(-(τ - latency)² / (2 · TEMPLATE_SIGMA_MS²)),   0 where absent or null,

which the stem reads (models/unet.py), so that placing the wave is a local operation for the U-Net rather than
a translation of one number into a position through FiLM.

With ``model.microphonic_conditioning`` the wave condition has a fourth column, the recording's microphonic
index (models.series.microphonic_index, neuropathy's sign: the series model reads it), and u two more entries,
[ known (1) | index (1), 0 where unknown ]; it shares wave V's null.

With ``model.noise_conditioning`` the wave condition's last column is the recording's residual noise level in µV
(models.series.residual_rms: what a recording holds above about 1 kHz), and u two more entries, [ known (1) |
z noise (1), 0 where unknown ] with z = (log10 µV - NOISE_LOG10_CENTRE) / NOISE_LOG10_SCALE. It is null at t = 0
and where the whole wave row is dropped (``model.wave_drop_prob``), but not under the guidance drop: the
unconditional branch of guidance reads the same noise level as the conditional one, so w extrapolates the type,
threshold and wave V and never the noise (read only in the conditional branch, a requested level came out
amplified, a slope of 1.32 in log10 at w = 2; docs/generate.md, "Noise level"). The residual noise of an
averaged ABR spans about a decade between recordings (sweeps, the patient's EEG and muscle); without the column
the denoiser drew each twin's noise from the average at its condition, and the loudest twins sat far beyond any
recording.

``blind`` columns (``model.blind_static``, issue 33) are set to their training mean at t = 0: the
pass the heads answer from does not read them (a recording's wave V is present or not whatever the
stated level); the denoiser at t > 0 reads every column.

Static parameters arrive in physical units [age (years), intensity (dB nHL), rate (/s), FMP] and are
standardized with the training-split statistics (buffers saved with the model). FMP is heavy-tailed
(0..1515): its standardized value is compressed with asinh (sign-preserving, ~log for large values).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from data.records import NUM_CLASSES
from data.stats import DataStats
from data.synthetic import NO_RESPONSE_THRESHOLD_DB

TEMPLATE_SIGMA_MS = 0.3  # the template's width: about a wave V's half width at a moderate level (data.synthetic)

FMP_INDEX = 3
LABEL_WIDTH = NUM_CLASSES + 4  # v: one-hot type, type null, z threshold, no response, threshold null
WAVE_WIDTH = 5  # u: present, absent, null, z latency, z amplitude
# model.noise_conditioning: log10 of the residual noise (µV) about an averaged ABR's typical 20 nV, in units of
# the spread between recordings (about 0.3 decades; data.synthetic: the patient's level and the recording's)
NOISE_LOG10_CENTRE, NOISE_LOG10_SCALE = -1.7, 0.3


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of t (B) taken as a float (Vaswani et al. 2017; Ho et al. 2020) -> (B dim)."""
    half = dim // 2
    n = torch.arange(half, device=t.device, dtype=torch.float32)  # (dim/2)
    freqs = torch.exp(-math.log(max_period) * n / half)  # (dim/2)
    angles = t.float()[:, None] * freqs[None]  # (B dim/2)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B 2*(dim/2))
    return nn.functional.pad(emb, (0, dim % 2))  # (B dim)


class LabelEmbedding(nn.Module):
    """e_y (B E) = MLP_y(v) of the type and threshold labels (module docstring: v, the nulls, no response)."""

    def __init__(self, E: int, stats: DataStats):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(LABEL_WIDTH, E), nn.SiLU(), nn.Linear(E, E))
        nn.init.zeros_(self.mlp[-1].weight)  # e_y = 0 at the start: the network begins as the one without labels
        nn.init.zeros_(self.mlp[-1].bias)
        self.register_buffer("threshold_mean", torch.tensor(float(stats.threshold_mean)))  # () dB nHL
        self.register_buffer("threshold_std", torch.tensor(float(stats.threshold_std)).clamp_min(1e-6))  # ()

    def forward(self, label: Tensor, threshold: Tensor, null: Tensor) -> Tensor:
        """label (B) int64, -1: the type's null; threshold (B) dB nHL, NaN: the threshold's null; null (B)
        bool: both nulls (t = 0, or the guidance drop)."""
        type_null = null | (label < 0)  # (B)
        threshold = threshold.float()
        threshold_null = null | torch.isnan(threshold)  # (B)
        none = (threshold >= NO_RESPONSE_THRESHOLD_DB) & ~threshold_null  # (B) "no response"
        onehot = nn.functional.one_hot(label.clamp_min(0), NUM_CLASSES).float() * ~type_null[:, None]  # (B 5)
        z = (threshold.nan_to_num(0.0) - self.threshold_mean) / self.threshold_std  # (B)
        z = torch.where(threshold_null | none, 0.0, z)  # (B)
        flags = torch.stack([type_null, none, threshold_null], dim=-1).float()  # (B 3)
        v = torch.cat([onehot, flags[:, :1], z[:, None], flags[:, 1:]], dim=-1)  # (B 9) as LABEL_WIDTH says
        return self.mlp(v)  # (B E)


def wave_present(wave: Tensor, null: Tensor) -> Tensor:
    """(B) bool: wave V marked present (column 0 is 1) in a row that is not ``null`` (B) bool; NaN is unknown."""
    return (wave[:, 0] > 0.5) & ~null & ~torch.isnan(wave[:, 0])


def condition_null(t: Tensor, drop_cond: Tensor) -> Tensor:
    """(B) bool: rows whose labels and wave V read as their nulls, the guidance drop and the answer pass (t = 0):
    the heads would learn to copy a condition they could read (no leakage)."""
    return drop_cond | (t == 0)


def known_value(value: Tensor, null: Tensor) -> Tensor:
    """(B 2) [known 1 / 0, value, 0 where unknown] of an optional condition ``value`` (B) (NaN: unknown), null in
    the rows ``null`` (B) bool."""
    known = ~null & torch.isfinite(value)  # (B)
    return torch.stack([known.float(), value.nan_to_num(0.0) * known], dim=-1)


class WaveEmbedding(nn.Module):
    """e_w (B E) = MLP_w(u) of wave V's presence, latency and amplitude, with ``microphonic`` the recording's
    microphonic index and with ``noise`` its residual noise level (module docstring: u, the null)."""

    def __init__(self, E: int, stats: DataStats, microphonic: bool = False, noise: bool = False):
        super().__init__()
        self.microphonic, self.noise = microphonic, noise
        self.columns = 3 + int(microphonic) + int(noise)  # of the wave tensor the network takes
        extra = 2 * (int(microphonic) + int(noise))  # a known bit and a value each
        self.mlp = nn.Sequential(nn.Linear(WAVE_WIDTH + extra, E), nn.SiLU(), nn.Linear(E, E))
        nn.init.zeros_(self.mlp[-1].weight)  # e_w = 0 at the start, as e_y
        nn.init.zeros_(self.mlp[-1].bias)
        for name in ("latency_mean", "latency_std", "amplitude_mean", "amplitude_std"):  # () ms, µV
            value = torch.tensor(float(getattr(stats, name)))
            self.register_buffer(name, value.clamp_min(1e-6) if name.endswith("std") else value)

    def forward(self, wave: Tensor, null: Tensor, noise_null: Tensor | None = None) -> Tensor:
        """wave (B columns): present (1 / 0 / NaN unknown), latency ms, amplitude µV[, microphonic index][, residual
        noise µV] (each NaN: unknown); null (B) bool; noise_null (B) bool, the noise column's (None: ``null``)."""
        wave = wave.float()
        unknown = null | torch.isnan(wave[:, 0])  # (B)
        present = wave_present(wave, null)  # (B)
        absent = ~present & ~unknown  # (B)
        z_lat = (wave[:, 1] - self.latency_mean) / self.latency_std  # (B)
        z_amp = (wave[:, 2] - self.amplitude_mean) / self.amplitude_std  # (B)
        z = torch.stack([z_lat, z_amp], dim=-1).nan_to_num(0.0) * present[:, None]  # (B 2)
        u = torch.cat([torch.stack([present, absent, unknown], dim=-1).float(), z], dim=-1)  # (B 5)
        if self.microphonic:
            u = torch.cat([u, known_value(wave[:, 3], null)], dim=-1)  # (B 7)
        if self.noise:
            z_noise = (torch.log10(wave[:, -1].clamp_min(1e-6)) - NOISE_LOG10_CENTRE) / NOISE_LOG10_SCALE  # (B)
            value = torch.where(wave[:, -1] > 0, z_noise, math.nan)  # (B) NaN: unknown
            u = torch.cat([u, known_value(value, null if noise_null is None else noise_null)], dim=-1)  # (B +2)
        return self.mlp(u)  # (B E)

    def template(self, wave: Tensor, null: Tensor, L: int, ms_per_sample: float) -> Tensor:
        """(B 1 L) the bump m(τ) of the module docstring at τ = 0, ms_per_sample, ... (L samples) for wave (B
        columns) as :meth:`forward` reads it; 0 for rows whose wave V is absent, unknown or ``null`` (B) bool."""
        wave = wave.float()
        present = wave_present(wave, null)  # (B)
        tau = torch.arange(L, device=wave.device, dtype=torch.float32) * ms_per_sample  # (L) ms
        lat, amp = wave[:, 1:2].nan_to_num(0.0), wave[:, 2:3].nan_to_num(0.0)  # (B 1) ms, µV
        bump = torch.exp(-0.5 * ((tau[None, :] - lat) / TEMPLATE_SIGMA_MS) ** 2)  # (B L)
        return (amp / self.amplitude_mean * bump * present[:, None])[:, None, :]  # (B 1 L)


class Conditioning(nn.Module):
    def __init__(self, E: int, stats: DataStats, blind: tuple[int, ...] = (), labels: bool = False,
                 waves: bool = False, microphonic: bool = False, noise: bool = False):
        super().__init__()
        self.E = E
        self.time_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.static_mlp = nn.Sequential(nn.Linear(4, E), nn.SiLU(), nn.Linear(E, E))
        self.null = nn.Parameter(0.02 * torch.randn(E))  # (E) the "no condition" embedding
        self.register_buffer("static_mean", torch.tensor(stats.static_mean, dtype=torch.float32))  # (4)
        self.register_buffer("static_std", torch.tensor(stats.static_std, dtype=torch.float32).clamp_min(1e-6))  # (4)
        # (4) 1 where the answer pass (t = 0) does not read the column; not saved: it comes from the config
        self.register_buffer("blind", torch.tensor([float(i in blind) for i in range(4)]), persistent=False)
        self.label = LabelEmbedding(E, stats) if labels else None  # model.label_conditioning (issue 28)
        self.wave = WaveEmbedding(E, stats, microphonic, noise) if waves else None  # model.wave_conditioning (issue 28)

    def standardize(self, static: Tensor) -> Tensor:
        z = (static.float() - self.static_mean) / self.static_std  # (B 4)
        return torch.cat([z[:, :FMP_INDEX], torch.asinh(z[:, FMP_INDEX:])], dim=-1)  # (B 4)

    def wave_template(self, t: Tensor, drop_cond: Tensor, wave: Tensor | None, L: int, ms_per_sample: float
                      ) -> Tensor | None:
        """(B 1 L) WaveEmbedding.template under :meth:`forward`'s null rule (condition_null); None where ``wave`` is
        None (every row's null: no bump). Needs wave conditioning."""
        return None if wave is None else self.wave.template(wave, condition_null(t, drop_cond), L, ms_per_sample)

    def forward(self, t: Tensor, static: Tensor, drop_cond: Tensor, label: Tensor | None = None,
                threshold: Tensor | None = None, wave: Tensor | None = None) -> Tensor:
        """t (B), static (B 4) physical units, drop_cond (B) bool; label (B) int64, threshold (B) dB nHL and
        wave (B 3) (None: every row's null) are read only with label (wave) conditioning, never at t = 0."""
        e_t = self.time_mlp(timestep_embedding(t, self.E))  # (B E)
        z = self.standardize(static)  # (B 4)
        # Blind columns read as the training mean (0 after standardization) at t = 0, the pass whose
        # heads answer about a recording: what it says then comes from the waveform alone.
        z = z * (1.0 - self.blind * (t == 0).to(z.dtype)[:, None])  # (B 4)
        e_s = self.static_mlp(z)  # (B E)
        e_s = torch.where(drop_cond[:, None], self.null.to(e_s.dtype), e_s)  # (B E)
        if self.label is None:
            return nn.functional.silu(e_t + e_s)  # (B E)
        B = t.shape[0]
        label = torch.full((B,), -1, dtype=torch.long, device=t.device) if label is None else label
        threshold = torch.full((B,), math.nan, device=t.device) if threshold is None else threshold
        null = condition_null(t, drop_cond)  # (B) the answer pass (t = 0) never reads the labels
        e_y = self.label(label, threshold, null)  # (B E)
        if self.wave is not None:
            wave = torch.full((B, self.wave.columns), math.nan, device=t.device) if wave is None else wave
            e_y = e_y + self.wave(wave, null, noise_null=t == 0)  # (B E) the noise level: under guidance's drop too
        return nn.functional.silu(e_t + e_s + e_y)  # (B E)
