"""bench/quality_seeds.py: several seeds of bench/quality.py as means with 95 % intervals."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from scipy import stats

from bench import quality_seeds
from evaluation.compare import DELTA_M_METRICS, HEADLINE

TASKS = list(DELTA_M_METRICS)


def _metrics_json(scale: float) -> dict:
    """An eval/metrics.json whose every headline metric is ``scale`` (denoising at 0 dB)."""
    m: dict = {"denoising": [{"snr_db": 0.0, "model": {"pearson_r": scale}}]}
    for _col, task, key, _up in HEADLINE:
        if task != "denoising":
            m.setdefault(task, {"model": {}})["model"][key] = scale
    m["patient"] = {"threshold": {"head_mean": {"mae_db": {"value": 10 * scale, "ci": [0, 1]}}}}
    return m


def _seed(tmp_path, seed: int, multi: float, single: float, eval_dir: str = "eval") -> str:
    """One quality.py result: a 'fixed' run whose metrics are all ``multi``, single-task runs ``single``."""
    root = tmp_path / f"s{seed}"
    runs = [{"name": "quality_fixed", "kind": "multi", "strategy": "fixed", "status": "ok", "value": multi}]
    runs += [{"name": f"quality_single_{t}", "kind": "single", "task": t, "status": "ok", "value": single}
             for t in TASKS]
    for r in runs:
        (root / r["name"] / eval_dir).mkdir(parents=True)
        (root / r["name"] / eval_dir / "metrics.json").write_text(json.dumps(_metrics_json(r.pop("value"))))
        r["cmd"] = f"python train.py --experiment {r['name']} seed={seed} logging.log_dir={root} training.epochs=3"
    result = {"config": "configs/quickstart.yaml", "off_weight": 0.0, "checkpoint": "last",
              "delta_m_metrics": DELTA_M_METRICS, "seed": seed, "machine": "test",
              "command": f"python bench/quality.py --seed {seed} --root {root} training.epochs=3", "runs": runs}
    path = tmp_path / f"quality_seed{seed}.json"
    path.write_text(json.dumps(result))
    return str(path)


def test_mean_interval_is_the_student_t_interval_of_the_mean():
    est = quality_seeds.mean_interval([1.0, 2.0, 6.0])
    half = stats.t.ppf(0.975, 2) * stats.tstd([1.0, 2.0, 6.0]) / math.sqrt(3)
    assert est["mean"] == pytest.approx(3.0) and est["ci"] == pytest.approx([3.0 - half, 3.0 + half])
    assert quality_seeds.mean_interval([5.0]) == {"mean": 5.0, "half_width": None, "ci": None, "n": 1}


def test_delta_m_is_recomputed_per_seed_against_that_seeds_single_task_runs(tmp_path):
    # Seed 0: every metric of the joint run equals the single-task one -> Δm 0. Seed 1: all metrics
    # x1.1; three tasks are higher-better (+10 %), the others lower-better (-10 %), so Δm is the mean.
    paths = [_seed(tmp_path, 0, 1.0, 1.0), _seed(tmp_path, 1, 1.1, 1.0)]
    up = {c: higher for c, _t, _k, higher in HEADLINE}
    expected_1 = sum(10.0 if up[DELTA_M_METRICS[t]] else -10.0 for t in TASKS) / len(TASKS)
    runs = quality_seeds.aggregate(quality_seeds.load(paths))
    dm = runs["quality_fixed"]["delta_m"]
    assert dm["n"] == 2 and dm["mean"] == pytest.approx(expected_1 / 2)
    assert runs["quality_single_class"]["delta_m"] is None
    assert runs["quality_fixed"]["metrics"]["wave V F1"]["mean"] == pytest.approx(1.05)
    assert runs["quality_fixed"]["patient"]["patient/threshold/head_mean/mae_db"]["mean"] == pytest.approx(10.5)


def test_a_run_reused_from_an_earlier_call_counts_and_a_failed_one_does_not(tmp_path):
    paths = [_seed(tmp_path, 0, 1.0, 1.0), _seed(tmp_path, 1, 1.1, 1.0)]
    for path, status in zip(paths, ("ok (reused)", "train failed (rc 1)"), strict=True):
        r = json.loads(Path(path).read_text())
        r["runs"][0]["status"] = status  # quality_fixed
        Path(path).write_text(json.dumps(r))
    fixed = quality_seeds.aggregate(quality_seeds.load(paths))["quality_fixed"]
    assert fixed["seeds"] == 1 and fixed["failed"] == 1 and fixed["delta_m"]["n"] == 1


def test_another_eval_dir_is_read_and_a_missing_one_counts_as_failed(tmp_path):
    paths = [_seed(tmp_path, 0, 0.5, 1.0, eval_dir="eval_val"), _seed(tmp_path, 1, 0.7, 1.0, eval_dir="eval_val")]
    runs = quality_seeds.aggregate(quality_seeds.load(paths), "eval_val")
    assert runs["quality_fixed"]["metrics"]["class macro-F1"]["mean"] == pytest.approx(0.6)
    assert quality_seeds.aggregate(quality_seeds.load(paths), "eval")["quality_fixed"]["failed"] == 2


def test_cli_writes_json_and_only_its_own_doc_section(tmp_path, capsys):
    paths = [_seed(tmp_path, 0, 1.0, 1.0), _seed(tmp_path, 1, 1.1, 1.0)]
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nkept\n", encoding="utf-8")
    out = tmp_path / "agg.json"
    assert quality_seeds.main([*paths, "--out", str(out), "--doc", str(doc)]) == 0
    assert json.loads(out.read_text())["seeds"] == [0, 1]
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nkept\n") and "<!-- quality-seeds: begin -->" in text
    assert " split (training.epochs=3)\n" in text  # the title names the scale
    row = next(line for line in text.splitlines() if line.startswith("| quality_single_class |"))
    assert row.count("·") == len(HEADLINE) - 1  # a single-task row shows its own metric only


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(seed=0), r"expected one result per seed, found seeds \[0, 0\]"),
    (lambda r: r.update(checkpoint="best"), r"expected checkpoint = 'last' as in .*, found 'best'"),
    (lambda r: r.update(command=r["command"].replace("epochs=3", "epochs=5")),
     r"expected the overrides \['training.epochs=3'\] as in .*, found \['training.epochs=5'\]"),
])
def test_results_of_different_experiments_are_refused_in_one_line(tmp_path, capsys, change, message):
    paths = [_seed(tmp_path, 0, 1.0, 1.0), _seed(tmp_path, 1, 1.0, 1.0)]
    r = json.loads(Path(paths[1]).read_text())
    change(r)
    Path(paths[1]).write_text(json.dumps(r))
    assert quality_seeds.main([*paths, "--out", str(tmp_path / "o.json"), "--doc", str(tmp_path / "d.md")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err)
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "d.md").exists()


def test_one_seed_or_a_missing_file_is_refused(tmp_path, capsys):
    path = _seed(tmp_path, 0, 1.0, 1.0)
    assert quality_seeds.main([path, "--out", str(tmp_path / "o.json")]) != 0
    assert "expected the results of at least 2 seeds for an interval, found 1" in capsys.readouterr().err
    assert quality_seeds.main([path, str(tmp_path / "nope.json")]) != 0
    assert "nope.json': expected a bench/quality.py result (JSON), found no such file" in capsys.readouterr().err


def test_the_benchmark_cohort_is_read_where_scored_and_a_partial_mean_says_its_n(tmp_path):
    paths = [_seed(tmp_path, 0, 1.0, 1.0), _seed(tmp_path, 1, 1.0, 1.0)]
    cohort = {"threshold": {"rule": {"within_10db": {"value": 0.8, "ci": [0.7, 0.9]}}}}
    (tmp_path / "s0" / "quality_fixed" / "clinical.json").write_text(json.dumps({"cohorts": {"benchmark": cohort}}))
    runs = quality_seeds.aggregate(quality_seeds.load(paths))
    est = runs["quality_fixed"]["benchmark"]["patient/threshold/rule/within_10db"]
    assert est == {"mean": 0.8, "half_width": None, "ci": None, "n": 1}
    table = quality_seeds.render({"runs": runs, "seeds": [0, 1], "eval_dir": "eval"})
    assert "| patient threshold within 10 dB, wave V rule | 0.8 (n=1) |" in table


def test_another_clinical_file_is_read_and_two_cohorts_are_refused(tmp_path, capsys):
    paths = [_seed(tmp_path, 0, 1.0, 1.0), _seed(tmp_path, 1, 1.0, 1.0)]

    def scored(seed: int, value: float, patients: int) -> None:
        cohort = {"threshold": {"rule": {"within_10db": {"value": value, "ci": [0.0, 1.0]}}}}
        (tmp_path / f"s{seed}" / "quality_fixed" / "clinical1000.json").write_text(json.dumps(
            {"benchmark": {"patients": patients, "seed": 12345}, "cohorts": {"benchmark": cohort}}))

    scored(0, 0.8, 1000)
    scored(1, 0.6, 1000)
    runs = quality_seeds.aggregate(quality_seeds.load(paths), clinical="clinical1000.json")
    assert runs["quality_fixed"]["benchmark"]["patient/threshold/rule/within_10db"]["mean"] == pytest.approx(0.7)
    assert quality_seeds.aggregate(quality_seeds.load(paths))["quality_fixed"]["benchmark"] == {}
    scored(1, 0.6, 5000)
    out = tmp_path / "o.json"
    assert quality_seeds.main([*paths, "--clinical", "clinical1000.json", "--out", str(out),
                               "--doc", str(tmp_path / "d.md")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "score every run on one cohort" in err and "5000" in err
    assert not out.exists()
