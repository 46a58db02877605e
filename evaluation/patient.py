"""The per-patient section of an evaluation: series threshold and type, wave V in the field's terms.

One home for ``evaluation.evaluate`` (a run's own split), ``bench/clinical.py`` (the benchmark
cohort) and ``evaluation.predict``. Beside the run's series model (when it has one) stand the
answers a reader should compare it with, all per series:

- threshold: the audiologist's rule over the network's wave V probabilities; the per-recording
  threshold head averaged over the series;
- type: the training split's majority type; the per-recording class head averaged over the series;
  the per-recording class evidence summed (log-probabilities).

Every headline number carries a 95 % bootstrap interval over series (training/clinical.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from training.clinical import (
    Estimate,
    evidence_types,
    head_mean_thresholds,
    rule_thresholds,
    series_index,
    series_truth,
    threshold_metrics,
    type_metrics,
    wave_v_metrics,
)
from training.series import Evidence, SeriesSet, extract, predict


def majority_type(dataset: Any) -> int:
    """The most frequent type among the series of ``dataset`` (the training split's: a baseline)."""
    t = {k: torch.stack([item[k] for item in dataset]).numpy() if not hasattr(dataset, "tensors")
         else dataset.tensors[k].numpy() for k in ("series_id", "static", "threshold", "label")}
    series = series_index(t["series_id"], t["static"][:, 1])
    _, types = series_truth(series, t["threshold"], t["label"])
    return int(np.bincount(types).argmax())


def patient_metrics(model: torch.nn.Module, dataset: Any, *, n_classes: int, majority_type: int,
                    series_net: torch.nn.Module | None = None, device: str | torch.device = "cpu",
                    n_boot: int = 1000, seed: int = 0, evidence: Evidence | None = None) -> dict[str, Any]:
    """Score every per-series answer on ``dataset`` (an ABRDataset with labels). ``evidence``: the
    network's pass over ``dataset`` when the caller already has it."""
    ev = evidence if evidence is not None else extract(model, dataset, device=device)
    t = ev.truth
    if t is None:
        raise ValueError("per-patient metrics: expected labelled recordings (label, threshold, wave V marks)")
    level = ev.static[:, 1]
    series = series_index(ev.series_id, level)
    truth_db, truth_type = series_truth(series, t["threshold"], t["label"])
    kw = {"n_boot": n_boot, "seed": seed}
    thresholds = {"rule": rule_thresholds(series, level, ev.peak_prob),
                  "head_mean": head_mean_thresholds(series, ev.threshold)}
    mean_proba = np.stack([ev.proba[m].mean(0) for m in series.members])  # (S K)
    types = {"majority": np.full(len(series), majority_type),
             "head_mean": mean_proba.argmax(1),
             "evidence_sum": evidence_types(series, ev.proba)}
    if series_net is not None:
        p = predict(series_net, SeriesSet(ev))
        thresholds["series_model"], types["series_model"] = p["threshold"], p["type_proba"].argmax(1)
    return {
        "n_series": len(series),
        "n_recordings": int(len(level)),
        "threshold": {k: threshold_metrics(truth_db, v, **kw) for k, v in thresholds.items()},
        "type": {k: type_metrics(truth_type, v, n_classes, **kw) for k, v in types.items()},
        "wave_v": wave_v_metrics(series, t["peak_mask"], ev.peak_prob, t["peak_latency"], ev.latency, **kw),
    }


def to_json(obj: Any) -> Any:
    """Estimates as {"value", "ci": [low, high]}; nested dicts and lists kept (metrics.json)."""
    if isinstance(obj, Estimate):
        return {"value": obj.value, "ci": [obj.low, obj.high]}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


THRESHOLD_ROWS = ("within_10db", "within_5db", "exact", "mae_db", "no_response_sensitivity", "no_response_specificity")
METHOD_NAMES = {"series_model": "series model", "rule": "rule (lowest consistent wave V)",
                "head_mean": "per-recording head, series mean", "majority": "majority type (train)",
                "evidence_sum": "per-recording evidence, summed"}


def markdown(m: dict[str, Any], class_names: tuple[str, ...]) -> list[str]:
    """The report section: one table for the threshold, one for the type, one line for wave V."""
    def cell(e: Estimate) -> str:
        return f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]"

    methods = list(m["threshold"])
    lines = [f"## Per patient ({m['n_series']} series, {m['n_recordings']} recordings; 95 % bootstrap intervals "
             "over series)", "", "Threshold on the 5 dB grid (\"no response\" = 105 dB):", "",
             "| metric | " + " | ".join(METHOD_NAMES[k] for k in methods) + " |",
             "|---|" + "---|" * len(methods)]
    lines += [f"| {r} | " + " | ".join(cell(m["threshold"][k][r]) for k in methods) + " |" for r in THRESHOLD_ROWS]
    tmethods = list(m["type"])
    lines += ["", "Type of hearing loss:", "", "| metric | " + " | ".join(METHOD_NAMES[k] for k in tmethods) + " |",
              "|---|" + "---|" * len(tmethods)]
    for r in ("macro_f1", "balanced_accuracy"):
        lines.append(f"| {r} | " + " | ".join(cell(m["type"][k][r]) for k in tmethods) + " |")
    for c, n in m["type"][tmethods[0]]["support"].items():
        lines.append(f"| recall {class_names[int(c)]} (n={n}) | "
                     + " | ".join(cell(m["type"][k]["recall"][c]) for k in tmethods) + " |")
    best = "series_model" if "series_model" in m["type"] else "evidence_sum"
    lines += ["", f"Confusion matrix ({METHOD_NAMES[best]}; rows true, columns predicted: "
              f"{', '.join(class_names)}): {m['type'][best]['confusion']}", ""]
    w = m["wave_v"]
    lines += ["Wave V per recording: " + ", ".join(f"{k} {cell(v)}" for k, v in w.items()), ""]
    return lines
