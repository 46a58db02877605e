"""Waveform figures for the monitoring backends (real vs denoised, and generated signals).

The trainer's validation builds the tensors (it owns the model and the diffusion process) and
calls :func:`emit_figure`; TensorBoard shows it under Images, W&B as an image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from training.callbacks.base import Callback, Record  # noqa: E402

if TYPE_CHECKING:
    from training.trainer import Trainer

FS_KHZ = 20.0  # samples per ms (20 kHz)


def waveform_figure(real: Tensor, denoised: Tensor | None = None, generated: Tensor | None = None,
                    n: int = 4, title: str = "") -> Figure:
    """Up to ``n`` panels: real [B, 1, L] with its denoised estimate [B, 1, L] and a generated
    signal [B, 1, L] for the same condition (any of the last two may be None). Time in ms."""
    n = min(n, real.shape[0])
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.6), squeeze=False, sharey=True)
    t = [i / FS_KHZ for i in range(real.shape[-1])]  # ms
    for i, ax in enumerate(axes[0]):
        ax.plot(t, real[i, 0].detach().float().cpu().numpy(), color="k", lw=1.2, label="real")
        if denoised is not None:
            ax.plot(t, denoised[i, 0].detach().float().cpu().numpy(), color="tab:blue", lw=1.0, label="denoised")
        if generated is not None:
            ax.plot(t, generated[i, 0].detach().float().cpu().numpy(), color="tab:orange", lw=1.0,
                    alpha=0.8, label="generated")
        ax.set_xlabel("time (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("amplitude (normalized)")
    axes[0][0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def emit_figure(trainer: Trainer, tag: str, fig: Figure) -> None:
    """Send ``fig`` to every backend as a ``kind="figure"`` record, then close it."""
    trainer.emit(Record("figure", trainer.step, trainer.epoch, data={"tag": tag}, figure=fig))
    plt.close(fig)


DENOISE_FRACTION = 0.3  # t = 0.3 T: a moderate noise level where the denoiser's quality shows
SAMPLE_STEPS = 20  # DDIM steps for the generated row: cheap enough for every validation


class WaveformFigureCallback(Callback):
    """At each validation (rank 0, ``logging.figures``): the first validation recordings, their
    one-step denoised estimate from x_t at t = 0.3 T, and a DDIM-20 sample for the same static
    condition (with the run's guidance, eta and clipping), all in µV (de-normalized with the run's
    training statistics)."""

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if not (trainer.is_main and trainer.cfg.logging.figures):
            return
        if getattr(trainer, "diffusion", None) is None:  # a trainer without a generative model (test fakes)
            return
        with torch.no_grad():
            real, denoised, generated = self._waveforms(trainer)
        fig = waveform_figure(real, denoised, generated, title=f"validation, step {trainer.step}")
        for ax in fig.axes:
            ax.set_ylabel("")
        fig.axes[0].set_ylabel("µV")
        emit_figure(trainer, "waveforms/real_denoised_generated", fig)

    @staticmethod
    def _waveforms(trainer: Trainer) -> tuple[Tensor, Tensor, Tensor]:
        net = trainer.ema.shadow if trainer.ema is not None else trainer.model
        net.eval()
        n = 4
        batch = trainer._to_device(next(iter(trainer._loader(trainer.data.val, shuffle_free_batch=n))))
        x0, static = batch["signal"], batch["static"]  # [n,1,L], [n,4]
        diff = trainer.diffusion
        gen = torch.Generator(trainer.device).manual_seed(trainer.cfg.seed + 31)
        t = torch.full((x0.shape[0],), int(DENOISE_FRACTION * diff.T), device=trainer.device, dtype=torch.long)
        x_t = diff.q_sample(x0, t, torch.randn(x0.shape, device=trainer.device, generator=gen))
        x0_hat, _ = diff.predict_x0_eps(net(x_t, t, static)["signal"], x_t, t)
        kw = diff.sampling_kwargs() | {"sampler": "ddim", "steps": min(SAMPLE_STEPS, diff.T)}  # the run's w, eta
        generated = diff.sample(lambda x, tt, drop: net(x, tt, static, drop_cond=drop)["signal"],
                                tuple(x0.shape), generator=gen, **kw)
        s = trainer.data.stats
        return tuple((v * s.signal_std + s.signal_mean).cpu() for v in (x0, x0_hat, generated))
