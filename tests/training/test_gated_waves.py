"""training.series.gated_waves: each recording's own reading of the waves, kept only in a series with a response."""

from __future__ import annotations

import numpy as np

from training.clinical import NO_RESPONSE_DB
from training.series import Evidence, gated_waves, responding


def evidence(waves: bool) -> Evidence:
    """Two series of three recordings each (series 7 listed first in the rows, then series 3)."""
    n = 6
    rng = np.random.default_rng(0)
    static = np.stack([np.full(n, 30.0), [80.0, 60.0, 40.0, 20.0, 70.0, 50.0], np.full(n, 21.1), np.full(n, 2.0)], 1)
    prob = np.array([0.9, 0.7, 0.2, 0.6, 0.8, 0.1])
    ev = Evidence(evidence=np.zeros((n, 4), np.float32), proba=np.full((n, 5), 0.2), peak_prob=prob,
                  latency=rng.uniform(5.5, 8.0, n), amplitude=rng.uniform(0.1, 0.5, n), threshold=np.full(n, 30.0),
                  static=static, series_id=np.array([7, 7, 7, 3, 3, 3]), patient_id=np.array([1, 1, 1, 2, 2, 2]))
    if waves:
        w = np.stack([prob * 0.5, prob * 0.8, prob], 1)  # (N 3) I, III, V
        ev.waves = {"prob": w, "latency": np.stack([ev.latency - 4, ev.latency - 2, ev.latency], 1),
                    "amplitude": np.stack([ev.amplitude] * 3, 1)}
    return ev


def test_no_wave_survives_in_a_series_answered_no_response():
    ev = evidence(waves=True)
    # series_index orders series by id: series 3 first (rows 3-5), then series 7 (rows 0-2)
    threshold = np.array([NO_RESPONSE_DB, 30.0])
    assert responding(ev, threshold).tolist() == [True, True, True, False, False, False]
    got = gated_waves(ev, threshold)
    np.testing.assert_array_equal(got["prob"][:3], ev.waves["prob"][:3])  # the responding series: untouched
    np.testing.assert_array_equal(got["prob"][3:], 0.0)  # every wave of the silent series absent
    np.testing.assert_array_equal(got["latency"], ev.waves["latency"])
    assert ev.waves["prob"][3:].max() > 0.5  # the input itself was not changed in place


def test_the_pooled_head_gates_wave_v_and_leaves_i_and_iii_unread():
    ev = evidence(waves=False)
    got = gated_waves(ev, np.array([40.0, NO_RESPONSE_DB]))
    assert np.isnan(got["prob"][:, :2]).all()
    np.testing.assert_array_equal(got["prob"][:, 2], [0.0, 0.0, 0.0, 0.6, 0.8, 0.1])
    np.testing.assert_array_equal(got["latency"][:, 2], ev.latency)
