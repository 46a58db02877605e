"""``train.py -m``: combinations checked up front, each run's log in its own directory, a sweep
cut short finished by ``--resume SWEEP``, and (``--evaluate``) a comparison with every column."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest

from tests.reliability.procs import in_process_args, run_train, start_train, train_args, train_in_process, wait_for
from training.callbacks import checkpoint as checkpoint_callbacks
from training.checkpoint import load_checkpoint

FAST = ["training.epochs=1", "logging.use_tensorboard=false"]
SWEEP = ["-m", "training.lr=1e-3,2e-3", "training.checkpoint_every_steps=2", *FAST]
EVALUATED = [*SWEEP, "--evaluate", "data.synthetic.patients=40"]  # enough test patients for every metric


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("values", ["1e-3,1e-3", "1e-3,0.001"])
def test_identical_combinations_are_refused_up_front(tmp_path, capsys, values):
    assert train_in_process(in_process_args(tmp_path, "sw", "-m", f"training.lr={values}", *FAST)) == 2
    first, second = values.split(",")
    assert last_error(capsys) == (f"error: -m: runs 1 (training.lr={first}) and 2 (training.lr={second}) would "
                                  f"train the same config: remove one")
    assert not (tmp_path / "sw").exists()


def test_a_key_swept_twice_is_refused(tmp_path, capsys):
    argv = in_process_args(tmp_path, "sw", "-m", "training.lr=1e-3,2e-3", "-m", "training.lr=5e-4", *FAST)
    assert train_in_process(argv) == 2
    assert last_error(capsys) == ("error: -m: 'training.lr' is swept twice ('training.lr=1e-3,2e-3' and "
                                  "'training.lr=5e-4'): list all its values in one -m")
    assert not (tmp_path / "sw").exists()


def test_a_swept_key_also_set_by_an_override_is_refused(tmp_path, capsys):
    argv = in_process_args(tmp_path, "sw", "training.lr=1e-3", "-m", "training.lr=2e-3,3e-3", *FAST)
    assert train_in_process(argv) == 2
    assert last_error(capsys) == ("error: -m: 'training.lr' is both swept ('training.lr=2e-3,3e-3') and set by "
                                  "the override 'training.lr=1e-3': keep one")


class Killed(BaseException):
    """Stands for kill -9 (nothing on the way up handles it)."""


def check_finished_sweep(root: Path, evaluated: bool) -> None:
    """Every run trained to the end (and evaluated); the comparison has every column filled."""
    rows = json.loads((root / "comparison" / "comparison.json").read_text())["runs"]
    assert [r["run"] for r in rows] == ["training.lr=1e-3", "training.lr=2e-3"]
    for r in rows:
        assert r["final_epoch"] and all(math.isfinite(v) for v in r["final_epoch"].values())
        info = json.loads((root / r["run"] / "run.json").read_text())
        assert (info["resumes"] or [info])[-1]["status"] == "finished"  # the last session ran to the end
        if evaluated:
            assert r["eval"] is not None and all(v is not None and math.isfinite(v) for v in r["eval"].values()), r
    if evaluated:
        table = (root / "comparison" / "comparison.md").read_text()
        assert "not evaluated" not in table and "—" not in table


def test_a_sweep_cut_short_finishes_with_resume(tmp_path, capsys, monkeypatch):
    root = tmp_path / "sw"
    run1, run2 = root / "training.lr=1e-3", root / "training.lr=2e-3"
    real = checkpoint_callbacks.save_checkpoint

    def save(state, path):  # run 2 dies right after its first checkpoint
        real(state, path)
        if Path(path).parent.parent == run2:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(checkpoint_callbacks, "save_checkpoint", save)
        with pytest.raises(Killed):
            train_in_process(in_process_args(tmp_path, "sw", *SWEEP))
    log1 = (run1 / "train.log").read_text()
    assert "sweep run 1/2: training.lr=1e-3" in log1 and "sweep run 2/2" not in log1
    assert "sweep run 2/2: training.lr=2e-3" in (run2 / "train.log").read_text()
    assert not (root / "comparison").exists()
    done = (run1 / "checkpoints" / "last.pt").read_bytes()
    cut_at = load_checkpoint(run2 / "checkpoints" / "last.pt")["step"]
    capsys.readouterr()

    assert train_in_process(["--resume", str(root)]) == 0
    err = capsys.readouterr().err
    assert "sweep run 1/2: training.lr=1e-3: finished, skipped" in err
    assert f"resumed {run2} in epoch 1 (" in err and f"steps into it), step {cut_at} of " in err
    assert (run1 / "checkpoints" / "last.pt").read_bytes() == done  # not trained again
    assert json.loads((run1 / "run.json").read_text())["resumes"] == []
    assert len(json.loads((run2 / "run.json").read_text())["resumes"]) == 1
    check_finished_sweep(root, evaluated=False)


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_finishes_with_resume(tmp_path):
    """Issue 19's acceptance: kill -9 half-way, --resume, a comparison with every column filled."""
    root = tmp_path / "sw"
    run1, run2 = root / "training.lr=1e-3", root / "training.lr=2e-3"
    proc = start_train(train_args(tmp_path, "sw", *EVALUATED))
    assert wait_for(run2 / "checkpoints" / "last.pt", proc), proc.communicate()[1][-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (root / "comparison").exists() and (run1 / "eval" / "metrics.json").is_file()
    r = run_train([*train_args(tmp_path, "sw")[:2], "--resume", str(root)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sweep run 1/2: training.lr=1e-3: finished, skipped" in r.stderr
    check_finished_sweep(root, evaluated=True)
