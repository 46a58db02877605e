"""bench/waves.py end to end on tiny runs: the network's rows per wave beside a baseline run, the
no-learning picker and the cap; the cap is what it claims to be."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import numpy as np
import torch

from bench.waves import main, nearest_maximum, pick_in_window, told_waveform
from data import waveform as wf
from data.synthetic import add_waves, generate, true_waves
from tests.progress import finished_phases
from tests.runs import tiny_config, train_run


def test_waves_bench_scores_map_and_pooled_runs(tmp_path, capsys):
    runs = {}
    for head in ("map", "pooled"):
        cfg = tiny_config(tmp_path / head, "data.synthetic.patients=30", f"model.peak_head={head}")
        runs[head] = tmp_path / head / "run"
        train_run(cfg, runs[head])
    out, doc = tmp_path / "waves.json", tmp_path / "results.md"
    assert main(["--run", str(runs["map"]), "--baseline-run", str(runs["pooled"]), "--patients", "12",
                 "--n-boot", "20", "--out", str(out), "--doc", str(doc)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["network"]["waves"]) == {"I", "III", "V"}  # the map head reads three waves
    # read down the waterfall: every row, wave V's presence from the series' threshold answer
    assert set(result["network"]["waterfall"]["V"]) == set(result["network"]["waves"]["V"])
    assert result["network"]["series_threshold"] in ("series_model", "rule")
    # gated by the series' response: detections can only be dropped, never added
    assert set(result["network"]["gated"]) == {"I", "III", "V"} and set(result["baseline"]["gated"]) == {"V"}
    assert set(result["baseline"]["waves"]) == {"V"}  # the pooled head, wave V only
    for method in ("picker", "cap", "told_waveform"):
        assert set(result["reference"][method]) == {"I", "III", "V"}
        assert "detection_f1" not in result["reference"][method]["V"]  # no presence answer
    # the cap reads the mark's nearest local maximum: it can only be at least as good as the picker
    for w in ("I", "III", "V"):
        cap, picker = result["reference"]["cap"][w], result["reference"]["picker"][w]
        assert cap["latency_within_0.2ms"]["value"] >= picker["latency_within_0.2ms"]["value"]
        assert cap["latency_within_0.1ms"]["value"] > 0.9
    text = doc.read_text(encoding="utf-8")
    assert "<!-- waves: begin -->" in text and "| latency_within_0.1ms |" in text
    printed = capsys.readouterr()
    assert "no-learning picker" in printed.out and "| latency_within_0.1ms |" in printed.out
    # issue 29: progress on stderr, a line when each step starts and one with its seconds; stdout the table alone
    steps = finished_phases(printed.err, "bench/waves.py")
    assert "generating the benchmark cohort (12 patients, seed 12345)" in steps
    assert any(step.startswith("scoring the network on ") for step in steps)
    assert f"scoring the baseline run {runs['pooled']}" in steps
    assert "fitting the no-learning picker on the training split" in steps
    assert "bench/waves.py:" not in printed.out


def test_picker_and_cap_find_a_clean_peak():
    n = 4
    x = np.zeros((n, 200), np.float32)
    lat = np.array([2.0, 4.1, 6.3, 8.55])
    wf.add_wave(x, lat, np.full(n, 0.3), np.full(n, 0.4), 3.0)
    xt = torch.from_numpy(x)
    got, amp = pick_in_window(xt, lat + 0.8, 1.5)  # the regression's guess is 0.8 ms late
    np.testing.assert_allclose(got, lat, atol=0.02)
    np.testing.assert_allclose(amp, 0.3, atol=0.01)
    near, _ = nearest_maximum(xt, lat + 0.3)
    np.testing.assert_allclose(near, lat, atol=0.02)


def test_told_waveform_reads_the_true_peaks_back_from_clean_and_noisy_recordings():
    """The cap's reader: on the clean waveform itself it finds every mark; on the generator's recordings
    (the true waves replayed by data.synthetic.true_waves) it lands most marks, and below 100 %: noise
    splits crests, which is the point of the cap."""
    rec, waves = generate(6, 3), true_waves(6, 3)
    assert len(waves.lat) == len(rec.signal)
    clean = np.zeros(rec.signal.shape, np.float32)
    add_waves(clean, waves.lat, waves.amp, waves.width)
    inside = waves.present & (waves.lat[:, 2] < 9.0)
    lat, _ = told_waveform(clean[inside], _rows(waves, inside))
    np.testing.assert_allclose(lat[:, 2], wf.mark_peak(clean[inside], waves.lat[inside, 2])[0], atol=1e-6)
    marked = rec.peak_mask & (rec.peak_latency < wf.MARK_LIMIT_MS)
    lat, _ = told_waveform(rec.signal[marked], _rows(waves, marked))
    within = np.abs(lat[:, 2] - rec.peak_latency[marked]) <= 0.1
    assert 0.6 < within.mean() < 1.0


def _rows(waves, rows):
    return replace(waves, **{f.name: getattr(waves, f.name)[rows] for f in fields(waves)})
