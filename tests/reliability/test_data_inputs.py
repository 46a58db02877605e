"""Bad data files through the readers and the CLI: the cases tests/data does not already cover
(truncated and empty files, wrong types, values beyond float32, the CLI message). Lenient mode's
counts per reason are covered in tests/data/test_native.py and test_table.py; here only for the
values beyond float32 (dropped and counted, never loaded as Inf)."""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
import tracemalloc
import zipfile

import numpy as np
import pytest

from data.convert import main as convert_main
from data.legacy import read_legacy
from data.native import read_native, standard_meta, write_native
from data.records import RANGES, DataFormatError, range_problem, validate
from data.synthetic import generate
from data.table import read_table, write_table
from tests.data.conftest import FIXTURES
from tests.reliability.procs import in_process_args, train_in_process

F32_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(scope="module")
def records():
    return generate(3, seed=1)


def columns(records, **changes):
    cols = {k: np.array(v, copy=True) for k, v in records.columns().items()}
    cols.update(changes)
    return cols


def save_npz(path, records, **changes):
    np.savez(path, **columns(records, **changes), meta=np.array(json.dumps(records.meta | standard_meta())))
    return path


@pytest.mark.parametrize("keep", [10, 0.5, -30])
def test_truncated_native_file(tmp_path, records, keep):
    data = write_native(tmp_path / "ok.npz", records).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(DataFormatError, match=rf"^{path}: not a native \.npz file \("):
        read_native(path)


@pytest.mark.parametrize("strict", [True, False])
def test_empty_native_file(tmp_path, strict):
    (tmp_path / "empty.npz").write_bytes(b"")
    message = r"empty\.npz: not a native \.npz file \(expected a zip archive, found an empty file\)"
    with pytest.raises(DataFormatError, match=message):
        read_native(tmp_path / "empty.npz", strict=strict)


