"""compare --group-seeds (issue 29, point 4): runs that differ only in their seed pooled into groups,
mean ± 95 % Student-t half-width over seeds in the tables, a shaded band in the curves."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import yaml
from scipy import stats

from evaluation.compare import compare_runs, main
from evaluation.runlog import read_run
from evaluation.seed_groups import _draw_groups, group_runs, group_series, mean_interval

# (strategy, seed, loss scale, class macro-F1): two groups × two seeds
RUNS = (("fixed", 0, 1.0, 0.60), ("fixed", 1, 1.5, 0.70), ("famo", 0, 2.0, 0.50), ("famo", 1, 3.0, 0.56))


def _config(run, *, strategy, seed, data_seed=0, log_dir="logs"):
    cfg = {"seed": seed, "device": "auto",
           "data": {"source": "synthetic", "path": "", "synthetic": {"patients": 300, "seed": data_seed},
                    "split": [0.7, 0.15, 0.15], "split_seed": 0, "num_workers": 0},
           "loss": {"balancer": {"strategy": strategy}}, "logging": {"log_dir": log_dir}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")


def _seed_runs(fx, root, runs=RUNS):
    dirs = []
    for strategy, seed, scale, f1 in runs:
        ev = {"class": {"model": {"macro_f1": f1}}, "flags": [],
              "patient": {"type_macro_f1": {"value": f1, "ci": [0, 1]}}}
        d = fx.write_fake_run(root / f"{strategy}-s{seed}", scale=scale, evaluated=ev)
        _config(d, strategy=strategy, seed=seed, log_dir=f"logs{seed}")  # where a run was written: not a setting
        dirs.append(d)
    return dirs


def _t_half(values):
    """Half-width of scipy's 95 % t-interval of the mean."""
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return (hi - lo) / 2


def test_two_groups_of_two_seeds_mean_and_t_half_width(fx, tmp_path):
    res = compare_runs(_seed_runs(fx, tmp_path), tmp_path / "cmp", group_seeds=True)
    grouping = res["grouping"]
    assert grouping["seed_keys"] == ["seed"] and grouping["group_keys"] == ["loss.balancer.strategy"]
    fixed, famo = grouping["groups"]
    assert (fixed["group"], famo["group"]) == ("fixed", "famo")
    assert fixed["runs"] == ["fixed-s0", "fixed-s1"] and fixed["seeds"] == [{"seed": 0}, {"seed": 1}]
    assert fixed["run"] == "fixed (n=2 seeds)" and famo["n"] == 2
    for g, scales in ((fixed, (1.0, 1.5)), (famo, (2.0, 3.0))):
        vals = [s * 12.0 / 40 for s in scales]  # val/total of the last epoch
        est = g["final_epoch"]["val/total"]
        assert est["n"] == 2 and est["mean"] == pytest.approx(np.mean(vals))
        assert est["half_width"] == pytest.approx(_t_half(vals))
        assert est["ci"] == pytest.approx([np.mean(vals) - _t_half(vals), np.mean(vals) + _t_half(vals)])
    assert fixed["eval"]["class macro-F1"]["mean"] == pytest.approx(0.65)
    assert fixed["eval"]["class macro-F1"]["half_width"] == pytest.approx(_t_half([0.6, 0.7]))
    assert fixed["eval"]["wave V F1"] == {"mean": None, "half_width": None, "ci": None, "n": 0}  # absent: not 0
    assert famo["patient"]["patient/type_macro_f1"]["mean"] == pytest.approx(0.53)
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "## Seed groups" in md
    assert "| fixed | loss.balancer.strategy=fixed | 2 | fixed-s0 (seed=0), fixed-s1 (seed=1) |" in md
    assert _t_half([0.6, 0.7]) == pytest.approx(0.6353, abs=1e-4)  # t(0.975, 1) = 12.71: two seeds say little
    assert "| fixed (n=2 seeds) | 0.65 ± 0.64 (n=2) |" in md  # the ± to two significant digits, the mean alike
    header = next(line for line in md.splitlines() if line.startswith("| group | val/"))
    assert header.rstrip(" |").endswith("val/total")
    assert len(res["runs"]) == 4  # the per-run rows stay in the JSON
    assert not [w for w in res["warnings"] if "seed" in w]  # the seeds differ on purpose


