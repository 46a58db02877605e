"""metrics.jsonl sink: every record as one JSON object per line, in ``trainer.run_dir``.

    {"kind": "step", "step": 100, "epoch": 1, "scalars": {...}, "text": "Step 100 - ...",
     "data": {...}, "time": 1732200000.0}

Strict JSON: a NaN or infinite value is written as ``null`` (its alert says which key it was).
"time" (Unix seconds) is the only non-deterministic key; drop it to compare two runs. Figures are
not serialized (their record keeps its tag). Every record is flushed as it is written (step
logs come every ``log_frequency`` steps, so this costs nothing), so ``tail -f`` and notebooks see
the run from its first step log. A resumed run first drops the lines past the step it resumes
from, the end-of-run record of the stop and a last line torn by a kill, so the file reads as if
the run had never stopped.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from data.files import write_atomic
from data.jsonable import to_jsonable
from training.callbacks.base import Callback, Record, TrainerView

FILENAME = "metrics.jsonl"


def record_to_json(record: Record) -> dict[str, Any]:
    return {"kind": record.kind, "step": record.step, "epoch": record.epoch, "scalars": to_jsonable(record.scalars),
            "text": record.text, "data": to_jsonable(record.data), "time": time.time()}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (for tests, comparisons and notebooks)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _continues(line: str, step: int) -> bool:
    """A line the resumed run keeps: up to ``step``, and not the end-of-run record of the stop it
    resumes from (the run goes on; train.log keeps the interruption). A record without a step is an
    older version's series stage (``series_epoch``, written out of the loop after the network): its series
    model is the one a resume fits again, so it goes with the other records past the checkpoint."""
    row = json.loads(line)
    ended = row["kind"] == "hparams" and (row.get("data") or {}).get("status", "running") != "running"
    return "step" in row and row["step"] <= step and not ended


def truncate_after(path: Path, step: int) -> None:
    """Drop the lines with a step past ``step`` (written after the checkpoint a run resumes from),
    and the end-of-run record of the stop."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: text may hold U+2028
    lines.pop()  # "" after the final newline, or a line torn by a kill mid-write (never a complete record)
    kept = [line + "\n" for line in lines if line.strip() and _continues(line, step)]
    write_atomic(path, lambda f: f.write("".join(kept).encode("utf-8")))


class JsonlCallback(Callback):
    def __init__(self) -> None:
        self.file: TextIO | None = None

    def _open(self, trainer: TrainerView) -> TextIO:
        if self.file is None:
            path = Path(trainer.run_dir) / FILENAME
            path.parent.mkdir(parents=True, exist_ok=True)
            if trainer.resumed:
                truncate_after(path, trainer.step)
            self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)
        return self.file

    def on_train_start(self, trainer: TrainerView) -> None:
        if trainer.is_main:
            self._open(trainer)

    def on_record(self, trainer: TrainerView, record: Record) -> None:
        if not trainer.is_main:
            return
        f = self._open(trainer)
        text = json.dumps(record_to_json(record), ensure_ascii=False, allow_nan=False) + "\n"
        with self._naming_the_file():
            f.write(text)
            f.flush()  # at most a few records per log_frequency steps: a reader (or a kill) sees each at once

    def flush(self, trainer: TrainerView) -> None:
        """Called before every checkpoint, so a kill -9 never loses a line the checkpoint has seen."""
        if self.file is not None:
            with self._naming_the_file():
                self.file.flush()

    @contextlib.contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        """A failed write (a full disk) names metrics.jsonl: Python's ENOSPC names no file."""
        try:
            yield
        except OSError as exc:
            name = self.file.name if self.file is not None else FILENAME
            raise OSError(exc.errno, f"'{name}': write failed ({exc.strerror or exc}); records up to the last "
                                     f"checkpoint are on disk: free space, then --resume") from exc

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self.flush(trainer)

    def on_epoch_end(self, trainer: TrainerView, epoch: int, summary: dict[str, float]) -> None:
        self.flush(trainer)

    def on_train_end(self, trainer: TrainerView) -> None:
        self._close()

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):  # a full disk: the error that stopped the run named the file
                self.file.close()
            self.file = None
