"""SIGINT (Ctrl-C, to the whole process group) and SIGTERM (a scheduler's kill): a clean stop
with no traceback, a message naming --resume, an interrupt checkpoint, TensorBoard events on disk
and readable, and the offline W&B run finished."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.reliability.procs import ROOT, cli_env, train_args
from training.callbacks.testing import read_wandb_offline
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
