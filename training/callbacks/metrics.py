"""Producers of the step log and the epoch summary.

:class:`LossTracker` keeps window sums and maxima on the device: one stacked vector per optimizer
step, added in place, so the loop never waits for the GPU. The host reads the window once per
``training.log_frequency`` steps (:meth:`LossTracker.read`), which is the only sync it causes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from training.callbacks.base import Callback, Record, TrainerView
from training.callbacks.format import format_epoch_summary, format_step_line, stage_title, strip_prefix
from training.components import COMPONENTS

if TYPE_CHECKING:
    from training.step import StepOutput


def _components(out: StepOutput) -> list[str]:
    return [c for c in COMPONENTS if c in out.losses] + sorted(set(out.losses) - set(COMPONENTS))


def step_keys(out: StepOutput) -> tuple[str, ...]:
    """Record names of the values one step contributes to a window, in a fixed order."""
    return ("train/total", "train/weighted", *(f"train/{c}" for c in _components(out)), "grad_norm/total")


def step_vector(out: StepOutput) -> Tensor:
    """The values of :func:`step_keys` as one float64 device vector (no host sync)."""
    values = [out.objective, out.weighted_sum, *(out.losses[c] for c in _components(out)), out.grad_norm]
    device = out.objective.device if isinstance(out.objective, Tensor) else None
    # stack promotes mixed dtypes (bf16 under autocast); one cast of the whole vector afterwards
    return torch.stack([torch.as_tensor(v, device=device).detach().reshape(()) for v in values]).double()  # (K,)


class LossTracker:
    """Window sums and maxima of :func:`step_vector`; skipped steps are counted, not averaged."""

    def __init__(self) -> None:
        self.keys: tuple[str, ...] = ()
        self.sum: Tensor | None = None  # (K,) float64, on the loss device
        self.max: Tensor | None = None  # (K,)
        self.count = 0
        self.skipped = 0

    def update(self, out: StepOutput) -> None:
        if out.skipped:
            self.skipped += 1
            return
        keys, v = step_keys(out), step_vector(out)  # (K,)
        if self.sum is None or keys != self.keys:
            self.keys, self.sum, self.max, self.count = keys, torch.zeros_like(v), torch.full_like(v, -math.inf), 0
        elif self.sum.device != v.device:  # restored from a checkpoint on the CPU
            self.sum, self.max = self.sum.to(v.device), self.max.to(v.device)
        self.sum += v
        torch.maximum(self.max, v, out=self.max)
        self.count += 1

    def read(self, extra: dict[str, Tensor] | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """(window means, window maxima) of the steps seen since the last reset; ``extra`` device
        scalars (e.g. per-head gradient norms of this step) are read in the same host sync and
        added to the means."""
        extra = extra or {}
        if self.sum is None or self.count == 0:
            return {k: float(v) for k, v in extra.items()}, {}
        rows = [self.sum / self.count, self.max]
        if extra:
            rows.append(torch.stack([v.detach().reshape(()).to(self.sum) for v in extra.values()]))
        values = torch.cat(rows).tolist()  # this is a CPU-GPU sync point
        k = len(self.keys)
        means = dict(zip(self.keys, values[:k], strict=True))
        means.update(zip(extra, values[2 * k :], strict=True))
        return means, dict(zip(self.keys, values[k : 2 * k], strict=True))

    def reset(self) -> None:
        if self.sum is not None:
            self.sum.zero_()
            self.max.fill_(-math.inf)
        self.count = self.skipped = 0

    def state_dict(self) -> dict[str, Any]:
        if self.sum is None:
            return {"keys": [], "sum": [], "max": [], "count": 0, "skipped": self.skipped}
        return {"keys": list(self.keys), "sum": self.sum.tolist(), "max": self.max.tolist(),
                "count": self.count, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keys = tuple(state["keys"])
        self.sum = torch.tensor(state["sum"], dtype=torch.float64) if self.keys else None
        self.max = torch.tensor(state["max"], dtype=torch.float64) if self.keys else None
        self.count, self.skipped = int(state["count"]), int(state["skipped"])


class StepMetricsCallback(Callback):
    """Every ``training.log_frequency`` optimizer steps: one ``kind="step"`` record of window means.

    scalars: train/total (the objective), train/weighted, train/<component>, grad_norm/total
    (window means), grad_norm/<head> (at the log step: the trainer computes them only there),
    lr (current). data: window_steps, skipped_steps and the window maxima ("max"), which the
    health monitor reads for spikes and gradient explosions. Skipped (non-finite) steps are
    counted, not averaged in.
    """

    def __init__(self) -> None:
        self.tracker = LossTracker()
        self.last_step = -1  # the step of the last line: a step never logs twice

    def on_step_end(self, trainer: TrainerView, out: StepOutput) -> None:
        self.tracker.update(out)
        if out.step % trainer.cfg.training.log_frequency == 0 and out.step != self.last_step:
            self.last_step = out.step
            trainer.emit(self.make_record(out))
            self.tracker.reset()

    def make_record(self, out: StepOutput) -> Record:
        heads = {f"grad_norm/{h}": v for h, v in sorted(out.head_grad_norms.items())}
        means, maxima = self.tracker.read(heads)
        n, skipped = self.tracker.count, self.tracker.skipped
        if n:
            text = format_step_line(out.step, strip_prefix(means, "train/"))
        else:
            text = f"Step {out.step} - all {skipped} steps of this window were skipped (non-finite loss)"
        data = {"window_steps": n, "skipped_steps": skipped, "max": maxima}
        return Record("step", out.step, out.epoch, scalars={**means, "lr": float(out.lr)}, text=text, data=data)

    def state_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker.state_dict(), "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.last_step = int(state["last_step"])


class EpochSummaryCallback(Callback):
    """At each epoch end: one ``kind="epoch"`` record with the summary block as text.

    The trainer's ``summary`` has "train/<key>" (epoch means), "val/<key>" (when it validated) and
    "lr". In the record the epoch means of training become "train_epoch/<key>", so the dense
    step-window curves under "train/" are not interleaved with a second series of epoch means;
    "val/<key>", "lr" and any other key keep their names.
    """

    def on_epoch_end(self, trainer: TrainerView, epoch: int, summary: dict[str, float]) -> None:
        scalars = {("train_epoch/" + k[len("train/") :] if k.startswith("train/") else k): float(v)
                   for k, v in summary.items()}
        text = format_epoch_summary(epoch, trainer.max_epochs, summary, title=stage_title(trainer.stage))
        trainer.emit(Record("epoch", trainer.step, epoch, scalars=scalars, text=text, data={"stage": trainer.stage}))
