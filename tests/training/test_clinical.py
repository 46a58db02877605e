"""Series-level metrics and the rule, against values computed by hand here."""

from __future__ import annotations

import numpy as np
import pytest

from training.clinical import (
    N_THRESHOLD_BINS,
    NO_RESPONSE_DB,
    bootstrap,
    evidence_types,
    from_bin,
    head_mean_thresholds,
    jackknife,
    latency_intensity_slopes,
    latency_trend,
    rule_threshold,
    rule_thresholds,
    series_index,
    series_truth,
    threshold_metrics,
    to_bin,
    type_metrics,
    waterfall_latency,
    waterfall_presence,
    wave_metrics,
    wave_v_metrics,
)


def test_series_group_by_id_and_order_by_intensity():
    sid = np.array([7, 3, 7, 3, 7])
    level = np.array([60.0, 20.0, 40.0, 80.0, 50.0])
    s = series_index(sid, level)
    assert s.ids.tolist() == [3, 7]
    assert [m.tolist() for m in s.members] == [[1, 3], [2, 4, 0]]


def test_grid_bins_and_no_response():
    assert N_THRESHOLD_BINS == 22 and NO_RESPONSE_DB == 105.0
    assert to_bin([0, 5, 12, 100, 105, 130]).tolist() == [0, 1, 2, 20, 21, 21]
    assert from_bin([0, 21]).tolist() == [0.0, 105.0]


@pytest.mark.parametrize(
    "detected, expected",
    [
        ([0, 0, 1, 1, 1], 40.0),  # the lowest detected level with every louder one detected
        ([1, 0, 1, 1, 1], 40.0),  # a lone detection at 20 dB: only 3 of 4 louder are detected (< 0.9)
        ([0, 0, 0, 0, 0], NO_RESPONSE_DB),
        ([0, 0, 0, 0, 1], 60.0),
    ],
)
def test_rule_threshold_by_hand(detected, expected):
    assert rule_threshold(np.array([20.0, 30, 40, 50, 60]), np.array(detected, bool)) == expected


def test_rule_consistency_is_a_share_of_louder_recordings():
    level = np.array([10.0, 20, 30, 40, 50, 60, 70, 80, 90, 100, 100])
    det = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1], bool)  # one miss among 10 from 20 dB: 90 %
    assert rule_threshold(level, det, consistency=0.9) == 20.0
    # 95 %: from 20 dB 9/10, from 90 dB 2/3, at 100 dB 1/2 of the louder ones: no level qualifies
    assert rule_threshold(level, det, consistency=0.95) == NO_RESPONSE_DB


def test_rule_over_probabilities_per_series():
    sid = np.array([1, 1, 1, 2, 2])
    level = np.array([30.0, 50, 70, 30, 70])
    p = np.array([0.2, 0.7, 0.9, 0.1, 0.3])
    assert rule_thresholds(series_index(sid, level), level, p).tolist() == [50.0, NO_RESPONSE_DB]


def test_threshold_metrics_by_hand():
    true = np.array([10.0, 20, 105, 50])
    pred = np.array([10.0, 30, 100, 65])  # errors 0, 10, 5, 15 dB
    m = threshold_metrics(true, pred, n_boot=200)
    assert m["mae_db"].value == pytest.approx(7.5)
    assert m["exact"].value == pytest.approx(0.25)
    assert m["within_5db"].value == pytest.approx(0.5)
    assert m["within_10db"].value == pytest.approx(0.75)
    assert m["no_response_sensitivity"].value == 0.0  # the one no-response series was called 100 dB
    assert m["no_response_specificity"].value == 1.0
    assert m["mae_db"].low <= 7.5 <= m["mae_db"].high
    assert 0.0 <= m["within_5db"].low < m["within_5db"].high <= 1.0