@pytest.mark.parametrize("keep", [0, 10, 0.5])
def test_truncated_legacy_and_table_files(tmp_path, records, keep):
    blob = pickle.dumps({"data": [{"signal": np.arange(200.0)} for _ in range(20)]})
    path = tmp_path / "legacy.pkl"
    path.write_bytes(blob[: int(len(blob) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(DataFormatError, match=r"legacy\.pkl: not a readable pickle/joblib file"):
        read_legacy(path)
    text = write_table(tmp_path / "t.csv", records).read_text(encoding="utf-8")
    (tmp_path / "t.csv").write_text(text[: int(len(text) * keep) if isinstance(keep, float) else keep])
    cut_table = r"t\.csv: (empty file|missing column|sample \d+: signal length|expected sample col)"
    with pytest.raises(DataFormatError, match=cut_table):
        read_table(tmp_path / "t.csv")


@pytest.mark.parametrize(("change", "message"), [
    ({"label": "names"}, r"sample 0: unknown label \(expected 0\.\.4 .*found np\.str_\('NORMAL'\)\)"),
    ({"label": "fractional"}, r"sample 0: unknown label .*found np\.float64\(0\.5\)"),
    ({"signal": "objects"}, r"not a native \.npz file \(member 'signal\.npy' holds Python objects \(dtype object\), "
                            r"which are never unpickled\); convert it with `python -m data\.convert`$"),
])
def test_wrong_types_name_file_and_sample(tmp_path, records, change, message):
    (key, kind), = change.items()
    value = {"names": np.array(["NORMAL"] * len(records)), "fractional": records.label + 0.5,
             "objects": np.array([list(s) for s in records.signal], dtype=object)}[kind]
    path = save_npz(tmp_path / "bad.npz", records, **{key: value})
    with pytest.raises(DataFormatError, match=rf"bad\.npz: {message}"):
        read_native(path)


@pytest.mark.parametrize("strict", [True, False])  # a wrong column type is a file error, in lenient mode too
@pytest.mark.parametrize("column", ["signal", "static", "threshold", "peak_mask"])
def test_text_column_names_the_file_and_field(tmp_path, records, column, strict):
    path = save_npz(tmp_path / "bad.npz", records, **{column: getattr(records, column).astype(str)})
    with pytest.raises(DataFormatError, match=rf"bad\.npz: field '{column}': expected a numeric array, found dtype <U"):
        read_native(path, strict=strict)


@pytest.mark.parametrize("column", ["signal", "static", "threshold"])
def test_values_beyond_float32_are_refused(tmp_path, records, column):
    value = getattr(records, column).astype(np.float64)
    value[(1,) + (0,) * (value.ndim - 1)] = 10 * F32_MAX
    path = save_npz(tmp_path / "huge.npz", records, **{column: value})
    with pytest.raises(DataFormatError, match=rf"huge\.npz: sample 1: non-finite {column} \(expected finite values "
                                              r"within float32 range .*, found .*3\.40282\d*e\+39"):
        read_native(path)
    kept, report = read_native(path, strict=False)
    assert report.dropped == {f"non-finite {column}": 1} and report.examples[f"non-finite {column}"] == [1]
    assert len(kept) == len(records) - 1 and np.isfinite(getattr(kept, column)).all()
    assert kept == records.subset(np.arange(len(records)) != 1)


def test_values_beyond_float32_in_a_table(tmp_path, records):
    path = write_table(tmp_path / "t.csv", records)
    rows = list(csv.reader(path.open(encoding="utf-8")))
    rows[2][rows[0].index("s5")] = "1e300"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataFormatError, match=r"t\.csv: sample 1: non-finite signal \(expected finite values within "
                                              r"float32 range .*, found np\.float64\(1e\+300\) at point 5\)$"):
        read_table(path)
    kept, report = read_table(path, strict=False)
    assert report.dropped == {"non-finite signal": 1} and report.examples["non-finite signal"] == [1]
    assert len(kept) == len(records) - 1 and np.isfinite(kept.signal).all()


def test_cli_names_file_and_sample_and_lenient_mode_counts(tmp_path, records, capsys):
    path = save_npz(tmp_path / "bad.npz", records, label=np.where(np.arange(len(records)) == 7, 9, records.label))
    args = in_process_args(tmp_path / "logs", "exp", "data.source=file", f"data.path={path}", "training.epochs=1",
                           "logging.use_tensorboard=false")
    assert train_in_process(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: sample 7: unknown label (expected 0..4 (NORMAL, NÖROPATİ, SNİK, TOTAL, İTİK), "
                   f"found np.int64(9))"]
    assert not (tmp_path / "logs" / "exp" / "checkpoints").exists()  # refused before training


# --------------------------------------------------------------------------------------------
# issue 17: every bad input through `python -m data.convert` is one line, nothing half-written


def _small():
    return generate(20, seed=1)  # every class, ~500 recordings


def _legacy_file(path, change):
    from tests.data.test_legacy import legacy_dict

    obj = legacy_dict(_small())
    change(obj)
    path.write_bytes(pickle.dumps(obj))
    return path


def _table_file(path, records, edit):
    """A CSV of ``records`` with ``edit(header, rows)`` applied to its cells."""
    write_table(path, records)
    rows = list(csv.reader(path.open(encoding="utf-8")))
    edit(rows[0], rows[1:])
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def _cell(name, value, row=0):
    def edit(header, rows):
        rows[row][header.index(name)] = value
    return edit


def _epl_file(path, period):
    text = (FIXTURES / "ABR-fixture-1").read_text(encoding="ISO-8859-1")
    path.write_text(re.sub(r"SAMPLE \((.+?)sec\): [0-9.]+", rf"SAMPLE (\g<1>sec): {period}", text),
                    encoding="ISO-8859-1")
    return path


def _self_referencing(obj):
    obj["metadata"] = {"note": "x"}
    obj["metadata"]["self"] = obj["metadata"]


EPL_ARGS = ["--label", "NORMAL", "--age", "0", "--threshold", "30"]
CONVERT_CASES = {  # name: (make input in tmp, extra args, the one line expected after 'error: ')
    "patient_id 2**70 (legacy)": (
        lambda t: _legacy_file(t / "p.pkl", lambda o: o["data"][3].update(patient_id=2**70)), [],
        r".*p\.pkl: sample 3: bad patient id \(expected an integer within int64 .*found 1180591620717411303424\)"),
    "--patient-id 2**70 (EPL)": (
        lambda t: FIXTURES / "ABR-fixture-1", [*EPL_ARGS, "--patient-id", str(2**70)],
        r".*ABR-fixture-1: sample 0: bad patient id \(.*found 1180591620717411303424\)"),
    "self-referencing metadata": (
        lambda t: _legacy_file(t / "m.pkl", _self_referencing), [],
        r".*m\.pkl: metadata\.self: refers to itself \(a reference cycle\); expected plain data"),
    "200,000-character CSV cell": (
        lambda t: _table_file(t / "c.csv", _small(), _cell("s7", "1" * 200_000, row=4)), [],
        r".*c\.csv: line 6: not a readable table \(field larger than field limit \(131072\)\); .*131,072 characters"),
    "--delimiter ';;'": (
        lambda t: write_table(t / "d.csv", _small()), ["--delimiter", ";;"],
        r"--delimiter: expected one character other than a quote or a line break .*found ';;'"),
    "--report in a missing folder": (
        lambda t: write_table(t / "r.csv", _small()), ["--report", "{tmp}/missing/r.json"],
        r"--report .*r\.json: folder '.*missing' does not exist"),
    "NPZ meta that is a list": (
        lambda t: save_npz_meta(t / "l.npz", [1, 2]), [],
        r".*l\.npz: field 'meta': expected a JSON object, found list"),
    "NPZ meta that is an int array": (
        lambda t: save_npz_meta(t / "a.npz", np.arange(3)), [],
        r".*a\.npz: field 'meta': expected a JSON text \(a 0-d unicode array\), found an array of shape \(3,\) "
        r"and dtype int64"),
    "EPL SAMPLE (µsec): 0": (
        lambda t: _epl_file(t / "ABR-0", 0), EPL_ARGS,
        r".*ABR-0: header 'SAMPLE \(µsec\)': expected a sampling period of 1 to 100 µs, found 0"),
}


def save_npz_meta(path, meta):
    records = _small()
    raw = meta if isinstance(meta, np.ndarray) else np.array(json.dumps(meta))
    np.savez(path, **records.columns(), meta=raw)
    return path


@pytest.mark.parametrize("case", list(CONVERT_CASES))
def test_convert_error_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    make, extra, message = CONVERT_CASES[case]
    src = make(tmp_path)
    out = tmp_path / "out.npz"
    args = [str(src), str(out), *(a.replace("{tmp}", str(tmp_path)) for a in extra)]
    assert convert_main(args) == 2  # a bad file or flag: the user can fix it
    captured = capsys.readouterr()
    assert re.fullmatch(rf"error: {message}\n", captured.err), captured.err
    assert not out.exists() and not (tmp_path / "out.npz.tmp").exists()
    with pytest.raises(Exception, match=message.removeprefix(".*")):  # --debug: the exception itself
        convert_main([*args, "--debug"])


def test_convert_never_replaces_an_existing_output_unasked(tmp_path, capsys):
    src = write_table(tmp_path / "t.csv", _small())
    out = tmp_path / "good.npz"
    out.write_bytes(b"the user's data")
    assert convert_main([str(src), str(out)]) == 2
    assert capsys.readouterr().err == f"error: OUT {out}: exists; pass --overwrite to replace it\n"
    assert out.read_bytes() == b"the user's data"
    assert convert_main([str(src), str(out), "--overwrite"]) == 0
    assert read_native(out)[0] == read_table(src)[0]


def test_unexpected_errors_are_still_one_line(tmp_path, capsys, monkeypatch):
    """The safety net: an error nobody foresaw (here MemoryError and RecursionError, whose own text is
    empty or useless) is one line naming the input; --debug shows it."""
    src = write_table(tmp_path / "t.csv", _small())
    for exc, text in ((MemoryError(), "out of memory"),
                      (RecursionError("x"), "nested too deeply")):
        def boom(*args, exc=exc, **kwargs):
            raise exc
        monkeypatch.setattr("data.table.read_table", boom)
        assert convert_main([str(src), str(tmp_path / "o.npz")]) == 1
        err = capsys.readouterr().err
        assert err == f"error: {src}: {text} (rerun with --debug for the traceback)\n"
        with pytest.raises(type(exc)):
            convert_main([str(src), str(tmp_path / "o.npz"), "--debug"])


# zero-row files, patient ids, labels, ranges: the validator every reader goes through


def test_zero_row_files_do_not_convert(tmp_path, capsys):
    records = _small()
    empty = records.subset(np.zeros(len(records), dtype=bool))
    write_native(tmp_path / "zero.npz", empty)  # writing is allowed (a library use); reading it is not
    write_table(tmp_path / "zero.csv", empty)
    for name in ("zero.npz", "zero.csv"):
        for lenient in ([], ["--lenient"]):
            assert convert_main([str(tmp_path / name), str(tmp_path / "o.npz"), *lenient]) == 2
            assert capsys.readouterr().err == f"error: {tmp_path / name}: no recordings; expected at least one\n"
    assert not (tmp_path / "o.npz").exists()
    bad = save_npz(tmp_path / "bad.npz", records, label=np.full(len(records), 7))  # lenient, nothing left
    assert convert_main([str(bad), str(tmp_path / "o.npz"), "--lenient"]) == 2
    n = len(records)
    assert capsys.readouterr().err == f"error: {bad}: no usable recordings: all {n} were dropped ({n} unknown label)\n"


BAD_IDS = {"NaN": np.nan, "fraction": 1.5, "beyond 2**53": 2.0**60, "-Inf": -np.inf}


@pytest.mark.parametrize("name", list(BAD_IDS))
def test_patient_ids_are_never_cast(tmp_path, name):
    records = _small()
    ids = records.patient_id.astype(np.float64)
    ids[4] = BAD_IDS[name]
    path = save_npz(tmp_path / "ids.npz", records, patient_id=ids)
    with pytest.raises(DataFormatError, match=r"ids\.npz: sample 4: bad patient id \(expected an integer within "
                                              rf"int64 .*found np\.float64\({re.escape(repr(BAD_IDS[name]))}\)\)$"):
        read_native(path)
    kept, report = read_native(path, strict=False)
    assert report.dropped == {"bad patient id": 1} and report.examples["bad patient id"] == [4]
    assert kept == records.subset(np.arange(len(records)) != 4)  # whole-number float ids are kept exactly
    series = save_npz(tmp_path / "series.npz", records, series_id=ids)  # the optional series id: the same rule
    with pytest.raises(DataFormatError, match=r"series\.npz: sample 4: bad series id \(expected an integer within"):
        read_native(series)
    table = _table_file(tmp_path / "ids.csv", records, _cell("patient_id", {"NaN": "", "fraction": "1.5",
                        "beyond 2**53": "1e18", "-Inf": "-inf"}[name], row=4))
    with pytest.raises(DataFormatError, match=r"ids\.csv: sample 4: bad patient id"):
        read_table(table)


@pytest.mark.parametrize("text", ["٣", "３", "²", "-0", "+1"])
def test_unicode_digits_are_not_class_labels(tmp_path, text):
    """'٣' (Arabic-Indic 3) and '３' (full-width 3) were read as class 3; '²' crashed int(); '-0' was
    NORMAL (issue 32): a class index is ASCII digits, no sign."""
    path = _table_file(tmp_path / "l.csv", _small(), _cell("label", text, row=2))
    with pytest.raises(DataFormatError,
                       match=rf"l\.csv: sample 2: unknown label \(expected 0\.\.4 .*found '{re.escape(text)}'\)"):
        read_table(path)


def test_unicode_digit_targets_in_a_legacy_file(tmp_path):
    path = _legacy_file(tmp_path / "t.pkl", lambda o: o["data"][1].update(target="٣"))
    with pytest.raises(DataFormatError, match=r"t\.pkl: sample 1: target: expected an integer class index, found '٣'"):
        read_legacy(path)


RANGE_CASES = [  # (column, index in static or None for threshold, value)
    ("age", 0, -1.0), ("age", 0, 121.0), ("intensity", 1, 500.0), ("intensity", 1, -40.0), ("rate", 2, 0.0),
    ("rate", 2, 1000.0), ("fmp", 3, -0.5), ("fmp", 3, 1e6), ("threshold", None, 999.0), ("threshold", None, -50.0),
]


@pytest.mark.parametrize(("name", "j", "value"), RANGE_CASES)
def test_values_outside_their_range_name_the_sample_and_the_range(tmp_path, name, j, value):
    records = _small()
    static, threshold = records.static.copy(), records.threshold.copy()
    if j is None:
        threshold[9] = value
    else:
        static[9, j] = value
    path = save_npz(tmp_path / "r.npz", records, static=static, threshold=threshold)
    low, high, unit = RANGES[name]  # the one home of the ranges: the message follows it
    with pytest.raises(DataFormatError, match=rf"r\.npz: sample 9: {name} out of range \(expected {low:g} to "
                                              rf"{high:g} {re.escape(unit)}, found {re.escape(repr(value))}\)$"):
        read_native(path)
    kept, report = read_native(path, strict=False)
    assert report.dropped == {f"{name} out of range": 1} and len(kept) == len(records) - 1
    assert range_problem(name, value) is not None and range_problem(name, (low + high) / 2) is None


def test_the_generator_and_the_real_data_facts_fit_the_ranges():
    """DESIGN.md: age 0-75, intensity 0-100, rate 11.1-49.1, FMP 0-1515, threshold 0-100 (105: none)."""
    facts = {"age": (0, 75), "intensity": (0, 100), "rate": (11.1, 49.1), "fmp": (0, 1515), "threshold": (0, 105)}
    for name, (low, high) in facts.items():
        assert range_problem(name, low) is None and range_problem(name, high) is None
    records = generate(200, seed=3)
    read_back = validate(records.columns(), source="generated")[0]
    assert read_back == records


def test_a_refused_pickle_is_never_advised_to_be_loaded_unsafely(tmp_path):
    """numpy's message says 'you can load it unsafely using allow_pickle='; ours must not."""
    path = tmp_path / "data.npz"
    path.write_bytes(pickle.dumps({"data": []}))
    with pytest.raises(DataFormatError) as info:
        read_native(path)
    assert str(info.value) == (f"{path}: not a native .npz file (it is a pickle, which is never loaded here); if it "
                               "is the earlier system's processed file, convert it with `python -m data.convert "
                               "--from legacy` (it reads it safely)")
    objects = save_npz(tmp_path / "obj.npz", _small(), threshold=np.array([None] * len(_small())))
    with pytest.raises(DataFormatError, match="holds Python objects") as info:
        read_native(objects)
    for text in (str(info.value), str(info.value).lower()):
        assert "unsafe" not in text and "allow_pickle" not in text and "pickle.load" not in text


# resource bombs: refused from sizes known before anything large is allocated or expanded


def _npy_member(zf, name, header_shape, body, dtype="<f4", compress=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": header_shape})
    zf.writestr(zipfile.ZipInfo(f"{name}.npy"), buf.getvalue() + body, compress_type=compress)


def test_npz_header_claiming_728_tib_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    records = _small()
    with zipfile.ZipFile(path, "w") as zf:
        _npy_member(zf, "signal", (10**12, 200), records.signal.tobytes())  # 10^12 x 200 x 4 bytes = 728 TiB
        for name, arr in records.columns().items():
            if name != "signal":
                _npy_member(zf, name, arr.shape, arr.tobytes(), np.lib.format.dtype_to_descr(arr.dtype))
    tracemalloc.start()
    with pytest.raises(DataFormatError, match=r"huge\.npz: not a native \.npz file \(member 'signal\.npy': its header "
                                              r"claims shape \(1000000000000, 200\) of float32 \(800,000,000,000,000 "
                                              r"bytes\), but it holds [\d,]+ bytes\)"):
        read_native(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6


def test_deflate_bomb_is_refused_from_the_zip_directory(tmp_path, monkeypatch):
    """A member that inflates to more than MAX_NATIVE_BYTES (4 GiB; 3 MiB here) is refused before
    anything is inflated: the reader never calls numpy's array reader."""
    monkeypatch.setattr("data.native.MAX_NATIVE_BYTES", 3 * 2**20)
    path = tmp_path / "bomb.npz"
    n = 5 * 2**20 // 4
    with zipfile.ZipFile(path, "w") as zf:
        _npy_member(zf, "signal", (n // 200, 200), bytes(n // 200 * 200 * 4), compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 20_000
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("inflated the bomb"))
    with pytest.raises(DataFormatError, match=r"bomb\.npz: members hold 5,\d{3},\d{3} bytes uncompressed; the limit is "
                                              r"MAX_NATIVE_BYTES = 3,145,728 \(data/native\.py\)$"):
        read_native(path)


def _laughs(levels, width=10):
    node = [0.0] * width
    for _ in range(levels):
        node = [node] * width
    return node


@pytest.mark.parametrize(("where", "message"), [
    ("metadata", r"metadata: more than MAX_METADATA_NODES = 100,000 values \(shared references counted each time"),
    ("deep metadata", r"metadata(\[0\]){50}: nested more than MAX_METADATA_DEPTH = 50 levels"),
    ("signal", r"sample 2: field 'signal': expected a number, an array or a flat list of numbers, found list inside"),
])
def test_reference_bombs_in_a_legacy_file_are_refused(tmp_path, where, message):
    """10^9 values pickled into a few hundred bytes (each level is 10 references to the level below)."""
    bomb = _laughs(9)
    deep: list = []
    for _ in range(60):
        deep = [deep]

    def plant(obj):
        if where == "metadata":
            obj["metadata"] = {"bomb": bomb}
        elif where == "deep metadata":
            obj["metadata"] = deep
        else:
            obj["data"][2]["signal"] = bomb
    path = _legacy_file(tmp_path / "b.pkl", plant)
    assert path.stat().st_size < 500_000
    with pytest.raises(DataFormatError, match=rf"b\.pkl: {message}"):
        read_legacy(path)


def test_shared_references_across_samples_hit_the_value_limit(tmp_path, monkeypatch):
    monkeypatch.setattr("data.legacy.MAX_LEGACY_VALUES", 50_000)  # 200 million in use: 1.6 GB of float64
    big = list(np.zeros(20_000))

    def plant(obj):
        for s in obj["data"]:
            s["signal"] = big  # one list, referenced by every sample: 2 bytes each in the file
    path = _legacy_file(tmp_path / "s.pkl", plant)
    with pytest.raises(DataFormatError, match=r"s\.pkl: samples 0\.\.2 hold more than MAX_LEGACY_VALUES = 50,000 "):
        read_legacy(path)
