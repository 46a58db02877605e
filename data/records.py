"""Recordings held as columns, and the one validator every loader goes through.

A :class:`Records` is the in-memory form of the native file: one row per recording, numpy
columns in physical units. Absent wave-V values are NaN here (and in the native file); the
dataset turns them into 0.0 for tensors.

Every reader (native NPZ, legacy pickle, CSV, EPL) builds plain columns and calls
:func:`validate`, so one set of rules decides what is a usable recording:

==========================  ========================================================
reason                      rule
==========================  ========================================================
``signal length``           the signal does not have ``SIGNAL_LENGTH`` samples
``non-finite signal``       NaN or Inf in the signal
``non-finite static``       NaN or Inf in age, intensity, rate or FMP
``unknown label``           the class index is not one of ``CLASS_NAMES``
``non-finite threshold``    NaN or Inf threshold
``<field> out of range``    age, intensity, rate, FMP or threshold outside :data:`RANGES`
``bad patient id``          NaN, fractional, non-integer or beyond int64 patient id
``bad series id``           the same for the optional series id
``bad peak_mask``           a ``peak_mask`` other than 0/1 (true/false): 2 is not "present"
``peak value without peak`` latency or amplitude present where ``peak_mask`` is False
``peak without value``      latency or amplitude missing where ``peak_mask`` is True
``bad wave state``          ``wave_present`` (waves I, III; optional) not 1, 0 or -1 (unmarked)
``wave value without wave`` a wave I / III latency or amplitude where that wave is not present
``wave without value``      a present wave I / III without its latency and amplitude
==========================  ========================================================

:data:`RANGES` is the one home of the allowed ranges (the clinical data set's span in
DESIGN.md, with margins); :func:`range_problem` checks one value against them for other callers.
Patient ids are never cast: 1.5 or NaN would merge patients (a NaN cast to int64 is an arbitrary
number), so they are refused. A file with no recordings, or (lenient) none left, is an error.

"Finite" means finite in float32, the dtype the columns are stored in: a value beyond ±3.4e38
(e.g. 1e300 in a float64 file or a CSV cell) would load as Inf and counts as non-finite. A column
whose dtype is not numeric (e.g. text signals) is refused as a whole, in lenient mode too.

``strict=True`` raises :class:`DataFormatError` at the first offending recording, naming the file
and the sample index; ``strict=False`` drops offending recordings and returns a
:class:`ValidationReport` that counts them by reason. Nothing is dropped silently.

Labels (class, threshold, wave V marks) are what training learns from, so a read demands them by
default. ``labelled=False`` is the read path of prediction (``evaluation.predict``): the label
columns (:data:`LABEL_COLUMNS`) may be absent, and a recording may lack its class
(:data:`UNKNOWN_LABEL`) or threshold (NaN); whatever label is given is still checked by the rules
above. Training reads with the default, so an unlabelled file is refused there.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

# The class index of a recording is its position here (DESIGN.md); the network's class head has one
# logit per name.
CLASS_NAMES: tuple[str, ...] = ("NORMAL", "NÖROPATİ", "SNİK", "TOTAL", "İTİK")
NUM_CLASSES = len(CLASS_NAMES)
SAMPLE_RATE_HZ = 20_000.0
SIGNAL_LENGTH = 200  # 10 ms at 20 kHz
STATIC_NAMES: tuple[str, ...] = ("age", "intensity", "rate", "fmp")
STATIC_UNITS: tuple[str, ...] = ("years", "dB nHL", "1/s", "ratio")
F32_MAX = float(np.finfo(np.float32).max)  # larger magnitudes load as Inf in the float32 columns
_NUMERIC_KINDS = "biuf"  # numpy dtype kinds: bool, int, unsigned, float
INT64_MAX = int(np.iinfo(np.int64).max)
UNKNOWN_LABEL = -1  # the class of a recording read with labelled=False that carries none
LABEL_COLUMNS = ("label", "threshold", "peak_mask", "peak_latency", "peak_amplitude")
# Waves read per recording (DESIGN.md, patient level): I, III and V. Wave V keeps its own columns
# (peak_mask / peak_latency / peak_amplitude, the seeds' names); waves I and III are the optional
# columns ``wave_present`` / ``wave_latency`` / ``wave_amplitude`` of shape (N 2), in EXTRA_WAVES order.
WAVE_NAMES: tuple[str, ...] = ("I", "III", "V")
EXTRA_WAVES: tuple[str, ...] = WAVE_NAMES[:-1]
WAVE_UNMARKED = -1  # wave_present: the source does not mark this wave here (the loss ignores it)
EXACT_FLOAT_INT = 2**53  # float ids beyond this may already have been rounded: not exact integers

# Allowed values, per field: (low, high, unit). The clinical data set spans (DESIGN.md) age 0-75 y,
# intensity 0-100 dB nHL, rate 11.1-49.1 /s, FMP 0-1515, threshold 0-100 dB nHL (105: the generator's
# "no response"); the margins admit other clinics' protocols (rates up to 200 /s, levels down to
# -20 dB and up to 140 dB SPL in animal labs) and refuse entry errors and other units (age in
# months beyond 120, a threshold coded 999).
RANGES: dict[str, tuple[float, float, str]] = {
    "age": (0.0, 120.0, "years"),
    "intensity": (-20.0, 140.0, "dB"),
    "rate": (1.0, 200.0, "/s"),
    "fmp": (0.0, 10_000.0, "(ratio)"),
    "threshold": (-20.0, 140.0, "dB nHL"),
}
RANGE_TOLERANCE = 1e-6  # of each range's span: rounding of a scaler's inverse transform (age 0 -> -2.4e-7)


def _in_range(name: str, value: np.ndarray | float) -> np.ndarray | bool:
    low, high, _ = RANGES[name]
    tol = RANGE_TOLERANCE * (high - low)
    return (value >= low - tol) & (value <= high + tol)  # NaN: False


class DataFormatError(ValueError):
    """A data file (or in-memory column set) that cannot be used; the message names file and sample."""


@dataclass
class Records:
    """Recordings as columns (N rows). Units: µV, years, dB nHL, 1/s, ms."""

    signal: np.ndarray  # (N L) float32, µV
    static: np.ndarray  # (N 4) float32: age, intensity, rate, FMP
    label: np.ndarray  # (N,) int64, index into CLASS_NAMES; UNKNOWN_LABEL only in a labelled=False read
    peak_mask: np.ndarray  # (N,) bool, wave V present
    peak_latency: np.ndarray  # (N,) float32, ms; NaN where peak_mask is False
    peak_amplitude: np.ndarray  # (N,) float32, µV; NaN where peak_mask is False
    threshold: np.ndarray  # (N,) float32, dB nHL; NaN only in a labelled=False read
    patient_id: np.ndarray  # (N,) int64
    # (N,) int64: recordings of one intensity series (one ear or session) share it; a source that does
    # not record ears or sessions has one series per patient (None -> a copy of patient_id).
    series_id: np.ndarray | None = None
    # Waves I and III (EXTRA_WAVES), as a peak marker marks them: (N 2) int8 1 present, 0 absent,
    # WAVE_UNMARKED where the source does not say (None -> unmarked everywhere); latency (ms) and
    # amplitude (µV) (N 2) float32, NaN unless present.
    wave_present: np.ndarray | None = None
    wave_latency: np.ndarray | None = None
    wave_amplitude: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    COLUMNS = ("signal", "static", "label", "peak_mask", "peak_latency", "peak_amplitude", "threshold", "patient_id")
    WAVE_COLUMNS = ("wave_present", "wave_latency", "wave_amplitude")
    OPTIONAL_COLUMNS = ("series_id", *WAVE_COLUMNS)  # readers may omit them; see __post_init__

    def __post_init__(self) -> None:
        if self.series_id is None:
            self.series_id = np.array(self.patient_id, dtype=np.int64, copy=True)
        shape = (len(self.patient_id), len(EXTRA_WAVES))
        if self.wave_present is None:
            self.wave_present = np.full(shape, WAVE_UNMARKED, dtype=np.int8)
        for name in ("wave_latency", "wave_amplitude"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(shape, np.nan, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.label)

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.COLUMNS + self.OPTIONAL_COLUMNS}

    def subset(self, index: np.ndarray) -> Records:
        """The rows ``index`` (an integer or boolean array), sharing ``meta``."""
        return Records(**{k: v[index] for k, v in self.columns().items()}, meta=self.meta)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Records) or len(self) != len(other):
            return False
        return all(np.array_equal(a, b, equal_nan=a.dtype.kind == "f") for a, b in
                   zip(self.columns().values(), other.columns().values(), strict=True))

    @staticmethod
    def concatenate(parts: Sequence[Records], meta: dict | None = None) -> Records:
        cols = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Records)
                if f.name != "meta"}  # series_id included: every Records has one after __post_init__
        return Records(**cols, meta=dict(meta if meta is not None else parts[0].meta))


@dataclass
class ValidationReport:
    """What a lenient read kept and what it dropped, by reason (with the first few sample indices)."""

    source: str
    n_read: int = 0
    n_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # changes that kept the recording (e.g. a filled value)
    rows: dict[str, list[int]] = field(default_factory=dict)  # every dropped sample index, by reason
    # sample index -> "expected ..., found ...", for every dropped recording
    details: dict[int, str] = field(default_factory=dict)
    kept: np.ndarray | None = None  # (n_kept,) the sample index of each kept recording, in order

    def add(self, reason: str, index: np.ndarray) -> None:
        if len(index):
            self.dropped[reason] = self.dropped.get(reason, 0) + len(index)
            self.rows.setdefault(reason, []).extend(int(i) for i in index)
            self.examples.setdefault(reason, []).extend(int(i) for i in index[: 5 - len(self.examples.get(reason, []))])

    def lines(self) -> list[str]:
        out = [f"{self.source}: read {self.n_read} recordings, kept {self.n_kept}, dropped {self.n_read - self.n_kept}"]
        for reason, count in sorted(self.dropped.items()):
            first = self.examples[reason][0]
            detail = f"; sample {first}: {self.details[first]}" if first in self.details else ""
            out.append(f"  dropped {count}: {reason} (first samples: {self.examples[reason]}{detail})")
        out.extend(f"  note: {n}" for n in self.notes)
        return out

    def to_dict(self) -> dict:
        return {"source": self.source, "n_read": self.n_read, "n_kept": self.n_kept,
                "dropped": dict(self.dropped), "examples": dict(self.examples),
                "details": {str(i): d for i, d in self.details.items()},
                "notes": list(self.notes)}


def canonical_class_name(name: str) -> str:
    """ASCII upper-case form used to match class names: ``'Nöropati'`` and ``'NOROPATI'`` -> ``'NOROPATI'``."""
    decomposed = unicodedata.normalize("NFKD", str(name).strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


_CANONICAL = {canonical_class_name(n): i for i, n in enumerate(CLASS_NAMES)}


def class_index(name: str) -> int:
    """Index of a class name in CLASS_NAMES, ignoring case and Turkish diacritics; -1 if unknown."""
    return _CANONICAL.get(canonical_class_name(name), -1)


def range_problem(name: str, value: float) -> str | None:
    """None if ``value`` is finite and inside ``RANGES[name]``, else what was expected and found."""
    low, high, unit = RANGES[name]
    if _in_range(name, value):
        return None
    return f"{name}: expected {low:g} to {high:g} {unit}, found {value!r}"


def integer_value(value: object) -> int | None:
    """``value`` as an exact int (int, numpy integer, integral float within 2**53, ASCII digits), else
    None. bools, fractions, NaN, Unicode digits and ints beyond int64 are not integers here."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        out = int(value)
    elif isinstance(value, (float, np.floating)):
        if not (np.isfinite(value) and float(value).is_integer() and abs(value) <= EXACT_FLOAT_INT):
            return None
        out = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("+-").isdigit():
        out = int(value.strip())
    else:
        return None
    return out if -INT64_MAX - 1 <= out <= INT64_MAX else None


