"""TensorBoard sink, read back with TensorBoard's own event reader."""

from __future__ import annotations

import errno
import os
import signal
import threading

import pytest
import torch
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from tests.runs import read_jsonl, tiny_config, train_run
from tests.training.callbacks.fakes import FakeTrainer, healthy_losses, read_tensorboard
from training.callbacks import default_callbacks
from training.callbacks.base import Record
from training.callbacks.figures import emit_figure, waveform_figure
from training.callbacks.tensorboard_logger import TensorBoardCallback
from training.checkpoint import load_checkpoint
from training.components import COMPONENTS, DISPLAY_NAMES
from training.trainer import TrainingInterrupted


def tb_run(make_trainer, cfg):
    trainer = make_trainer(default_callbacks(cfg), steps_per_epoch=20)
    trainer.start()
    trainer.steps(20, healthy_losses)
    val = {"val/total": 5.0, **{f"val/{c}": 1.0 for c in COMPONENTS}}
    trainer.validate(val, batches=3)
    emit_figure(trainer, "val/waveforms", waveform_figure(torch.randn(3, 1, 200), torch.randn(3, 1, 200),
                                                          torch.randn(3, 1, 200)))
    trainer.emit(Record("alert", 20, 1, text="WARNING [health/x] step 20: crafted", data={"alert": "x"}))
    trainer.end_epoch({"train/total": 6.0, **{f"train/{c}": 1.1 for c in COMPONENTS}, **val, "lr": 1e-4})
    return trainer


def test_live_view_after_the_first_validation(make_trainer, cfg):
    trainer = tb_run(make_trainer, cfg)  # not ended: what a running `tensorboard --logdir` sees
    tags = read_tensorboard(trainer.run_dir / "tensorboard").Tags()
    expected = {"train/total", "train/weighted", "lr", "grad_norm/total", "grad_norm/signal", "val/total",
                "train_epoch/total", "train/weight_0", "eval/weight_5", "val/weight_5",
                *(f"train/{c}" for c in COMPONENTS), *(f"val/{c}" for c in COMPONENTS)}
    assert expected <= set(tags["scalars"])
    assert "val/waveforms" in tags["images"]
    assert {"alerts", "weights/index", "epoch_summary"} <= set(tags["tensors"])
    trainer.end()


def test_scalar_values_match_the_records(make_trainer, cfg):
    trainer = tb_run(make_trainer, cfg)
    trainer.end()
    acc = read_tensorboard(trainer.run_dir / "tensorboard")
    for rec in trainer.of_kind("step"):
        events = {e.step: e.value for e in acc.Scalars("train/signal")}
        assert abs(events[rec.step] - rec.scalars["train/signal"]) < 1e-6


def test_loss_breakdown_has_one_run_per_component(make_trainer, cfg):
    """TensorBoard colours lines by run: the breakdown charts read one run per component, so each
    component gets its own colour, and the run names are the legend."""
    trainer = tb_run(make_trainer, cfg)
    trainer.end()
    acc = read_tensorboard(trainer.run_dir / "tensorboard")
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {cat.title: {c.title: list(c.multiline.tag) for c in cat.chart} for cat in layout.category}
    breakdown = charts["Loss breakdown (one colour per component run)"]
    assert breakdown == {"train (window means)": ["^loss/train$"], "validation": ["^loss/val$"]}
    assert {"Total: train vs val", "Signal: train vs val", "Thresh: train vs val"} <= set(charts["Train vs val"])
    runs = trainer.run_dir / "tensorboard" / "components"
    assert sorted(p.name for p in runs.iterdir()) == sorted(["Total", *(DISPLAY_NAMES[c] for c in COMPONENTS)])
    step = trainer.of_kind("step")[-1]
    for c in COMPONENTS:
        run = read_tensorboard(runs / DISPLAY_NAMES[c])
        assert set(run.Tags()["scalars"]) == {"loss/train", "loss/val", "weight/train", "weight/val"}
        assert run.Scalars("loss/train")[-1].value == pytest.approx(step.scalars[f"train/{c}"])
        assert run.Scalars("loss/val")[-1].value == 1.0
    assert set(read_tensorboard(runs / "Total").Tags()["scalars"]) == {"loss/train", "loss/val"}


