"""The series stage: train SeriesNet (models/series.py) on the train split's series of a trained run,
keep the epoch best on the val split's, write ``checkpoints/series.pt``.

    train = SeriesSet(extract(net, bundle.train), ...)   # training/series.py: the per-series answers
    net, best = fit_series(train, val, cfg.series, n_classes)
    losses = series_losses(logits, threshold_bin, type, type_weights, sigma)

Training it on the train split's series and choosing the epoch on the val split keeps the test split
and the benchmark cohort untouched.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from data.jsonable import to_jsonable
from models.series import SeriesNet
from training.clinical import N_THRESHOLD_BINS, flatten
from training.series import SERIES_CHECKPOINT, SeriesSet, extract, score


def drop_recordings(mask: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Augmentation: hide each recording with probability p, keeping at least one per series (B S)."""
    keep = mask & (torch.rand(mask.shape, generator=generator, device=mask.device) >= p)
    empty = ~keep.any(1)
    return torch.where(empty[:, None], mask, keep)


def ordinal_targets(bins: Tensor, sigma: float) -> Tensor:
    """Soft targets over the threshold grid (B 22): a Gaussian of ``sigma`` bins around the true bin,
    so a 5 dB miss costs less than a 30 dB miss (the grid is ordered; "no response" is its top bin)."""
    grid = torch.arange(N_THRESHOLD_BINS, device=bins.device, dtype=torch.float32)  # (22)
    if sigma <= 0:
        return F.one_hot(bins, N_THRESHOLD_BINS).float()
    logits = -0.5 * ((grid[None, :] - bins[:, None].float()) / sigma) ** 2  # (B 22)
    return torch.softmax(logits, dim=1)


def series_losses(out: dict[str, Tensor], threshold_bin: Tensor, label: Tensor, type_weights: Tensor,
                  sigma: float) -> dict[str, Tensor]:
    """Cross-entropy of the threshold distribution against the soft ordinal target, and class-weighted
    cross-entropy of the type."""
    target = ordinal_targets(threshold_bin, sigma)
    thr = -(target * F.log_softmax(out["threshold_logits"].float(), dim=1)).sum(1).mean()
    typ = F.cross_entropy(out["type_logits"].float(), label, weight=type_weights)
    return {"series_threshold": thr, "series_type": typ}


def selection_score(metrics: dict[str, Any]) -> float:
    """What the stage keeps the best epoch by (on val): threshold within ±5 dB plus type macro-F1,
    the two answers a clinician reads, with equal say."""
    return metrics["threshold"]["within_5db"].value + metrics["type"]["macro_f1"].value


def type_weights(labels: Tensor, n_classes: int) -> Tensor:
    """sqrt-inverse class frequency of the training series, mean 1 over present classes (K,): rare types
    (neuropathy: a dozen series) are heard without dominating."""
    counts = torch.bincount(labels, minlength=n_classes).float()
    w = torch.where(counts > 0, (counts.sum() / counts.clamp_min(1)).sqrt(), torch.zeros_like(counts))
    return w / w[counts > 0].mean()


