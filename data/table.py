"""Recordings as a table (CSV): one row per recording, metadata columns and 200 sample columns.

Default column names (each can be renamed with ``columns={"age": "Age", ...}`` or on the command
line ``--columns age=Age,label=Diagnosis``):

================  =====================================================================
key               content
================  =====================================================================
``patient_id``    integer
``age``           years
``intensity``     dB nHL
``rate``          stimuli per second
``fmp``           FMP
``label``         class name (NORMAL, NÖROPATİ, SNİK, TOTAL, İTİK; case and Turkish
                  diacritics ignored) or class index 0-4
``threshold``     dB nHL
``peak_mask``     1/0, true/false, yes/no; if the column is absent, wave V counts as
                  present where ``peak_latency`` is filled (the report says so)
``peak_latency``  ms, empty where wave V is absent
``peak_amplitude`` µV, empty where wave V is absent
``series_id``     optional integer: recordings of one intensity series (ear or session)
                  share it; absent: one series per patient
``wave_I_present`` optional, with ``wave_I_latency``, ``wave_I_amplitude`` and the same three
                  for wave III: 1/0 (empty: not marked), ms, µV; absent: waves I and III unmarked
================  =====================================================================

``labelled=False`` (prediction) makes the label columns (``label``, ``threshold``, ``peak_*``)
optional and their empty cells mean "not known"; ``fill={"age": 0.5}`` gives one value to every
recording for a static column the table lacks (a note in the report says so; a table that has
the column keeps its own values).

Sample columns are ``<prefix><i>`` (default ``s0`` ... ``s199``), ordered by ``i``; samples in µV.
An empty sample cell, or a row that ends early, is reported as a bad signal for that row.
A label index is ASCII digits only, without a sign (``'٣'`` is not class 3, ``'-0'`` not class 0);
a patient id is an integer (``1.5``, an empty cell or ``nan`` is refused, never cast). A cell
longer than the csv module's field limit (131,072 characters) is refused with its line.
"""

from __future__ import annotations

import csv
import re
import shlex
from collections import Counter
from pathlib import Path

import numpy as np

from data.records import (
    CLASS_NAMES,
    EXTRA_WAVES,
    LABEL_COLUMNS,
    SIGNAL_LENGTH,
    STATIC_NAMES,
    UNKNOWN_LABEL,
    WAVE_UNMARKED,
    DataFormatError,
    Records,
    ValidationReport,
    class_index,
    integer_value,
    validate,
)

KEYS = ("patient_id", *STATIC_NAMES, "label", "threshold", "peak_mask", "peak_latency", "peak_amplitude")
# Waves I and III (optional, all six or none): present 1/0 (empty: not marked), latency ms, amplitude µV.
WAVE_KEYS = tuple(f"wave_{w}_{part}" for w in EXTRA_WAVES for part in ("present", "latency", "amplitude"))
OPTIONAL_KEYS = ("series_id", *WAVE_KEYS)
_TRUE = {"1", "true", "yes", "y", "t", "1.0"}
_FALSE = {"0", "false", "no", "n", "f", "0.0", ""}


