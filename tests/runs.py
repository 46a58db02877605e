"""Tiny end-to-end runs shared by tests (CPU, seconds): `from tests.runs import tiny_config`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from training.callbacks.base import Callback
from training.config import load_config

TINY = [
    "data.synthetic.patients=12",
    "training.epochs=2",
    "training.batch_size=16",
    "training.log_frequency=3",
    "training.warmup_steps=2",
    "diffusion.timesteps=100",
    "logging.use_wandb=false",
    "logging.figures=false",
    "device=cpu",
]


def over(base: list[str] | tuple[str, ...], *extra: str) -> list[str]:
    """``base`` overrides with those of ``extra`` put over them: a key given twice is refused by
    load_config (issue 32), so a test's own value replaces the tiny default instead of following it."""
    keys = {e.split("=", 1)[0] for e in extra}
    return [*(b for b in base if b.split("=", 1)[0] not in keys), *extra]


def tiny_config(tmp_path: Path, *extra: str):
    return load_config(None, over([*TINY, f"logging.log_dir={tmp_path}"], *extra))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def strip_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in records]



def train_run(cfg, run_dir: Path, resume: bool = False, extra_callbacks=()):
    """Train ``cfg`` into ``run_dir`` in process, as train.py does (fresh, or resumed from last.pt)."""
    from train import prepare_run_dir
    from training.checkpoint import load_checkpoint
    from training.setup import build_trainer, setup_logging, write_run_files

    if not resume:
        prepare_run_dir(run_dir, overwrite=True)
    setup_logging(run_dir)
    trainer = build_trainer(cfg, run_dir)
    trainer.callbacks.extend(extra_callbacks)
    if resume:
        trainer.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt"))
    else:
        write_run_files(trainer)
    trainer.fit()
    return trainer


class StopAt(Callback):
    """Mimics SIGTERM arriving during step ``at`` (the trainer checkpoints and stops after it)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, trainer, out) -> None:
        if out.step == self.at:
            trainer._signal = signal.SIGTERM
