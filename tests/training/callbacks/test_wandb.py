"""W&B sink, offline only (no network): run files, metric names, fallback, resume, alerts."""

from __future__ import annotations

import json
import logging
import signal
from types import SimpleNamespace

import pytest
import wandb

from tests.training.callbacks.fakes import healthy_losses, read_wandb_offline
from training.callbacks import default_callbacks
from training.callbacks.base import Record
from training.callbacks.wandb_logger import WandbCallback
from training.components import COMPONENTS
from training.trainer import TrainingInterrupted


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def wandb_run(make_trainer, cfg, **kwargs):
    cfg.logging.use_wandb = True
    cfg.logging.use_tensorboard = False
    trainer = make_trainer(default_callbacks(cfg), **kwargs)
    trainer.start()
    trainer.steps(20, healthy_losses)
    val = {"val/total": 5.0, **{f"val/{c}": 1.0 for c in COMPONENTS}}
    trainer.validate(val)
    trainer.end_epoch({"train/total": 6.0, **val, "lr": 1e-4})
    trainer.end()
    return trainer


def history_keys(run_dir) -> tuple[set[str], list]:
    wandb.teardown()  # the W&B service writes the run file asynchronously, even after finish()
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = read_wandb_offline(run_file)
    keys = {i.key or "/".join(i.nested_key) for r in records if r.WhichOneof("record_type") == "history"
            for i in r.history.item}
    return keys, records


def test_offline_run_files_with_the_tensorboard_names(make_trainer, cfg):
    trainer = wandb_run(make_trainer, cfg)
    keys, records = history_keys(trainer.run_dir)
    names = {k for r in trainer.records if r.kind != "hparams" for k in r.scalars}  # TensorBoard's tags
    assert names <= keys and {"step", "epoch", "train/signal", "val/total", "train/weight_0", "eval/weight_0",
                                  "val/weight_0"} <= keys
    metrics = {r.metric.glob_name or r.metric.name: r.metric.step_metric for r in records
               if r.WhichOneof("record_type") == "metric"}
    assert metrics.get("val/*") == "step" and metrics.get("*") == "step"
    kinds = [r.WhichOneof("record_type") for r in records]
    config = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "run"
              for i in r.run.config.update}
    config.update({i.key: json.loads(i.value_json) for r, k in zip(records, kinds, strict=True) if k == "config"
                   for i in r.config.update})
    assert config["training"]["log_frequency"] == 10  # the resolved config
    assert config["loss_weight_index"]["weight_3"] == "peak_latency"
    assert (trainer.run_dir / "wandb" / "run_id").exists()


def test_online_failure_warns_once_and_goes_offline(make_trainer, cfg, monkeypatch, caplog):
    real_init, seen = wandb.init, []

    def init(**kwargs):
        seen.append((kwargs["mode"], kwargs["settings"].init_timeout))
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("no network")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    cfg.logging.wandb.mode = "online"
    cfg.logging.wandb.init_timeout = 7.0
    with caplog.at_level(logging.WARNING, logger="abr"):
        trainer = wandb_run(make_trainer, cfg)
    assert seen == [("online", 7.0), ("offline", 7.0)]
    warnings = [r.getMessage() for r in caplog.records if r.name == "abr" and "W&B" in r.getMessage()]
    assert len(warnings) == 1 and "offline" in warnings[0]
    assert "train/signal" in history_keys(trainer.run_dir)[0]


def test_total_failure_never_stops_training(make_trainer, cfg, monkeypatch):
    def init(**kwargs):
        raise RuntimeError("broken install")

    monkeypatch.setattr(wandb, "init", init)
    trainer = wandb_run(make_trainer, cfg)
    assert len(trainer.of_kind("step")) == 2  # the run went on


def test_resume_continues_the_same_run(make_trainer, cfg):
    first = wandb_run(make_trainer, cfg)
    run_id = (first.run_dir / "wandb" / "run_id").read_text()
    resumed = make_trainer([WandbCallback()], resumed=True, step=20)
    resumed.cfg.logging.use_wandb = True
    resumed.start()
    resumed.end()
    assert (resumed.run_dir / "wandb" / "run_id").read_text() == run_id


def test_alerts_only_when_online(make_trainer):
    calls = []
    run = SimpleNamespace(offline=False, alert=lambda **k: calls.append(k), log=lambda *a, **k: None)
    cb = WandbCallback()
    cb.run = run
    trainer = make_trainer([cb])
    trainer.emit(Record("alert", 5, 1, text="WARNING [health/grad_explosion] ...", data={"alert": "grad_explosion"}))
    assert calls and calls[0]["title"] == "grad_explosion"
    run.offline, calls[:] = True, []
    trainer.emit(Record("alert", 6, 1, text="WARNING ...", data={"alert": "x"}))
    assert calls == []


def test_disabled_mode_writes_nothing(make_trainer, cfg):
    cfg.logging.wandb.mode = "disabled"
    trainer = wandb_run(make_trainer, cfg)
    assert not (trainer.run_dir / "wandb").exists()