def _patient_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ok, ids int64): ok where the id is an exact integer within int64 (see :func:`integer_value`)."""
    if values.dtype.kind == "i":
        return np.ones(len(values), dtype=bool), values.astype(np.int64)
    if values.dtype.kind == "f":
        v = values.astype(np.float64)
        ok = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) <= EXACT_FLOAT_INT)
    elif values.dtype.kind == "u":
        ok = values <= INT64_MAX
        v = values
    elif values.dtype.kind == "O":
        parsed = [integer_value(x) for x in values]
        ok = np.array([p is not None for p in parsed], dtype=bool)
        v = np.array([p if p is not None else 0 for p in parsed], dtype=np.int64)
    else:  # bool (or anything else): ids of two patients at most are not ids
        return np.zeros(len(values), dtype=bool), np.zeros(len(values), dtype=np.int64)
    return ok, np.where(ok, v, 0).astype(np.int64)


def validate(
    columns: dict[str, object],
    source: str,
    strict: bool = True,
    signal_lengths: np.ndarray | None = None,
    meta: dict | None = None,
    index_offset: int = 0,
    labelled: bool = True,
) -> tuple[Records, ValidationReport]:
    """Check columns against the rules in the module docstring; return the usable rows and a report.

    ``columns`` holds the eight Records columns (without ``labelled``, the label columns may be
    absent); ``signal`` may be (N L) with any L, or a list of per-sample arrays of any length (then
    ``signal_lengths`` is computed here). Sample indices in messages are row numbers in ``source``
    (plus ``index_offset``).
    """
    required = Records.COLUMNS if labelled else tuple(c for c in Records.COLUMNS if c not in LABEL_COLUMNS)
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataFormatError(f"{source}: missing field(s) {missing}; expected all of {list(required)}")
    signal = columns["signal"]
    if signal_lengths is None:
        signal_lengths = (np.full(len(signal), signal.shape[1]) if isinstance(signal, np.ndarray) and signal.ndim == 2
                          else np.array([np.size(s) for s in signal]))
    n = len(signal_lengths)
    if not labelled:
        columns = {**unlabelled_columns(n), **columns}
    cols = {k: np.asarray(columns[k]) for k in Records.COLUMNS + Records.OPTIONAL_COLUMNS
            if k != "signal" and k in columns}
    if n == 0:
        raise DataFormatError(f"{source}: no recordings; expected at least one")
    _check_fields(source, signal, cols, n)
    ids = {k: _patient_ids(cols[k]) for k in ("patient_id", "series_id") if k in cols}  # k: (ok, int64 ids)
    checks = _sample_checks(signal, signal_lengths, cols, {k: ok for k, (ok, _) in ids.items()}, labelled)
    report = ValidationReport(source=source, n_read=n)
    bad_any = np.zeros(n, dtype=bool)
    for reason, bad in checks:
        new = np.flatnonzero(bad & ~bad_any)  # each recording once, under its first reason
        report.add(reason, new + index_offset)
        for i in new.tolist():
            report.details[i + index_offset] = _detail(reason, i, signal_lengths, cols, signal)
        bad_any |= bad
    if strict and bad_any.any():  # the first bad recording in file order
        i = int(np.argmax(bad_any))
        reason = next(r for r, bad in checks if bad[i])
        detail = _detail(reason, i, signal_lengths, cols, signal)
        raise DataFormatError(f"{source}: sample {i + index_offset}: {reason} ({detail})")
    keep = np.flatnonzero(~bad_any)
    if len(keep) == 0:
        reasons = ", ".join(f"{c} {r}" for r, c in sorted(report.dropped.items()))
        raise DataFormatError(f"{source}: no usable recordings: all {n} were dropped ({reasons})")
    records = _assemble(signal, {**cols, **{k: v for k, (_, v) in ids.items()}}, keep, meta or {})
    report.n_kept = len(keep)
    report.kept = keep + index_offset
    return records, report


def _check_fields(source: str, signal: object, cols: dict[str, np.ndarray], n: int) -> None:
    """Whole-column checks of :func:`validate`: numeric dtypes, one row per recording, the wave columns
    all or none."""
    for k, v in [("signal", signal), *cols.items()]:  # label is checked per sample (text names are 'unknown label')
        if k in ("patient_id", "series_id") and v.dtype.kind == "O":  # Python ints (pickle, table): checked per sample
            continue
        if k != "label" and isinstance(v, np.ndarray) and v.dtype.kind not in _NUMERIC_KINDS:
            raise DataFormatError(f"{source}: field '{k}': expected a numeric array, found dtype {v.dtype}")
    for k, v in cols.items():
        want = {"static": (n, len(STATIC_NAMES))}.get(k, (n, len(EXTRA_WAVES)) if k in Records.WAVE_COLUMNS else (n,))
        if v.shape != want:
            raise DataFormatError(f"{source}: field '{k}' has shape {v.shape}, expected {want}")
    given = [k for k in Records.WAVE_COLUMNS if k in cols]
    if given and len(given) < len(Records.WAVE_COLUMNS):
        raise DataFormatError(f"{source}: field(s) {[k for k in Records.WAVE_COLUMNS if k not in cols]} missing "
                              f"beside {given}; expected all of {list(Records.WAVE_COLUMNS)} or none")


def unlabelled_columns(n: int) -> dict[str, np.ndarray]:
    """The label columns of ``n`` recordings that carry none: class unknown, threshold NaN, no wave V."""
    return {"label": np.full(n, UNKNOWN_LABEL, dtype=np.int64), "threshold": np.full(n, np.nan),
            "peak_mask": np.zeros(n, dtype=bool), "peak_latency": np.full(n, np.nan),
            "peak_amplitude": np.full(n, np.nan)}


def _sample_checks(signal: object, lengths: np.ndarray, cols: dict[str, np.ndarray],
                   id_ok: dict[str, np.ndarray], labelled: bool = True) -> list[tuple[str, np.ndarray]]:
    n = len(lengths)
    length_ok = lengths == SIGNAL_LENGTH
    signal_finite = np.zeros(n, dtype=bool)
    if isinstance(signal, np.ndarray) and signal.ndim == 2:
        if signal.shape[1] == SIGNAL_LENGTH:
            signal_finite = _finite32(signal).all(axis=1)
    else:
        signal_finite[length_ok] = [bool(_finite32(signal[i]).all()) for i in np.flatnonzero(length_ok)]
    mask = cols["peak_mask"].astype(bool)
    lat_ok = _finite32(cols["peak_latency"])
    amp_ok = _finite32(cols["peak_amplitude"])
    label = cols["label"]
    if label.dtype.kind in "iu":
        label_ok = np.isin(label, np.arange(NUM_CLASSES))
    elif label.dtype.kind == "O":  # a reader's class indices, with the text it could not read kept for the message
        label_ok = np.array([isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= x < NUM_CLASSES
                             for x in label], dtype=bool)
    else:
        label_ok = np.zeros(n, dtype=bool)
    static = np.asarray(cols["static"], dtype=np.float64)
    threshold = np.asarray(cols["threshold"], dtype=np.float64)
    threshold_ok = _finite32(threshold)
    if not labelled:  # prediction: a recording may carry no class and no threshold
        label_ok |= (label == UNKNOWN_LABEL if label.dtype.kind in "iu" else
                     np.array([isinstance(x, (int, np.integer)) and x == UNKNOWN_LABEL for x in label], dtype=bool))
        threshold_ok |= np.isnan(threshold)
    ranged = [*((name, static[:, j]) for j, name in enumerate(STATIC_NAMES)), ("threshold", threshold)]
    return [
        *_wave_checks(cols, n),
        ("signal length", ~length_ok),
        ("non-finite signal", length_ok & ~signal_finite),
        ("non-finite static", ~_finite32(static).all(axis=1)),
        ("unknown label", ~label_ok),
        ("non-finite threshold", ~threshold_ok),
        *((f"{name} out of range", _finite32(v) & ~_in_range(name, v)) for name, v in ranged),
        *((f"bad {k.replace('_id', '')} id", ~ok) for k, ok in id_ok.items()),
        ("bad peak_mask", ~np.isin(cols["peak_mask"], (0, 1))),
        ("peak value without peak", ~mask & (lat_ok | amp_ok)),
        ("peak without value", mask & ~(lat_ok & amp_ok)),
    ]


def _wave_checks(cols: dict[str, np.ndarray], n: int) -> list[tuple[str, np.ndarray]]:
    """The wave I / III columns (optional) follow wave V's rules: values where present, NaN elsewhere."""
    if not any(k in cols for k in Records.WAVE_COLUMNS):
        return []
    state = cols["wave_present"]
    state_ok = (np.isin(state, (WAVE_UNMARKED, 0, 1)) if state.dtype.kind in "iub"
                else np.zeros(state.shape, dtype=bool)).all(axis=1)
    present = state == 1
    valued = _finite32(cols["wave_latency"]) | _finite32(cols["wave_amplitude"])
    both = _finite32(cols["wave_latency"]) & _finite32(cols["wave_amplitude"])
    return [("bad wave state", ~state_ok),
            ("wave value without wave", (~present & valued).any(axis=1)),
            ("wave without value", (present & ~both).any(axis=1))]