def test_type_metrics_by_hand():
    true = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 0, 2])
    m = type_metrics(true, pred, n_classes=5, n_boot=100)
    # class 0: P 2/3 R 2/3 F1 2/3; class 1: P 1/2 R 1/2 F1 1/2; class 2: F1 1 -> macro (over present) 13/18
    assert m["macro_f1"].value == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["balanced_accuracy"].value == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["recall"][1].value == pytest.approx(0.5)
    assert m["support"] == {0: 3, 1: 2, 2: 1}
    assert m["confusion"][0][:3] == [2, 1, 0] and np.array(m["confusion"]).sum() == 6


def test_wave_v_metrics_by_hand():
    s = series_index(np.array([1, 1, 2, 2]), np.array([40.0, 80, 40, 80]))
    mask = np.array([True, True, False, True])
    prob = np.array([0.9, 0.4, 0.2, 0.8])  # TP, FN, TN, TP -> F1 = 2*2/(2*2+1) = 0.8
    lat_true = np.array([7.0, 6.0, 0.0, 6.5])
    lat_pred = np.array([7.05, 6.3, 9.0, 6.65])  # errors 0.05, 0.3, -, 0.15
    m = wave_v_metrics(s, mask, prob, lat_true, lat_pred, n_boot=50)
    assert m["detection_f1"].value == pytest.approx(0.8)
    assert m["latency_within_0.1ms"].value == pytest.approx(1 / 3)
    assert m["latency_within_0.2ms"].value == pytest.approx(2 / 3)


def test_wave_metrics_by_hand():
    """Latency and amplitude over the peaks marked inside the window only (a mark at or beyond
    MARK_LIMIT_MS = 9.6 ms has no sample to be read at); detection over every recording."""
    s = series_index(np.array([1, 1, 2, 2, 2]), np.array([40.0, 80, 40, 60, 80]))
    present = np.array([True, True, False, True, True])
    prob = np.array([0.9, 0.4, 0.2, 0.8, 0.7])  # TP, FN, TN, TP, TP -> F1 = 2*3/(2*3+1)
    lat_true = np.array([7.0, 6.0, 0.0, 6.5, 9.8])  # the last is beyond the window
    lat_pred = np.array([7.05, 6.3, 9.0, 6.65, 5.0])  # errors 0.05, 0.3, -, 0.15, (not scored)
    amp_true, amp_pred = np.array([0.2, 0.3, 0.0, 0.1, 0.5]), np.array([0.25, 0.3, 0.9, 0.0, 9.0])
    m = wave_metrics(s, present, prob, lat_true, lat_pred, amp_true, amp_pred, n_boot=50)
    assert m["detection_f1"].value == pytest.approx(6 / 7)
    assert m["n_marked"] == 3
    assert m["latency_within_0.1ms"].value == pytest.approx(1 / 3)
    assert m["latency_within_0.2ms"].value == pytest.approx(2 / 3)
    assert m["amplitude_mae_uv"].value == pytest.approx((0.05 + 0.0 + 0.1) / 3)
    r = np.corrcoef([7.0, 6.0, 6.5], [7.05, 6.3, 6.65])[0, 1]  # over the three scored peaks
    assert m["latency_r"].value == pytest.approx(r)


def test_latency_intensity_slopes_by_hand():
    s = series_index(np.array([1, 1, 1, 2, 2]), np.array([40.0, 60, 80, 40, 80]))
    level = np.array([40.0, 60, 80, 40, 80])
    lat = np.array([7.0, 6.4, 5.8, 8.0, 6.0])
    slopes = latency_intensity_slopes(s, level, lat, np.array([True, True, True, True, False]))
    assert slopes[0] == pytest.approx(-0.03) and np.isnan(slopes[1])  # series 2: one detected level


def test_waterfall_presence_is_monotone_in_level_per_series():
    level = np.array([20.0, 40, 60, 80, 20, 60, 30])
    sid = np.array([1, 1, 1, 1, 2, 2, 3])
    prob = np.array([0.2, 0.9, 0.3, 0.95, 0.6, 0.1, 0.7])
    q = waterfall_presence(series_index(sid, level), level, prob)
    # series 1: 0.9 at 40 dB and 0.3 at 60 dB pool to 0.6 each; series 2 pools to 0.35; series 3 (one level) stays
    np.testing.assert_allclose(q, [0.2, 0.6, 0.6, 0.95, 0.35, 0.35, 0.7])
    assert prob[2] == 0.3  # the input is not changed in place


