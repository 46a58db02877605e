"""SIGINT (Ctrl-C, to the whole process group) and SIGTERM (a scheduler's kill): a clean stop
with no traceback, a message naming --resume, an interrupt checkpoint, TensorBoard events on disk
and readable, and the offline W&B run finished."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import types
from pathlib import Path

import pytest

from tests.reliability.procs import ROOT, TINY_MODEL, cli_env, train_args
from tests.runs import tiny_config, train_run
from tests.training.callbacks.fakes import read_wandb_offline
from training.callbacks.base import Callback
from training.checkpoint import load_checkpoint


def scalars(tb_dir) -> dict[str, list[int]]:
    """Tag -> steps of every scalar event in a TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize(("signum", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_signal_stops_cleanly_with_a_checkpoint(tmp_path, signum, to_group):
    run_dir = tmp_path / "exp"
    args = train_args(tmp_path, "exp", "logging.use_wandb=true", "training.epochs=3")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=cli_env(), start_new_session=True)
    lines = []
    for line in proc.stderr:  # log lines end in a newline; the tqdm bar does not
        lines.append(line)
        if line.startswith("Step 3 - "):
            break
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    out, rest = proc.communicate(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    assert f"received {name}: stopping after this step" in err
    assert f"interrupted by {name} at step " in err and f"continue with --resume {run_dir}" in err

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")  # the interrupt checkpoint
    assert 3 <= state["step"] < 3 * 8 and state["epoch_step"] > 0  # mid-run, not an epoch-end checkpoint

    tags = scalars(run_dir / "tensorboard")  # flushed and closed: readable, up to the stop
    assert 3 in tags["train/total"] and max(tags["train/total"]) <= state["step"]

    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")  # the process has exited: complete
    kinds = [r.WhichOneof("record_type") for r in read_wandb_offline(run_file)]
    assert "history" in kinds and kinds.count("exit") == 1  # finished (exit code 1: interrupted)
    info = json.loads((run_dir / "run.json").read_text())  # the end of the run is recorded, and how
    assert info["status"] == "interrupted" and info["end"] is not None


class SignalAt(Callback):
    """Sends SIGINT to this process after optimizer step ``step`` (as Ctrl-C would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, out) -> None:
        if out.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class SavedLine(logging.Handler):
    """Records, for each "checkpoint saved" line, whether last.pt existed when it was logged."""

    def __init__(self, last: Path) -> None:
        super().__init__()
        self.last, self.seen = last, []

    def emit(self, record: logging.LogRecord) -> None:
        if "checkpoint saved" in record.getMessage():
            self.seen.append(self.last.is_file())


def test_a_second_signal_during_the_interrupt_checkpoint(tmp_path, monkeypatch):
    """Two Ctrl-C 5-10 ms apart: the second lands while the interrupt checkpoint is written. The
    file still lands whole, and "checkpoint saved" is only said once it is in place."""
    import training.checkpoint as checkpoint_module

    run_dir = tmp_path / "exp"
    fake_os = types.SimpleNamespace(**vars(os))

    def fsync(fd):  # the second signal, in the middle of the write
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGINT)

    fake_os.fsync = fsync
    saved = SavedLine(run_dir / "checkpoints" / "last.pt")

    class Watch(Callback):
        def on_train_start(self, trainer) -> None:
            logging.getLogger("abr").addHandler(saved)

    cfg = tiny_config(tmp_path, *TINY_MODEL, "logging.use_tensorboard=false")
    with monkeypatch.context() as m:
        m.setattr(checkpoint_module, "os", fake_os)
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg, run_dir, extra_callbacks=[Watch(), SignalAt(2)])
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 2
    assert saved.seen == [True]
