"""The series stage: per-recording evidence from the frozen ABRNet, grouped into padded series,
and the SeriesNet objective (threshold on the 5 dB grid incl. "no response", and type).

    evidence = extract(net, dataset)                 # one pass at t = 0, (N F) + per-recording answers
    train = SeriesSet.build(evidence_train, ...)     # (S Smax F) padded, mask, truth
    logits = series_net(train.evidence, train.intensity, train.mask)
    losses = series_losses(logits, train.threshold_bin, train.type, ...)

The network's own heads stay per recording; this stage reads them (and the pooled features) per
series. Training it on the train split's series and choosing the epoch on the val split keeps the
test split and the benchmark cohort untouched.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from data.jsonable import to_jsonable
from data.records import WAVE_NAMES
from models.series import SeriesNet, recording_evidence
from training.clinical import (
    DETECTION_P,
    N_THRESHOLD_BINS,
    Series,
    evidence_proba,
    flatten,
    from_bin,
    head_mean_thresholds,
    latency_intensity_slopes,
    rule_thresholds,
    series_index,
    series_truth,
    threshold_metrics,
    to_bin,
    type_metrics,
    wave_metrics,
    wave_v_metrics,
)


@dataclass
class Evidence:
    """The frozen network's answers for each recording of a split (N rows)."""

    evidence: np.ndarray  # (N F) float32, see models.series.recording_evidence
    proba: np.ndarray  # (N K) class probabilities
    peak_prob: np.ndarray  # (N,) wave V probability
    latency: np.ndarray  # (N,) ms
    amplitude: np.ndarray  # (N,) µV
    threshold: np.ndarray  # (N,) dB nHL, the per-recording threshold head
    static: np.ndarray  # (N 4) physical units
    series_id: np.ndarray  # (N,) int64
    patient_id: np.ndarray  # (N,) int64
    truth: dict[str, np.ndarray] | None = None  # TRUTH_KEYS when labelled: (N,), the wave_* ones (N 3)
    # The wave map head's answers for waves I, III, V (WAVE_NAMES), each (N 3): "prob", "latency" (ms),
    # "amplitude" (µV); None for a network with the pooled wave V head.
    waves: dict[str, np.ndarray] | None = None


TRUTH_KEYS = ("label", "threshold", "peak_mask", "peak_latency", "wave_known", "wave_mask", "wave_latency",
              "wave_amplitude")


