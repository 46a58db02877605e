"""train.py's command line: one-line errors for bad input, sweeps expand to their combinations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import train

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_wrong_type_exits_nonzero_with_one_line_naming_the_key():
    r = run_cli("--config", "configs/config.yaml", "training.epochs=abc")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "training.epochs" in lines[0] and "Traceback" not in r.stderr


def test_misspelled_section_gets_a_suggestion():
    r = run_cli("--config", "configs/config.yaml", "traning.epochs=1")
    assert r.returncode != 0
    assert "did you mean 'training'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_missing_config_file_is_named():
    r = run_cli("--config", "configs/does_not_exist.yaml")
    assert r.returncode != 0
    assert "configs/does_not_exist.yaml" in r.stderr and "not found" in r.stderr


def test_debug_shows_the_traceback():
    r = run_cli("--config", "configs/config.yaml", "training.epochs=abc", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_existing_run_is_never_overwritten_silently(tmp_path):
    (tmp_path / "logs" / "exp").mkdir(parents=True)
    (tmp_path / "logs" / "exp" / "metrics.jsonl").write_text("{}\n")
    r = run_cli("--config", str(ROOT / "configs/quickstart.yaml"), "--experiment", "exp",
                f"logging.log_dir={tmp_path / 'logs'}")
    assert r.returncode != 0 and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert (tmp_path / "logs" / "exp" / "metrics.jsonl").read_text() == "{}\n"


def test_resume_without_checkpoint_is_refused(tmp_path):
    r = run_cli("--resume", str(tmp_path))
    assert r.returncode != 0 and "no checkpoints/last.pt" in r.stderr


def test_bad_sweep_value_fails_before_any_run(tmp_path):
    r = run_cli("--config", str(ROOT / "configs/quickstart.yaml"), "--experiment", "sw",
                f"logging.log_dir={tmp_path}", "-m", "loss.balancer.strategy=fixed,nonsense")
    assert r.returncode != 0 and "loss.balancer.strategy" in r.stderr
    assert not (tmp_path / "sw").exists()


def test_sweep_combinations_are_the_cartesian_product():
    combos = train.sweep_combinations(["a=1,2", "b=x,[1,2]"])
    assert combos == [["a=1", "b=x"], ["a=1", "b=[1,2]"], ["a=2", "b=x"], ["a=2", "b=[1,2]"]]
    with pytest.raises(ValueError, match="expected key.path=value1,value2"):
        train.sweep_combinations(["novalue"])


def test_overrides_may_follow_a_sweep_option():
    args = train.parse_args(["--config", "c.yaml", "-m", "loss.balancer.strategy=fixed,dwa", "training.epochs=2"])
    assert args.multirun == ["loss.balancer.strategy=fixed,dwa"] and args.overrides == ["training.epochs=2"]


def test_the_readme_states_the_quickstart_as_it_runs():
    """The README said 4 epochs x 111 steps while configs/quickstart.yaml runs 5."""
    import re

    from data.dataset import build_data
    from training.config import load_config

    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    train_split = build_data(cfg.data, cfg.loss.class_weights).train
    stated = re.findall(r"quickstart \((\d+) epochs x (\d+) steps\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert stated == [(str(cfg.training.epochs), str(len(train_split) // cfg.training.batch_size))]


def test_the_readme_examples_write_under_the_run_or_a_named_out():
    """The generate example wrote generated.npz into the repository root; compare wrote a shared
    logs/comparison/."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^\.venv/bin/python -m (evaluation\.\w+) ((?:.*\\\n)*.*)$", readme, re.M)
    assert {name for name, _ in commands} >= {"evaluation.evaluate", "evaluation.generate", "evaluation.compare",
                                              "evaluation.export"}
    for name, rest in commands:
        args = shlex.split(rest.replace("\\\n", " "), comments=True)
        run = args[args.index("--run") + 1] if "--run" in args else None
        out = args[args.index("--out") + 1] if "--out" in args else None
        assert out is not None or run is not None, name
        assert (out or run).startswith("logs/"), (name, out)  # gitignored, never the repository root


def test_a_command_line_typo_is_blamed_on_the_command_line_not_the_file():
    r = run_cli("--config", "configs/quickstart.yaml", "traning.epochs=1")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "did you mean 'training'" in line and line.endswith("[command line: traning.epochs=1]")
    assert "[configs/quickstart.yaml]" not in line
    r = run_cli("--config", "configs/quickstart.yaml", "training.epochs=abc")
    assert r.stderr.strip().endswith("[command line: training.epochs=abc]")


def test_a_mistyped_config_path_gets_a_suggestion():
    r = run_cli("--config", "configs/quickstar.yaml")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: config file 'configs/quickstar.yaml': not found " \
                               "(did you mean 'configs/quickstart.yaml'?)"
