"""The per-series answers: per-recording evidence from the frozen ABRNet, grouped into padded series,
and what is answered and scored per series (threshold on the 5 dB grid incl. "no response", type,
wave V in the field's terms).

    evidence = extract(net, dataset)                 # one pass at t = 0, (N F) + per-recording answers
    data = SeriesSet(evidence, threshold_db, label)  # (S Smax F) padded, mask, truth
    answers = series_answers(evidence, load_series(run_dir))   # rule, head mean, series model
    metrics = patient_metrics(net, dataset, ...)     # every answer scored, with bootstrap intervals

The network's own heads stay per recording; this module reads them (and the pooled features) per
series. Validation (training.trainer), evaluation.evaluate, evaluation.predict and the benches import
it directly; training the series model is the stage in training/series_stage.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from data.records import WAVE_NAMES
from models.series import SeriesNet, level_coherence, microphonic_index, recording_evidence
from training.clinical import (
    DETECTION_P,
    N_THRESHOLD_BINS,
    NO_RESPONSE_DB,
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
    waterfall_latency,
    waterfall_presence,
    wave_metrics,
    wave_v_metrics,
)
from training.distributed import gather_objects, shard_rows


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
    # "amplitude" (µV); and each wave's most likely peaks (ABRNet.read_candidates), each (N 3 M):
    # "cand_latency", "cand_amplitude", "cand_logp"; None for a network with the pooled wave V head.
    waves: dict[str, np.ndarray] | None = None
    # (N N_COHERENCE) each recording against its series' neighbours (models.series.level_coherence); the
    # series model reads it when its series.coherence is on.
    coherence: np.ndarray | None = None
    # (N N_MICROPHONIC) each recording's cochlear microphonic index (models.series.microphonic_index); the
    # series model reads it when its series.microphonic is on.
    microphonic: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> Evidence:
        """The evidence of recordings ``rows`` (indices or an (N,) mask), in that order (as
        :func:`concat_evidence` joins them: None stays None, a dict is taken key by key)."""

        def pick(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, dict):
                return {k: v[rows] for k, v in value.items()}
            return value[rows]

        return Evidence(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})


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
            "signal": x0[:, 0].cpu(),
        }
        if "wave_presence" in out:
            part |= {"waves/prob": torch.sigmoid(out["wave_presence"].float()), "waves/latency": out["wave_latency"],
                     "waves/amplitude": out["wave_amplitude"]}
            part |= {f"waves/cand_{k}": v for k, v in net.read_candidates(out["wave_logits"], x0).items()}
        part.update({f"truth/{k}": batch[k] for k in TRUTH_KEYS if k in batch})
        for k, v in part.items():
            rows.setdefault(k, []).append(v.detach().cpu())
    if not rows:
        raise ValueError("series evidence: expected a non-empty split, found 0 recordings")
    cols = {k: torch.cat(v).numpy() for k, v in rows.items()}
    truth = {k.removeprefix("truth/"): cols.pop(k) for k in list(cols) if k.startswith("truth/")}
    waves = {k.removeprefix("waves/"): cols.pop(k) for k in list(cols) if k.startswith("waves/")}
    signal = cols.pop("signal")
    coherence = series_coherence(signal, cols["series_id"], cols["static"])
    return Evidence(**cols, truth=truth or None, waves=waves or None, coherence=coherence,
                    microphonic=microphonic_index(signal))


def series_coherence(signal: np.ndarray, series_id: np.ndarray, static: np.ndarray) -> np.ndarray:
    """(N L) signals of whole series, their series ids (N,) and static values (N 4) -> (N N_COHERENCE)
    models.series.level_coherence, the series' recordings ordered by stated level."""
    return level_coherence(signal, series_index(series_id, static[:, 1]).members)


