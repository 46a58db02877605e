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
from evaluation.intervals import N_BOOT, SMALL_N_PATIENTS, cell, n_units, recording_intervals
from evaluation.plots import per_series
from training.clinical import NO_RESPONSE_DB

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
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of one split. ``train``: labels of the train split (``collect_train_targets``);
    regression baselines use the train means saved in ``stats``. ``single_task``: task -> the
    "model" block of that task's single-task run (shown beside the model where present). Each model
    block has a ``model_ci`` beside it: 95 % intervals over patients (``evaluation.intervals``)."""
    out = _head_metrics(col, train, stats, class_names)
    out["denoising"] = _denoising_metrics(col)
    out["threshold"]["per_series"] = threshold_per_series(col)
    _add_intervals(out, col, train, n_boot=n_boot, seed=seed)
    if conditions is not None:
        out["generation"] = generation_metrics(col, conditions)
    for task, block in (single_task or {}).items():
        if task == "signal":  # the single-task denoiser's list of levels
            out["denoising_single_task"] = block
        elif task in out:
            out[task]["single_task"] = block
    out["flags"] = find_flags(out)
    return out


def _head_metrics(col: Collected, train: dict[str, np.ndarray], stats: DataStats,
                  class_names: tuple[str, ...]) -> dict[str, Any]:
    """meta, then each head's model block beside its trivial train-split baseline."""
    k = len(class_names)
    out: dict[str, Any] = {
        "meta": {
            "n": int(len(col.label)),
            **_counts(col),
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
    return out


def _denoising_metrics(col: Collected) -> list[dict[str, Any]]:
    """One block per noise level: the denoiser's estimate beside its noisy input."""
    return [
        {
            "snr_db": lv.snr_db,
            "t": lv.t,
            "alpha_bar": lv.alpha_bar,
            "model": M.signal_metrics(col.signal, lv.estimate, lv.noisy),
            "noisy_input": M.signal_metrics(col.signal, lv.noisy, lv.noisy),
        }
        for lv in col.levels
    ]


def _counts(col: Collected) -> dict[str, Any]:
    """Patients and series of the split, and what its intervals resample."""
    if col.patient_id is None:
        return {"n_patients": None, "interval_unit": "over recordings (the split carries no patient ids)"}
    n_p = len(np.unique(col.patient_id))
    out = {"n_patients": n_p, "interval_unit": f"over the {n_p} patients (cluster bootstrap)"}
    if col.series_id is not None:
        out["n_series"] = len(set(zip(col.patient_id.tolist(), col.series_id.tolist(), strict=True)))
    return out


def _add_intervals(out: dict[str, Any], col: Collected, train: dict[str, np.ndarray], *, n_boot: int,
                   seed: int) -> None:
    """``model_ci`` beside every model block, patients per class, the accuracy gap's interval."""
    k = len(out["meta"]["class_names"])
    ci = recording_intervals(col, train, k, n_boot=n_boot, seed=seed)
    for task in ("class", "peak_exist", *REGRESSION_TASKS):
        out[task]["model_ci"] = ci[task]
    for lv, lv_ci in zip(out["denoising"], ci["denoising"], strict=True):
        lv["model_ci"] = lv_ci
    if col.patient_id is not None:
        out["class"]["patients_per_class"] = [n_units(col.patient_id, col.label == c) for c in range(k)]
    out["class"]["accuracy_minus_majority_ci"] = ci["accuracy_minus_majority"]
    out["meta"]["n_boot"] = n_boot


def threshold_per_series(col: Collected) -> dict[str, Any]:
    """The threshold head per series, as the scatter's threshold panel shows it: regression metrics
    over the series with a response, and how many series have none (drawn apart in its strip)."""
    true, pred, counted = per_series(col, col.threshold_true, col.threshold_pred)
    none = true >= NO_RESPONSE_DB
    return {**M.regression_metrics(true[~none], pred[~none]), "counted": counted, "n_no_response": int(none.sum())}


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
    flags += _class_flags(m)
    if cls["macro_f1"] <= base["macro_f1"] and cls["macro_f1"] < 1.0:
        flags.append(f"class macro-F1 {_f(cls['macro_f1'])} is not above the majority-class baseline "
                     f"{_f(base['macro_f1'])}")
    if cls["accuracy"] < base["accuracy"]:
        gap = m["class"].get("accuracy_minus_majority_ci")
        flags.append(f"class accuracy {_f(cls['accuracy'])} is below the majority-class baseline "
                     f"{_f(base['accuracy'])}" + (f" (difference {cell(cls['accuracy'] - base['accuracy'], gap)} "
                                                   f"{m['meta']['interval_unit']})" if gap else ""))
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
        elif not c["mean_waveform_r"] > c["split_mean_waveform_r"]:
            flags.append(f"generation ({c['condition']}): mean generated vs mean real waveform r = "
                         f"{_f(c['mean_waveform_r'])} is not above the split-mean baseline's "
                         f"{_f(c['split_mean_waveform_r'])} (the condition adds nothing in this band)")
    return flags


def _count(m: dict[str, Any], k: int) -> str:
    """"n=26 recordings, 1 patient" (or "n=26" without patient ids) for class k."""
    sup, patients = m["class"]["model"]["support"][k], m["class"].get("patients_per_class")
    if not patients:
        return f"n={sup}"
    return f"n={sup} recordings, {patients[k]} patient{'s' if patients[k] != 1 else ''}"


def _class_flags(m: dict[str, Any]) -> list[str]:
    """Absent classes, recall 0, one class only, and classes (or a split) resting on few patients."""
    names, cls = m["meta"]["class_names"], m["class"]["model"]
    flags = []
    for k, (rec, sup) in enumerate(zip(cls["recall"], cls["support"], strict=True)):
        if sup == 0:
            flags.append(f"class {names[k]}: no recordings in this split, recall undefined")
        elif rec == 0:
            flags.append(f"class {names[k]} ({_count(m, k)}): recall 0, never predicted correctly")
    present = [k for k, s in enumerate(cls["support"]) if s > 0]
    if len(present) == 1:
        flags.append(f"the split holds one class only ({names[present[0]]}): class metrics cannot show discrimination")
    n_p, patients = m["meta"].get("n_patients"), m["class"].get("patients_per_class")
    if not patients:
        return flags
    if n_p < SMALL_N_PATIENTS:
        flags.append(f"the split holds {n_p} patients: every interval rests on fewer than {SMALL_N_PATIENTS}")
    for k in present:
        if patients[k] < SMALL_N_PATIENTS:
            ci = (m["class"].get("model_ci") or {}).get("recall")
            flags.append(f"class {names[k]} ({_count(m, k)}): its recall "
                         f"{cell(cls['recall'][k], ci[k] if ci else None)} describes fewer than "
                         f"{SMALL_N_PATIENTS} patients, not the class")
    return flags


CHECKS = (
    f"class: one class predicted for >= {100 * COLLAPSE_SHARE:.0f} % of samples; a class with recall 0; "
    "macro-F1 not above the majority-class baseline",
    f"wave V existence: one decision for >= {100 * COLLAPSE_SHARE:.0f} % of samples; AUROC <= 0.5",
    f"latency, amplitude, threshold: prediction std < {CONSTANT_STD_RATIO:g} x target std; R² < 0; "
    f"|Pearson r| < {NO_RELATION_R:g}; MAE not below the train-mean predictor",
    "class accuracy below the majority-class baseline's (with the interval of the difference); a class or a "
    f"split with fewer than {SMALL_N_PATIENTS} patients",
    "denoising: output correlation not above the noisy input's; SNR gain <= 0 dB",
    f"generation, per intensity band: mean generated vs mean real waveform r < {NO_RELATION_R:g}, or not above "
    "the split-mean waveform's r (its baseline)",
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


def render_report(m: dict[str, Any], title: str = "Evaluation report", figures: list[str] = (),
                  sections: list[str] = ()) -> str:
    """The markdown report: what was evaluated, flags, then ``sections`` (the per-patient section),
    then one table per task with its baselines and, per recording, intervals over patients."""
    lines = [*_header(m, title), "", "## Flags", ""]
    lines += [f"- **{f}**" for f in m["flags"]] or ["- none raised by the checks listed at the end"]
    lines += ["", *sections]
    unit = m["meta"].get("interval_unit", "")
    lines += ["", "## Per recording", "",
              f"Every recording scored alone; [95 % interval] {unit}. A patient's recordings share its class, "
              "threshold and ears, so the patient, not the recording, is the independent unit.", ""]
    lines += _class_section(m) + _wave_v_section(m) + _regression_section(m) + _denoising_section(m)
    if "generation" in m:
        lines += _generation_section(m["generation"])
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
        lines += _figure_notes(m, figures)
    lines += ["", "## Checks behind the flags", ""] + [f"- {c}" for c in CHECKS]
    return "\n".join(lines) + "\n"


def _header(m: dict[str, Any], title: str) -> list[str]:
    """Title, the counts in patients and recordings, and the data, checkpoint and sampler used."""
    meta = m["meta"]
    counts = f"{meta['n']} recordings"
    if _known(meta.get("n_patients")):
        counts += f" from {meta['n_patients']} patients" + (f" ({meta['n_series']} series)"
                                                             if _known(meta.get("n_series")) else "")
    lines = [f"# {title}", "", f"Evaluated: {counts}. Signal units: {meta['signal_units']}.",
             f"Baselines: {meta['baselines']}. Single-task: the same metric from a run trained on that task "
             "alone (— where none was given).", ""]
    for key in ("data", "run", "checkpoint", "split", "sampler"):
        if key in meta:
            lines.append(f"- {key}: {meta[key]}")
    return lines


def _known(v: Any) -> bool:
    """A count the split has (the report reads None back as nan)."""
    return isinstance(v, int) or (isinstance(v, float) and math.isfinite(v))


def _ci(m: dict, task: str, key: str, k: int | None = None, digits: int = 3) -> str:
    """The model's value of ``task``/``key`` (class ``k`` of a per-class list) with its interval."""
    v, ci = m[task]["model"][key], (m[task].get("model_ci") or {}).get(key)
    if k is not None:
        v, ci = v[k], ci[k] if ci else None
    return cell(v, ci, digits)


def _class_section(m: dict[str, Any]) -> list[str]:
    names = m["meta"]["class_names"]
    cls, maj = m["class"]["model"], m["class"]["majority"]
    patients = m["class"].get("patients_per_class")
    lines = ["## Class", ""]
    lines += _table(["metric", "model", "majority class", "single-task"], [
        [name, _ci(m, "class", key), _f(maj[key]), _st(m, "class", key)]
        for name, key in (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
                          ("macro-F1", "macro_f1"), ("macro AUROC (one-vs-rest)", "macro_auroc"))
    ])
    support = "recordings (patients)" if patients else "recordings"
    lines += [""]
    lines += _table(["class", support, "predicted (count)", "predicted (%)", "precision", "recall", "AUROC"], [
        [names[k], f"{cls['support'][k]}" + (f" ({patients[k]})" if patients else ""), str(cls["pred_histogram"][k]),
         f"{100 * cls['pred_fraction'][k]:.1f}", _ci(m, "class", "precision", k), _ci(m, "class", "recall", k),
         _ci(m, "class", "auroc_per_class", k)]
        for k in range(len(names))
    ])
    lines += ["", "Confusion matrix (recordings; rows: true, columns: predicted):", ""]
    return lines + _table(["true \\ pred", *names], [[names[i], *map(str, row)] for i, row in
                                                      enumerate(cls["confusion_matrix"])])


def _wave_v_section(m: dict[str, Any]) -> list[str]:
    pb = m["peak_exist"]["majority"]
    return ["", "## Wave V existence", "", *_table(["metric", "model", "majority decision", "single-task"], [
        [key, _ci(m, "peak_exist", key), _f(pb[key]), _st(m, "peak_exist", key)]
        for key in ("f1", "auroc", "accuracy", "positive_rate_pred")
    ])]


def _regression_section(m: dict[str, Any]) -> list[str]:
    rows = []
    for task, (label, unit) in REGRESSION_TASKS.items():
        r, b = m[task]["model"], m[task]["mean"]
        for key in ("mae", "rmse", "pearson_r", "r2", "pred_std"):
            u = f" ({unit})" if key in ("mae", "rmse", "pred_std") else ""
            rows.append([f"{label}: {key}{u}", _ci(m, task, key), _f(b[key]), _st(m, task, key), str(r["n"])])
    lines = ["", "## Latency, amplitude, threshold", "",
             "Latency and amplitude on the recordings whose wave V exists (true peaks).", "",
             *_table(["metric", "model", "train-mean predictor", "single-task", "n recordings"], rows)]
    ps = m["threshold"].get("per_series")
    if ps:
        lines += ["", f"Threshold per {ps['counted']} (the median of each one's recordings, as the scatter's "
                  f"threshold panel shows it): MAE {_f(ps['mae'], 2)} dB, r {_f(ps['pearson_r'])}, over "
                  f"{ps['n']} {ps['counted']} with a response; {ps['n_no_response']} with no response are drawn "
                  "apart, in the panel's strip."]
    return lines


def _denoising_section(m: dict[str, Any]) -> list[str]:
    lines = ["", "## Denoising", "",
             "x_t = q_sample(x0, t, ε) at the diffusion SNR ᾱ/(1-ᾱ) given; the noisy input is x_t/sqrt(ᾱ) "
             "(same scale as x0). The diffusion SNR is relative to the standardized data's global variance; "
             "quiet recordings have less power, so the per-recording input SNR (mean shown) is lower. Pearson r: "
             "mean of per-recording correlations; SNR gain: output SNR minus input SNR, per recording, averaged.",
             ""]

    def mci(lv: dict, key: str, digits: int) -> str:
        return cell(lv["model"][key], (lv.get("model_ci") or {}).get(key), digits)

    return lines + _table(["SNR (dB)", "t", "input SNR per recording (dB)", "MSE model", "MSE noisy input",
                           "r model", "r noisy input", "SNR gain (dB)", "single-task r"], [
        [f"{lv['snr_db']:g}", str(lv["t"]), _f(lv["noisy_input"]["snr_db"], 1), mci(lv, "mse", 4),
         _f(lv["noisy_input"]["mse"], 4), mci(lv, "pearson_r", 3), _f(lv["noisy_input"]["pearson_r"]),
         mci(lv, "snr_gain_db", 2), _single_task_denoise(m, i)]
        for i, lv in enumerate(m["denoising"])
    ])


def _generation_section(g: dict[str, Any]) -> list[str]:
    lo, hi = g["peak_window_ms"]
    pk = g["peak_picker_on_real"]
    lines = ["", "## Generation", "",
             f"One condition per intensity band (median static vector of its recordings). Wave V of the "
             f"generated signals: largest smoothed positive value in {lo:g}-{hi:g} ms. The same picker on the "
             f"real recordings with a wave V: MAE {_f(pk['mae'])} ms, r {_f(pk['pearson_r'])} (its own error). "
             "No intervals: each row compares two means of one band, the generated set is not a sample of "
             "patients. A band whose r is not above its baseline is flagged.", ""]
    return lines + _table(["condition", "n real", "n gen", "r mean waveform", "r split mean (baseline)",
                           "gen. latency median (ms)", "real latency mean (ms)", "spectral dist. (dB)",
                           "split spectral dist. (dB)"], [
        [c["condition"], str(c["n_real"]), str(c["n_generated"]), _f(c["mean_waveform_r"]),
         _f(c["split_mean_waveform_r"]), _f(c["generated_latency_median_ms"], 2),
         _f(c["real_latency_mean_ms"], 2), _f(c["spectral_distance_db"], 2),
         _f(c["split_spectral_distance_db"], 2)]
        for c in g["conditions"]
    ])


def _figure_notes(m: dict[str, Any], figures: list[str]) -> list[str]:
    """What a figure shows that its panel cannot say."""
    stems = {Path(f).stem for f in figures}
    notes = []
    ps = m["threshold"].get("per_series")
    if "scatter" in stems and ps:
        notes.append(f"- scatter: the threshold panel is per {ps['counted'][:-1]} (MAE {_f(ps['mae'], 2)} dB, "
                     f"section \"Latency, amplitude, threshold\"); its right strip holds the predictions for the "
                     f"{ps['n_no_response']} {ps['counted']} with no response.")
    if "loss_curves" in stems:
        notes.append(f"- loss_curves: {VAL_BELOW_TRAIN}")
    return ["", *notes] if notes else []


VAL_BELOW_TRAIN = ("validation loss can sit below training loss: the training loss is taken with dropout, "
                   "augmentation and classifier-free condition dropping on, from the raw weights, averaged over an "
                   "epoch in which they improve; validation uses the EMA weights (when training.ema_decay > 0) at "
                   "the epoch's end with all of those off.")


def _single_task_denoise(m: dict, i: int) -> str:
    block = m.get("denoising_single_task")
    return _f(block[i]["model"]["pearson_r"]) if block and i < len(block) else "—"


def write_report(m: dict[str, Any], out_dir: Path, title: str = "Evaluation report", figures: list[str] = (),
                 sections: list[str] = ()) -> Path:
    """Write ``metrics.json`` and ``report.md`` into ``out_dir``; returns the report path.
    ``sections``: markdown lines put right after the flags (the per-patient section)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_json(m, out_dir / "metrics.json")
    path = out_dir / "report.md"
    path.write_text(render_report(to_jsonable_nan(m), title, figures, sections), encoding="utf-8")
    return path


def to_jsonable_nan(m: Any) -> Any:
    """Reports read the same dict as metrics.json, with None put back to nan for formatting."""
    if isinstance(m, dict):
        return {k: to_jsonable_nan(v) for k, v in m.items()}
    if isinstance(m, list):
        return [to_jsonable_nan(v) for v in m]
    return float("nan") if m is None else m
