"""The Eaton-Peabody Lab (EPL) text format, as read by the open-source ``abr`` analysis program.

An EPL file is one intensity series of one ear::

    :RUN-3<TAB>LEVEL SWEEP<TAB>...
    :SW EAR: R<TAB>SW FREQ: 16.00<TAB># AVERAGES: 512<TAB>REP RATE (/sec): 40<TAB>...<TAB>SAMPLE (µsec): 10
    :NOTES-
    :LEVELS:10;15;20;...;80;
    :DATA
     -0.052685<TAB> -0.016803<TAB> ...     (one row per time sample, one column per level)

(Latin-1 text; lines may end in CR.) The ``abr`` program (Buran, BSD-3-Clause) reads it in
``abr/parsers/EPL.py``: levels from ``:LEVELS:``, sampling period from ``SAMPLE (µsec)``, the data
reshaped to (samples, levels), all-zero waveforms skipped (an acquisition bug), and by default a
1st-order Butterworth band-pass 300-3000 Hz applied forward and backward (``filtfilt``). Its
analysis files (``<file>-<freq>kHz-analyzed.txt``) hold the threshold and, per level, the marked
``P<i> Latency`` / ``P<i> Amplitude`` (and ``N<i>``; a negative latency means no peak):
:func:`parse_marks` reads every marked peak by name, :func:`read_epl` takes wave V from ``P<wave>``.

Conversion to the pipeline's 200 samples at 20 kHz:

1. band-pass as the ``abr`` program does (its defaults; configurable, or off), at the file's rate;
2. resample to 20 kHz with ``scipy.signal.resample_poly`` (polyphase FIR, Kaiser window, which is
   the anti-aliasing low-pass at the new Nyquist frequency, 10 kHz);
3. keep the first 10 ms (200 samples); a shorter record is reported as a bad signal length;
4. multiply by ``scale`` (EPL samples are taken to be µV).

The file carries no class, age or (without an analysis file) threshold: they are given by the
caller, or (prediction) ``label=None`` reads the recordings unlabelled. A header without a
repetition rate needs ``rate``. Sample indices in the report are the file's level columns. FMP is
estimated as the variance over 2-10 ms divided by the variance of the record after 12 ms, where
the response is over (needs records of at least 14 ms, else pass ``fmp``). The levels are copied
into the intensity column as they are (EPL files from animal labs use dB SPL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal as sps

from data.records import (
    CLASS_NAMES,
    SAMPLE_RATE_HZ,
    SIGNAL_LENGTH,
    UNKNOWN_LABEL,
    DataFormatError,
    Records,
    ValidationReport,
    class_index,
    validate,
)
from data.waveform import FMP_WINDOW

ABR_DEFAULT_FILTER = {"highpass": 300.0, "lowpass": 3000.0, "order": 1}  # abr/main.py defaults
NOISE_FROM_MS = 12.0
# Sampling periods accepted (µs): EPL files use 10-40 µs; 1 µs (1 MHz) to 100 µs (10 kHz, still above
# twice the default 3 kHz low-pass) leaves margins; 0 would divide by zero.
SAMPLE_PERIOD_US = (1.0, 100.0)
MAX_FILTER_ORDER = 10

_P_LEVELS = re.compile(r":LEVELS:([0-9.;\-]+)")
_P_PERIOD = re.compile(r"SAMPLE \(.+?sec\): ([0-9.]+)")
_P_RATE = re.compile(r"REP RATE \(/sec\): ([0-9.]+)")
_P_AVERAGES = re.compile(r"# AVERAGES: ([0-9]+)")
_P_FREQ = re.compile(r"FREQ: ([0-9.]+)")


def parse_epl(path: str | Path) -> dict:
    """The raw content: levels (M,), fs_hz, rate, averages, frequency_khz, data (M T) as in the file."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    text = path.read_text(encoding="ISO-8859-1")
    if not text.startswith(":RUN-"):
        raise DataFormatError(f"{path}: not an EPL file (expected it to start with ':RUN-')")
    header, sep, body = text.partition(":DATA")
    if not sep:
        raise DataFormatError(f"{path}: no ':DATA' marker; expected the header to end with ':DATA'")

    def field(pattern: re.Pattern, what: str, required: bool = True) -> str | None:
        m = pattern.search(header)
        if m is None and required:
            raise DataFormatError(f"{path}: header has no {what}")
        return m.group(1) if m else None

    level_text = field(_P_LEVELS, "':LEVELS:' list")
    try:
        levels = np.array([float(v) for v in level_text.strip(";").split(";") if v])
        period_us = float(field(_P_PERIOD, "'SAMPLE (µsec)' sampling period"))
    except ValueError as exc:
        raise DataFormatError(f"{path}: header: expected numbers in ':LEVELS:' and 'SAMPLE (µsec)' ({exc})") from None
    low, high = SAMPLE_PERIOD_US
    if not low <= period_us <= high:
        raise DataFormatError(f"{path}: header 'SAMPLE (µsec)': expected a sampling period of {low:g} to {high:g} µs, "
                              f"found {period_us:g}")
    try:
        values = np.array(body.split(), dtype=np.float64)
    except ValueError as exc:
        raise DataFormatError(f"{path}: data section is not all numbers ({exc})") from None
    if len(levels) == 0 or values.size % len(levels):
        raise DataFormatError(f"{path}: {values.size} data values do not fill {len(levels)} level columns")
    def number(pattern: re.Pattern, what: str, kind: type = float) -> float | int | None:
        text = field(pattern, what, required=False)
        try:
            return None if text is None else kind(text)
        except ValueError:  # the patterns accept '2.1.1'
            raise DataFormatError(f"{path}: header {what}: expected a number, found {text!r}") from None

    rate = number(_P_RATE, "'REP RATE (/sec)'")
    return {
        "levels": levels,
        "fs_hz": 1e6 / period_us,
        "rate": float("nan") if rate is None else rate,
        "averages": number(_P_AVERAGES, "'# AVERAGES'", int),
        "frequency_khz": number(_P_FREQ, "'FREQ'"),
        "data": values.reshape(-1, len(levels)).T,  # (M T)
    }


