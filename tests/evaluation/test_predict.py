"""evaluation.predict end to end on a tiny run with a series model: CSV without labels, the EPL fixture,
a native file; the tables checked against the networks called directly; bad inputs are one line."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.native import write_native
from data.records import CLASS_NAMES, LABEL_COLUMNS, Records
from data.synthetic import generate
from data.table import write_table
from evaluation.predict import main
from training.clinical import GRID_STEP_DB, NO_RESPONSE_DB, rule_threshold

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures"
EPL = FIXTURES / "ABR-fixture-1"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-epoch run (4-channel network, 12 synthetic patients) with its series model fitted."""
    from data.dataset import build_data
    from tests.runs import tiny_config, train_run
    from training.checkpoint import load_run
    from training.series_stage import run_series_stage

    root = tmp_path_factory.mktemp("predict_run")
    cfg = tiny_config(root, "training.epochs=1", "model.base_channels=4", "series.epochs=2", "series.val_every=1",
                      "series.width=16", "series.heads=2", "logging.use_tensorboard=false", "model.peak_head=map")
    train_run(cfg, root / "run")
    run_series_stage(root / "run", load_run(root / "run").model, build_data(cfg.data, cfg.loss.class_weights), cfg)
    return root / "run"


@pytest.fixture(scope="module")
def rule_run(run, tmp_path_factory) -> Path:
    """The same run without its series model: predict falls back to the rule."""
    copy = tmp_path_factory.mktemp("rule_run") / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("series.pt", "tensorboard"))
    return copy


@pytest.fixture(scope="module")
def patients() -> Records:
    return generate(3, seed=11)  # about 75 recordings, 3 series


