"""Every monitoring feature of the contract (DESIGN.md, seeds 000 and 003), on real tiny runs.

Two CPU runs of a few seconds each (flat weights with TensorBoard and W&B offline; grouped
weights) are trained once per module; the health alerts are each triggered by a crafted input
through the same callbacks. Run alone: `python run.py -m pytest test_enhanced_monitoring.py`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
from tqdm import tqdm

from tests.runs import read_jsonl, tiny_config
from tests.training.callbacks.fakes import FakeBalancer, FakeMetaLoss, FakeTrainer, healthy_losses, read_tensorboard
from train import prepare_run_dir
from training.callbacks import default_callbacks
from training.callbacks.base import Callback
from training.callbacks.console import BAR_FORMAT
from training.callbacks.format import format_postfix
from training.components import COMPONENTS, DISPLAY_NAMES
from training.setup import build_trainer, setup_logging, write_run_files

LOG_EVERY = 3


class StepRecorder(Callback):
    """Keeps every optimizer step's component values, to check the step log's window means."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_step_end(self, trainer, out) -> None:
        values = {c: float(v) for c, v in out.losses.items()}
        self.steps.append({"total": float(out.objective), **values, "skipped": out.skipped})


def _train(run_dir: Path, *overrides: str) -> tuple[object, StepRecorder]:
    cfg = tiny_config(run_dir.parent, f"training.log_frequency={LOG_EVERY}", "logging.figures=true",
                      "diffusion.sampling_steps=10", *overrides)
    prepare_run_dir(run_dir, overwrite=True)
    setup_logging(run_dir)
    trainer = build_trainer(cfg, run_dir)
    recorder = StepRecorder()
    trainer.callbacks.insert(0, recorder)
    write_run_files(trainer)
    trainer.fit()
    return trainer, recorder


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    os.environ.setdefault("WANDB_SILENT", "true")
    run_dir = tmp_path_factory.mktemp("mon") / "flat"
    trainer, recorder = _train(run_dir, "logging.use_wandb=true", "logging.wandb.mode=offline")
    import wandb

    wandb.teardown()  # the offline run file is written by W&B's service, asynchronously
    return run_dir, trainer, recorder


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mon") / "grouped"
    _train(run_dir, "loss.balancer.strategy=uncertainty", "loss.balancer.grouping.enabled=true",
           "logging.use_tensorboard=false")
    return run_dir


# -- tqdm postfix ---------------------------------------------------------------------------------


def test_postfix_has_the_contract_order_and_fits_120_columns():
    values = {"total": 138.007, "signal": 1.0295, "class": 1.9444, "peak_exist": 0.8308,
              "peak_latency": 2.8, "peak_amplitude": 1.3, "threshold": 130.4529}
    text = format_postfix(values, 1e-4)
    names = [part.split("=")[0] for part in text.split(" | ")]
    assert names == ["Total", "LR", "Signal", "Class", "Peak", "Thresh"]
    assert "LR=1.00e-04" in text
    # the whole bar line, at its widest (epoch 200/200, 1139/1140 steps, hours of ETA), fits the 119
    # characters tqdm draws on a 120-column terminal
    line = tqdm.format_meter(1139, 1140, 1139 * 35309.0, ncols=119, prefix="Epoch 200/200", bar_format=BAR_FORMAT,
                             postfix=text)
    assert len(line) <= 119 and line.endswith(text), line


def test_weight_index_mapping_is_logged_at_start(flat_run):
    run_dir, _, _ = flat_run
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "Loss weight index: weight_0 = signal" in log


# -- step log -------------------------------------------------------------------------------------