@dataclass
class AnalysisMarks:
    """An ``abr`` analysis file (``<file>-<freq>kHz-analyzed.txt``): the threshold (None where the file
    says None), the levels (M,) in file order, and for each marked peak the file has columns for
    (``"P1"``, ``"N1"``, ... ``"P5"``, in column order) its latency (M,) in ms and amplitude (M,) as written.
    Where the file marks no peak (a negative latency: "Negative latencies indicate no peak"; the
    ``abr`` program writes the mark of a subthreshold waveform with its latency negated) both are NaN."""

    path: Path
    threshold: float | None
    levels: np.ndarray
    latency: dict[str, np.ndarray]
    amplitude: dict[str, np.ndarray]

    def at_levels(self, name: str, levels: np.ndarray) -> np.ndarray:
        """(len(levels),) peak ``name``'s latency (ms) at each of ``levels``; NaN where the file marks no
        peak there, has no row for that level, or no columns for that peak."""
        lat = dict(zip(self.levels.tolist(), self.latency.get(name, np.full(len(self.levels), np.nan)).tolist(),
                       strict=True))
        return np.array([lat.get(float(lv), np.nan) for lv in levels])


_P_MARK_COLUMN = re.compile(r"([PN][0-9]+) (Latency|Amplitude)")


def parse_marks(path: str | Path) -> AnalysisMarks:
    """Every marked peak of an ``abr`` analysis file (see :class:`AnalysisMarks`). Bad content is one
    DataFormatError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: analysis file not found")
    threshold, header, rows = None, None, []
    for number, line in enumerate(path.read_text(encoding="ISO-8859-1").splitlines(), 1):
        where = f"{path}: line {number}"
        try:
            if line.startswith("Threshold"):
                value = line.split(":", 1)[-1].strip()
                threshold = None if value.lower() in ("none", "nan", "") else float(value)
            elif line.startswith("Level"):
                header = _mark_columns(where, line.rstrip("\t").split("\t"))
            elif header is not None and line.strip():
                cells = line.rstrip("\t").split("\t")
                if len(cells) != header[0]:
                    raise DataFormatError(f"{where}: expected {header[0]} tab-separated values (as the 'Level' "
                                          f"line names), found {len(cells)}")
                rows.append((where, float(cells[0]), {k: float(cells[i]) for k, i in header[1].items()}))
        except DataFormatError:
            raise
        except ValueError as exc:
            raise DataFormatError(f"{where}: expected numbers ({exc})") from None
    if header is None:
        raise DataFormatError(f"{path}: no 'Level' header line; expected an abr analysis file")
    seen: dict[float, str] = {}
    for where, level, _ in rows:
        if level in seen:
            raise DataFormatError(f"{where}: level {level:g} was given before ({seen[level].rsplit(': ', 1)[-1]}); "
                                  "expected each level once")
        seen[level] = where
    levels = np.array(list(seen))
    names = list(dict.fromkeys(k.split()[0] for k in header[1]))
    latency = {n: np.array([r[f"{n} Latency"] for _, _, r in rows]) for n in names}
    amplitude = {n: np.array([r[f"{n} Amplitude"] for _, _, r in rows]) for n in names}
    for n in names:
        none = ~(latency[n] > 0)  # negative: no peak (NaN too: nothing marked)
        latency[n][none] = amplitude[n][none] = np.nan
    return AnalysisMarks(path, threshold, levels, latency, amplitude)


def _mark_columns(where: str, columns: list[str]) -> tuple[int, dict[str, int]]:
    """The 'Level' line: (number of columns, {"P1 Latency": column index, ...}); a peak needs both columns."""
    if columns[0] != "Level":
        raise DataFormatError(f"{where}: expected the header to start with 'Level', found {columns[0]!r}")
    found = {c: i for i, c in enumerate(columns) if _P_MARK_COLUMN.fullmatch(c)}
    for c in found:
        name, kind = c.split()
        pair = f"{name} {'Amplitude' if kind == 'Latency' else 'Latency'}"
        if pair not in found:
            raise DataFormatError(f"{where}: column '{c}' has no '{pair}' beside it; expected both for each peak")
    return len(columns), found


def parse_analysis(path: str | Path, wave: int = 5) -> tuple[float | None, dict[float, tuple[float, float]]]:
    """An ``abr`` analysis file: (threshold or None, {level: (latency ms, amplitude)} for wave ``wave``,
    NaN where no peak is marked; empty where the file has no P``wave`` columns)."""
    marks = parse_marks(path)
    name = f"P{wave}"
    if name not in marks.latency:
        return marks.threshold, {}
    return marks.threshold, {float(lv): (float(lat), float(amp)) for lv, lat, amp in
                             zip(marks.levels, marks.latency[name], marks.amplitude[name], strict=True)}


def resample(x: np.ndarray, fs_hz: float) -> np.ndarray:
    """(M T) at fs_hz -> (M T') at 20 kHz, polyphase FIR (anti-aliasing included)."""
    ratio = Fraction(SAMPLE_RATE_HZ / fs_hz).limit_denominator(1000)
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


def read_epl(
    path: str | Path,
    label: str | None,
    age: float,
    patient_id: int = 0,
    threshold: float | None = None,
    analysis: str | Path | None = None,
    wave: int = 5,
    filter_settings: dict | None = ABR_DEFAULT_FILTER,
    scale: float = 1.0,
    fmp: float | None = None,
    strict: bool = True,
    rate: float | None = None,
) -> tuple[Records, ValidationReport]:
    """Read one EPL file as Records (one recording per level); see the module docstring.
    ``label=None``: unlabelled (class unknown, threshold NaN unless given or in ``analysis``)."""
    path = Path(path)
    raw = parse_epl(path)
    cls = UNKNOWN_LABEL if label is None else class_index(label)
    if cls < 0 and label is not None:
        raise DataFormatError(f"{path}: label: expected one of {list(CLASS_NAMES)}, found {label!r}")
    if not np.isfinite(raw["rate"]):
        if rate is None:
            raise DataFormatError(f"{path}: header has no 'REP RATE (/sec)'; pass --rate (stimuli per second)")
        raw["rate"] = float(rate)
    threshold, peaks, notes = _threshold_and_peaks(path, label, threshold, analysis, wave)
    data, levels = raw["data"], raw["levels"]
    keep = ~(data == 0).all(axis=1)  # all-zero waveforms: the EPL acquisition bug the abr program skips
    if not keep.any():
        raise DataFormatError(f"{path}: every level's waveform is all zeros (the EPL acquisition bug); no recordings")
    x = data if not filter_settings else _band_pass(path, data, filter_settings, raw["fs_hz"])
    x = resample(x, raw["fs_hz"]) * scale  # (M T') at 20 kHz, µV
    fmp_values = _fmp(path, x, fmp)
    lat = np.array([peaks.get(float(lv), (np.nan, np.nan))[0] for lv in levels])
    amp = np.array([peaks.get(float(lv), (np.nan, np.nan))[1] for lv in levels]) * scale
    mask = np.isfinite(lat) & (lat > 0) & np.isfinite(amp)
    x, levels, lat, amp, mask, fmp_values = (v[keep] for v in (x, levels, lat, amp, mask, fmp_values))
    m = len(levels)
    cols = {
        "signal": [row[:SIGNAL_LENGTH] for row in x],
        "static": np.stack([np.full(m, float(age)), levels, np.full(m, raw["rate"]), fmp_values], axis=1),
        "label": np.full(m, cls, dtype=np.int64),
        "peak_mask": mask,
        "peak_latency": np.where(mask, lat, np.nan),
        "peak_amplitude": np.where(mask, amp, np.nan),
        "threshold": np.full(m, float(threshold)),
        "patient_id": np.full(m, patient_id, dtype=object),  # checked by the validator, never cast
    }
    lengths = np.array([min(len(row), SIGNAL_LENGTH) for row in x])
    meta = _source_meta(path, raw, filter_settings, scale)
    records, report = validate(cols, source=str(path), strict=strict, signal_lengths=lengths, meta=meta,
                               labelled=label is not None)
    _in_file_columns(report, keep)
    report.notes.extend(notes)
    return records, report


def _threshold_and_peaks(path: Path, label: str | None, threshold: float | None, analysis: str | Path | None,
                         wave: int) -> tuple[float, dict[float, tuple[float, float]], list[str]]:
    """(threshold, {level: (latency ms, amplitude)} of wave ``wave``, report notes): the threshold given,
    else the analysis file's, else NaN for an unlabelled read; a labelled read without one is refused."""
    notes = []
    peaks: dict[float, tuple[float, float]] = {}
    if analysis is not None:
        file_threshold, peaks = parse_analysis(analysis, wave)
        threshold = file_threshold if threshold is None else threshold
        if not peaks:
            notes.append(f"analysis file has no P{wave} columns: wave V absent in every recording")
    elif label is not None:
        notes.append("no analysis file: wave V absent in every recording (pass --analysis to read marked peaks)")
    if threshold is None and label is None:
        threshold = float("nan")
    if threshold is None:
        raise DataFormatError(f"{path}: no threshold; pass --threshold (the analysis file, if any, says None)")
    return threshold, peaks, notes


def _band_pass(path: Path, x: np.ndarray, settings: dict, fs_hz: float) -> np.ndarray:
    """(M T) -> (M T): zero-phase Butterworth band-pass (filtfilt) with the checked ``settings``."""
    _check_filter(path, settings, fs_hz)
    b, a = sps.iirfilter(int(settings["order"]), (settings["highpass"], settings["lowpass"]),
                         btype="band", ftype="butter", fs=fs_hz)
    padlen = 3 * max(len(a), len(b))  # filtfilt's default: scipy's own message names neither file nor flag
    if x.shape[-1] <= padlen:
        raise DataFormatError(f"{path}: {x.shape[-1]} sample(s) per level; the band-pass filter (filtfilt) needs "
                              f"more than {padlen}: expected a whole recording (or pass --no-filter)")
    return sps.filtfilt(b, a, x, axis=-1)


def _source_meta(path: Path, raw: dict, filter_settings: dict | None, scale: float) -> dict:
    """The Records meta of an EPL read: the file, its rate, and the filter and resampling applied."""
    fs = filter_settings or {}
    filt = (f"Butterworth band-pass {fs['highpass']:g}-{fs['lowpass']:g} Hz, order {fs['order']}, filtfilt"
            if fs else "none")
    return {"source": {"kind": "epl", "file": path.name, "fs_hz": raw["fs_hz"], "filter": filt,
                       "resampling": "scipy.signal.resample_poly to 20 kHz, first 10 ms", "scale": scale,
                       "frequency_khz": raw["frequency_khz"], "averages": raw["averages"],
                       "intensity_unit_in_file": "as in the file's :LEVELS: (dB SPL in EPL files)"}}


def _in_file_columns(report: ValidationReport, keep: np.ndarray) -> None:
    """validate numbered the non-zero levels: the report names the file's columns instead, and counts the
    all-zero levels (``~keep``) it never saw."""
    columns = np.flatnonzero(keep)
    report.kept = columns[report.kept]
    report.rows = {r: columns[i].tolist() for r, i in report.rows.items()}
    report.examples = {r: columns[i].tolist() for r, i in report.examples.items()}
    report.n_read += int((~keep).sum())
    report.add("all-zero waveform (EPL acquisition bug)", np.flatnonzero(~keep))


def _check_filter(path: Path, settings: dict, fs_hz: float) -> None:
    """0 < highpass < lowpass < Nyquist and 1 <= order <= MAX_FILTER_ORDER, else one line naming the flags."""
    high, low, order = settings["highpass"], settings["lowpass"], settings["order"]
    nyquist = fs_hz / 2
    if not 0 < high < low < nyquist:
        raise DataFormatError(f"{path}: --highpass/--lowpass: expected 0 < highpass < lowpass < {nyquist:g} Hz "
                              f"(half the file's rate), found {high:g} and {low:g}")
    if not 1 <= order <= MAX_FILTER_ORDER:
        raise DataFormatError(f"{path}: --order: expected 1 to {MAX_FILTER_ORDER}, found {order}")


def _fmp(path: Path, x: np.ndarray, fixed: float | None) -> np.ndarray:
    if fixed is not None:
        return np.full(len(x), float(fixed))
    start = int(NOISE_FROM_MS * SAMPLE_RATE_HZ / 1e3)
    if x.shape[1] < start + int(2e-3 * SAMPLE_RATE_HZ):
        raise DataFormatError(f"{path}: record is {x.shape[1] / SAMPLE_RATE_HZ * 1e3:.1f} ms; FMP needs >= 14 ms "
                              "(noise after 12 ms); pass --fmp VALUE")
    noise_var = x[:, start:].var(axis=1)
    window = x[:, :SIGNAL_LENGTH][:, FMP_WINDOW]
    return window.var(axis=1) / np.maximum(noise_var, 1e-12)