class SeriesSet(Dataset):
    """Series as padded tensors: evidence (S Smax F), intensity (S Smax), mask (S Smax), and the
    truth per series when known: threshold bin (S,) and type (S,)."""

    def __init__(self, ev: Evidence, threshold_db: np.ndarray | None = None, label: np.ndarray | None = None, *,
                 coherence: bool = False, waterfall: bool = False, microphonic: bool = False):
        """``coherence``: append ``ev.coherence`` to each recording's evidence (series.coherence);
        ``waterfall``: then the waves read down the waterfall (series.waterfall, :func:`waterfall_features`);
        ``microphonic``: then ``ev.microphonic`` (series.microphonic). SeriesNet.reads() gives a model's flags."""
        self.series: Series = series_index(ev.series_id, ev.static[:, 1])
        features = ev.evidence
        if coherence:
            if ev.coherence is None:
                raise ValueError("series evidence: the series model reads level coherence, but the evidence has none")
            features = np.concatenate([features, ev.coherence], axis=1)  # (N F + N_COHERENCE)
        if waterfall:
            features = np.concatenate([features, waterfall_features(ev)], axis=1)  # (N F' + N_WATERFALL)
        if microphonic:
            if ev.microphonic is None:
                raise ValueError("series evidence: the series model reads the microphonic index, but the evidence "
                                 "has none")
            features = np.concatenate([features, ev.microphonic], axis=1)  # (N F'' + N_MICROPHONIC)
        S, Smax, Fdim = len(self.series), max(len(m) for m in self.series.members), features.shape[1]
        self.evidence = torch.zeros(S, Smax, Fdim)
        self.intensity = torch.zeros(S, Smax)
        self.mask = torch.zeros(S, Smax, dtype=torch.bool)
        for s, rows in enumerate(self.series.members):
            n = len(rows)
            self.evidence[s, :n] = torch.from_numpy(features[rows])
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


def gathered_evidence(net: nn.Module, dataset: Dataset, *, batch_size: int, device: str | torch.device,
                      shard: tuple[int, int]) -> Evidence | None:
    """The network's pass over ``dataset`` under DDP: ``shard`` = (rank, world size); each rank runs its block
    of batches and the per-recording answers are gathered in the single process's order. None in a single
    process (:func:`clinical_summary` then makes the pass itself)."""
    if shard[1] == 1:
        return None
    rows = shard_rows(len(dataset), batch_size, *shard)
    ev = extract(net, Subset(dataset, rows), batch_size=batch_size, device=device) if len(rows) else None
    ev = concat_evidence([e for e in gather_objects(ev) if e is not None])
    # A shard may cut a series: its level coherence is recomputed over the whole split.
    ev.coherence = series_coherence(dataset.tensors["signal"][:, 0].numpy(), ev.series_id, ev.static)
    return ev


def concat_evidence(parts: list[Evidence]) -> Evidence:
    """One :class:`Evidence` with the rows of ``parts`` in order (the ranks' shards of a split)."""

    def cat(values: list[Any]) -> Any:
        if values[0] is None:
            return None
        if isinstance(values[0], dict):
            return {k: np.concatenate([v[k] for v in values]) for k in values[0]}
        return np.concatenate(values)

    return Evidence(**{f.name: cat([getattr(p, f.name) for p in parts]) for f in fields(Evidence)})


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
        p = predict(series_net, SeriesSet(ev, **series_net.reads()))
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
        **({"waves_waterfall": per_wave_metrics(replace(ev, waves=waterfall), **kw)}
           if (waterfall := waterfall_waves(ev, answers.thresholds[answers.best])) is not None else {}),
    }


N_WATERFALL = 2 * len(WAVE_NAMES)  # waterfall_features' columns


def waterfall_features(ev: Evidence) -> np.ndarray:
    """(N N_WATERFALL) float32: each wave's presence probability and latency (ms) read down the waterfall
    (:func:`waterfall_waves`), the series model's further evidence under series.waterfall."""
    read = waterfall_waves(ev)
    if read is None:
        raise ValueError("series evidence: the series model reads the waves down the waterfall, but the evidence has "
                         "no wave map candidates (model.peak_head: map)")
    return np.concatenate([read["prob"], read["latency"]], axis=1).astype(np.float32)


def waterfall_waves(ev: Evidence, threshold_db: np.ndarray | None = None) -> dict[str, np.ndarray] | None:
    """The waves read down each series' waterfall, as ``ev.waves`` holds them ("prob", "latency",
    "amplitude", each (N 3)): presence made non-decreasing in level (training.clinical.waterfall_presence)
    and latency and amplitude at the candidate peak that fits the series' latency-intensity function
    (training.clinical.waterfall_latency). ``threshold_db`` (S,), the series' threshold answers (series in
    series_index order, as SeriesAnswers holds them): wave V is then present (prob 1) at and above its
    series' threshold and absent (0) below, as a clinician marks it once the threshold is called, so that
    the recordings' wave V and the series' threshold cannot contradict each other. None without the wave
    map head's candidates."""
    if ev.waves is None or "cand_latency" not in ev.waves:
        return None
    level, w = ev.static[:, 1], ev.waves
    series = series_index(ev.series_id, level)
    prob = np.stack([waterfall_presence(series, level, w["prob"][:, k]) for k in range(len(WAVE_NAMES))], axis=1)
    if threshold_db is not None:
        prob[:, WAVE_NAMES.index("V")] = (level >= per_recording(series, threshold_db)).astype(np.float64)
    read = [waterfall_latency(series, level, w["prob"][:, k], w["cand_latency"][:, k], w["cand_amplitude"][:, k],
                              w["cand_logp"][:, k]) for k in range(len(WAVE_NAMES))]
    return {"prob": prob, "latency": np.stack([r[0] for r in read], axis=1),
            "amplitude": np.stack([r[1] for r in read], axis=1)}


