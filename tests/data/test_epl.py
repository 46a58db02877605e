"""The Eaton-Peabody Lab text format (the ``abr`` program's input), on a fixture written for these tests."""

from __future__ import annotations

import re

import numpy as np
import pytest

from data.epl import parse_analysis, parse_epl, parse_marks, read_epl, resample
from data.records import SIGNAL_LENGTH, DataFormatError

from .conftest import FIXTURES

EPL = FIXTURES / "ABR-fixture-1"
ANALYSIS = FIXTURES / "ABR-fixture-1-16.0kHz-analyzed.txt"
ANALYSIS_B = FIXTURES / "ABR-fixture-1-16.0kHz-B-analyzed.txt"  # a second reader: P1, N1, P3, P5


def test_parse_header_and_data():
    raw = parse_epl(EPL)
    assert raw["levels"].tolist() == [20, 40, 60, 80]
    assert raw["fs_hz"] == 100_000.0 and raw["rate"] == 21.0 and raw["averages"] == 512
    assert raw["data"].shape == (4, 1500)


def test_read_with_analysis():
    records, report = read_epl(EPL, "SNİK", age=3, patient_id=7, analysis=ANALYSIS)
    assert len(records) == 4 and records.signal.shape == (4, SIGNAL_LENGTH)
    assert records.threshold.tolist() == [30.0] * 4  # from the analysis file
    assert records.peak_mask.tolist() == [False, True, True, True]  # negative latency at 20 dB: no peak
    np.testing.assert_allclose(records.peak_latency[1:], [6.06, 5.71, 5.45], rtol=1e-6)
    assert records.static[:, :3].tolist() == [[3, lv, 21] for lv in (20, 40, 60, 80)]
    assert (records.static[1:, 3] > 5 * records.static[0, 3]).all()  # FMP larger with a response
    assert set(records.label.tolist()) == {2} and set(records.patient_id.tolist()) == {7}
    assert "300-3000 Hz" in records.meta["source"]["filter"] and report.n_kept == 4


def test_resampled_waveform_keeps_the_peak():
    """The wave V peak (5.45 ms at 80 dB in the fixture) survives filtering and resampling."""
    records, _ = read_epl(EPL, "NORMAL", age=1, analysis=ANALYSIS, filter_settings=None)
    t_peak = np.argmax(records.signal[3, 80:140]) * 0.05 + 4.0
    assert abs(t_peak - 5.45) < 0.1
    x = np.sin(2 * np.pi * 1000 * np.arange(1000) / 100_000)[None]  # 1 kHz at 100 kHz
    y = resample(x, 100_000.0)
    assert y.shape == (1, 200) and abs(np.abs(y[0, 20:180]).max() - 1.0) < 0.02


def test_without_analysis_needs_a_threshold_and_marks_no_peaks():
    with pytest.raises(DataFormatError, match="no threshold; pass --threshold"):
        read_epl(EPL, "NORMAL", age=0)
    records, report = read_epl(EPL, "NORMAL", age=0, threshold=25)
    assert not records.peak_mask.any()
    assert any("no analysis file" in n for n in report.notes)


def test_all_zero_waveforms_are_dropped_and_reported(tmp_path):
    lines = EPL.read_bytes().decode("ISO-8859-1").split("\r\n")
    head, rows = lines[0], lines[1:]
    first_row = head.rsplit(":DATA\r", 1)
    zeroed = [r.split("\t") for r in [first_row[1], *rows] if r]
    for r in zeroed:
        r[1] = " 0.000000"  # the 40 dB column
    text = first_row[0] + ":DATA\r" + "\r\n".join("\t".join(r) for r in zeroed) + "\r\n"
    path = tmp_path / "zeroed"
    path.write_bytes(text.encode("ISO-8859-1"))
    records, report = read_epl(path, "NORMAL", age=0, threshold=25)
    assert len(records) == 3 and report.dropped == {"all-zero waveform (EPL acquisition bug)": 1}
    assert report.n_read == 4