def column_names(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """key -> column name, with ``overrides`` applied; unknown keys are an error."""
    names = {k: k for k in KEYS + OPTIONAL_KEYS}
    for key, name in (overrides or {}).items():
        if key not in names:
            raise ValueError(f"table column key '{key}': expected one of {list(KEYS + OPTIONAL_KEYS)}")
        names[key] = name
    return names


def check_delimiter(delimiter: str) -> str:
    """The field separator, if usable: exactly one character, not a quote or a line break."""
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
        raise ValueError(f"--delimiter: expected one character other than a quote or a line break "
                         f"(e.g. ',' ';' or a tab), found {delimiter!r}")
    return delimiter


def parse_column_spec(spec: str) -> dict[str, str]:
    """``'age=Age,label=Diagnosis'`` -> {'age': 'Age', 'label': 'Diagnosis'}."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ValueError(f"--columns '{part}': expected key=column_name")
        key, name = (s.strip() for s in part.split("=", 1))
        out[key] = name
    return out


def read_table(path: str | Path, columns: dict[str, str] | None = None, sample_prefix: str = "s",
               delimiter: str = ",", strict: bool = True, labelled: bool = True,
               fill: dict[str, float] | None = None) -> tuple[Records, ValidationReport]:
    path = Path(path)
    names = column_names(columns)
    check_delimiter(delimiter)
    unknown = sorted(set(fill or {}) - set(STATIC_NAMES))
    if unknown:
        raise ValueError(f"table fill: expected keys among {list(STATIC_NAMES)}, found {unknown}")
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    header, rows = _read_rows(path, delimiter)
    pos = {name: j for j, name in enumerate(header)}
    filled = {k: v for k, v in (fill or {}).items() if names[k] not in pos}
    optional = {"peak_mask", *filled, *(() if labelled else LABEL_COLUMNS)}
    _check_header(path, names, pos, optional, flags_given=fill is not None)
    sample_cols = _sample_columns(path, header, sample_prefix)
    n = len(rows)

    def floats(key: str) -> np.ndarray:
        if key in filled:
            return np.full(n, float(filled[key]))
        if names[key] not in pos:  # an optional label column (labelled=False): not known
            return np.full(n, np.nan)
        j = pos[names[key]]
        return np.array([_float(r[j]) if j < len(r) else np.nan for r in rows])

    def column(key: str) -> list[str]:
        j = pos[names[key]]
        return [r[j] if j < len(r) else "" for r in rows]

    signal, lengths = _signal_rows(rows, sample_cols)
    latency, amplitude = floats("peak_latency"), floats("peak_amplitude")
    report_notes = [f"{k} = {v:g} for every recording (the table has no '{names[k]}' column)"
                    for k, v in filled.items()]
    mask = _peak_mask(path, names, pos, latency, column, report_notes)
    labels = column("label") if names["label"] in pos else [""] * n
    cols = {
        "signal": signal,
        "static": np.stack([floats(k) for k in STATIC_NAMES], axis=1) if n else np.zeros((0, 4)),
        "label": np.array([UNKNOWN_LABEL if not labelled and not c.strip() else _label(c) for c in labels],
                          dtype=object),
        "peak_mask": mask, "peak_latency": latency, "peak_amplitude": amplitude,
        "threshold": floats("threshold"),
        "patient_id": np.array([_id(c) for c in column("patient_id")], dtype=object),
    }
    if names["series_id"] in pos:
        cols["series_id"] = np.array([_id(c) for c in column("series_id")], dtype=object)
    cols.update(_wave_columns(path, names, pos, column, floats))
    meta = {"source": {"kind": "table", "file": path.name, "columns": names, "sample_prefix": sample_prefix}}
    # row i of the data is line i + 2 of the file; messages give the data row (sample) index
    records, report = validate(cols, source=str(path), strict=strict, signal_lengths=lengths, meta=meta,
                               labelled=labelled)
    report.notes.extend(report_notes)
    return records, report


def _check_header(path: Path, names: dict[str, str], pos: dict[str, int], optional: set[str], *,
                  flags_given: bool) -> None:
    """Every column the read needs is in the header (``optional``: those it can do without); the message
    names the ``--AGE``-style flags where the caller offers them (``flags_given``)."""
    missing = [k for k in KEYS if names[k] not in pos and k not in optional]
    if missing:
        flags = [k for k in missing if k in STATIC_NAMES and flags_given]
        hint = f"; or give every recording one value with {', '.join(f'--{k}' for k in flags)}" if flags else ""
        raise DataFormatError(f"{path}: missing column(s) {[names[k] for k in missing]}; "
                              f"rename with --columns key=name (keys: {list(KEYS)}){hint}")


def _signal_rows(rows: list[list[str]], sample_cols: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each row's sample cells as floats (a cell that is not a number is read as NaN), and each row's
    number of samples."""
    signal = []
    lengths = np.empty(len(rows), dtype=np.int64)
    first, last = sample_cols[0], sample_cols[-1] + 1
    for i, r in enumerate(rows):
        cells = r[first:last]
        lengths[i] = len(cells)
        try:
            signal.append(np.array(cells, dtype=np.float64))
        except ValueError:
            signal.append(np.array([_float(c) for c in cells]))
    return signal, lengths


def _peak_mask(path: Path, names: dict[str, str], pos: dict[str, int], latency: np.ndarray, column,
               notes: list[str]) -> np.ndarray:
    """Wave V present: the peak_mask column, or where the latency is filled when the table has none
    (said in ``notes``)."""
    if names["peak_mask"] not in pos:
        mask = np.isfinite(latency)
        if names["peak_latency"] in pos:
            notes.append(f"no '{names['peak_mask']}' column: "
                         f"wave V present where '{names['peak_latency']}' is filled")
    else:
        mask = np.array([_bool(path, i, c) for i, c in enumerate(column("peak_mask"))])
    return mask


def _wave_columns(path: Path, names: dict[str, str], pos: dict[str, int], column, floats) -> dict[str, np.ndarray]:
    """The Records wave columns from the six wave I / III columns (none: the waves are unmarked)."""
    given = [k for k in WAVE_KEYS if names[k] in pos]
    if not given:
        return {}
    if len(given) < len(WAVE_KEYS):
        raise DataFormatError(f"{path}: wave column(s) {[names[k] for k in WAVE_KEYS if k not in given]} missing "
                              f"beside {[names[k] for k in given]}; expected all six or none")
    present = np.stack([[WAVE_UNMARKED if not c.strip() else int(_bool(path, i, c, names[f"wave_{w}_present"]))
                         for i, c in enumerate(column(f"wave_{w}_present"))] for w in EXTRA_WAVES], axis=1)
    return {"wave_present": present.astype(np.int8),
            **{f"wave_{part}": np.stack([floats(f"wave_{w}_{part}") for w in EXTRA_WAVES], axis=1)
               for part in ("latency", "amplitude")}}


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows; csv and encoding errors name the file and line."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise DataFormatError(f"{path}: empty file; expected a header row")
            return header, list(reader)
        except csv.Error as exc:
            raise DataFormatError(f"{path}: line {reader.line_num}: not a readable table ({exc}); expected "
                                  "numbers and names in cells of at most 131,072 characters") from None
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start : exc.start + 1]
            raise DataFormatError(f"{path}: not UTF-8 text ({exc.reason}, byte {byte!r}); "
                                  "save the table as UTF-8") from None


