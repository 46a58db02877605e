"""The report on a collapsed predictor shows the collapse plainly; a healthy one raises no flag."""

from __future__ import annotations

import json

import numpy as np

from data.records import CLASS_NAMES
from evaluation.report import compute_metrics, find_flags, write_report


def _train():
    return {"label": np.array([0] * 80 + [1, 2, 3, 4] * 5), "peak_mask": np.arange(100) % 4 != 0}


def test_collapsed_predictor_is_flagged_plainly(fx, stats, tmp_path):
    col = fx.hand_collected(collapsed=True)
    m = compute_metrics(col, _train(), stats, CLASS_NAMES)
    flags = m["flags"]
    assert "COLLAPSE: class head predicts one class (NORMAL) for 100.0 % of samples" in flags
    for k in range(1, 5):  # every other class has recall 0
        assert f"class {CLASS_NAMES[k]} (n=20): recall 0, never predicted correctly" in flags
    assert any(f.startswith("class macro-F1") and "not above the majority-class baseline" in f for f in flags)
    assert "COLLAPSE: wave V head predicts 'present' for 100.0 % of samples" in flags
    assert any(f.startswith("CONSTANT: threshold head output std 0 dB") and f.endswith("constant") for f in flags)
    assert any(f.startswith("wave V latency R² = -") and f.endswith("worse than predicting the mean") for f in flags)
    assert any(f.startswith("denoising at 0 dB: output correlation") for f in flags)
    assert "denoising at 0 dB: SNR gain 0.00 dB (no gain)" in flags

    report = write_report(m, tmp_path).read_text(encoding="utf-8")
    flags_section = report.split("## Flags")[1].split("## Class")[0]
    assert "**COLLAPSE: class head predicts one class (NORMAL) for 100.0 % of samples**" in flags_section
    assert "**CONSTANT: threshold head output std 0 dB" in flags_section
    for word in ("excellent", "good", "great"):
        assert word not in report.lower()
    # the histogram of predicted classes is in the per-class table: 100 NORMAL, 0 elsewhere
    assert "| NORMAL | 20 | 100 | 100.0 |" in report
    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved["class"]["model"]["pred_histogram"] == [100, 0, 0, 0, 0]
    assert saved["class"]["model"]["precision"][1] is None  # nan -> null, never a made-up number
    assert saved["flags"] == flags


def test_healthy_predictor_raises_no_flag(fx, stats, tmp_path):
    col = fx.hand_collected(collapsed=False)
    m = compute_metrics(col, _train(), stats, CLASS_NAMES)
    assert m["flags"] == []
    assert m["class"]["model"]["macro_f1"] == 1.0
    assert m["threshold"]["model"]["r2"] > 0.99
    report = write_report(m, tmp_path).read_text(encoding="utf-8")
    assert "- none raised by the checks listed at the end" in report
    assert "## Checks behind the flags" in report


def test_baselines_are_printed_beside_the_model(fx, stats, tmp_path):
    col = fx.hand_collected(collapsed=False)
    st_block = {"macro_f1": 0.25, "accuracy": 0.5, "balanced_accuracy": 0.3, "macro_auroc": 0.6}
    m = compute_metrics(col, _train(), stats, CLASS_NAMES, single_task={"class": st_block})
    # majority class of the train split is NORMAL: accuracy on this split = its share, 1/5
    assert m["class"]["majority"]["accuracy"] == 0.2
    # threshold mean baseline is the train mean from DataStats (identity stats: 0 dB)
    assert m["threshold"]["mean"]["mae"] == np.mean(np.abs(col.threshold_true - stats.threshold_mean))
    report = write_report(m, tmp_path).read_text(encoding="utf-8")
    assert "| macro-F1 | 1.000 [1.000, 1.000] | 0.067 | 0.250 |" in report


def test_flags_on_a_regression_head_with_no_relation(fx, stats):
    col = fx.hand_collected(collapsed=False)
    rng = np.random.default_rng(3)
    col.threshold_pred = rng.permutation(col.threshold_true)  # right spread, no relation
    flags = find_flags(compute_metrics(col, _train(), stats, CLASS_NAMES))
    assert any(f.startswith("threshold Pearson r =") for f in flags)
    assert any(f.startswith("threshold R² = -") for f in flags)  # a permutation: R² about -1


def test_single_task_denoiser_is_shown_beside_the_model(fx, stats, tmp_path):
    col = fx.hand_collected(collapsed=False)
    first = compute_metrics(col, _train(), stats, CLASS_NAMES)
    st = [dict(lv, model=dict(lv["model"], pearson_r=0.5)) for lv in first["denoising"]]
    m = compute_metrics(col, _train(), stats, CLASS_NAMES, single_task={"signal": st})
    report = write_report(m, tmp_path).read_text(encoding="utf-8")
    row = next(line for line in report.splitlines() if line.startswith("| 0 | 50 |"))
    assert row.endswith("| 0.500 |")