def _hparams(log_dir):
    acc = read_tensorboard(log_dir, plugins=True)
    content = acc.PluginTagToContent("hparams")
    out = {}
    for tag, key, field in (("_hparams_/experiment", "experiment", "experiment"),
                            ("_hparams_/session_start_info", "start", "session_start_info"),
                            ("_hparams_/session_end_info", "end", "session_end_info")):
        if tag in content:
            data = plugin_data_pb2.HParamsPluginData()
            data.ParseFromString(content[tag])
            out[key] = getattr(data, field)
    return out


def test_hparams_are_written_at_the_start_curated_and_typed(make_trainer, cfg):
    trainer = tb_run(make_trainer, cfg)  # still running
    hp = _hparams(trainer.run_dir / "tensorboard")
    assert set(hp) == {"experiment", "start"}  # live: the table exists while the run trains
    start, infos = hp["start"], hp["experiment"].hparam_infos
    shown = [i.display_name for i in sorted(infos, key=lambda i: (not i.differs, i.name))][:5]  # TensorBoard's order
    assert shown == ["loss.balancer.strategy", "training.lr", "data.synthetic.patients", "training.epochs",
                     "training.batch_size"]  # (a FakeTrainer has no model to count parameters of)
    assert len(infos) <= 12 and "training.log_frequency" not in {i.display_name for i in infos}
    values = {i.display_name: start.hparams[i.name] for i in infos}
    assert values["loss.balancer.grouping.enabled"].WhichOneof("kind") == "bool_value"  # not 0.0000
    assert values["loss.balancer.strategy"].string_value == "fixed"
    assert values["training.lr"].number_value == cfg.training.lr
    assert start.group_name == "run"
    metrics = [m.name.tag for m in hp["experiment"].metric_infos]
    losses = ["val/signal", "val/class", "val/peak_exist", "val/peak_latency", "val/threshold"]
    # issue 29: the per-patient metrics first, the headline ones beside their test columns
    val_patient = [m for m in metrics if m.startswith("val/patient/")]
    front = metrics[:metrics.index(val_patient[-1]) + 1]
    assert all(m.startswith(("val/patient/", "test/patient/")) for m in front) and len(front) == 8
    assert [m for m in metrics if m in losses][:5] == losses
    assert metrics[:2] == ["val/patient/threshold/within_10db", "test/patient/threshold/within_10db"]
    trainer.end()
    hp = _hparams(trainer.run_dir / "tensorboard")
    assert hp["end"].status == api_pb2.STATUS_SUCCESS
    log_dir = trainer.run_dir / "tensorboard"
    assert [p.name for p in log_dir.iterdir() if p.is_dir()] == ["components"]  # no hparams sub-run
    best = read_tensorboard(log_dir).Scalars("best/val/total")
    assert [e.value for e in best] == [5.0]


def test_sweep_runs_lead_with_the_swept_keys_and_have_short_distinct_names(tmp_path, cfg):
    rows = {}
    for value in ("fixed", "uncertainty"):
        cfg.loss.balancer.strategy = value
        cfg.training.lr = 0.001
        run_dir = tmp_path / "sweep" / f"loss.balancer.strategy={value},training.lr=0.001"
        trainer = FakeTrainer(run_dir, default_callbacks(cfg), cfg=cfg)
        trainer.start()
        trainer.end()
        rows[value] = _hparams(run_dir / "tensorboard")
    for value, hp in rows.items():
        infos = sorted(hp["experiment"].hparam_infos, key=lambda i: (not i.differs, i.name))  # TensorBoard's order
        assert [i.display_name for i in infos[:3]] == ["loss.balancer.strategy", "training.lr",
                                                       "data.synthetic.patients"]
        assert [i.differs for i in infos[:3]] == [True, True, False]
        assert hp["start"].group_name == f"{value}, 0.001 (sweep)"  # distinct within the ~15 characters shown
        assert hp["start"].hparams[infos[0].name].string_value == value


