"""The run's own summary: curated hyperparameters at the start, final and best metrics at the end.

:class:`RunSummaryCallback` is a producer. It emits two ``kind="hparams"`` records:

- at train start (a fresh run only): ``data = {"hparams": {...}, "swept": [...], "name": ...,
  "trial": ..., "status": "running"}``, the curated hyperparameters of :func:`curated_hparams` and
  the run's names (:func:`short_name` for W&B, :func:`trial_name` for TensorBoard). TensorBoard writes its HParams table
  from it right away, so a running sweep can be compared while it trains;
- at train end, or when the run is interrupted (SIGINT/SIGTERM) or crashes:
  ``scalars`` = the last validation metrics and ``best/<metric>``, ``data`` = the same hparams,
  ``status`` ("finished", "interrupted", "failed"), best epoch and checkpoint; ``text`` is the
  end-of-run block the console prints::

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

from training.callbacks.base import Callback, Record

if TYPE_CHECKING:
    from training.config import Config
    from training.trainer import Trainer

HParamValue = bool | int | float | str

# What a researcher compares between runs (after the swept keys), in this order.
PARAMETERS_KEY = "model.parameters"  # trainable parameter count, not a config key
CURATED_KEYS: tuple[str, ...] = (
    "loss.balancer.strategy",
    "training.lr",
    "training.batch_size",
    "training.epochs",
    PARAMETERS_KEY,
    "data.synthetic.patients",
    "data.path",
    "loss.balancer.grouping.enabled",
    "model.base_channels",
    "data.source",
    "data.normalization",
    "seed",
)


def flat_config(cfg: Config) -> dict[str, Any]:
    """``{"training.lr": 0.002, "model.channel_mults": [1, 2, 4], ...}`` for every leaf key."""
    from training.config import config_to_dict

    def walk(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                out.update(walk(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    return walk(config_to_dict(cfg), "")


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


def curated_hparams(cfg: Config, run_dir: Path, model: Any = None) -> tuple[dict[str, HParamValue], list[str], str]:
    """(hparams, swept keys, short run name): the swept keys first, then :data:`CURATED_KEYS` in that
    order (the data key that does not apply to ``data.source`` left out; the parameter count when
    ``model`` is given)."""
    flat = flat_config(cfg)
    n = parameter_count(model)
    if n is not None:
        flat[PARAMETERS_KEY] = n
    swept = swept_keys(run_dir.name, flat)
    skip = {"data.path"} if flat.get("data.source") == "synthetic" else {"data.synthetic.patients"}
    keys = [*swept, *(k for k in CURATED_KEYS if k in flat and k not in swept and k not in skip)]
    return {k: hparam_value(flat[k]) for k in keys}, swept, short_name(run_dir, swept, flat)


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
        self.name = self.trial = ""

    def _prepare(self, trainer: Trainer) -> None:
        if not self.hparams:
            self.hparams, self.swept, self.name = curated_hparams(trainer.cfg, trainer.run_dir, trainer.model)
            self.trial = trial_name(Path(trainer.run_dir), self.swept, flat_config(trainer.cfg))

    def on_train_start(self, trainer: Trainer) -> None:
        self._prepare(trainer)
        if trainer.resumed:  # the run already holds its start record
            return
        trainer.emit(Record("hparams", trainer.step, trainer.epoch,
                            data={"hparams": dict(self.hparams), "swept": list(self.swept), "name": self.name,
                                  "trial": self.trial, "status": "running"}))

    def on_record(self, trainer: Trainer, record: Record) -> None:
        if record.kind != "epoch":
            return
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

    def on_train_end(self, trainer: Trainer) -> None:
        self._finish(trainer, "finished")

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        from training.trainer import TrainingInterrupted

        interrupted = isinstance(exc, (TrainingInterrupted, KeyboardInterrupt))
        try:
            self._finish(trainer, "interrupted" if interrupted else "failed")
        except Exception as err:  # noqa: BLE001 (the original error is the one to report)
            trainer.logger.warning("run summary not written (%s: %s)", type(err).__name__, err)

    def _finish(self, trainer: Trainer, status: str) -> None:
        self._prepare(trainer)
        metric = trainer.cfg.training.early_stopping.metric
        best_pt = Path(trainer.run_dir) / "checkpoints" / "best.pt"
        scalars = dict(self.last)
        if self.best is not None:
            scalars[f"best/{metric}"] = self.best
            scalars["best/epoch"] = float(self.best_epoch or 0)
        lines = [f"Run {status}: {trainer.epoch - 1} epoch(s) completed, {trainer.step} steps"]
        if self.best is not None:
            where = str(best_pt) if best_pt.is_file() else "no best.pt written"
            lines.append(f"  best: epoch {self.best_epoch}, {metric} {_fmt(self.best)} -> {where}")
        else:
            lines.append(f"  best: no finite {metric} yet (no validation finished)")
        if best_pt.is_file():
            lines.append(f"  evaluate: python -m evaluation.evaluate --run {trainer.run_dir}")
        data = {"hparams": dict(self.hparams), "swept": list(self.swept), "name": self.name, "trial": self.trial,
                "status": status,
                "best_metric": metric, "best_epoch": self.best_epoch,
                "best_checkpoint": str(best_pt) if best_pt.is_file() else None}
        trainer.emit(Record("hparams", trainer.step, trainer.epoch, scalars=scalars, text="\n".join(lines),
                            data=data))

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "last": dict(self.last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.last = state["best"], state["best_epoch"], dict(state["last"])
