"""The per-patient section of an evaluation: series threshold and type, wave V in the field's terms.

The markdown of what ``training.series.patient_metrics`` scores, for ``evaluation.evaluate`` (a run's own
split) and ``bench/clinical.py`` (the benchmark cohort). Beside the run's series model (when it has one)
stand the answers a reader should compare it with, all per series:

- threshold: the audiologist's rule over the network's wave V probabilities; the per-recording
  threshold head averaged over the series;
- type: the training split's majority type; the per-recording class head averaged over the series;
  the per-recording class evidence summed (log-probabilities).

Every headline number carries a 95 % bootstrap interval over series (training/clinical.py).
"""

from __future__ import annotations

from typing import Any

from evaluation.intervals import SMALL_N_PATIENTS, cell
from training.clinical import Estimate

THRESHOLD_ROWS = ("within_10db", "within_5db", "exact", "mae_db", "no_response_sensitivity", "no_response_specificity")
METHOD_NAMES = {"series_model": "series model", "rule": "rule (lowest consistent wave V)",
                "head_mean": "per-recording head, series mean", "majority": "majority type (train)",
                "evidence_sum": "per-recording evidence, summed",
                "levels_only": "recorded levels alone (no waveform)", "rule_true_marks": "rule fed the true marks"}


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
        lines.append(f"| recall {class_names[int(c)]} (n={n} series) | "
                     + " | ".join(cell(m["type"][k]["recall"][c]) for k in tmethods) + " |")
    best = "series_model" if "series_model" in m["type"] else "evidence_sum"
    lines += ["", f"Confusion matrix ({METHOD_NAMES[best]}; rows true, columns predicted: "
              f"{', '.join(class_names)}): {m['type'][best]['confusion']}", ""]
    w = m["wave_v"]
    lines += ["Wave V per recording (the earlier summary, over every marked peak): "
              + ", ".join(f"{k} {cell(v)}" for k, v in w.items()), ""]
    return lines + wave_table(m.get("waves", {}), cell, m.get("waves_waterfall"))


def flags(m: dict[str, Any], class_names: tuple[str, ...]) -> list[str]:
    """Per-patient flags: a type whose recall rests on fewer than SMALL_N_PATIENTS series, and a type
    answer whose macro-F1 is not above the majority type's."""
    out = []
    tmethods = list(m["type"])
    best = "series_model" if "series_model" in m["type"] else "evidence_sum"
    for c, n in m["type"][tmethods[0]]["support"].items():
        if n < SMALL_N_PATIENTS:
            rec = m["type"][best]["recall"][c]
            out.append(f"per patient: type {class_names[int(c)]} has {n} series: its recall "
                       f"{_cell(rec)} ({METHOD_NAMES[best]}) describes fewer than {SMALL_N_PATIENTS} patients")
    if "majority" in m["type"] and m["type"][best]["macro_f1"]["value"] <= m["type"]["majority"]["macro_f1"]["value"]:
        out.append(f"per patient: type macro-F1 {m['type'][best]['macro_f1']['value']:.3f} ({METHOD_NAMES[best]}) is "
                   f"not above the majority type's {m['type']['majority']['macro_f1']['value']:.3f}")
    return out


def _cell(e: Any) -> str:
    """An Estimate, or its metrics.json form {"value", "ci"}."""
    if isinstance(e, dict):
        return cell(e["value"], e.get("ci"))
    return cell(e.value, [e.low, e.high])


WAVE_ROWS = ("detection_f1", "latency_within_0.1ms", "latency_within_0.2ms", "amplitude_mae_uv")


def wave_table(waves: dict[str, dict[str, Any]], cell: Any, waterfall: dict[str, dict[str, Any]] | None = None
               ) -> list[str]:
    """Per wave (I, III, V where the network reads them and the data marks them): detection F1, latency
    within 0.1 / 0.2 ms and amplitude MAE over the peaks marked inside the stored window; ``waterfall``:
    the same read down each series' waterfall (training.series.waterfall_waves), a column beside each."""
    if not waves:
        return []
    names = list(waves)
    columns = [(f"wave {k}", waves[k]) for k in names]
    if waterfall:
        columns = [c for k in names for c in ((f"wave {k}", waves[k]), (f"wave {k}, down the waterfall", waterfall[k]))]
    lines = ["Waves per recording (latency and amplitude over the peaks marked inside the window; n marked: "
             + ", ".join(f"{k} {waves[k]['n_marked']}" for k in names) + "):", "",
             "| metric | " + " | ".join(label for label, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {r} | " + " | ".join(cell(w[r]) for _, w in columns) + " |" for r in WAVE_ROWS]
    return [*lines, ""]
