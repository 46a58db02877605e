"""Subprocess helpers for the reliability tests: tiny CPU runs of train.py, run to the end or killed.

Every run here is a real ``python train.py`` process (what a researcher starts), on CPU with one
thread so two runs of the same config are bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.runs import over
from training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = [  # about 8 optimizer steps per epoch and a 10k-parameter network: seconds per run
    "data.synthetic.patients=8",
    "model.base_channels=8",
    "model.channel_mults=[1,2]",
    "model.down_factors=[5]",
    "model.d_state=8",
    "model.cond_dim=16",
    "model.head_dim=8",
]
TINY = [
    *TINY_MODEL,
    "training.epochs=2",
    "training.batch_size=16",
    "training.log_frequency=3",
    "training.warmup_steps=2",
    "diffusion.timesteps=100",
    "diffusion.sampling_steps=20",
    "logging.use_wandb=false",
    "logging.figures=false",
    "device=cpu",
]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", WANDB_SILENT="true")
    env.update(extra)
    return env


def train_args(log_dir: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "quickstart.yaml"),
            "--experiment", name, *over([f"logging.log_dir={log_dir}", *TINY], *extra)]


def run_train(args: list[str], timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=cli_env(**env))


def start_train(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=cli_env(**env))


def resume_args(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--resume", str(run_dir), *extra]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll until ``path`` exists; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return True
        if proc.poll() is not None:
            return path.exists()
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not appear within {timeout} s")


def read_records(path: Path) -> list[dict]:
    """metrics.jsonl without "time"; a torn last line (a kill mid-write) is left out."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            assert i == len(lines) - 1, f"{path}: line {i + 1} is not JSON and is not the last line"
            continue
        out.append({k: v for k, v in rec.items() if k != "time"})
    return out


def final_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    out = {f"model.{k}": v for k, v in state["model"].items()}
    out.update({f"ema.{k}": v for k, v in (state["ema"] or {}).items()})
    return out


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def train_in_process(argv: list[str]) -> int:
    """``python train.py ARGV`` in this process (same entry point, no interpreter start-up), on one
    thread like the subprocesses, so its numbers equal theirs bit for bit."""
    import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train.main(argv)
    finally:
        torch.set_num_threads(threads)


def in_process_args(log_dir: Path, name: str, *extra: str) -> list[str]:
    return train_args(log_dir, name, *extra)[2:]