def test_errors(tmp_path):
    with pytest.raises(DataFormatError, match="label: expected one of"):
        read_epl(EPL, "DEAF", age=0, threshold=20)
    (tmp_path / "x").write_text("hello")
    with pytest.raises(DataFormatError, match="not an EPL file"):
        parse_epl(tmp_path / "x")
    short = tmp_path / "short"
    text = EPL.read_bytes().decode("ISO-8859-1")
    head, data = text.split(":DATA\r")
    short.write_bytes((head + ":DATA\r" + "\r\n".join(data.split("\r\n")[:1100])).encode("ISO-8859-1"))
    with pytest.raises(DataFormatError, match="FMP needs >= 14 ms"):
        read_epl(short, "NORMAL", age=0, threshold=20)
    records, _ = read_epl(short, "NORMAL", age=0, threshold=20, fmp=2.5)
    assert records.static[:, 3].tolist() == [2.5] * 4


def test_analysis_parser():
    threshold, peaks = parse_analysis(ANALYSIS, wave=1)
    assert threshold == 30.0 and sorted(peaks) == [20.0, 40.0, 60.0, 80.0]



def test_marks_parser_returns_every_marked_peak_by_name():
    marks = parse_marks(ANALYSIS_B)
    assert marks.threshold == 40.0 and marks.levels.tolist() == [80.0, 60.0, 40.0, 20.0]  # file order
    assert list(marks.latency) == ["P1", "N1", "P3", "P5"] == list(marks.amplitude)  # column order
    np.testing.assert_allclose(marks.latency["P3"], [3.70, 3.94, 4.18, 4.42])
    np.testing.assert_allclose(marks.amplitude["N1"], [-0.2] * 4)  # negative amplitudes are values, not "no peak"
    np.testing.assert_allclose(marks.at_levels("P1", np.array([40.0, 80.0, 70.0])), [2.23, 1.65, np.nan])


def test_a_negative_latency_is_no_peak():
    """The abr program writes a subthreshold mark with its latency negated: no peak, latency and amplitude NaN."""
    marks = parse_marks(ANALYSIS_B)
    assert np.isnan(marks.latency["P1"][3]) and np.isnan(marks.amplitude["P1"][3])  # 20 dB: -2.32 in the file
    assert np.isfinite(marks.latency["P1"][:3]).all()
    assert np.isnan(parse_marks(ANALYSIS).latency["P5"][-1])  # -6.42 at 20 dB in the first reader's file
    assert np.isnan(marks.at_levels("P2", marks.levels)).all()  # no columns for that peak: nothing marked


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("1.89000000", "1.8.9", 1), r"line 7: expected numbers \(could not convert string to float: "
                                                    r"'1\.8\.9'\)"),
    (lambda t: t.replace("\t0.25\t5.71000000\t0.52000000", "", 1), r"line 7: expected 11 tab-separated values "
                                                                      r"\(as the 'Level' line names\), found 8"),
    (lambda t: t.replace("40.00\t", "80.00\t", 1), r"line 8: level 80 was given before \(line 6\); "
                                                    r"expected each level once"),
    (lambda t: t.replace("\tP3 Amplitude", "\tP3 Amp", 1), r"line 5: column 'P3 Latency' has no 'P3 Amplitude' "
                                                           r"beside it; expected both for each peak"),
    (lambda t: t.replace("Threshold (dB SPL): 40.00", "Threshold (dB SPL): forty", 1),
     r"line 1: expected numbers \(could not convert string to float: 'forty'\)"),
])
def test_a_bad_marks_file_is_one_line_naming_file_and_line(tmp_path, edit, message):
    bad = tmp_path / "b.txt"
    bad.write_text(edit(ANALYSIS_B.read_text(encoding="ISO-8859-1")), encoding="ISO-8859-1")
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(bad))}: {message}$"):
        parse_marks(bad)

def _with_header(tmp_path, pattern, replacement):
    text = EPL.read_bytes().decode("ISO-8859-1")
    path = tmp_path / "edited"
    path.write_bytes(re.sub(pattern, replacement, text, count=1).encode("ISO-8859-1"))
    return path


