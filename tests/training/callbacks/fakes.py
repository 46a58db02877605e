"""A stand-in trainer for testing callbacks without a model (used by tests/ and the root test).

:class:`FakeTrainer` has the attributes the callbacks read and drives their hooks in the order
the real Trainer calls them; every emitted record is kept in ``trainer.records``::

    trainer = FakeTrainer(tmp_path, callbacks=default_callbacks(cfg), cfg=cfg)
    trainer.start()
    trainer.steps(120, losses=lambda step: {"signal": 1.0, ...})
    trainer.end_epoch({"train/total": ..., "val/total": ..., "lr": ...})
    trainer.end()
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from training.callbacks.base import Callback, CallbackList, Record
from training.components import COMPONENTS, HEAD_GROUPS
from training.config import Config
from training.step import StepOutput


class FakeBalancer:
    """Weights and the attributes the health monitor looks at; ``grouped`` reports per head."""

    def __init__(self, weights: Sequence[float] | None = None, grouped: bool = False,
                 can_be_negative: bool = False, min_weight: float | None = None,
                 max_weight: float | None = None) -> None:
        weights = weights if weights is not None else [1.0] * len(COMPONENTS)
        self.weights = dict(zip(COMPONENTS, weights, strict=True))
        self.grouped = grouped
        self.can_be_negative = can_be_negative
        if min_weight is not None:
            self.min_weight = min_weight
        if max_weight is not None:
            self.max_weight = max_weight

    def get_loss_weights(self) -> list[float] | list[list[float]]:
        if self.grouped:
            return [[self.weights[c] for c in members] for members in HEAD_GROUPS.values()]
        return [self.weights[c] for c in COMPONENTS]

    def weight_names(self) -> list[str] | list[list[str]]:
        if self.grouped:
            return [list(members) for members in HEAD_GROUPS.values()]
        return list(COMPONENTS)


class FakeMetaLoss:
    """Like the real meta-loss: ``get_loss_weights``/``weight_names`` forward to ``balancer``."""

    def __init__(self, balancer: FakeBalancer | None = None) -> None:
        self.balancer = balancer or FakeBalancer()

    def get_loss_weights(self) -> Any:
        return self.balancer.get_loss_weights()

    def weight_names(self) -> Any:
        return self.balancer.weight_names()


def make_step_output(step: int, losses: dict[str, float], epoch: int = 1, lr: float = 1e-4,
                     grad_norm: float = 1.0, weights: dict[str, float] | None = None,
                     objective: float | None = None, skipped: bool = False,
                     head_grad_norms: dict[str, float] | None = None) -> StepOutput:
    """A StepOutput with device scalars; objective defaults to sum_i w_i L_i."""
    weights = weights or {}
    weighted = sum(weights.get(c, 1.0) * v for c, v in losses.items())
    heads = head_grad_norms if head_grad_norms is not None else {h: grad_norm / 2 for h in HEAD_GROUPS}
    return StepOutput(
        step=step, epoch=epoch, lr=lr, skipped=skipped,
        losses={c: torch.tensor(float(v)) for c, v in losses.items()},
        objective=torch.tensor(float(weighted if objective is None else objective)),
        weighted_sum=torch.tensor(float(weighted)),
        grad_norm=torch.tensor(float(grad_norm)),
        head_grad_norms={h: torch.tensor(float(v)) for h, v in heads.items()},
    )


class FakeTrainer:
    """The trainer surface callbacks use (``TrainerView`` in training/callbacks/base.py), without a
    model; hooks and records go through the real :class:`CallbackList`, as in the Trainer."""

    def __init__(self, run_dir: str | Path, callbacks: Sequence[Callback] = (), cfg: Config | None = None,
                 meta_loss: Any = None, max_epochs: int = 3, steps_per_epoch: int = 100,
                 is_main: bool = True, resumed: bool = False, step: int = 0) -> None:
        self.cfg = copy.deepcopy(cfg) if cfg is not None else Config()
        self.cfg.logging.figures = False  # no model to draw: the figure callback reads the config and stays off
        self.run_dir = Path(run_dir)
        self.callbacks = CallbackList(callbacks)
        self.meta_loss = meta_loss if meta_loss is not None else FakeMetaLoss()
        self.model = None
        self.max_epochs, self.steps_per_epoch = max_epochs, steps_per_epoch
        self.stage = "network"
        self.is_main, self.resumed = is_main, resumed
        self.step, self.epoch, self.lr = step, 1 + step // steps_per_epoch, 1e-4
        self.logger = logging.getLogger("abr")
        self.records: list[Record] = []

    @property
    def epoch_step(self) -> int:
        """Optimizer steps done inside the current epoch, as the Trainer counts them."""
        return max(0, self.step - (self.epoch - 1) * self.steps_per_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "callbacks": self.callbacks.state_dict()}

    def emit(self, record: Record) -> None:
        self.records.append(record)
        self.callbacks.emit(self, record)

    def of_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]

    # -- driving the hooks -----------------------------------------------------------------------------
    def start(self) -> None:
        self.callbacks.call("on_train_start", self)
        self.start_epoch()

    def start_epoch(self) -> None:
        self.callbacks.call("on_epoch_start", self, self.epoch)

    def steps(self, n: int, losses: Callable[[int], dict[str, float]], **kwargs: Any) -> None:
        """``n`` optimizer steps; ``losses(step)`` gives the components, ``kwargs`` values may be
        callables of the step too (e.g. ``grad_norm=lambda s: ...``)."""
        for _ in range(n):
            self.step += 1
            kw = {k: (v(self.step) if callable(v) else v) for k, v in kwargs.items()}
            kw.setdefault("lr", self.lr)
            out = make_step_output(self.step, losses(self.step), epoch=self.epoch, **kw)
            self.lr = out.lr
            self.callbacks.call("on_step_end", self, out)

    def validate(self, metrics: dict[str, float], batches: int = 0) -> None:
        """A validation pass of ``batches`` batches ending with ``metrics``."""
        self.callbacks.call("on_validation_start", self, "val", batches)
        for _ in range(batches):
            self.callbacks.call("on_validation_batch_end", self, "val")
        self.callbacks.call("on_validation_end", self, metrics)

    def end_epoch(self, summary: dict[str, float]) -> None:
        self.callbacks.call("on_epoch_end", self, self.epoch, summary)
        self.epoch += 1

    def end(self) -> None:
        self.callbacks.call("on_train_end", self)


# -- reading back what the sinks wrote -------------------------------------------------------------


def read_tensorboard(log_dir: str | Path, plugins: bool = False) -> Any:
    """TensorBoard's own event reader over ``log_dir`` (one run), fully loaded. ``plugins=True``
    gives the reader the TensorBoard server uses for plugin data (HParams); scalars are then
    tensors."""
    if plugins:
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def read_wandb_offline(run_file: str | Path) -> list[Any]:
    """The protobuf records of an offline ``run-<id>.wandb`` file.

    The file is a 7-byte W&B header followed by LevelDB-log blocks of 32 KiB, each record chunk
    with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last). The W&B
    service writes it asynchronously even after ``run.finish()``: call ``wandb.teardown()`` first.
    """
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf, out = Path(run_file).read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # zero padding to the block end
            pos += left - 7
            continue
        buf += data[pos : pos + length]
        pos += length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def healthy_losses(step: int) -> dict[str, float]:
    """Six components of similar scale decaying smoothly with a little deterministic noise: a run
    on which the health monitor must stay silent."""
    out = {}
    for i, c in enumerate(COMPONENTS):
        noise = math.sin(12.9898 * step * (i + 1)) * 0.02  # deterministic, in [-2 %, 2 %]
        out[c] = (1.0 + 0.1 * i) * (0.4 + 0.6 * math.exp(-step / 300)) * (1 + noise)
    return out
