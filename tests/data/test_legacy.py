"""The earlier system's processed pickle/joblib file, and the allow-list that keeps it from running code."""

from __future__ import annotations

import os
import pickle

import joblib
import numpy as np
import pytest
from sklearn.preprocessing import LabelEncoder, StandardScaler

from data.legacy import UnsafePickleError, read_legacy, safe_load
from data.records import CLASS_NAMES, DataFormatError, Records


def legacy_dict(records: Records, scaled: bool = True, encoder_names=CLASS_NAMES) -> dict:
    """The earlier system's layout: targets from a LabelEncoder fitted on ``encoder_names``."""
    encoder = LabelEncoder().fit(list(encoder_names))
    scaler = StandardScaler().fit(records.static)
    static = scaler.transform(records.static) if scaled else records.static
    target = encoder.transform([encoder_names[i] for i in records.label])
    data = [
        {
            "patient_id": int(records.patient_id[i]),
            "static_params": static[i].astype(np.float32),
            "signal": records.signal[i],
            "v_peak": np.nan_to_num(np.array([records.peak_latency[i], records.peak_amplitude[i]], np.float32)),
            "v_peak_mask": np.array([records.peak_mask[i]] * 2),
            "target": int(target[i]),
            "clinical_threshold": float(records.threshold[i]),
        }
        for i in range(len(records))
    ]
    return {"data": data, "scaler": scaler, "label_encoder": encoder, "metadata": {"note": "earlier system"}}


def _same(a: Records, b: Records) -> None:
    np.testing.assert_array_equal(a.signal, b.signal)
    np.testing.assert_allclose(a.static, b.static, rtol=1e-4, atol=1e-3)
    for k in ("label", "peak_mask", "patient_id", "threshold"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    np.testing.assert_array_equal(a.peak_latency, b.peak_latency)


@pytest.mark.parametrize("writer", ["pickle", "pickle0", "joblib", "joblib_gz"])
def test_reads_pickle_and_joblib_files(tmp_path, small_records, writer):
    obj = legacy_dict(small_records)
    path = tmp_path / ("legacy.pkl" if writer.startswith("pickle") else "legacy.joblib")
    if writer == "pickle":
        path.write_bytes(pickle.dumps(obj))
    elif writer == "pickle0":
        path.write_bytes(pickle.dumps(obj, protocol=0))
    else:
        joblib.dump(obj, path, compress=3 if writer == "joblib_gz" else 0)
    records, report = read_legacy(path)
    _same(records, small_records)
    assert any("inverse-transformed" in n for n in report.notes)
    assert records.meta["source"]["metadata"] == {"note": "earlier system"}


def test_unscaled_static_is_kept_and_label_names_are_matched(tmp_path, small_records):
    ascii_names = ("NORMAL", "NOROPATI", "SNIK", "TOTAL", "ITIK")  # another spelling, another encoder order
    obj = legacy_dict(small_records, scaled=False, encoder_names=ascii_names)
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps(obj))
    records, report = read_legacy(path)
    _same(records, small_records)
    assert any("already in physical units" in n for n in report.notes)


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("writer", ["pickle", "joblib"])
def test_a_crafted_payload_is_refused_and_never_runs(tmp_path, small_records, writer):
    marker = tmp_path / "pwned"
    obj = legacy_dict(small_records.subset(np.arange(3)))
    obj["metadata"] = _Payload(str(marker))
    path = tmp_path / "evil.pkl"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        joblib.dump(obj, path)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refusing to load '(posix|os|nt)\.system'"):
        read_legacy(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["builtins.eval", "builtins.getattr", "subprocess.Popen", "numpy.load",
                                  "sklearn.pipeline.Pipeline", "joblib.numpy_pickle.NDArrayWrapper"])
def test_allow_list_refuses_other_globals(tmp_path, name):
    module, attr = name.rsplit(".", 1)
    path = tmp_path / "g.pkl"
    path.write_bytes(b"\x80\x04c" + module.encode() + b"\n" + attr.encode() + b"\n.")  # GLOBAL opcode
    with pytest.raises(UnsafePickleError, match=f"refusing to load '{name}'"):
        safe_load(path)


def test_sklearn_objects_are_inert_stand_ins(tmp_path, small_records):
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps(legacy_dict(small_records)))
    obj = safe_load(path)
    assert type(obj["scaler"]).__module__ == "data.legacy"
    assert obj["label_encoder"].classes_.tolist() == list(CLASS_NAMES)
    assert not hasattr(obj["scaler"], "transform")


def test_sample_problems(tmp_path, small_records):
    obj = legacy_dict(small_records)
    obj["data"][2]["signal"] = obj["data"][2]["signal"][:100]
    obj["data"][5]["clinical_threshold"] = None
    obj["data"][6]["v_peak_mask"] = np.array([True, False])
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match=r"sample 2: signal length \(expected 200 samples, found 100\)"):
        read_legacy(path)
    records, report = read_legacy(path, strict=False)
    assert report.dropped == {"signal length": 1, "non-finite threshold": 1}
    assert any("only one of latency/amplitude" in n for n in report.notes)
    assert len(records) == len(small_records) - 2
    del obj["data"][0]["target"]
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match=r"sample 0: missing field\(s\) \['target'\]"):
        read_legacy(path, strict=False)


def test_not_a_legacy_file(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataFormatError, match="expected a dict with a 'data' list"):
        read_legacy(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DataFormatError, match="not a readable pickle/joblib file"):
        read_legacy(path)


def test_malformed_peak_fields(tmp_path, small_records):
    obj = legacy_dict(small_records)
    obj["data"][4]["v_peak"] = np.array([6.1])
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match="sample 4: v_peak and v_peak_mask: expected 2 values each, found 1"):
        read_legacy(path)
    records, report = read_legacy(path, strict=False)
    assert len(records) == len(small_records) and not records.peak_mask[4]
    assert any("malformed v_peak/v_peak_mask" in n and "[4]" in n for n in report.notes)
    obj["data"][4]["target"] = "NORMAL"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match="sample 4: target: expected an integer class index, found 'NORMAL'"):
        read_legacy(path)
    records, report = read_legacy(path, strict=False)  # lenient: dropped and counted, like any unknown label
    assert len(records) == len(small_records) - 1 and report.dropped == {"unknown label": 1}


def test_unlabelled_samples_for_prediction(tmp_path, small_records):
    obj = legacy_dict(small_records, scaled=False)
    for s in obj["data"]:
        del s["target"], s["v_peak"], s["v_peak_mask"], s["clinical_threshold"]
    obj["data"][1]["target"] = 99  # a target outside the encoder stays an unknown label
    path = tmp_path / "u.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match=r"sample 0: missing field\(s\) \['v_peak', 'v_peak_mask', 'target'\]"):
        read_legacy(path)
    records, report = read_legacy(path, strict=False, labelled=False)
    assert report.dropped == {"unknown label": 1} and report.rows == {"unknown label": [1]}
    assert (records.label == -1).all() and np.isnan(records.threshold).all() and not records.peak_mask.any()
