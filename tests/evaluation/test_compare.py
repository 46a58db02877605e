"""compare_runs() on two fake run directories written here."""

from __future__ import annotations

import json
import math

import pytest

from evaluation.compare import compare_runs, headline_metrics, main
from evaluation.runlog import read_run


def _eval_block():
    return {
        "class": {"model": {"macro_f1": 0.7, "balanced_accuracy": 0.6}},
        "peak_exist": {"model": {"f1": 0.9}},
        "threshold": {"model": {"mae": 5.0, "r2": 0.8}},
        "denoising": [{"snr_db": 10.0, "model": {"pearson_r": 0.99}}, {"snr_db": 0.0, "model": {"pearson_r": 0.95}}],
        "flags": ["class NÖROPATİ (n=3): recall 0, never predicted correctly"],
    }


def test_read_run_skips_a_partial_last_line(fx, tmp_path):
    log = read_run(fx.write_fake_run(tmp_path / "A"))
    assert log.skipped_lines == 1
    assert log.weight_keys() == [f"train/weight_{i}" for i in range(6)]
    assert log.weight_labels()["train/weight_5"] == "threshold"
    steps, values = log.series("val/signal", ("epoch",))
    assert steps == [20, 40] and values == pytest.approx([1.2 / 20, 1.2 / 40])
    with pytest.raises(ValueError, match="expected metrics.jsonl in the run directory, found none"):
        read_run(tmp_path / "missing")


def test_compare_two_runs(fx, tmp_path):
    a = fx.write_fake_run(tmp_path / "A", evaluated=_eval_block())
    b = fx.write_fake_run(tmp_path / "B", steps=60, weight_drift=0.01)
    res = compare_runs([a, b], tmp_path / "cmp")
    for name in ("comparison.md", "comparison.json", "curves.png"):
        assert (tmp_path / "cmp" / name).is_file()
    ra, rb = res["runs"]
    assert ra["final_epoch"]["val/total"] == pytest.approx(12.0 / 40)
    assert rb["final_epoch"]["val/total"] == pytest.approx(12.0 / 60)
    assert rb["final_weights"]["signal"] == pytest.approx(1.0 + 0.01 * 60)  # labelled by component
    assert ra["eval"]["class macro-F1"] == 0.7
    assert ra["eval"]["denoise r @0 dB"] == 0.95  # the level nearest 0 dB
    assert rb["eval"] is None
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "| B |" in md and "not evaluated" in md and "| 1 |" in md
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text(encoding="utf-8"))
    assert saved["runs"][0]["eval"]["latency MAE (ms)"] is None  # absent -> null, not a number


def test_headline_metrics_absent_values_are_nan():
    h = headline_metrics({})
    assert all(math.isnan(v) for v in h.values())


def test_compare_cli(fx, tmp_path, capsys):
    a = fx.write_fake_run(tmp_path / "A")
    assert main([str(a), "--out", str(tmp_path / "out")]) == 0
    assert "# Run comparison" in capsys.readouterr().out
    with pytest.raises(ValueError, match="expected at least one run directory"):
        compare_runs([], tmp_path / "x")


def test_delta_m_for_run_hand_numbers():
    from evaluation.compare import DELTA_M_METRICS, delta_m_for_run

    single = {
        "class": {DELTA_M_METRICS["class"]: 0.5},
        "threshold": {DELTA_M_METRICS["threshold"]: 10.0},
    }
    run = {DELTA_M_METRICS["class"]: 0.6, DELTA_M_METRICS["threshold"]: 12.0, DELTA_M_METRICS["signal"]: 0.9}
    # class +20 %, threshold MAE 10 -> 12 is -20 %: Δm = 0; the signal task has no single-task run
    assert delta_m_for_run(run, single) == pytest.approx(0.0)
    run[DELTA_M_METRICS["threshold"]] = 8.0  # now +20 % too
    assert delta_m_for_run(run, single) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="expected at least one single-task run"):
        delta_m_for_run(run, {})
