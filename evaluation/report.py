"""metrics.json and report.md for one evaluated checkpoint.

The report states measured facts beside their baselines and never grades itself ("good",
"excellent"). What it does do is raise FLAGS, at the top, for failures that an average hides:
a class head that predicts one class, a regression head whose output is constant, R² below 0,
a denoiser that does worse than its noisy input. The checks and their thresholds are listed at the
end of every report, so a reader knows exactly what "no flag" means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from data.jsonable import to_jsonable
from data.stats import DataStats
from evaluation import metrics as M
from evaluation.collect import Collected, GeneratedCondition

REGRESSION_TASKS: dict[str, tuple[str, str]] = {  # task -> (display, unit)
    "peak_latency": ("wave V latency", "ms"),
    "peak_amplitude": ("wave V amplitude", "µV"),
    "threshold": ("threshold", "dB"),
}
COLLAPSE_SHARE = 0.99  # one class (or one binary decision) for at least this share of samples
CONSTANT_STD_RATIO = 0.01  # prediction std below this share of the target std
NO_RELATION_R = 0.1  # |Pearson r| below this: no linear relation


# --------------------------------------------------------------------------------------------
# metrics.json


def compute_metrics(
    col: Collected,
    train: dict[str, np.ndarray],
    stats: DataStats,
    class_names: tuple[str, ...],
    conditions: list[GeneratedCondition] | None = None,
    single_task: dict[str, dict] | None = None,
) -> dict[str, Any]:
    """All metrics of one split. ``train``: labels of the train split (``collect_train_targets``);
    regression baselines use the train means saved in ``stats``. ``single_task``: task -> the
    "model" block of that task's single-task run (shown beside the model where present)."""
    k = len(class_names)
    out: dict[str, Any] = {
        "meta": {
            "n": int(len(col.label)),
            "signal_units": col.units,
            "class_names": list(class_names),
            "baselines": "trivial baselines fitted on the train split, applied to this split: majority class "
            "(constant train class frequencies for AUROC), majority wave V decision, train mean of each target",
        },
        "class": {
            "model": M.class_metrics(col.label, col.pred, col.proba, k),
            "majority": M.class_baseline_metrics(train["label"], col.label, k),
        },
        "peak_exist": {
            "model": M.binary_metrics(col.peak_mask, col.peak_prob),
            "majority": M.binary_baseline_metrics(train["peak_mask"], col.peak_mask),
        },
    }
    train_means = {"peak_latency": stats.latency_mean, "peak_amplitude": stats.amplitude_mean,
                   "threshold": stats.threshold_mean}
    pairs = {
        "peak_latency": (col.latency_true, col.latency_pred, col.peak_mask),
        "peak_amplitude": (col.amplitude_true, col.amplitude_pred, col.peak_mask),
        "threshold": (col.threshold_true, col.threshold_pred, np.ones(len(col.label), dtype=bool)),
    }
    for task, (y, yhat, mask) in pairs.items():
        out[task] = {
            "model": M.regression_metrics(y[mask], yhat[mask]),
            "mean": M.mean_baseline_metrics(train_means[task], y[mask]),
        }
    out["denoising"] = [
        {
            "snr_db": lv.snr_db,
            "t": lv.t,
            "alpha_bar": lv.alpha_bar,
            "model": M.signal_metrics(col.signal, lv.estimate, lv.noisy),
            "noisy_input": M.signal_metrics(col.signal, lv.noisy, lv.noisy),
        }
        for lv in col.levels
    ]
    if conditions is not None:
        out["generation"] = generation_metrics(col, conditions)
    for task, block in (single_task or {}).items():
        if task == "signal":  # the single-task denoiser's list of levels
            out["denoising_single_task"] = block
        elif task in out:
            out[task]["single_task"] = block
    out["flags"] = find_flags(out)
    return out