def _finite32(values: object) -> np.ndarray:
    """Elementwise: finite and within float32 range (NaN compares False), so the float32 column holds it."""
    return np.abs(np.asarray(values, dtype=np.float64)) <= F32_MAX


_FINITE = f"finite values within float32 range (|x| <= {F32_MAX:.4g})"


def _detail(reason: str, i: int, lengths: np.ndarray, cols: dict[str, np.ndarray], signal: object) -> str:
    if reason == "signal length":
        return f"expected {SIGNAL_LENGTH} samples, found {lengths[i]}"
    if reason == "unknown label":
        return f"expected 0..{NUM_CLASSES - 1} ({', '.join(CLASS_NAMES)}), found {cols['label'][i]!r}"
    if reason == "non-finite static":
        return f"expected {_FINITE}, found {dict(zip(STATIC_NAMES, cols['static'][i].tolist(), strict=True))}"
    if reason in ("bad wave state", "wave value without wave", "wave without value"):
        return (f"waves {list(EXTRA_WAVES)}: present={cols['wave_present'][i].tolist()} (1 present, 0 absent, "
                f"{WAVE_UNMARKED} unmarked), latency={cols['wave_latency'][i].tolist()}, "
                f"amplitude={cols['wave_amplitude'][i].tolist()}; absent values must be NaN")
    if reason == "bad peak_mask":
        return f"expected 0 or 1 (false or true), found {cols['peak_mask'][i].item()!r}"
    if reason.startswith("peak"):
        return (f"peak_mask={bool(cols['peak_mask'][i])}, latency={float(cols['peak_latency'][i])!r}, "
                f"amplitude={float(cols['peak_amplitude'][i])!r}; absent values must be NaN, present ones {_FINITE}")
    if reason == "non-finite threshold":
        return f"expected {_FINITE}, found {float(cols['threshold'][i])!r}"
    if reason.endswith(" out of range"):
        name = reason.removesuffix(" out of range")
        value = cols["threshold"][i] if name == "threshold" else cols["static"][i][STATIC_NAMES.index(name)]
        return range_problem(name, float(value)).split(": ", 1)[1]
    if reason in ("bad patient id", "bad series id"):
        return (f"expected an integer within int64 (no NaN, no fraction, floats exact up to 2**53), "
                f"found {cols[reason.split()[1] + '_id'][i]!r}")
    row = np.asarray(signal[i], dtype=np.float64).reshape(-1)  # non-finite signal: name the first bad point
    j = int(np.argmin(_finite32(row)))
    return f"expected {_FINITE}, found {float(row[j])!r} at point {j}"  # float: numpy 2 would show np.float64(nan)


