"""metrics.jsonl: every record one line, strict JSON, flushed at epoch ends, truncated on resume."""

from __future__ import annotations

import json
import math

from tests.training.callbacks.fakes import healthy_losses
from training.callbacks import default_callbacks
from training.callbacks.base import Record
from training.callbacks.jsonl import JsonlCallback, read_jsonl


def test_every_record_is_one_line(make_trainer, cfg):
    cfg.logging.use_tensorboard = False
    trainer = make_trainer(default_callbacks(cfg))
    trainer.start()
    trainer.steps(20, healthy_losses)
    trainer.end_epoch({"train/total": 1.0, "val/total": 2.0, "lr": 1e-4})
    rows = read_jsonl(trainer.run_dir / "metrics.jsonl")  # flushed at the epoch end, file still open
    assert [r["kind"] for r in rows] == [r.kind for r in trainer.records]
    step = next(r for r in rows if r["kind"] == "step")
    rec = trainer.of_kind("step")[0]
    assert step["scalars"] == rec.scalars and step["text"] == rec.text and step["step"] == 10
    assert set(step) == {"kind", "step", "epoch", "scalars", "text", "data", "time"}
    trainer.end()


def test_non_finite_values_are_null(make_trainer):
    trainer = make_trainer([JsonlCallback()])
    trainer.start()
    trainer.emit(Record("step", 1, 1, scalars={"train/total": math.nan, "lr": math.inf}, data={"max": [-math.inf]}))
    trainer.end()
    line = (trainer.run_dir / "metrics.jsonl").read_text()
    row = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # strict JSON
    assert row["scalars"] == {"train/total": None, "lr": None} and row["data"] == {"max": [None]}


def test_resume_drops_lines_past_the_checkpoint(make_trainer):
    first = make_trainer([JsonlCallback()])
    first.start()
    for step in (10, 20, 30):
        first.emit(Record("step", step, 1, scalars={"train/total": float(step)}))
    first.end()
    resumed = make_trainer([JsonlCallback()], resumed=True, step=20)
    resumed.start()
    resumed.emit(Record("step", 30, 1, scalars={"train/total": 30.5}))
    resumed.end()
    rows = read_jsonl(resumed.run_dir / "metrics.jsonl")
    assert [(r["step"], r["scalars"]["train/total"]) for r in rows] == [(10, 10.0), (20, 20.0), (30, 30.5)]


def test_other_ranks_write_nothing(make_trainer):
    trainer = make_trainer([JsonlCallback()], is_main=False)
    trainer.start()
    trainer.emit(Record("step", 1, 1))
    trainer.end()
    assert not (trainer.run_dir / "metrics.jsonl").exists()


def test_each_step_log_is_on_disk_before_the_epoch_ends(make_trainer, cfg):
    cfg.logging.use_tensorboard = False
    trainer = make_trainer(default_callbacks(cfg))
    trainer.start()
    trainer.steps(10, healthy_losses)  # one step log, mid-epoch, file still open
    rows = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "step"] == [10]
    trainer.end()


def test_resume_drops_the_end_record_of_the_stop(make_trainer):
    first = make_trainer([JsonlCallback()])
    first.start()
    first.emit(Record("hparams", 0, 1, data={"status": "running"}))
    first.emit(Record("step", 10, 1, scalars={"train/total": 1.0}))
    first.emit(Record("hparams", 10, 1, data={"status": "interrupted"}))
    first.end()
    resumed = make_trainer([JsonlCallback()], resumed=True, step=10)
    resumed.start()
    resumed.end()
    rows = read_jsonl(resumed.run_dir / "metrics.jsonl")
    assert [(r["kind"], r["step"], r["data"].get("status")) for r in rows] == [("hparams", 0, "running"),
                                                                                ("step", 10, None)]