def test_step_log_every_log_frequency_steps_with_window_means(flat_run):
    run_dir, trainer, recorder = flat_run
    steps = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(LOG_EVERY, trainer.step + 1, LOG_EVERY))
    for r in steps:
        window = [s for s in recorder.steps[r["step"] - LOG_EVERY : r["step"]] if not s["skipped"]]
        for c in ("total", *COMPONENTS):
            expected = sum(s[c] for s in window) / len(window)
            assert r["scalars"][f"train/{c}"] == pytest.approx(expected, rel=1e-5), (r["step"], c)
    lines = [ln for ln in (run_dir / "train.log").read_text(encoding="utf-8").splitlines() if " Step " in ln]
    assert len(lines) == len(steps) and len(set(lines)) == len(lines)  # one line per window, none repeated
    pattern = r"Step 3 - Total: [\d.]+, " + ", ".join(f"{DISPLAY_NAMES[c]}: [\\d.]+" for c in COMPONENTS) + "$"
    assert re.search(pattern, lines[0]), lines[0]


# -- epoch summary --------------------------------------------------------------------------------


def test_epoch_summary_block(flat_run):
    run_dir, trainer, _ = flat_run
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    for epoch in (1, 2):
        block = re.search(rf"Epoch {epoch}/2 Summary:\n.*Train - Total: [\d.]+, Signal: .*\n.*Val   - Total: "
                          rf"[\d.]+, Signal: .*\n.*LR: \d\.\d\de[-+]\d\d", log)
        assert block, f"epoch {epoch} summary missing"
    epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"val/total", "val/signal", "lr"} <= set(epochs[-1]["scalars"])


# -- TensorBoard ----------------------------------------------------------------------------------


def test_tensorboard_has_every_view(flat_run):
    run_dir, _, _ = flat_run
    acc = read_tensorboard(run_dir / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    for c in ("total", *COMPONENTS):
        assert f"train/{c}" in tags and f"val/{c}" in tags, c
    assert {"lr", "grad_norm/total"} <= tags
    assert any(t.startswith("grad_norm/") and t != "grad_norm/total" for t in tags)  # per head
    assert {f"train/weight_{i}" for i in range(6)} <= tags and {f"eval/weight_{i}" for i in range(6)} <= tags
    assert {f"val/weight_{i}" for i in range(6)} <= tags  # the alias
    assert acc.Tags()["images"], "no waveform figure"
    plugins = read_tensorboard(run_dir / "tensorboard", plugins=True)
    plugin_tags = plugins.PluginTagToContent("custom_scalars")
    assert plugin_tags, "no custom-scalars layout"
    assert plugins.PluginTagToContent("hparams"), "no hparams in the run"
    texts = " ".join(str(plugins.Tensors(t)[0].tensor_proto.string_val) for t in plugins.PluginTagToContent("text"))
    assert "weight_0" in texts and "signal" in texts  # the index -> component mapping
    subdirs = [p.name for p in (run_dir / "tensorboard").iterdir() if p.is_dir()]
    assert subdirs == ["components"], f"stray sub-runs: {subdirs}"  # only the loss-breakdown runs
    assert plugins.PluginTagToContent("text").keys() >= {"weights/index", "epoch_summary", "run_summary"}


def test_end_of_run_block_names_the_best_checkpoint(flat_run):
    run_dir, trainer, _ = flat_run
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    best = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "hparams"][-1]
    epoch = best["data"]["best_epoch"]
    assert f"best: epoch {epoch}, val/total " in log and f"-> {run_dir}/checkpoints/best.pt" in log
    assert f"evaluate: python -m evaluation.evaluate --run {run_dir}" in log
    assert best["scalars"]["best/val/total"] == min(
        r["scalars"]["val/total"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "epoch")


# -- W&B ------------------------------------------------------------------------------------------


def test_wandb_offline_run_files(flat_run):
    run_dir, _, _ = flat_run
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")), "no offline run file"


# -- weights: both shapes -------------------------------------------------------------------------


def test_flat_weights_in_every_record(flat_run):
    run_dir, _, _ = flat_run
    weights = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "weights"]
    train = [r for r in weights if "train/weight_0" in r["scalars"]]
    evals = [r for r in weights if "eval/weight_0" in r["scalars"]]
    assert train and evals and all(r["scalars"]["val/weight_0"] == r["scalars"]["eval/weight_0"] for r in evals)
    assert all(r["scalars"][f"train/weight_{i}"] == 1.0 for r in train for i in range(6))  # fixed


