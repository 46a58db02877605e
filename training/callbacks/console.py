"""Console sink: one tqdm bar per epoch and one per validation, and every record with text
through the "abr" logger.

The bar reads, on a terminal of 120 columns or more::

    Epoch 1/200|██▊   | 215/1140 <2:24:26, Total=138.0 | LR=1.00e-04 | Signal=1.030 | Class=1.944 | \
        Peak=0.831 | Thresh=130.5        (one line; wrapped here)

and on a narrower terminal (80 columns and up; the form is picked from the width tqdm reads,
see :attr:`ConsoleCallback.compact`)::

    Ep 1/200|██▊   | 215/1140 <2:24:26, Tot  138 Sig 1.03 Cls 1.94 Pk 0.83 Thr  130

The postfix is built by :func:`format_postfix` and set with ``set_postfix_str`` (tqdm's dict
form sorts and reformats keys). Its numbers have a fixed width, so the line neither flickers nor
grows; percentage and elapsed time are left out (the bar and ``n/total`` show progress) so that
the line fits up to "Epoch 200/200", 1140/1140 steps and an ETA in hours (under 10) in the 119
characters tqdm draws on a 120-column terminal (:data:`FULL_LINE_CHARS`).

Reading values is a host sync, so the postfix is refreshed at most every ``refresh_s`` seconds
(the running mean of the current log window, from the step tracker) and at each log point (the
window means of the step record, the same numbers as the step line).

Order on screen: the epoch's bar is closed (it stays, complete) when validation starts; a
"Validation" bar counts the validation batches and is erased when it ends; then the epoch summary
is printed, below the bar it summarizes. The end-of-run block (best epoch, best.pt, the command
to evaluate) is printed from the final ``hparams`` record.

Log lines go to ``logging.getLogger("abr")``; train.py routes that logger through tqdm
(``logging_redirect_tqdm``) so a line never breaks a bar. Alerts are logged at WARNING level,
everything else at INFO.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from training.callbacks.base import Callback, Record, TrainerView
from training.callbacks.format import POSTFIX_COMPONENTS, format_postfix, stage_title, strip_prefix
from training.callbacks.run_summary import end_of_run_block

if TYPE_CHECKING:
    from training.callbacks.metrics import LossTracker
    from training.step import StepOutput

BAR_FORMAT = "{desc}|{bar}| {n_fmt}/{total_fmt} <{remaining}{postfix}"


def widest_full_line() -> int:
    """Characters of the widest full-form line with a 1-character bar: "Epoch 200/200", 1139/1140
    steps, an ETA of 9:48:29 (the last step takes that long) and every postfix value at its widest."""
    postfix = format_postfix(dict.fromkeys(("total", *POSTFIX_COMPONENTS), -12345.6), 1.2345e-4)
    line = tqdm.format_meter(1139, 1140, 1139 * 35309.0, prefix="Epoch 200/200",
                             bar_format=BAR_FORMAT.replace("{bar}", "#"), postfix=postfix)
    return len(line)


# A bar at least this wide (in tqdm's ``ncols``) gets the full postfix; narrower ones the compact
# postfix and "Ep" for "Epoch". tqdm draws into the terminal's width less one (it leaves the last
# column free, so the cursor never wraps): a 120-column terminal gives 119, which is this number.
FULL_LINE_CHARS = widest_full_line()


class ConsoleCallback(Callback):
    """tqdm progress and log lines (rank 0 only).

    Args:
        tracker: the :class:`LossTracker` of the step-metrics producer, for the live postfix
            between log points; None shows the postfix at log points only.
        refresh_s: at most one postfix read per this many seconds.
        file, ncols: passed to tqdm (tests use a StringIO and a fixed width); ``ncols=None``
            follows the terminal's width.
    """

    def __init__(self, tracker: LossTracker | None = None, refresh_s: float = 1.0,
                 file: TextIO | None = None, ncols: int | None = None) -> None:
        self.tracker = tracker
        self.refresh_s = refresh_s
        self.file = file
        self.ncols = ncols
        self.bar: Any = None
        self.val_bar: Any = None
        self._epoch = (0, 0)  # (epoch, max_epochs) of the open bar
        self._stage = "network"  # the stage of the open bar
        self._last_refresh = 0.0
        self.log = logging.getLogger("abr")

    def _tqdm(self, **kwargs: Any) -> Any:
        return tqdm(bar_format=BAR_FORMAT, file=self.file, ncols=self.ncols, dynamic_ncols=self.ncols is None,
                    **kwargs)

    @property
    def compact(self) -> bool:
        """True when the open bar cannot hold the full line: its width (tqdm's ``ncols``, which it
        rereads at every refresh when it follows the terminal) is under :data:`FULL_LINE_CHARS`.
        Compared in tqdm's own unit, not in terminal columns, so the off-by-one of tqdm's free last
        column is counted once, where tqdm makes it."""
        ncols = getattr(self.bar, "ncols", None)
        return ncols is not None and ncols < FULL_LINE_CHARS

    def _desc(self) -> str:
        epoch, max_epochs = self._epoch
        return f"{stage_title(self._stage, self.compact)} {epoch}/{max_epochs}"

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        if not trainer.is_main:
            return
        self._close()
        total = trainer.steps_per_epoch
        done = trainer.epoch_step  # > 0 when resumed mid-epoch
        self._epoch, self._stage = (epoch, trainer.max_epochs), trainer.stage
        # delay: nothing is drawn before the description fits the width tqdm has just read
        self.bar = self._tqdm(total=total, initial=min(done, total or done), leave=True, delay=1e-9)
        self.bar.set_description_str(self._desc(), refresh=True)
        self._last_refresh = time.monotonic()

    def on_step_end(self, trainer: TrainerView, out: StepOutput) -> None:
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
            compact = self.compact
            self.bar.set_description_str(self._desc(), refresh=False)
            self.bar.set_postfix_str(format_postfix(strip_prefix(scalars, "train/"), lr, compact), refresh=False)

    # -- validation: the epoch's bar stays as it ended, a second bar counts the batches ----------
    def on_validation_start(self, trainer: TrainerView, split: str, batches: int) -> None:
        if not trainer.is_main:
            return
        if self.bar is not None:
            self.bar.refresh()  # the last postfix, then the finished bar stays on screen
        self._close()
        name = "Validation" if split == "val" else f"Evaluation ({split})"
        self.val_bar = self._tqdm(total=batches, desc=name, leave=False)

    def on_validation_batch_end(self, trainer: TrainerView, split: str) -> None:
        if self.val_bar is not None:
            self.val_bar.update(1)

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self._close_val()

    def on_record(self, trainer: TrainerView, record: Record) -> None:
        if not trainer.is_main:
            return
        if record.kind == "step" and record.data.get("window_steps", 1):
            self.set_postfix(record.scalars, record.scalars.get("lr", trainer.lr))
            self._last_refresh = time.monotonic()
        if record.kind in ("epoch", "hparams"):
            self._close()  # the summary reads below the bar it summarizes
        if record.kind == "hparams" and record.data.get("status") != "running":
            self.log.info("%s", end_of_run_block(record.data, record.step, trainer.run_dir))
        if record.text:
            self.log.log(logging.WARNING if record.kind == "alert" else logging.INFO, record.text)

    def on_epoch_end(self, trainer: TrainerView, epoch: int, summary: dict[str, float]) -> None:
        self._close()

    def on_train_end(self, trainer: TrainerView) -> None:
        self._close()

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        self._close_val()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _close_val(self) -> None:
        if self.val_bar is not None:
            self.val_bar.close()
            self.val_bar = None
