"""evaluation/wave_profile.py (issue 28): the wave V each virtual ear is asked for, fitted on a training split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data.records import CLASS_NAMES
from data.synthetic import generate as synthetic_cohort
from evaluation.wave_profile import FILE, draw_waves, fit_profile, load_profile, main, save_profile

LEVELS = np.array([10.0, 30.0, 50.0, 70.0, 90.0])


@pytest.fixture(scope="module")
def profile():
    c = synthetic_cohort(300, 11)
    return fit_profile(c.static, c.threshold, c.label, c.peak_mask, np.nan_to_num(c.peak_latency),
                       np.nan_to_num(c.peak_amplitude), c.series_id)


def ears(k: int, threshold: float, n: int, age: float = 30.0) -> tuple[np.ndarray, ...]:
    """n series of one type and threshold over LEVELS: static (n*5 4), threshold, label, series_id."""
    static = np.tile(np.column_stack([np.full(5, age), LEVELS, np.full(5, 21.1), np.full(5, 2.0)]), (n, 1))
    return static.astype(np.float32), np.full(5 * n, threshold), np.full(5 * n, k), np.repeat(np.arange(n), 5)


def test_the_fit_covers_every_type_with_presence_non_decreasing_in_sensation_level(profile):
    assert set(profile["types"]) == set(CLASS_NAMES)
    for name, part in profile["types"].items():
        share = np.asarray(part["presence"]["share"])
        assert (np.diff(share) >= 0).all() and share.min() >= 0 and share.max() <= 1, name
    assert profile["types"]["TOTAL"]["presence"]["no_response"] == 0.0  # a total loss never shows wave V
    normal = profile["types"]["NORMAL"]
    assert not normal["pooled"] and normal["presence"]["share"][-1] > 0.95  # loud above threshold: wave V
    assert 0.05 < normal["latency"]["sd_between"] < 2.0 and 0.0 < normal["latency"]["sd_within"] < 1.0


def test_drawn_ears_follow_one_latency_intensity_function_each(profile):
    """Within each drawn NORMAL ear: wave V present from some level up (never a gap), latency falling with
    level on average by more than a millisecond from 10 to 90 dB, amplitude rising; ears differ from each
    other (their own intercepts) more than one ear's two draws at one level would."""
    static, thr, label, sid = ears(CLASS_NAMES.index("NORMAL"), 0.0, 300)
    w = draw_waves(profile, static, thr, label, sid, np.random.default_rng(0)).reshape(300, 5, 3)
    present = w[:, :, 0] == 1
    assert (np.diff(present.astype(int), axis=1) >= 0).all()  # monotone in level within every ear
    assert np.isnan(w[~present][:, 1:]).all() and np.isfinite(w[present][:, 1:]).all()
    both = present[:, 0] & present[:, 4]
    assert (w[both, 0, 1] - w[both, 4, 1]).mean() > 1.0
    assert (w[both, 4, 2] > w[both, 0, 2]).mean() > 0.8
    r = np.corrcoef(w[both, 2, 1], w[both, 3, 1])[0, 1]  # one ear's latencies at two levels: its intercept
    assert r > 0.5
    again = draw_waves(profile, static, thr, label, sid, np.random.default_rng(0))
    np.testing.assert_array_equal(again, w.reshape(-1, 3))


def test_a_raised_threshold_silences_the_quiet_levels_and_no_response_silences_all(profile):
    k = CLASS_NAMES.index("SNİK")
    static, thr, label, sid = ears(k, 60.0, 200)
    w = draw_waves(profile, static, thr, label, sid, np.random.default_rng(1)).reshape(200, 5, 3)
    assert (w[:, :2, 0] == 0).mean() > 0.95 and (w[:, 4, 0] == 1).mean() > 0.9  # 10, 30 dB below a 60 dB threshold
    static, thr, label, sid = ears(CLASS_NAMES.index("TOTAL"), 105.0, 50)
    assert (draw_waves(profile, static, thr, label, sid, np.random.default_rng(2))[:, 0] == 0).all()


def test_save_load_round_trip_and_a_bad_file_is_one_line(profile, tmp_path):
    assert load_profile(tmp_path) is None
    save_profile(tmp_path, profile)
    assert load_profile(tmp_path) == json.loads(json.dumps(profile))
    (tmp_path / FILE).write_text(json.dumps({"version": 0}))
    with pytest.raises(ValueError, match=rf"{FILE}: expected a wave profile of version 1 with every type"):
        load_profile(tmp_path)
    (tmp_path / FILE).write_text("{not json")
    with pytest.raises(ValueError, match=rf"{FILE}: expected the JSON of a wave profile, found unreadable text"):
        load_profile(tmp_path)


def test_a_training_split_without_a_marked_wave_v_is_one_line():
    c = synthetic_cohort(5, 2)
    with pytest.raises(ValueError, match=r"^wave profile: expected training recordings with a marked wave V"):
        fit_profile(c.static, c.threshold, c.label, np.zeros(len(c.label), bool), np.zeros(len(c.label)),
                    np.zeros(len(c.label)), c.series_id)


