"""Console sink: tqdm bar per epoch with the fixed-order postfix, log lines, refresh budget."""

from __future__ import annotations

import io
import logging

from training.callbacks.base import Record
from training.callbacks.console import ConsoleCallback
from training.callbacks.format import format_postfix, strip_prefix
from training.callbacks.metrics import EpochSummaryCallback, StepMetricsCallback
from training.callbacks.testing import healthy_losses


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
    assert last.startswith("Epoch 1/3 |")
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
