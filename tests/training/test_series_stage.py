"""The series stage through the trainer's loop contract (issue 26): one callback list, one global step,
the console's bar and summaries, metrics.jsonl, TensorBoard and W&B of the same run, checkpoints and
exact resume."""

from __future__ import annotations

import json
import re

import pytest
import torch
import wandb

from tests.reliability.procs import TINY_MODEL, in_process_args, train_in_process
from tests.runs import read_jsonl, tiny_config, train_run
from tests.training.callbacks.fakes import read_tensorboard, read_wandb_offline
from training.callbacks.base import Callback
from training.checkpoint import load_checkpoint
from training.series import SERIES_KEYS

SERIES = ["series.enabled=true", "series.epochs=2", "series.val_every=1", "series.width=16", "series.heads=2",
          "series.layers=1", "series.batch_size=2"]


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    """One CLI run (in process): 1 network epoch, then 2 series epochs, TensorBoard and W&B (offline) on."""
    tmp = tmp_path_factory.mktemp("series")
    argv = in_process_args(tmp, "run", "training.epochs=1", "data.synthetic.patients=30",
                           "logging.use_tensorboard=true", "logging.use_wandb=true", "logging.wandb.mode=offline",
                           *SERIES)
    assert train_in_process(argv) == 0
    wandb.teardown()  # the service writes the run file asynchronously
    return tmp / "run"


def series_steps(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "step" and "train/series_threshold" in r["scalars"]]


def test_series_records_follow_the_network_on_one_global_step(series_run):
    records = read_jsonl(series_run / "metrics.jsonl")
    assert all("step" in r for r in records)  # --resume reads row["step"] (the 'step' error)
    steps = [r["step"] for r in records]
    assert steps == sorted(steps)
    network_epoch = next(r for r in records if r["kind"] == "epoch" and r["data"].get("stage") == "network")
    series_epochs = [r for r in records if r["kind"] == "epoch" and r["data"].get("stage") == "series"]
    assert [r["epoch"] for r in series_epochs] == [1, 2]
    assert all(r["step"] > network_epoch["step"] for r in series_epochs)
    assert series_epochs[0]["text"].startswith("Series epoch 1/2 Summary:\n  Train - Total: ")
    assert "SeriesThresh: " in series_epochs[0]["text"] and "SeriesType: " in series_epochs[0]["text"]
    assert {"val/series_threshold", "val/series/threshold/within_5db", "val/series/type/macro_f1"} <= set(
        series_epochs[0]["scalars"])
    steps = series_steps(records)
    assert steps and all(r["step"] > network_epoch["step"] for r in steps)
    assert steps[0]["text"].startswith(f"Step {steps[0]['step']} - Total: ") and "SeriesType: " in steps[0]["text"]
    ended = [r for r in records if r["kind"] == "hparams" and r["data"]["status"] == "finished"]
    assert len(ended) == 1 and ended[-1]["step"] == series_epochs[-1]["step"]  # the run ends after the stage
    from training.series import load_series

    assert load_series(series_run) is not None
    state = load_checkpoint(series_run / "checkpoints" / "last.pt")
    assert state["series"]["epoch"] == 3 and state["step"] == series_epochs[-1]["step"]


def test_tensorboard_and_wandb_hold_the_series_components_on_the_global_step(series_run):
    records = read_jsonl(series_run / "metrics.jsonl")
    want = {r["step"]: r["scalars"]["train/series_threshold"] for r in series_steps(records)}
    tb = read_tensorboard(series_run / "tensorboard")
    got = {e.step: e.value for e in tb.Scalars("train/series_threshold")}
    assert set(got) == set(want) and all(abs(got[s] - want[s]) < 1e-5 for s in want)
    (run_file,) = (series_run / "wandb").glob("offline-run-*/run-*.wandb")
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in read_wandb_offline(run_file) if r.WhichOneof("record_type") == "history"]
    logged = {h["step"]: h["train/series_threshold"] for h in history if "train/series_threshold" in h}
    assert set(logged) == set(want) and all(abs(logged[s] - want[s]) < 1e-5 for s in want)


class Killed(BaseException):
    """Stands for SIGKILL: no hook saves anything, the last checkpoint is what a resume finds."""


class KillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer, out) -> None:
        if out.step == self.at:
            raise Killed


