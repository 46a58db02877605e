"""The series stage: train SeriesNet (models/series.py) on the train split's series of a trained run,
keep the epoch best on the val split's, write ``checkpoints/series.pt``.

    stage = SeriesStage(cfg.series, n_classes, seed=cfg.seed, grad_clip=cfg.training.grad_clip)
    stage.prepare(network, bundle)       # evidence: training/series.py, the per-series answers
    for idx in stage.batches(): stage.train_step(idx)      # the trainer drives this (Trainer.fit)
    metrics = stage.validate(); stage.end_epoch()

Under ``series.enabled`` the trainer runs it after the network, on the network of ``best.pt``: the
same callbacks (console bar and epoch summaries, metrics.jsonl, TensorBoard, W&B, health checks,
checkpoints) on the run's global step, its losses the components ``series_threshold`` and
``series_type``; its state is in every checkpoint, so ``--resume`` continues it.

Training it on the train split's series and choosing the epoch on the val split keeps the test split
and the benchmark cohort untouched.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data.dataset import ABRDataset
from data.splits import class_weights
from models.series import SeriesNet
from training.augment import DRIFT_SPAN, noise_catch
from training.callbacks.format import format_epoch_summary
from training.clinical import N_THRESHOLD_BINS, NO_RESPONSE_DB, flatten, series_index
from training.series import SERIES_CHECKPOINT, SeriesSet, concat_evidence, extract, predict, score

EXTRA_SEED_OFFSET = 90_001  # series.extra_patients' generator seed: data.synthetic.seed + this (no bench cohort's)


def extra_patients(synthetic: Any, n: int, stats: Any) -> ABRDataset:
    """``n`` more patients from the run's generator settings (``synthetic``: domain, catch sessions) at seed
    ``synthetic.seed + EXTRA_SEED_OFFSET``, standardized with the training split's statistics: series that
    only the series model trains on (the network never sees them; the benchmark cohorts' seeds differ)."""
    from data.synthetic import generate

    records = generate(n, synthetic.seed + EXTRA_SEED_OFFSET, domain=synthetic.domain,
                       catch_fraction=synthetic.catch_fraction)
    return ABRDataset(records, stats)


def noise_copies(dataset: ABRDataset, share: float, seed: int, surrogates: float = 0.0,
                 band: float = 0.0) -> ABRDataset:
    """``share`` of ``dataset``'s series again as noise series, at the same stated levels: each recording
    replaced by coloured noise (white to brown) of its own size and labelled TOTAL / no response / no wave
    (training.augment.noise_catch with p = 1, its slope and size factor drawn per recording). What a series
    of pure noise must be answered, at any level. One slope per series instead (a session's noise keeping
    its colour) left pure pink noise series as often answered "no response" by the series model (0.396 on
    bench/counterfactual.py's cohort, seed 24680, as with a slope per recording), so the simpler draw stays.
    ``surrogates``: the share of recordings made phase surrogates of themselves instead (series.noise_surrogates):
    noise the network's heads call present as often as a response, which only the level coherence tells apart.
    The coloured noise is cut from a stretch DRIFT_SPAN windows long (it drifts, as real noise does); a share
    ``band`` of it (series.noise_band) passes through a random recording filter (training.augment.recording_band):
    full-band noise the network dismisses by its high frequencies alone (docs/results.md), so without it the
    series model learns noise series from evidence that says "absent" everywhere, not from the scattered, weak
    detections that noise in a recording's band draws."""
    gen = torch.Generator().manual_seed(seed)
    sid = dataset.tensors["series_id"]  # (N,)
    series = torch.unique(sid)
    chosen = series[torch.randperm(len(series), generator=gen)[:round(share * len(series))]]
    rows = torch.nonzero(torch.isin(sid, chosen)).flatten()  # (N',)
    batch = dataset.batch(rows)
    return ABRDataset.from_tensors(noise_catch(batch, 1.0, gen, surrogates, span=DRIFT_SPAN, band=band)
                                   if len(rows) else batch)


NOISE_SEED_STEP = 1000  # the k-th whole noise copy draws from seed + k * this (thinned copies: seed + 7 + k)
VAL_NOISE_SEED_OFFSET = 500  # series.val_noise_series draws from seed + this (no training copy's seed)
THINNED_LEVELS = (4, 10)  # a thinned copy keeps this many of its series' levels (fewer where it has fewer)
THINNED_SEED_OFFSET = 7  # thinned copies draw from seed + this (the noise series from seed)


def thinned_copies(dataset: ABRDataset, share: float, seed: int) -> ABRDataset:
    """``share`` of ``dataset``'s series again, each thinned as a short clinical protocol records it: a random
    4-10 of its levels (THINNED_LEVELS), one recording at each. The series model learns from dense series
    (about 25 recordings, half of them bracketing the threshold); a clinic may record 5-8 levels 10-20 dB
    apart, where the neighbours in the level coherence are further apart and fewer. Labels are the series'
    own. Drawn the same on every call (exact resume)."""
    gen = torch.Generator().manual_seed(seed + THINNED_SEED_OFFSET)
    level = dataset.tensors["static"][:, 1]  # (N,)
    series = series_index(dataset.tensors["series_id"].numpy(), level.numpy())
    chosen = torch.randperm(len(series), generator=gen)[:round(share * len(series))].sort().values
    keep = []
    for s in chosen.tolist():
        rows = torch.from_numpy(series.members[s])
        levels = torch.unique(level[rows])  # (K,) ascending
        lo, hi = THINNED_LEVELS
        k = min(len(levels), int(torch.randint(lo, hi + 1, (1,), generator=gen)))
        for lv in levels[torch.randperm(len(levels), generator=gen)[:k]].tolist():
            at = rows[level[rows] == lv]
            keep.append(at[torch.randint(len(at), (1,), generator=gen)])
    index = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.int64)
    return ABRDataset.from_tensors(dataset.batch(index))


