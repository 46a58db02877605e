"""Issue 32: no command writes onto its own input or into another run's directory, whatever
``--overwrite`` says (a folder output replaces only files the command wrote there before); a model
with a non-finite parameter is refused by every command that loads it, naming the parameter; every
field read from a checkpoint is checked like a config value. Each test failed on the main branch
before the fix."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.reliability.procs import in_process_args, train_in_process
from training.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run (one epoch, EMA on), made once for the module; tests copy it to change it."""
    root = tmp_path_factory.mktemp("outputs")
    assert train_in_process(in_process_args(root, "run", "training.epochs=1", "logging.use_tensorboard=false")) == 0
    return root / "run"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """A small native file of 3 synthetic patients: predict's input."""
    from data.native import write_native
    from data.synthetic import generate

    path = tmp_path_factory.mktemp("inputs") / "clinic.npz"
    write_native(path, generate(3, 1))
    return path


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock"))
    return to


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes (the run lock left out: a refused resume leaves it, and it holds no data)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------------------------------------
# outputs: never an input, never another run's directory, only files the command wrote


def test_predict_never_replaces_its_own_input(finished_run, recordings, tmp_path, capsys):
    from evaluation.predict import main

    out = tmp_path / "out"
    args = ["--run", str(finished_run), "--workers", "1", "--no-figures", "--device", "cpu"]
    assert main([str(recordings), "--out", str(out), *args]) == 0
    capsys.readouterr()
    table = out / "recordings.csv"  # predict's own table, fed back as an input with --overwrite
    before = table.read_bytes()
    assert main([str(table), "--out", str(out), "--overwrite", *args]) == 2
    assert re.fullmatch(r"error: --out: '.*recordings.csv' is the input '.*recordings.csv'; expected an output that "
                        r"is none of the command's inputs, whatever --overwrite says", _one_line(capsys))
    assert table.read_bytes() == before
    # a folder given as input: the outputs would land among the files it reads
    folder = tmp_path / "clinic"
    folder.mkdir()
    shutil.copy(recordings, folder)
    assert main([str(folder), "--out", str(folder), "--overwrite", *args]) == 2
    assert "lies in the input" in _one_line(capsys) and sorted(p.name for p in folder.iterdir()) == ["clinic.npz"]


def test_predict_overwrite_replaces_only_its_own_files(finished_run, recordings, tmp_path, capsys):
    from data.cli import OUTPUTS_MANIFEST
    from evaluation.predict import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("my notes", encoding="utf-8")
    args = ["--run", str(finished_run), "--workers", "1", "--no-figures", "--device", "cpu", "--overwrite"]
    assert main([str(recordings), "--out", str(out), *args]) == 2
    assert re.fullmatch(rf"error: --out: '.*summary.md' already exists and was not written by python -m "
                        rf"evaluation.predict \(it is not in '.*{re.escape(OUTPUTS_MANIFEST)}'\): --overwrite replaces "
                        rf"only files this command wrote; move it away or choose another --out", _one_line(capsys))
    assert (out / "summary.md").read_text(encoding="utf-8") == "my notes"
    (out / "summary.md").unlink()
    assert main([str(recordings), "--out", str(out), *args]) == 0
    assert main([str(recordings), "--out", str(out), *args]) == 0  # its own files: replaced


@pytest.mark.parametrize("command", ["predict", "export", "generate", "compare", "evaluate"])
def test_no_command_writes_into_another_run(finished_run, recordings, tmp_path, capsys, command):
    import importlib

    other = _copy(finished_run, tmp_path / "other")
    before = _snapshot(other)
    run = str(finished_run)
    argv = {"predict": [str(recordings), "--run", run, "--out", str(other), "--no-figures", "--workers", "1"],
            "export": ["--run", run, "--out", str(other)],
            "generate": ["--run", run, "--out", str(other / "eval" / "generated.npz"), "--n", "2", "--steps", "2"],
            "compare": [run, "--out", str(other / "comparison")],
            "evaluate": ["--run", run, "--out", str(other / "eval"), "--no-generate", "--no-figures"]}[command]
    main = importlib.import_module(f"evaluation.{command}").main
    assert main([*argv, *(["--overwrite"] if command != "evaluate" else [])]) == 2  # evaluate has no --overwrite
    assert re.fullmatch(r"error: --out: '.*' lies in the run directory '.*other' \(it holds checkpoints, "
                        r"metrics.jsonl, run.json\); expected a path outside every run but the command's own, "
                        r"whatever --overwrite says", _one_line(capsys))
    assert _snapshot(other) == before


def test_export_into_its_own_run_and_again_over_itself(finished_run, tmp_path, capsys):
    from evaluation.export import main

    run = _copy(finished_run, tmp_path / "run")
    assert main(["--run", str(run), "--out", str(run / "export")]) == 0  # the command's own run: allowed
    assert main(["--run", str(run), "--out", str(run / "export"), "--overwrite"]) == 0  # its own files
    capsys.readouterr()


