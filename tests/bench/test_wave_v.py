"""bench/wave_v.py's per-wave measures: waves I, III and V by one picker, shares in a range, mean-waveform
correlation (the whole bench on a trained run: tests/evaluation/test_wave_v_share.py, slow)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.wave_v import III_TO_V, IPL_MS, mean_correlation, pick_waves, wave_shares, wave_windows
from tests.runs import tiny_config

T_MS = np.arange(200) / 20.0  # sample times of a 10 ms recording at 20 kHz


def waves_at(lat_i: float, lat_iii: float, lat_v: float) -> np.ndarray:
    """A clean [1, L] signal with Gaussian waves I, III and V (0.1, 0.15, 0.3 µV) at the given latencies."""
    bump = lambda at, amp: amp * np.exp(-0.5 * ((T_MS - at) / 0.25) ** 2)  # noqa: E731
    return (bump(lat_i, 0.1) + bump(lat_iii, 0.15) + bump(lat_v, 0.3))[None]


def test_pick_waves_finds_each_wave_of_the_generators_shape():
    # an adult (IPL 4.0 ms) and a newborn (IPL 5.0 ms) at high intensity: lat_III = lat_I + 0.53 IPL
    signals = np.stack([waves_at(1.55, 1.55 + 0.53 * 4.0, 5.55), waves_at(1.75, 1.75 + 0.53 * 5.0, 6.75)])
    lat = pick_waves(signals)
    np.testing.assert_allclose(lat["V"], [5.55, 6.75], atol=0.051)
    np.testing.assert_allclose(lat["I"], [1.55, 1.75], atol=0.051)
    np.testing.assert_allclose(lat["III"], [3.67, 4.4], atol=0.051)


def test_wave_windows_follow_the_interpeak_intervals():
    w = wave_windows(7.0)
    assert w["I"] == pytest.approx((7.0 - IPL_MS[1], 7.0 - IPL_MS[0]))
    assert w["III"] == pytest.approx((7.0 - III_TO_V * IPL_MS[1], 7.0 - III_TO_V * IPL_MS[0]))
    assert wave_windows(5.0)["I"][0] == pytest.approx(0.75)  # never inside the stimulus artefact


def test_waves_picked_on_synthetic_normal_recordings_sit_where_the_generator_puts_them(tmp_path):
    from data.dataset import build_data

    cfg = tiny_config(tmp_path, "data.synthetic.patients=40")
    data = build_data(cfg.data, cfg.loss.class_weights)
    test, s = data.train.tensors, data.stats
    cond = (test["label"] == 0) & (test["static"][:, 1] >= 70)
    real = (test["signal"][cond] * s.signal_std + s.signal_mean).numpy()
    lat = pick_waves(real)
    med = {w: float(np.median(lat[w])) for w in lat}
    # generator, normal hearing >= 70 dB: V 5.5-7.5 ms, I = V - (4.0 to 5.0), III = I + 0.53 IPL
    assert 5.3 < med["V"] < 7.5 and 1.2 < med["I"] < 2.6 and 3.3 < med["III"] < 5.0, med
    iqr = {w: tuple(np.percentile(lat[w], [25, 75])) for w in lat}
    shares = wave_shares(lat, iqr)
    assert all(0.45 <= shares[w] <= 0.8 for w in ("I", "III", "V")), shares  # about half by construction
    noise = np.random.default_rng(0).normal(0, real.std(), size=(256, 1, 200))
    assert wave_shares(pick_waves(noise), iqr)["all"] < shares["all"]


def test_wave_shares_count_each_wave_and_all_three():
    lat = {"I": np.array([1.0, 2.0, 3.0, 4.0]), "III": np.array([4.0, 4.0, 9.0, 4.0]),
           "V": np.array([6.0, 6.0, 6.0, 0.0])}
    ranges = {"I": (1.5, 4.0), "III": (3.5, 4.5), "V": (5.5, 6.5)}
    assert wave_shares(lat, ranges) == {"I": 0.75, "III": 0.75, "V": 0.75, "all": 0.25}


def test_mean_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 1, 200))
    assert mean_correlation(a, a[::-1]) == pytest.approx(1.0)
    assert mean_correlation(a, -2.0 * a) == pytest.approx(-1.0)
    assert abs(mean_correlation(a, rng.normal(size=(8, 1, 200)))) < 0.5
    with pytest.raises(ValueError, match=r"mean_correlation: expected signals of one length, found 200 and 100"):
        mean_correlation(a, a[..., :100])
