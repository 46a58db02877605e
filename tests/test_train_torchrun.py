"""train.py under torchrun beyond one agent (issue 31), on CPU with gloo:

- multi-node: two torchrun agents on this machine, one process each, joined by a c10d rendezvous
  (``--nnodes 2 --rdzv-endpoint``), train exactly what one agent with two processes trains;
- elastic: with ``--max-restarts 1``, SIGKILL of one worker after the first checkpoint; torchrun
  restarts the job, train.py resumes the run from its last.pt by itself (no ``--resume``), the same
  W&B run and TensorBoard directory continue, and the run ends bit-identical to an uninterrupted one.

Each test launches real torchrun jobs of train.py on the tiny quickstart (tens of seconds under load).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
TINY = ["data.synthetic.patients=12", "training.batch_size=16", "diffusion.timesteps=100",
        "logging.figures=false", f"training.epochs={EPOCHS}"]
NO_WANDB = ("logging.use_wandb=false",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*launcher: str, log_dir: Path, experiment: str, extra: tuple[str, ...] = NO_WANDB) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "train.py",
           "--config", "configs/quickstart.yaml", "--experiment", experiment, *TINY, *extra,
           f"logging.log_dir={log_dir}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 1800) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # the agent; its workers see the store close and exit
        raise
    assert proc.returncode == 0, out[-4000:]
    return out


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def _assert_same_training(run: Path, reference: Path) -> None:
    a, b = _state(run), _state(reference)
    assert a["step"] == b["step"] > 0 and a["epoch"] == b["epoch"] == EPOCHS + 1
    for part in ("model", "ema"):
        for k, v in b[part].items():
            torch.testing.assert_close(a[part][k], v, rtol=0, atol=0, msg=f"{part}.{k}")
    assert a["last_val"] == b["last_val"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One agent, two processes, never interrupted."""
    log_dir = tmp_path_factory.mktemp("ref")
    _finish(_torchrun("--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                      log_dir=log_dir, experiment="ref"))
    return log_dir / "ref"


@pytest.mark.slow
def test_two_agents_joined_by_c10d_rendezvous_train_as_one_node(reference, tmp_path):
    port = _free_port()
    launcher = ("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=two-agents")
    agents = [_torchrun(*launcher, log_dir=tmp_path, experiment="mn") for _ in range(2)]
    outs = [_finish(a) for a in agents]
    run = tmp_path / "mn"
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished", outs[0][-2000:]
    _assert_same_training(run, reference)


def _worker_pids(agent_pid: int) -> dict[int, int]:
    """rank -> pid of the agent's worker processes (read from their environment)."""
    children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0])] = pid
    return ranks


@pytest.mark.slow
def test_elastic_restart_resumes_by_itself_and_ends_bit_identical(reference, tmp_path):
    run = tmp_path / "el"
    agent = _torchrun("--nproc_per_node=2", "--max-restarts=1", "--rdzv-backend=c10d",
                      f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=elastic", log_dir=tmp_path,
                      experiment="el", extra=("logging.use_wandb=true",))
    deadline = time.monotonic() + 1800
    while not (run / "checkpoints" / "last.pt").is_file():  # epoch 1 done: 2 epochs still to train
        assert agent.poll() is None and time.monotonic() < deadline, "the job ended before its first checkpoint"
        time.sleep(0.05)
    workers = _worker_pids(agent.pid)
    assert sorted(workers) == [0, 1]
    os.kill(workers[1], signal.SIGKILL)
    out = _finish(agent)

    info = json.loads((run / "run.json").read_text())
    assert info["elastic"]["restart"] == 0 and info["status"] != "finished", out[-3000:]
    [again] = info["resumes"]
    assert again["elastic"]["restart"] == 1 and again["status"] == "finished" and again["from_step"] > 0
    _assert_same_training(run, reference)
    ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(ids) == 1 and ids == {(run / "wandb" / "run_id").read_text().strip()}  # one W&B run, continued
    assert len(list((run / "tensorboard").rglob("events.out.tfevents.*"))) >= 1


# -- the restart decision, without processes ---------------------------------------------------------


def _elastic_env(monkeypatch, run_id: str, restart: int) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", run_id)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))


@pytest.mark.parametrize("case,expected", [
    ("same job, earlier attempt", True),
    ("first attempt", False),
    ("outside torchrun", False),
    ("other command", False),
    ("other torchrun job", False),
    ("no run.json", False),
])
def test_only_a_restart_of_the_job_that_started_the_run_continues_it(tmp_path, monkeypatch, case, expected):
    """A restart resumes by itself only a run its own earlier attempt started; a run directory left by
    anything else stays protected (refused without --overwrite, as before)."""
    from training.rundir import RunRecord, restarted_here

    command = ["train.py", "--config", "c.yaml", "--experiment", "e"]
    _elastic_env(monkeypatch, "job-1", 0)
    if case != "no run.json":
        RunRecord(tmp_path, command=command, device="cpu").begin()
    _elastic_env(monkeypatch, "job-2" if case == "other torchrun job" else "job-1", 0 if case == "first attempt" else 1)
    if case == "outside torchrun":
        monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    asked = [*command, "x=1"] if case == "other command" else command
    assert restarted_here(tmp_path, asked) is expected