def two_validations_and_an_alert(make_trainer, cfg):
    cfg.logging.use_wandb = True
    cfg.logging.use_tensorboard = False
    trainer = make_trainer(default_callbacks(cfg))
    trainer.start()
    trainer.steps(20, healthy_losses)
    for total in (5.0, 7.0):  # the best epoch is the first
        val = {"val/total": total, **{f"val/{c}": 1.0 for c in COMPONENTS}}
        trainer.validate(val)
        trainer.end_epoch({"train/total": 6.0, **val, "lr": 1e-4})
    trainer.emit(Record("alert", 20, 2, text="WARNING [health/grad_explosion] step 20: norm 1e5",
                        data={"alert": "grad_explosion"}))
    trainer.end()
    _, records = history_keys(trainer.run_dir)
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    return trainer, records, summary


def test_val_summary_keeps_the_last_and_the_best_value(make_trainer, cfg):
    _, _, summary = two_validations_and_an_alert(make_trainer, cfg)
    assert summary["val/total"] == {"min": 5.0, "last": 7.0}
    assert summary["best/val/total"] == 5.0 and summary["best/epoch"] == 1.0
    assert summary["status"] == "finished"


def test_alerts_are_rows_in_the_offline_run(make_trainer, cfg):
    trainer, records, summary = two_validations_and_an_alert(make_trainer, cfg)
    history = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for r in records
               if r.WhichOneof("record_type") == "history" for i in r.history.item}
    assert history["health/grad_explosion"] == 1 and history["step"] == 20
    (table,) = trainer.run_dir.glob("wandb/offline-run-*/files/" + summary["health/alerts/path"])
    rows = json.loads(table.read_text())
    assert rows["columns"] == ["step", "epoch", "alert", "message"]
    assert rows["data"] == [[20, 2, "grad_explosion", "WARNING [health/grad_explosion] step 20: norm 1e5"]]


def test_hparams_record_is_in_the_config(make_trainer, cfg):
    _, records, _ = two_validations_and_an_alert(make_trainer, cfg)
    config = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for i in r.config.update}
    assert list(config["hparams"])[:3] == ["loss.balancer.strategy", "training.lr", "data.synthetic.patients"]
    assert config["hparams"]["loss.balancer.grouping.enabled"] is False


def test_project_entity_group_and_tags_reach_wandb_init(make_trainer, cfg, monkeypatch):
    real_init, seen = wandb.init, []

    def init(**kwargs):
        seen.append({k: kwargs[k] for k in ("project", "entity", "group", "tags")})
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    w = cfg.logging.wandb
    w.project, w.entity, w.group, w.tags = "abr-test", "lab", "sweep-1", ["a", "b"]
    wandb_run(make_trainer, cfg)
    assert seen == [{"project": "abr-test", "entity": "lab", "group": "sweep-1", "tags": ["a", "b"]}]


@pytest.mark.parametrize(("exc", "code"), [(KeyboardInterrupt(), 130), (TrainingInterrupted(signal.SIGINT), 130),
                                           (TrainingInterrupted(signal.SIGTERM), 143), (RuntimeError("x"), 1)])
def test_the_run_ends_with_the_process_exit_code(make_trainer, exc, code):
    """Ctrl-C is 130 in W&B as in the shell, not 1."""
    finished = []
    cb = WandbCallback()
    cb.run = SimpleNamespace(finish=lambda exit_code: finished.append(exit_code))
    cb.on_exception(make_trainer([cb]), exc)
    assert finished == [code] and cb.run is None


def test_evaluation_is_logged_back_into_the_same_offline_run(make_trainer, cfg):
    """Issue 29 point 4: evaluate's test metrics reach the training run's own W&B run (same id, its
    history at the checkpoint's step, and its summary), not a new run."""
    from training.callbacks.wandb_logger import log_evaluation

    trainer = wandb_run(make_trainer, cfg)
    wandb.teardown()
    run_id = (trainer.run_dir / "wandb" / "run_id").read_text().strip()
    scalars = {"test/patient/threshold/within_10db": 0.8, "test/class/macro_f1": 0.5}
    assert log_evaluation(trainer.run_dir, cfg.logging.wandb, scalars, step=555) == run_id
    wandb.teardown()
    run_files = sorted(trainer.run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 2 and all(run_id in f.name for f in run_files)  # the same run, resumed offline
    def key(i):  # W&B stores a name with slashes as its nested parts
        return i.key or "/".join(i.nested_key)

    records = read_wandb_offline(run_files[-1])
    rows = [{key(i): json.loads(i.value_json) for i in r.history.item} for r in records
            if r.WhichOneof("record_type") == "history"]
    expected = {"test/patient/threshold/within_10db": 0.8, "test/class/macro_f1": 0.5, "step": 555}
    assert expected.items() <= rows[-1].items()
    summary = {key(i): json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}
    assert summary.get("test/class/macro_f1") == 0.5
    cfg.logging.wandb.mode = "disabled"
    assert log_evaluation(trainer.run_dir, cfg.logging.wandb, scalars, step=555) is None