def write_table(path: str | Path, records: Records, columns: dict[str, str] | None = None,
                sample_prefix: str = "s", delimiter: str = ",") -> Path:
    """Write records as a table that :func:`read_table` reads back to the same values (float32)."""
    path, names = Path(path), column_names(columns)
    check_delimiter(delimiter)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow([names[k] for k in KEYS + OPTIONAL_KEYS] + [f"{sample_prefix}{i}" for i in range(SIGNAL_LENGTH)])
        for i in range(len(records)):
            st, label = records.static[i], int(records.label[i])
            w.writerow([int(records.patient_id[i]), *(_fmt(v) for v in st),
                        "" if label == UNKNOWN_LABEL else CLASS_NAMES[label],
                        _fmt(records.threshold[i]), int(records.peak_mask[i]), _fmt(records.peak_latency[i]),
                        _fmt(records.peak_amplitude[i]), int(records.series_id[i]), *_wave_cells(records, i),
                        *(_fmt(v) for v in records.signal[i])])
    return path


def _wave_cells(records: Records, i: int) -> list[str]:
    """The six wave I / III cells of row i, in WAVE_KEYS order (an unmarked wave: three empty cells)."""
    cells = []
    for k in range(len(EXTRA_WAVES)):
        state = int(records.wave_present[i, k])
        cells += ["" if state == WAVE_UNMARKED else str(state), _fmt(records.wave_latency[i, k]),
                  _fmt(records.wave_amplitude[i, k])]
    return cells


def _sample_columns(path: Path, header: list[str], prefix: str) -> list[int]:
    found = {}
    for j, name in enumerate(header):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            found[int(name[len(prefix):])] = j
    if sorted(found) != list(range(SIGNAL_LENGTH)):
        raise DataFormatError(f"{path}: expected sample columns {prefix}0..{prefix}{SIGNAL_LENGTH - 1}, "
                              f"found {_sample_columns_found(header, prefix, sorted(found))}")
    cols = [found[i] for i in range(SIGNAL_LENGTH)]
    if cols != list(range(cols[0], cols[0] + SIGNAL_LENGTH)):
        raise DataFormatError(f"{path}: sample columns {prefix}0..{prefix}{SIGNAL_LENGTH - 1} "
                              "must be adjacent and in order")
    return cols


def _sample_columns_found(header: list[str], prefix: str, found: list[int]) -> str:
    """What the header holds instead, and the hint that fits it: another prefix only where no column
    has this one; a shorter or longer recording where the columns run 0..k-1."""
    if found == list(range(len(found))) and found:
        return (f"{len(found)} ({prefix}0..{prefix}{found[-1]}): recordings of {len(found)} samples; this "
                f"pipeline reads {SIGNAL_LENGTH} (10 ms at 20 kHz): resample them to 20 kHz and keep the first "
                f"{SIGNAL_LENGTH} samples")
    if found:
        missing = [i for i in range(SIGNAL_LENGTH) if i not in set(found)]
        return f"{len(found)} columns named {prefix}<i>, without {', '.join(f'{prefix}{i}' for i in missing[:3])}" + \
            (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    prefixes = Counter(m.group(1) for m in (re.fullmatch(r"(\D*?)(\d+)", h) for h in header) if m)
    other = [p for p, n in prefixes.most_common() if n >= SIGNAL_LENGTH // 2]
    if other:
        return (f"no column named {prefix}<i>, but {prefixes[other[0]]} named {other[0]}<i>: "
                f"give their prefix with --sample-prefix {shlex.quote(other[0])}")
    return f"no column named {prefix}<i>; name the sample columns so, or give their prefix with --sample-prefix"


def _float(cell: str) -> float:
    try:
        return float(cell) if cell.strip() else float("nan")
    except ValueError:
        return float("nan")


def _fmt(value: float) -> str:
    return "" if not np.isfinite(value) else f"{float(value):.9g}"


def _bool(path: Path, i: int, cell: str, name: str = "peak_mask") -> bool:
    c = cell.strip().lower()
    if c in _TRUE:
        return True
    if c in _FALSE:
        return False
    raise DataFormatError(f"{path}: sample {i}: {name} expected 1/0, true/false or yes/no, found {cell!r}")


def _label(cell: str) -> int | str:
    """The class index of a name or an index cell; the cell itself when it is neither (the validator
    then reports it as an unknown label, showing the text)."""
    c = cell.strip()
    if c.isascii() and c.isdigit():  # str.isdigit() is also True for '٣' or '²'; '-0' would be NORMAL
        return int(c)
    return class_index(c) if class_index(c) >= 0 else cell


def _id(cell: str) -> int | float:
    """A patient id cell: an int (ASCII digits), else the number it reads as (NaN if none); the
    validator refuses what is not an exact integer."""
    value = integer_value(cell)
    return value if value is not None else _float(cell)
