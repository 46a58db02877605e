"""The native NPZ format and the validator every reader shares."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from data.native import FORMAT_VERSION, read_native, write_native
from data.records import DataFormatError, Records, class_index, validate

from .conftest import columns_of


def test_round_trip_is_exact(native_file, small_records):
    records, report = read_native(native_file)
    assert records == small_records
    assert report.n_read == report.n_kept == len(small_records)
    assert records.meta["format_version"] == FORMAT_VERSION
    assert records.meta["units"]["peak_amplitude"] == "µV"
    assert "baseline-to-peak" in records.meta["amplitude_convention"]


def test_file_is_deterministic_and_pickle_free(tmp_path, small_records):
    a, b = write_native(tmp_path / "a.npz", small_records), write_native(tmp_path / "b.npz", small_records)
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(a, allow_pickle=False) as npz:  # every member loads without pickle
        assert json.loads(str(npz["meta"][()]))["format"] == "abr-native"


def _write_columns(path, records, **changes):
    cols = columns_of(records)
    cols.update(changes)
    np.savez(path, **cols, meta=np.array(json.dumps(records.meta | _meta())))
    return path


def _meta() -> dict:
    from data.native import standard_meta

    return standard_meta()


CASES = {
    "unknown label": lambda c: c["label"].__setitem__(7, 9),
    "non-finite signal": lambda c: c["signal"].__setitem__((7, 3), np.nan),
    "non-finite static": lambda c: c["static"].__setitem__((7, 1), np.inf),
    "non-finite threshold": lambda c: c["threshold"].__setitem__(7, np.nan),
    "peak value without peak": lambda c: (c["peak_mask"].__setitem__(7, False), c["peak_latency"].__setitem__(7, 6.0)),
    "peak without value": lambda c: (c["peak_mask"].__setitem__(7, True), c["peak_latency"].__setitem__(7, np.nan)),
    "bad wave state": lambda c: c["wave_present"].__setitem__((7, 0), 2),
    "wave value without wave": lambda c: (c["wave_present"].__setitem__((7, 1), 0),
                                          c["wave_latency"].__setitem__((7, 1), 4.0)),
    "wave without value": lambda c: (c["wave_present"].__setitem__((7, 0), 1),
                                     c["wave_latency"].__setitem__((7, 0), np.nan)),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_strict_names_file_sample_and_reason(tmp_path, small_records, reason):
    cols = columns_of(small_records)
    CASES[reason](cols)
    path = _write_columns(tmp_path / "bad.npz", small_records, **cols)
    with pytest.raises(DataFormatError, match=rf"bad\.npz: sample 7: {reason}"):
        read_native(path, strict=True)


def test_lenient_drops_and_counts_by_reason(tmp_path, small_records):
    cols = columns_of(small_records)
    cols["label"][[3, 4]] = -1
    cols["signal"][10, 0] = np.inf
    cols["peak_mask"][11], cols["peak_latency"][11], cols["peak_amplitude"][11] = False, 7.0, 0.2
    path = _write_columns(tmp_path / "bad.npz", small_records, **cols)
    records, report = read_native(path, strict=False)
    assert report.dropped == {"unknown label": 2, "non-finite signal": 1, "peak value without peak": 1}
    assert report.examples["unknown label"] == [3, 4]
    assert len(records) == report.n_kept == len(small_records) - 4
    assert "dropped 2: unknown label (first samples: [3, 4])" in "\n".join(report.lines())


def test_wrong_signal_length(tmp_path, small_records):
    path = _write_columns(tmp_path / "short.npz", small_records, signal=small_records.signal[:, :150])
    with pytest.raises(DataFormatError, match=r"short\.npz: sample 0: signal length \(expected 200 samples, found 150"):
        read_native(path)
    n = len(small_records)  # lenient: nothing left is an error too, never an empty data set
    message = rf"short\.npz: no usable recordings: all {n} were dropped \({n} signal length\)$"
    with pytest.raises(DataFormatError, match=message):
        read_native(path, strict=False)


def test_missing_field_and_bad_meta(tmp_path, small_records):
    cols = columns_of(small_records)
    del cols["threshold"]
    np.savez(tmp_path / "m.npz", **cols, meta=np.array(json.dumps(_meta())))
    with pytest.raises(DataFormatError, match=r"m\.npz: missing field\(s\) \['threshold'\]"):
        read_native(tmp_path / "m.npz", strict=False)  # a missing field is an error in both modes
    future = np.array(json.dumps(_meta() | {"format_version": 99}))
    np.savez(tmp_path / "v.npz", **columns_of(small_records), meta=future)
    with pytest.raises(DataFormatError, match="format_version: expected an integer 1 to 1, found 99"):
        read_native(tmp_path / "v.npz")
    np.savez(tmp_path / "nometa.npz", **columns_of(small_records))
    with pytest.raises(DataFormatError, match=r"missing field\(s\) \['meta'\]"):
        read_native(tmp_path / "nometa.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataFormatError, match="not a native .npz file"):
        read_native(tmp_path / "text.npz")


def test_validate_reports_each_recording_once(small_records):
    cols = columns_of(small_records)
    cols["label"][0] = 42
    cols["threshold"][0] = np.nan  # same recording, second reason: counted under the first only
    records, report = validate(cols, source="mem", strict=False)
    assert report.dropped == {"unknown label": 1} and len(records) == len(small_records) - 1


def test_subset_and_concatenate(small_records):
    a, b = small_records.subset(np.arange(10)), small_records.subset(np.arange(10, len(small_records)))
    assert Records.concatenate([a, b]) == small_records


@pytest.mark.parametrize(("name", "index"), [("NORMAL", 0), ("Nöropati", 1), ("NOROPATI", 1), ("snik", 2),
                                             ("SNİK", 2), ("total", 3), ("İTİK", 4), ("ITIK", 4), ("other", -1)])
def test_class_names_ignore_case_and_diacritics(name, index):
    assert class_index(name) == index


def test_series_id_round_trips_and_defaults_to_the_patient(tmp_path):
    from data.native import read_native, write_native
    from data.synthetic import generate

    records = generate(3, seed=4)
    assert np.array_equal(records.series_id, records.patient_id)
    records.series_id = records.patient_id * 2 + (records.static[:, 1] > 50)  # two sessions per patient
    back, _ = read_native(write_native(tmp_path / "s.npz", records))
    assert np.array_equal(back.series_id, records.series_id)
    cols = records.columns()
    del cols["series_id"]  # a file written before series existed: one series per patient
    from data.records import validate

    old, _ = validate(cols, source="old")
    assert np.array_equal(old.series_id, old.patient_id)


def test_unlabelled_native_file_is_for_prediction_only(tmp_path, small_records):
    from data.records import LABEL_COLUMNS

    cols = {k: v for k, v in columns_of(small_records).items() if k not in LABEL_COLUMNS}
    path = tmp_path / "u.npz"
    np.savez(path, **cols, meta=np.array(json.dumps(small_records.meta | _meta())))
    with pytest.raises(DataFormatError, match=r"missing field\(s\) \['label', 'peak_mask'"):
        read_native(path)
    records, report = read_native(path, labelled=False)
    assert report.n_kept == len(small_records) and (records.label == -1).all()
    np.testing.assert_array_equal(records.signal, small_records.signal)
    unlabelled = write_native(tmp_path / "w.npz", records)  # label -1 and NaN thresholds written as they are
    with pytest.raises(DataFormatError, match=r"sample 0: unknown label"):
        read_native(unlabelled)  # ... and refused by the training read
    assert len(read_native(unlabelled, labelled=False)[0]) == len(small_records)


def test_wave_columns_round_trip_and_default_to_unmarked(tmp_path):
    """Waves I and III (optional columns): written and read back exactly; a file without them (the
    earlier system's, a clinic's CSV) reads as unmarked, which the loss ignores."""
    from data.records import WAVE_UNMARKED
    from data.synthetic import generate

    records = generate(3, seed=4)
    assert set(np.unique(records.wave_present)) <= {0, 1} and (records.wave_present == 1).any()
    back, _ = read_native(write_native(tmp_path / "w.npz", records))
    assert back == records
    cols = records.columns()
    for k in Records.WAVE_COLUMNS:
        del cols[k]
    old, _ = validate(cols, source="old")
    assert (old.wave_present == WAVE_UNMARKED).all() and np.isnan(old.wave_latency).all()


def test_part_of_the_wave_columns_is_refused(small_records):
    cols = columns_of(small_records)
    del cols["wave_amplitude"]
    with pytest.raises(DataFormatError, match=r"src: field\(s\) \['wave_amplitude'\] missing beside"):
        validate(cols, source="src")
