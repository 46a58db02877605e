"""A crash at each checkpoint write (simulated in process: an exception no callback handles, at the
moment kill -9 could strike), then a resume: the run, ``best.pt`` included, equals an uninterrupted
one. And a metrics.jsonl line torn by a kill does not stop the resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.reliability.procs import TINY_MODEL, assert_same_tensors, read_records
from tests.runs import tiny_config, train_run
from training.callbacks import checkpoint as checkpoint_callbacks
from training.callbacks.jsonl import truncate_after
from training.checkpoint import load_checkpoint

EXTRA = [*TINY_MODEL, "training.ema_decay=0", "logging.use_tensorboard=false",
         "training.early_stopping.metric=val/signal"]  # improves in epoch 2 of this run


class Killed(BaseException):
    """Stands for kill -9: not an Exception, so nothing on the way up treats it as an error to save."""


def run(cfg, run_dir: Path, resume: bool = False):
    torch.set_num_threads(1)
    return train_run(cfg, run_dir, resume=resume)


def crash_after_write(monkeypatch, n: int) -> list[str]:
    """Raise :class:`Killed` right after the n-th checkpoint file is written (1-based)."""
    written: list[str] = []
    real = checkpoint_callbacks.save_checkpoint

    def save(state, path):
        real(state, path)
        written.append(Path(path).name)
        if len(written) == n:
            raise Killed

    monkeypatch.setattr(checkpoint_callbacks, "save_checkpoint", save)
    return written


def check_crash_then_resume(tmp_path, monkeypatch, n: int, *extra: str) -> list[str]:
    cfg = tiny_config(tmp_path, *EXTRA, *extra)
    ref = tmp_path / "ref"
    run(cfg, ref)
    best, last = (load_checkpoint(ref / "checkpoints" / f"{w}.pt") for w in ("best", "last"))
    assert best["step"] == last["step"], "the monitored metric must improve in the last epoch for this test"
    with monkeypatch.context() as m:
        written = crash_after_write(m, n)
        with pytest.raises(Killed):
            run(cfg, tmp_path / "cut")
    run(cfg, tmp_path / "cut", resume=True)
    assert read_records(tmp_path / "cut" / "metrics.jsonl") == read_records(ref / "metrics.jsonl")
    for name in ("best.pt", "last.pt"):
        assert_same_tensors(load_checkpoint(tmp_path / "cut" / "checkpoints" / name)["model"],
                            load_checkpoint(ref / "checkpoints" / name)["model"])
    return written


def test_crash_between_best_and_last_of_the_final_epoch(tmp_path, monkeypatch):
    # Writes: epoch 1 best, last; epoch 2 best, last. Crash after the 3rd: the new best.pt is on
    # disk, last.pt is still epoch 1's; the resume replays epoch 2 and ends where the reference does.
    written = check_crash_then_resume(tmp_path, monkeypatch, 3)
    assert written == ["best.pt", "last.pt", "best.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("n", range(1, 13))
def test_crash_after_every_write(tmp_path, monkeypatch, n):
    check_crash_then_resume(tmp_path, monkeypatch, n, "training.checkpoint_every_steps=2")


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "step", "step": s, "text": "a\u2028b"}) + "\n" for s in (3, 6, 9)]
    path.write_text("".join(lines) + '{"kind": "step", "st', encoding="utf-8")  # the kill struck mid-line
    truncate_after(path, 6)
    assert path.read_text(encoding="utf-8") == "".join(lines[:2])


def test_an_older_versions_series_records_go_with_the_stage_a_resume_fits_again(tmp_path):
    """Runs from before issue 26 wrote the series stage's epochs without a step (out of the loop, after the
    network); resuming such a run stopped with KeyError 'step'. They are dropped like any record past the
    checkpoint: the resumed run fits the series model again and writes its own."""
    path = tmp_path / "metrics.jsonl"
    kept = [json.dumps({"kind": "step", "step": s}) + "\n" for s in (3, 6)]
    old = json.dumps({"kind": "series_epoch", "epoch": 1, "series/train/type": 0.5}) + "\n"
    path.write_text("".join(kept) + old, encoding="utf-8")
    truncate_after(path, 6)
    assert path.read_text(encoding="utf-8") == "".join(kept)
