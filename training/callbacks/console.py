"""Console sink: one tqdm bar per epoch, and every record with text through the "abr" logger.

The bar reads, with an example at 120 columns::

    Epoch 1/200 |██▊   | 215/1140 <2:24:26, Total=138.0 | LR=1.00e-04 | Signal=1.030 | Class=1.944 | \
        Peak=0.831 | Thresh=130.5        (one line; wrapped here)

The postfix is built by :func:`format_postfix` and set with ``set_postfix_str`` (tqdm's dict
form sorts and reformats keys). Its numbers have a fixed width, so the line neither flickers nor
grows; percentage and elapsed time are left out (the bar and ``n/total`` show progress) so that
the line fits 120 columns up to "Epoch 200/200", 1140/1140 steps and an ETA in hours.

Reading values is a host sync, so the postfix is refreshed at most every ``refresh_s`` seconds
(the running mean of the current log window, from the step tracker) and at each log point (the
window means of the step record, the same numbers as the step line).

Log lines go to ``logging.getLogger("abr")``; train.py routes that logger through tqdm so a line
never breaks the bar. Alerts are logged at WARNING level, everything else at INFO.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from training.callbacks.base import Callback, Record
from training.callbacks.format import format_postfix, strip_prefix

if TYPE_CHECKING:
    from training.callbacks.metrics import LossTracker
    from training.step import StepOutput
    from training.trainer import Trainer

BAR_FORMAT = "{desc} |{bar}| {n_fmt}/{total_fmt} <{remaining}{postfix}"


class ConsoleCallback(Callback):
    """tqdm progress and log lines (rank 0 only).

    Args:
        tracker: the :class:`LossTracker` of the step-metrics producer, for the live postfix
            between log points; None shows the postfix at log points only.
        refresh_s: at most one postfix read per this many seconds.
        file, ncols: passed to tqdm (tests use a StringIO and 120 columns).
    """

    def __init__(self, tracker: LossTracker | None = None, refresh_s: float = 1.0,
                 file: TextIO | None = None, ncols: int | None = None) -> None:
        self.tracker = tracker
        self.refresh_s = refresh_s
        self.file = file
        self.ncols = ncols
        self.bar: Any = None
        self._last_refresh = 0.0
        self.log = logging.getLogger("abr")

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if not trainer.is_main:
            return
        self._close()
        total = trainer.steps_per_epoch
        # > 0 when resumed mid-epoch
        done = getattr(trainer, "epoch_step", max(0, trainer.step - (epoch - 1) * (total or 0)))
        self.bar = tqdm(total=total, initial=min(done, total or done), desc=f"Epoch {epoch}/{trainer.max_epochs}",
                        bar_format=BAR_FORMAT, file=self.file, ncols=self.ncols,
                        dynamic_ncols=self.ncols is None, leave=True)
        self._last_refresh = time.monotonic()

    def on_step_end(self, trainer: Trainer, out: StepOutput) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.monotonic()
        if self.tracker is not None and now - self._last_refresh >= self.refresh_s and self.tracker.count:
            self._last_refresh = now
            means, _ = self.tracker.read()  # host sync, at most once per refresh_s
            self.set_postfix(means, out.lr)

    def set_postfix(self, scalars: dict[str, float], lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(format_postfix(strip_prefix(scalars, "train/"), lr), refresh=False)

    def on_record(self, trainer: Trainer, record: Record) -> None:
        if not trainer.is_main:
            return
        if record.kind == "step" and record.data.get("window_steps", 1):
            self.set_postfix(record.scalars, record.scalars.get("lr", trainer.lr))
            self._last_refresh = time.monotonic()
        if record.text:
            self.log.log(logging.WARNING if record.kind == "alert" else logging.INFO, record.text)

    def on_epoch_end(self, trainer: Trainer, epoch: int, summary: dict[str, float]) -> None:
        self._close()

    def on_train_end(self, trainer: Trainer) -> None:
        self._close()

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
