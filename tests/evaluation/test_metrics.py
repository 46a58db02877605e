"""Each metric on hand-made inputs whose answer is worked out in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import metrics as M


def test_class_metrics_known_answers():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    m = M.class_metrics(y_true, y_pred, None, 5)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # recalls 1/2, 2/2, 0/1 over the classes present in y_true
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0), 0.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["precision"][:2] == pytest.approx([1 / 2, 2 / 3])
    assert all(math.isnan(p) for p in m["precision"][2:])  # never predicted: undefined, not 0
    assert m["recall"][:3] == pytest.approx([0.5, 1.0, 0.0])
    assert math.isnan(m["recall"][3])
    assert m["confusion_matrix"][:3] == [[1, 1, 0, 0, 0], [0, 2, 0, 0, 0], [1, 0, 0, 0, 0]]
    assert m["pred_histogram"] == [2, 3, 0, 0, 0]
    assert m["pred_fraction"] == pytest.approx([0.4, 0.6, 0, 0, 0])
    assert m["support"] == [2, 2, 1, 0, 0]


def test_macro_auroc_skips_classes_absent_from_y_true():
    y_true = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1, 0, 0, 0], [0.6, 0.4, 0, 0, 0], [0.3, 0.7, 0, 0, 0], [0.5, 0.5, 0, 0, 0]])
    m = M.macro_auroc_ovr(y_true, proba, 5)
    # class 0: scores of positives (.9, .6) above both negatives (.3, .5): 1.0; class 1 the mirror: 1.0
    assert m["auroc_per_class"][:2] == pytest.approx([1.0, 1.0])
    assert m["auroc_skipped"] == [2, 3, 4]
    assert m["macro_auroc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"expected proba of shape \(4, 5\), found \(4, 3\)"):
        M.macro_auroc_ovr(y_true, proba[:, :3], 5)


def test_majority_class_baseline_is_fitted_on_train():
    majority, freq = M.majority_class_baseline(np.array([2, 2, 2, 0]), 5)
    assert majority == 2
    assert freq.tolist() == pytest.approx([0.25, 0, 0.75, 0, 0])
    m = M.class_baseline_metrics(np.array([2, 2, 2, 0]), np.array([0, 1, 2, 2]), 5)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["pred_fraction"][2] == 1.0
    assert m["macro_auroc"] == pytest.approx(0.5)  # constant scores rank nothing


def test_binary_metrics_known_answers():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.1])
    m = M.binary_metrics(y, p)
    # predictions 1,0,1,0: TP 1, FP 1, FN 1 -> precision = recall = 1/2
    assert m["f1"] == pytest.approx(0.5)
    # 3 of the 4 (positive, negative) pairs are ordered correctly
    assert m["auroc"] == pytest.approx(3 / 4)
    assert m["positive_rate_pred"] == 0.5
    base = M.binary_baseline_metrics(np.array([1, 1, 1, 0]), y)
    assert base["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)  # always "present": precision 1/2, recall 1
    assert base["auroc"] == pytest.approx(0.5)
    assert math.isnan(M.binary_metrics(np.ones(3), np.array([0.2, 0.5, 0.9]))["auroc"])


def test_regression_metrics_known_answers():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    yhat = np.array([2.0, 2.0, 3.0, 5.0])
    m = M.regression_metrics(y, yhat)
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(2 / 4))
    ss_tot = np.sum((y - y.mean()) ** 2)  # 5
    assert m["r2"] == pytest.approx(1 - 2 / ss_tot)
    dy, dh = y - y.mean(), yhat - yhat.mean()
    assert m["pearson_r"] == pytest.approx(np.sum(dy * dh) / np.sqrt(np.sum(dy**2) * np.sum(dh**2)))
    assert m["pred_std"] == pytest.approx(np.std(yhat))


def test_mean_baseline_and_constant_predictor():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = M.mean_baseline_metrics(2.5, y)
    assert m["r2"] == pytest.approx(0.0)
    assert m["mae"] == pytest.approx(1.0)
    assert math.isnan(m["pearson_r"])  # a constant has no correlation
    assert m["pred_std"] == 0.0
    worse = M.mean_baseline_metrics(10.0, y)  # a train mean far from this split's
    assert worse["r2"] < 0


def test_signal_metrics_snr_gain():
    rng = np.random.default_rng(0)
    clean = np.sin(np.linspace(0, 6 * np.pi, 200))[None].repeat(3, 0)
    e = rng.standard_normal(clean.shape)
    m = M.signal_metrics(clean, clean + 0.1 * e, noisy=clean + 0.2 * e)
    p_err = np.sum((0.1 * e) ** 2, axis=1)
    assert m["snr_db"] == pytest.approx(np.mean(10 * np.log10(np.sum(clean**2, axis=1) / p_err)))
    assert m["snr_gain_db"] == pytest.approx(10 * math.log10(4))  # half the error amplitude: 6.02 dB
    assert m["mse"] == pytest.approx(np.mean((0.1 * e) ** 2))
    assert M.signal_metrics(clean, 2 * clean)["pearson_r"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="expected clean and estimate of one shape"):
        M.signal_metrics(clean, clean[:, :10])


def test_peak_picker_finds_wave_v_inside_its_window(fx):
    x = fx.bump([6.0, 7.5]) + 2.0 * fx.bump([2.0, 2.0])  # a larger wave I outside the window
    assert M.pick_wave_v_latency(x).tolist() == pytest.approx([6.0, 7.5])
    with pytest.raises(ValueError, match="expected window_ms inside the recording"):
        M.pick_wave_v_latency(x, window_ms=(20.0, 30.0))


def test_spectral_distance():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 200))
    assert M.spectral_distance_db(a, a) == pytest.approx(0.0)
    assert M.spectral_distance_db(2 * a, a) == pytest.approx(10 * math.log10(4))  # every bin 4x the power


def test_delta_m_percent_hand_numbers():
    # class F1 0.5 -> 0.8 (+60 %), latency MAE 4 -> 2 (lower is better: +50 %)
    assert M.delta_m_percent([0.8, 2.0], [0.5, 4.0], [True, False]) == pytest.approx(55.0)
    # worse on both: -20 % and -25 %
    assert M.delta_m_percent([0.4, 5.0], [0.5, 4.0], [True, False]) == pytest.approx(-22.5)
    # a negative baseline (R² -0.1 -> 0.2) is an improvement: relative to |B|
    assert M.delta_m_percent([0.2], [-0.1], [True]) == pytest.approx(300.0)
    with pytest.raises(ValueError, match="a non-zero baseline"):
        M.delta_m_percent([1.0], [0.0], [True])
    with pytest.raises(ValueError, match="expected equal non-empty lengths"):
        M.delta_m_percent([1.0], [1.0, 2.0], [True])
