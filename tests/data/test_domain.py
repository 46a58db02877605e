"""The generator's opt-in options of issue 33: the wide domain (a randomized recording chain) and
catch sessions (noise-only recordings at every level). The defaults keep the bytes of before."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from data import waveform as wf
from data.records import SIGNAL_LENGTH
from data.splits import split_patients
from data.synthetic import LEVELS_DB, MIN_MARK_MS, NO_RESPONSE_THRESHOLD_DB, PATIENT_CHUNK, TOTAL, draw_chain, generate

COLUMNS = ("signal", "static", "label", "peak_mask", "peak_latency", "peak_amplitude", "threshold", "patient_id",
           "series_id", "wave_present", "wave_latency", "wave_amplitude")
# generate(70, 5) before the options existed (commit 50b34de, recomputed there): the narrow default must not
# move. Integer and boolean columns are pinned by their bytes; float columns by (NaN count, sum, sum of squares, a
# fixed random projection), to 1e-7 of the column's summed magnitude, because numpy's vectorized exp / sin differ
# in the last bit between CPUs (AVX-512 or not: the former whole-bytes digest held on one machine kind only). Any
# change of the generator moves them by many orders more.
PINNED_BYTES = {
    'label': 'fef1974097b8934c int64 (1763,)',
    'peak_mask': 'c41f53ccc1abafae bool (1763,)',
    'patient_id': 'de06d13e8900a8fc int64 (1763,)',
    'series_id': 'de06d13e8900a8fc int64 (1763,)',
    'wave_present': 'a0e19c3e59785cae int8 (1763, 2)',
}
PINNED_MOMENTS = {
    'signal': (0, 3154.7468246230987, 2187.290589286431, -63.17954998839505),
    'static': (0, 148157.57926730812, 7439623.7809209805, 2095.961152872105),
    'peak_latency': (493, 10017.119993686676, 81916.82564568939, 92.56136890050635),
    'peak_amplitude': (493, 228.95658567348437, 54.881639197170486, 7.1989147065344),
    'threshold': (0, 45305.0, 2073525.0, -1430.5080724701202),
    'wave_latency': (1636, 7954.960826635361, 39236.962246446004, -13.070942934369725),
    'wave_amplitude': (1636, 207.38317543215817, 34.98239553627939, 5.362561168432109),
}


def _fingerprint(records) -> dict:
    """Each column's pin: '<sha256[:16]> <dtype> <shape>' for integers and booleans, the moments for floats."""
    out = {}
    for k in COLUMNS:
        a = np.asarray(getattr(records, k))
        if a.dtype.kind == "f":
            x = a.astype(np.float64).ravel()
            nan = np.isnan(x)
            x = np.where(nan, 0.0, x)
            w = np.random.default_rng(0).standard_normal(x.size)
            out[k] = (int(nan.sum()), float(x.sum()), float((x**2).sum()), float(w @ x))
        else:
            out[k] = f"{hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]} {a.dtype} {a.shape}"
    return out


