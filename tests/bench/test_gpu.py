"""bench/gpu.sh and bench/gpu.py: the CPU smoke path end to end, the agreement measure, bad flags."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu import LOSS_NAMES, agreement, main

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_sh_smoke_reports_every_measure(tmp_path):
    out, log = tmp_path / "gpu.json", tmp_path / "gpu.log"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_LOG": str(log), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["setup"]["smoke"] and r["setup"]["device"] == "cpu"
    for run in ("bf16", "fp32"):
        assert r[run]["samples_per_s"] > 0 and r[run]["step_ms_median"] > 0
        assert r[run]["peak_allocated_mib"] is None  # no CUDA: no memory figure rather than a made-up one
    assert r["bf16"]["steps"] == 3 and r["fp32"]["steps"] == 2
    # The Trainer's documented host sync: exactly one read of a tensor per optimizer step.
    assert r["syncs"]["repo_host_reads_per_step"] == [1, 1]
    assert r["syncs"]["cuda_syncs_per_step"] is None
    # Same init, same batch: bf16 autocast changes the step-1 losses a little, not a lot.
    a = r["bf16_vs_fp32"]
    assert a["steps"] == 2 and 0 < a["step1_max_rel_diff"] < 0.05, a
    assert set(a["step1_rel_diff"]) == set(LOSS_NAMES)
    assert r["compile"]["status"] == "skipped"
    assert all(torch.isfinite(torch.tensor(list(r["bf16"]["final_losses"].values()))))
    printed = log.read_text()
    assert "| bf16 eager | 3 |" in printed and "| fp32 eager | 2 |" in printed
    assert "repository tensor-to-host reads 1" in printed and f"wrote {out}" in printed


def test_agreement_is_the_relative_difference_to_the_reference():
    ref = [[2.0, 1.0, 0.0, 4.0, 1.0, 1.0, 1.0], [1.0] * 7]
    test = [[2.2, 1.0, 1e-4, 4.0, 1.0, 1.0, 0.5], [1.0] * 6 + [3.0]]
    a = agreement(test, ref)
    assert a["steps"] == 2
    assert a["step1_rel_diff"]["objective"] == pytest.approx(0.1)
    assert a["step1_rel_diff"][LOSS_NAMES[2]] == pytest.approx(0.1)  # |1e-4 - 0| / the 1e-3 floor
    assert a["step1_max_rel_diff"] == pytest.approx(0.5)
    assert a["objective_rel_diff_max"] == pytest.approx(0.1) and a["objective_rel_diff_median"] == pytest.approx(0.05)
    assert a["last_step_rel_diff"][LOSS_NAMES[-1]] == pytest.approx(2.0)
    assert agreement(test[:1], ref)["steps"] == 1  # the shorter run decides
    with pytest.raises(ValueError, match=r"agreement: expected at least one step in both runs, found none"):
        agreement([], ref)


@pytest.mark.parametrize(("argv", "message"), [
    (["--steps", "0"], r"argument --steps: expected an integer >= 1, found '0'"),
    (["--batch", "x"], r"argument --batch: expected an integer >= 1, found 'x'"),
])
def test_bad_flags_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_no_cuda_is_named_as_the_device_flag(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --device: 'cuda' requested but no CUDA device is available"
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.slow
def test_compile_path_traces_the_whole_network(tmp_path):
    """Dynamo alone (backend eager: ~20 s on CPU; inductor on CPU takes minutes): the compiled network runs
    inside the Trainer, without graph breaks, with the eager run's losses."""
    out = tmp_path / "gpu.json"
    assert main(["--smoke", "--threads", "1", "--compile", "--compile-backend", "eager", "--out", str(out)]) == 0
    c = json.loads(out.read_text())["compile"]
    assert c["status"] == "ok" and c["backend"] == "eager", c
    assert c["graph_breaks"] == 0 and c["agreement_with_eager"]["objective_rel_diff_max"] < 1e-5, c


def test_compile_failure_is_reported_not_raised(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    steps = ["--steps", "1", "--warmup", "0", "--agree-steps", "1", "--sync-steps", "1"]
    assert main(["--smoke", "--threads", "1", "--compile", "--compile-backend", "no_such_backend", *steps,
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["bf16"]["steps"] == 1 and r["fp32"]["steps"] == 1  # flags given win over --smoke's counts
    c = r["compile"]
    assert c["status"] == "failed" and "no_such_backend" in c["error"], c
    assert "torch.compile (no_such_backend): failed:" in capsys.readouterr().out
