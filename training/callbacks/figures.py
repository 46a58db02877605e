"""Waveform figures for the monitoring backends (real vs denoised, and generated signals).

The trainer's validation builds the tensors (it owns the model and the diffusion process) and
calls :func:`emit_figure`; TensorBoard shows it under Images, W&B as an image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from training.callbacks.base import Record  # noqa: E402

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
