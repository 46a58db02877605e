"""Balancer weight logging (seed 000): ``train/weight_i`` / ``train/head_i_weight_j`` and ``eval/...``.

:class:`LossWeightLoggerCallback` is on by default and needs no configuration: it looks for a
``get_loss_weights()`` method itself (on ``trainer.meta_loss``, then its ``balancer``), so any
loss object that has one is logged. Two shapes are understood:

- flat, ``[w0, w1, ...]``                -> ``train/weight_0``, ``train/weight_1``, ...
- grouped, ``[[w00, w01], [w10], ...]``  -> ``train/head_0_weight_0``, ``train/head_0_weight_1``, ...

After each validation the weights are logged under seed 000's ``eval/`` prefix and once more
under ``val/`` (an alias, next to the validation losses ``val/<component>``), in the same record,
so every backend (TensorBoard, W&B, metrics.jsonl) holds both names.

Once at train start a ``kind="text"`` record maps each index to its component (from
``weight_names()`` when the object has it), so a reader of ``weight_3`` knows it is PeakLat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from training.callbacks.base import Callback, Record, TrainerView
from training.components import DISPLAY_NAMES

if TYPE_CHECKING:
    from training.step import StepOutput


def _as_list(x: Any) -> Any:
    return x.tolist() if hasattr(x, "tolist") else x


def is_grouped(weights: Sequence[Any]) -> bool:
    return len(weights) > 0 and isinstance(_as_list(weights[0]), (list, tuple))


# Prefixes of the weights logged after a validation: seed 000's name first, then its alias.
EVAL_PREFIXES: tuple[str, ...] = ("eval", "val")


def flatten_weights(weights: Any, prefix: str) -> dict[str, float]:
    """Both shapes -> ``{"<prefix>/weight_i": w}`` or ``{"<prefix>/head_i_weight_j": w}``."""
    weights = _as_list(weights)
    if is_grouped(weights):
        return {f"{prefix}/head_{i}_weight_{j}": float(w) for i, ws in enumerate(weights)
                for j, w in enumerate(_as_list(ws))}
    return {f"{prefix}/weight_{i}": float(w) for i, w in enumerate(weights)}


def weight_components(weights: Any, names: Any) -> dict[str, str]:
    """Index suffix ("weight_3" / "head_2_weight_1") -> component name, for either shape."""
    flat_w = flatten_weights(weights, "x")
    flat_n = flatten_weights_names(names)
    return {k[2:]: flat_n.get(k[2:], k[2:]) for k in flat_w}


def flatten_weights_names(names: Any) -> dict[str, str]:
    if names is None:
        return {}
    if len(names) > 0 and isinstance(names[0], (list, tuple)):
        return {f"head_{i}_weight_{j}": str(n) for i, ns in enumerate(names) for j, n in enumerate(ns)}
    return {f"weight_{i}": str(n) for i, n in enumerate(names)}


def find_weight_source(obj: Any) -> tuple[Callable[[], Any] | None, Callable[[], Any] | None]:
    """(get_loss_weights, weight_names) of ``obj`` or of ``obj.balancer``; None where missing."""
    for candidate in (obj, getattr(obj, "balancer", None)):
        get = getattr(candidate, "get_loss_weights", None)
        if callable(get):
            names = getattr(candidate, "weight_names", None)
            return get, names if callable(names) else None
    return None, None


class LossWeightLoggerCallback(Callback):
    """Emits ``kind="weights"`` records: every ``log_frequency`` steps under ``train/``, after each
    validation under ``eval/`` and its alias ``val/`` (next to the validation losses), and once at
    train start (step 0 of a fresh run)."""

    def __init__(self) -> None:
        self._get: Callable[[], Any] | None = None
        self._names: Callable[[], Any] | None = None

    def on_train_start(self, trainer: TrainerView) -> None:
        self._get, self._names = find_weight_source(trainer.meta_loss)
        if self._get is None:
            trainer.logger.debug("loss weight logging off: %s has no get_loss_weights()", type(trainer.meta_loss))
            return
        if trainer.resumed:  # the run already holds the mapping and the initial weights
            return
        weights = self._get()
        mapping = weight_components(weights, self._names() if self._names else None)
        lines = [f"{k} = {c} ({DISPLAY_NAMES.get(c, c)})" for k, c in mapping.items()]
        text = "Loss weight index: " + ", ".join(lines)
        trainer.emit(Record("text", trainer.step, trainer.epoch, text=text,
                            data={"tag": "weights/index", "mapping": mapping}))
        self._emit(trainer, "train", trainer.step, trainer.epoch, weights)

    def on_step_end(self, trainer: TrainerView, out: StepOutput) -> None:
        if self._get is not None and trainer.stage == "network" and out.step % trainer.cfg.training.log_frequency == 0:
            self._emit(trainer, "train", out.step, out.epoch, self._get())  # host sync, at log points only

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        if self._get is not None and trainer.stage == "network":  # the balancer weighs the network's losses
            self._emit(trainer, "val", trainer.step, trainer.epoch, self._get())

    def _emit(self, trainer: TrainerView, split: str, step: int, epoch: int, weights: Any) -> None:
        mapping = weight_components(weights, self._names() if self._names else None)
        prefixes = EVAL_PREFIXES if split == "val" else (split,)
        scalars = {k: v for prefix in prefixes for k, v in flatten_weights(weights, prefix).items()}
        trainer.emit(Record("weights", step, epoch, scalars=scalars, data={"split": split, "components": mapping}))
