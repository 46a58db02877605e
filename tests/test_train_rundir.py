"""train.py and the run directory: one process per run directory (a lock naming its holder), no
path that reaches into another run, no stub left by an error, no empty validation split."""

from __future__ import annotations

import os
import re
import signal
import socket

import numpy as np
import pytest

import train
from data.schema import ConfigError
from tests.reliability.procs import in_process_args, start_train, train_args, train_in_process, wait_for

FAST = ["training.epochs=1", "logging.use_tensorboard=false"]


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err[-10:]
    return err[-1]


def fake_run(run_dir):
    """The files of a finished run (contents do not matter here: nothing may touch them)."""
    (run_dir / "checkpoints").mkdir(parents=True)
    for name, text in [("checkpoints/last.pt", "weights"), ("config.yaml", "seed: 0\n"), ("metrics.jsonl", "{}\n")]:
        (run_dir / name).write_text(text)
    return {p: p.read_text() for p in run_dir.rglob("*") if p.is_file()}


# -- the run lock ---------------------------------------------------------------------------------

def test_two_runs_started_together_one_is_refused(tmp_path):
    run_dir = tmp_path / "exp"
    held = train.prepare_run_dir(run_dir, overwrite=False)  # the first process, before it writes a file
    with pytest.raises(ConfigError, match=rf"^run directory '{run_dir}' is in use by pid {os.getpid()} on "
                                          rf"{socket.gethostname()} since \d{{4}}-\d\d-\d\d"):
        train.prepare_run_dir(run_dir, overwrite=False)
    held.release()
    train.prepare_run_dir(run_dir, overwrite=False).release()  # the holder is gone: free again


def test_a_training_run_is_never_joined_resumed_or_overwritten(tmp_path, capsys):
    run_dir = tmp_path / "r"
    proc = start_train(train_args(tmp_path, "r", "training.epochs=500", "training.checkpoint_every_steps=1"))
    try:
        assert wait_for(run_dir / "checkpoints" / "last.pt", proc), proc.communicate()[1][-2000:]
        inode = (run_dir / "metrics.jsonl").stat().st_ino
        holder = rf"^error: run directory '{run_dir}' is in use by pid {proc.pid} on {socket.gethostname()} since "
        for argv in (["--resume", str(run_dir), "training.epochs=1"],
                     in_process_args(tmp_path, "r", "--overwrite", "training.epochs=1"),
                     in_process_args(tmp_path, "r", "training.epochs=1")):
            assert train_in_process(argv) == 2, argv
            line = last_error(capsys)
            assert re.match(holder, line), line
        assert proc.poll() is None  # still training, in its own files
        assert (run_dir / "metrics.jsonl").stat().st_ino == inode
        assert (run_dir / "checkpoints" / "last.pt").is_file()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    # kill -9 released the lock (the OS drops it with the process): the run resumes
    assert train_in_process(["--resume", str(run_dir), "training.epochs=1"]) == 0


# -- names that reach into another run ------------------------------------------------------------

def test_experiment_inside_another_run_is_refused(tmp_path, capsys):
    files = fake_run(tmp_path / "r")
    rc = train_in_process(in_process_args(tmp_path, "r/checkpoints", "--overwrite", *FAST))
    assert rc == 2
    assert last_error(capsys) == (f"error: --experiment: 'r/checkpoints' is inside the run directory "
                                  f"'{tmp_path / 'r'}': choose a name outside it")
    assert {p: p.read_text() for p in (tmp_path / "r").rglob("*") if p.is_file()} == files


def test_empty_experiment_name_is_refused(tmp_path, capsys):
    assert train_in_process(in_process_args(tmp_path, "", *FAST)) == 2
    assert "--experiment: expected a name inside logging.log_dir" in last_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_of_a_folder_that_is_no_run_is_refused(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "paper.tex").write_text("months of work")
    assert train_in_process(in_process_args(tmp_path, "notes", "--overwrite", *FAST)) == 2
    assert f"--overwrite: '{tmp_path / 'notes'}' holds no run" in last_error(capsys)
    assert (tmp_path / "notes" / "paper.tex").read_text() == "months of work"


# -- no stub left behind --------------------------------------------------------------------------

def test_a_data_error_leaves_no_run_directory(tmp_path, capsys):
    assert train_in_process(in_process_args(tmp_path, "exp", "data.split=[0,0.5,0.5]", *FAST)) == 2
    assert "training split is empty" in last_error(capsys)
    assert not (tmp_path / "exp").exists()
    assert train_in_process(in_process_args(tmp_path, "exp", *FAST)) == 0  # the corrected rerun, same name


def test_a_failure_before_the_first_checkpoint_removes_what_this_run_wrote(tmp_path, capsys, monkeypatch):
    import training.callbacks as callbacks
    from training.callbacks.base import Callback

    class Broken(Callback):
        def on_epoch_start(self, trainer, epoch):
            raise ValueError("config key 'x': broken on purpose")

    real = callbacks.default_callbacks
    with monkeypatch.context() as m:
        m.setattr(callbacks, "default_callbacks", lambda cfg: [*real(cfg), Broken()])
        assert train_in_process(in_process_args(tmp_path, "exp", *FAST)) == 2
    err = capsys.readouterr().err
    assert f"removed '{tmp_path / 'exp'}': the run stopped before its first checkpoint" in err
    assert err.strip().splitlines()[-1] == "error: config key 'x': broken on purpose"
    assert not (tmp_path / "exp").exists()
    assert train_in_process(in_process_args(tmp_path, "exp", *FAST)) == 0


# -- splits need patients -------------------------------------------------------------------------

def test_an_empty_validation_split_is_refused_up_front(tmp_path, capsys):
    assert train_in_process(in_process_args(tmp_path, "exp", "data.split=[0.85,0,0.15]", *FAST)) == 2
    line = last_error(capsys)
    assert line.startswith("error: data: the validation split is empty") and "data.split" in line
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("extra, where, opt_out", [
    ((), "the validation split", "training.clinical_validation=false"),
    (("training.clinical_validation=false", "series.enabled=true"), "the train split", "series.enabled=false"),
])
def test_series_with_mixed_thresholds_are_refused_before_training(tmp_path, capsys, extra, where, opt_out):
    """Validation's series metrics and the series stage (after the whole run) need one threshold and
    type per series; grouping three patients per series breaks that, which must fail up front."""
    from data.native import write_native
    from data.synthetic import generate

    records = generate(20, seed=0)
    records.series_id = records.patient_id % 3
    path = write_native(tmp_path / "mixed.npz", records)
    rc = train_in_process(in_process_args(tmp_path, "exp", "data.source=file", f"data.path={path}", *extra, *FAST))
    line = last_error(capsys)
    assert rc == 2, line
    assert line.startswith(f"error: {where}: series ") and "expected one threshold and one type" in line
    assert line.endswith(f"give the data a series_id column (one ear or session per series) or set {opt_out}")
    assert not (tmp_path / "exp").exists()


def test_a_one_patient_file_is_refused(tmp_path, capsys):
    from data.native import write_native
    from data.synthetic import generate

    records = generate(3, seed=0)
    one = records.subset(np.flatnonzero(records.patient_id == records.patient_id[0]))
    path = write_native(tmp_path / "one.npz", one)
    rc = train_in_process(in_process_args(tmp_path, "exp", "data.source=file", f"data.path={path}", *FAST))
    assert rc == 2
    assert last_error(capsys) == (f"error: data: 1 patient in '{path}' ({len(one)} recordings): train, validation "
                                  f"and test splits are drawn by patient and need at least 3 patients")
    assert not (tmp_path / "exp").exists()