def generation_metrics(col: Collected, conditions: list[GeneratedCondition]) -> dict[str, Any]:
    """Per condition: correlation of the mean generated and mean real waveforms, wave V latency of
    the generated signals by the peak picker against the true latencies of the real ones, and the
    log-spectral distance. Baselines: the split-wide mean waveform (what ignoring the condition
    gives) and the picker run on the real signals (its own error, the floor for the latency
    comparison)."""
    picked_real = M.pick_wave_v_latency(col.signal[col.peak_mask]) if col.peak_mask.any() else np.array([])
    split_mean = col.signal.mean(axis=0)
    rows = []
    for c in conditions:
        real_mean, gen_mean = c.real.mean(axis=0), c.generated.mean(axis=0)
        gen_lat = M.pick_wave_v_latency(c.generated)
        real_lat = float(np.mean(c.real_latency)) if len(c.real_latency) else float("nan")
        rows.append({
            "condition": c.name,
            "static": [float(v) for v in c.static],
            "n_real": int(len(c.real)),
            "n_generated": int(len(c.generated)),
            "mean_waveform_r": M.pearson_r(gen_mean, real_mean),
            "split_mean_waveform_r": M.pearson_r(split_mean, real_mean),
            "generated_latency_median_ms": float(np.median(gen_lat)),
            "real_latency_mean_ms": real_lat,
            "latency_error_ms": abs(float(np.median(gen_lat)) - real_lat),
            "spectral_distance_db": M.spectral_distance_db(c.generated, c.real),
            "split_spectral_distance_db": M.spectral_distance_db(col.signal, c.real),
        })
    picker = M.regression_metrics(col.latency_true[col.peak_mask], picked_real)
    return {"conditions": rows, "peak_picker_on_real": picker, "peak_window_ms": list(M.PEAK_WINDOW_MS)}


# --------------------------------------------------------------------------------------------
# flags


