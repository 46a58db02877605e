"""Build every part of a run from its config: data, network, diffusion, losses, balancer, trainer.

One function serves train.py, the benchmarks and the tests, so they all train the same thing.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from training.callbacks.base import Callback
from training.config import Config
from training.distributed import DistInfo
from training.series import check_series
from training.trainer import Trainer


def resolve_device(name: str) -> torch.device:
    from data.cli import resolve_device as resolve  # one rule for the config key and every --device flag

    return resolve(name, where="config key 'device'")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_trainer(
    cfg: Config,
    run_dir: str | Path,
    *,
    device: torch.device | None = None,
    dist_info: DistInfo | None = None,
    callbacks: list[Callback] | None = None,
    data=None,
) -> Trainer:
    """Everything seeded from ``cfg.seed``; ``callbacks=None`` gives the default monitoring set."""
    from data.dataset import build_data
    from models import build_model
    from training.callbacks import default_callbacks
    from training.callbacks.checkpoint import CheckpointCallback, EarlyStoppingCallback
    from training.diffusion import GaussianDiffusion

    device = device or resolve_device(cfg.device)
    seed_everything(cfg.seed)
    data = data if data is not None else build_data(cfg.data, cfg.loss.class_weights)
    check_splits(cfg, data)
    model = build_model(cfg.model, data.stats)
    diffusion = GaussianDiffusion(cfg.diffusion)
    meta_loss = build_meta_loss(cfg, data.stats, data.class_weights)
    if callbacks is None:
        callbacks = [*default_callbacks(cfg), CheckpointCallback(), EarlyStoppingCallback()]
    series = None
    if cfg.series.enabled:
        from training.series_stage import build_stage

        series = build_stage(cfg, int(data.class_weights.numel()))
    return Trainer(
        cfg, Path(run_dir), model=model, diffusion=diffusion, meta_loss=meta_loss, data=data,
        callbacks=callbacks, device=device, dist_info=dist_info, series_stage=series,
    )


def build_meta_loss(cfg: Config, stats, class_weights: torch.Tensor):
    """The six component losses and the configured balancer (training.balancers.meta_loss.MetaLoss)."""
    from training.balancers import build_balancer
    from training.balancers.meta_loss import MetaLoss
    from training.losses import ComponentLosses

    return MetaLoss(ComponentLosses(cfg.loss, stats, class_weights), build_balancer(cfg.loss.balancer))


def check_splits(cfg: Config, data) -> None:
    """Refuse data that cannot make a run, before anything trains: fewer patients than splits (they
    are drawn by patient), an empty validation split (best.pt and early stopping are chosen on it),
    or series without one threshold and type where validation (training.clinical_validation) or
    the series stage (series.enabled: train and val) reads them."""
    splits = [getattr(data, name) for name in ("train", "val", "test")]
    ids = [getattr(ds, "tensors", {}).get("patient_id") for ds in splits]
    wanted = sum(share > 0 for share in cfg.data.split)
    if all(i is not None for i in ids):
        patients = len(torch.unique(torch.cat(ids)))
        if patients < wanted:
            where = f"'{cfg.data.path}'" if cfg.data.source == "file" else "the synthetic data"
            raise ValueError(
                f"data: {patients} patient{'s' * (patients != 1)} in {where} ({sum(len(ds) for ds in splits)} "
                f"recordings): train, validation and test splits are drawn by patient and need at least "
                f"{wanted} patients"
            )
    if len(data.val) == 0:
        raise ValueError(
            f"data: the validation split is empty (data.split {cfg.data.split}): best.pt and early stopping are "
            f"chosen on it; give data.split a positive validation share"
        )
    if cfg.training.clinical_validation:
        check_series(data.val, "the validation split")
    if cfg.series.enabled:
        for split in ("train", "val"):
            check_series(getattr(data, split), f"the {split} split", opt_out="series.enabled=false")


def write_config(run_dir: Path, cfg: Config, name: str = "config.yaml") -> None:
    """``run_dir/config.yaml``: the resolved config (``--resume`` continues with it)."""
    import yaml

    from data.schema import to_dict

    (Path(run_dir) / name).write_text(
        "# Resolved config of this run: `python train.py --config <this file>` reproduces it.\n"
        + yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )


def write_run_files(trainer: Trainer) -> None:
    """The run's resolved config and normalization statistics (rank 0)."""
    if not trainer.is_main:
        return
    run_dir = trainer.run_dir
    write_config(run_dir, trainer.cfg)
    (run_dir / "normalization.json").write_text(
        json.dumps(trainer.data.stats.to_dict(), indent=2) + "\n", encoding="utf-8"
    )


class LevelOnceFormatter(logging.Formatter):
    """train.log's "time LEVEL message", the level written once: an alert's text begins with its
    level already ("WARNING [health/...]"), for the views that have no level of their own (the
    console, TensorBoard's text, metrics.jsonl)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        level = record.levelname
        return line.replace(f" {level} {level} ", f" {level} ", 1)


def setup_logging(run_dir: Path | None, is_main: bool = True, level: int = logging.INFO) -> logging.Logger:
    """Logger "abr": console (routed through tqdm by the caller) and run_dir/train.log."""
    logger = logging.getLogger("abr")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(level if is_main else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("%(message)s")
    console = logging.StreamHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None and is_main:
        file = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        file.setFormatter(LevelOnceFormatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file)
    return logger
