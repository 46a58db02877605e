"""Bad data files through the readers and the CLI: the cases tests/data does not already cover
(truncated and empty files, wrong types, values beyond float32, the CLI message). Lenient mode's
counts per reason are covered in tests/data/test_native.py and test_table.py; here only for the
values beyond float32 (dropped and counted, never loaded as Inf)."""

from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest

from data.legacy import read_legacy
from data.native import read_native, standard_meta, write_native
from data.records import DataFormatError
from data.synthetic import generate
from data.table import read_table, write_table
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
    ({"signal": "objects"}, r"not a native \.npz file \(Object arrays cannot be loaded when allow_pickle=False\)"),
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
