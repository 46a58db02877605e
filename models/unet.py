"""ABRNet: a hierarchical 1-D U-Net with S4D encoder, Transformer decoder, FiLM/CFG conditioning, six heads.

Shapes for the quickstart config (L = 200, widths 32/64/128, down_factors 2, 5):

    x_t (B 1 200) -> stem + position (B 200 32)
    encoder level 0: S4Block x n  (B 200 32)  -> skip 0 -> down x2 -> (B 100 64)
    encoder level 1: S4Block x n  (B 100 64)  -> skip 1 -> down x5 -> (B 20 128)
    bottleneck:      S4Block x n [+ self-attention block]  (B 20 128)  -> z = proj (B 20 head_dim)
    decoder level 1: up x5, merge skip 1, TransformerBlock x n (cross-attends skip 1)  (B 100 64)
    decoder level 0: up x2, merge skip 0, TransformerBlock x n (cross-attends skip 0)  (B 200 32)
    h = proj (B 200 32) -> signal (B 1 200); pooled(h, z) -> class, peak, threshold heads

Every block is FiLM-conditioned on c = embed(t) + embed(static) (null embedding where dropped), plus
embed(type, threshold) with ``model.label_conditioning`` (never at t = 0: models/conditioning.py).
Attention runs in the decoder (L = 100, 200 here: long enough that global mixing matters and cross-attention
to encoder features can pick the right latencies); the bottleneck's attention block is optional
(``model.bottleneck_attention``; bench/model.py measures it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from data.records import NUM_CLASSES, SAMPLE_RATE_HZ, STATIC_NAMES, WAVE_NAMES
from data.stats import DataStats
from data.waveform import MARK_SEARCH_MS
from models.blocks import S4Block, TransformerBlock
from models.conditioning import Conditioning
from models.config import ModelConfig
from models.heads import PooledHead, SignalHead, TargetScale, WaveMapHead, parabolic_peak, peak_candidates, pick_peaks

HEAD_KEYS = ("signal", "class", "peak", "threshold")
# The outputs the clinical heads answer with (the keys of read_heads besides "signal"): what the losses read.
HEAD_OUTPUTS = ("class_logits", "peak_logit", "peak_latency", "peak_amplitude", "threshold")
# The wave map head's further outputs (model.peak_head = "map"), for waves I, III, V (WAVE_NAMES):
# wave_logits (B 3 L) location logits, wave_presence (B 3) presence logits, wave_latency (B 3) ms and
# wave_amplitude (B 3) µV as picked, wave_soft_amplitude (B 3) µV the input under the location
# distribution (differentiable: the amplitude loss reads it).
WAVE_OUTPUTS = ("wave_logits", "wave_presence", "wave_latency", "wave_amplitude", "wave_soft_amplitude")
MS_PER_SAMPLE = 1e3 / SAMPLE_RATE_HZ
MARK_SEARCH_SAMPLES = round(MARK_SEARCH_MS / MS_PER_SAMPLE)  # the peak marker's ±0.25 ms
N_CANDIDATES = 8  # peaks per wave kept for a reader that weighs them against the series (read_candidates)


class Downsample(nn.Module):
    """(B L C) -> (B L/f C'): fold f neighbouring steps into channels, then mix (exact, no padding)."""

    def __init__(self, C: int, C_out: int, f: int):
        super().__init__()
        self.f = f
        self.proj = nn.Linear(f * C, C_out)

    def forward(self, x: Tensor) -> Tensor:
        B, L, C = x.shape
        return self.proj(x.reshape(B, L // self.f, self.f * C))  # (B L/f C')


class Upsample(nn.Module):
    """(B L C) -> (B L*f C'): the transpose of :class:`Downsample`."""

    def __init__(self, C: int, C_out: int, f: int):
        super().__init__()
        self.f, self.C_out = f, C_out
        self.proj = nn.Linear(C, f * C_out)

    def forward(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        return self.proj(x).reshape(B, L * self.f, self.C_out)  # (B L*f C')


class ABRNet(nn.Module):
    def __init__(self, cfg: ModelConfig, stats: DataStats, signal_length: int = 200):
        super().__init__()
        _check_factors(cfg.down_factors, signal_length)
        self.cfg, self.L = cfg, signal_length
        W, E, n = cfg.widths(), cfg.cond_dim, cfg.blocks_per_level

        def s4(C: int) -> S4Block:
            return S4Block(C, E, cfg.d_state, cfg.bidirectional, cfg.mlp_ratio, cfg.dropout, cfg.ssm_lr)

        def tf(C: int, cross: bool) -> TransformerBlock:
            return TransformerBlock(C, E, cfg.attn_heads, cfg.mlp_ratio, cfg.dropout, cross=cross)

        self.cond = Conditioning(E, stats, blind=tuple(STATIC_NAMES.index(n) for n in cfg.blind_static),
                                 labels=cfg.label_conditioning, waves=cfg.wave_conditioning,
                                 microphonic=cfg.microphonic_conditioning, noise=cfg.noise_conditioning)
        self.stem = nn.Linear(1, W[0])
        # model.wave_template: wave V's bump as a second input channel; starts at zero, as the embeddings do
        self.template_stem = nn.Linear(1, W[0], bias=False) if cfg.wave_template else None
        if self.template_stem is not None:
            nn.init.zeros_(self.template_stem.weight)
        self.pos = nn.Parameter(0.02 * torch.randn(signal_length, W[0]))  # (L C0) learned absolute position
        levels = range(len(cfg.down_factors))
        self.encoder = nn.ModuleList(nn.ModuleList(s4(W[i]) for _ in range(n)) for i in levels)
        self.down = nn.ModuleList(Downsample(W[i], W[i + 1], f) for i, f in enumerate(cfg.down_factors))
        mid = [s4(W[-1]) for _ in range(n)] + ([tf(W[-1], cross=False)] if cfg.bottleneck_attention else [])
        self.bottleneck = nn.ModuleList(mid)
        self.to_z = nn.Sequential(nn.LayerNorm(W[-1]), nn.Linear(W[-1], cfg.head_dim))
        self.up = nn.ModuleList(Upsample(W[i + 1], W[i], f) for i, f in enumerate(cfg.down_factors))
        self.merge = nn.ModuleList(nn.Linear(2 * W[i], W[i]) for i in levels)
        self.decoder = nn.ModuleList(nn.ModuleList(tf(W[i], cross=True) for _ in range(n)) for i in levels)
        self.to_h = nn.Sequential(nn.LayerNorm(W[0]), nn.Linear(W[0], W[0]))
        pooled = {"hidden": cfg.head_dim, "heads": cfg.attn_heads, "dropout": cfg.dropout}
        self.heads = nn.ModuleDict(
            {
                "signal": SignalHead(W[0]),
                "class": PooledHead(W[0], cfg.head_dim, n_out=NUM_CLASSES, **pooled),
                "peak": (WaveMapHead(W[0], cfg.head_dim, n_waves=len(WAVE_NAMES), **pooled) if cfg.peak_head == "map"
                         else PooledHead(W[0], cfg.head_dim, n_out=3, **pooled)),  # pooled: logit, latency, amplitude
                "threshold": PooledHead(W[0], cfg.head_dim, n_out=1, **pooled),
            }
        )
        self.target_scale = TargetScale(stats)
        # µV = normalized * std + mean (global normalization; training.config refuses the map head with
        # per-sample z-scores, whose amplitudes cannot be read back in µV)
        self.register_buffer("signal_scale", torch.tensor([stats.signal_mean, stats.signal_std], dtype=torch.float32))

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        static: Tensor,
        drop_cond: Tensor | None = None,
        return_features: bool = False,
        *,
        label: Tensor | None = None,
        threshold: Tensor | None = None,
        wave: Tensor | None = None,
    ) -> dict[str, Tensor | list[Tensor]]:
        """x_t (B 1 L) normalized signal; t (B) diffusion step (0 = clean); static (B 4) physical units;
        drop_cond (B) bool, True: null condition for that sample. None: in training mode each sample is
        dropped with probability ``cfg.cond_drop_prob`` (global RNG); in eval mode none is dropped.
        label (B) int64 class index (-1: the type's null) and threshold (B) dB nHL (NaN: the threshold's
        null): only with ``model.label_conditioning`` (None: every row's null); rows at t = 0 never read
        them (models/conditioning.py). The caller draws their training drops (training.objective). wave (B 3)
        [present 1 / 0 / NaN, latency ms, amplitude µV]: only with ``model.wave_conditioning``, the same rules;
        one more column with ``model.microphonic_conditioning``, the recording's microphonic index, and one more
        with ``model.noise_conditioning``, its residual noise µV, last (each NaN: unknown)."""
        B = self._check_inputs(x_t, t, static, drop_cond)
        self._check_labels(B, label, threshold)
        self._check_wave(B, wave)
        if drop_cond is None:
            drop_cond = torch.zeros(B, dtype=torch.bool, device=x_t.device)
            if self.training and self.cfg.cond_drop_prob > 0:
                drop_cond = torch.rand(B, device=x_t.device) < self.cfg.cond_drop_prob
        c = self.cond(t, static, drop_cond.bool(), label, threshold, wave)  # (B E)
        template = None if self.template_stem is None else \
            self.cond.wave_template(t, drop_cond.bool(), wave, self.L, MS_PER_SAMPLE)  # (B 1 L) or None
        h, z = self.trunk(x_t, c, template)  # (B L C0), (B Lb head_dim)
        out = self.read_heads(h, z, x_t)
        if return_features:
            out["features"] = [h, z]
        return out

    def trunk(self, x_t: Tensor, c: Tensor, template: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x_t (B 1 L), c (B E), template (B 1 L) wave V's bump (model.wave_template) or None."""
        x = self.stem(x_t.transpose(1, 2)) + self.pos  # (B L C0)
        if template is not None:
            x = x + self.template_stem(template.to(x.dtype).transpose(1, 2))  # (B L C0)
        skips = []
        for blocks, down in zip(self.encoder, self.down, strict=True):
            for block in blocks:
                x = block(x, c)  # (B Li Ci)
            skips.append(x)
            x = down(x)  # (B Li/f Ci+1)
        for block in self.bottleneck:
            x = block(x, c)  # (B Lb Cb)
        z = self.to_z(x)  # (B Lb head_dim)
        for i in reversed(range(len(skips))):
            x = self.merge[i](torch.cat([self.up[i](x), skips[i]], dim=-1))  # (B Li Ci)
            for block in self.decoder[i]:
                x = block(x, c, context=skips[i])  # (B Li Ci)
        return self.to_h(x), z  # (B L C0), (B Lb head_dim)

    def read_heads(self, h: Tensor, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        """h (B L C0), z (B Lb Cz), x (B 1 L) the normalized input the map head reads values from."""
        out = {
            "signal": self.heads["signal"](h).float(),  # (B 1 L)
            "class_logits": self.heads["class"](h, z).float(),  # (B 5)
            "threshold": self.target_scale(self.heads["threshold"](h, z)[:, 0], 2),  # (B) dB nHL
        }
        if self.cfg.peak_head == "map":
            out.update(self.read_waves(h, z, x))
            V = WAVE_NAMES.index("V")
            out |= {"peak_logit": out["wave_presence"][:, V], "peak_latency": out["wave_latency"][:, V],
                    "peak_amplitude": out["wave_amplitude"][:, V]}
            return out
        peak = self.heads["peak"](h, z).float()  # (B 3)
        return out | {
            "peak_logit": peak[:, 0],  # (B)
            "peak_latency": self.target_scale(peak[:, 1], 0),  # (B) ms
            "peak_amplitude": self.target_scale(peak[:, 2], 1),  # (B) µV
        }

    def read_waves(self, h: Tensor, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        """The wave map head's outputs (WAVE_OUTPUTS). The marker is replayed at the map's most likely
        sample (the largest input sample within ±0.25 ms of it, models.heads.pick_peaks); the input's own
        parabola there gives latency and amplitude (no gradient: the losses read the logits and the soft
        amplitude)."""
        logits, presence = self.heads["peak"](h, z, x)  # (B K L), (B K)
        x_uv = (x[:, 0].float() * self.signal_scale[1] + self.signal_scale[0]).unsqueeze(1)  # (B 1 L) µV
        with torch.no_grad():
            best = pick_peaks(logits, x[:, 0].float(), MARK_SEARCH_SAMPLES)  # (B K) sample index
            pos, amp = parabolic_peak(x_uv.expand_as(logits), best)  # (B K) samples, µV
        soft = (torch.softmax(logits, dim=-1) * x_uv).sum(-1)  # (B K) µV
        return {"wave_logits": logits, "wave_presence": presence, "wave_latency": pos * MS_PER_SAMPLE,
                "wave_amplitude": amp, "wave_soft_amplitude": soft}

    @torch.no_grad()
    def read_candidates(self, logits: Tensor, x: Tensor, m: int = N_CANDIDATES) -> dict[str, Tensor]:
        """Each wave's ``m`` most likely peaks (models.heads.peak_candidates), read as read_waves reads
        its one answer: logits (B K L) "wave_logits", x (B 1 L) the normalized input -> "latency" (ms),
        "amplitude" (µV) and "logp" (the map's log-probability), each (B K m); candidate 0 is the answer."""
        x_uv = x[:, 0].float() * self.signal_scale[1] + self.signal_scale[0]  # (B L) µV
        index, logp = peak_candidates(logits, x[:, 0].float(), MARK_SEARCH_SAMPLES, m)  # (B K m)
        B, K, _ = index.shape
        pos, amp = parabolic_peak(x_uv[:, None, :].expand(B, K * m, -1), index.reshape(B, K * m))  # (B K*m)
        return {"latency": pos.reshape(B, K, m) * MS_PER_SAMPLE, "amplitude": amp.reshape(B, K, m), "logp": logp}

    def _check_inputs(self, x_t: Tensor, t: Tensor, static: Tensor, drop_cond: Tensor | None) -> int:
        if x_t.dim() != 3 or x_t.shape[1:] != (1, self.L):
            raise ValueError(f"ABRNet input x_t: expected shape [B, 1, {self.L}], found {list(x_t.shape)}")
        B = x_t.shape[0]
        if t.shape != (B,):
            raise ValueError(f"ABRNet input t: expected shape [{B}], found {list(t.shape)}")
        if static.shape != (B, 4):
            raise ValueError(f"ABRNet input static: expected shape [{B}, 4], found {list(static.shape)}")
        if drop_cond is not None and (drop_cond.shape != (B,) or drop_cond.dtype != torch.bool):
            raise ValueError(
                f"ABRNet input drop_cond: expected a bool tensor of shape [{B}], "
                f"found {drop_cond.dtype} {list(drop_cond.shape)}"
            )
        return B

    @property
    def label_conditioned(self) -> bool:
        """Whether the network reads type and threshold labels (``model.label_conditioning``)."""
        return self.cond.label is not None

    def _check_labels(self, B: int, label: Tensor | None, threshold: Tensor | None) -> None:
        if (label is not None or threshold is not None) and not self.label_conditioned:
            raise ValueError("ABRNet input label/threshold: expected None (the network was built without "
                             "model.label_conditioning), found a tensor")
        if label is not None and (label.shape != (B,) or label.dtype != torch.long):
            raise ValueError(f"ABRNet input label: expected an int64 tensor of shape [{B}], "
                             f"found {label.dtype} {list(label.shape)}")
        if threshold is not None and (threshold.shape != (B,) or not threshold.is_floating_point()):
            raise ValueError(f"ABRNet input threshold: expected a float tensor of shape [{B}], "
                             f"found {threshold.dtype} {list(threshold.shape)}")

    @property
    def wave_conditioned(self) -> bool:
        """Whether the network reads wave V's presence, latency and amplitude (``model.wave_conditioning``)."""
        return self.cond.wave is not None

    @property
    def microphonic_conditioned(self) -> bool:
        """Whether the wave condition also holds the microphonic index (``model.microphonic_conditioning``)."""
        return self.cond.wave is not None and self.cond.wave.microphonic

    @property
    def noise_conditioned(self) -> bool:
        """Whether the wave condition's last column is the residual noise level (``model.noise_conditioning``)."""
        return self.cond.wave is not None and self.cond.wave.noise

    def _check_wave(self, B: int, wave: Tensor | None) -> None:
        if wave is None:
            return
        if not self.wave_conditioned:
            raise ValueError("ABRNet input wave: expected None (the network was built without "
                             "model.wave_conditioning), found a tensor")
        C = self.cond.wave.columns
        if wave.shape != (B, C) or not wave.is_floating_point():
            raise ValueError(f"ABRNet input wave: expected a float tensor of shape [{B}, {C}], "
                             f"found {wave.dtype} {list(wave.shape)}")

    # ------------------------------------------------------------------ parameter views

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer every head reads (GradNorm's W): the projection producing h."""
        return list(self.to_h[-1].parameters())

    def head_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {k: list(self.heads[k].parameters()) for k in HEAD_KEYS}

    def shared_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for ps in self.head_parameters().values() for p in ps}
        return [p for p in self.parameters() if id(p) not in head]

    def trunk_parameters(self) -> list[nn.Parameter]:
        """The shared parameters every component's loss reaches (bench/task_gradients.py): the shared
        ones less ``to_z`` (only the pooled heads read z; the signal head reads h alone) and the
        conditioning's null embedding (only the signal loss sees a dropped condition: the heads' clean
        pass never drops it)."""
        only_some = {id(p) for p in [*self.to_z.parameters(), self.cond.null]}
        return [p for p in self.shared_parameters() if id(p) not in only_some]

    def parameter_table(self) -> str:
        """Parameter count per block, one line each, then the total."""
        rows = []
        for name, child in self.named_children():
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                rows += [(f"{name}.{k}", _count(m)) for k, m in child.named_children()]
            else:
                rows.append((name, _count(child)))
        rows.append(("pos", self.pos.numel()))
        rows = [r for r in rows if r[1] > 0]
        width = max(len(r[0]) for r in rows)
        lines = [f"{'block':<{width}}  {'params':>11}"]
        lines += [f"{name:<{width}}  {n:>11,}" for name, n in rows]
        lines.append(f"{'total':<{width}}  {_count(self):>11,}")
        return "\n".join(lines)


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _check_factors(factors: list[int], L: int) -> None:
    total = math.prod(factors)
    if L % total:
        raise ValueError(
            f"model.down_factors: expected factors whose product divides the signal length {L}, "
            f"found {factors} (product {total})"
        )


def build_model(cfg: ModelConfig, stats: DataStats, signal_length: int = 200) -> ABRNet:
    """The network of DESIGN.md for ``cfg``; refuses down_factors whose product does not divide L."""
    return ABRNet(cfg, stats, signal_length)
