"""The input check (evaluation/familiarity.py): features, verdicts with reasons, the fit and its file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.familiarity import (
    FEATURES,
    IN_RANGE,
    SERIES_FEATURES,
    UNLIKE,
    UNUSUAL,
    Familiarity,
    Inputs,
    WholeSeries,
    check,
    fit_familiarity,
    judge,
    signal_features,
)
from models.series import recording_evidence
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
    """Predicts eps assuming x0 is a 500 Hz wave of amplitude 1: familiar with exactly that. At t = 0 it
    answers as the network does for models.series.recording_evidence, with one feature that sees the order
    of time: how much larger the first half of the recording is than its second, as a response that dies
    out is (reversed, it grows)."""

    def forward(self, x_t, t, static, return_features=False):
        out = {"signal": torch.zeros_like(x_t)}
        if return_features:
            L, B = x_t.shape[-1], len(x_t)
            early, late = x_t[..., : L // 2].abs().mean((1, 2)), x_t[..., L // 2:].abs().mean((1, 2))  # (B,)
            order = ((early - late) / (early + late + 1e-9))[:, None, None]  # (B 1 1)
            out |= {"features": (x_t.transpose(1, 2), order), "class_logits": torch.zeros(B, 5),
                    **{k: torch.zeros(B, 1) for k in ("peak_logit", "peak_latency", "peak_amplitude", "threshold")}}
        return out


def inputs(signal_uv: np.ndarray, rng: np.random.Generator, n_series: int) -> tuple[Inputs, object]:
    n = len(signal_uv)
    static = np.tile([1.0, 50.0, 20.0, 100.0], (n, 1)).astype(np.float32)
    sid = np.arange(n) % n_series
    x = torch.tensor(signal_uv, dtype=torch.float32)[:, None]
    ev = recording_evidence(Denoiser(), x, torch.tensor(static))[1].numpy()
    inp = Inputs(signal_uv, x, torch.tensor(static), ev)
    return inp, series_index(sid, static[:, 1])


def test_fit_on_familiar_data_flags_what_is_not():
    from training.config import DiffusionConfig
    from training.diffusion import GaussianDiffusion

    rng = np.random.default_rng(0)
    diffusion, net = GaussianDiffusion(DiffusionConfig(timesteps=100)), Denoiser()
    val, val_series = inputs(low_freq(400, rng), rng, 40)
    train, train_series = inputs(low_freq(400, rng), rng, 40)
    fam = fit_familiarity(net, diffusion, train, val, val_series, ([0.0, 0, 10, 0], [5.0, 100, 50, 200]),
                          train_series=train_series)
    assert fam.recording_thresholds[0] < fam.recording_thresholds[1]
    test, test_series = inputs(low_freq(200, rng), rng, 20)
    v = check(fam, test, net, diffusion, test_series)
    assert sum(x == UNLIKE for x in v.series_verdict) <= 1  # familiar series: (almost) no false alarm
    for odd in (10 * low_freq(200, rng), rng.standard_normal((200, 200)), np.zeros((200, 200))):
        inp, s = inputs(odd, rng, 20)
        assert check(fam, inp, net, diffusion, s).series_verdict == [UNLIKE] * 20


def decaying(n: int, rng: np.random.Generator) -> np.ndarray:
    """Waves of 300-900 Hz dying out over the window, as a response does, in noise of varying size: the
    recordings differ as much in their spectra and amplitudes as a clinic's (a series' medians vary)."""
    t = np.arange(200) / 20_000
    f, a, noise = rng.uniform(300, 900, (n, 1)), rng.uniform(0.5, 1.5, (n, 1)), rng.uniform(0.05, 0.3, (n, 1))
    return a * np.sin(2 * np.pi * f * t) * np.exp(-np.arange(200) / 60.0) + noise * rng.standard_normal((n, 200))


def test_a_series_played_backwards_is_unlike_training_data_and_says_so():
    from training.config import DiffusionConfig
    from training.diffusion import GaussianDiffusion

    rng = np.random.default_rng(1)
    diffusion, net = GaussianDiffusion(DiffusionConfig(timesteps=100)), Denoiser()
    # 160 series each: the thresholds are the validation series' 95th / 99th percentiles
    (train, train_series), (val, val_series) = (inputs(decaying(1600, rng), rng, 160) for _ in range(2))
    fam = fit_familiarity(net, diffusion, train, val, val_series, ([0.0, 0, 10, 0], [5.0, 100, 50, 200]),
                          train_series=train_series)
    assert fam.series_features == list(SERIES_FEATURES) and fam.n_train_series == 160
    assert fam.direction_centre > 1.0  # training series run forwards (log-odds)
    x = decaying(200, rng)
    inp, test_series = inputs(x, rng, 20)
    forwards = check(fam, inp, net, diffusion, test_series)
    assert sum(v == UNLIKE for v in forwards.series_verdict) <= 2  # three checks at about 1 % each: chance
    inp, test_series = inputs(x[:, ::-1].copy(), rng, 20)
    backwards = check(fam, inp, net, diffusion, test_series)
    assert backwards.series_verdict == [UNLIKE] * 20
    assert all("the series reads backwards in time" in r for r in backwards.series_reason)


def series_fam() -> Familiarity:
    """hand_fam with series medians centred at 0, spread 0.5, cap 1, thresholds 2 / 3, and a time direction
    whose training median is +4 log-odds, unusual beyond backwardness 0 and unlike beyond 1."""
    return hand_fam(series_features=list(SERIES_FEATURES), series_centre=[0.0] * J, series_spread=[0.5] * J,
                    series_cap=[1.0] * J, series_feature_thresholds=[2.0, 3.0], direction_weights=[1.0],
                    direction_centre=4.0, direction_thresholds=[0.0, 1.0], n_train_series=2)


def test_a_series_median_flags_what_its_recordings_one_by_one_do_not():
    fam = series_fam()
    feats = np.zeros((5, J))
    feats[:, 0] = 2.5  # every recording's amplitude unusual, none unlike
    static = np.tile([1.0, 50.0, 20.0, 100.0], (5, 1))
    series = series_index(np.zeros(5, dtype=np.int64), static[:, 1])
    whole = WholeSeries(np.median(feats, axis=0, keepdims=True), np.array([4.0]))  # median amplitude z 5
    v = judge(fam, feats, static, series, whole)
    assert v.verdict == [UNUSUAL] * 5 and v.series_verdict == [UNLIKE]
    assert v.series_reason[0].startswith("series median: amplitude")
    assert v.series_score[0] == pytest.approx(5.0)  # on the recording score's scale (both unlike thresholds 3)
    assert judge(fam, feats, static, series).series_verdict == [UNUSUAL]  # without them: the median recording


def test_the_gain_check_flags_a_louder_series_that_the_feature_maximum_keeps_in_range():
    """Loudness alone (signed, on the series medians' scale) against its own thresholds: a series whose median
    amplitude lies at z 2.5 (unusual by the ten-feature maximum, 2 / 3) is unlike when the gain check's unlike
    threshold is 2; as quiet a series stays unusual (a gain error makes a series louder)."""
    fam = series_fam()
    fam.gain_thresholds = [1.0, 2.0]
    static = np.tile([1.0, 50.0, 20.0, 100.0], (2, 1))
    series = series_index(np.arange(2), static[:, 1])
    medians = np.zeros((2, J))
    medians[:, 0] = [1.25, -1.25]  # z = +2.5, -2.5 (series spread 0.5)
    v = judge(fam, np.zeros((2, J)), static, series, WholeSeries(medians, np.array([4.0, 4.0])))
    assert v.series_verdict == [UNLIKE, UNUSUAL]
    assert v.series_reason[0].startswith("series median: amplitude")
    assert v.series_score[0] == pytest.approx(2.5 * 3.0 / 2.0)  # rescaled onto the series' unlike threshold 3
    fam.gain_thresholds = None  # a fit saved before the gain check: the ten-feature maximum alone
    assert judge(fam, np.zeros((2, J)), static, series, WholeSeries(medians, np.array([4.0, 4.0]))).series_verdict \
        == [UNUSUAL, UNUSUAL]


def test_the_time_direction_flags_only_a_series_that_runs_backwards():
    fam = series_fam()
    static = np.tile([1.0, 50.0, 20.0, 100.0], (3, 1))
    series = series_index(np.arange(3), static[:, 1])
    whole = WholeSeries(np.zeros((3, J)), np.array([9.0, -0.5, -3.0]))  # forwards, unsure, backwards
    v = judge(fam, np.zeros((3, J)), static, series, whole)
    assert v.series_verdict == [IN_RANGE, UNUSUAL, UNLIKE]
    assert v.series_reason[0] == "" and "reads backwards in time (log-odds -3.00" in v.series_reason[2]
    assert v.series_score[2] == pytest.approx(3.0 * (3.0 + 4.0) / (1.0 + 4.0))


def test_a_fit_saved_before_the_series_checks_still_loads_and_judges(tmp_path):
    hand_fam().save(tmp_path)
    fam = Familiarity.load(tmp_path)
    assert not fam.checks_series
    static = np.tile([1.0, 50.0, 20.0, 100.0], (3, 1))
    whole = WholeSeries(np.full((1, J), 9.0), np.array([-9.0]))  # would be unlike with the checks
    v = judge(fam, np.zeros((3, J)), static, series_index(np.zeros(3, dtype=np.int64), static[:, 1]), whole)
    assert v.series_verdict == [IN_RANGE]
    series_fam().save(tmp_path)
    import json

    raw = json.loads((tmp_path / "familiarity.json").read_text(encoding="utf-8"))
    raw["series_features"] = raw["series_features"][:-1]
    (tmp_path / "familiarity.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ValueError, match="expected features.*median_feature_distance.*evaluation.trust"):
        Familiarity.load(tmp_path)
