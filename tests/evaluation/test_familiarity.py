"""The input check (evaluation/familiarity.py): features, verdicts with reasons, the fit and its file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.familiarity import (
    FEATURES,
    IN_RANGE,
    UNLIKE,
    UNUSUAL,
    Familiarity,
    Inputs,
    check,
    fit_familiarity,
    judge,
    signal_features,
)
from training.clinical import series_index

J = len(FEATURES)


def hand_fam(**kw) -> Familiarity:
    """Every feature centred at 0 with spread 1 and cap 1: a feature's value is its normalized |z|."""
    base = dict(features=list(FEATURES), centre=[0.0] * J, spread=[1.0] * J, cap=[1.0] * J,
                recording_thresholds=[2.0, 3.0], series_thresholds=[2.0, 3.0], evidence_mean=[0.0],
                evidence_precision=[[1.0]], noise_steps=[1, 2, 3], n_train=10, n_val_recordings=10, n_val_series=2,
                static_min=[0.0, 0.0, 10.0, 0.0], static_max=[5.0, 100.0, 50.0, 200.0])
    return Familiarity(**(base | kw))


def low_freq(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(200) / 20_000
    return np.sin(2 * np.pi * 500 * t)[None] * rng.uniform(0.5, 1.5, (n, 1)) + 0.01 * rng.standard_normal((n, 200))


def test_signal_features_amplitude_spectrum_and_flat_line():
    rng = np.random.default_rng(0)
    x = low_freq(4, rng)
    f, f10 = signal_features(x), signal_features(10 * x)
    np.testing.assert_allclose(f10[:, 0] - f[:, 0], 1.0, atol=1e-5)  # log10 RMS: x10 is +1
    np.testing.assert_allclose(f10[:, 1:], f[:, 1:], atol=1e-9)  # shares do not see the gain
    white = signal_features(rng.standard_normal((4, 200)))
    assert (white[:, 5] > f[:, 5] + 1).all()  # 4-10 kHz share: white noise far above a 500 Hz wave
    flat = signal_features(np.zeros((1, 200)))
    assert flat[0, 0] == pytest.approx(-6.0) and np.allclose(flat[0, 1:], -4.0)  # the floors, finite


def test_judge_grades_each_verdict_with_its_reason():
    fam = hand_fam()
    feats = np.zeros((4, J))
    feats[1, 0] = 2.5  # amplitude: unusual
    feats[2, FEATURES.index("denoise_0.6")] = 4.0  # unlike
    static = np.tile([1.0, 50.0, 20.0, 100.0], (4, 1))
    series = series_index(np.array([0, 1, 2, 3]), static[:, 1])
    v = judge(fam, feats, static, series)
    assert v.verdict == [IN_RANGE, UNUSUAL, UNLIKE, IN_RANGE]
    assert v.reason[0] == "" and "amplitude" in v.reason[1] and "denoising error at noise 0.6" in v.reason[2]
    assert v.series_verdict == v.verdict
    assert v.counts("series") == {IN_RANGE: 2, UNUSUAL: 1, UNLIKE: 1}


def test_static_outside_the_span_is_unusual_far_outside_unlike():
    fam = hand_fam()
    feats = np.zeros((3, J))
    static = np.array([[1.0, 50.0, 20.0, 100.0], [1.0, 110.0, 20.0, 100.0], [1.0, 50.0, 20.0, 300.0]])
    v = judge(fam, feats, static, series_index(np.arange(3), static[:, 1]))
    assert v.verdict == [IN_RANGE, UNUSUAL, UNLIKE]  # 10 dB past a 100 dB span; FMP 100 past a 200 span
    assert "intensity 110" in v.reason[1] and "fmp 300" in v.reason[2]
    assert "static values outside the training span in 1 of 1" in v.series_reason[2]


def test_series_verdict_is_the_median_recording_not_one_outlier():
    fam = hand_fam()
    feats = np.zeros((5, J))
    feats[0, 0] = 10.0  # one wild recording in a series of five
    static = np.tile([1.0, 50.0, 20.0, 100.0], (5, 1))
    v = judge(fam, feats, static, series_index(np.zeros(5, dtype=np.int64), static[:, 1]))
    assert v.verdict[0] == UNLIKE and v.series_verdict == [IN_RANGE]
    assert "1 of 5 recordings unlike training data" in v.series_reason[0]


def test_file_round_trip_and_a_foreign_file_is_one_line(tmp_path):
    fam = hand_fam()
    fam.save(tmp_path)
    assert Familiarity.load(tmp_path) == Familiarity(**{**fam.__dict__, "noise_sigmas": list(fam.noise_sigmas),
                                                       "quantiles": list(fam.quantiles)})
    assert Familiarity.load(tmp_path / "none") is None
    (tmp_path / "familiarity.json").write_text('{"features": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a familiarity fit of this code.*evaluation.trust"):
        Familiarity.load(tmp_path)


class Denoiser(torch.nn.Module):
    """Predicts eps assuming x0 is a 500 Hz wave of amplitude 1: familiar with exactly that."""

    def forward(self, x_t, t, static):
        return {"signal": torch.zeros_like(x_t)}


def inputs(signal_uv: np.ndarray, rng: np.random.Generator, n_series: int) -> tuple[Inputs, object]:
    n = len(signal_uv)
    static = np.tile([1.0, 50.0, 20.0, 100.0], (n, 1)).astype(np.float32)
    sid = np.arange(n) % n_series
    ev = rng.standard_normal((n, 3))
    inp = Inputs(signal_uv, torch.tensor(signal_uv, dtype=torch.float32)[:, None], torch.tensor(static), ev)
    return inp, series_index(sid, static[:, 1])


def test_fit_on_familiar_data_flags_what_is_not():
    from training.config import DiffusionConfig
    from training.diffusion import GaussianDiffusion

    rng = np.random.default_rng(0)
    diffusion, net = GaussianDiffusion(DiffusionConfig(timesteps=100)), Denoiser()
    train, _ = inputs(low_freq(400, rng), rng, 40)
    val, val_series = inputs(low_freq(400, rng), rng, 40)
    fam = fit_familiarity(net, diffusion, train, val, val_series, ([0.0, 0, 10, 0], [5.0, 100, 50, 200]))
    assert fam.recording_thresholds[0] < fam.recording_thresholds[1]
    test, test_series = inputs(low_freq(200, rng), rng, 20)
    v = check(fam, test, net, diffusion, test_series)
    assert sum(x == UNLIKE for x in v.series_verdict) <= 1  # familiar series: (almost) no false alarm
    for odd in (10 * low_freq(200, rng), rng.standard_normal((200, 200)), np.zeros((200, 200))):
        inp, s = inputs(odd, rng, 20)
        assert check(fam, inp, net, diffusion, s).series_verdict == [UNLIKE] * 20