def test_summary_line_states_the_acceptance_numbers(fx, stats):
    from evaluation.evaluate import summary_line

    m = compute_metrics(fx.hand_collected(collapsed=True), _train(), stats, CLASS_NAMES)
    line = summary_line(m)
    assert "NORMAL 1.00, NÖROPATİ 0.00" in line and "denoising r at 0 dB" in line
    assert line.endswith(f"{len(m['flags'])} flags")


def test_a_split_with_one_class_is_stated(fx, stats):
    col = fx.hand_collected(collapsed=False)
    col.label[:] = 0
    col.proba = np.tile([0.9, 0.025, 0.025, 0.025, 0.025], (len(col.label), 1))
    flags = compute_metrics(col, _train(), stats, CLASS_NAMES)["flags"]
    assert "the split holds one class only (NORMAL): class metrics cannot show discrimination" in flags
    assert not any(f.startswith("class macro-F1") for f in flags)  # perfect is not "not above" a perfect baseline


def _with_patients(col, n_patients: int):
    """Patient ids on a hand-built Collected: recording i belongs to patient i % n_patients, so every
    patient holds one class (the labels cycle with period 5)."""
    col.patient_id = np.arange(len(col.label)) % n_patients
    col.series_id = np.zeros(len(col.label), dtype=np.int64)
    return col


def test_counts_and_intervals_are_over_patients(fx, stats, tmp_path):
    col = _with_patients(fx.hand_collected(n=200, collapsed=False), 40)
    m = compute_metrics(col, _train(), stats, CLASS_NAMES)
    assert m["meta"]["n_patients"] == 40 and m["meta"]["n_series"] == 40
    assert m["class"]["patients_per_class"] == [8] * 5
    lo, hi = m["threshold"]["model_ci"]["mae"]
    assert lo < m["threshold"]["model"]["mae"] < hi
    report = write_report(m, tmp_path).read_text(encoding="utf-8")
    assert "Evaluated: 200 recordings from 40 patients (40 series)." in report
    assert "[95 % interval] over the 40 patients (cluster bootstrap)" in report
    assert "| NORMAL | 40 (8) |" in report  # recordings (patients)
    # 8 patients per class: each class's recall is flagged as resting on fewer than 10 patients
    assert any(f.startswith("class SNİK (n=40 recordings, 8 patients): its recall 1.000 [1.000, 1.000] describes "
                            "fewer than 10 patients") for f in m["flags"])


def test_accuracy_below_the_majority_baseline_is_flagged(fx, stats):
    col = _with_patients(fx.hand_collected(n=200, collapsed=False), 40)
    col.label[:] = np.where(np.arange(200) % 5 < 4, 0, col.label)  # 80 % NORMAL
    wrong = col.label == 0
    col.proba[wrong] = np.tile([0.1, 0.6, 0.1, 0.1, 0.1], (int(wrong.sum()), 1))  # NORMAL half wrong
    col.proba[wrong & (np.arange(200) % 2 == 0)] = [0.6, 0.1, 0.1, 0.1, 0.1]
    m = compute_metrics(col, {"label": np.zeros(100, dtype=int), "peak_mask": np.ones(100, bool)}, stats, CLASS_NAMES)
    flag = next(f for f in m["flags"] if f.startswith("class accuracy"))
    assert flag.startswith(f"class accuracy {m['class']['model']['accuracy']:.3f} is below the majority-class "
                           f"baseline {m['class']['majority']['accuracy']:.3f} (difference -")
    assert flag.endswith("over the 40 patients (cluster bootstrap))")


def test_generation_band_below_its_baseline_is_flagged(fx, stats):
    m = compute_metrics(fx.hand_collected(collapsed=False), _train(), stats, CLASS_NAMES, n_boot=10)
    m["generation"] = {"conditions": [
        {"condition": "0-40 dB", "mean_waveform_r": 0.18, "split_mean_waveform_r": 0.52},
        {"condition": "40-70 dB", "mean_waveform_r": 0.9, "split_mean_waveform_r": 0.52}]}
    assert [f for f in find_flags(m) if f.startswith("generation")] == [
        "generation (0-40 dB): mean generated vs mean real waveform r = 0.180 is not above the split-mean "
        "baseline's 0.520 (the condition adds nothing in this band)"]


def test_header_names_data_checkpoint_and_sampler_and_puts_patients_first(fx, stats, tmp_path):
    col = _with_patients(fx.hand_collected(n=200, collapsed=False), 40)
    m = compute_metrics(col, _train(), stats, CLASS_NAMES)
    m["meta"] |= {"data": "synthetic (generator seed 0, 600 patients)", "checkpoint": "best (after epoch 5, step 555)",
                  "sampler": "ddim, 50 steps, eta 0, guidance 2, 32 signals per condition"}
    report = write_report(m, tmp_path, sections=["## Per patient (40 series)", ""]).read_text(encoding="utf-8")
    assert "- data: synthetic (generator seed 0, 600 patients)" in report
    assert "- checkpoint: best (after epoch 5, step 555)" in report
    assert "- sampler: ddim, 50 steps, eta 0, guidance 2" in report
    assert report.index("## Flags") < report.index("## Per patient") < report.index("## Per recording") \
        < report.index("## Class")