def _digest(records) -> str:
    h = hashlib.sha256()
    for k in COLUMNS:
        h.update(np.ascontiguousarray(getattr(records, k)).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def pair():
    """The same 60 patients (one chunk: one chain draw) through the narrow and the wide chain."""
    return generate(60, 7), generate(60, 7, domain="wide"), draw_chain(np.random.default_rng([7, 3, 0]), 60)


def test_defaults_give_the_bytes_of_before():
    default = generate(70, 5)
    got = _fingerprint(default)
    assert {k: got[k] for k in PINNED_BYTES} == PINNED_BYTES
    for k, want in PINNED_MOMENTS.items():
        assert got[k][0] == want[0], k  # NaN count
        scale = np.nansum(np.abs(np.asarray(getattr(default, k), np.float64)))  # the sums' magnitude, not their value
        np.testing.assert_allclose(got[k][1:], want[1:], rtol=1e-7, atol=1e-7 * scale, err_msg=k)
    assert _digest(generate(70, 5, domain="narrow", catch_fraction=0.0)) == _digest(default)  # the same bytes
    assert "domain" not in generate(5, 5).meta["source"]  # the native file's meta is unchanged too


@pytest.mark.parametrize(("kw", "message"), [({"domain": "broad"}, "synthetic domain: expected one of narrow, wide"),
                                             ({"catch_fraction": 1.5}, "catch_fraction: expected a share from 0 to 1")])
def test_bad_options_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        generate(5, 0, **kw)


def test_wide_keeps_the_truth_and_changes_the_recording(pair):
    narrow, wide, _ = pair
    for k in ("label", "threshold", "peak_mask", "patient_id", "series_id"):
        assert np.array_equal(getattr(narrow, k), getattr(wide, k)), k
    assert np.array_equal(narrow.static[:, :3], wide.static[:, :3])  # age, level, rate: the same protocol
    assert not np.allclose(narrow.signal, wide.signal) and np.isfinite(wide.signal).all()
    assert wide.meta["source"]["domain"] == "wide"


def test_wide_latency_labels_follow_the_chain_delay(pair):
    narrow, wide, chain = pair
    delay = chain.delay_ms[narrow.patient_id]
    rows = narrow.peak_mask & (narrow.peak_latency < 9.0) & (wide.peak_latency < 9.0)
    shift = wide.peak_latency[rows] - narrow.peak_latency[rows]
    assert abs(np.median(shift - delay[rows])) < 0.1  # marked on the final waveform, true latency + delay
    assert np.corrcoef(shift, delay[rows])[0, 1] > 0.9
    beyond = wide.peak_mask & (narrow.peak_latency + delay >= 9.6)  # pushed out of the window: true + delay
    err = wide.peak_latency[beyond] - narrow.peak_latency[beyond] - delay[beyond]
    assert beyond.any() and abs(np.median(err)) < 0.1
    assert np.abs(err).max() < 0.6  # the narrow mark lies within the marker's 0.25 ms search; jitter 0.05 ms


def test_wide_labels_are_marked_on_the_filtered_waveform(pair):
    _, wide, _ = pair
    rows = np.flatnonzero(wide.peak_mask & (wide.peak_latency < 9.5))
    idx = np.rint(wide.peak_latency[rows] / wf.DT_MS).astype(int)
    on_signal = wide.signal[rows, idx]
    assert np.all(wide.peak_amplitude[rows] >= on_signal - 1e-6)
    assert np.all(wide.peak_amplitude[rows] - on_signal < 0.1)
    neighbours = np.maximum(wide.signal[rows, idx - 1], wide.signal[rows, idx + 1])
    assert np.mean(on_signal >= neighbours - 1e-6) > 0.9
    early = wide.wave_present == 1  # waves I and III: marked only where their delayed peak lies >= 0.35 ms
    assert early.any() and np.nanmin(wide.wave_latency[early]) >= MIN_MARK_MS - 0.25 - 0.03


def test_wide_gain_scales_the_marked_amplitudes(pair):
    narrow, wide, chain = pair
    rows = narrow.peak_mask & (narrow.peak_amplitude > 0.1) & (narrow.peak_latency < 9.0)
    pid = narrow.patient_id[rows]
    ratio = np.log(np.maximum(wide.peak_amplitude[rows], 1e-3) / narrow.peak_amplitude[rows])
    per_patient = np.array([np.median(ratio[pid == p]) for p in np.unique(pid)])
    assert np.corrcoef(per_patient, np.log(chain.gain[np.unique(pid)]))[0, 1] > 0.6


def test_chain_draws_the_documented_ranges():
    c = draw_chain(np.random.default_rng(0), 5000)
    assert -1.5 <= c.delay_ms.min() < -1.4 and 1.4 < c.delay_ms.max() <= 1.5
    assert 30 <= c.highpass_hz.min() < 32 and 290 < c.highpass_hz.max() <= 300
    assert c.lowpass_hz.min() >= 1500 and c.lowpass_hz.max() <= 3000
    assert set(c.hp_order) == set(c.lp_order) == {1, 2, 3, 4} and set(c.mains_hz) == {50.0, 60.0}
    assert 0.5 <= c.gain.min() < 0.52 and 1.95 < c.gain.max() <= 2.0
    assert c.rel_amp.min() >= 0.5 and c.rel_amp.max() <= 2.0 and c.width_scale.min() >= 0.75


def test_zero_phase_filter_keeps_a_peak_in_place_and_halves_the_corner():
    one = np.ones(1)
    g = wf.zero_phase_gain(np.array([100.0, 1e6]), 100.0 * one, 1e6 * one, 2 * one, 1 * one)  # (1 2)
    assert np.isclose(g[0, 0], 0.5, atol=0.01)  # |H(fc)|^2 = 1/2: forward-backward halves the corner
    t = np.arange(600) * wf.DT_MS
    pulse = np.exp(-0.5 * ((t - 15.0) / 0.4) ** 2)[None, :] + 0.3  # a wave on a DC offset
    out = wf.filter_zero_phase(pulse, wf.zero_phase_gain(wf.EXT_FREQS_HZ, 100 * one, 3000 * one, 2 * one, 2 * one))
    assert np.argmax(out[0]) == np.argmax(pulse[0])  # zero phase: the peak does not move
    assert abs(np.median(out[0])) < 0.02  # DC removed


def test_catch_sessions_are_noise_at_every_level_labelled_no_response():
    real, mixed = generate(40, 1), generate(40, 1, catch_fraction=0.5)
    n = len(real)
    for k in COLUMNS:  # the real recordings first, unchanged
        assert np.array_equal(getattr(real, k), getattr(mixed, k)[:n], equal_nan=True), k
    catch = mixed.subset(np.arange(n, len(mixed)))
    assert len(catch) > 0 and not catch.peak_mask.any() and not (catch.wave_present == 1).any()
    assert set(catch.label) == {TOTAL} and set(catch.threshold) == {NO_RESPONSE_THRESHOLD_DB}
    assert set(catch.static[:, 1]) == set(LEVELS_DB)  # every stated level
    assert catch.series_id.min() >= 40 and set(catch.patient_id) <= set(real.patient_id)
    assert np.array_equal(catch.series_id - 40, catch.patient_id)  # one session per patient, its own series
    per_patient = np.bincount(catch.patient_id, minlength=40)
    real_count = np.bincount(real.patient_id, minlength=40)
    has = per_patient > 0
    assert 0.25 < has.mean() < 0.75 and np.array_equal(per_patient[has], (real_count[has] + 1) // 2)
    assert 0.7 < np.median(catch.static[:, 3]) < 1.6  # FMP about 1: nothing but noise
    assert catch.signal.shape[1] == SIGNAL_LENGTH


def test_catch_sessions_keep_each_patient_in_its_class_stratum():
    """The split stratifies patients by their most frequent label: a catch session (half as many
    recordings) must not turn a patient into a TOTAL patient."""
    mixed = generate(PATIENT_CHUNK, 3, catch_fraction=1.0)
    real = generate(PATIENT_CHUNK, 3)
    counts = np.zeros((PATIENT_CHUNK, 5), dtype=np.int64)
    np.add.at(counts, (mixed.patient_id, mixed.label), 1)
    own = np.array([real.label[real.patient_id == p][0] for p in range(PATIENT_CHUNK)])
    assert np.array_equal(counts.argmax(1), own)
    train, val, test = split_patients(mixed.patient_id, mixed.label, [0.7, 0.15, 0.15], 0)
    assert not set(mixed.patient_id[train]) & set(mixed.patient_id[np.concatenate([val, test])])


def test_cli_writes_the_wide_domain_with_catch_sessions(tmp_path, capsys):
    from data.native import read_native
    from data.synthetic import main

    out = tmp_path / "wide.npz"
    assert main(["--out", str(out), "--patients", "6", "--seed", "2", "--domain", "wide", "--catch-fraction", "1"]) == 0
    records, _ = read_native(out)  # the native reader validates every column
    assert records == generate(6, 2, domain="wide", catch_fraction=1.0)
    assert records.meta["source"]["domain"] == "wide" and records.meta["source"]["catch_fraction"] == 1.0
    assert main(["--out", str(tmp_path / "x.npz"), "--catch-fraction", "2"]) == 2
    assert "--catch-fraction: expected a share from 0 to 1, found 2.0" in capsys.readouterr().err


def test_mixed_records_each_patient_through_one_chain():
    """domain 'mixed' (training): the same labels as narrow; a patient's recordings are narrow where its
    chain is marked NaN, bytes equal to simulate() of those recordings alone, wide otherwise."""
    from data.synthetic import draw_patients, draw_protocol, simulate, simulate_mixed

    narrow, mixed = generate(60, 7), generate(60, 7, domain="mixed")
    for k in ("label", "threshold"):
        assert np.array_equal(np.sort(getattr(narrow, k)), np.sort(getattr(mixed, k))), k
    assert mixed.meta["source"]["domain"] == "mixed" and np.isfinite(mixed.signal).all()

    rng = np.random.default_rng(0)
    pat = draw_patients(rng, np.array([0, 1, 2, 0]))
    idx, level, rate = draw_protocol(rng, pat)
    chain = draw_chain(np.random.default_rng(1), 4)
    chain.delay_ms[[1, 3]] = np.nan
    out = np.empty((len(idx), SIGNAL_LENGTH), np.float32)
    idx2, level2, rate2, cols = simulate_mixed(np.random.default_rng(2), pat, idx, level, rate, out=out, chain=chain)
    k = int(np.isin(idx, [1, 3]).sum())
    assert set(idx2[:k]) == {1, 3} and set(idx2[k:]) == {0, 2} and len(cols["label"]) == len(idx)
    alone = simulate(np.random.default_rng(2), pat, idx2[:k], level2[:k], rate2[:k])
    assert np.array_equal(out[:k], alone["signal"])
    assert np.array_equal(cols["peak_latency"][:k], alone["peak_latency"], equal_nan=True)


def test_lowpass_keeps_the_waves_band_and_removes_what_lies_above():
    """data.waveform.lowpass_zero_phase (generated signals, diffusion.lowpass_hz): a 500 Hz wave and the DC
    pass in place, an 8 kHz one is gone; a cutoff outside (0, Nyquist) is refused."""
    t = np.arange(200) / 20_000.0
    slow, fast = np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 8000 * t)
    out = wf.lowpass_zero_phase(np.stack([slow + 0.3, fast]), 5000.0)
    assert np.abs(out[0] - (slow + 0.3))[20:-20].max() < 1e-3  # zero phase: no shift, no gain change
    assert np.sqrt(np.mean(out[1, 20:-20] ** 2)) < 1e-3
    with pytest.raises(ValueError, match=r"low-pass cutoff: expected a frequency in \(0, 10000\) Hz, found 10000"):
        wf.lowpass_zero_phase(out, 10000.0)
