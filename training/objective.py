"""The training objective: what turns a batch into the six component losses (DESIGN.md).

In the spirit of ``p_losses`` in lucidrains' 1-D diffusion: one object owns the diffusion time t,
the noise, the classifier-free-guidance drop, the clean pass the heads read, the slicing of the
network's outputs into heads, and the component losses. The trainer keeps the loop (balancing,
clipping, stepping); training, validation and the waveform figures all
call this object, so none of them rebuilds a piece of it.

    objective = Objective(diffusion, meta_loss.components, cond_drop_prob=0.1, head_input="clean")
    out = objective(net, batch, generator, train=True)   # out.losses: {component: scalar}, out.features
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from data.records import UNKNOWN_LABEL
from models.series import microphonic_log_ratio, residual_rms
from models.unet import HEAD_OUTPUTS, WAVE_OUTPUTS
from training.augment import noise_catch
from training.components import COMPONENTS


@dataclass
class ObjectiveOutput:
    losses: dict[str, Tensor]  # component -> scalar, in COMPONENTS order (graph attached when training)
    features: list[Tensor]  # the shared features [h (2B L C0), z (2B Lb Cz)] the gradient balancers read


class Objective(nn.Module):
    """The six component losses of one batch for any network honouring the output contract.

    ``diffusion``: the forward process and the signal loss (training.diffusion.GaussianDiffusion);
    ``components``: the five head losses (training.losses.ComponentLosses); ``head_input``:
    ``"clean"`` — one forward over the noisy x_t and the clean x_0 at t = 0, the heads read the
    clean half (they answer questions about a recorded signal and see the clean signal at
    evaluation too) — or ``"noisy"``, the heads read x_t. ``autocast``: a context factory for
    mixed precision (bf16 on GPU); losses are computed in fp32. ``noise_catch``: the share of the heads'
    rows replaced by noise-only catch trials in training (training/augment.py; needs ``"clean"``), a share
    ``catch_surrogates`` of them phase surrogates of the row's recording, the others' coloured noise through a
    random recording filter with ``catch_band`` (training.augment.recording_band). ``label_drop``: (type, threshold)
    drop probabilities of a network with ``model.label_conditioning`` (None: a network without it): the
    denoiser's half reads the batch's type and threshold, each dropped to its null independently in
    training (:meth:`draw_label_drop`); the heads' half gets both nulls (the network enforces it too).
    ``wave_drop``: the drop probability of wave V's condition (``model.wave_conditioning``; None: a network
    without it), drawn after the labels' drops; the heads' half gets its null. ``wave_microphonic``
    (``model.microphonic_conditioning``): the wave condition's fourth column, each recording's microphonic index
    (models.series.microphonic_log_ratio of its clean signal), dropped with the rest. ``wave_noise_uv``
    (``model.noise_conditioning``): µV per unit of the standardized signal (DataStats.signal_std); the wave
    condition's last column is then each recording's residual noise in µV (models.series.residual_rms of its clean
    signal times it), dropped with the rest. ``signal_class_weights``: each
    recording's signal loss weighted by its type's class weight (``components.class_weights``, the class
    loss's), a weighted mean over the batch, so the rare types' waveforms are learned as their labels are.
    """

    def __init__(self, diffusion: nn.Module, components: nn.Module, *, cond_drop_prob: float,
                 head_input: Literal["clean", "noisy"],
                 autocast: Callable[[], AbstractContextManager[Any]] = nullcontext, noise_catch: float = 0.0,
                 catch_surrogates: float = 0.0, catch_band: bool = False,
                 label_drop: tuple[float, float] | None = None, wave_drop: float | None = None,
                 signal_class_weights: bool = False, wave_microphonic: bool = False,
                 wave_noise_uv: float | None = None) -> None:
        super().__init__()
        if wave_microphonic and wave_drop is None:
            raise ValueError("model.microphonic_conditioning: expected model.wave_conditioning as well")
        if wave_noise_uv is not None and wave_drop is None:
            raise ValueError("model.noise_conditioning: expected model.wave_conditioning as well")
        self.wave_microphonic, self.wave_noise_uv = wave_microphonic, wave_noise_uv
        self.signal_class_weights = signal_class_weights
        if head_input not in ("clean", "noisy"):
            raise ValueError(f"loss.head_input: expected 'clean' or 'noisy', found {head_input!r}")
        if label_drop is not None and head_input != "clean":
            raise ValueError("model.label_conditioning: expected loss.head_input 'clean' (the heads answer from the "
                             "pass at t = 0, which never reads the labels)")
        if wave_drop is not None and label_drop is None:
            raise ValueError("model.wave_conditioning: expected model.label_conditioning as well")
        self.label_drop, self.wave_drop = label_drop, wave_drop
        self.diffusion, self.components = diffusion, components
        if noise_catch and head_input != "clean":
            raise ValueError("training.noise_catch: expected loss.head_input 'clean' (catch rows are the heads' half)")
        self.cond_drop_prob, self.head_input, self.autocast = cond_drop_prob, head_input, autocast
        self.noise_catch, self.catch_surrogates, self.catch_band = noise_catch, catch_surrogates, catch_band

    def draw(self, shape: tuple[int, ...], device: torch.device, generator: torch.Generator, *, train: bool,
             shard: tuple[int, int] = (0, 1)) -> tuple[Tensor, Tensor, Tensor]:
        """(t [B], noise ``shape`` = [B,1,L], guidance drop [B]) for one batch, drawn from ``generator`` in
        that order. ``shard`` = (rank, world size): the draws are made for the global batch of world x B
        and this rank keeps its slice, so under DDP every rank sees distinct (t, eps) while the generator's
        state stays the same on every rank (rank 0's checkpoint then holds it for all)."""
        B, (r, n) = shape[0], shard
        mine = slice(r * B, (r + 1) * B)
        t = self.diffusion.sample_timesteps(n * B, device, generator=generator)[mine]  # [B]
        noise = torch.randn((n * B, *shape[1:]), device=device, generator=generator)[mine]  # [B,1,L]
        p_drop = self.cond_drop_prob if train else 0.0
        drop = (torch.rand(n * B, device=device, generator=generator) < p_drop)[mine]  # [B] classifier-free guidance
        return t, noise, drop

    def draw_label_drop(self, B: int, device: torch.device, generator: torch.Generator,
                        shard: tuple[int, int] = (0, 1)) -> tuple[Tensor, Tensor]:
        """(type dropped [B], threshold dropped [B]), independent draws with the ``label_drop`` probabilities,
        made after :meth:`draw` in training only (validation keeps every label, and draws nothing more than
        before); ``shard`` as in :meth:`draw`."""
        (r, n), (p_type, p_threshold) = shard, self.label_drop
        mine = slice(r * B, (r + 1) * B)
        drop_type = (torch.rand(n * B, device=device, generator=generator) < p_type)[mine]  # [B]
        drop_threshold = (torch.rand(n * B, device=device, generator=generator) < p_threshold)[mine]  # [B]
        return drop_type, drop_threshold

    def label_inputs(self, batch: dict[str, Tensor], generator: torch.Generator, *, train: bool,
                     shard: tuple[int, int]) -> dict[str, Tensor]:
        """The network's label keywords for the [denoiser half; heads' half] (2B): the batch's type and
        threshold, each dropped to its null (-1, NaN) as drawn; the heads' half all nulls. {} without labels."""
        if self.label_drop is None:
            return {}
        y, h = batch["label"], batch["threshold"].float()  # [B], [B] dB nHL
        if train:
            drop_type, drop_threshold = self.draw_label_drop(y.shape[0], y.device, generator, shard)
            y = torch.where(drop_type, torch.full_like(y, UNKNOWN_LABEL), y)
            h = torch.where(drop_threshold, torch.full_like(h, math.nan), h)
        labels = {"label": torch.cat([y, torch.full_like(y, UNKNOWN_LABEL)]),
                  "threshold": torch.cat([h, torch.full_like(h, math.nan)])}
        if self.wave_drop is not None:
            labels["wave"] = self.wave_inputs(batch, generator, train=train, shard=shard)
        return labels

    def wave_inputs(self, batch: dict[str, Tensor], generator: torch.Generator, *, train: bool,
                    shard: tuple[int, int]) -> Tensor:
        """[2B 3] wave V's condition: the batch's [present, latency ms, amplitude µV] (latency and amplitude
        NaN where absent; one more column with ``wave_microphonic``, the microphonic index, and one more with
        ``wave_noise_uv``, the residual noise µV, last), rows dropped to the null (all NaN) with ``wave_drop`` in
        training; the heads' half all nulls."""
        present = batch["peak_mask"].float()  # [B]
        B, (r, n) = present.shape[0], shard
        nan = torch.full_like(present, math.nan)
        wave = torch.stack([present, torch.where(present > 0, batch["peak_latency"].float(), nan),
                            torch.where(present > 0, batch["peak_amplitude"].float(), nan)], dim=-1)  # [B 3]
        if self.wave_microphonic:
            index = microphonic_log_ratio(batch["signal"][:, 0]).to(wave)  # [B] scale-free: the normalized signal
            wave = torch.cat([wave, index[:, None]], dim=-1)  # [B 4]
        if self.wave_noise_uv is not None:  # residual_rms ignores the standardization's shift, not its scale
            noise = residual_rms(batch["signal"][:, 0]).to(wave) * self.wave_noise_uv  # [B] µV
            wave = torch.cat([wave, noise[:, None]], dim=-1)  # [B 4 or 5]
        if train:
            drop = (torch.rand(n * B, device=present.device, generator=generator) < self.wave_drop)[r * B:(r + 1) * B]
            wave = torch.where(drop[:, None], math.nan, wave)  # [B 3]
        return torch.cat([wave, torch.full_like(wave, math.nan)])  # [2B 3]

    def forward(self, net: nn.Module, batch: dict[str, Tensor], generator: torch.Generator, *,
                train: bool, shard: tuple[int, int] = (0, 1)) -> ObjectiveOutput:
        """``batch``: the batch contract on the model's device; ``generator`` draws t, the noise and
        (when ``train``) the guidance drop (:meth:`draw`; resume reproduces the draws exactly)."""
        x0, static = batch["signal"], batch["static"]  # [B,1,L], [B,4]
        B = x0.shape[0]
        t, noise, drop = self.draw(tuple(x0.shape), x0.device, generator, train=train, shard=shard)
        labels = self.label_inputs(batch, generator, train=train, shard=shard)
        x_t = self.diffusion.q_sample(x0, t, noise)
        clean = self.head_input == "clean"
        # the heads' batch: with training.noise_catch, some rows become noise-only catch trials (training/augment.py)
        head_batch = (noise_catch(batch, self.noise_catch, generator, self.catch_surrogates,
                                  band=float(self.catch_band))
                      if train else batch)
        if clean:
            x_in = torch.cat([x_t, head_batch["signal"]])  # [2B,1,L]
            t_in = torch.cat([t, torch.zeros_like(t)])
            static_in = torch.cat([static, static])
            drop_in = torch.cat([drop, torch.zeros_like(drop)])  # heads always see the condition
        else:
            x_in, t_in, static_in, drop_in = x_t, t, static, drop
        with self.autocast():
            out = net(x_in, t_in, static_in, drop_cond=drop_in, return_features=True, **labels)
        heads = {k: out[k][B:].float() if clean else out[k].float() for k in (*HEAD_OUTPUTS, *WAVE_OUTPUTS) if k in out}
        losses = {"signal": self.diffusion.signal_loss(out["signal"][:B].float(), x0, noise, t,
                                                       self.signal_weights(batch["label"]))}
        losses.update(self.components(heads, head_batch))
        return ObjectiveOutput({k: losses[k] for k in COMPONENTS}, list(out["features"]))

    def signal_weights(self, label: Tensor) -> Tensor | None:
        """[B] each recording's signal-loss weight, its type's class weight; None without ``signal_class_weights``."""
        if not self.signal_class_weights:
            return None
        if bool((label < 0).any()):
            raise ValueError("loss.signal_class_weights: expected every training recording labelled with a type, "
                             f"found {int((label < 0).sum())} without one")
        return self.components.class_weights[label]

    @torch.no_grad()
    def denoise(self, net: nn.Module, x0: Tensor, static: Tensor, fraction: float,
                generator: torch.Generator) -> Tensor:
        """One-step estimate of x_0 [B,1,L] from x_t at t = ``fraction`` x T (the figures' middle row)."""
        t = torch.full((x0.shape[0],), int(fraction * self.diffusion.T), device=x0.device, dtype=torch.long)
        x_t = self.diffusion.q_sample(x0, t, torch.randn(x0.shape, device=x0.device, generator=generator))
        x0_hat, _ = self.diffusion.predict_x0_eps(net(x_t, t, static)["signal"], x_t, t)
        return x0_hat

    @torch.no_grad()
    def sample(self, net: nn.Module, static: Tensor, length: int, generator: torch.Generator,
               **overrides: Any) -> Tensor:
        """Signals [B,1,length] for the conditions ``static`` [B,4] with the run's sampler settings
        (guidance w, eta, clipping), ``overrides`` replacing any of them (e.g. ``steps=20``)."""
        kw = self.diffusion.sampling_kwargs() | overrides
        return self.diffusion.sample(lambda x, tt, drop: net(x, tt, static, drop_cond=drop)["signal"],
                                     (static.shape[0], 1, length), generator=generator, **kw)


def noise_scale(noise_conditioning: bool, stats: Any) -> float | None:
    """``Objective``'s ``wave_noise_uv`` (µV per unit of the standardized signal) for ``model.noise_conditioning``,
    None without it. Only a global standardization keeps the recordings' µV: under per-sample normalization every
    recording has unit spread and its noise level is lost (data.normalization, data/stats.py)."""
    if not noise_conditioning:
        return None
    if stats.normalization != "global":
        raise ValueError(f"model.noise_conditioning: expected data.normalization 'global' (the noise level in µV), "
                         f"found '{stats.normalization}'")
    return float(stats.signal_std)
