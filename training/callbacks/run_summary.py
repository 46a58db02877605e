"""The run's own summary: curated hyperparameters at the start, final and best metrics at the end.

:class:`RunSummaryCallback` is a producer. It emits two ``kind="hparams"`` records:

- at train start (a fresh run only): ``data = {"hparams": {...}, "swept": [...], "status":
  "running"}``, the curated hyperparameters of :func:`curated_hparams`. TensorBoard writes its HParams table
  from it right away, so a running sweep can be compared while it trains;
- at train end, or when the run is interrupted (SIGINT/SIGTERM) or crashes:
  ``scalars`` = the last validation metrics and ``best/<metric>``, ``data`` = the same hparams,
  ``status`` ("finished", "interrupted", "failed"), the best epoch, value and checkpoint (relative
  to the run directory, so two identical runs write identical records). The console and
  TensorBoard turn it into the end-of-run block (:func:`end_of_run_block`)::

      Run finished: 20 epoch(s) completed, 2280 steps
        best: epoch 17, val/total 0.4127 -> logs/demo/checkpoints/best.pt
        evaluate: python -m evaluation.evaluate --run logs/demo

"Best" follows the checkpoint callback's rule (``training.early_stopping.metric`` and ``mode``,
strict improvement), so the best epoch named here is the one in best.pt.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.callbacks.base import Callback, Record, TrainerView

if TYPE_CHECKING:
    from training.config import Config

HParamValue = bool | int | float | str

# What a researcher compares between runs (after the swept keys), in this order. TensorBoard's HParams
# shows the first five columns by default, so the data's size (patients, or the data file) is among them.
PARAMETERS_KEY = "model.parameters"  # trainable parameter count, not a config key
CURATED_KEYS: tuple[str, ...] = (
    "loss.balancer.strategy",
    "training.lr",
    "data.synthetic.patients",
    "data.path",
    "training.epochs",
    PARAMETERS_KEY,
    "training.batch_size",
    "loss.balancer.grouping.enabled",
    "model.base_channels",
    "data.source",
    "data.normalization",
    "seed",
)


def flat_config(cfg: Config) -> dict[str, Any]:
    """``{"training.lr": 0.002, "model.channel_mults": [1, 2, 4], ...}`` for every leaf key."""
    from data.schema import flatten_tree
    from training.config import config_to_dict

    return flatten_tree(config_to_dict(cfg))


def hparam_value(value: Any) -> HParamValue:
    """A value TensorBoard's HParams can hold: bool, int, float and str as they are, the rest as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def swept_keys(run_name: str, flat: dict[str, Any]) -> list[str]:
    """The config keys a sweep run was started with, read from its directory name.

    ``train.py -m`` names each run after its overrides (``loss.balancer.strategy=fixed,training.lr=0.001``);
    a part may also name a key by its last components (``strategy=fixed``) when that is unambiguous.
    Any other name gives ``[]``: the run is not a sweep run.
    """
    keys = []
    for part in re.split(r",(?=[A-Za-z_][\w.]*=)", run_name):
        key, sep, _ = part.partition("=")
        matches = [k for k in flat if k == key or k.endswith("." + key)] if sep else []
        if len(matches) != 1:
            return []
        keys.append(matches[0])
    return keys


def short_name(run_dir: Path, keys: list[str], flat: dict[str, Any]) -> str:
    """A name that tells sweep runs apart (W&B's run name): ``sweep/strategy=fixed lr=0.001``; the
    directory name for any other run."""
    if not keys:
        return run_dir.name
    return f"{run_dir.parent.name}/" + " ".join(f"{k.rsplit('.', 1)[-1]}={flat[k]}" for k in keys)


def trial_name(run_dir: Path, keys: list[str], flat: dict[str, Any]) -> str:
    """TensorBoard's HParams row name (its narrow "Trial ID" column shows about 15 characters):
    the swept values first, then the sweep, ``fixed, 0.001 (sweep)``; the directory name for any
    other run. The swept keys are the first columns of that table."""
    if not keys:
        return run_dir.name
    return ", ".join(str(flat[k]) for k in keys) + f" ({run_dir.parent.name})"


def parameter_count(model: Any) -> int | None:
    params = getattr(model, "parameters", None)
    if not callable(params):
        return None
    return sum(p.numel() for p in params() if p.requires_grad)


def curated_hparams(cfg: Config, run_dir: Path, model: Any = None) -> tuple[dict[str, HParamValue], list[str]]:
    """(hparams, swept keys): the swept keys first, then :data:`CURATED_KEYS` in that order (the
    data key that does not apply to ``data.source`` left out; the parameter count when ``model``
    is given)."""
    flat = flat_config(cfg)
    n = parameter_count(model)
    if n is not None:
        flat[PARAMETERS_KEY] = n
    swept = swept_keys(run_dir.name, flat)
    skip = {"data.path"} if flat.get("data.source") == "synthetic" else {"data.synthetic.patients"}
    keys = [*swept, *(k for k in CURATED_KEYS if k in flat and k not in swept and k not in skip)]
    return {k: hparam_value(flat[k]) for k in keys}, swept


