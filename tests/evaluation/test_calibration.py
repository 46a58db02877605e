"""Calibration (evaluation/calibration.py): temperature fit, ECE, reliability, interval coverage."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.calibration import (
    Calibration,
    Raw,
    calibrated,
    covered,
    ece,
    fit_temperature,
    interval_from_proba,
    reliability,
    softmax_t,
)


def draw(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n 5) and labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 5))
    p = softmax_t(logits, 1.0)
    y = (p.cumsum(1) < rng.random((n, 1))).sum(1)
    return logits, np.minimum(y, 4)


def test_temperature_recovers_the_overconfidence_factor():
    logits, y = draw(20_000)
    assert fit_temperature(3.0 * logits, y) == pytest.approx(3.0, rel=0.08)
    assert fit_temperature(logits, y) == pytest.approx(1.0, rel=0.08)


def test_ece_small_when_calibrated_large_when_overconfident_and_a_pinned_value():
    logits, y = draw(20_000)
    assert ece(softmax_t(logits, 1.0), y) < 0.02
    assert ece(softmax_t(3.0 * logits, 1.0), y) > 0.1
    # pinned: 4 rows at confidence 0.9 (3 right) and 2 at 0.6 (both right):
    # |0.75 - 0.9| * 4/6 + |1 - 0.6| * 2/6 = 0.1 + 0.1333
    p = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    y2 = np.array([0, 0, 0, 1, 0, 0])
    assert ece(p, y2) == pytest.approx(0.1 + 0.4 / 3)
    r = reliability(p, y2)
    assert r["count"].sum() == 6 and r["count"][13] == 4  # 0.9 lies in (13/15, 14/15]


def test_temperature_keeps_every_argmax():
    logits, _ = draw(500)
    raw = Raw(softmax_t(logits, 1.0), logits, logits, None)
    c = calibrated(raw, Calibration(recording=2.5, evidence_sum=7.0, series_model=0.5))
    for a, b in ((c.recording, raw.recording), (c.evidence_sum, logits), (c.series_model, logits)):
        assert (a.argmax(1) == b.argmax(1)).all()


def test_interval_and_coverage_on_the_grid():
    proba = np.zeros((2, 22))
    proba[0, [6, 7, 8]] = [0.2, 0.6, 0.2]  # 30, 35, 40 dB
    proba[1, 21] = 1.0  # no response
    low, high = interval_from_proba(proba)
    np.testing.assert_array_equal(low, [30, 105])
    np.testing.assert_array_equal(high, [40, 105])
    np.testing.assert_array_equal(covered(np.array([41.0, 105.0]), low, high), [True, True])  # 41 rounds to 40
    np.testing.assert_array_equal(covered(np.array([45.0, 100.0]), low, high), [False, False])


def test_file_round_trip(tmp_path):
    cal = Calibration(recording=1.5, evidence_sum=9.0, series_model=1.1, threshold=0.9, n_val_recordings=3)
    cal.save(tmp_path)
    assert Calibration.load(tmp_path) == cal
    (tmp_path / "calibration.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="not a calibration of this code"):
        Calibration.load(tmp_path)


def test_interval_temperature_meets_the_nominal_coverage_where_the_nll_one_is_too_wide():
    """Distributions smoothed like the series model's (a Gaussian twice as wide as each series' own error,
    which varies from 0.3 to 3 bins): the 10-90 % interval at T = 1 holds the truth nearly always; the
    fitted T brings the coverage on the same series to 80 % within the grid's steps, and on fresh series
    of the same kind too."""
    from evaluation.calibration import fit_interval_temperature

    rng = np.random.default_rng(0)

    def series(n):
        truth, sd = rng.integers(2, 18, n), rng.uniform(0.3, 3.0, n)  # bins
        guess = truth + rng.normal(0.0, 1.0, n) * sd
        logits = -0.5 * ((np.arange(22)[None] - guess[:, None]) / (2 * sd[:, None])) ** 2  # (S 22)
        return logits, truth * 5.0

    logits, truth_db = series(4000)
    wide = covered(truth_db, *interval_from_proba(softmax_t(logits, 1.0))).mean()
    T = fit_interval_temperature(logits, truth_db)
    fitted = covered(truth_db, *interval_from_proba(softmax_t(logits, T))).mean()
    assert wide > 0.95 and T < 1.0 and abs(fitted - 0.8) < 0.05
    logits2, truth2 = series(4000)
    assert abs(covered(truth2, *interval_from_proba(softmax_t(logits2, T))).mean() - 0.8) < 0.06
    with pytest.raises(ValueError, match="expected labelled validation series"):
        fit_interval_temperature(logits[:0], truth_db[:0])


def test_temperature_and_biases_undo_class_weights_and_overconfidence():
    """A head trained with class weights w answers p ∝ w p_true (and here 2x too sharp): the fit finds T = 2
    and biases -log w (relative to the first class), and the answers come back calibrated."""
    from evaluation.calibration import fit_temperature_bias

    logits, y = draw(40_000, seed=1)
    w = np.array([1.0, 4.0, 0.5, 2.0, 8.0])
    temp, bias = fit_temperature_bias(2.0 * (logits + np.log(w)), y)
    assert temp == pytest.approx(2.0, rel=0.05)
    np.testing.assert_allclose(bias, -np.log(w / w[0]), atol=0.08)
    skewed = softmax_t(2.0 * (logits + np.log(w)), 1.0)
    cal = Calibration(recording=temp, recording_bias=bias.tolist())
    fixed = calibrated(Raw(skewed, logits, None, None), cal).recording
    assert ece(skewed, y) > 0.05 and ece(fixed, y) < 0.015
    assert (fixed.argmax(1) != skewed.argmax(1)).any()  # unlike a temperature, biases may move the argmax


def test_a_fit_saved_before_the_biases_applies_none(tmp_path):
    import json

    cal = Calibration(recording=1.5, recording_bias=[0.0, 1.0, 0.0, 0.0, 0.0])
    cal.save(tmp_path)
    assert Calibration.load(tmp_path) == cal
    raw = json.loads((tmp_path / "calibration.json").read_text(encoding="utf-8"))
    del raw["recording_bias"]
    (tmp_path / "calibration.json").write_text(json.dumps(raw), encoding="utf-8")
    old = Calibration.load(tmp_path)
    logits, _ = draw(50)
    p = softmax_t(logits, 1.0)
    np.testing.assert_allclose(calibrated(Raw(p, logits, None, None), old).recording, softmax_t(np.log(p), 1.5))


def test_catch_sessions_are_left_out_of_the_calibration():
    """Catch sessions (data.synthetic 1.7: series id not the patient's) whose rows all say TOTAL with
    certainty would pull the TOTAL bias up; with catch_sessions=True the fit is the one without them."""
    from data.synthetic import catch_session_rows, generate
    from evaluation.calibration import fit_calibration
    from training.series import Evidence

    rec = generate(30, 0, catch_fraction=0.5)
    catch = catch_session_rows(rec.series_id, rec.patient_id)
    assert catch.any() and (rec.label[catch] == 3).all() and not rec.peak_mask[catch].any()  # TOTAL, no wave
    assert not catch[: int(np.flatnonzero(catch)[0])].any()  # appended after every real recording
    n = len(rec)
    logits, _ = draw(n, seed=2)
    proba = softmax_t(logits, 1.0)
    proba[catch] = np.eye(5)[3] * 0.999 + 0.001 / 5
    z = np.zeros(n, dtype=np.float32)
    ev = Evidence(np.zeros((n, 1), np.float32), proba, z, z, z, z, rec.static, rec.series_id, rec.patient_id,
                  truth={"label": rec.label, "threshold": rec.threshold})
    left_out = fit_calibration(ev, None, catch_sessions=True)
    assert left_out.recording_bias == fit_calibration(ev.take(np.flatnonzero(~catch)), None).recording_bias
    assert left_out.recording_bias != fit_calibration(ev, None).recording_bias
    assert left_out.n_val_recordings == int((~catch).sum())
