"""End-to-end: a tiny run writes the run layout, is deterministic, and resumes exactly."""

from __future__ import annotations

import pytest
import torch

from tests.runs import StopAt, read_jsonl, strip_times, tiny_config, train_run
from training.checkpoint import load_checkpoint
from training.trainer import TrainingInterrupted

run = train_run


def test_run_writes_the_run_directory(tmp_path):
    cfg = tiny_config(tmp_path)
    trainer = run(cfg, tmp_path / "exp")
    d = tmp_path / "exp"
    for name in ("config.yaml", "train.log", "metrics.jsonl", "normalization.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (d / name).is_file(), name
    assert any((d / "tensorboard").iterdir())
    kinds = {r["kind"] for r in read_jsonl(d / "metrics.jsonl")}
    assert {"step", "epoch"} <= kinds
    assert trainer.step == 2 * trainer.steps_per_epoch
    state = load_checkpoint(d / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_same_seed_gives_identical_metrics(tmp_path):
    cfg = tiny_config(tmp_path)
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    a = strip_times(read_jsonl(tmp_path / "a" / "metrics.jsonl"))
    b = strip_times(read_jsonl(tmp_path / "b" / "metrics.jsonl"))
    assert a == b


@pytest.mark.parametrize("stop_at", [2, 5])  # mid-epoch and (with 3 steps/epoch) in the second epoch
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, stop_at):
    cfg = tiny_config(tmp_path)
    full = run(cfg, tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        run(cfg, tmp_path / "cut", extra_callbacks=[StopAt(stop_at)])
    resumed = run(cfg, tmp_path / "cut", resume=True)
    assert resumed.step == full.step
    a = strip_times(read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    b = strip_times(read_jsonl(tmp_path / "cut" / "metrics.jsonl"))
    assert a == b
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_a_checkpoint_says_how_many_epochs_it_trained():
    from training.checkpoint import describe_position, epochs_done

    finished = {"epoch": 6, "epoch_step": 0, "step": 555}  # a 5-epoch run: the next epoch is 6
    assert epochs_done(finished) == 5 and describe_position(finished) == "after epoch 5, step 555"
    assert describe_position({"epoch": 3, "epoch_step": 40, "step": 262}) == "in epoch 3 (40 steps into it), step 262"