def test_latency_trend_fits_the_function_and_ignores_a_wrong_peak():
    level = np.arange(20.0, 101.0, 10.0)  # 9 levels
    true = 8.0 - 0.03 * level + 0.0001 * level**2
    lat = true.copy()
    lat[4] += 0.9  # one wrong peak (the next wave), off by 0.9 ms
    trend = latency_trend(level, lat)
    np.testing.assert_allclose(trend(level), true, atol=1e-9)
    assert latency_trend(level[:2], lat[:2]) is None  # fewer than 3 recordings: no function


def test_waterfall_latency_takes_the_candidate_that_fits_the_series():
    """Eight recordings of one series whose map prefers the right peak, and one (60 dB) whose map prefers
    a peak 0.8 ms late by a little: read down the waterfall, it takes its second candidate, 0.05 ms from
    the series' function; a series with too few clear recordings keeps the network's answers."""
    level = np.arange(20.0, 101.0, 10.0)
    true = 8.0 - 0.03 * level
    cand = np.stack([true, true + 0.8], axis=1)  # (9 2): the right peak first
    logp = np.tile([-0.5, -1.5], (9, 1))
    cand[4] = [true[4] + 0.8, true[4] + 0.05]  # at 60 dB the map's first choice is the late peak
    logp[4] = [-0.6, -0.9]
    amp = np.tile([0.3, 0.1], (9, 1))
    prob = np.full(9, 0.95)
    series = series_index(np.zeros(9, np.int64), level)
    lat, got_amp = waterfall_latency(series, level, prob, cand, amp, logp)
    np.testing.assert_allclose(lat, np.r_[true[:4], true[4] + 0.05, true[5:]])
    assert got_amp[4] == 0.1 and got_amp[0] == 0.3
    unclear = np.full(9, 0.6)  # below the trend's presence floor: no function, candidate 0 everywhere
    np.testing.assert_array_equal(waterfall_latency(series, level, unclear, cand, amp, logp)[0], cand[:, 0])


def test_baselines_by_hand():
    s = series_index(np.array([1, 1, 2]), np.array([40.0, 60, 50]))
    assert head_mean_thresholds(s, np.array([21.0, 31.0, 47.0])).tolist() == [25.0, 45.0]
    proba = np.array([[0.6, 0.4], [0.45, 0.55], [0.1, 0.9]])  # series 1: log .6+log .45 > log .4+log .55
    assert evidence_types(s, proba).tolist() == [0, 1]


def test_series_truth_refuses_mixed_series():
    s = series_index(np.array([1, 1]), np.array([40.0, 60]))
    with pytest.raises(ValueError, match="series 1: expected one threshold and one type"):
        series_truth(s, np.array([20.0, 30.0]), np.array([0, 0]))


def test_bootstrap_interval_brackets_a_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=20), rng.normal(size=2000)
    a = bootstrap(lambda i: small[i].mean(), 20, n_boot=500)
    b = bootstrap(lambda i: large[i].mean(), 2000, n_boot=500)
    assert a.low < a.value < a.high and b.low < b.value < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5  # ~ 1/sqrt(n): 10x narrower
    none = bootstrap(lambda i: 1.0, 3, n_boot=0)
    assert none.value == 1.0 and np.isnan(none.low)


def test_jackknife_se_of_a_mean_is_the_standard_error():
    # for the mean, the delete-one jackknife SE equals s / sqrt(n) exactly (Efron & Tibshirani 1993, 11.5)
    x = np.random.default_rng(1).normal(size=50)
    e = jackknife(lambda i: x[i].mean(), 50)
    se = x.std(ddof=1) / np.sqrt(50)
    assert e.value == pytest.approx(x.mean())
    assert (e.low, e.high) == pytest.approx((x.mean() - 1.96 * se, x.mean() + 1.96 * se))
    assert np.isnan(jackknife(lambda i: 1.0, 1).low)