def test_killed_during_the_series_stage_resumes_to_the_same_series_model(tmp_path):
    model = [s for s in TINY_MODEL if not s.startswith("data.")]  # a 10k-parameter network: seconds per run
    cfg = tiny_config(tmp_path, *model, "training.epochs=1", "data.synthetic.patients=30",
                      "logging.use_tensorboard=false",
                      *[s for s in SERIES if not s.startswith("series.epochs")], "series.epochs=3")
    whole = train_run(cfg, tmp_path / "whole")
    network_steps = whole.steps_per_epoch
    series_per_epoch = whole.series_stage.steps_per_epoch
    kill_at = network_steps + series_per_epoch + 2  # inside series epoch 2; last.pt is from the end of epoch 1
    with pytest.raises(Killed):
        train_run(cfg, tmp_path / "cut", extra_callbacks=[KillAtStep(kill_at)])
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert state["series"]["epoch"] == 2 and state["step"] == network_steps + series_per_epoch
    assert not (tmp_path / "cut" / "checkpoints" / "series.pt").exists()
    resumed = train_run(cfg, tmp_path / "cut", resume=True)
    assert resumed.step == whole.step
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "series.pt", required=SERIES_KEYS)["series_model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "series.pt", required=SERIES_KEYS)["series_model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(tmp_path / "whole" / "metrics.jsonl")]
    again = [{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert [r for r in again if r["kind"] == "epoch"] == [r for r in strip if r["kind"] == "epoch"]


def test_resume_longer_and_a_longer_series_stage(tmp_path):
    """The issue's reproduction, small: --resume RUN training.epochs=2 on a run whose series stage has
    finished trains epoch 2 and the series stage again; series.epochs=N refits it with N epochs."""
    extra = ["training.epochs=1", "data.synthetic.patients=30", "logging.use_tensorboard=false",
             *[s for s in SERIES if not s.startswith("series.epochs")], "series.epochs=3"]
    assert train_in_process(in_process_args(tmp_path, "rs", *extra)) == 0
    run = tmp_path / "rs"
    assert train_in_process(["--resume", str(run), "training.epochs=2"]) == 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 3 and state["series"]["epoch"] == 4
    records = read_jsonl(run / "metrics.jsonl")
    stages = [(r["data"]["stage"], r["epoch"]) for r in records if r["kind"] == "epoch"]
    assert stages == [("network", 1), ("series", 1), ("series", 2), ("series", 3), ("network", 2), ("series", 1),
                      ("series", 2), ("series", 3)]
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    assert train_in_process(["--resume", str(run), "series.epochs=4"]) == 0
    stages = [(r["data"]["stage"], r["epoch"]) for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "epoch"]
    assert stages[8:] == [("series", 1), ("series", 2), ("series", 3), ("series", 4)]
    assert load_checkpoint(run / "checkpoints" / "series.pt", required=SERIES_KEYS)["series_config"]["epochs"] == 4


def test_a_terminal_shows_the_series_stage_with_a_bar_and_summaries(tmp_path):
    """train.py under a 120-column pty: after the network's epoch, a 'Series epoch k/2' bar per series
    epoch (kept, complete) and its summary below it."""
    from tests.reliability.procs import cli_env, train_args
    from tests.training.callbacks.test_console import in_terminal, render

    args = train_args(tmp_path, "tty", "training.epochs=1", "data.synthetic.patients=30",
                      "logging.use_tensorboard=false", *SERIES)
    raw = in_terminal(args, 120, cli_env(), timeout=300)
    screen, _ = render(raw, 120)
    network = screen.index("Epoch 1/1 Summary:")
    for k in (1, 2):
        bars = [i for i, line in enumerate(screen) if line.startswith(f"Series epoch {k}/2|")]
        assert len(bars) == 1, screen  # the finished bar of the series epoch stays, once
        assert "Total=" in screen[bars[0]] and "LR=" in screen[bars[0]]
        summary = screen.index(f"Series epoch {k}/2 Summary:")
        assert network < bars[0] < summary and screen[summary + 1].startswith("  Train - Total: ")


def test_a_signal_while_the_stage_prepares_stops_there_and_a_resume_prepares_again(tmp_path, monkeypatch):
    """SIGTERM during the stage's evidence passes (minutes in the clinical recipe, no step yet): the run stops
    before the next pass with the stage not started, each pass said in the log, and a resume fits the same
    series model as a run never stopped."""
    import os
    import signal

    import training.series_stage as stage_module
    from training.trainer import TrainingInterrupted

    model = [s for s in TINY_MODEL if not s.startswith("data.")]
    cfg = tiny_config(tmp_path, *model, "training.epochs=1", "data.synthetic.patients=30",
                      "logging.use_tensorboard=false", *SERIES, "series.thinned_series=0.5")
    whole = train_run(cfg, tmp_path / "whole")
    passes = []
    series_set = stage_module.series_set

    def signalled_on_the_first_pass(*args, **kwargs):
        passes.append(1)
        if len(passes) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler only sets a flag
        return series_set(*args, **kwargs)

    monkeypatch.setattr(stage_module, "series_set", signalled_on_the_first_pass)
    with pytest.raises(TrainingInterrupted):
        train_run(cfg, tmp_path / "cut")
    assert passes == [1]  # stopped before the val split's pass
    log = (tmp_path / "cut" / "train.log").read_text(encoding="utf-8").splitlines()
    said = [line.split(" INFO ", 1)[1] for line in log if " INFO series stage: " in line]
    assert said[0] == "series stage: building the training series (the train split, thinned copies)"  # no noise
    assert re.fullmatch(r"series stage: the network's evidence on the training series \([\d,]+ recordings\)", said[1])
    assert len(said) == 2  # nothing after the pass the signal came in
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert state["series"] is None and state["step"] == whole.steps_per_epoch
    monkeypatch.setattr(stage_module, "series_set", series_set)
    resumed = train_run(cfg, tmp_path / "cut", resume=True)
    assert resumed.step == whole.step
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "series.pt", required=SERIES_KEYS)["series_model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "series.pt", required=SERIES_KEYS)["series_model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