def test_interrupted_run_keeps_its_metrics_and_no_end_status(make_trainer, cfg):
    trainer = tb_run(make_trainer, cfg)
    trainer.step += 5
    for cb in trainer.callbacks:
        cb.on_exception(trainer, TrainingInterrupted(signal.SIGTERM))
    hp = _hparams(trainer.run_dir / "tensorboard")
    assert "end" not in hp  # a resumed run may still finish: TensorBoard keeps the first status it reads
    acc = read_tensorboard(trainer.run_dir / "tensorboard")
    assert [e.value for e in acc.Scalars("best/val/total")] == [5.0]
    assert acc.Scalars("val/total")[-1].step == 20  # no extra val point at the interrupt


def test_disabled_by_config(make_trainer, cfg):
    cfg.logging.use_tensorboard = False
    trainer = make_trainer(default_callbacks(cfg))
    trainer.start()
    trainer.steps(10, healthy_losses)
    trainer.end()
    assert not (trainer.run_dir / "tensorboard").exists()


def test_flush_makes_scalars_readable_without_closing(make_trainer):
    cb = TensorBoardCallback(flush_secs=3600)  # no timed flush during the test
    trainer = make_trainer([cb])
    cb.flush(trainer)  # before the writer opens: a no-op
    assert cb.writer is None and not (trainer.run_dir / "tensorboard").exists()
    trainer.start()
    flushes = []
    real_flush = cb.writer.flush
    cb.writer.flush = lambda: (flushes.append(1), real_flush())[1]
    values = {s: 0.5 * s for s in range(1, 6)}
    for s, v in values.items():
        trainer.emit(Record("step", s, 1, scalars={"train/total": v}))
    cb.flush(trainer)  # what the checkpoint callback calls before writing a checkpoint
    assert flushes == [1] and cb.writer is not None  # flushed, still open
    events = read_tensorboard(trainer.run_dir / "tensorboard").Scalars("train/total")
    assert {e.step: e.value for e in events} == values
    trainer.end()


@pytest.mark.parametrize(("errno_", "after"), [(errno.EROFS, 0), (errno.ENOSPC, 40)], ids=["read-only", "disk-full"])
def test_a_failing_tensorboard_directory_warns_once_and_training_goes_on(tmp_path, monkeypatch, capfd, errno_, after):
    """A read-only ``tensorboard/`` (simulated: tests may run as root, where chmod stops no write) or a
    disk that fills up after ``after`` event records: one warning line, no writer-thread traceback,
    the run finishes with its metrics.jsonl and checkpoints."""
    thread_errors = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    written = []
    real_write = RecordWriter.write

    def write(self, data):
        if len(written) >= after:
            raise OSError(errno_, os.strerror(errno_))
        written.append(1)
        real_write(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    run_dir = tmp_path / "run"
    trainer = train_run(tiny_config(tmp_path), run_dir)
    assert thread_errors == []
    err = capfd.readouterr().err
    assert "Traceback" not in err
    tb_dir = run_dir / "tensorboard"
    warning = (f"WARNING TensorBoard: writing to {tb_dir} failed ({os.strerror(errno_)}); TensorBoard logging is off "
               "for the rest of the run; metrics.jsonl and checkpoints continue")
    assert [line for line in err.splitlines() if "TensorBoard" in line] == [warning], err
    assert warning in (run_dir / "train.log").read_text()
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert records[-1]["kind"] == "hparams" and records[-1]["data"]["status"] == "finished"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == trainer.step