def test_convert_never_replaces_its_input(tmp_path, recordings, capsys):
    from data.convert import main

    src = shutil.copy(recordings, tmp_path / "in.npz")
    before = Path(src).read_bytes()
    assert main([str(src), str(src), "--overwrite"]) == 2
    assert "is the input" in _one_line(capsys) and Path(src).read_bytes() == before


# ------------------------------------------------------------------------------------------------
# a model with a non-finite parameter


def _poisoned(finished_run: Path, to: Path, key: str = "ema") -> tuple[Path, str]:
    run = _copy(finished_run, to)
    name = ""
    for which in ("best", "last"):
        path = run / "checkpoints" / f"{which}.pt"
        state = torch.load(path, weights_only=True)
        name = next(k for k, v in state[key].items() if v.is_floating_point())
        state[key][name] = torch.full_like(state[key][name], float("nan"))
        torch.save(state, path)
    return run, name


@pytest.mark.parametrize("command", ["predict", "export", "evaluate", "generate", "resume"])
def test_a_nan_model_is_refused_by_every_command(finished_run, recordings, tmp_path, capsys, command):
    import importlib

    run, name = _poisoned(finished_run, tmp_path / "run", "model" if command == "resume" else "ema")
    before = _snapshot(run)
    argv = {"predict": [str(recordings), "--run", str(run), "--out", str(tmp_path / "p"), "--workers", "1"],
            "export": ["--run", str(run), "--out", str(tmp_path / "e")],
            "evaluate": ["--run", str(run), "--no-generate"],
            "generate": ["--run", str(run), "--n", "2", "--steps", "2"]}.get(command)
    if command == "resume":
        assert train_in_process(["--resume", str(run), "training.epochs=2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
    else:
        assert importlib.import_module(f"evaluation.{command}").main(argv) == 2
        err = _one_line(capsys)
    which = "last" if command == "resume" else "best"
    key = "model" if command == "resume" else "ema"
    assert re.fullmatch(rf"error: checkpoint '.*{which}.pt': key '{key}': parameter '{re.escape(name)}' has \d+ "
                        rf"non-finite value\(s\) of \d+; expected finite weights \(the run diverged, or the file was "
                        rf"altered\): use another checkpoint", err), err
    assert _snapshot(run) == before and not (tmp_path / "p").exists() and not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------------------------
# checkpoint fields


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("epoch", "abc", "an integer >= 1"), ("epoch", -3, "an integer >= 1"), ("step", -1, "an integer >= 0"),
    ("step", 2.5, "an integer >= 0"), ("epoch_step", True, "an integer >= 0"),
    ("format_version", True, "an integer >= 1"),
])
def test_checkpoint_counters_are_checked(finished_run, tmp_path, key, value, expected):
    state = load_checkpoint(finished_run / "checkpoints" / "last.pt")
    path = tmp_path / "bad.pt"
    torch.save({**state, key: value}, path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint '{path}': key '{key}': expected {expected}, "
                                              rf"found {re.escape(repr(value))}$"):
        load_checkpoint(path)


def test_resume_with_a_text_epoch_is_one_line(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    torch.save({**torch.load(last, weights_only=True), "epoch": "abc"}, last)
    assert train_in_process(["--resume", str(run), "training.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: checkpoint '{last}': key 'epoch': expected an integer >= 1, found 'abc'"


def test_a_run_with_ema_whose_checkpoint_has_none_is_refused(finished_run, tmp_path, capsys):
    from evaluation.generate import main

    run = _copy(finished_run, tmp_path / "run")
    for which in ("best", "last"):
        path = run / "checkpoints" / f"{which}.pt"
        torch.save({**torch.load(path, weights_only=True), "ema": None}, path)
    assert main(["--run", str(run), "--n", "2", "--steps", "2"]) == 2
    assert re.fullmatch(r"error: checkpoint '.*best.pt': key 'ema': expected the EMA weights \(the run has "
                        r"training.ema_decay = 0.\d+\), found None", _one_line(capsys))
    assert train_in_process(["--resume", str(run), "training.epochs=2"]) == 2
    assert "key 'ema': expected the EMA weights" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("signal_std", 0.0, "a finite number > 0"), ("signal_mean", float("nan"), "a finite number"),
    ("threshold_std", "1", "a finite number > 0"), ("normalization", "z", "'global' or 'per_sample'"),
])
def test_checkpoint_statistics_are_checked(finished_run, tmp_path, capsys, field, value, expected):
    from evaluation.generate import main

    run = _copy(finished_run, tmp_path / "run")
    path = run / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "stats": {**state["stats"], field: value}}, path)
    assert main(["--run", str(run), "--n", "2", "--steps", "2"]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"error: checkpoint '{path}': unusable stats (field '{field}': expected {expected}"), err


def test_evaluate_warns_about_unreadable_metrics_lines(finished_run, tmp_path, capsys):
    from evaluation.evaluate import main

    run = _copy(finished_run, tmp_path / "run")
    with (run / "metrics.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"kind": "step", "step": "x"}\nnot json\n')
    assert main(["--run", str(run), "--no-generate", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {run / 'metrics.jsonl'}: 2 line(s) unreadable and skipped (a run still writing, or a damaged " \
           "file); the loss curves leave them out" in err, err