def test_grouped_weights_are_logged_per_head(grouped_run):
    records = read_jsonl(grouped_run / "metrics.jsonl")
    keys = {k for r in records if r["kind"] == "weights" for k in r["scalars"]}
    assert {"train/head_0_weight_0", "train/head_2_weight_2", "eval/head_3_weight_0", "val/head_3_weight_0"} <= keys
    values = [r["scalars"]["train/head_1_weight_0"] for r in records if "train/head_1_weight_0" in r["scalars"]]
    assert all(math.isfinite(v) and v > 0 for v in values)


# -- health alerts --------------------------------------------------------------------------------


def test_real_run_is_healthy(flat_run):
    run_dir, _, _ = flat_run
    assert [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "alert"] == []


def _crafted(name: str, tmp_path: Path):
    cfg = tiny_config(tmp_path, "training.log_frequency=10", "logging.health.stall_window=40",
                      "logging.health.oscillation_window=6", "logging.health.cooldown_steps=1000")
    meta = FakeMetaLoss()
    kw: dict = {}
    losses = healthy_losses
    if name == "nonfinite":
        kw["grad_norm"] = lambda s: math.nan if s == 7 else 1.0
    elif name == "negative_total":
        kw["objective"] = -2.062
    elif name == "loss_spike":
        kw["objective"] = lambda s: 500.0 if s == 95 else 3.0
    elif name == "grad_explosion":
        kw["grad_norm"] = lambda s: 1e5 if s == 33 else 1.0
    elif name == "stalled_component":
        def losses(s):  # seed 001: one flat while the others fall fast
            out = {c: 2.0 * math.exp(-s / 20) + 0.01 for c in COMPONENTS}
            out["threshold"] = 15.9
            return out
    elif name == "weight_near_clamp":
        meta = FakeMetaLoss(FakeBalancer(weights=[1e-4, 1, 1, 1, 1, 1], min_weight=1e-4, max_weight=1e4))
    elif name == "dominant_component":
        meta = FakeMetaLoss(FakeBalancer(weights=[1000, 1, 1, 1, 1, 1]))
    trainer = FakeTrainer(tmp_path / "run", default_callbacks(cfg), cfg=cfg, meta_loss=meta)
    trainer.start()
    if name == "weight_oscillation":
        for k in range(12):
            meta.balancer.weights["class"] = 3.0 if k % 2 else 0.3
            trainer.steps(10, losses)
    else:
        trainer.steps(100, losses, **kw)
    trainer.end()
    return [r for r in trainer.records if r.kind == "alert"]


@pytest.mark.parametrize("name", ["nonfinite", "negative_total", "loss_spike", "grad_explosion",
                                  "stalled_component", "weight_near_clamp", "weight_oscillation",
                                  "dominant_component"])
def test_each_health_alert_fires_on_a_crafted_input(name, tmp_path):
    alerts = _crafted(name, tmp_path)
    fired = {a.data["alert"] for a in alerts}
    assert name in fired, fired
    a = next(a for a in alerts if a.data["alert"] == name)
    assert a.text.startswith("WARNING")
    jsonl = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "alert"]
    assert any(r["data"]["alert"] == name for r in jsonl)


def test_a_healthy_crafted_run_is_silent(tmp_path):
    cfg = tiny_config(tmp_path, "training.log_frequency=10")
    trainer = FakeTrainer(tmp_path / "run", default_callbacks(cfg), cfg=cfg)
    trainer.start()
    trainer.steps(300, healthy_losses)
    trainer.end()
    assert [r for r in trainer.records if r.kind == "alert"] == []
