"""compare_runs() on two fake run directories written here."""

from __future__ import annotations

import json
import math
import re

import pytest

from evaluation.compare import compare_runs, headline_metrics, main
from evaluation.runlog import read_run


def _eval_block():
    return {
        "class": {"model": {"macro_f1": 0.7, "balanced_accuracy": 0.6}},
        "peak_exist": {"model": {"f1": 0.9}},
        "threshold": {"model": {"mae": 5.0, "r2": 0.8}},
        "denoising": [{"snr_db": 10.0, "model": {"pearson_r": 0.99}}, {"snr_db": 0.0, "model": {"pearson_r": 0.95}}],
        "flags": ["class NÖROPATİ (n=3): recall 0, never predicted correctly"],
    }


def test_read_run_skips_a_partial_last_line(fx, tmp_path):
    log = read_run(fx.write_fake_run(tmp_path / "A"))
    assert log.skipped_lines == 1
    assert log.weight_keys() == [f"train/weight_{i}" for i in range(6)]
    assert log.weight_labels()["train/weight_5"] == "threshold"
    steps, values = log.series("val/signal", ("epoch",))
    assert steps == [20, 40] and values == pytest.approx([1.2 / 20, 1.2 / 40])
    with pytest.raises(ValueError, match="expected metrics.jsonl in the run directory, found none"):
        read_run(tmp_path / "missing")


def test_compare_two_runs(fx, tmp_path):
    a = fx.write_fake_run(tmp_path / "A", evaluated=_eval_block())
    b = fx.write_fake_run(tmp_path / "B", steps=60, weight_drift=0.01)
    res = compare_runs([a, b], tmp_path / "cmp")
    for name in ("comparison.md", "comparison.json", "curves.png"):
        assert (tmp_path / "cmp" / name).is_file()
    ra, rb = res["runs"]
    assert ra["final_epoch"]["val/total"] == pytest.approx(12.0 / 40)
    assert rb["final_epoch"]["val/total"] == pytest.approx(12.0 / 60)
    assert rb["final_weights"]["signal"] == pytest.approx(1.0 + 0.01 * 60)  # labelled by component
    assert ra["eval"]["class macro-F1"] == 0.7
    assert ra["eval"]["denoise r @0 dB"] == 0.95  # the level nearest 0 dB
    assert rb["eval"] is None
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "| B |" in md and "not evaluated" in md and "| 1 |" in md
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text(encoding="utf-8"))
    assert saved["runs"][0]["eval"]["latency MAE (ms)"] is None  # absent -> null, not a number


def test_headline_metrics_absent_values_are_nan():
    h = headline_metrics({})
    assert all(math.isnan(v) for v in h.values())


