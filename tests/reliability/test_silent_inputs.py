"""Issue 32: the last silent acceptances in config, CLI and data, and the error lines that did not
name their culprit. Each case is now one line naming the file, key or flag and what was expected;
each test failed on the main branch before the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from data.schema import ConfigError
from tests.reliability.procs import TINY, train_in_process
from training.config import load_config


def _train(capsys, tmp_path: Path, *argv: str, log_dir: bool = True, code: int = 2) -> str:
    """Run train.py in process with ARGV (a tiny config logging under tmp_path); its one error line."""
    logs = [f"logging.log_dir={tmp_path / 'logs'}"] if log_dir else []
    returned = train_in_process(["--config", str(Path(__file__).parents[2] / "configs" / "quickstart.yaml"), *argv,
                             *logs, *TINY])
    err = capsys.readouterr().err
    assert returned == code and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())  # nothing written
    return err.strip()


# ------------------------------------------------------------------------------------------------
# config and CLI


@pytest.mark.parametrize("value", ["", " ", "~"])
def test_extends_without_a_value_is_refused(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"extends:{' ' + value if value else ''}\ntraining:\n  epochs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^config file '{path}': key 'extends': expected a file path, found "):
        load_config(path)


def test_an_empty_log_dir_is_refused(tmp_path, capsys):
    assert _train(capsys, tmp_path, "--experiment", "x", "logging.log_dir=", log_dir=False).startswith(
        "error: config key 'logging.log_dir': expected a folder path, found ''")


def test_an_override_given_twice_is_refused():
    with pytest.raises(ConfigError, match=r"^override 'training.lr': given twice \('training.lr=1e-3' and "
                                          r"'training.lr=2e-3'\); expected each key once$"):
        load_config(None, ["training.lr=1e-3", "training.epochs=2", "training.lr=2e-3"])


@pytest.mark.parametrize(("name", "shown"), [("a\nb", "U+000A"), ("run\u200fevil", "U+200F RIGHT-TO-LEFT MARK"),
                                             ("x\u202eabc", "U+202E RIGHT-TO-LEFT OVERRIDE")])
def test_a_run_name_with_hidden_characters_is_refused(tmp_path, capsys, name, shown):
    err = _train(capsys, tmp_path, "--experiment", name)
    assert err.startswith(f"error: --experiment: expected a name of visible characters, found {name!r} (it holds "
                          f"{shown}"), err


def test_an_empty_device_is_refused(tmp_path, capsys):
    assert _train(capsys, tmp_path, "--experiment", "x", "--device", "") == \
        "error: --device: expected auto, cpu, cuda or cuda:N, found ''"
    with pytest.raises(ConfigError, match=r"^config key 'device': expected auto, cpu, cuda or cuda:N, found ''$"):
        load_config(None, ["device="])


def test_a_huge_text_value_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^config key 'logging.wandb.project': expected at most MAX_CONFIG_STRING "
                                          r"= 4,096 characters, found 120,000$"):
        load_config(None, ["logging.wandb.project=" + "x" * 120_000])
    path = tmp_path / "c.yaml"
    path.write_text(f"logging:\n  log_dir: {'d' * 120_000}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'logging.log_dir': expected at most MAX_CONFIG_STRING"):
        load_config(path)


def test_a_seed_beyond_64_bits_names_the_key(tmp_path, capsys):
    err = _train(capsys, tmp_path, "--experiment", "x", f"seed={2**64}")
    assert re.fullmatch(rf"error: config key 'seed': expected a value <= {2**63 - 1}, found {2**64}( \[.*\])?", err)


# ------------------------------------------------------------------------------------------------
# data


def _native(path: Path, records=None, meta: dict | None = None, **members) -> Path:
    """A native file of ``records`` (3 synthetic patients) with ``members`` replaced or added."""
    import json

    import numpy as np

    from data.native import standard_meta
    from data.synthetic import generate

    records = generate(3, 1) if records is None else records
    np.savez(path, **{**records.columns(), **members},
             meta=np.array(json.dumps(records.meta | standard_meta() | (meta or {}))))
    return path


def test_an_unknown_npz_member_is_refused(tmp_path):
    import numpy as np

    from data.native import read_native
    from data.records import DataFormatError

    path = _native(tmp_path / "x.npz", peak_latncy=np.zeros(3))
    with pytest.raises(DataFormatError, match=rf"^{path}: unknown member\(s\) \['peak_latncy'\]; expected only "
                                              r"\['signal', "):
        read_native(path)


def test_a_peak_mask_of_2_is_refused(tmp_path):
    from data.native import read_native
    from data.records import DataFormatError
    from data.synthetic import generate

    records = generate(3, 1)
    mask = records.peak_mask.astype("int64")
    i = int(mask.argmax())
    mask[i] = 2
    path = _native(tmp_path / "x.npz", records, peak_mask=mask)
    with pytest.raises(DataFormatError, match=rf"^{path}: sample {i}: bad peak_mask \(expected 0 or 1 \(false or "
                                              r"true\), found 2\)$"):
        read_native(path)


@pytest.mark.parametrize("version", [True, 0, -1])
def test_format_version_true_is_refused(tmp_path, version):
    from data.native import read_native
    from data.records import DataFormatError

    path = _native(tmp_path / "x.npz", meta={"format_version": version})
    with pytest.raises(DataFormatError, match=rf"^{path}: meta.format_version: expected an integer 1 to 1, "
                                              rf"found {version!r}$"):
        read_native(path)


def test_a_legacy_encoder_of_five_normals_is_refused(tmp_path):
    import pickle

    import numpy as np

    from data.legacy import read_legacy
    from data.records import DataFormatError
    from data.synthetic import generate
    from tests.data.test_legacy import legacy_dict

    obj = legacy_dict(generate(3, 1))
    obj["label_encoder"].classes_ = np.array(["NORMAL"] * 5)
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match=rf"^{path}: label_encoder.classes_: class name\(s\) \['NORMAL'\] given "
                                              r"more than once; expected each class once"):
        read_legacy(path)


def test_one_patient_id_across_every_class_is_refused(tmp_path, capsys):
    import numpy as np

    from data.synthetic import generate

    records = generate(20, 1)
    assert len(np.unique(records.label)) == 5
    path = _native(tmp_path / "one.npz", records, patient_id=np.zeros(len(records), dtype=np.int64),
                   series_id=np.zeros(len(records), dtype=np.int64))
    err = _train(capsys, tmp_path, "--experiment", "x", "data.source=file", f"data.path={path}")
    assert re.fullmatch(rf"error: {path}: patient 0 has recordings of 5 classes \(NORMAL \d+, NÖROPATİ \d+, SNİK \d+, "
                        r"TOTAL \d+, İTİK \d+\); expected at most MAX_CLASSES_PER_PATIENT = 2 \(a type of loss per "
                        r"ear\): the split is drawn by patient, so check the patient ids", err), err


# ------------------------------------------------------------------------------------------------
# lines that did not name their culprit


def _epl(tmp_path: Path, edit) -> Path:
    from tests.data.conftest import FIXTURES

    text = (FIXTURES / "ABR-fixture-1").read_bytes().decode("ISO-8859-1")
    path = tmp_path / "ABR-edited"
    path.write_bytes(edit(text).encode("ISO-8859-1"))
    return path


def test_a_malformed_rep_rate_names_the_file_and_field(tmp_path):
    from data.epl import read_epl
    from data.records import DataFormatError

    path = _epl(tmp_path, lambda t: re.sub(r"REP RATE \(/sec\): [0-9.]+", "REP RATE (/sec): 2.1.1", t, count=1))
    with pytest.raises(DataFormatError, match=rf"^{path}: header 'REP RATE \(/sec\)': expected a number, "
                                              r"found '2.1.1'$"):
        read_epl(path, "NORMAL", age=0, threshold=20)


def test_a_one_sample_epl_names_the_file_and_the_filter(tmp_path):
    from data.epl import read_epl
    from data.records import DataFormatError

    def one_sample(text: str) -> str:
        head, _, body = text.partition(":DATA")
        return head + ":DATA" + body.lstrip("\r\n").splitlines()[0].join(["\r\n", "\r\n"])

    path = _epl(tmp_path, one_sample)
    with pytest.raises(DataFormatError, match=rf"^{path}: 1 sample\(s\) per level; the band-pass filter \(filtfilt\) "
                                              r"needs more than \d+: expected a whole recording "
                                              r"\(or pass --no-filter\)$"):
        read_epl(path, "NORMAL", age=0, threshold=20)


def test_out_of_memory_reading_a_native_file_names_it(tmp_path, monkeypatch, capsys):
    """A file under MAX_NATIVE_BYTES can still exceed the machine's memory (simulated here)."""
    import numpy as np

    from data import native
    from evaluation.predict import main as predict_main

    path = _native(tmp_path / "big.npz")

    def no_memory(f, allow_pickle=False):
        raise MemoryError()

    monkeypatch.setattr(np.lib.format, "read_array", no_memory)
    with pytest.raises(MemoryError, match=rf"^{path}: its members hold [\d,]+ bytes uncompressed$"):
        native.read_native(path)
    err = _train(capsys, tmp_path, "--experiment", "x", "data.source=file", f"data.path={path}", code=1)
    assert re.fullmatch(rf"error: out of memory: {path}: its members hold [\d,]+ bytes uncompressed \(rerun with "
                        r"--debug for the traceback\)", err), err
    assert predict_main([str(path), "--run", str(tmp_path), "--out", str(tmp_path / "p")]) == 1
    assert f"error: out of memory: {path}: its members hold" in capsys.readouterr().err


def test_a_full_disk_while_logging_names_metrics_jsonl(tmp_path):
    import errno
    from types import SimpleNamespace

    from training.callbacks.base import Record
    from training.callbacks.jsonl import JsonlCallback

    class Full:
        name = str(tmp_path / "run" / "metrics.jsonl")

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    cb = JsonlCallback()
    cb.file = Full()
    trainer = SimpleNamespace(is_main=True, run_dir=tmp_path / "run", resumed=False, step=1)
    with pytest.raises(OSError, match=rf"^\[Errno 28\] '{tmp_path}/run/metrics.jsonl': write failed \(No space left "
                                      r"on device\); records up to the last checkpoint are on disk: free space, then "
                                      r"--resume$"):
        cb.on_record(trainer, Record(kind="step", step=1, epoch=1, scalars={"train/total": 1.0}))
    with pytest.raises(OSError, match="metrics.jsonl': write failed"):
        cb.flush(trainer)
