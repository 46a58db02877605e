"""The CSV table format: one row per recording, configurable column names."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from data.records import DataFormatError
from data.table import parse_column_spec, read_table, write_table


def test_round_trip(tmp_path, small_records):
    path = write_table(tmp_path / "t.csv", small_records)
    records, report = read_table(path)
    assert records == small_records and report.n_kept == len(small_records)


def test_renamed_columns_and_prefix(tmp_path, small_records):
    names = parse_column_spec("label=Diagnosis, fmp=FMP,patient_id=Hasta")
    path = write_table(tmp_path / "t.csv", small_records, columns=names, sample_prefix="x_", delimiter=";")
    header = path.read_text(encoding="utf-8").splitlines()[0].split(";")
    assert {"Diagnosis", "FMP", "Hasta", "x_0", "x_199"} <= set(header)
    records, _ = read_table(path, columns=names, sample_prefix="x_", delimiter=";")
    assert records == small_records
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['Hasta', 'FMP', 'Diagnosis'\]"):
        read_table(write_table(tmp_path / "u.csv", small_records), columns=names)
    with pytest.raises(ValueError, match="table column key 'nope'"):
        read_table(path, columns={"nope": "x"})


def _rows(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _write(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def test_bad_rows_strict_and_lenient(tmp_path, small_records):
    path = write_table(tmp_path / "t.csv", small_records)
    rows = _rows(path)
    header = rows[0]
    rows[1 + 4][header.index("s17")] = ""  # empty sample -> non-finite signal
    rows[1 + 6] = rows[1 + 6][:-3]  # row ends early -> signal length
    rows[1 + 8][header.index("label")] = "UNKNOWN"
    _write(path, rows)
    with pytest.raises(DataFormatError, match=r"t\.csv: sample 4: non-finite signal"):
        read_table(path)
    records, report = read_table(path, strict=False)
    assert report.dropped == {"non-finite signal": 1, "signal length": 1, "unknown label": 1}
    assert len(records) == len(small_records) - 3


def test_labels_as_indices_and_mask_derived_from_latency(tmp_path, small_records):
    path = write_table(tmp_path / "t.csv", small_records)
    rows = _rows(path)
    li, mi = rows[0].index("label"), rows[0].index("peak_mask")
    for r, label in zip(rows[1:], small_records.label, strict=True):
        r[li] = str(label)
    rows = [[c for j, c in enumerate(r) if j != mi] for r in rows]
    _write(path, rows)
    records, report = read_table(path)
    assert records == small_records
    assert any("wave V present where 'peak_latency' is filled" in n for n in report.notes)


def test_sample_columns_must_be_complete(tmp_path, small_records):
    path = write_table(tmp_path / "t.csv", small_records)
    rows = _rows(path)
    j = rows[0].index("s199")
    _write(path, [r[:j] for r in rows])
    with pytest.raises(DataFormatError, match="expected sample columns s0..s199, found 199"):
        read_table(path)
    assert np.isfinite(small_records.signal).all()


def _without(path, out, dropped):
    rows = _rows(path)
    keep = [j for j, h in enumerate(rows[0]) if h not in dropped]
    _write(out, [[r[j] for j in keep] for r in rows])
    return out


def test_unlabelled_read_for_prediction(tmp_path, small_records):
    """labelled=False: no label columns, static columns filled from fill=, series_id read when present."""
    from data.records import LABEL_COLUMNS, UNKNOWN_LABEL

    full = write_table(tmp_path / "t.csv", small_records)
    path = _without(full, tmp_path / "u.csv", {*LABEL_COLUMNS, "age"})
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['age', 'label', 'threshold'"):
        read_table(path)  # training demands the labels
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['age'\].*or give every recording one value "
                                              r"with --age"):
        read_table(path, labelled=False, fill={})
    records, report = read_table(path, labelled=False, fill={"age": 0.5})
    assert len(records) == len(small_records) and (records.label == UNKNOWN_LABEL).all()
    assert np.isnan(records.threshold).all() and not records.peak_mask.any()
    assert (records.static[:, 0] == 0.5).all()
    np.testing.assert_array_equal(records.static[:, 1:], small_records.static[:, 1:])
    np.testing.assert_array_equal(records.series_id, small_records.series_id)
    assert any("age = 0.5 for every recording" in n for n in report.notes)
    kept, _ = read_table(full, labelled=False, fill={"age": 99.0})  # a table with the column keeps its own
    np.testing.assert_array_equal(kept.static, small_records.static)
    assert (kept.label == small_records.label).all()


def test_unlabelled_read_still_checks_given_labels(tmp_path, small_records):
    path = write_table(tmp_path / "t.csv", small_records)
    rows = _rows(path)
    header = rows[0]
    rows[1][header.index("label")] = ""  # unknown: fine for prediction
    rows[2][header.index("label")] = "UNKNOWN"  # a label that is not a class: still refused
    rows[3][header.index("series_id")] = "1.5"
    _write(path, rows)
    records, report = read_table(path, strict=False, labelled=False)
    assert report.dropped == {"unknown label": 1, "bad series id": 1}
    assert report.rows == {"unknown label": [1], "bad series id": [2]}
    assert report.kept.tolist() == [0, *range(3, len(small_records))]
    assert records.label[0] == -1


def test_sample_column_hints_fit_what_the_header_holds(tmp_path, small_records):
    """150 samples were told to "set the prefix with --sample-prefix"; the hint now fits the case."""
    path = write_table(tmp_path / "t.csv", small_records)
    rows = _rows(path)
    j = rows[0].index("s150")
    _write(tmp_path / "short.csv", [r[:j] for r in rows])
    with pytest.raises(DataFormatError, match=r"short\.csv: expected sample columns s0\.\.s199, found 150 "
                                              r"\(s0\.\.s149\): recordings of 150 samples; this pipeline reads 200 "
                                              r"\(10 ms at 20 kHz\): resample them to 20 kHz") as exc:
        read_table(tmp_path / "short.csv")
    assert "--sample-prefix" not in str(exc.value)
    _write(tmp_path / "x.csv", [[h.replace("s", "x", 1) if h[1:].isdigit() else h for h in rows[0]], *rows[1:]])
    with pytest.raises(DataFormatError, match=r"found no column named s<i>, but 200 named x<i>: give their prefix "
                                              r"with --sample-prefix x$"):
        read_table(tmp_path / "x.csv")
    gap = [[c for k, c in enumerate(r) if k != rows[0].index("s17")] for r in rows]
    _write(tmp_path / "gap.csv", gap)
    with pytest.raises(DataFormatError, match=r"found 199 columns named s<i>, without s17$"):
        read_table(tmp_path / "gap.csv")


def test_a_dropped_row_says_what_was_expected_and_found(tmp_path, small_records):
    """A ragged row was reported as "dropped 1: signal length" alone."""
    path = write_table(tmp_path / "t.csv", small_records)
    rows = _rows(path)
    rows[1 + 6] = rows[1 + 6][:-3]
    _write(path, rows)
    _, report = read_table(path, strict=False)
    line = "  dropped 1: signal length (first samples: [6]; sample 6: expected 200 samples, found 197)"
    assert line in report.lines()
