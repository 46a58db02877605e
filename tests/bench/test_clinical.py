"""bench/clinical.py end to end on a tiny run with the series stage: the JSON holds every method."""

from __future__ import annotations

import json

from bench.clinical import main
from tests.progress import finished_phases
from tests.runs import tiny_config, train_run


def test_clinical_bench_scores_a_fresh_cohort_and_the_test_split(tmp_path, capsys):
    cfg = tiny_config(tmp_path, "data.synthetic.patients=30", "series.enabled=true", "series.epochs=2",
                      "series.width=16", "series.heads=2")
    run = tmp_path / "run"
    train_run(cfg, run)
    from data.dataset import build_data
    from training.checkpoint import load_run
    from training.series_stage import run_series_stage

    run_series_stage(run, load_run(run).model, build_data(cfg.data, cfg.loss.class_weights), cfg)
    out = tmp_path / "clinical.json"
    assert main(["--run", str(run), "--patients", "25", "--n-boot", "20", "--out", str(out), "--domain", "wide"]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    bench = result["cohorts"]["benchmark"]
    wide = result["cohorts"]["benchmark_wide"]  # --domain wide: the same patients through the wide chain
    assert wide["n_series"] == 25 and wide["n_recordings"] == bench["n_recordings"]
    assert wide["wave_v"] != bench["wave_v"] and result["benchmark"]["domain"] == "wide"
    assert bench["n_series"] == 25 and result["series_model"] is True
    assert set(bench["threshold"]) == {"rule", "head_mean", "series_model", "levels_only", "rule_true_marks"}
    sparse = result["cohorts"]["benchmark_sparse"]  # issue 27: at most one recording at each of 7 levels
    assert sparse["n_series"] <= 25 and sparse["n_recordings"] <= 7 * sparse["n_series"]
    assert sparse["n_recordings"] < bench["n_recordings"] and "levels_only" in sparse["threshold"]
    assert "raw/recording_ece" in bench["calibration"] and "raw/threshold_coverage" in bench["calibration"]
    assert set(bench["type"]) == {"majority", "head_mean", "evidence_sum", "series_model"}
    for m in bench["threshold"].values():
        lo, hi = m["within_10db"]["ci"]
        assert lo <= m["within_10db"]["value"] <= hi
    printed = capsys.readouterr()
    assert "# benchmark (generator seed 12345)" in printed.out
    assert "# benchmark_wide (generator seed 12345, wide" in printed.out and f"wrote {out}" in printed.out
    # issue 29: progress on stderr, a line when each step starts and one with its seconds; stdout the report alone
    steps = finished_phases(printed.err, "bench/clinical.py")
    assert "generating the benchmark cohort (25 patients, seed 12345, wide domain)" in steps
    for cohort in ("benchmark", "benchmark_wide", "benchmark_sparse", "test"):
        assert f"{cohort}: per-patient metrics and calibration, 20 bootstrap resamples" in steps
        assert any(step.startswith(f"{cohort}: the network on ") for step in steps)
    assert "bench/clinical.py:" not in printed.out


def test_clinical_bench_refuses_the_runs_own_seed(series_run, capsys):
    import pytest

    from training.checkpoint import load_run

    with pytest.raises(SystemExit) as exc:
        main(["--run", str(series_run), "--seed", str(load_run(series_run).cfg.data.synthetic.seed), "--patients", "5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "the run trained on that generator seed" in err and err.count("\n") == 1  # before any progress line