def test_curves_mean_band_and_legend_n(fx, tmp_path):
    dirs = _seed_runs(fx, tmp_path, (*RUNS, ("uncertainty", 0, 1.2, 0.5)))
    runs = [read_run(d) for d in dirs]
    groups, keys, _w = group_runs(dirs, [r.name for r in runs], ["seed"])
    steps, mean, half, ragged = group_series([runs[i] for i in groups[1].members], "val/signal", ("epoch",))
    vals = np.array([[s * 1.2 / 20, s * 1.2 / 40] for s in (2.0, 3.0)])  # famo's two seeds at steps 20, 40
    assert steps.tolist() == [20, 40] and not ragged
    assert mean == pytest.approx(vals.mean(axis=0))
    assert half == pytest.approx([_t_half(vals[:, 0]), _t_half(vals[:, 1])])
    fig, _ragged = _draw_groups(runs, groups, keys)
    groups_legend = fig.axes[7].get_legend()  # in the free eighth panel
    assert [t.get_text() for t in groups_legend.get_texts()] == [
        "fixed (n=2 seeds)", "famo (n=2 seeds)", "uncertainty (n=1 seed)"]
    assert groups_legend.get_title().get_text() == "loss.balancer.strategy\n(mean over seeds)"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "train (window mean)", "validation", "95 % t-interval over seeds"]
    panel = fig.axes[0]  # total: 3 groups × (train, val) lines; bands only for the two groups with n=2
    assert len(panel.lines) == 6 and len(panel.collections) == 4
    assert panel.get_xlabel() == "" and fig.axes[4].get_xlabel() == "optimizer step"
    assert fig.axes[0].get_ylabel() == "loss (log scale)"


def test_a_group_of_one_run_has_no_interval(fx, tmp_path):
    dirs = _seed_runs(fx, tmp_path, RUNS[:3])
    res = compare_runs(dirs, tmp_path / "cmp", group_seeds=True)
    famo = res["grouping"]["groups"][1]
    assert famo["run"] == "famo (n=1 seed)"
    assert famo["final_epoch"]["val/total"] == {"mean": pytest.approx(2.0 * 12 / 40), "half_width": None,
                                                "ci": None, "n": 1}
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "| famo (n=1 seed) | 0.5 (n=1) |" in md


def test_ungrouped_output_is_unchanged(fx, tmp_path):
    res = compare_runs(_seed_runs(fx, tmp_path), tmp_path / "cmp")
    assert set(res) == {"warnings", "runs", "val_total_note", "headline"}
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "Seed groups" not in md and "±" not in md and "| fixed-s0 | 0.6 |" in md
    assert "| group |" not in md


def test_data_seeds_pool_only_when_named(fx, tmp_path, capsys):
    dirs = []
    for seed in (0, 1):
        d = fx.write_fake_run(tmp_path / f"d{seed}", scale=1 + seed)
        _config(d, strategy="fixed", seed=seed, data_seed=seed)
        dirs.append(d)
    res = compare_runs(dirs, tmp_path / "a", group_seeds=True)
    assert [g["group"] for g in res["grouping"]["groups"]] == ["0", "1"]
    assert ("the groups differ only in data.synthetic.seed: add --seed-key data.synthetic.seed to pool them as seeds"
            in res["warnings"])
    pooled = ["--group-seeds", "--seed-key", "data.synthetic.seed"]
    assert main([*map(str, dirs), "--out", str(tmp_path / "b"), *pooled]) == 0
    saved = json.loads((tmp_path / "b" / "comparison.json").read_text(encoding="utf-8"))["grouping"]
    assert saved["seed_keys"] == ["seed", "data.synthetic.seed"] and saved["group_keys"] == []
    assert [g["run"] for g in saved["groups"]] == ["all runs (n=2 seeds)"]
    assert "trained on different data" not in capsys.readouterr().err  # pooled on purpose