def series_set(network: nn.Module, parts: list[Any], device: Any, **reads: bool) -> SeriesSet:
    """One :class:`SeriesSet` from the network's evidence on the datasets ``parts``, each part's series
    and patient ids shifted past the previous parts' so that no two parts share a series; ``reads``: the
    further evidence columns SeriesSet appends (SeriesNet.READS)."""
    evs, threshold, label, offset = [], [], [], 0
    for ds in parts:
        ev = extract(network, ds, device=device)
        ev.series_id, ev.patient_id = ev.series_id + offset, ev.patient_id + offset
        offset = int(max(ev.series_id.max(), ev.patient_id.max())) + 1
        evs.append(ev)
        threshold.append(ds.tensors["threshold"].numpy())
        label.append(ds.tensors["label"].numpy())
    ev = evs[0] if len(evs) == 1 else concat_evidence(evs)
    return SeriesSet(ev, np.concatenate(threshold), np.concatenate(label), **reads)


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


def selection_score(metrics: dict[str, Any], noise_no_response: float | None = None) -> float:
    """What the stage keeps the best epoch by (on val): threshold within ±5 dB plus type macro-F1,
    the two answers a clinician reads, with equal say; with ``series.val_noise_series``, plus the share of the
    val split's noise series answered "no response" (``noise_no_response``): an epoch that reads waveforms."""
    return (metrics["threshold"]["within_5db"].value + metrics["type"]["macro_f1"].value
            + (noise_no_response or 0.0))


