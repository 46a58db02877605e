"""The synthetic generator: determinism, the real data set's statistics, physiology, and that no
label can be read off a constant or a single static input."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from data import synthetic
from data.config import MAX_SYNTHETIC_PATIENTS
from data.native import read_native
from data.records import CLASS_NAMES, SIGNAL_LENGTH, STATIC_NAMES, Records
from data.summary import summarize
from data.waveform import DT_MS

NORMAL, NEURO, SNIK, TOTAL, ITIK = range(5)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes(tmp_path):
    paths = [tmp_path / f"{name}.npz" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (3, 3, 4), strict=True):
        assert synthetic.main(["--out", str(path), "--patients", "40", "--seed", str(seed)]) == 0
    assert _sha(paths[0]) == _sha(paths[1])
    assert _sha(paths[0]) != _sha(paths[2])


def test_stats_cli_prints_the_design_statistics(tmp_path, capsys):
    path = tmp_path / "s.npz"
    synthetic.main(["--out", str(path), "--patients", "30", "--seed", "0"])
    capsys.readouterr()
    synthetic.main(["--stats", str(path)])
    out = capsys.readouterr().out
    for key in ("class_share_pct[NÖROPATİ]", "peak_present_pct", "latency_mean_ms", "amplitude_mean_uv", "real data"):
        assert key in out


def test_class_quota_is_exact_and_keeps_every_class():
    assert synthetic.class_quota(2000).tolist() == [1594, 16, 212, 66, 112]
    assert synthetic.class_quota(5).tolist() == [1, 1, 1, 1, 1]
    assert all(synthetic.class_quota(n).sum() == n for n in (1, 3, 7, 300, 2038))


@pytest.mark.parametrize(("patients", "seed"), [(0, 0), (-3, 0), (MAX_SYNTHETIC_PATIENTS + 1, 0), (5, -1)])
def test_generate_refuses_bad_sizes_and_seeds(patients, seed):
    what = "seed: expected an integer >= 0, found -1" if seed < 0 else (
        rf"patients: expected 1 to 200,000 \(MAX_SYNTHETIC_PATIENTS\), found {patients}$")
    with pytest.raises(ValueError, match=rf"^synthetic {what}"):
        synthetic.generate(patients, seed)


@pytest.mark.parametrize(("args", "message"), [
    (["--patients", "0"], r"--patients: expected 1 to 200,000, found 0"),
    (["--patients", "200001"], r"--patients: expected 1 to 200,000, found 200001"),
    (["--seed", "-1"], r"--seed: expected an integer >= 0, found -1"),
    (["--out", "{tmp}/x.csv"], r"--out .*x\.csv: expected a \.npz file name \(the native format\)"),
    (["--out", "{tmp}/no/such/dir/x.npz"], r"--out .*x\.npz: folder '.*dir' does not exist"),
    (["--stats", "{tmp}/missing.npz"], r"--stats .*missing\.npz: file not found"),
    (["--stats", "{tmp}/junk.npz"], r".*junk\.npz: not a native \.npz file \(File is not a zip file\)"),
])
def test_cli_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args and "--stats" not in args:
        args += ["--out", str(tmp_path / "o.npz")]
    assert synthetic.main(args) == 2
    out = capsys.readouterr()
    assert out.out == "" and re.fullmatch(rf"error: {message}.*\n", out.err), out.err
    assert not (tmp_path / "o.npz").exists()
    with pytest.raises(ValueError, match=message):  # --debug: the exception itself (the interpreter's traceback)
        synthetic.main([*args, "--debug"])


def test_cli_never_replaces_an_existing_file_unasked(tmp_path, capsys):
    path = tmp_path / "good.npz"
    path.write_bytes(b"the user's data")
    assert synthetic.main(["--out", str(path), "--patients", "5"]) == 2
    assert capsys.readouterr().err == f"error: --out {path}: exists; pass --overwrite to replace it\n"
    assert path.read_bytes() == b"the user's data"
    assert synthetic.main(["--out", str(path), "--patients", "5", "--overwrite"]) == 0
    assert len(read_native(path)[0]) == len(synthetic.generate(5))


def test_layout_and_units(small_records: Records):
    r = small_records
    assert r.signal.shape == (len(r), SIGNAL_LENGTH) and r.signal.dtype == np.float32
    assert r.static.shape == (len(r), len(STATIC_NAMES))
    assert np.isfinite(r.signal).all() and np.isfinite(r.static).all() and np.isfinite(r.threshold).all()
    assert np.isnan(r.peak_latency[~r.peak_mask]).all() and np.isfinite(r.peak_latency[r.peak_mask]).all()
    assert set(np.unique(r.static[:, 1])) <= set(range(0, 101, 5))
    assert (r.static[:, 0] == np.floor(r.static[:, 0])).all()  # completed years, as clinical records
    assert set(np.unique(r.label)) == set(range(len(CLASS_NAMES)))


def test_statistics_match_the_real_data_set(cohort: Records):
    """The acceptance of issue 3, on 2,000 patients."""
    s = summarize(cohort)
    real = dict(zip(CLASS_NAMES, (79.7, 0.8, 10.6, 3.3, 5.6), strict=True))
    for name, share in real.items():
        assert abs(s["class_share_pct"][name] - share) <= 1.0, name
    assert 70.0 <= s["peak_present_pct"] <= 80.0
    assert 7.0 <= s["latency_mean_ms"] <= 9.0
    assert s["latency_range_ms"][1] > 12.0 and s["latency_above_12ms_pct"] >= 0.05  # a right tail
    assert 0.1 <= s["amplitude_mean_uv"] <= 0.3
    assert s["age_median_years"] == 0.0 and s["age_range_years"][1] <= 75.0
    assert s["intensity_levels"] == 21 and s["intensity_range_db"] == (0.0, 100.0)
    assert s["rate_range_per_s"] == (11.1, 49.1) or np.allclose(s["rate_range_per_s"], (11.1, 49.1))
    assert 24.0 <= s["recordings_per_patient"] <= 27.0


def test_no_label_is_readable_from_a_constant_or_one_static_input(cohort: Records):
    """A depth-6 tree on any single static input (or nothing) stays far from reading any label."""
    r = cohort
    test = (r.patient_id % 5) == 0
    targets = {"label": (r.label, None), "peak_mask": (r.peak_mask, None), "threshold": (r.threshold, None),
               "peak_latency": (r.peak_latency, r.peak_mask), "peak_amplitude": (r.peak_amplitude, r.peak_mask)}
    for name, (y, mask) in targets.items():
        rows = np.ones(len(y), bool) if mask is None else mask
        tr, te = rows & ~test, rows & test
        for j in [*range(len(STATIC_NAMES)), None]:
            x = np.zeros((len(y), 1)) if j is None else r.static[:, [j]]
            if y.dtype.kind in "bi":
                pred = DecisionTreeClassifier(max_depth=6, min_samples_leaf=20).fit(x[tr], y[tr]).predict(x[te])
                score = balanced_accuracy_score(y[te], pred)
                assert score < 0.85, (name, j, score)
            else:
                pred = DecisionTreeRegressor(max_depth=6, min_samples_leaf=20).fit(x[tr], y[tr]).predict(x[te])
                score = r2_score(y[te], pred)
                assert score < 0.6, (name, j, score)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0])


def test_wave_v_latency_falls_with_intensity_and_rises_with_rate(cohort: Records):
    r = cohort
    age, level, rate = r.static[:, 0], r.static[:, 1], r.static[:, 2]
    adult = r.peak_mask & (r.label == NORMAL) & (age >= 18) & (level >= 30) & (level <= 80)
    assert -0.045 <= _slope(level[adult], r.peak_latency[adult]) <= -0.028  # ms/dB (0.03-0.04 in the brief)
    loud = r.peak_mask & (r.label == NORMAL) & (level >= 60)
    assert _slope(rate[loud], r.peak_latency[loud]) > 0.003  # ms per click/s


def test_infants_have_longer_latencies(cohort: Records):
    r = cohort
    loud = r.peak_mask & (r.label == NORMAL) & (r.static[:, 1] == 80)
    infant, adult = loud & (r.static[:, 0] == 0), loud & (r.static[:, 0] >= 18)
    assert np.median(r.peak_latency[infant]) - np.median(r.peak_latency[adult]) > 0.4


def test_amplitude_grows_with_sensation_level(cohort: Records):
    r = cohort
    normal = r.peak_mask & (r.label == NORMAL)
    sl = r.static[:, 1] - r.threshold
    low, high = normal & (sl <= 10), normal & (sl >= 50)
    assert np.median(r.peak_amplitude[high]) > 2 * np.median(r.peak_amplitude[low])


def test_pathologies(cohort: Records):
    r = cohort
    level, mask, lat = r.static[:, 1], r.peak_mask, r.peak_latency
    assert not mask[r.label == TOTAL].any()  # no response at any level
    loud = level >= 80
    assert mask[(r.label == NEURO) & loud].mean() < 0.5 < mask[(r.label == NORMAL) & loud].mean()
    # conductive: delayed at equal intensity; sensorineural: steeper latency-intensity function
    at70 = mask & (level == 70)
    assert np.median(lat[at70 & (r.label == ITIK)]) > np.median(lat[at70 & (r.label == NORMAL)]) + 0.5
    band = mask & (level >= 60) & (level <= 100)
    snik, normal = band & (r.label == SNIK), band & (r.label == NORMAL)
    assert _slope(level[snik], lat[snik]) < _slope(level[normal], lat[normal])
    # wave V only above threshold, with uncertainty near it
    sl = level - r.threshold
    hearing = np.isin(r.label, (NORMAL, SNIK, ITIK))
    assert mask[hearing & (sl <= -10)].mean() < 0.05 and mask[hearing & (sl >= 10)].mean() > 0.9
    near = mask[hearing & (np.abs(sl) <= 2.5)].mean()
    assert 0.2 < near < 0.9


def test_labels_are_marked_on_the_recorded_waveform(small_records: Records):
    """In the window, the marked amplitude is the recorded waveform's local maximum at the marked latency."""
    r = small_records
    rows = np.flatnonzero(r.peak_mask & (r.peak_latency < 9.5))
    idx = np.rint(r.peak_latency[rows] / DT_MS).astype(int)
    on_signal = r.signal[rows, idx]
    assert np.all(r.peak_amplitude[rows] >= on_signal - 1e-6)  # interpolated peak >= nearest sample
    assert np.all(r.peak_amplitude[rows] - on_signal < 0.05)
    neighbours = np.maximum(r.signal[rows, idx - 1], r.signal[rows, idx + 1])
    assert np.mean(on_signal >= neighbours - 1e-6) > 0.9  # a local maximum (or next to one)


