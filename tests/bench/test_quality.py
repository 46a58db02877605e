"""bench/quality.py: strategy specs, run names, the commands it plans (nothing is trained here)."""

from __future__ import annotations

import json
import shlex

import pytest

from bench import quality
from bench.common import strategy_overrides


def test_specs_split_name_lists_and_keep_keyed_specs_whole():
    specs = quality.strategy_specs(["fixed,famo", "jacobian:aggregator=mgda,engine=autojac", "stch"])
    assert specs == ["fixed", "famo", "jacobian:aggregator=mgda,engine=autojac", "stch"]


@pytest.mark.parametrize("spec, message", [
    ("famx", "expected a name from"),
    ("jacobian:nope=1", "unknown key"),
    ("jacobian:update_every=0", "update_every"),
])
def test_a_bad_spec_is_refused_naming_it(spec, message):
    with pytest.raises(ValueError, match=message) as exc:
        quality.strategy_specs([spec])
    assert repr(spec) in str(exc.value)


def test_overrides_and_run_names_follow_the_spec():
    assert strategy_overrides("famo") == ["loss.balancer.strategy=famo"]
    assert strategy_overrides("jacobian:aggregator=mgda,update_every=8") == [
        "loss.balancer.strategy=jacobian", "loss.balancer.jacobian.aggregator=mgda",
        "loss.balancer.jacobian.update_every=8"]
    name = quality.run_name("jacobian:aggregator=mgda,update_every=8")
    assert name == "quality_jacobian-aggregator_mgda-update_every_8"
    assert quality.run_name("famo") == "quality_famo"


def test_dry_run_trains_each_spec_and_evaluates_each_split(capsys):
    argv = ["--dry-run", "--no-single-task", "--strategies", "famo", "--strategies", "jacobian:update_every=8",
            "--splits", "test,val", "--root", "logs/q", "training.epochs=1"]
    assert quality.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    train, test_eval, val_eval = (shlex.split(part) for part in lines[1].split(" && "))
    assert {"loss.balancer.strategy=jacobian", "loss.balancer.jacobian.update_every=8", "training.epochs=1",
            "logging.log_dir=logs/q"} <= set(train)
    assert train[train.index("--experiment") + 1] == "quality_jacobian-update_every_8"
    for cmd, split, folder in ((test_eval, "test", "eval"), (val_eval, "val", "eval_val")):
        assert cmd[cmd.index("--split") + 1] == split
        assert cmd[cmd.index("--out") + 1] == f"logs/q/quality_jacobian-update_every_8/{folder}"


def test_an_unknown_split_is_refused(capsys):
    with pytest.raises(SystemExit):
        quality.main(["--dry-run", "--splits", "test,holdout"])
    assert "--splits: expected names from ['test', 'val']" in capsys.readouterr().err


def test_the_table_shows_the_validation_dm_where_the_validation_split_was_evaluated():
    run = {"name": "quality_famo", "metrics": {}, "delta_m": -1.5, "delta_m_val": 0.25, "train_seconds": 40}
    with_val = quality.render({"splits": ["val", "test"], "runs": [run]}).splitlines()
    assert with_val[0].endswith("| Δm% (↑) | Δm% val (↑) | train s |")
    assert with_val[2].endswith("| -1.5 | 0.25 | 40 |")
    assert "Δm% val" not in quality.render({"splits": ["test"], "runs": [run]})


def _result(tmp_path, name: str, runs: list[dict], **kw) -> str:
    base = {"command": "python bench/quality.py --seed 0 training.epochs=2", "seed": 0, "config": "q.yaml",
            "off_weight": 0.0, "checkpoint": "last", "splits": ["val", "test"], "runs": runs}
    path = tmp_path / name
    path.write_text(json.dumps(base | kw), encoding="utf-8")
    return str(path)


def _metrics(value: float) -> dict:
    from evaluation.compare import HEADLINE

    return {h[0]: value for h in HEADLINE}


def test_merge_takes_the_later_run_of_a_name_and_recomputes_dm_against_the_merged_single_task_runs(tmp_path):
    from evaluation.compare import DELTA_M_METRICS

    singles = [{"name": f"quality_single_{t}", "kind": "single", "task": t, "metrics": _metrics(1.0),
                "metrics_val": _metrics(1.0)} for t in DELTA_M_METRICS]
    failed = {"name": "quality_jacobian", "kind": "multi", "strategy": "jacobian", "status": "train failed (rc 1)"}
    first = _result(tmp_path, "a.json", [{"name": "quality_fixed", "kind": "multi", "strategy": "fixed",
                                          "metrics": _metrics(1.0), "metrics_val": _metrics(1.0)}, failed, *singles])
    rerun = {"name": "quality_jacobian", "kind": "multi", "strategy": "jacobian", "status": "ok",
             "metrics": _metrics(1.0), "metrics_val": _metrics(1.0)}
    second = _result(tmp_path, "b.json", [rerun], command="python bench/quality.py --seed 0 --strategies jacobian "
                     "--no-single-task training.epochs=2")
    merged = quality.merge([first, second])
    by_name = {r["name"]: r for r in merged["runs"]}
    assert by_name["quality_jacobian"]["status"] == "ok"
    assert by_name["quality_jacobian"]["delta_m"] == pytest.approx(0.0)  # equal to every single-task run
    assert by_name["quality_jacobian"]["delta_m_val"] == pytest.approx(0.0)
    assert len(merged["merged_from"]) == 2


def test_merge_refuses_results_of_another_seed_or_other_overrides(tmp_path):
    a = _result(tmp_path, "a.json", [])
    with pytest.raises(ValueError, match=r"b.json: expected seed 0 as in .*a.json, found 1"):
        quality.merge([a, _result(tmp_path, "b.json", [], seed=1)])
    with pytest.raises(ValueError, match=r"c.json: expected the overrides \['training.epochs=2'\]"):
        quality.merge([a, _result(tmp_path, "c.json", [], command="python bench/quality.py training.epochs=3")])


def test_reuse_reads_the_runs_that_finished_with_the_same_commands_and_trains_the_rest(tmp_path, monkeypatch):
    root = tmp_path / "q"
    ran: list[str] = []

    def fake_run(cmd, env, log):  # training: nothing to write; evaluation: a metrics.json where --out says
        ran.append(cmd[cmd.index("--experiment") + 1] if "--experiment" in cmd else "eval")
        if "--out" in cmd:
            out = quality.ROOT / cmd[cmd.index("--out") + 1]
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text("{}", encoding="utf-8")
        return 0, 1.0

    monkeypatch.setattr(quality, "_run", fake_run)
    base = ["--no-single-task", "--strategies", "fixed,famo", "--root", str(root), "--out", str(tmp_path / "r.json"),
            "--doc", str(tmp_path / "d.md")]
    assert quality.main(base) == 0
    assert ran == ["quality_fixed", "eval", "quality_famo", "eval"]
    assert sorted(p.name for p in root.glob("*.done.json")) == ["quality_famo.done.json", "quality_fixed.done.json"]
    ran.clear()
    (root / "quality_famo.done.json").unlink()  # famo stopped before its stamp
    assert quality.main([*base, "--reuse"]) == 0
    assert ran == ["quality_famo", "eval"]  # fixed read, famo trained again
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["ok (reused)", "ok"]
    ran.clear()
    assert quality.main([*base, "--reuse", "training.epochs=2"]) == 0  # other commands: nothing reused
    assert ran == ["quality_fixed", "eval", "quality_famo", "eval"]
