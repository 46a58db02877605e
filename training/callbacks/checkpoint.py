"""Checkpointing and early stopping, as callbacks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from training.callbacks.base import Callback, TrainerView
from training.checkpoint import deferred_signals, save_checkpoint
from training.rundir import data_fingerprint

if TYPE_CHECKING:
    from training.step import StepOutput


class CheckpointCallback(Callback):
    """``last.pt`` every epoch (and every ``training.checkpoint_every_steps`` steps), ``best.pt``
    when the monitored metric (``training.early_stopping.metric``/``mode``) improves, and an
    interrupt checkpoint (``last.pt``) on SIGINT/SIGTERM, said ("checkpoint saved") once it is in
    place. Each checkpoint carries the data fingerprint, so a resume on other data is refused.
    Rank 0 alone writes."""

    def __init__(self) -> None:
        self.best: float | None = None

    def _save(self, trainer: TrainerView, name: str, say: bool = False) -> None:
        if not trainer.is_main:
            return
        trainer.callbacks.flush(trainer)  # sinks flush first, so the checkpoint never runs ahead of the logs
        path = trainer.run_dir / "checkpoints" / name
        with deferred_signals():  # a signal now is handled after the file is in place and said so
            save_checkpoint({**trainer.state_dict(), "data_fingerprint": data_fingerprint(trainer.data)}, path)
            if say:
                trainer.logger.warning("checkpoint saved: %s; continue with --resume %s", path, trainer.run_dir)

    def on_step_end(self, trainer: TrainerView, out: StepOutput) -> None:
        every = trainer.cfg.training.checkpoint_every_steps
        if every and out.step % every == 0 and trainer.epoch_step < trainer.steps_per_epoch:
            self._save(trainer, "last.pt")

    def on_epoch_end(self, trainer: TrainerView, epoch: int, summary: dict[str, float]) -> None:
        es = trainer.cfg.training.early_stopping
        value = summary.get(es.metric)
        improved = trainer.stage == "network" and value is not None and math.isfinite(value) and (
            self.best is None or (value < self.best if es.mode == "min" else value > self.best)
        )
        if improved:
            self.best = value  # before saving, so the saved state knows it
            # best.pt first: a kill between the two writes then replays this epoch from the older
            # last.pt and writes best.pt again; the other order would lose this best.pt for good.
            self._save(trainer, "best.pt")
        self._save(trainer, "last.pt")

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        from training.step import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted):
            self._save(trainer, "last.pt", say=True)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]


class EarlyStoppingCallback(Callback):
    """Stop when the monitored validation metric has not improved by more than ``min_delta`` for
    ``patience`` validations."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.bad = 0

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        es = trainer.cfg.training.early_stopping
        if not es.enabled or trainer.stage != "network":  # the metric is the network's
            return
        if es.metric not in metrics:
            raise ValueError(
                f"config key 'training.early_stopping.metric': expected one of {sorted(metrics)}, found {es.metric!r}"
            )
        value = metrics[es.metric]
        delta = (self.best - value) if (self.best is not None and es.mode == "min") else (
            (value - self.best) if self.best is not None else math.inf
        )
        if delta > es.min_delta:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad >= es.patience:
            trainer.should_stop = True
            trainer.logger.info(
                "early stopping: %s has not improved by more than %g for %d validations (best %.6g)",
                es.metric, es.min_delta, self.bad, self.best,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad = state["best"], state["bad"]
