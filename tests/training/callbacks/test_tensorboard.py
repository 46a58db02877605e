"""TensorBoard sink, read back with TensorBoard's own event reader."""

from __future__ import annotations

import torch
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from training.callbacks import default_callbacks
from training.callbacks.base import Record
from training.callbacks.figures import emit_figure, waveform_figure
from training.callbacks.tensorboard_logger import TensorBoardCallback
from training.callbacks.testing import healthy_losses, read_tensorboard
from training.components import COMPONENTS


def tb_run(make_trainer, cfg):
    trainer = make_trainer(default_callbacks(cfg), steps_per_epoch=20)
    trainer.start()
    trainer.steps(20, healthy_losses)
    val = {"val/total": 5.0, **{f"val/{c}": 1.0 for c in COMPONENTS}}
    trainer.validate(val)
    emit_figure(trainer, "val/waveforms", waveform_figure(torch.randn(3, 1, 200), torch.randn(3, 1, 200),
                                                          torch.randn(3, 1, 200)))
    trainer.emit(Record("alert", 20, 1, text="WARNING [health/x] step 20: crafted", data={"alert": "x"}))
    trainer.end_epoch({"train/total": 6.0, **{f"train/{c}": 1.1 for c in COMPONENTS}, **val, "lr": 1e-4})
    return trainer


def test_live_view_after_the_first_validation(make_trainer, cfg):
    trainer = tb_run(make_trainer, cfg)  # not ended: what a running `tensorboard --logdir` sees
    tags = read_tensorboard(trainer.run_dir / "tensorboard").Tags()
    expected = {"train/total", "train/weighted", "lr", "grad_norm/total", "grad_norm/signal", "val/total",
                "train_epoch/total", "train/weight_0", "eval/weight_5",
                *(f"train/{c}" for c in COMPONENTS), *(f"val/{c}" for c in COMPONENTS)}
    assert expected <= set(tags["scalars"])
    assert "val/waveforms" in tags["images"]
    assert {"alerts/text_summary", "weights/index/text_summary", "epoch_summary/text_summary"} <= set(tags["tensors"])
    trainer.end()


def test_scalar_values_match_the_records(make_trainer, cfg):
    trainer = tb_run(make_trainer, cfg)
    trainer.end()
    acc = read_tensorboard(trainer.run_dir / "tensorboard")
    for rec in trainer.of_kind("step"):
        events = {e.step: e.value for e in acc.Scalars("train/signal")}
        assert abs(events[rec.step] - rec.scalars["train/signal"]) < 1e-6


def test_custom_scalars_layout(make_trainer, cfg):
    trainer = tb_run(make_trainer, cfg)
    trainer.end()
    acc = read_tensorboard(trainer.run_dir / "tensorboard")
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {cat.title: [c.title for c in cat.chart] for cat in layout.category}
    assert "train (window means)" in charts["Loss breakdown"]
    assert {"Total: train vs val", "Signal: train vs val", "Thresh: train vs val"} <= set(charts["Train vs val"])
    assert "train weights" in charts["Balancer weights"]


def test_hparams_are_in_the_same_run(make_trainer, cfg):
    trainer = tb_run(make_trainer, cfg)
    trainer.end()
    log_dir = trainer.run_dir / "tensorboard"
    assert [p for p in log_dir.iterdir() if p.is_dir()] == []  # no stray sub-run
    acc = read_tensorboard(log_dir, plugins=True)
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))
    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(acc.SummaryMetadata("_hparams_/experiment").plugin_data.content)
    metrics = {m.name.tag for m in data.experiment.metric_infos}
    assert {"val/total", "val/signal", "train_epoch/total"} <= metrics
    start = plugin_data_pb2.HParamsPluginData()
    start.ParseFromString(acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content)
    assert start.session_start_info.hparams["training.log_frequency"].number_value == 10


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
