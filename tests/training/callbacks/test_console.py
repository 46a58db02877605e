"""Console sink: tqdm bar per epoch with the fixed-order postfix, log lines, refresh budget."""

from __future__ import annotations

import fcntl
import io
import logging
import math
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.training.callbacks.fakes import healthy_losses
from training.callbacks.base import Record
from training.callbacks.console import ConsoleCallback
from training.callbacks.format import (
    COMPACT_POSTFIX_CHARS,
    POSTFIX_CHARS,
    POSTFIX_COMPONENTS,
    format_postfix,
    strip_prefix,
)
from training.callbacks.metrics import EpochSummaryCallback, StepMetricsCallback


def console_run(make_trainer, refresh_s=1e9, is_main=True, steps=20):
    metrics, buf = StepMetricsCallback(), io.StringIO()
    console = ConsoleCallback(tracker=metrics.tracker, refresh_s=refresh_s, file=buf, ncols=120)
    trainer = make_trainer([metrics, EpochSummaryCallback(), console], is_main=is_main, steps_per_epoch=steps)
    trainer.start()
    trainer.steps(steps, healthy_losses)
    trainer.end_epoch({"train/total": 1.0, "lr": 1e-4})
    return trainer, console, buf.getvalue()


def test_bar_shows_the_step_window_means_in_order(make_trainer):
    trainer, _, out = console_run(make_trainer)
    last = out.split("\r")[-1].strip()
    step = trainer.of_kind("step")[-1]
    assert last.startswith("Epoch 1/3|")
    assert last.endswith(format_postfix(strip_prefix(step.scalars, "train/"), step.scalars["lr"]))
    assert "20/20" in last
    assert all(len(line) <= 120 for line in out.replace("\r", "\n").splitlines())


def test_text_records_are_logged_alerts_as_warnings(make_trainer, caplog):
    with caplog.at_level(logging.INFO, logger="abr"):
        trainer, _, _ = console_run(make_trainer)
        trainer.emit(Record("alert", 20, 1, text="WARNING [health/x] step 20: something"))
    levels = {r.getMessage().split(" ")[0]: r.levelno for r in caplog.records if r.name == "abr"}
    assert levels["Step"] == logging.INFO and levels["Epoch"] == logging.INFO
    assert levels["WARNING"] == logging.WARNING
    assert sum(m.getMessage().startswith("Step ") for m in caplog.records) == 2


def test_postfix_reads_at_most_once_per_refresh_interval(make_trainer, monkeypatch):
    reads = []
    orig = StepMetricsCallback().tracker.read.__func__

    def counting_read(self, *a, **k):
        reads.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr("training.callbacks.metrics.LossTracker.read", counting_read)
    console_run(make_trainer, refresh_s=1e9)
    assert len(reads) == 2  # the two step lines only
    reads.clear()
    _, console, out = console_run(make_trainer, refresh_s=0.0)
    assert len(reads) == 2 + 18  # every step that is not a log point refreshes the running mean
    assert "Total=" in out


def test_other_ranks_print_nothing(make_trainer, caplog):
    with caplog.at_level(logging.INFO, logger="abr"):
        _, console, out = console_run(make_trainer, is_main=False)
    assert out == "" and console.bar is None
    assert [r for r in caplog.records if r.name == "abr"] == []


# -- the fixed width of the postfix ----------------------------------------------------------------


@pytest.mark.parametrize("compact", [False, True])
def test_postfix_length_never_changes(compact):
    """Every value from 1e-4 to 1e12, negative, NaN or infinite takes the same room: no flicker."""
    magnitudes = [0.0, 1e-4, 0.5, 1.0295, 9.9999, 99.99, 138.007, 999.96, 12345.6, 1e12, -1e12, -2.06, -0.0004,
                  math.nan, math.inf, -math.inf]
    keys = ("total", *POSTFIX_COMPONENTS)
    lengths = {len(format_postfix(dict.fromkeys(keys, v), 1e-4, compact)) for v in magnitudes}
    assert lengths == {COMPACT_POSTFIX_CHARS if compact else POSTFIX_CHARS}
    compact_text = format_postfix(dict.fromkeys(keys, 138.007), 1e-4, compact=True)
    assert compact_text == "Tot  138 Sig  138 Cls  138 Pk  138 Thr  138"


# -- what an 80-column terminal shows ------------------------------------------------------------

TERMINAL_RUN = r"""
import sys
from pathlib import Path
from tqdm.contrib.logging import logging_redirect_tqdm
from training.callbacks import default_callbacks
from tests.training.callbacks.fakes import FakeTrainer
from training.components import COMPONENTS
from training.config import Config
from training.setup import setup_logging

cfg = Config()
cfg.training.log_frequency = 10
cfg.logging.use_tensorboard = cfg.logging.health.enabled = False
run_dir = Path(sys.argv[1])
run_dir.mkdir(parents=True)
logger = setup_logging(run_dir)
trainer = FakeTrainer(run_dir, default_callbacks(cfg), cfg=cfg, max_epochs=200, steps_per_epoch=20)
losses = {c: 130.4529 if c == "threshold" else 1.0295 for c in COMPONENTS}
with logging_redirect_tqdm(loggers=[logger]):
    trainer.start()
    for epoch, total in ((1, 5.0), (2, 7.0)):
        if epoch > 1:
            trainer.start_epoch()
        trainer.steps(20, lambda step: losses)
        val = {"val/total": total, **{f"val/{c}": 1.0 for c in COMPONENTS}}
        trainer.validate(val, batches=5)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / "best.pt").touch()
        trainer.end_epoch({"train/total": 6.0, **val, "lr": 1e-4})
    trainer.end()
"""


