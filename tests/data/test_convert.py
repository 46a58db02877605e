"""``python -m data.convert IN OUT``: every input format to the native file, and the table back."""

from __future__ import annotations

import pickle

import pytest

from data.convert import detect_format, main
from data.native import read_native

from .conftest import FIXTURES
from .test_legacy import legacy_dict


def test_legacy_to_native(tmp_path, small_records, capsys):
    src = tmp_path / "processed_data.pkl"
    src.write_bytes(pickle.dumps(legacy_dict(small_records)))
    assert main([str(src), str(tmp_path / "out.npz")]) == 0
    records, _ = read_native(tmp_path / "out.npz")
    assert len(records) == len(small_records) and (records.label == small_records.label).all()
    assert f"kept {len(small_records)}" in capsys.readouterr().out


def test_native_to_csv_and_back_is_exact(tmp_path, native_file, small_records):
    assert main([str(native_file), str(tmp_path / "t.csv")]) == 0
    assert main([str(tmp_path / "t.csv"), str(tmp_path / "back.npz")]) == 0
    records, _ = read_native(tmp_path / "back.npz")
    assert records == small_records


def test_epl_to_native(tmp_path, capsys):
    out = tmp_path / "epl.npz"
    args = [str(FIXTURES / "ABR-fixture-1"), str(out), "--label", "NORMAL", "--age", "0", "--patient-id", "5",
            "--analysis", str(FIXTURES / "ABR-fixture-1-16.0kHz-analyzed.txt")]
    assert main(args) == 0
    records, _ = read_native(out)
    assert len(records) == 4 and records.peak_mask.sum() == 3
    assert main([args[0], str(tmp_path / "other.npz")]) == 2
    assert "pass --label NAME and --age YEARS" in capsys.readouterr().err


def test_lenient_prints_what_it_dropped(tmp_path, small_records, capsys):
    obj = legacy_dict(small_records)
    obj["data"][3]["target"] = 17
    src = tmp_path / "p.pkl"
    src.write_bytes(pickle.dumps(obj))
    assert main([str(src), str(tmp_path / "o.npz")]) == 2
    assert "sample 3: unknown label" in capsys.readouterr().err
    assert main([str(src), str(tmp_path / "o.npz"), "--lenient", "--report", str(tmp_path / "r.json")]) == 0
    assert "dropped 1: unknown label (first samples: [3]; sample 3: expected 0..4 (" in capsys.readouterr().out
    assert '"unknown label": 1' in (tmp_path / "r.json").read_text()


@pytest.mark.parametrize(("name", "content", "fmt"), [
    ("a.npz", b"", "native"), ("a.csv", b"", "csv"), ("a.joblib", b"", "legacy"), ("a.pkl.gz", b"", "legacy"),
    ("ABR-1", b":RUN-3\tLEVEL", "epl"), ("blob", b"\x80\x04K\x01.", "legacy"), ("blob2", b"PK\x03\x04", "native"),
])
def test_detect_format(tmp_path, name, content, fmt):
    path = tmp_path / name
    path.write_bytes(content)
    assert detect_format(path) == fmt


def test_unknown_format_and_output(tmp_path, native_file, capsys):
    path = tmp_path / "mystery"
    path.write_bytes(b"????")
    assert main([str(path), str(tmp_path / "o.npz")]) == 2
    assert "pass --from {native,legacy,csv,epl}" in capsys.readouterr().err
    assert main([str(native_file), str(tmp_path / "o.h5")]) == 2
    assert "output must end in .npz (native) or .csv (table)" in capsys.readouterr().err


def test_a_bad_flag_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "a.csv")])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "python -m data.convert: error: the following arguments are required: output (see --help)\n")