def test_the_cli_refuses_a_run_without_wave_conditioning(tiny_run, capsys):
    assert main(["--run", str(tiny_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected a run trained with model.wave_conditioning true" in err[0]


def test_the_microphonic_index_is_drawn_per_ear_from_its_quantiles():
    """model.microphonic_conditioning's profile: per type and 10 dB level bin, the quantiles of the training
    recordings' microphonic index; a drawn ear keeps one rank across its levels; neuropathy ears ring more than
    normal ones at loud levels; wave V's draws are those without the column; a profile without it is one line."""
    from models.series import microphonic_index

    c = synthetic_cohort(1500, 13)  # about a dozen neuropathy patients
    index = microphonic_index(c.signal)[:, 0]
    fitted = fit_profile(c.static, c.threshold, c.label, c.peak_mask, np.nan_to_num(c.peak_latency),
                         np.nan_to_num(c.peak_amplitude), c.series_id, index)
    table = np.asarray(fitted["types"]["NÖROPATİ"]["microphonic"])
    assert table.shape == (len(fitted["level_edges_db"]), len(fitted["microphonic_quantiles"]))
    assert (np.diff(table, axis=1) >= 0).all()  # quantiles
    static, thr, label, sid = ears(CLASS_NAMES.index("NÖROPATİ"), 40.0, 200)
    w = draw_waves(fitted, static, thr, label, sid, np.random.default_rng(0), microphonic=True)
    assert w.shape == (1000, 4)
    np.testing.assert_array_equal(w[:, :3], draw_waves(fitted, static, thr, label, sid, np.random.default_rng(0)))
    m = w[:, 3].reshape(200, 5)
    assert np.corrcoef(m[:, 3], m[:, 4])[0, 1] > 0.5  # one rank per ear
    normal = draw_waves(fitted, static, thr, np.full_like(label, CLASS_NAMES.index("NORMAL")), sid,
                        np.random.default_rng(0), microphonic=True)[:, 3].reshape(200, 5)
    assert m[:, 4].mean() > normal[:, 4].mean() + 0.5  # at 90 dB neuropathy rings, a normal ear does not
    with pytest.raises(ValueError, match="wave profile: expected 'microphonic_quantiles' \\(a run trained with "
                                         "model.microphonic_conditioning\\)"):
        draw_waves(load_profile_free(fitted), static, thr, label, sid, np.random.default_rng(0), microphonic=True)


def load_profile_free(profile: dict) -> dict:
    """The profile without the microphonic index's quantiles (as a run without the condition saves it)."""
    return {k: v for k, v in profile.items() if k not in ("microphonic_quantiles", "level_edges_db")}


def test_the_noise_level_is_drawn_per_ear_as_alike_within_a_series_as_in_training():
    """model.noise_conditioning's profile: per type a varying-intercept fit of log10 of the training recordings'
    residual noise (µV) on the wave regressors and log10 FMP. Drawn ears keep the recordings' level at a stated FMP,
    fall in noise as FMP rises (FMP is the recording's own signal-to-noise), are alike within a series as the
    fit's two spreads say; the noise comes after the microphonic index and leaves the earlier columns' draws as
    they were; a profile without it is one line."""
    from models.series import microphonic_index, residual_rms

    c = synthetic_cohort(600, 17)
    noise = residual_rms(c.signal).double().numpy()  # (N,) µV
    fitted = fit_profile(c.static, c.threshold, c.label, c.peak_mask, np.nan_to_num(c.peak_latency),
                         np.nan_to_num(c.peak_amplitude), c.series_id, microphonic_index(c.signal)[:, 0], noise)
    k = CLASS_NAMES.index("SNİK")
    fit = fitted["log10_noise_uv"]["SNİK"]
    assert 0.05 < fit["sd_between"] < 0.5 and 0.05 < fit["sd_within"] < 0.5
    static, thr, label, sid = ears(k, 40.0, 400)  # FMP 2 at every level
    w = draw_waves(fitted, static, thr, label, sid, np.random.default_rng(0), microphonic=True, noise=True)
    assert w.shape == (2000, 5) and (w[:, 4] > 0).all()
    np.testing.assert_array_equal(w[:, :4], draw_waves(fitted, static, thr, label, sid, np.random.default_rng(0),
                                                       microphonic=True))
    drawn = np.log10(w[:, 4]).reshape(400, 5)
    near = (c.label == k) & (np.abs(c.static[:, 1] - 70) <= 5) & (np.abs(np.log10(c.static[:, 3]) - np.log10(2)) < 0.15)
    assert abs(np.median(drawn[:, 3]) - np.median(np.log10(noise[near]))) < 0.1  # 70 dB, FMP about 2
    rho = fit["sd_between"] ** 2 / (fit["sd_between"] ** 2 + fit["sd_within"] ** 2)
    within = np.mean([np.corrcoef(drawn[:, i], drawn[:, j])[0, 1] for i in range(5) for j in range(i + 1, 5)])
    assert abs(within - rho) < 0.1
    clean = static.copy()
    clean[:, 3] = 20.0  # a clean recording states a high FMP
    quiet = draw_waves(fitted, clean, thr, label, sid, np.random.default_rng(0), noise=True)[:, 3]
    assert np.median(np.log10(quiet)) < np.median(drawn) - 0.1
    with pytest.raises(ValueError, match="wave profile: expected 'log10_noise_uv' \\(a run trained with "
                                         "model.noise_conditioning\\)"):
        draw_waves({k: v for k, v in fitted.items() if k != "log10_noise_uv"}, static, thr, label, sid,
                   np.random.default_rng(0), noise=True)