def _assemble(signal: object, cols: dict[str, np.ndarray], keep: np.ndarray, meta: dict) -> Records:
    if isinstance(signal, np.ndarray) and signal.ndim == 2 and signal.shape[1] == SIGNAL_LENGTH:
        sig = np.ascontiguousarray(signal[keep], dtype=np.float32)
    else:
        sig = np.array([np.asarray(signal[i], dtype=np.float32) for i in keep], dtype=np.float32)
        sig = sig.reshape(len(keep), SIGNAL_LENGTH)
    return Records(
        signal=sig,
        static=cols["static"][keep].astype(np.float32),
        label=cols["label"][keep].astype(np.int64),
        peak_mask=cols["peak_mask"][keep].astype(bool),
        peak_latency=cols["peak_latency"][keep].astype(np.float32),
        peak_amplitude=cols["peak_amplitude"][keep].astype(np.float32),
        threshold=cols["threshold"][keep].astype(np.float32),
        patient_id=cols["patient_id"][keep].astype(np.int64),
        series_id=cols["series_id"][keep].astype(np.int64) if "series_id" in cols else None,
        wave_present=cols["wave_present"][keep].astype(np.int8) if "wave_present" in cols else None,
        wave_latency=cols["wave_latency"][keep].astype(np.float32) if "wave_latency" in cols else None,
        wave_amplitude=cols["wave_amplitude"][keep].astype(np.float32) if "wave_amplitude" in cols else None,
        meta=meta,
    )
