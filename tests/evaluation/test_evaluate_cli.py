"""python -m evaluation.evaluate on bad input (issue 17): one line, exit 2, nothing written; --debug
lets the exception through; and once end to end on a real tiny run."""

from __future__ import annotations

import json
import re

import pytest
import torch

from evaluation.evaluate import main


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--gen-n", "0", r"argument --gen-n: expected an integer >= 1 and <= 10000 \(MAX_GEN_N\), found '0'"),
    ("--steps", "0", r"argument --steps: expected an integer >= 1, found '0'"),
    ("--batch-size", "0", r"argument --batch-size: expected an integer >= 1 and <= 65536 \(MAX_BATCH_SIZE\)"),
    ("--eta", "2", r"argument --eta: expected a finite number >= 0 and <= 1, found '2'"),
    ("--guidance", "nan", r"argument --guidance: expected a finite number >= 0 and <= 100 \(MAX_GUIDANCE\)"),
    ("--seed", "-1", r"argument --seed: expected an integer >= 0"),
    ("--snr-levels", "0,nan", r"argument --snr-levels: expected comma-separated numbers, each a finite number "
                              r">= -60 and <= 60 \(SNR_LIMIT_DB\), found 'nan'"),
    ("--snr-levels", ",", r"argument --snr-levels: expected 1 to 32 comma-separated numbers"),
])
def test_bad_numbers_are_one_line_exit_2(tmp_path, capsys, flag, value, expected):
    with pytest.raises(SystemExit) as exc:
        main(["--run", str(tmp_path), "--out", str(tmp_path / "out"), flag, value])
    assert exc.value.code == 2
    assert re.search(expected, _one_error_line(capsys))
    assert not (tmp_path / "out").exists()


def test_broken_run_directory(tmp_path, capsys):
    from training.checkpoint import CheckpointError

    assert main(["--run", str(tmp_path / "nowhere")]) == 2
    assert re.search(r"^error: run directory '.*nowhere': not found$", _one_error_line(capsys))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 truncated zip")
    assert main(["--run", str(tmp_path / "run")]) == 2
    assert re.search(r"^error: checkpoint '.*last.pt': unreadable", _one_error_line(capsys))
    with pytest.raises(CheckpointError):
        main(["--run", str(tmp_path / "run"), "--debug"])


def test_a_folder_of_runs_is_not_a_run_directory(tmp_path, capsys):
    """``--run logs`` used to say checkpoints/best.pt was missing."""
    (tmp_path / "logs" / "quickstart" / "checkpoints").mkdir(parents=True)
    assert main(["--run", str(tmp_path / "logs")]) == 2
    line = _one_error_line(capsys)
    assert re.search(r"^error: run directory '.*logs': not a run directory \(expected checkpoints/ and config\.yaml "
                     r"from train\.py in it\); runs in it: .*logs/quickstart$", line), line


def test_single_task_with_a_broken_metrics_file(tmp_path, capsys):
    bad = tmp_path / "ST" / "eval" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"class": ', encoding="utf-8")
    assert main(["--run", str(tmp_path), "--single-task", f"class={tmp_path / 'ST'}"]) == 2
    assert re.search(r"^error: evaluation metrics '.*ST/eval/metrics.json': not readable as JSON",
                     _one_error_line(capsys))
    bad.write_text(json.dumps({"class": {"majority": {}}}), encoding="utf-8")
    assert main(["--run", str(tmp_path), "--single-task", f"class={tmp_path / 'ST'}"]) == 2
    assert "--single-task class: expected a 'class.model' section in" in _one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine(tiny_run, tmp_path, capsys):
    assert main(["--run", str(tiny_run), "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert _one_error_line(capsys) == "error: --device: 'cuda' requested but no CUDA device is available\n"


def test_steps_beyond_the_runs_timesteps(tiny_run, tmp_path, capsys):
    assert main(["--run", str(tiny_run), "--steps", "101", "--out", str(tmp_path / "out")]) == 2
    assert re.search(r"--steps: expected an integer >= 1 and <= 100 \(the run's diffusion.timesteps\), found 101",
                     _one_error_line(capsys))
    assert not (tmp_path / "out").exists()


def test_evaluates_a_real_tiny_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--run", str(tiny_run), "--out", str(out), "--no-generate", "--no-figures", "--device", "cpu",
                 "--snr-levels", "0"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out
    phases = [line.rsplit(": ", 1)[0] for line in captured.err.splitlines() if line.startswith("evaluate: ")
              and not line.endswith(" ...")]  # minutes on the quickstart: it printed nothing until the end
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert phases == ["evaluate: rebuilding the run's data and split",
                      f"evaluate: scoring {m['meta']['n']} recordings, clean and at 1 noise levels",
                      "evaluate: scoring per patient (series)",
                      "evaluate: measuring calibration (the run has no calibration.json)"]
    assert m["meta"]["split"] == "test" and m["meta"]["n"] > 0
    assert not (tiny_run / "eval").exists()  # --out: the run directory is left as it was
    # issue 29, point 3: the header names data, checkpoint epoch and sampler; per patient before per recording
    report = (out / "report.md").read_text(encoding="utf-8")
    assert re.search(r"^- checkpoint: best \(after epoch 1, step \d+\)$", report, re.M), report[:800]
    assert "- data: synthetic (data/synthetic.py: 6 patients, generator seed" in report
    assert "- sampler: generation not run (--no-generate): no sampler used" in report
    assert f"Evaluated: {m['meta']['n']} recordings from {m['meta']['n_patients']} patients" in report
    assert report.index("## Flags") < report.index("## Per patient") < report.index("## Per recording")
    lo, hi = m["class"]["model_ci"]["accuracy"]
    assert lo <= m["class"]["model"]["accuracy"] <= hi


def test_sampling_flags_reach_the_generated_signals(tiny_run, tmp_path, monkeypatch):
    """--guidance-sigma-min (like --eta, --clip, --lowpass-hz) is bound into the generation evaluate() runs and
    recorded in the metrics' meta: no sampling flag is read and then dropped."""
    import evaluation.evaluate as ev

    seen = {}

    def fake_evaluate(*args, generate_fn=None, meta=None, **kw):
        seen.update(bound=generate_fn.keywords, meta=meta)
        raise SystemExit(0)  # the binding is what is checked; nothing is scored

    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    with pytest.raises(SystemExit):
        main(["--run", str(tiny_run), "--out", str(tmp_path / "out"), "--guidance-sigma-min", "2.5",
              "--lowpass-hz", "3000", "--device", "cpu"])
    assert seen["bound"]["guidance_sigma_min"] == 2.5 and seen["bound"]["lowpass_hz"] == 3000.0
    assert seen["meta"]["sampling"]["guidance_sigma_min"] == 2.5