def fit_series(train: SeriesSet, val: SeriesSet, cfg: Any, n_classes: int, *, seed: int = 0,
               log: logging.Logger | None = None, on_epoch: Any = None) -> tuple[SeriesNet, dict[str, Any]]:
    """Train SeriesNet (``cfg``: training.config.SeriesConfig) on ``train``; every ``cfg.val_every``
    epochs score ``val`` and keep the best weights by :func:`selection_score`. ``on_epoch(record)``
    receives one dict per epoch (losses, and val metrics when scored). Returns the best net and its record."""
    log = log or logging.getLogger("abr")
    torch.manual_seed(seed)
    net = SeriesNet(train.evidence.shape[-1], n_classes, N_THRESHOLD_BINS, cfg.width, cfg.heads, cfg.layers,
                    cfg.dropout)
    net.fit_normalizer(train.evidence[train.mask])  # (N F) over the real recordings only
    weights = type_weights(train.type, n_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    best: tuple[float, dict[str, Tensor], dict[str, Any]] = (-math.inf, {}, {})
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        sums = {"series_threshold": 0.0, "series_type": 0.0}
        n = 0
        for b in DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=gen):
            mask = drop_recordings(b["mask"], cfg.drop_recordings, gen)
            losses = series_losses(net(b["evidence"], b["intensity"], mask), b["threshold_bin"], b["type"], weights,
                                   cfg.threshold_sigma)
            opt.zero_grad(set_to_none=True)
            (losses["series_threshold"] + losses["series_type"]).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            for k in sums:
                sums[k] += float(losses[k].detach()) * len(mask)
            n += len(mask)
        record: dict[str, Any] = {"epoch": epoch, **{f"series/train/{k.removeprefix('series_')}": v / n
                                                     for k, v in sums.items()}}
        if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
            m = score(net, val, n_classes)
            record.update(flatten(m, "series/val"))
            if selection_score(m) > best[0]:
                best = (selection_score(m), {k: v.clone() for k, v in net.state_dict().items()}, record)
            log.info("Series epoch %d/%d - Thresh: %.4f, Type: %.4f | val threshold within 5 dB %.3f, within 10 dB "
                     "%.3f, type macro-F1 %.3f", epoch, cfg.epochs, record["series/train/threshold"],
                     record["series/train/type"], m["threshold"]["within_5db"].value,
                     m["threshold"]["within_10db"].value, m["type"]["macro_f1"].value)
        if on_epoch is not None:
            on_epoch(record)
    net.load_state_dict(best[1])
    net.eval()
    return net, best[2]


def save_series(run_dir: str | Path, net: SeriesNet, cfg: Any, record: dict[str, Any]) -> Path:
    from training.checkpoint import save_checkpoint

    path = Path(run_dir) / SERIES_CHECKPOINT
    save_checkpoint({"series_model": net.state_dict(), "n_features": int(net.mu.numel()),
                     "n_types": net.type_head.out_features, "series_config": asdict(cfg),
                     "best": {k: float(v) for k, v in record.items()}}, path)
    return path


def run_series_stage(run_dir: str | Path, model: nn.Module, bundle: Any, cfg: Any, *, device: Any = "cpu",
                     log: logging.Logger | None = None) -> dict[str, Any]:
    """Fit the series model of a trained run (``cfg``: the run's Config) on its train split's series,
    choose the epoch on val, write ``checkpoints/series.pt`` and one ``series_epoch`` record per epoch
    into ``metrics.jsonl`` (and TensorBoard scalars ``series/...`` when enabled). Returns the best record."""
    log = log or logging.getLogger("abr")
    run_dir = Path(run_dir)
    t0 = time.time()
    data = {}
    for split in ("train", "val"):
        ds = getattr(bundle, split)
        data[split] = SeriesSet(extract(model, ds, device=device), ds.tensors["threshold"].numpy(),
                                ds.tensors["label"].numpy())
    log.info("series stage: %d train / %d val series, evidence of %d features per recording (%.0f s)",
             len(data["train"]), len(data["val"]), data["train"].evidence.shape[-1], time.time() - t0)
    writer = None
    if cfg.logging.use_tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as jsonl:
        def on_epoch(record: dict[str, Any]) -> None:
            jsonl.write(json.dumps(to_jsonable({"kind": "series_epoch", "time": time.time(), **record})) + "\n")
            jsonl.flush()
            if writer is not None:
                for k, v in record.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, record["epoch"])

        try:
            net, best = fit_series(data["train"], data["val"], cfg.series, int(bundle.class_weights.numel()),
                                   seed=cfg.seed, log=log, on_epoch=on_epoch)
        finally:
            if writer is not None:
                writer.close()
    path = save_series(run_dir, net, cfg.series, best)
    log.info("series model saved: %s (best epoch %d on val; %.0f s)", path, best["epoch"], time.time() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    """python -m training.series_stage --run RUN [--checkpoint best|last]: (re)fit a run's series stage."""
    from data.cli import ArgumentParser, run_main

    p = ArgumentParser(prog="python -m training.series_stage", description="Fit the series model of a trained run.")
    p.add_argument("--run", required=True, help="run directory, e.g. logs/EXP")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    args = p.parse_args(argv)

    def body() -> int:
        from data.dataset import build_data
        from training.checkpoint import load_run

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        loaded = load_run(args.run, which=args.checkpoint)
        bundle = build_data(loaded.cfg.data, loaded.cfg.loss.class_weights)
        run_series_stage(args.run, loaded.model, bundle, loaded.cfg)
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    import sys

    sys.exit(main())
