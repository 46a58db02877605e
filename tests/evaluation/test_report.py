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
    assert "| macro-F1 | 1.000 | 0.067 | 0.250 |" in report


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