def _f(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def find_flags(m: dict[str, Any]) -> list[str]:
    """Plain statements of failures; see CHECKS for the thresholds."""
    flags: list[str] = []
    names = m["meta"]["class_names"]
    cls, base = m["class"]["model"], m["class"]["majority"]
    top = int(np.argmax(cls["pred_fraction"]))
    if cls["pred_fraction"][top] >= COLLAPSE_SHARE:
        flags.append(f"COLLAPSE: class head predicts one class ({names[top]}) for "
                     f"{100 * cls['pred_fraction'][top]:.1f} % of samples")
    for k, (rec, sup) in enumerate(zip(cls["recall"], cls["support"], strict=True)):
        if sup == 0:
            flags.append(f"class {names[k]}: no recordings in this split, recall undefined")
        elif rec == 0:
            flags.append(f"class {names[k]} (n={sup}): recall 0, never predicted correctly")
    present = [k for k, s in enumerate(cls["support"]) if s > 0]
    if len(present) == 1:
        flags.append(f"the split holds one class only ({names[present[0]]}): class metrics cannot show discrimination")
    if cls["macro_f1"] <= base["macro_f1"] and cls["macro_f1"] < 1.0:
        flags.append(f"class macro-F1 {_f(cls['macro_f1'])} is not above the majority-class baseline "
                     f"{_f(base['macro_f1'])}")
    pe = m["peak_exist"]["model"]
    if pe["positive_rate_pred"] >= COLLAPSE_SHARE or pe["positive_rate_pred"] <= 1 - COLLAPSE_SHARE:
        which = "present" if pe["positive_rate_pred"] >= 0.5 else "absent"
        share = max(pe["positive_rate_pred"], 1 - pe["positive_rate_pred"])
        flags.append(f"COLLAPSE: wave V head predicts '{which}' for {100 * share:.1f} % of samples")
    if not pe["auroc"] > 0.5:
        flags.append(f"wave V existence AUROC {_f(pe['auroc'])}: no better than chance")
    for task, (label, unit) in REGRESSION_TASKS.items():
        r, mb = m[task]["model"], m[task]["mean"]
        if r["n"] == 0:
            flags.append(f"{label}: no samples with a true value in this split")
            continue
        if r["pred_std"] < CONSTANT_STD_RATIO * r["true_std"]:
            flags.append(f"CONSTANT: {label} head output std {r['pred_std']:.3g} {unit} against target std "
                         f"{r['true_std']:.3g} {unit}: constant")
        if r["r2"] < 0:
            flags.append(f"{label} R² = {_f(r['r2'])}: worse than predicting the mean")
        if not abs(r["pearson_r"]) >= NO_RELATION_R:  # also true for nan
            flags.append(f"{label} Pearson r = {_f(r['pearson_r'])}: no linear relation to the truth")
        if r["mae"] >= mb["mae"]:
            flags.append(f"{label} MAE {_f(r['mae'])} {unit} is not below the train-mean predictor's "
                         f"{_f(mb['mae'])} {unit}")
    for lv in m["denoising"]:
        d, noisy = lv["model"], lv["noisy_input"]
        if d["pearson_r"] <= noisy["pearson_r"]:
            flags.append(f"denoising at {lv['snr_db']:g} dB: output correlation {_f(d['pearson_r'])} is not above "
                         f"the noisy input's {_f(noisy['pearson_r'])}")
        if d["snr_gain_db"] <= 0:
            flags.append(f"denoising at {lv['snr_db']:g} dB: SNR gain {_f(d['snr_gain_db'], 2)} dB (no gain)")
    for c in m.get("generation", {}).get("conditions", []):
        if not c["mean_waveform_r"] >= NO_RELATION_R:
            flags.append(f"generation ({c['condition']}): mean generated vs mean real waveform r = "
                         f"{_f(c['mean_waveform_r'])}")
    return flags


CHECKS = (
    f"class: one class predicted for >= {100 * COLLAPSE_SHARE:.0f} % of samples; a class with recall 0; "
    "macro-F1 not above the majority-class baseline",
    f"wave V existence: one decision for >= {100 * COLLAPSE_SHARE:.0f} % of samples; AUROC <= 0.5",
    f"latency, amplitude, threshold: prediction std < {CONSTANT_STD_RATIO:g} x target std; R² < 0; "
    f"|Pearson r| < {NO_RELATION_R:g}; MAE not below the train-mean predictor",
    "denoising: output correlation not above the noisy input's; SNR gain <= 0 dB",
    f"generation: mean generated vs mean real waveform r < {NO_RELATION_R:g}",
)


# --------------------------------------------------------------------------------------------
# files


def write_metrics_json(m: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(m), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _st(m: dict, task: str, key: str, digits: int = 3) -> str:
    block = m[task].get("single_task")
    return _f(block.get(key), digits) if block else "—"


def render_report(m: dict[str, Any], title: str = "Evaluation report", figures: list[str] = ()) -> str:
    """The markdown report: flags first, then one table per task with its baselines."""
    names = m["meta"]["class_names"]
    lines = [f"# {title}", "", f"Recordings evaluated: {m['meta']['n']}. Signal units: {m['meta']['signal_units']}.",
             f"Baselines: {m['meta']['baselines']}. Single-task: the same metric from a run trained on that task "
             "alone (— where none was given).", ""]
    for key in ("run", "checkpoint", "split"):
        if key in m["meta"]:
            lines.append(f"- {key}: {m['meta'][key]}")
    lines += ["", "## Flags", ""]
    lines += [f"- **{f}**" for f in m["flags"]] or ["- none raised by the checks listed at the end"]

    cls, maj = m["class"]["model"], m["class"]["majority"]
    lines += ["", "## Class", ""]
    lines += _table(["metric", "model", "majority class", "single-task"], [
        [name, _f(cls[key]), _f(maj[key]), _st(m, "class", key)]
        for name, key in (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
                          ("macro-F1", "macro_f1"), ("macro AUROC (one-vs-rest)", "macro_auroc"))
    ])
    lines += [""]
    lines += _table(["class", "support", "predicted (count)", "predicted (%)", "precision", "recall", "AUROC"], [
        [names[k], str(cls["support"][k]), str(cls["pred_histogram"][k]), f"{100 * cls['pred_fraction'][k]:.1f}",
         _f(cls["precision"][k]), _f(cls["recall"][k]), _f(cls["auroc_per_class"][k])]
        for k in range(len(names))
    ])
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", ""]
    lines += _table(["true \\ pred", *names], [[names[i], *map(str, row)] for i, row in
                                               enumerate(cls["confusion_matrix"])])

    pe, pb = m["peak_exist"]["model"], m["peak_exist"]["majority"]
    lines += ["", "## Wave V existence", ""]
    lines += _table(["metric", "model", "majority decision", "single-task"], [
        [key, _f(pe[key]), _f(pb[key]), _st(m, "peak_exist", key)]
        for key in ("f1", "auroc", "accuracy", "positive_rate_pred")
    ])

    lines += ["", "## Latency, amplitude, threshold", "",
              "Latency and amplitude on the recordings whose wave V exists (true peaks).", ""]
    rows = []
    for task, (label, unit) in REGRESSION_TASKS.items():
        r, b = m[task]["model"], m[task]["mean"]
        for key in ("mae", "rmse", "pearson_r", "r2", "pred_std"):
            u = f" ({unit})" if key in ("mae", "rmse", "pred_std") else ""
            rows.append([f"{label}: {key}{u}", _f(r[key]), _f(b[key]), _st(m, task, key), str(r["n"])])
    lines += _table(["metric", "model", "train-mean predictor", "single-task", "n"], rows)

    lines += ["", "## Denoising", "",
              "x_t = q_sample(x0, t, ε) at the diffusion SNR ᾱ/(1-ᾱ) given; the noisy input is x_t/sqrt(ᾱ) "
              "(same scale as x0). The diffusion SNR is relative to the standardized data's global variance; "
              "quiet recordings have less power, so the per-recording input SNR (mean shown) is lower. Pearson r: "
              "mean of per-recording correlations; SNR gain: output SNR minus input SNR, per recording, averaged.",
              ""]
    lines += _table(["SNR (dB)", "t", "input SNR per recording (dB)", "MSE model", "MSE noisy input", "r model",
                     "r noisy input", "SNR gain (dB)", "single-task r"], [
        [f"{lv['snr_db']:g}", str(lv["t"]), _f(lv["noisy_input"]["snr_db"], 1), _f(lv["model"]["mse"], 4),
         _f(lv["noisy_input"]["mse"], 4),
         _f(lv["model"]["pearson_r"]), _f(lv["noisy_input"]["pearson_r"]), _f(lv["model"]["snr_gain_db"], 2),
         _single_task_denoise(m, i)]
        for i, lv in enumerate(m["denoising"])
    ])

    if "generation" in m:
        g = m["generation"]
        lo, hi = g["peak_window_ms"]
        pk = g["peak_picker_on_real"]
        lines += ["", "## Generation", "",
                  f"One condition per intensity band (median static vector of its recordings). Wave V of the "
                  f"generated signals: largest smoothed positive value in {lo:g}-{hi:g} ms. The same picker on the "
                  f"real recordings with a wave V: MAE {_f(pk['mae'])} ms, r {_f(pk['pearson_r'])} (its own error).",
                  ""]
        lines += _table(["condition", "n real", "n gen", "r mean waveform", "r split mean (baseline)",
                         "gen. latency median (ms)", "real latency mean (ms)", "spectral dist. (dB)",
                         "split spectral dist. (dB)"], [
            [c["condition"], str(c["n_real"]), str(c["n_generated"]), _f(c["mean_waveform_r"]),
             _f(c["split_mean_waveform_r"]), _f(c["generated_latency_median_ms"], 2),
             _f(c["real_latency_mean_ms"], 2), _f(c["spectral_distance_db"], 2),
             _f(c["split_spectral_distance_db"], 2)]
            for c in g["conditions"]
        ])
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    lines += ["", "## Checks behind the flags", ""] + [f"- {c}" for c in CHECKS]
    return "\n".join(lines) + "\n"


def _single_task_denoise(m: dict, i: int) -> str:
    block = m.get("denoising_single_task")
    return _f(block[i]["model"]["pearson_r"]) if block and i < len(block) else "—"


def write_report(m: dict[str, Any], out_dir: Path, title: str = "Evaluation report", figures: list[str] = (),
                 sections: list[str] = ()) -> Path:
    """Write ``metrics.json`` and ``report.md`` into ``out_dir``; returns the report path.
    ``sections``: markdown lines appended to the report (the per-patient section)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_json(m, out_dir / "metrics.json")
    path = out_dir / "report.md"
    text = render_report(to_jsonable_nan(m), title, figures)
    path.write_text(text + ("\n" + "\n".join(sections) + "\n" if sections else ""), encoding="utf-8")
    return path


def to_jsonable_nan(m: Any) -> Any:
    """Reports read the same dict as metrics.json, with None put back to nan for formatting."""
    if isinstance(m, dict):
        return {k: to_jsonable_nan(v) for k, v in m.items()}
    if isinstance(m, list):
        return [to_jsonable_nan(v) for v in m]
    return float("nan") if m is None else m
