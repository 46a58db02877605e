"""Callback hooks of the Trainer and the metric record every backend receives.

Every hook is a no-op with one uniform signature ``(self, trainer, ...)``; a callback overrides
what it needs. Monitoring backends (tqdm, log lines, metrics.jsonl, TensorBoard, W&B) do not read
the trainer's internals: the trainer and the metric callbacks *emit* a :class:`Record` through
``trainer.emit(record)``, and each backend turns the same record into its own format in
:meth:`Callback.on_record`. That is what keeps every screen showing the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.step import StepOutput
    from training.trainer import Trainer


@dataclass
class Record:
    """One event.

    kind:    "step" (window means every log_frequency steps), "epoch" (epoch summary),
             "weights" (balancer weights), "alert" (health monitor), "hparams" (curated
             hyperparameters at the start; final and best metrics at the end),
             "text" (a free text entry, e.g. the weight index mapping), "figure".
    step:    optimizer step the record belongs to (the x axis everywhere).
    scalars: metric name -> value. Names are the shared tags: "train/signal", "val/total",
             "train/weight_0", "val/head_1_weight_2", "lr", "grad_norm/total", ...
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


class Callback:
    """Base class: all hooks are no-ops. ``state_dict`` survives a resume through the checkpoint."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, out: StepOutput) -> None:
        """After every optimizer step. ``out`` holds device tensors: read them only at log points."""

    def on_validation_start(self, trainer: Trainer, split: str, batches: int) -> None:
        """Before a validation pass over ``batches`` batches of ``split`` (every rank)."""

    def on_validation_batch_end(self, trainer: Trainer, split: str) -> None: ...

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, summary: dict[str, float]) -> None: ...

    def on_record(self, trainer: Trainer, record: Record) -> None:
        """A record emitted by the trainer or by another callback (backends write it out)."""

    def on_train_end(self, trainer: Trainer) -> None: ...

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None: ...

    def flush(self, trainer: Trainer) -> None:
        """Write out what is buffered; called before every checkpoint, so no checkpoint runs ahead
        of the logs (sinks: metrics.jsonl, TensorBoard)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