@torch.no_grad()
def extract(net: nn.Module, dataset: Dataset, *, batch_size: int = 512, device: str | torch.device = "cpu"
            ) -> Evidence:
    """Run ``net`` (eval mode, t = 0, clean signals) over ``dataset`` in order."""
    net.eval()
    rows: dict[str, list[Tensor]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x0, static = batch["signal"].float().to(device), batch["static"].float().to(device)  # (B 1 L), (B 4)
        out, ev = recording_evidence(net, x0, static)
        part = {
            "evidence": ev, "proba": torch.softmax(out["class_logits"].float(), -1),
            "peak_prob": torch.sigmoid(out["peak_logit"].float()), "latency": out["peak_latency"].float(),
            "amplitude": out["peak_amplitude"].float(), "threshold": out["threshold"].float(),
            "static": batch["static"], "series_id": batch["series_id"], "patient_id": batch["patient_id"],
        }
        if "wave_presence" in out:
            part |= {"waves/prob": torch.sigmoid(out["wave_presence"].float()), "waves/latency": out["wave_latency"],
                     "waves/amplitude": out["wave_amplitude"]}
        part.update({f"truth/{k}": batch[k] for k in TRUTH_KEYS if k in batch})
        for k, v in part.items():
            rows.setdefault(k, []).append(v.detach().cpu())
    if not rows:
        raise ValueError("series evidence: expected a non-empty split, found 0 recordings")
    cols = {k: torch.cat(v).numpy() for k, v in rows.items()}
    truth = {k.removeprefix("truth/"): cols.pop(k) for k in list(cols) if k.startswith("truth/")}
    waves = {k.removeprefix("waves/"): cols.pop(k) for k in list(cols) if k.startswith("waves/")}
    return Evidence(**cols, truth=truth or None, waves=waves or None)


class SeriesSet(Dataset):
    """Series as padded tensors: evidence (S Smax F), intensity (S Smax), mask (S Smax), and the
    truth per series when known: threshold bin (S,) and type (S,)."""

    def __init__(self, ev: Evidence, threshold_db: np.ndarray | None = None, label: np.ndarray | None = None):
        self.series: Series = series_index(ev.series_id, ev.static[:, 1])
        S, Smax, Fdim = len(self.series), max(len(m) for m in self.series.members), ev.evidence.shape[1]
        self.evidence = torch.zeros(S, Smax, Fdim)
        self.intensity = torch.zeros(S, Smax)
        self.mask = torch.zeros(S, Smax, dtype=torch.bool)
        for s, rows in enumerate(self.series.members):
            n = len(rows)
            self.evidence[s, :n] = torch.from_numpy(ev.evidence[rows])
            self.intensity[s, :n] = torch.from_numpy(ev.static[rows, 1])
            self.mask[s, :n] = True
        first = self.series.first_rows()
        self.threshold_bin = (torch.from_numpy(to_bin(threshold_db[first])) if threshold_db is not None
                              else torch.full((S,), -1, dtype=torch.int64))
        self.type = (torch.from_numpy(np.asarray(label)[first].astype(np.int64)) if label is not None
                     else torch.full((S,), -1, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"evidence": self.evidence[i], "intensity": self.intensity[i], "mask": self.mask[i],
                "threshold_bin": self.threshold_bin[i], "type": self.type[i]}


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


def threshold_from_logits(logits: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The median of the predicted distribution (minimizes the expected absolute error) and its
    10-90 % interval, in dB, each (S,); "no response" is NO_RESPONSE_DB."""
    cdf = torch.softmax(logits.float(), dim=1).cumsum(1)  # (S 22)
    q = [(cdf < p).sum(1).clamp_max(N_THRESHOLD_BINS - 1).cpu().numpy() for p in (0.5, 0.1, 0.9)]
    return from_bin(q[0]), from_bin(q[1]), from_bin(q[2])


@torch.no_grad()
def predict(net: nn.Module, data: SeriesSet, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per series: threshold (dB, median), its 10-90 % interval, threshold distribution, type probabilities."""
    net.eval()
    logits: dict[str, list[Tensor]] = {"threshold_logits": [], "type_logits": []}
    for b in DataLoader(data, batch_size=batch_size, shuffle=False):
        out = net(b["evidence"], b["intensity"], b["mask"])
        for k in logits:
            logits[k].append(out[k].float())
    thr_logits, type_logits = torch.cat(logits["threshold_logits"]), torch.cat(logits["type_logits"])
    median, low, high = threshold_from_logits(thr_logits)
    return {"threshold": median, "threshold_low": low, "threshold_high": high,
            "threshold_proba": torch.softmax(thr_logits, 1).numpy(),
            "type_proba": torch.softmax(type_logits, 1).numpy()}


def check_series(dataset: Dataset, what: str, opt_out: str = "training.clinical_validation=false") -> None:
    """Every series of ``dataset`` (an ABRDataset) has one threshold and one type, or a ValueError
    says which series and how to group recordings (a series_id column) or opt out (``opt_out``: the
    setting that does without series)."""
    t = dataset.tensors
    try:
        series_truth(series_index(t["series_id"].numpy(), t["static"][:, 1].numpy()), t["threshold"].numpy(),
                     t["label"].numpy())
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}; give the data a series_id column (one ear or session per series) "
                         f"or set {opt_out}") from None


def clinical_summary(net: nn.Module, dataset: Dataset, *, prefix: str, device: str | torch.device = "cpu",
                     batch_size: int = 512, evidence: Evidence | None = None) -> dict[str, float]:
    """Series-level point values on ``dataset`` from the network alone (no series model): the rule's
    threshold, the summed class evidence's type, wave V detection and latency in ms, and per wave (I, III,
    V with the wave map head) detection F1, latency within 0.1 / 0.2 ms and amplitude MAE. Keys
    ``{prefix}/patient/{threshold,type,wave_v,waves/<wave>}/...``; no intervals (validation runs every epoch);
    metrics undefined on the split are left out. ``evidence``: the network's pass over ``dataset`` when the
    caller already has it (sharded validation gathers it from the ranks)."""
    ev = evidence if evidence is not None else extract(net, dataset, batch_size=batch_size, device=device)
    m = patient_metrics(net, dataset, n_classes=ev.proba.shape[1], majority_type=0, n_boot=0, evidence=ev)
    metrics = {"threshold": m["threshold"]["rule"],
               "type": {k: m["type"]["evidence_sum"][k] for k in ("macro_f1", "balanced_accuracy")},
               "wave_v": m["wave_v"], "waves": m["waves"]}
    # A metric undefined on this split (no-response sensitivity without a no-response series) is left
    # out rather than logged as NaN, which health checks and tables would read as a failure.
    return {k: v for k, v in flatten(metrics, f"{prefix}/patient").items() if math.isfinite(v)}


def majority_type(dataset: Any) -> int:
    """The most frequent type among the series of ``dataset`` (the training split's: a baseline)."""
    t = {k: torch.stack([item[k] for item in dataset]).numpy() if not hasattr(dataset, "tensors")
         else dataset.tensors[k].numpy() for k in ("series_id", "static", "threshold", "label")}
    series = series_index(t["series_id"], t["static"][:, 1])
    _, types = series_truth(series, t["threshold"], t["label"])
    return int(np.bincount(types).argmax())


@dataclass
class SeriesAnswers:
    """Every per-series answer over one pass of the network (S series): what ``evaluation.evaluate``
    and ``bench/clinical.py`` score (:func:`patient_metrics`) and what ``evaluation.predict`` writes."""

    series: Series  # rows of each series, ordered by intensity
    thresholds: dict[str, np.ndarray]  # method -> (S,) dB; "no response" = NO_RESPONSE_DB
    types: dict[str, np.ndarray]  # method -> (S K) type probabilities
    interval: tuple[np.ndarray, np.ndarray] | None  # the series model's 10-90 % threshold interval (S,) x2, dB
    li_slopes: np.ndarray  # (S,) wave V latency-intensity slope (ms/dB) over detected recordings; NaN: < 2 levels

    @property
    def best(self) -> str:
        """The method whose answers a reader gets first: the series model when the run has one."""
        return "series_model" if "series_model" in self.thresholds else "rule"


def series_answers(ev: Evidence, series_net: nn.Module | None = None) -> SeriesAnswers:
    """Threshold: the rule over wave V probabilities, the threshold head's series mean, and the series
    model's median (when given). Type: the class head's series mean, the summed evidence
    (``"rule"``: it stands beside the rule's threshold when there is no series model), and the series model's."""
    level = ev.static[:, 1]
    series = series_index(ev.series_id, level)
    summed = evidence_proba(series, ev.proba)  # (S K)
    thresholds = {"rule": rule_thresholds(series, level, ev.peak_prob),
                  "head_mean": head_mean_thresholds(series, ev.threshold)}
    types = {"head_mean": np.stack([ev.proba[m].mean(0) for m in series.members]),  # (S K)
             "evidence_sum": summed, "rule": summed}
    interval = None
    if series_net is not None:
        p = predict(series_net, SeriesSet(ev))
        thresholds["series_model"], types["series_model"] = p["threshold"], p["type_proba"]
        interval = (p["threshold_low"], p["threshold_high"])
    slopes = latency_intensity_slopes(series, level, ev.latency, ev.peak_prob >= DETECTION_P)
    return SeriesAnswers(series, thresholds, types, interval, slopes)


def patient_metrics(model: torch.nn.Module, dataset: Any, *, n_classes: int, majority_type: int,
                    series_net: torch.nn.Module | None = None, device: str | torch.device = "cpu",
                    n_boot: int = 1000, seed: int = 0, evidence: Evidence | None = None) -> dict[str, Any]:
    """Score every per-series answer on ``dataset`` (an ABRDataset with labels). ``evidence``: the
    network's pass over ``dataset`` when the caller already has it."""
    ev = evidence if evidence is not None else extract(model, dataset, device=device)  # (N rows)
    t = ev.truth
    if t is None:
        raise ValueError("per-patient metrics: expected labelled recordings (label, threshold, wave V marks)")
    answers = series_answers(ev, series_net)
    series = answers.series
    truth_db, truth_type = series_truth(series, t["threshold"], t["label"])
    kw = {"n_boot": n_boot, "seed": seed}
    thresholds = {k: answers.thresholds[k] for k in ("rule", "head_mean", "series_model") if k in answers.thresholds}
    types = {"majority": np.full(len(series), majority_type),
             **{k: answers.types[k].argmax(1) for k in ("head_mean", "evidence_sum", "series_model")
                if k in answers.types}}
    return {
        "n_series": len(series),
        "n_recordings": int(len(ev.static)),
        "threshold": {k: threshold_metrics(truth_db, v, **kw) for k, v in thresholds.items()},
        "type": {k: type_metrics(truth_type, v, n_classes, **kw) for k, v in types.items()},
        "wave_v": wave_v_metrics(series, t["peak_mask"], ev.peak_prob, t["peak_latency"], ev.latency, **kw),
        "waves": per_wave_metrics(ev, **kw),
    }


def per_wave_metrics(ev: Evidence, **kw: Any) -> dict[str, dict[str, Any]]:
    """training.clinical.wave_metrics for each wave the network reads and the data marks: I, III and V
    from the wave map head; wave V alone from the pooled head."""
    t = ev.truth
    if "wave_known" not in t:  # a dataset without the batch's wave columns (a hand-made one): nothing to score
        return {}
    if ev.waves is not None:
        answers = {name: (ev.waves["prob"][:, k], ev.waves["latency"][:, k], ev.waves["amplitude"][:, k])
                   for k, name in enumerate(WAVE_NAMES)}
    else:
        answers = {"V": (ev.peak_prob, ev.latency, ev.amplitude)}
    out = {}
    for name, (prob, lat, amp) in answers.items():
        k = WAVE_NAMES.index(name)
        known = t["wave_known"][:, k]
        if not known.any():
            continue
        sub = series_index(ev.series_id[known], ev.static[known, 1])
        out[name] = wave_metrics(sub, t["wave_mask"][known, k], prob[known], t["wave_latency"][known, k],
                                 lat[known], t["wave_amplitude"][known, k], amp[known], **kw)
    return out


# ------------------------------------------------------------------------------------------------
# the stage: fit on the train split's series, keep the epoch best on the val split's

SERIES_CHECKPOINT = Path("checkpoints") / "series.pt"


def selection_score(metrics: dict[str, Any]) -> float:
    """What the stage keeps the best epoch by (on val): threshold within ±5 dB plus type macro-F1,
    the two answers a clinician reads, with equal say."""
    return metrics["threshold"]["within_5db"].value + metrics["type"]["macro_f1"].value


def score(net: SeriesNet, data: SeriesSet, n_classes: int, n_boot: int = 0, seed: int = 0) -> dict[str, Any]:
    """Threshold and type metrics of ``net`` on ``data`` (truth known)."""
    p = predict(net, data)
    truth_db = from_bin(data.threshold_bin.numpy())
    return {"threshold": threshold_metrics(truth_db, p["threshold"], n_boot=n_boot, seed=seed),
            "type": type_metrics(data.type.numpy(), p["type_proba"].argmax(1), n_classes, n_boot=n_boot, seed=seed)}


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


def load_series(run_dir: str | Path) -> SeriesNet | None:
    """The run's fitted series model, or None when the run has none (series.enabled was false)."""
    from training.checkpoint import load_checkpoint

    path = Path(run_dir) / SERIES_CHECKPOINT
    if not path.is_file():
        return None
    state = load_checkpoint(path, required=("series_model", "n_features", "n_types", "series_config"))
    from training.checkpoint import CheckpointError

    try:
        c = state["series_config"]
        net = SeriesNet(state["n_features"], state["n_types"], N_THRESHOLD_BINS, c["width"], c["heads"],
                        c["layers"], c["dropout"])
        net.load_state_dict(state["series_model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint '{path}': not a series model of this code ({reason})") from None
    return net.eval()


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
    """python -m training.series --run RUN [--checkpoint best|last]: (re)fit a run's series stage."""
    from data.cli import ArgumentParser, run_main

    p = ArgumentParser(prog="python -m training.series", description="Fit the series model of a trained run.")
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