class SeriesStage:
    """The series model's training state, one optimizer step at a time: what the trainer runs after the
    network (training.trainer.Trainer, on its global step and through its callbacks) and what
    :func:`fit_series` runs alone.

    ``prepare`` reads the frozen network's evidence; ``batches`` gives the rest of the current epoch;
    ``train_step`` clips, skips a non-finite step and steps like the network's loop (one host sync: the
    finite check); ``end_epoch`` validates every ``cfg.val_every`` epochs and keeps the best weights by
    :func:`selection_score`. Everything, the current epoch's order and the RNG included, is in
    :meth:`state_dict`, so a run killed during the stage resumes where its last checkpoint stands.
    """

    name = "series"

    def __init__(self, cfg: Any, n_classes: int, *, seed: int, grad_clip: float, synthetic: Any = None) -> None:
        """``synthetic``: the run's data.synthetic settings, which ``cfg.extra_patients`` draws from (None
        for a data file)."""
        self.cfg, self.n_classes, self.seed, self.grad_clip = cfg, n_classes, seed, grad_clip
        self.synthetic = synthetic
        self.reset()

    def reset(self) -> None:
        """Forget any progress: the next :meth:`prepare` starts the stage at its first epoch."""
        self.pending: dict[str, Any] | None = None  # a checkpoint's stage state, applied by prepare
        self.net: SeriesNet | None = None
        self.epoch, self.epoch_step = 1, 0

    # -- building -------------------------------------------------------------------------------
    def prepare(self, network: nn.Module, bundle: Any, device: Any = "cpu",
                progress: Callable[[str], None] | None = None) -> None:
        """Evidence from ``network`` (eval, t = 0) of the training series (:meth:`training_parts`), of
        ``bundle``'s val split and (``cfg.val_noise_series``) of its noise copies, then a fresh model, or the
        checkpoint's stage state when one is pending. ``progress(message)`` is called before each part of this
        work (minutes in the clinical recipe, before the stage's first step): the trainer logs it and stops there
        when a signal has arrived."""
        say = progress or (lambda _message: None)
        flags = {k: getattr(self.cfg, k) for k in SeriesNet.READS}
        noise_val = None
        if self.cfg.val_noise_series:
            part = noise_copies(bundle.val, self.cfg.val_noise_series, self.seed + VAL_NOISE_SEED_OFFSET,
                                self.cfg.noise_surrogates, self.cfg.noise_band)
            if not len(part):
                raise ValueError(f"series.val_noise_series: {self.cfg.val_noise_series} of the val split's series is "
                                 "none; expected a share that leaves at least one series (or 0)")
            say(f"the network's evidence on the val split's noise series ({len(part):,} recordings)")
            noise_val = series_set(network, [part], device, **flags)
        what = ["the train split", *([f"{self.cfg.extra_patients:,} more patients"] if self.cfg.extra_patients else []),
                *(["thinned copies"] if self.cfg.thinned_series else []),
                *(["noise copies"] if self.cfg.noise_series else [])]
        say(f"building the training series ({', '.join(what)})")
        parts = self.training_parts(bundle)
        say(f"the network's evidence on the training series ({sum(len(p) for p in parts):,} recordings)")
        train = series_set(network, parts, device, **flags)
        say(f"the network's evidence on the val split ({len(bundle.val):,} recordings)")
        self.prepare_sets(train, series_set(network, [bundle.val], device, **flags), noise_val)

    def training_parts(self, bundle: Any) -> list[ABRDataset]:
        """What the series model trains on: the train split, then ``cfg.extra_patients`` more patients,
        ``cfg.thinned_series`` of those series again thinned to a short protocol, and ``cfg.noise_series`` of the
        train split's series as noise, above 1 each series that many times (all drawn the same on every call)."""
        parts = [bundle.train]
        if self.cfg.extra_patients:
            if self.synthetic is None:
                raise ValueError("series.extra_patients: expected 0 without the built-in generator (data.source file)")
            parts.append(extra_patients(self.synthetic, self.cfg.extra_patients, bundle.stats))
        if self.cfg.thinned_series:
            parts += [thinned_copies(p, self.cfg.thinned_series, self.seed + k) for k, p in enumerate(list(parts))]
        whole, rest = divmod(self.cfg.noise_series, 1.0)  # above 1: whole copies, then the rest's share
        shares = [1.0] * int(whole) + ([rest] if rest else [])
        # one part each: their series stay apart (series_set)
        parts += [noise_copies(bundle.train, share, self.seed + NOISE_SEED_STEP * k, self.cfg.noise_surrogates,
                               self.cfg.noise_band) for k, share in enumerate(shares)]
        return parts

    def prepare_sets(self, train: SeriesSet, val: SeriesSet, noise_val: SeriesSet | None = None) -> None:
        """``noise_val``: the val split's noise series (series.val_noise_series), or None."""
        cfg = self.cfg
        self.train_set, self.val_set, self.noise_val_set = train, val, noise_val
        torch.manual_seed(self.seed)  # the init; a pending state brings its own RNG state back below
        self.net = SeriesNet(train.evidence.shape[-1], self.n_classes, N_THRESHOLD_BINS, cfg.width, cfg.heads,
                             cfg.layers, cfg.dropout,
                             **{k: getattr(cfg, k) for k in SeriesNet.READS})
        self.net.fit_normalizer(train.evidence[train.mask])  # (N F) over the real recordings only
        # The network's sqrt-inverse class weights over the training series (rare types, e.g. neuropathy with a
        # dozen series, are heard without dominating); a type absent from them weighs 1 in the val loss.
        self.weights = class_weights(train.type.numpy(), "sqrt_inverse")
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=cfg.lr, pct_start=0.1,
                                                         total_steps=cfg.epochs * self.steps_per_epoch)
        self.gen = torch.Generator().manual_seed(self.seed)  # epoch order and hidden recordings
        self.order = torch.arange(len(train))
        self.sums = torch.zeros(3)  # total, threshold, type: sums over the epoch's finite steps
        self.count = 0
        self.best: dict[str, Any] = {"score": -math.inf, "state": {}, "record": {}}
        if self.pending is not None:
            self._apply(self.pending)
            self.pending = None

    @property
    def max_epochs(self) -> int:
        return self.cfg.epochs

    @property
    def finished(self) -> bool:
        return self.epoch > self.cfg.epochs

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    # -- one epoch --------------------------------------------------------------------------------
    def batches(self) -> Iterator[Tensor]:
        """Index batches (B,) of the rest of the current epoch (its order is drawn at its first step)."""
        if self.epoch_step == 0:
            self.order = torch.randperm(len(self.train_set), generator=self.gen)
        bs = self.cfg.batch_size
        for i in range(self.epoch_step, self.steps_per_epoch):
            yield self.order[i * bs:(i + 1) * bs]

    def train_step(self, idx: Tensor) -> tuple[dict[str, Tensor], Tensor, bool]:
        """One optimizer step on the series ``idx``: (losses, gradient norm before clipping, finite)."""
        d = self.train_set
        self.net.train()
        mask = drop_recordings(d.mask[idx], self.cfg.drop_recordings, self.gen)  # (B Smax)
        out = self.net(d.evidence[idx], d.intensity[idx], mask)
        losses = series_losses(out, d.threshold_bin[idx], d.type[idx], self.weights, self.cfg.threshold_sigma)
        total = losses["series_threshold"] + losses["series_type"]
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        # Clip and check as the network's loop does: the one host sync of the step.
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm)
        finite = bool(torch.isfinite(grad_norm) & torch.isfinite(total))
        if finite:
            self.opt.step()
            self.sums += torch.stack([total, losses["series_threshold"], losses["series_type"]]).detach()
            self.count += 1
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.epoch_step += 1
        return {k: v.detach() for k, v in losses.items()}, grad_norm.detach(), finite

    def train_means(self) -> dict[str, float]:
        means = (self.sums / max(self.count, 1)).tolist()
        return dict(zip(("train/total", "train/series_threshold", "train/series_type"), means, strict=True))

    @property
    def validates(self) -> bool:
        """Whether the current epoch ends with a validation (every ``val_every`` epochs, and the last)."""
        return self.epoch % self.cfg.val_every == 0 or self.epoch == self.cfg.epochs

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The val split's losses (``val/total``, ``val/series_*``) and scores (``val/series/...``);
        the best weights so far are kept by :func:`selection_score`."""
        d = self.val_set
        self.net.eval()
        known = d.type >= 0
        losses = series_losses(self.net(d.evidence, d.intensity, d.mask), d.threshold_bin, d.type, self.weights,
                               self.cfg.threshold_sigma) if bool(known.all()) else {}
        m = score(self.net, d, self.n_classes)
        out = {f"val/{k}": float(v) for k, v in losses.items()}
        if losses:
            out["val/total"] = out["val/series_threshold"] + out["val/series_type"]
        out.update(flatten(m, "val/series"))
        noise = None
        if self.noise_val_set is not None:  # the val split's series as noise: share answered "no response"
            noise = float(np.mean(predict(self.net, self.noise_val_set)["threshold"] >= NO_RESPONSE_DB))
            out["val/series/noise/no_response"] = noise
        if selection_score(m, noise) > self.best["score"]:
            self.best = {"score": selection_score(m, noise),
                         "state": {k: v.clone() for k, v in self.net.state_dict().items()},
                         "record": {"epoch": self.epoch, **out}}
        return out

    def end_epoch(self) -> None:
        self.epoch += 1
        self.epoch_step, self.count = 0, 0
        self.sums.zero_()

    def save(self, run_dir: str | Path, log: logging.Logger) -> Path:
        """``checkpoints/series.pt``: the weights of the best validated epoch."""
        path = save_series(run_dir, self.best_net(), self.cfg, self.best["record"])
        log.info("series model saved: %s (best series epoch %d on val)", path, self.best["record"]["epoch"])
        return path

    def best_net(self) -> SeriesNet:
        """The net with the weights of the best validated epoch."""
        self.net.load_state_dict(self.best["state"])
        return self.net.eval()

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of the stage (None before it starts)."""
        if self.net is None:
            return self.pending
        return {"config": asdict(self.cfg), "epoch": self.epoch, "epoch_step": self.epoch_step,
                "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "order": self.order.clone(), "sums": self.sums.clone(), "count": self.count, "best": self.best}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Keep a checkpoint's stage state for :meth:`prepare`; one of another series config is dropped
        (the stage starts again, said in the log), as is None (the stage had not started)."""
        self.reset()
        if state is not None and not same_config(state["config"], self.cfg):
            changed = {k: [v, asdict(self.cfg)[k]] for k, v in state["config"].items() if asdict(self.cfg).get(k) != v}
            logging.getLogger("abr").info("series stage: the series config changed (%s): the series model is fitted "
                                          "again from its first epoch", changed)
            return
        self.pending = state
        if state is not None:
            self.epoch, self.epoch_step = int(state["epoch"]), int(state["epoch_step"])

    def _apply(self, s: dict[str, Any]) -> None:
        self.net.load_state_dict(s["model"])
        self.opt.load_state_dict(s["optimizer"])
        self.sched.load_state_dict(s["scheduler"])
        self.gen.set_state(s["gen"].cpu())  # a checkpoint may have been loaded onto the GPU
        torch.set_rng_state(s["torch_rng"].cpu())  # dropout draws continue as if the run had never stopped
        self.order, self.sums, self.count = s["order"].cpu(), s["sums"].cpu().clone(), int(s["count"])
        self.epoch, self.epoch_step = int(s["epoch"]), int(s["epoch_step"])
        self.best = {**s["best"], "state": {k: v.cpu() for k, v in s["best"]["state"].items()}}


def build_stage(cfg: Any, n_classes: int) -> SeriesStage:
    """The series stage of a run's Config ``cfg`` (its series section, seed, clipping and generator)."""
    return SeriesStage(cfg.series, n_classes, seed=cfg.seed, grad_clip=cfg.training.grad_clip,
                       synthetic=cfg.data.synthetic if cfg.data.source == "synthetic" else None)


def stage_done(state: dict[str, Any] | None, cfg: Any) -> bool:
    """Whether a checkpoint's series stage (``state["series"]``) has nothing left under ``cfg`` (the
    run's Config): off, or finished with the same series config."""
    if not cfg.series.enabled:
        return True
    s = (state or {}).get("series")
    return s is not None and same_config(s["config"], cfg.series) and int(s["epoch"]) > cfg.series.epochs


def same_config(saved: dict[str, Any], cfg: Any) -> bool:
    """Whether a checkpoint's series config (``asdict`` form) is ``cfg``; a key the saved one lacks (a run
    from before the key existed) counts as its default."""
    now, default = asdict(cfg), asdict(type(cfg)())
    return set(saved) <= set(now) and all(saved.get(k, default[k]) == v for k, v in now.items())


def fit_series(train: SeriesSet, val: SeriesSet, cfg: Any, n_classes: int, *, seed: int = 0, grad_clip: float = 1.0,
               on_epoch: Any = None, noise_val: SeriesSet | None = None) -> tuple[SeriesNet, dict[str, Any]]:
    """The stage alone, without a run (``python -m training.series_stage`` and tests): the same steps as
    under the trainer, its epoch summaries to ``on_epoch(summary)``. Returns the best net and its record."""
    stage = SeriesStage(cfg, n_classes, seed=seed, grad_clip=grad_clip)
    stage.prepare_sets(train, val, noise_val)
    while not stage.finished:
        for idx in stage.batches():
            _, _, finite = stage.train_step(idx)
            if not finite:
                raise ValueError(f"series stage: non-finite loss or gradient in epoch {stage.epoch}")
        summary = {"epoch": stage.epoch, **stage.train_means(), **(stage.validate() if stage.validates else {})}
        stage.end_epoch()
        if on_epoch is not None:
            on_epoch(summary)
    return stage.best_net(), stage.best["record"]


def save_series(run_dir: str | Path, net: SeriesNet, cfg: Any, record: dict[str, Any]) -> Path:
    from training.checkpoint import save_checkpoint

    path = Path(run_dir) / SERIES_CHECKPOINT
    save_checkpoint({"series_model": net.state_dict(), "n_features": int(net.mu.numel()),
                     "n_types": net.type_head.out_features, "series_config": asdict(cfg),
                     "best": {k: float(v) for k, v in record.items()}}, path)
    return path


def run_series_stage(run_dir: str | Path, model: nn.Module, bundle: Any, cfg: Any, *, device: Any = "cpu",
                     log: logging.Logger | None = None) -> dict[str, Any]:
    """Refit the series model of a trained run outside its training loop (``cfg``: the run's Config):
    its train split's series, the epoch chosen on val, ``checkpoints/series.pt`` written; the epoch
    summaries go to the log only (a run that trains its series stage records them in metrics.jsonl,
    TensorBoard and W&B). Returns the best record."""
    log = log or logging.getLogger("abr")
    t0 = time.time()
    stage = build_stage(cfg, int(bundle.class_weights.numel()))
    stage.prepare(model, bundle, device, progress=lambda message: log.info("series stage: %s", message))
    log.info("series stage: %d train / %d val series, evidence of %d features per recording (%.0f s)",
             len(stage.train_set), len(stage.val_set), stage.train_set.evidence.shape[-1], time.time() - t0)
    net, best = fit_series(stage.train_set, stage.val_set, cfg.series, stage.n_classes, seed=cfg.seed,
                           grad_clip=cfg.training.grad_clip, noise_val=stage.noise_val_set,
                           on_epoch=lambda s: log.info("%s", format_epoch_summary(s["epoch"], cfg.series.epochs, s,
                                                                                   title="Series epoch")))
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
        from training.config import load_config

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        loaded = load_run(args.run, which=args.checkpoint)
        # The run's config as it stands (config.yaml, rewritten by --resume with its overrides), not the
        # checkpoint's: best.pt may predate a resume that changed series.* (a refit used its stale settings).
        current = Path(args.run) / "config.yaml"
        cfg = load_config(current) if current.is_file() else loaded.cfg
        bundle = build_data(cfg.data, cfg.loss.class_weights)
        run_series_stage(args.run, loaded.model, bundle, cfg)
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    import sys

    sys.exit(main())
