"""RunSummaryCallback: curated hparams at the start, final and best metrics at the end or at an
interruption, read back from metrics.jsonl."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.training.callbacks.fakes import healthy_losses
from training.callbacks import default_callbacks
from training.callbacks.jsonl import read_jsonl
from training.callbacks.run_summary import (
    RunSummaryCallback,
    curated_hparams,
    end_of_run_block,
    flat_config,
    run_names,
    swept_keys,
)
from training.components import COMPONENTS
from training.config import Config
from training.trainer import TrainingInterrupted


def test_swept_keys_from_the_run_name():
    flat = flat_config(Config())
    assert swept_keys("loss.balancer.strategy=fixed,training.lr=0.001", flat) == [
        "loss.balancer.strategy", "training.lr"]
    assert swept_keys("strategy=fixed", flat) == ["loss.balancer.strategy"]  # unambiguous last components
    assert swept_keys("model.channel_mults=[1,2],training.lr=0.1", flat) == ["model.channel_mults", "training.lr"]
    assert swept_keys("lr=0.1", flat) == []  # training.lr or model.ssm_lr? not a sweep name then
    assert swept_keys("demo", flat) == [] and swept_keys("nope=1", flat) == []


def test_curated_hparams_are_few_typed_and_name_the_model_size():
    import torch

    cfg = Config()
    model = torch.nn.Linear(3, 2)
    hparams, swept = curated_hparams(cfg, Path("logs/demo"), model)
    assert swept == [] and run_names(cfg, Path("logs/demo")) == ("demo", "demo")
    sweep_run = Path("logs/sweep/loss.balancer.strategy=dwa,training.lr=0.001")
    cfg.loss.balancer.strategy, cfg.training.lr = "dwa", 0.001  # the values come from the config
    assert run_names(cfg, sweep_run) == ("sweep/strategy=dwa lr=0.001", "dwa, 0.001 (sweep)")
    # TensorBoard shows the first five by default: the data's size is one of them (issue 29)
    assert list(hparams)[:5] == ["loss.balancer.strategy", "training.lr", "data.synthetic.patients",
                                 "training.epochs", "model.parameters"]
    assert hparams["model.parameters"] == 8 and hparams["loss.balancer.grouping.enabled"] is False
    assert "data.path" not in hparams and hparams["data.synthetic.patients"] == cfg.data.synthetic.patients
    assert len(hparams) <= 12


def run(make_trainer, cfg, end, val_totals=(5.0, 4.0, 6.0)):
    cfg.logging.use_tensorboard = False
    trainer = make_trainer(default_callbacks(cfg), steps_per_epoch=10)
    trainer.start()
    for i, total in enumerate(val_totals):
        if i:
            trainer.start_epoch()
        trainer.steps(10, healthy_losses)
        val = {"val/total": total, **{f"val/{c}": 1.0 for c in COMPONENTS}}
        trainer.validate(val)
        trainer.end_epoch({"train/total": 1.0, **val, "lr": 1e-4})
    end(trainer)
    return trainer, [r for r in read_jsonl(trainer.run_dir / "metrics.jsonl") if r["kind"] == "hparams"]


def test_start_and_end_records_in_metrics_jsonl(make_trainer, cfg):
    _, (start, end) = run(make_trainer, cfg, lambda t: t.end())
    assert start["step"] == 0 and start["data"]["status"] == "running"
    assert list(start["data"]["hparams"])[0] == "loss.balancer.strategy"
    assert end["data"]["status"] == "finished" and end["data"]["best_epoch"] == 2
    assert end["scalars"]["best/val/total"] == 4.0 and end["scalars"]["val/total"] == 6.0  # best and last
    assert end["text"] == "" and end["data"]["best_checkpoint"] is None  # nothing that depends on the run directory
    assert end_of_run_block(end["data"], end["step"], Path("logs/x")) == (
        "Run finished: 3 epoch(s) completed, 30 steps\n  best: epoch 2, val/total 4.0000 -> no best.pt written")
    end["data"]["best_checkpoint"] = "checkpoints/best.pt"
    assert end_of_run_block(end["data"], end["step"], Path("logs/x")).endswith(
        "-> logs/x/checkpoints/best.pt\n  evaluate: python -m evaluation.evaluate --run logs/x")


@pytest.mark.parametrize(("exc", "status"), [(TrainingInterrupted(signal.SIGINT), "interrupted"),
                                             (RuntimeError("CUDA error"), "failed")])
def test_interrupted_or_crashed_runs_keep_their_final_metrics(make_trainer, cfg, exc, status):
    def crash(trainer):
        trainer.steps(3, healthy_losses)
        for cb in trainer.callbacks:
            cb.on_exception(trainer, exc)

    _, (_, end) = run(make_trainer, cfg, crash)
    assert end["data"]["status"] == status and end["step"] == 33
    assert end["scalars"]["best/val/total"] == 4.0 and end["scalars"]["val/total"] == 6.0
    block = end_of_run_block(end["data"], end["step"], Path("x"))
    assert block.startswith(f"Run {status}: 3 epoch(s) completed, 33 steps")


def test_best_follows_the_checkpoint_metric_and_mode(make_trainer, cfg):
    cfg.training.early_stopping.metric, cfg.training.early_stopping.mode = "val/total", "max"
    _, (_, end) = run(make_trainer, cfg, lambda t: t.end())
    assert end["data"]["best_epoch"] == 3 and end["scalars"]["best/val/total"] == 6.0


def test_a_resumed_run_writes_no_second_start_and_keeps_its_best(make_trainer, cfg):
    first, _ = run(make_trainer, cfg, lambda t: None, val_totals=(5.0, 4.0))
    state = next(cb for cb in first.callbacks if isinstance(cb, RunSummaryCallback)).state_dict()
    first.end()
    resumed = make_trainer(default_callbacks(cfg), resumed=True, step=20, steps_per_epoch=10)
    next(cb for cb in resumed.callbacks if isinstance(cb, RunSummaryCallback)).load_state_dict(state)
    resumed.start()
    assert resumed.of_kind("hparams") == []
    resumed.end()
    (end,) = resumed.of_kind("hparams")
    assert end.data["best_epoch"] == 2 and end.scalars["best/val/total"] == 4.0