def render(stream: str, columns: int) -> tuple[list[str], list[str]]:
    """(screen lines, lines that overflowed) of a terminal ``columns`` wide after ``stream``: enough
    of a VT100 for tqdm (carriage return, line feed, cursor up, erase to end of line)."""
    screen, overflow, row, col = [[]], [], 0, 0
    i = 0
    while i < len(stream):
        ch = stream[i]
        if ch == "\x1b":
            m = re.match(r"\x1b\[(\d*)([A-Za-z])", stream[i:])
            n = int(m.group(1) or 1)
            if m.group(2) == "A":
                row = max(0, row - n)
            elif m.group(2) == "K":
                del screen[row][col:]
            i += len(m.group(0))
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
        else:
            if col == columns:
                overflow.append("".join(screen[row]))
                row, col = row + 1, 0
            while len(screen) <= row:
                screen.append([])
            line = screen[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = ch
            col += 1
        while len(screen) <= row:
            screen.append([])
        i += 1
    return ["".join(line).rstrip() for line in screen], overflow


def in_terminal(argv: list[str], columns: int, env: dict[str, str], timeout: float = 120) -> str:
    """What ``argv`` writes to a pty ``columns`` wide (it must exit 0), \r\n read as \n."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=timeout) == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")  # the pty turns \n into \r\n


def run_in_terminal(tmp_path, columns: int) -> tuple[str, list[str], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    raw = in_terminal([sys.executable, "-c", TERMINAL_RUN, str(tmp_path / "run")], columns, env)
    screen, overflow = render(raw, columns)
    return raw, screen, overflow


def test_an_80_column_terminal(tmp_path):
    raw, screen, overflow = run_in_terminal(tmp_path, 80)
    assert [line for line in overflow if line.startswith(("Ep", "Validation"))] == []  # no bar wrapped (log lines may)
    bars = [i for i, line in enumerate(screen) if line.startswith("Ep 1/200|")]
    assert len(bars) == 1, screen  # the finished bar of epoch 1 stays, once
    bar = screen[bars[0]]
    assert "20/20" in bar and bar.endswith("Tot  136 Sig 1.03 Cls 1.03 Pk 1.03 Thr  130"), bar  # whole postfix
    summary = screen.index("Epoch 1/200 Summary:")
    assert summary > bars[0]  # the summary reads below the bar it summarizes
    assert "Validation|" in raw and not any(line.startswith("Validation") for line in screen)  # shown, then erased
    assert ", Total=" not in raw  # never the full form, even for a moment
    run_dir = tmp_path / "run"
    assert raw.rstrip().split("\n")[-3:] == [  # the end-of-run block, last on screen
        "Run finished: 2 epoch(s) completed, 40 steps",
        f"  best: epoch 1, val/total 5.0000 -> {run_dir}/checkpoints/best.pt",
        f"  evaluate: python -m evaluation.evaluate --run {run_dir}",
    ]


@pytest.mark.parametrize("columns", [120, 160])
def test_a_terminal_of_120_columns_or_more_shows_the_whole_postfix(tmp_path, columns):
    """Seed 003's postfix from 120 columns on; tqdm reads 119 on a 120-column terminal (its last
    column stays free), which used to pick the compact form."""
    raw, screen, overflow = run_in_terminal(tmp_path, columns)
    assert [line for line in overflow if line.startswith(("Ep", "Validation"))] == []  # no bar wrapped
    bars = [line for line in screen if line.startswith("Epoch 1/200|")]
    assert len(bars) == 1, screen
    postfix = "Total=135.6 | LR=1.00e-04 | Signal=1.030 | Class=1.030 | Peak=1.030 | Thresh=130.5"
    assert "20/20" in bars[0] and bars[0].endswith(postfix), bars[0]
    assert len(bars[0]) <= columns - 1  # tqdm's free last column
    assert "Tot " not in raw and not any(line.startswith("Ep ") for line in screen)  # never the compact form


def test_train_log_writes_an_alerts_level_once(tmp_path, make_trainer):
    """The console shows "WARNING [health/...]" (the alert's text); train.log adds the time and the
    level, and used to read "WARNING WARNING [health/...]"."""
    from training.setup import setup_logging

    setup_logging(tmp_path)
    try:
        trainer = make_trainer([ConsoleCallback(file=io.StringIO(), ncols=120)])
        trainer.emit(Record("alert", 20, 1, text="WARNING [health/x] step 20: something"))
        logging.getLogger("abr").warning("W&B init failed")  # a warning without a level in its text keeps it
    finally:
        setup_logging(None)
    log = (tmp_path / "train.log").read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 2)[2] for line in log] == ["WARNING [health/x] step 20: something",
                                                       "WARNING W&B init failed"]