def test_compare_cli(fx, tmp_path, capsys):
    a = fx.write_fake_run(tmp_path / "A")
    assert main([str(a), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "# Run comparison" in out
    # progress on stderr (issue 29): each phase when it starts and its time when it ends, tables stay on stdout
    assert re.search(r"^compare: drawing the curves of 1 run\(s\) \.\.\.$", err, re.M), err
    assert re.search(r"^compare: drawing the curves of 1 run\(s\): \d+\.\d s$", err, re.M), err
    assert "compare:" not in out
    with pytest.raises(ValueError, match="expected at least one run directory"):
        compare_runs([], tmp_path / "x")


def test_delta_m_for_run_hand_numbers():
    from evaluation.compare import DELTA_M_METRICS, delta_m_for_run

    single = {
        "class": {DELTA_M_METRICS["class"]: 0.5},
        "threshold": {DELTA_M_METRICS["threshold"]: 10.0},
    }
    run = {DELTA_M_METRICS["class"]: 0.6, DELTA_M_METRICS["threshold"]: 12.0, DELTA_M_METRICS["signal"]: 0.9}
    # class +20 %, threshold MAE 10 -> 12 is -20 %: Δm = 0; the signal task has no single-task run
    assert delta_m_for_run(run, single) == pytest.approx(0.0)
    run[DELTA_M_METRICS["threshold"]] = 8.0  # now +20 % too
    assert delta_m_for_run(run, single) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="expected at least one single-task run"):
        delta_m_for_run(run, {})


# --------------------------------------------------------------------------------------------
# issue 19: warnings where the runs' data differ; clinical metrics first, val/total last


def _write_config(run, seed=0, split_seed=0, patients=300, norm_mean=0.1):
    import yaml

    cfg = {"data": {"source": "synthetic", "path": "", "synthetic": {"patients": patients, "seed": seed},
                    "split": [0.7, 0.15, 0.15], "split_seed": split_seed, "normalization": "global"},
           "loss": {"balancer": {"strategy": "fixed"}}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (run / "normalization.json").write_text(json.dumps({"signal_mean": norm_mean, "signal_std": 0.3,
                                                        "normalization": "global"}), encoding="utf-8")


def _evaluated(split="test", n=100, patient=None):
    return {**_eval_block(), "meta": {"split": split, "n": n}, **({"patient": patient} if patient else {})}


def test_runs_on_the_same_data_raise_no_data_warning(fx, tmp_path):
    a = fx.write_fake_run(tmp_path / "A", evaluated=_evaluated())
    b = fx.write_fake_run(tmp_path / "B", evaluated=_evaluated())
    _write_config(a)
    _write_config(b)
    res = compare_runs([a, b], tmp_path / "cmp")
    assert res["warnings"] == [f"run {r}: 1 line(s) of metrics.jsonl unreadable and skipped (a run still writing, "
                               f"or a damaged file)" for r in ("A", "B")]  # the fake runs end in a partial line


def test_warns_once_per_difference_in_data_split_and_test_set(fx, tmp_path, capsys):
    a = fx.write_fake_run(tmp_path / "A", evaluated=_evaluated())
    b = fx.write_fake_run(tmp_path / "B", evaluated=_evaluated(split="val", n=80))
    c = fx.write_fake_run(tmp_path / "C")  # not evaluated, no config
    _write_config(a)
    _write_config(b, seed=1, split_seed=3, norm_mean=0.2)
    res = compare_runs([a, b, c], tmp_path / "cmp")
    data = [w for w in res["warnings"] if "metrics.jsonl" not in w]
    assert data == [
        "run C: no config.yaml, so its data and split cannot be compared",
        "the runs were trained on different data: data.synthetic.seed is 0 in A; 1 in B",
        "the runs were split differently: data.split_seed is 0 in A; 3 in B",
        "the runs' normalization statistics differ (A; B): they were trained on different recordings",
        'the runs were tested on different test sets: eval.split is "test" in A; "val" in B',
        "the runs were tested on different test sets: eval.n is 100 in A; 80 in B",
    ]
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert md.index("## Warnings") < md.index("## Clinical metrics")
    assert "- the runs were trained on different data: data.synthetic.seed is 0 in A; 1 in B" in md
    # the CLI prints one stderr line per warning
    assert main([str(a), str(b), "--out", str(tmp_path / "cli")]) == 0
    captured = capsys.readouterr()
    out_dir = tmp_path / "cli"
    assert captured.out.rstrip().splitlines()[-1] == (  # says where it wrote
        f"wrote {out_dir / 'comparison.md'}, {out_dir / 'comparison.json'}, {out_dir / 'curves.png'}")
    err = [line for line in captured.err.splitlines() if not line.startswith("compare: ")]  # less progress
    assert "warning: the runs were split differently: data.split_seed is 0 in A; 3 in B" in err
    assert len(err) == 7 and all(line.startswith("warning: ") for line in err)


def test_clinical_metrics_lead_and_val_total_comes_last(fx, tmp_path):
    patient = {"threshold_within_10db": {"value": 0.93, "ci": [0.9, 0.95]}, "type_macro_f1": 0.71,
               "type": {"recall": {"NORMAL": {"estimate": 0.8, "lo": 0.7, "hi": 0.9}}}, "confusion": [[1, 2]]}
    a = fx.write_fake_run(tmp_path / "A", evaluated=_evaluated(patient=patient))
    with open(a / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write("\n" + json.dumps({"kind": "epoch", "step": 50, "epoch": 3, "data": {}, "text": "summary",
                                   "scalars": {"val/total": 0.5, "val/signal": 0.1,
                                               "val/patient/threshold_within_10db": 0.88}}) + "\n")
    res = compare_runs([a], tmp_path / "cmp")
    row = res["runs"][0]
    assert row["patient"] == {"patient/threshold_within_10db": {"value": 0.93, "ci": [0.9, 0.95]},
                              "patient/type_macro_f1": {"value": 0.71, "ci": None},
                              "patient/type/recall/NORMAL": {"value": 0.8, "ci": [0.7, 0.9]}}
    assert row["val_patient"] == {"val/patient/threshold_within_10db": 0.88}
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    order = [md.index(h) for h in ("## Clinical metrics (per patient)", "## Evaluation per recording",
                                   "## Final validation losses", "## Final balancer weights")]
    assert order == sorted(order)
    assert "| patient/threshold_within_10db | 0.93 [0.9, 0.95] |" in md
    assert "| patient/type_macro_f1 | 0.71 |" in md
    assert md.index("patient/type_macro_f1") < md.index("| val/patient/threshold_within_10db | 0.88 |")
    header = next(line for line in md.splitlines() if line.startswith("| run | val/"))
    assert header.rstrip(" |").endswith("val/total")
    assert "val/total is the balancer's weighted objective: it is not comparable across balancers" in md
    assert res["val_total_note"].startswith("val/total is the balancer's weighted objective")


def test_without_patient_metrics_the_section_says_so(fx, tmp_path):
    res = compare_runs([fx.write_fake_run(tmp_path / "A")], tmp_path / "cmp")
    assert res["runs"][0]["patient"] == {}
    assert "No per-patient metrics in these runs" in (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# issue 17: the CLI on bad input


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_missing_run_duplicate_run_and_debug(fx, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert re.search(r"^error: run '.*nowhere': expected metrics.jsonl in the run directory, found none$",
                     _one_error_line(capsys))
    a = fx.write_fake_run(tmp_path / "A")
    assert main([str(a), str(tmp_path / "A" / "."), "--out", str(out)]) == 2
    assert re.search(r"^error: runs: '.*A/?\.?' is given twice", _one_error_line(capsys))
    with pytest.raises(ValueError, match="expected metrics.jsonl"):
        main([str(tmp_path / "nowhere"), "--out", str(out), "--debug"])
    assert not out.exists()


def test_cli_broken_eval_metrics_is_named(fx, tmp_path, capsys):
    a = fx.write_fake_run(tmp_path / "A")
    (a / "eval").mkdir()
    (a / "eval" / "metrics.json").write_bytes(b"\xff\xfe not json")
    assert main([str(a), "--out", str(tmp_path / "out")]) == 2
    assert re.search(r"^error: evaluation metrics '.*A/eval/metrics.json': not readable as JSON",
                     _one_error_line(capsys))
    (a / "eval" / "metrics.json").write_text("[1, 2]", encoding="utf-8")
    assert main([str(a), "--out", str(tmp_path / "out")]) == 2
    assert "expected a JSON object, found list" in _one_error_line(capsys)


def test_malformed_metrics_lines_are_skipped_and_counted(fx, tmp_path, capsys):
    a = fx.write_fake_run(tmp_path / "A")
    bad = [b'{"kind": "epoch", "step": 99, "scalars": [1, 2]}', b'{"kind": "epoch", "step": "x", "scalars": {}}',
           b'{"kind": "epoch", "step": 99, "scalars": {"val/total": "high"}}', b"\xff\xfe\xfd", b"[1, 2]",
           b'{"kind": ["epoch"], "step": 1}']
    with open(a / "metrics.jsonl", "ab") as f:
        f.write(b"\n" + b"\n".join(bad) + b"\n")
    assert read_run(a).skipped_lines == 1 + len(bad)
    assert main([str(a), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: run A: 7 line(s) of metrics.jsonl unreadable and skipped" in err
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text(encoding="utf-8"))
    assert saved["runs"][0]["final_epoch"]["val/total"] == pytest.approx(12.0 / 40)  # the last good summary


def test_cli_never_replaces_an_earlier_comparison_without_overwrite(fx, tmp_path, capsys):
    a = fx.write_fake_run(tmp_path / "A")
    out = tmp_path / "out"
    out.mkdir()
    (out / "comparison.md").write_text("my notes", encoding="utf-8")
    for extra in ([], ["--overwrite"]):  # not written by compare: never replaced (issue 32)
        assert main([str(a), "--out", str(out), *extra]) == 2
        assert "comparison.md' already exists and was not written by python -m evaluation.compare" in \
            _one_error_line(capsys)
    assert (out / "comparison.md").read_text(encoding="utf-8") == "my notes"
    (out / "comparison.md").unlink()
    assert main([str(a), "--out", str(out)]) == 0
    capsys.readouterr()  # the comparison and its warnings
    assert main([str(a), "--out", str(out)]) == 2
    assert "comparison.md' (and 2 more) already exists: choose another --out, or replace it with --overwrite" in \
        _one_error_line(capsys)
    assert main([str(a), "--out", str(out), "--overwrite"]) == 0
    assert (out / "comparison.md").read_text(encoding="utf-8").startswith("# Run comparison")


def test_out_is_required_so_no_shared_folder_collects_comparisons(tmp_path, capsys, monkeypatch):
    """It used to write logs/comparison/ under the current directory without saying so."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "A")])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "logs").exists()
