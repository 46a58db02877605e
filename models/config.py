"""Config section `model`: the hierarchical U-Net's shape and conditioning.

The defaults are the quickstart network (well under 1M parameters, trains on CPU in minutes).
The full 10-30M-parameter network is configured in ``configs/config.yaml``; its key values are
pinned in ``tests/models/test_config.py`` (``DEFAULT_SIZE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from data.schema import spec

STATIC_NAMES = ("age", "intensity", "rate", "fmp")  # the static vector's columns (DESIGN.md batch contract)


@dataclass
class ModelConfig:
    base_channels: int = spec(16, ge=4, help="channels at the first level")
    channel_mults: list[int] = spec([1, 2, 4], help="channel multiplier per level")
    down_factors: list[int] = spec(
        [2, 5], help="downsampling between levels (one fewer than levels); product divides L = 200"
    )
    blocks_per_level: int = spec(1, ge=1, help="S4D blocks per encoder level, Transformer blocks per decoder level")
    d_state: int = spec(32, ge=2, help="S4D state size N (N/2 complex conjugate pairs); even")
    bidirectional: bool = spec(True, help="S4D sees the whole signal (two kernels, one flipped); False: causal")
    bottleneck_attention: bool = spec(False, help="add a self-attention block in the bottleneck (see bench/model.py)")
    attn_heads: int = spec(1, ge=1, help="attention heads in Transformer blocks and head pooling")
    mlp_ratio: int = spec(2, ge=1, help="hidden width of every block MLP, as a multiple of its channels")
    cond_dim: int = spec(64, ge=8, help="width of the timestep + static-parameter embedding (FiLM input)")
    head_dim: int = spec(32, ge=4, help="hidden width of the class, peak and threshold heads")
    dropout: float = spec(0.0, ge=0.0, lt=1.0)
    cond_drop_prob: float = spec(0.1, ge=0.0, le=1.0, help="classifier-free guidance: drop the condition with p")
    ssm_lr: float = spec(1e-3, gt=0.0, help="learning rate of S4D log_dt and A (no weight decay)")
    # The schema default stays the earlier head so that runs saved before the key existed load as they
    # were trained; the shipped configs choose "map" (docs/waves.md has the measurements).
    peak_head: Literal["map", "pooled"] = spec(
        "pooled",
        help="'map': waves I, III, V located per sample on the input (docs/waves.md; the shipped configs); "
             "'pooled': the earlier wave-V-only regression from pooled features")

    # Issue 33: the answers (the heads' pass at t = 0) can be made blind to static values, so that a
    # recording's answers come from its waveform alone; the series level still reads every value.
    blind_static: list[str] = spec(
        [], help="static values the answer pass (t = 0) does not read: any of age, intensity, rate, fmp "
                 "(docs/waves.md, 'Blind to the stated level'); the denoiser at t > 0 reads them all")

    # Issue 28: the denoiser (t > 0) can be conditioned on the hearing-loss type and threshold as well, so that
    # evaluation.generate makes virtual patients of a chosen type and threshold (models/conditioning.py,
    # docs/generate.md). Off by default: runs and checkpoints saved before the key existed load as they were.
    label_conditioning: bool = spec(
        False, help="condition the denoiser (t > 0) on hearing-loss type and threshold too (docs/generate.md); "
                    "the heads' answer pass at t = 0 never reads them; needs loss.head_input 'clean'")
    type_drop_prob: float = spec(
        0.2, ge=0.0, le=1.0, help="label_conditioning: drop the type (its own null) with p in training, "
                                  "independently of the threshold, so that --threshold alone works")
    threshold_drop_prob: float = spec(
        0.2, ge=0.0, le=1.0, help="label_conditioning: drop the threshold (its own null) with p in training, "
                                  "independently of the type, so that --type alone works")
    # Issue 28: wave V of each recording (present or absent, latency, amplitude) as a condition too, so that a
    # virtual patient's series follows a latency-intensity function drawn for that ear (evaluation/wave_profile.py)
    # instead of regressing to the middle. Needs label_conditioning (the same null rule at t = 0).
    wave_conditioning: bool = spec(
        False, help="condition the denoiser (t > 0) on wave V's presence, latency and amplitude too "
                    "(docs/generate.md); needs label_conditioning")
    wave_drop_prob: float = spec(
        0.2, ge=0.0, le=1.0, help="wave_conditioning: drop wave V's condition (its own null) with p in training, "
                                  "so that type and threshold alone still work")

    # Issue 28: the same wave V also drawn where it lies. Through the FiLM embedding alone the denoiser must turn a
    # latency into a place; two trainings of one recipe differed in how well they did (docs/generate.md, "Wave V
    # as a place"). With the template the input gets a second channel, a bump at the requested latency.
    wave_template: bool = spec(
        False, help="with wave_conditioning: wave V's condition also enters the stem as a channel beside x_t, a "
                    "Gaussian bump of the requested amplitude at the requested latency (0 where absent, unknown "
                    "or null)")

    # Issue 28: neuropathy's sign (the cochlear microphonic), which the twins of a wave-conditioned network lacked
    # although the series model reads it (docs/generate.md), as a fourth column of the wave condition.
    microphonic_conditioning: bool = spec(
        False, help="with wave_conditioning: the wave condition holds each recording's microphonic index too "
                    "(models.series.microphonic_index of the training signal; generation draws it per ear from "
                    "the run's wave profile)")

    # Issue 28: the residual noise level of each recording as the wave condition's last column. Without it the
    # denoiser drew each twin's noise from the average at its condition: too loud on average for İTİK and
    # NÖROPATİ, and a tail far beyond any recording. Tried with two seeds: the noise matched for SNİK and İTİK,
    # but the twins read back worse, so configs/virtual_patients.yaml leaves it off (docs/generate.md, "Noise level").
    noise_conditioning: bool = spec(
        False, help="with wave_conditioning: the wave condition holds each recording's residual noise level too "
                    "(models.series.residual_rms of the training signal, µV; generation draws it per ear from the "
                    "run's wave profile, or evaluation.generate --noise-uv states it)")

    def __post_init__(self) -> None:
        if self.noise_conditioning and not self.wave_conditioning:
            raise ValueError("model.noise_conditioning: expected model.wave_conditioning true as well (the noise "
                             "level is a column of the wave condition), found false")
        if self.microphonic_conditioning and not self.wave_conditioning:
            raise ValueError("model.microphonic_conditioning: expected model.wave_conditioning true as well (the "
                             "microphonic index is a column of the wave condition), found false")
        if self.wave_template and not self.wave_conditioning:
            raise ValueError("model.wave_template: expected model.wave_conditioning true as well (the template draws "
                             "wave V's condition), found false")
        if self.wave_conditioning and not self.label_conditioning:
            raise ValueError("model.wave_conditioning: expected model.label_conditioning true as well (wave V's "
                             "condition rides on the labels' embedding and its null rule), found false")
        unknown = [v for v in self.blind_static if v not in STATIC_NAMES]
        if unknown or len(set(self.blind_static)) != len(self.blind_static):
            raise ValueError(f"model.blind_static: expected distinct names among {', '.join(STATIC_NAMES)}, "
                             f"found {self.blind_static}")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(
                f"model.channel_mults: expected a non-empty list of integers >= 1, found {self.channel_mults}"
            )
        if len(self.down_factors) != len(self.channel_mults) - 1:
            raise ValueError(
                f"model.down_factors: expected {len(self.channel_mults) - 1} factors (one fewer than "
                f"model.channel_mults), found {len(self.down_factors)}: {self.down_factors}"
            )
        if any(f < 2 for f in self.down_factors):
            raise ValueError(f"model.down_factors: expected integers >= 2, found {self.down_factors}")
        if self.d_state % 2:
            raise ValueError(f"model.d_state: expected an even state size (conjugate pairs), found {self.d_state}")
        widths = [self.base_channels * m for m in self.channel_mults]
        bad = [w for w in widths if w % self.attn_heads]
        if bad:
            raise ValueError(
                f"model.attn_heads: expected a divisor of every level width {widths}, found {self.attn_heads}"
            )
        if self.head_dim % self.attn_heads:
            raise ValueError(
                f"model.head_dim: expected a multiple of attn_heads={self.attn_heads}, found {self.head_dim}"
            )

    def widths(self) -> list[int]:
        """Channels per level, finest first."""
        return [self.base_channels * m for m in self.channel_mults]


# The full-size network (10-30M parameters) that configs/config.yaml's `model:` section holds; bench/model.py
# and tests/models/test_config.py build it from here.
FULL_SIZE: dict = {
    "base_channels": 128,
    "channel_mults": [1, 2, 4],
    "down_factors": [2, 5],
    "blocks_per_level": 2,
    "d_state": 64,
    "bidirectional": True,
    "bottleneck_attention": False,
    "attn_heads": 8,
    "mlp_ratio": 2,
    "cond_dim": 512,
    "head_dim": 256,
}