@pytest.mark.parametrize(("period", "message"), [
    ("0", r"header 'SAMPLE \(µsec\)': expected a sampling period of 1 to 100 µs, found 0$"),  # ZeroDivisionError
    ("0.001", r"header 'SAMPLE \(µsec\)': expected a sampling period of 1 to 100 µs, found 0\.001$"),
    ("5000", r"header 'SAMPLE \(µsec\)': expected a sampling period of 1 to 100 µs, found 5000$"),
    ("1.2.3", r"header: expected numbers in ':LEVELS:' and 'SAMPLE \(µsec\)' \(could not convert"),
])
def test_a_bad_sampling_period_is_one_line(tmp_path, period, message):
    path = _with_header(tmp_path, r"SAMPLE \((.+?)sec\): [0-9.]+", rf"SAMPLE (\g<1>sec): {period}")
    with pytest.raises(DataFormatError, match=rf"edited: {message}"):
        read_epl(path, "NORMAL", age=0, threshold=20)


@pytest.mark.parametrize(("settings", "message"), [
    ({"highpass": 300.0, "lowpass": 60_000.0, "order": 1}, r"--highpass/--lowpass: expected 0 < highpass < lowpass "
                                                           r"< 50000 Hz \(half the file's rate\), found 300 and 60000"),
    ({"highpass": 3000.0, "lowpass": 300.0, "order": 1}, r"--highpass/--lowpass: .*, found 3000 and 300"),
    ({"highpass": -1.0, "lowpass": 300.0, "order": 1}, r"--highpass/--lowpass: .*, found -1 and 300"),
    ({"highpass": 300.0, "lowpass": 3000.0, "order": 0}, r"--order: expected 1 to 10, found 0"),
])
def test_filter_settings_are_checked_against_the_file(settings, message):
    with pytest.raises(DataFormatError, match=rf"ABR-fixture-1: {message}$"):
        read_epl(EPL, "NORMAL", age=0, threshold=20, filter_settings=settings)


def test_a_bad_analysis_file_names_file_and_line(tmp_path):
    bad = tmp_path / "a.txt"
    bad.write_text(ANALYSIS.read_text(encoding="ISO-8859-1").replace("30", "thirty", 1), encoding="ISO-8859-1")
    with pytest.raises(DataFormatError, match=r"a\.txt: line \d+: expected numbers \(could not convert string to "
                                              r"float: 'thirty\.00'\)$"):
        parse_analysis(bad)
    with pytest.raises(DataFormatError, match=r"nope\.txt: analysis file not found$"):
        read_epl(EPL, "NORMAL", age=0, analysis=tmp_path / "nope.txt")


def test_a_file_whose_every_waveform_is_zero_has_no_recordings(tmp_path):
    text = EPL.read_bytes().decode("ISO-8859-1")
    head, data = text.split(":DATA\r")
    zero = "\r\n".join("\t".join(" 0.0" for _ in row.split("\t")) for row in data.split("\r\n") if row.strip())
    path = tmp_path / "zeros"
    path.write_bytes((head + ":DATA\r" + zero + "\r\n").encode("ISO-8859-1"))
    with pytest.raises(DataFormatError, match=r"zeros: every level's waveform is all zeros \(the EPL acquisition "
                                              r"bug\); no recordings$"):
        read_epl(path, "NORMAL", age=0, threshold=20, strict=False)


def test_unlabelled_read_for_prediction(tmp_path):
    records, report = read_epl(EPL, None, age=0.5)
    assert len(records) == 4 and (records.label == -1).all() and np.isnan(records.threshold).all()
    assert report.kept.tolist() == [0, 1, 2, 3] and not report.notes
    text = EPL.read_bytes().decode("ISO-8859-1").replace("REP RATE (/sec): 21\t", "")
    path = tmp_path / "norate"
    path.write_bytes(text.encode("ISO-8859-1"))
    with pytest.raises(DataFormatError, match=r"norate: header has no 'REP RATE \(/sec\)'; pass --rate"):
        read_epl(path, None, age=0.5)
    records, _ = read_epl(path, None, age=0.5, rate=40.0)
    assert (records.static[:, 2] == 40.0).all()
