"""Monitoring callbacks: producers turn trainer events into records, sinks write every record.

    producers   RunSummaryCallback       curated hparams at the start, final/best metrics at the end ("hparams")
                StepMetricsCallback      step window means every log_frequency steps ("step")
                EpochSummaryCallback     the epoch block ("epoch")
                LossWeightLoggerCallback balancer weights ("weights"), index mapping ("text")
    sinks       ConsoleCallback          tqdm bar + log lines through logging.getLogger("abr")
                JsonlCallback            run_dir/metrics.jsonl
                TensorBoardCallback      run_dir/tensorboard
                WandbCallback            run_dir/wandb
    reactor     HealthMonitorCallback    reads step/weight records, emits "alert" records

Sinks only implement ``on_record``, so every backend shows the same numbers. See docs/monitoring.md.
"""

from __future__ import annotations

from training.callbacks.base import Callback, Record
from training.callbacks.console import ConsoleCallback
from training.callbacks.figures import WaveformFigureCallback
from training.callbacks.health import HealthMonitorCallback
from training.callbacks.jsonl import JsonlCallback
from training.callbacks.metrics import EpochSummaryCallback, LossTracker, StepMetricsCallback
from training.callbacks.run_summary import RunSummaryCallback
from training.callbacks.tensorboard_logger import TensorBoardCallback
from training.callbacks.wandb_logger import WandbCallback
from training.callbacks.weights import LossWeightLoggerCallback
from training.config import Config


def default_callbacks(cfg: Config) -> list[Callback]:
    """Producers, then sinks, then the health monitor (its alerts follow the record that caused
    them in every sink wherever it stands: the bus hands them out after that record). TensorBoard
    and W&B follow ``logging.use_tensorboard`` / ``use_wandb``, the monitor
    ``logging.health.enabled``; the weight logger is always on (seed 000)."""
    steps = StepMetricsCallback()
    callbacks: list[Callback] = [RunSummaryCallback(), steps, EpochSummaryCallback(), LossWeightLoggerCallback(),
                                 ConsoleCallback(tracker=steps.tracker), JsonlCallback()]
    if cfg.logging.use_tensorboard:
        callbacks.append(TensorBoardCallback())
    if cfg.logging.use_wandb:
        callbacks.append(WandbCallback())
    if cfg.logging.figures:
        callbacks.append(WaveformFigureCallback())
    if cfg.logging.health.enabled:
        callbacks.append(HealthMonitorCallback())
    return callbacks


__all__ = [
    "Callback",
    "ConsoleCallback",
    "EpochSummaryCallback",
    "HealthMonitorCallback",
    "JsonlCallback",
    "LossTracker",
    "LossWeightLoggerCallback",
    "Record",
    "RunSummaryCallback",
    "StepMetricsCallback",
    "TensorBoardCallback",
    "WandbCallback",
    "WaveformFigureCallback",
    "default_callbacks",
]