def unlabelled_csv(path: Path, records: Records, drop: tuple[str, ...] = LABEL_COLUMNS) -> Path:
    """``records`` as a table without the label, threshold and peak columns (what a clinic has)."""
    write_table(path, records)
    rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
    keep = [j for j, h in enumerate(rows[0]) if h not in drop]
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[r[j] for j in keep] for r in rows])
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def predict(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # a flag the parser refuses
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def model_answers(run_dir: Path, records: Records) -> dict[str, np.ndarray]:
    """The networks called directly on ``records``: per recording, and per series (ascending series id)."""
    from models.series import recording_evidence
    from training.checkpoint import load_run
    from training.series import load_series

    loaded = load_run(run_dir)
    st = loaded.stats
    x0 = torch.from_numpy((records.signal - st.signal_mean) / st.signal_std).float()[:, None]  # (N 1 L)
    static = torch.from_numpy(records.static).float()
    with torch.no_grad():
        out, ev = recording_evidence(loaded.model, x0, static)
        net = load_series(run_dir)
        ids = np.unique(records.series_id)
        S, Smax = len(ids), max(int((records.series_id == i).sum()) for i in ids)
        evidence, level, mask = torch.zeros(S, Smax, ev.shape[1]), torch.zeros(S, Smax), torch.zeros(S, Smax).bool()
        for s, i in enumerate(ids):
            rows = np.flatnonzero(records.series_id == i)
            evidence[s, : len(rows)], level[s, : len(rows)], mask[s, : len(rows)] = ev[rows], static[rows, 1], True
        series = net(evidence, level, mask) if net is not None else None
    answers = {"proba": out["class_logits"].softmax(-1).numpy(), "peak_prob": out["peak_logit"].sigmoid().numpy(),
               "latency": out["peak_latency"].numpy(), "amplitude": out["peak_amplitude"].numpy(), "ids": ids,
               "wave_prob": out["wave_presence"].sigmoid().numpy(), "wave_latency": out["wave_latency"].numpy()}
    if series is not None:
        cdf = series["threshold_logits"].softmax(-1).cumsum(-1).numpy()  # (S 22)
        answers["threshold"] = [GRID_STEP_DB * int(np.argmax(c >= 0.5)) for c in cdf]
        answers["low"] = [GRID_STEP_DB * int(np.argmax(c >= 0.1)) for c in cdf]
        answers["type_proba"] = series["type_logits"].softmax(-1).numpy()
    return answers


def db(text: str) -> float:
    return NO_RESPONSE_DB if text == "no response" else float(text)


def check_recordings(rows: list[dict[str, str]], records: Records, want: dict[str, np.ndarray]) -> None:
    """recordings.csv rows (``sample`` = row of ``records``) against the network's own answers."""
    assert sorted(int(r["sample"]) for r in rows) == list(range(len(records)))
    for r in rows:
        i = int(r["sample"])
        got = [float(r[f"p_{c}"]) for c in CLASS_NAMES]
        np.testing.assert_allclose(got, want["proba"][i], atol=1e-4)
        assert float(r["wave_v_probability"]) == pytest.approx(want["peak_prob"][i], abs=1e-4)
        assert float(r["latency_ms"]) == pytest.approx(want["latency"][i], abs=1e-3)
        assert float(r["amplitude_uv"]) == pytest.approx(want["amplitude"][i], abs=1e-4)
        assert float(r["intensity_db"]) == records.static[i, 1]
        assert r["class"] == CLASS_NAMES[int(want["proba"][i].argmax())]
        found = want["wave_prob"][i] >= 0.5  # waves I, III, V
        for k, w in enumerate(("I", "III")):
            assert float(r[f"wave_{w}_probability"]) == pytest.approx(want["wave_prob"][i, k], abs=1e-4)
            assert r[f"wave_{w}"] == ("present" if found[k] else "absent")
            assert (r[f"wave_{w}_latency_ms"] != "") == found[k]
            if found[k]:
                assert float(r[f"wave_{w}_latency_ms"]) == pytest.approx(want["wave_latency"][i, k], abs=1e-3)
        if found[0] and found[2]:
            i_to_v = want["wave_latency"][i, 2] - want["wave_latency"][i, 0]
            assert float(r["interpeak_I_V_ms"]) == pytest.approx(i_to_v, abs=2e-3)
        else:
            assert r["interpeak_I_V_ms"] == ""
    # each recording's level coherence: with its louder and quieter neighbour and the loudest of its series
    from models.series import level_coherence
    from training.clinical import series_index

    members = series_index(records.series_id, records.static[:, 1]).members
    coh = level_coherence(records.signal, members)  # (N 3), the signals as read (µV): scale does not matter
    loudest, quietest = {int(m[-1]) for m in members}, {int(m[0]) for m in members}
    for r in rows:
        i = int(r["sample"])
        assert (r["correlation_louder"] == "") == (i in loudest) and (r["correlation_quieter"] == "") == (i in quietest)
        for k, name in enumerate(("correlation_louder", "correlation_quieter", "correlation_loudest")):
            if r[name]:
                assert float(r[name]) == pytest.approx(coh[i, k], abs=2e-3), (i, name)
    # each wave read down the waterfall: once present at a level, present at every louder level of its series
    for m in members:
        mine = set(m.tolist())
        by_level = sorted((r for r in rows if int(r["sample"]) in mine),
                          key=lambda r: records.static[int(r["sample"]), 1])
        for w in ("I", "III", "V"):
            present = [r[f"wave_{w}_waterfall"] == "present" for r in by_level]
            assert present == sorted(present), (w, present)
            assert [r[f"wave_{w}_waterfall_latency_ms"] != "" for r in by_level] == present


def check_series(rows: list[dict[str, str]], records: Records, want: dict[str, np.ndarray]) -> None:
    """patients.csv rows (one per series, ascending id) against the series network and the rule."""
    assert len(rows) == len(want["ids"])
    for s, r in enumerate(rows):
        members = records.series_id == want["ids"][s]
        assert int(r["n_recordings"]) == members.sum()
        assert db(r["threshold_db"]) == want["threshold"][s] and db(r["threshold_low_db"]) == want["low"][s]
        np.testing.assert_allclose([float(r[f"p_{c}"]) for c in CLASS_NAMES], want["type_proba"][s], atol=1e-4)
        assert r["type"] == CLASS_NAMES[int(want["type_proba"][s].argmax())]
        assert r["threshold_method"] == "series model"
        rule = rule_threshold(records.static[members, 1], want["peak_prob"][members] >= 0.5)
        assert db(r["rule_threshold_db"]) == rule
        detected = members & (want["peak_prob"] >= 0.5)
        if len(np.unique(records.static[detected, 1])) >= 2:  # wave V's latency-intensity slope, ms/dB
            slope = np.polyfit(records.static[detected, 1], want["latency"][detected], 1)[0]
            assert float(r["li_slope_ms_per_db"]) == pytest.approx(slope, abs=1e-4)
        else:
            assert r["li_slope_ms_per_db"] == ""


# ------------------------------------------------------------------------------------------------
# end to end


def test_csv_without_labels(run, patients, tmp_path, capsys):
    path = unlabelled_csv(tmp_path / "clinic.csv", patients)
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert not set(LABEL_COLUMNS) & set(header)
    code, out, err = predict(capsys, "--run", run, path, "--out", tmp_path / "out", "--workers", 1)
    assert code == 0, err
    assert f"predicted {len(patients)} recordings in 3 series (0 unusable" in out
    phases = [line.split(": ")[1] for line in err.splitlines() if line.startswith("predict: ")]
    assert phases == ["network", "series", "tables", "figures"]  # it was silent until the end
    want = model_answers(run, patients)
    rec = read_rows(tmp_path / "out" / "recordings.csv")
    check_recordings(rec, patients, want)
    assert rec[0]["patient"] == str(patients.patient_id[0]) and rec[0]["source"] == str(path)
    levels = [float(r["intensity_db"]) for r in rec if r["series"] == rec[0]["series"]]
    assert levels == sorted(levels, reverse=True)  # each series loudest first, as it is read
    pat = read_rows(tmp_path / "out" / "patients.csv")
    check_series(pat, patients, want)
    threshold = {r["series"]: db(r["threshold_db"]) for r in pat}
    for r in rec:  # wave V down the waterfall: present from the series' threshold up, as a clinician marks it
        assert (r["wave_V_waterfall"] == "present") == (float(r["intensity_db"]) >= threshold[r["series"]])
        # gated: the recording's own wave V, kept only where its series holds a response
        silent = threshold[r["series"]] >= NO_RESPONSE_DB
        assert (r["wave_V_gated"] == "present") == (r["wave_v"] == "present" and not silent)
    for r in pat:
        assert (tmp_path / "out" / r["figure"]).is_file()
        assert r["figure"] == f"waterfall_{r['patient']}_{r['series']}.png"
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert f"{len(patients)} read, {len(patients)} used, 0 unusable" in summary
    assert "the series model (`checkpoints/series.pt`)" in summary and f"`{run}`, checkpoint `best`" in summary
    assert "checkpoint `best` (after epoch 1, step " in summary  # a 1-epoch run: never "epoch 2"


def test_epl_folder_is_one_series_named_after_the_file(run, tmp_path, capsys):
    from data.epl import read_epl

    folder = tmp_path / "patient7"
    folder.mkdir()
    for f in FIXTURES.glob("ABR-fixture-1*"):
        shutil.copy(f, folder)
    code, _, err = predict(capsys, "--run", run, folder, "--out", tmp_path / "out", "--age", 0.5, "--patient-id", 7)
    assert code == 0, err
    assert "ABR-fixture-1-16.0kHz-analyzed.txt: an abr analysis file" in err  # listed, not skipped silently
    records, _ = read_epl(EPL, None, age=0.5)
    records.series_id[:] = 0
    want = model_answers(run, records)
    rec = read_rows(tmp_path / "out" / "recordings.csv")
    check_recordings(rec, records, want)
    assert [r["intensity_db"] for r in rec] == ["80", "60", "40", "20"] and {r["series"] for r in rec} == {
        "ABR-fixture-1"}
    (pat,) = read_rows(tmp_path / "out" / "patients.csv")
    check_series([pat], records, want)
    assert pat["patient"] == "7" and pat["figure"] == "waterfall_7_ABR-fixture-1.png"
    assert "dB SPL" in pat["warnings"]
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "an abr analysis file" in summary and "| epl | 4 | 4 | 0 |" in summary


def test_native_file_with_labels(run, tmp_path, capsys):
    records = generate(2, seed=12)
    path = write_native(tmp_path / "clinic.npz", records)
    code, _, err = predict(capsys, "--run", run, path, "--out", tmp_path / "out", "--no-figures")
    assert code == 0, err
    want = model_answers(run, records)
    check_recordings(read_rows(tmp_path / "out" / "recordings.csv"), records, want)
    check_series(read_rows(tmp_path / "out" / "patients.csv"), records, want)
    assert not list((tmp_path / "out").glob("*.png"))


def test_predict_answers_are_what_evaluate_scores(run, tmp_path, capsys):
    """One code path: the thresholds and types in patients.csv, scored against the truth, give the numbers
    of the per-patient section of evaluate (patient_metrics) for the series model."""
    from data.dataset import ABRDataset
    from training.checkpoint import load_run
    from training.clinical import threshold_metrics, type_metrics
    from training.series import load_series, patient_metrics

    records = generate(6, seed=13)
    path = write_native(tmp_path / "clinic.npz", records)
    assert predict(capsys, "--run", run, path, "--out", tmp_path / "out", "--no-figures")[0] == 0
    pat = read_rows(tmp_path / "out" / "patients.csv")
    ids = np.unique(records.series_id)
    first = [np.flatnonzero(records.series_id == i)[0] for i in ids]
    truth_db, truth_type = records.threshold[first].astype(float), records.label[first]
    loaded = load_run(run)
    m = patient_metrics(loaded.model, ABRDataset(records, loaded.stats), n_classes=5, majority_type=0,
                        series_net=load_series(run), n_boot=0)
    thr = threshold_metrics(truth_db, np.array([db(r["threshold_db"]) for r in pat]), n_boot=0)
    typ = type_metrics(truth_type, np.array([CLASS_NAMES.index(r["type"]) for r in pat]), 5, n_boot=0)
    for k, v in thr.items():
        assert v.value == pytest.approx(m["threshold"]["series_model"][k].value, nan_ok=True)
    assert typ["macro_f1"].value == pytest.approx(m["type"]["series_model"]["macro_f1"].value)
    rule = threshold_metrics(truth_db, np.array([db(r["rule_threshold_db"]) for r in pat]), n_boot=0)
    assert rule["mae_db"].value == pytest.approx(m["threshold"]["rule"]["mae_db"].value)


def test_without_a_series_model_the_rule_answers(rule_run, patients, tmp_path, capsys):
    from training.clinical import evidence_proba, series_index

    path = unlabelled_csv(tmp_path / "clinic.csv", patients)
    assert predict(capsys, "--run", rule_run, path, "--out", tmp_path / "out", "--no-figures")[0] == 0
    want = model_answers(rule_run, patients)
    proba = evidence_proba(series_index(patients.series_id, patients.static[:, 1]), want["proba"])  # (S K)
    for s, r in enumerate(read_rows(tmp_path / "out" / "patients.csv")):
        assert r["threshold_method"] == "rule" and r["type_method"] == "summed evidence"
        assert r["threshold_db"] == r["rule_threshold_db"] and r["threshold_low_db"] == r["threshold_high_db"] == ""
        np.testing.assert_allclose([float(r[f"p_{c}"]) for c in CLASS_NAMES], proba[s], atol=1e-4)
    assert "no series model in the run" in (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")


def test_unusable_recordings_are_counted_and_listed(run, patients, tmp_path, capsys):
    path = unlabelled_csv(tmp_path / "clinic.csv", patients)
    rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
    rows[1 + 2][rows[0].index("s17")] = ""  # sample 2: a gap in the signal
    rows[1 + 5] = rows[1 + 5][:-4]  # sample 5: a row that ends early
    rows[1 + 7][rows[0].index("intensity")] = "130"  # sample 7: usable, but louder than the training data
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    code, out, err = predict(capsys, "--run", run, path, "--out", tmp_path / "out", "--no-figures")
    assert code == 0 and "(2 unusable, listed in summary.md)" in out and "dropped 2" in err
    rec = read_rows(tmp_path / "out" / "recordings.csv")
    assert len(rec) == len(patients) - 2 and not {"2", "5"} & {r["sample"] for r in rec}
    (loud,) = [r for r in rec if r["sample"] == "7"]
    assert "intensity 130 dB outside the training range 0 to 100" in loud["warnings"]
    assert sum("intensity" in r["warnings"] for r in rec) == 1
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert f"| {path} | 2 | non-finite signal: expected finite values" in summary
    assert "found nan at point 17 |" in summary
    assert f"| {path} | 5 | signal length: expected 200 samples, found 196 |" in summary  # said neither
    assert "## Unusable recordings (2)" in summary
    pat = read_rows(tmp_path / "out" / "patients.csv")
    assert sum("intensity: 1 of" in r["warnings"] for r in pat) == 1


def test_outputs_are_replaced_only_with_overwrite(run, patients, tmp_path, capsys):
    path = unlabelled_csv(tmp_path / "clinic.csv", patients)
    out = tmp_path / "out"
    assert predict(capsys, "--run", run, path, "--out", out, "--workers", 1)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = predict(capsys, "--run", run, path, "--out", out)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "notes.txt"} == before
    one = unlabelled_csv(tmp_path / "one.csv", patients.subset(patients.series_id == patients.series_id[0]))
    assert predict(capsys, "--run", run, one, "--out", out, "--overwrite", "--workers", 1)[0] == 0
    assert len(list(out.glob("waterfall_*.png"))) == 1  # the previous figures went with --overwrite
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"  # not ours: left alone


# ------------------------------------------------------------------------------------------------
# bad inputs: one line, exit 2, no traceback, nothing written


def _bad_csv(tmp_path: Path, patients: Records) -> Path:
    return unlabelled_csv(tmp_path / "no_age.csv", patients, drop=(*LABEL_COLUMNS, "age"))


BAD = [
    (lambda t, p: [t / "missing.csv"], r"INPUT '.*missing\.csv': file not found"),
    (lambda t, p: [_text(t / "notes.txt", "hello")], r"notes\.txt': cannot tell the format .* pass --format"),
    (lambda t, p: ["--format", "native", _text(t / "x.npz", "hello")], r"x\.npz: not a native \.npz file"),
    (lambda t, p: [EPL], r"ABR-fixture-1: an EPL file carries no age; pass --age YEARS"),
    (lambda t, p: [_bad_csv(t, p)], r"missing column\(s\) \['age'\].* with --age"),
    (lambda t, p: [EPL, "--age", "-3"], r"argument --age: expected a finite number >= 0"),
    (lambda t, p: [EPL, EPL, "--age", "1"], r"given twice"),
    (lambda t, p: [EPL, "--age", "1", "--run", t / "nowhere"], r"run directory .*nowhere.*: not found"),
]


def _text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line(run, patients, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, stdout, err = predict(capsys, "--run", run, "--out", out, *args(tmp_path, patients))
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(message, err), err
    assert not out.exists()  # nothing written


def test_out_must_be_a_folder(run, tmp_path, capsys):
    target = _text(tmp_path / "out", "a file")
    code, _, err = predict(capsys, "--run", run, EPL, "--age", 1, "--out", target)
    assert code == 2 and "'out' is a file, expected a folder" in err.replace(str(tmp_path) + "/", "")
    assert target.read_text(encoding="utf-8") == "a file"


# ------------------------------------------------------------------------------------------------
# how far to trust the answers (issue 27)


@pytest.fixture(scope="module")
def trust_run(run, tmp_path_factory) -> Path:
    """The run with its input check and calibration fitted (evaluation.trust, as training does)."""
    from data.dataset import build_data
    from evaluation.trust import fit_trust
    from training.checkpoint import load_run
    from training.series import load_series

    copy = tmp_path_factory.mktemp("trust_run") / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("tensorboard"))
    loaded = load_run(copy)
    fit_trust(copy, loaded.model, loaded.diffusion, build_data(loaded.cfg.data, loaded.cfg.loss.class_weights),
              load_series(copy))
    return copy


def test_without_trust_files_predict_says_so(run, patients, tmp_path, capsys):
    path = unlabelled_csv(tmp_path / "clinic.csv", patients)
    code, _, err = predict(capsys, "--run", run, path, "--out", tmp_path / "out", "--no-figures")
    assert code == 0, err
    assert "no familiarity.json or calibration.json" in err and "python -m evaluation.trust --run" in err
    assert {r["input_check"] for r in read_rows(tmp_path / "out" / "patients.csv")} == {"not checked"}
    assert "**Input check: not done.**" in (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")


def test_unlike_training_data_is_marked_everywhere(trust_run, patients, tmp_path, capsys):
    from evaluation.calibration import Calibration, softmax_t

    scaled = Records(**{**patients.columns(), "signal": patients.signal * 10.0}, meta=patients.meta)
    flat = Records(**{**patients.columns(), "signal": np.zeros_like(patients.signal)}, meta=patients.meta)
    ins = [unlabelled_csv(tmp_path / f"{n}.csv", r) for n, r in (("clinic", patients), ("x10", scaled), ("flat", flat))]
    code, _, err = predict(capsys, "--run", trust_run, *ins, "--out", tmp_path / "out", "--workers", 1)
    assert code == 0, err
    pat = read_rows(tmp_path / "out" / "patients.csv")
    odd = [r for r in pat if not r["source"].endswith("clinic.csv")]
    assert len(odd) == 6 and {r["input_check"] for r in odd} == {"unlike training data"}
    assert all(r["input_reason"] and float(r["input_score"]) > 1 for r in odd)
    assert all("amplitude" in r["input_reason"] for r in odd if r["source"].endswith("flat.csv"))
    rec = read_rows(tmp_path / "out" / "recordings.csv")
    assert {r["input_check"] for r in rec} <= {"in range", "unusual", "unlike training data"}
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# Prediction\n\n**Input check** (series): ")
    assert re.search(r"\d+ unlike training data; recordings", summary) and "not to be trusted" in summary
    assert "unlike the training data" in err
    # type probabilities are the calibrated ones: softmax(log p / T + b) of the network's own
    cal = Calibration.load(trust_run)
    assert cal.recording_bias is not None and len(cal.recording_bias) == len(CLASS_NAMES)
    want = model_answers(trust_run, patients)
    clinic = [r for r in rec if r["source"].endswith("clinic.csv")]
    for r in clinic:
        i = int(r["sample"])
        p = softmax_t(np.log(np.clip(want["proba"][i], 1e-12, 1)) / cal.recording + np.asarray(cal.recording_bias), 1.0)
        np.testing.assert_allclose([float(r[f"p_{c}"]) for c in CLASS_NAMES], p, atol=1e-4)
    assert all("coherence" in r for r in pat)


def test_waterfall_marks_the_waves_read_down_the_waterfall():
    """The figure marks wave V where the series hears it (at and above the threshold) at the waterfall's
    latency; below it, the recording's own detections (drawn open, not counted); waves I and III as read down
    the waterfall. Without the waterfall reading, each recording's own answers."""
    from types import SimpleNamespace

    from evaluation.predict import wave_marks

    level = np.array([80.0, 60.0, 40.0, 20.0])
    ev = SimpleNamespace(static=np.column_stack([np.ones(4), level, np.ones(4), np.ones(4)]),
                         peak_prob=np.array([0.9, 0.2, 0.7, 0.6]), latency=np.array([5.6, 6.0, 6.9, 7.5]),
                         waves={"prob": np.full((4, 3), 0.1), "latency": np.full((4, 3), 3.0)})
    read = {"prob": np.column_stack([np.full(4, 0.8), np.zeros(4), (level >= 50).astype(float)]),
            "latency": np.column_stack([np.full(4, 1.6), np.full(4, 3.7), [5.7, 6.2, 7.0, 7.4]])}
    members = np.array([3, 1, 0])  # any order: the rows of one series
    marks = wave_marks(ev, read, members, threshold_db=50.0)
    assert marks["peak_prob"].tolist() == [0.6, 1.0, 1.0]  # 20 dB: its own detection; 60 and 80 dB: read present
    assert marks["latency"].tolist() == [7.5, 6.2, 5.7]
    assert marks["early_waves"][0].tolist() == read["prob"][members, :2].tolist()
    assert "waterfall" in marks["wave_label"]
    alone = wave_marks(ev, None, members, threshold_db=50.0)
    assert alone["peak_prob"].tolist() == ev.peak_prob[members].tolist() and "wave_label" not in alone
    assert alone["early_waves"][1].tolist() == ev.waves["latency"][members, :2].tolist()