def test_waves_i_and_iii_are_marked_like_wave_v(cohort: Records):
    """Waves I and III: marked on the recorded waveform (the value at the mark is the waveform's, as for V),
    in order I < III < V, present only in ears with neural waves, and later as the level falls."""
    r = cohort
    present = r.wave_present == 1  # (N 2)
    assert set(np.unique(r.wave_present)) == {0, 1}  # the generator marks every recording
    neural = np.isin(r.label, [CLASS_NAMES.index(c) for c in ("NORMAL", "SNİK", "İTİK")])
    assert not present[~neural].any() and present[neural].any(axis=0).all()
    both = present.all(axis=1) & r.peak_mask & (r.peak_latency < 9.5)
    assert (r.wave_latency[both, 0] < r.wave_latency[both, 1]).all()
    assert np.mean(r.wave_latency[both, 1] < r.peak_latency[both]) > 0.99
    for k in range(2):
        rows = np.flatnonzero(present[:, k])
        idx = np.rint(r.wave_latency[rows, k] / DT_MS).astype(int)
        assert np.all(r.wave_amplitude[rows, k] >= r.signal[rows, idx] - 1e-6)
        loud, quiet = rows[r.static[rows, 1] >= 80], rows[r.static[rows, 1] <= 40]
        assert r.wave_latency[loud, k].mean() < r.wave_latency[quiet, k].mean()


def test_fmp_is_about_one_without_a_response(cohort: Records):
    fmp = cohort.static[:, 3]
    assert 0.7 < np.median(fmp[~cohort.peak_mask]) < 1.6
    assert np.median(fmp[cohort.peak_mask]) > 1.5 * np.median(fmp[~cohort.peak_mask])
    assert fmp.min() >= 0.0
