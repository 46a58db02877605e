"""Waveform figures for the monitoring backends (real vs denoised, and generated signals).

The trainer's validation builds the tensors (it owns the model and the diffusion process) and
calls :func:`emit_figure`; TensorBoard shows it under Images, W&B as an image.
"""

from __future__ import annotations

from typing import Any, Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from data.records import SAMPLE_RATE_HZ  # noqa: E402
from training.callbacks.base import Callback, Record, TrainerView  # noqa: E402


class FigureView(TrainerView, Protocol):
    """What the figure pass reads beyond :class:`TrainerView`: the network's sampling parts
    (training.trainer.Trainer has them)."""

    ema: Any  # training.ema.EMA or None
    objective: Any  # training.objective.Objective: denoise and sample
    diffusion: Any
    device: torch.device

    def first_batch(self, split: str, n: int) -> dict[str, Tensor]: ...


def waveform_figure(real: Tensor, denoised: Tensor | None = None, generated: Tensor | None = None,
                    n: int = 4, title: str = "", static: Tensor | None = None, units: str = "normalized") -> Figure:
    """Up to ``n`` panels: real [B, 1, L] with its denoised estimate [B, 1, L] and a generated
    signal [B, 1, L] for the same condition (any of the last two may be None). Time in ms; the
    amplitude axis says ``units``; with ``static`` [B, 4] (physical units) each panel names its
    condition. One legend above the panels, so no trace is covered."""
    from training.figure_style import PAPER_RC, format_condition

    n = min(n, real.shape[0])
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.4), dpi=150, squeeze=False, sharey=True)
        t = [1e3 * i / SAMPLE_RATE_HZ for i in range(real.shape[-1])]  # ms
        for i, ax in enumerate(axes[0]):
            ax.plot(t, real[i, 0].detach().float().cpu().numpy(), color="k", lw=1.1, label="recorded")
            if denoised is not None:
                ax.plot(t, denoised[i, 0].detach().float().cpu().numpy(), color="tab:blue", lw=0.9, label="denoised")
            if generated is not None:
                ax.plot(t, generated[i, 0].detach().float().cpu().numpy(), color="tab:orange", lw=0.9,
                        alpha=0.8, label="generated")
            if static is not None:
                ax.set_title(format_condition(static[i].tolist()).replace(", age", "\nage"), fontsize=7)
            ax.set_xlabel("time (ms)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(f"amplitude ({units})")
        handles, labels = axes[0][0].get_legend_handles_labels()
        # inside the canvas: TensorBoard and W&B render the figure as drawn, without a tight bounding box
        fig.legend(handles, labels, loc="upper right", ncol=len(labels), frameon=False)
        if title:
            fig.suptitle(title, x=0.01, ha="left")
        fig.tight_layout(rect=(0, 0, 1, 0.88))
    return fig


def emit_figure(trainer: TrainerView, tag: str, fig: Figure) -> None:
    """Send ``fig`` to every backend as a ``kind="figure"`` record, then close it."""
    trainer.emit(Record("figure", trainer.step, trainer.epoch, data={"tag": tag}, figure=fig))
    plt.close(fig)


DENOISE_FRACTION = 0.3  # t = 0.3 T: a moderate noise level where the denoiser's quality shows
SAMPLE_STEPS = 20  # DDIM steps for the generated row: cheap enough for every validation


class WaveformFigureCallback(Callback):
    """At each validation (rank 0, ``logging.figures``): the first validation recordings, their
    one-step denoised estimate from x_t at t = 0.3 T, and a DDIM-20 sample for the same static
    condition (with the run's guidance, eta and clipping), in µV (de-normalized with the run's
    training statistics), or as z-scores under ``data.normalization: per_sample`` (each recording
    was scaled on its own: there is no µV to go back to). Each panel names its condition."""

    def on_validation_end(self, trainer: FigureView, metrics: dict[str, float]) -> None:
        if not (trainer.is_main and trainer.cfg.logging.figures and trainer.stage == "network"):
            return
        with torch.no_grad():
            real, denoised, generated, static, units = self._waveforms(trainer)
        fig = waveform_figure(real, denoised, generated, title=f"validation, step {trainer.step}", static=static,
                              units=units)
        emit_figure(trainer, "waveforms/real_denoised_generated", fig)

    @staticmethod
    def _waveforms(trainer: FigureView) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
        net = trainer.ema.shadow if trainer.ema is not None else trainer.model
        net.eval()
        batch = trainer.first_batch("val", 4)
        x0, static = batch["signal"], batch["static"]  # [n,1,L], [n,4]
        gen = torch.Generator(trainer.device).manual_seed(trainer.cfg.seed + 31)
        x0_hat = trainer.objective.denoise(net, x0, static, DENOISE_FRACTION, gen)
        steps = min(SAMPLE_STEPS, trainer.diffusion.T)
        generated = trainer.objective.sample(net, static, x0.shape[-1], gen, sampler="ddim", steps=steps)
        from data.stats import to_physical  # the one de-normalization: µV, or z-scores left as they are

        stats = trainer.data.stats
        real, est, gen = (to_physical(v, stats)[0].cpu() for v in (x0, x0_hat, generated))
        return real, est, gen, static.cpu(), to_physical(x0, stats)[1]  # static: physical units