def run_names(cfg: Config, run_dir: Path) -> tuple[str, str]:
    """(:func:`short_name`, :func:`trial_name`) of a run: W&B's run name, TensorBoard's HParams row."""
    flat = flat_config(cfg)
    swept = swept_keys(Path(run_dir).name, flat)
    return short_name(Path(run_dir), swept, flat), trial_name(Path(run_dir), swept, flat)


def end_of_run_block(data: dict[str, Any], step: int, run_dir: Path) -> str:
    """The console's last words, from the end ``hparams`` record's ``data``::

        Run finished: 20 epoch(s) completed, 2280 steps
          best: epoch 17, val/total 0.4127 -> logs/demo/checkpoints/best.pt
          evaluate: python -m evaluation.evaluate --run logs/demo
    """
    metric, best = data.get("best_metric"), data.get("best_value")
    lines = [f"Run {data.get('status')}: {data.get('epochs_completed')} epoch(s) completed, {step} steps"]
    checkpoint = Path(run_dir) / data["best_checkpoint"] if data.get("best_checkpoint") else None
    if best is not None:
        where = str(checkpoint) if checkpoint is not None else "no best.pt written"
        lines.append(f"  best: epoch {data.get('best_epoch')}, {metric} {_fmt(best)} -> {where}")
    else:
        lines.append(f"  best: no finite {metric} yet (no validation finished)")
    if checkpoint is not None:
        lines.append(f"  evaluate: python -m evaluation.evaluate --run {run_dir}")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)


class RunSummaryCallback(Callback):
    """Producer of the ``hparams`` records (see the module docstring); tracks the best epoch."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.last: dict[str, float] = {}  # last validation metrics
        self.hparams: dict[str, HParamValue] = {}
        self.swept: list[str] = []

    def _prepare(self, trainer: TrainerView) -> None:
        if not self.hparams:
            self.hparams, self.swept = curated_hparams(trainer.cfg, trainer.run_dir, trainer.model)

    def on_train_start(self, trainer: TrainerView) -> None:
        self._prepare(trainer)
        if trainer.resumed:  # the run already holds its start record
            return
        trainer.emit(Record("hparams", trainer.step, trainer.epoch,
                            data={"hparams": dict(self.hparams), "swept": list(self.swept), "status": "running"}))

    def on_record(self, trainer: TrainerView, record: Record) -> None:
        if record.kind != "epoch" or record.data.get("stage", "network") != "network":
            return  # the run's best and last metrics are the network's (the series model's best is in series.pt)
        val = {k: v for k, v in record.scalars.items() if k.startswith("val/")}
        if val:
            self.last = val
        es = trainer.cfg.training.early_stopping
        key = "train_epoch/" + es.metric[len("train/"):] if es.metric.startswith("train/") else es.metric
        value = record.scalars.get(key)
        if value is None or not math.isfinite(value):
            return
        if self.best is None or (value < self.best if es.mode == "min" else value > self.best):
            self.best, self.best_epoch = float(value), record.epoch

    def on_train_end(self, trainer: TrainerView) -> None:
        self._finish(trainer, "finished")

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        from training.step import TrainingInterrupted

        interrupted = isinstance(exc, (TrainingInterrupted, KeyboardInterrupt))
        try:
            self._finish(trainer, "interrupted" if interrupted else "failed")
        except Exception as err:  # noqa: BLE001 (the original error is the one to report)
            trainer.logger.warning("run summary not written (%s: %s)", type(err).__name__, err)

    def _finish(self, trainer: TrainerView, status: str) -> None:
        self._prepare(trainer)
        metric = trainer.cfg.training.early_stopping.metric
        scalars = dict(self.last)
        if self.best is not None:
            scalars[f"best/{metric}"] = self.best
            scalars["best/epoch"] = float(self.best_epoch or 0)
        best_pt = Path("checkpoints") / "best.pt"
        data = {"hparams": dict(self.hparams), "swept": list(self.swept), "status": status,
                "epochs_completed": trainer.epoch - 1, "best_metric": metric, "best_epoch": self.best_epoch,
                "best_value": self.best,
                "best_checkpoint": str(best_pt) if (Path(trainer.run_dir) / best_pt).is_file() else None}
        trainer.emit(Record("hparams", trainer.step, trainer.epoch, scalars=scalars, data=data))

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "last": dict(self.last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.last = state["best"], state["best_epoch"], dict(state["last"])
