"""evaluate(): metrics.json, figures and report.md from fakes honouring the contracts."""

from __future__ import annotations

import json

import pytest

from evaluation.evaluate import evaluate, load_single_task, main


def test_evaluate_writes_metrics_figures_and_report(fx, stats, tmp_path):
    run = fx.write_fake_run(tmp_path / "EXP")
    items = fx.make_items(40)
    m = evaluate(fx.FakeNet(), fx.FakeDiffusion(), stats, items[:30], items, run / "eval", generate_fn=fx.fake_generate,
                 run_dir=run, gen_n=4, meta={"split": "test"})
    out = run / "eval"
    for name in ("metrics.json", "report.md", "confusion.png", "scatter.png", "waveforms.png", "loss_curves.png",
                 "weights.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["meta"]["split"] == "test" and saved["meta"]["n"] == 40
    # the fake network collapses onto NORMAL and predicts a constant threshold: both said plainly
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "COLLAPSE: class head predicts one class (NORMAL) for 100.0 % of samples" in report
    assert "CONSTANT: threshold head output std 0 dB" in report
    # the fake latency head is exact, and so is the fake generator's wave V (to the picker's 0.05 ms grid)
    assert m["peak_latency"]["model"]["mae"] == pytest.approx(0.0, abs=1e-5)
    for c in m["generation"]["conditions"]:
        assert c["mean_waveform_r"] > 0.9
        assert c["generated_latency_median_ms"] == pytest.approx(c["real_latency_mean_ms"], abs=0.6)
    assert "## Generation" in report and "![confusion](confusion.png)" in report
    # per patient: 40 one-recording series; the constant 30 dB head lands within 10 dB of true thresholds
    # 20, 25 and 30 dB (labels 2-4 of 0-4, eight series each): 24 of 40
    p = saved["patient"]
    assert p["n_series"] == 40 and "## Per patient (40 series, 40 recordings" in report
    within = p["threshold"]["head_mean"]["within_10db"]
    assert within["value"] == pytest.approx(0.6) and within["ci"][0] < 0.6 < within["ci"][1]
    assert p["type"]["majority"]["recall"]["0"]["value"] == 1.0  # majority of the first 30 items' series: NORMAL
    assert p["wave_v"]["latency_within_0.1ms"]["value"] == pytest.approx(1.0)  # the fake latency head is exact


def test_evaluate_without_generation_or_run_log(fx, stats, tmp_path):
    items = fx.make_items(10)
    m = evaluate(fx.FakeNet(), fx.FakeDiffusion(), stats, items, items, tmp_path, figures=False)
    assert "generation" not in m and m["meta"]["generation"] == "not run"
    assert not (tmp_path / "confusion.png").exists()


def test_single_task_spec(fx, stats, tmp_path):
    items = fx.make_items(10)
    evaluate(fx.FakeNet(), fx.FakeDiffusion(), stats, items, items, tmp_path / "ST" / "eval", figures=False)
    task, block = load_single_task(f"class={tmp_path / 'ST'}")
    assert task == "class" and "macro_f1" in block
    task, block = load_single_task(f"signal={tmp_path / 'ST'}")
    assert isinstance(block, list) and "pearson_r" in block[0]["model"]
    with pytest.raises(ValueError, match="expected TASK=RUN_DIR with TASK one of"):
        load_single_task("klass=x")
    with pytest.raises(ValueError, match="evaluate that run first"):
        load_single_task(f"class={tmp_path / 'nowhere'}")


def test_cli_rejects_bad_noise_levels(capsys):
    with pytest.raises(SystemExit):
        main(["--run", "logs/x", "--snr-levels", "0,abc"])
    assert "expected comma-separated numbers" in capsys.readouterr().err
