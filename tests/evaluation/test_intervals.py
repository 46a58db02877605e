"""Intervals over patients: the weighted metrics equal evaluation.metrics at unit weights, a patient's
recordings move together, and the report shows them (issue 29, point 3)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from evaluation import intervals as I
from evaluation import metrics as M


def _data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    y[:5] = np.arange(5)
    proba = rng.dirichlet(np.ones(5), n)
    proba[np.arange(n), y] += rng.uniform(0, 1, n)
    proba = np.round(proba / proba.sum(axis=1, keepdims=True), 2)  # ties, as real scores have
    return y, proba


def test_unit_weights_give_the_metrics_of_evaluation_metrics():
    y, proba = _data()
    W = np.ones((1, len(y)))
    pred = proba.argmax(axis=1)
    ref = M.class_metrics(y, pred, proba, 5)
    got = I.class_draws(y, pred, proba, 5, W)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc"):
        assert got[key][0] == pytest.approx(ref[key], abs=1e-12), key
    for key in ("precision", "recall", "auroc_per_class"):
        np.testing.assert_allclose(got[key][0], ref[key], atol=1e-12)
    mask, prob = y > 1, proba[:, 0]
    ref_b, got_b = M.binary_metrics(mask, prob), I.binary_draws(mask, prob, W)
    for key in ("f1", "auroc", "accuracy", "positive_rate_pred", "positive_rate_true"):
        assert got_b[key][0] == pytest.approx(ref_b[key], abs=1e-12), key
    t, tp = proba[:, 1] * 90, proba[:, 1] * 80 + proba[:, 2] * 20
    ref_r, got_r = M.regression_metrics(t, tp), I.regression_draws(t, tp, W)
    for key in ("mae", "rmse", "pearson_r", "r2", "pred_std", "true_std"):
        assert got_r[key][0] == pytest.approx(ref_r[key], abs=1e-9), key


def test_a_weight_of_two_counts_a_recording_twice():
    y, proba = _data(60)
    W = np.ones((1, 60))
    W[0, :10] = 2.0
    rows = np.r_[np.arange(60), np.arange(10)]
    pred = proba.argmax(axis=1)
    ref = M.class_metrics(y[rows], pred[rows], proba[rows], 5)
    assert I.class_draws(y, pred, proba, 5, W)["macro_auroc"][0] == pytest.approx(ref["macro_auroc"], abs=1e-12)


def test_resamples_draw_whole_patients():
    pid = np.repeat(np.arange(4), 5)  # 4 patients of 5 recordings
    W = I.resample_weights(pid, 20, n_boot=50, seed=1)
    assert W.shape == (50, 20)
    assert (W.reshape(50, 4, 5) == W.reshape(50, 4, 5)[:, :, :1]).all()  # a patient's recordings move together
    assert (W.sum(axis=1) == 20).all()  # 4 patients drawn, 5 recordings each


def test_intervals_over_patients_are_wider_than_over_recordings():
    """60 patients of 25 recordings whose correctness is shared within a patient: resampling
    recordings (the old, implicit independence) would give a far narrower interval."""
    rng = np.random.default_rng(0)
    pid = np.repeat(np.arange(60), 25)
    correct = np.repeat(rng.uniform(size=60) < 0.8, 25)
    y = np.zeros(len(pid), dtype=int)
    pred = np.where(correct, 0, 1)
    per_patient = I.interval(I.class_draws(y, pred, np.eye(5)[pred], 5, I.resample_weights(pid, len(y)))["accuracy"])
    per_recording = I.interval(I.class_draws(y, pred, np.eye(5)[pred], 5, I.resample_weights(None, len(y)))["accuracy"])
    assert per_patient[1] - per_patient[0] > 3 * (per_recording[1] - per_recording[0])


def test_a_split_of_the_quickstart_size_takes_seconds():
    rng = np.random.default_rng(0)
    n = 1500
    pid = np.repeat(np.arange(60), 25)
    y, proba = _data(n)
    t0 = time.perf_counter()
    W = I.resample_weights(pid, n)
    I.class_draws(y, proba.argmax(axis=1), proba, 5, W)
    I.binary_draws(y > 1, proba[:, 0], W)
    I.regression_draws(rng.normal(size=n), rng.normal(size=n), W)
    assert time.perf_counter() - t0 < 60  # about 1 s on an idle core; sklearn per resample took minutes


def test_cell_formats_value_and_interval():
    assert I.cell(0.785, [0.74, 0.823]) == "0.785 [0.740, 0.823]"
    assert I.cell(0.785, None) == "0.785"
    assert I.cell(float("nan"), [float("nan"), float("nan")]) == "n/a"
