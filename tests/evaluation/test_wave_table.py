"""The per-wave section of the per-patient report (evaluation/patient.py) from a hand-made Evidence."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.patient import wave_table
from training.clinical import Estimate
from training.series import Evidence, per_wave_metrics


def evidence(waves: bool) -> Evidence:
    n = 6
    present = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0]], bool)  # (N 3)
    lat = np.where(present, np.array([1.6, 3.8, 5.9]), 0.0)
    amp = np.where(present, 0.2, 0.0)
    truth = {"label": np.zeros(n, int), "threshold": np.full(n, 20.0), "peak_mask": present[:, 2],
             "peak_latency": lat[:, 2], "wave_known": np.ones((n, 3), bool), "wave_mask": present,
             "wave_latency": lat, "wave_amplitude": amp}
    pred_lat = lat + np.array([0.05, 0.05, 0.3])  # waves I, III within 0.1 ms; V off by 0.3 ms
    ev = Evidence(evidence=np.zeros((n, 2), np.float32), proba=np.full((n, 5), 0.2), peak_prob=present[:, 2] * 0.9,
                  latency=pred_lat[:, 2], amplitude=amp[:, 2] + 0.01, threshold=np.full(n, 20.0),
                  static=np.stack([np.zeros(n), np.arange(n) * 10.0, np.full(n, 21.1), np.ones(n)], 1),
                  series_id=np.array([0, 0, 0, 1, 1, 1]), patient_id=np.array([0, 0, 0, 1, 1, 1]), truth=truth)
    if waves:
        ev.waves = {"prob": present * 0.9, "latency": pred_lat, "amplitude": amp + 0.01}
    return ev


def test_map_head_evidence_gives_three_waves():
    m = per_wave_metrics(evidence(True), n_boot=0)
    assert list(m) == ["I", "III", "V"]
    assert m["I"]["latency_within_0.1ms"].value == 1.0 and m["V"]["latency_within_0.1ms"].value == 0.0
    assert m["V"]["n_marked"] == 4 and m["I"]["detection_f1"].value == 1.0
    assert m["III"]["amplitude_mae_uv"].value == pytest.approx(0.01)
    lines = wave_table(m, lambda e: f"{e.value:.2f}" if isinstance(e, Estimate) else str(e))
    assert "| metric | wave I | wave III | wave V |" in lines
    assert "| latency_within_0.1ms | 1.00 | 1.00 | 0.00 |" in lines


def test_pooled_head_evidence_gives_wave_v_only():
    m = per_wave_metrics(evidence(False), n_boot=0)
    assert list(m) == ["V"] and m["V"]["latency_within_0.2ms"].value == 0.0
