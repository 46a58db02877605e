"""Callback hooks of the Trainer, the bus that calls them, and the record every backend receives.

Every hook is a no-op with one uniform signature ``(self, trainer, ...)``; a callback overrides
what it needs, and only hooks declared on :class:`Callback` are ever called. Monitoring backends
(tqdm, log lines, metrics.jsonl, TensorBoard, W&B) do not read the trainer's internals: the trainer
and the metric callbacks *emit* a :class:`Record` through ``trainer.emit(record)``, the
:class:`CallbackList` hands it to every callback, and each backend turns the same record into its
own format in :meth:`Callback.on_record`. That is what keeps every screen showing the same numbers.

This module imports nothing of the trainer: :class:`TrainerView` says what every callback may read
from the trainer it is handed (training.trainer.Trainer, its StageView during a later stage, or the
test fakes), and the callbacks are typed by it, so none of them imports the trainer.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from training.config import Config
    from training.step import StepOutput


@dataclass
class Record:
    """One event.

    kind:    "step" (window means every log_frequency steps), "epoch" (epoch summary),
             "weights" (balancer weights), "alert" (health monitor), "hparams" (curated
             hyperparameters at the start; final and best metrics at the end),
             "text" (a free text entry, e.g. the weight index mapping), "figure".
    step:    optimizer step the record belongs to (the x axis everywhere).
    scalars: metric name -> value. Names are the shared tags: "train/signal", "val/total",
             "train/weight_0", "eval/head_1_weight_2", "lr", "grad_norm/total", ...
    text:    the human-readable line a console shows for this record (may be empty).
    data:    anything JSON-serializable that metrics.jsonl should keep (alert kind, mapping, ...).
    """

    kind: str
    step: int
    epoch: int
    scalars: dict[str, float] = field(default_factory=dict)
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    figure: Any = None  # a matplotlib Figure for kind == "figure" (not serialized to JSON)


class TrainerView(Protocol):
    """What every callback may read from the trainer it is handed. The figure pass, which needs the
    network's sampling parts too, says what more it reads (training/callbacks/figures.py)."""

    cfg: Config
    run_dir: Path
    step: int  # optimizer steps done
    epoch: int  # the epoch being trained (1-based)
    max_epochs: int
    steps_per_epoch: int
    epoch_step: int  # optimizer steps done inside ``epoch`` (> 0 when resumed mid-epoch)
    stage: str  # "network", or "series" while the series stage trains (epoch, max_epochs, ... are then its own)
    is_main: bool  # rank 0: the process that writes logs and checkpoints
    resumed: bool
    logger: logging.Logger
    meta_loss: Any  # training.balancers.meta_loss.MetaLoss: ``.balancer`` holds the weights; None in a later stage
    model: Any  # the bare network (the stage's model in a later stage; None in fakes without a model)
    data: Any  # data.dataset.DataBundle
    callbacks: CallbackList
    should_stop: bool  # set by early stopping

    @property
    def lr(self) -> float: ...

    def emit(self, record: Record) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds (the checkpoint callback writes it)."""


class Callback:
    """Base class: all hooks are no-ops. ``state_dict`` survives a resume through the checkpoint."""

    def on_train_start(self, trainer: TrainerView) -> None: ...

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None: ...

    def on_step_end(self, trainer: TrainerView, out: StepOutput) -> None:
        """After every optimizer step. ``out`` holds device tensors: read them only at log points."""

    def on_validation_start(self, trainer: TrainerView, split: str, batches: int) -> None:
        """Before a validation pass over ``batches`` batches of ``split`` (every rank)."""

    def on_validation_batch_end(self, trainer: TrainerView, split: str) -> None: ...

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: TrainerView, epoch: int, summary: dict[str, float]) -> None: ...

    def on_record(self, trainer: TrainerView, record: Record) -> None:
        """A record emitted by the trainer or by another callback (backends write it out)."""

    def on_train_end(self, trainer: TrainerView) -> None: ...

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None: ...

    def flush(self, trainer: TrainerView) -> None:
        """Write out what is buffered; called before every checkpoint, so no checkpoint runs ahead
        of the logs (sinks: metrics.jsonl, TensorBoard)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


HOOKS: tuple[str, ...] = tuple(name for name in vars(Callback) if name.startswith("on_")) + ("flush",)


class CallbackList:
    """The trainer's callbacks, and the one way they are called (the bus).

    A hook runs on every callback in list order. :meth:`emit` hands a record to every callback's
    ``on_record``; a record emitted while another is being handed out (an alert the health monitor
    raises from inside its ``on_record``) waits until that one has reached every callback, so each
    sink writes a record before what it caused, wherever the producer stands in the list. Until the
    run starts it is a list: callbacks may be appended or inserted.
    """

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self._callbacks: list[Callback] = list(callbacks)
        self._pending: deque[Record] = deque()
        self._delivering = False

    def __iter__(self) -> Iterator[Callback]:
        return iter(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)

    def __getitem__(self, i: int) -> Callback:
        return self._callbacks[i]

    def append(self, cb: Callback) -> None:
        self._callbacks.append(cb)

    def insert(self, i: int, cb: Callback) -> None:
        self._callbacks.insert(i, cb)

    def extend(self, cbs: Iterable[Callback]) -> None:
        self._callbacks.extend(cbs)

    def call(self, hook: str, trainer: TrainerView, *args: Any) -> None:
        """``hook(trainer, *args)`` on every callback; ``hook`` must be declared on :class:`Callback`."""
        if hook not in HOOKS:
            raise ValueError(f"callback hook: expected one of {', '.join(HOOKS)}, found {hook!r}")
        for cb in self._callbacks:
            getattr(cb, hook)(trainer, *args)

    def emit(self, trainer: TrainerView, record: Record) -> None:
        """Hand ``record`` to every callback's ``on_record``, after the records emitted before it."""
        self._pending.append(record)
        if self._delivering:  # emitted from inside an on_record: delivered when the current record is
            return
        self._delivering = True
        try:
            while self._pending:
                current = self._pending.popleft()
                for cb in self._callbacks:
                    cb.on_record(trainer, current)
        finally:
            self._delivering = False

    def flush(self, trainer: TrainerView) -> None:
        """Every sink writes out what it buffers (before a checkpoint)."""
        self.call("flush", trainer)

    def _keys(self) -> list[str]:
        """Each callback's key in a checkpoint: its class name, then ``#2``, ``#3``, ... for the second
        and later callbacks of one class (two instances keep two states; the first keeps the plain name,
        so checkpoints written before instances were told apart still load)."""
        seen: Counter[str] = Counter()
        keys = []
        for cb in self._callbacks:
            name = type(cb).__name__
            seen[name] += 1
            keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        return keys

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Each callback's state under its key (what a checkpoint keeps)."""
        return {key: cb.state_dict() for key, cb in zip(self._keys(), self._callbacks, strict=True)}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        """Give each callback the state saved under its key; a callback new to the run starts fresh."""
        for key, cb in zip(self._keys(), self._callbacks, strict=True):
            if key in state:
                cb.load_state_dict(state[key])
