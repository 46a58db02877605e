"""``train.py --resume``: overrides are applied and saved (never silently), data and seed cannot
change, --config/--experiment are refused; ``run.json`` records where a run came from."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime

import numpy as np
import pytest
import torch
import yaml

from tests.reliability.procs import ROOT, in_process_args, train_in_process
from training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch tiny run, trained once for the module; tests work on copies."""
    root = tmp_path_factory.mktemp("resume")
    assert train_in_process(in_process_args(root, "run", "training.epochs=1", "logging.use_tensorboard=false")) == 0
    return root / "run"


@pytest.fixture
def run(tmp_path, finished):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_an_override_on_resume_is_applied_saved_and_said(run, capsys):
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert train_in_process(["--resume", str(run), "training.epochs=2"]) == 0
    line = f"resume: config changed: training.epochs 1 -> 2 (saved in {run / 'config.yaml'})"
    err = capsys.readouterr().err
    assert line in err
    assert f"resumed {run} after epoch 1, step {step} of 2" in err  # not "epoch 2": the checkpoint's next epoch
    assert line in (run / "train.log").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] == 2
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 3  # both epochs trained
    # the next resume keeps the change: nothing left to train, nothing changed
    assert train_in_process(["--resume", str(run)]) == 0
    assert "config changed" not in capsys.readouterr().err


def tree(folder) -> dict[str, bytes]:
    """The files of a run, but its .lock (rewritten by whoever takes the run, even to read it)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_resuming_a_finished_run_trains_nothing_writes_nothing_and_says_so(run, capsys):
    before = tree(run)
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert train_in_process(["--resume", str(run)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{run}: nothing to train: finished after epoch 1, step {step} of training.epochs=1 "
                   f"(to train longer: python train.py --resume {run} training.epochs=2)"]
    assert tree(run) == before  # no run.json entry, no train.log line, no event file, no checkpoint


@pytest.mark.parametrize(("override", "key"), [("seed=5", "seed"), ("--seed=5", "seed"),
                                               ("data.synthetic.patients=9", "data.synthetic.patients"),
                                               ("data.split=[0.6,0.2,0.2]", "data.split")])
def test_a_data_or_seed_change_on_resume_is_refused(run, capsys, override, key):
    before = (run / "checkpoints" / "last.pt").read_bytes()
    assert train_in_process(["--resume", str(run), override]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: --resume '{run}': '{key}' cannot change on resume (trained with ")
    assert "start a new run" in line
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_data_that_changed_under_the_same_config_is_refused(run, capsys, monkeypatch):
    import data.synthetic

    real = data.synthetic.generate
    monkeypatch.setattr(data.synthetic, "generate", lambda n, seed=0, **kw: real(n, seed + 1, **kw))  # other recordings
    assert train_in_process(["--resume", str(run), "training.epochs=2"]) == 2
    assert error_line(capsys) == (
        f"error: --resume '{run}': the data differs from the data checkpoints/last.pt was trained on "
        f"(another data fingerprint): resume with the same data, or start a new run"
    )


@pytest.mark.parametrize(("flag", "what"), [(["--config", "configs/quickstart.yaml"], "--config"),
                                            (["--experiment", "other"], "--experiment"),
                                            (["--overwrite"], "--overwrite")])
def test_resume_refuses_options_it_would_otherwise_ignore(run, capsys, flag, what):
    assert train_in_process(["--resume", str(run), *flag]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: --resume: {what} cannot be combined with it (the run continues in '{run}'")


def test_evaluate_writes_the_run_evaluation_when_it_ends(run, capsys):
    assert train_in_process(["--resume", str(run), "training.epochs=2", "--evaluate"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["meta"]["run"] == str(run)
    assert re.fullmatch(r"best \(after epoch \d+, step \d+\)", metrics["meta"]["checkpoint"])  # issue 29's header
    assert f"evaluating {run}: python -m evaluation.evaluate --run {run} --no-generate" in capsys.readouterr().err


# -- provenance -----------------------------------------------------------------------------------

def test_run_json_records_where_the_run_came_from(run):
    info = json.loads((run / "run.json").read_text())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert info["git"]["commit"] == head and isinstance(info["git"]["dirty"], bool)
    assert "--experiment" in info["command"] and "run" in info["command"]
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["numpy"] == np.__version__
    assert info["device"] == "cpu" and info["status"] == "finished"
    start, end = (datetime.fromisoformat(info[k]) for k in ("start", "end"))
    assert start <= end
    assert info["resumes"] == []


def test_resume_appends_an_entry_and_keeps_the_original_start(run):
    before = json.loads((run / "run.json").read_text())
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert train_in_process(["--resume", str(run), "training.epochs=2"]) == 0
    after = json.loads((run / "run.json").read_text())
    kept = ("start", "end", "command", "git")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    (entry,) = after["resumes"]
    assert entry["command"][-3:] == ["--resume", str(run), "training.epochs=2"]
    assert entry["status"] == "finished" and entry["from_step"] == step
    assert datetime.fromisoformat(before["end"]) <= datetime.fromisoformat(entry["start"]) <= \
        datetime.fromisoformat(entry["end"])
    assert entry["changes"] == {"training.epochs": [1, 2]}


def test_git_lookup_outside_a_checkout_records_none(tmp_path, monkeypatch):
    from training.rundir import git_info

    assert git_info(tmp_path) == {"commit": None, "dirty": None}  # not a git checkout
    monkeypatch.setenv("PATH", str(tmp_path))  # no git program at all
    assert git_info(ROOT) == {"commit": None, "dirty": None}