def per_recording(series: Series, values: np.ndarray) -> np.ndarray:
    """(N,) each recording's series' value of ``values`` (S,), in ``series.members`` order."""
    out = np.empty(sum(len(rows) for rows in series.members), dtype=np.asarray(values).dtype)
    for s, rows in enumerate(series.members):
        out[rows] = values[s]
    return out


def responding(ev: Evidence, threshold_db: np.ndarray) -> np.ndarray:
    """(N,) bool: the recording's series holds a response, its threshold answer ``threshold_db`` (S,), in
    series_index order as SeriesAnswers holds them, below "no response" (NO_RESPONSE_DB)."""
    return per_recording(series_index(ev.series_id, ev.static[:, 1]), np.asarray(threshold_db) < NO_RESPONSE_DB)


def gated_waves(ev: Evidence, threshold_db: np.ndarray) -> dict[str, np.ndarray]:
    """Each recording's own reading of the waves (the wave map head's, wave V alone from the pooled head), kept
    where its series holds a response and absent (prob 0) where the series' threshold answer ``threshold_db``
    (S,) is "no response": no wave is reported in a series the series model reads as holding none. Why (issue
    33): a blind reader of one recording calls pure 1/f noise a wave V about as often as a real recording
    without one (11 % against 23 %), a wall it cannot pass without losing sensitivity; the series model, which
    reads all of a series' recordings, answers "no response" for about nine in ten pure-noise series. The gate
    reads the stated levels only through that answer, and the recording's own reading not at all, so a
    recording re-stated at another level keeps its answer unless its whole series' answer flips. Same keys as
    ``ev.waves`` ("prob", "latency", "amplitude", each (N 3) for WAVE_NAMES); latency and amplitude unchanged."""
    if ev.waves is not None:
        prob, latency, amplitude = (ev.waves[k].copy() for k in ("prob", "latency", "amplitude"))  # (N 3) each
    else:  # the pooled head reads wave V alone: I and III unread (NaN)
        nan = np.full((len(ev.peak_prob), len(WAVE_NAMES)), np.nan)
        prob, latency, amplitude = nan.copy(), nan.copy(), nan.copy()
        v = WAVE_NAMES.index("V")
        prob[:, v], latency[:, v], amplitude[:, v] = ev.peak_prob, ev.latency, ev.amplitude
    prob = np.where(responding(ev, threshold_db)[:, None] | np.isnan(prob), prob, 0.0)  # (N 3) unread stays NaN
    return {"prob": prob, "latency": latency, "amplitude": amplitude}


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



SERIES_CHECKPOINT = Path("checkpoints") / "series.pt"  # the series stage writes it, load_series reads it
SERIES_KEYS = ("series_model", "n_features", "n_types", "series_config")  # what series.pt must hold


def score(net: SeriesNet, data: SeriesSet, n_classes: int, n_boot: int = 0, seed: int = 0) -> dict[str, Any]:
    """Threshold and type metrics of ``net`` on ``data`` (truth known)."""
    p = predict(net, data)
    truth_db = from_bin(data.threshold_bin.numpy())
    return {"threshold": threshold_metrics(truth_db, p["threshold"], n_boot=n_boot, seed=seed),
            "type": type_metrics(data.type.numpy(), p["type_proba"].argmax(1), n_classes, n_boot=n_boot, seed=seed)}


def load_series(run_dir: str | Path) -> SeriesNet | None:
    """The run's fitted series model, or None when the run has none (series.enabled was false)."""
    from training.checkpoint import load_checkpoint

    path = Path(run_dir) / SERIES_CHECKPOINT
    if not path.is_file():
        return None
    state = load_checkpoint(path, required=SERIES_KEYS)
    from training.checkpoint import CheckpointError

    try:
        c = state["series_config"]
        net = SeriesNet(state["n_features"], state["n_types"], N_THRESHOLD_BINS, c["width"], c["heads"],
                        c["layers"], c["dropout"], **{k: bool(c.get(k, False)) for k in SeriesNet.READS})
        net.load_state_dict(state["series_model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint '{path}': not a series model of this code ({reason})") from None
    return net.eval()