def test_repeats_and_runs_of_different_length_are_said(fx, tmp_path):
    a = fx.write_fake_run(tmp_path / "a")
    b = fx.write_fake_run(tmp_path / "b", steps=60, scale=2.0)
    for d in (a, b):
        _config(d, strategy="fixed", seed=0)
    res = compare_runs([a, b], tmp_path / "cmp", group_seeds=True)
    assert "group all runs: runs a and b share the seed {\"seed\": 0}: they are repeats, not independent seeds" \
        in res["warnings"]
    assert any(w.startswith("group all runs: its runs logged different steps (they stop at steps 40 (a), 60 (b))")
               for w in res["warnings"])
    assert res["grouping"]["groups"][0]["run"] == "all runs (n=2 runs)"


def test_a_sweep_root_stands_for_its_runs(fx, tmp_path):
    root = tmp_path / "sweep"
    dirs = _seed_runs(fx, root, RUNS[:2])
    (root / "sweep.json").write_text(json.dumps({"runs": [{"dir": d.name, "overrides": []} for d in dirs]
                                                 + [{"dir": "later", "overrides": []}]}), encoding="utf-8")
    res = compare_runs([root], tmp_path / "cmp", group_seeds=True)
    assert [r["run"] for r in res["runs"]] == ["fixed-s0", "fixed-s1"]
    assert f"sweep '{root}': run 'later' has no metrics.jsonl yet (not started): left out" in res["warnings"]
    assert main([str(root), "--out", str(tmp_path / "cli")]) == 0  # ungrouped, from the command line too
    md = (tmp_path / "cli" / "comparison.md").read_text(encoding="utf-8")
    assert "| fixed-s0 | 0.6 |" in md and "| fixed-s1 | 0.7 |" in md
    (root / "sweep.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"sweep file '.*sweep.json': expected a JSON object with runs"):
        compare_runs([root], tmp_path / "cmp2")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_flag_combinations_are_one_line(fx, tmp_path, capsys):
    dirs = [str(d) for d in _seed_runs(fx, tmp_path, RUNS[:2])]
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as exc:
        main([*dirs, "--out", out, "--seed-key", "data.split_seed"])
    assert exc.value.code == 2
    assert "--seed-key data.split_seed: only with --group-seeds" in _one_error_line(capsys)
    with pytest.raises(SystemExit):
        main([*dirs, "--out", out, "--group-seeds", "--seed-key", "loss.balancer.strategy"])
    assert "invalid choice: 'loss.balancer.strategy'" in _one_error_line(capsys)
    cfg = tmp_path / "fixed-s0" / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("  split_seed: 0\n", ""), encoding="utf-8")
    assert main([*dirs, "--out", out, "--group-seeds", "--seed-key", "data.split_seed"]) == 2
    assert ("error: --seed-key data.split_seed: expected it in every run's config.yaml, not found in run fixed-s0"
            in _one_error_line(capsys))
    (tmp_path / "fixed-s1" / "config.yaml").unlink()
    assert main([*dirs, "--out", out, "--group-seeds"]) == 2
    assert re.search(r"^error: run fixed-s1: --group-seeds expected a config.yaml in '.*fixed-s1'",
                     _one_error_line(capsys))
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_mean_interval_counts_finite_values_only():
    est = mean_interval([1.0, 2.0, 6.0, float("nan"), None])
    assert est["n"] == 3 and est["mean"] == pytest.approx(3.0)
    assert est["half_width"] == pytest.approx(stats.t.ppf(0.975, 2) * stats.tstd([1.0, 2.0, 6.0]) / math.sqrt(3))
