"""bench/generation.py: the sampler specs, the patient split of the condition, and the whole bench on a
tiny run (CPU, seconds): JSON, the docs section between its markers, counted network evaluations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.generation import SamplerSpec, acceptance, condition_sets, main, parse_samplers
from data.stats import DataStats
from tests.progress import finished_phases
from tests.runs import tiny_config, train_run


def test_parse_samplers():
    assert parse_samplers("ddpm,ddim:50,dpmpp2m:20", T=1000, eta=1.0) == [
        SamplerSpec("ddpm", 1000, 0.0), SamplerSpec("ddim", 50, 1.0), SamplerSpec("dpmpp2m", 20, 0.0)]
    assert parse_samplers("ddim:10:0", T=100, eta=1.0)[0].name == "DDIM-10, eta=0"
    assert parse_samplers("ddpm:250", T=1000, eta=0.0)[0].name == "DDPM-250"
    with pytest.raises(ValueError, match=r"--samplers: expected a number of steps for ddim \(ddim:STEPS\), "
                                         r"found 'ddim'"):
        parse_samplers("ddpm,ddim", T=1000, eta=0.0)
    with pytest.raises(ValueError, match=r"--samplers: expected 1 <= steps <= 100 \(the run's diffusion.timesteps\)"):
        parse_samplers("ddpm:1000", T=100, eta=0.0)
    with pytest.raises(ValueError, match=r"--samplers: expected name\[:steps\] with name in \['ddpm', 'ddim', "
                                         r"'dpmpp2m'\].*found 'euler:20'"):
        parse_samplers("euler:20", T=100, eta=0.0)
    with pytest.raises(ValueError, match=r"found 'dpmpp2m:20:1'"):  # eta is DDIM's only
        parse_samplers("dpmpp2m:20:1", T=100, eta=0.0)


def fake_tensors() -> dict[str, torch.Tensor]:
    """10 patients x 6 recordings; patients 0-7 NORMAL, 8-9 not; intensities 60-110 dB."""
    pid = torch.arange(10).repeat_interleave(6)
    level = torch.tensor([60.0, 70.0, 80.0, 90.0, 100.0, 110.0]).repeat(10)
    static = torch.stack([torch.zeros(60), level, torch.full((60,), 21.1), torch.full((60,), 300.0)], 1)
    return {"signal": torch.randn(60, 1, 200), "static": static, "label": (pid >= 8).long() * 2,
            "patient_id": pid}


def test_condition_sets_split_whole_patients_of_the_condition():
    held, ref = condition_sets(fake_tensors(), DataStats.identity(), n=9, seed=0)
    assert len(held.uv) == 10 and len(ref.uv) == 30  # 5 condition recordings per patient, 2 and 6 patients
    assert not set(held.patient) & set(ref.patient)
    assert set(held.patient) | set(ref.patient) == set(range(8))  # non-NORMAL patients are out
    assert (held.static[:, 1] >= 70).all() and (ref.static[:, 1] >= 70).all()
    np.testing.assert_allclose(held.uv, held.signal.numpy())  # identity stats: µV = normalized
    again, _ = condition_sets(fake_tensors(), DataStats.identity(), n=9, seed=0)
    assert set(again.patient) == set(held.patient)
    with pytest.raises(ValueError, match=r"--n 21: expected at least 21 held-out and 21 reference NORMAL recordings "
                                         r"at >= 70 dB nHL \(whole patients\), found 40 recordings of 8 patients"):
        condition_sets(fake_tensors(), DataStats.identity(), n=21, seed=0)


def test_acceptance_reads_the_share_gaps():
    def row(r: float, shares: dict) -> dict:
        return {"mean_waveform_correlation": {"value": r},
                "wave_shares_in_reference_iqr": {w: {"value": v} for w, v in shares.items()}}

    real = row(0.95, {"I": 0.5, "III": 0.5, "V": 0.5})
    a = acceptance(row(0.91, {"I": 0.36, "III": 0.64, "V": 0.2}), real)
    assert a["correlation"] is True
    assert a["share_gap_points"] == {"I": -14.0, "III": 14.0, "V": -30.0}
    assert a["waves_within_15_points"] == {"I": True, "III": True, "V": False}
    assert acceptance(row(0.89, {"I": 0.5, "III": 0.5, "V": 0.5}), real)["correlation"] is False


def test_generation_bench_on_a_tiny_run(tmp_path, capsys):
    cfg = tiny_config(tmp_path, "training.epochs=1", "training.batch_size=128", "model.base_channels=4",
                      "data.synthetic.patients=40", "diffusion.guidance=2.0")
    run = tmp_path / "run"
    train_run(cfg, run)
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nother section\n", encoding="utf-8")
    out = tmp_path / "generation.json"
    argv = ["--run", str(run), "--n", "6", "--samplers", "ddpm:10,ddim:4,dpmpp2m:3", "--n-boot", "10",
            "--out", str(out), "--doc", str(doc)]
    assert main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    names = [r["name"] for r in result["rows"]]
    assert names == ["DDPM-10", "DDIM-4, eta=0", "DPM-Solver++-3", "real held-out recordings (H)"]
    assert [r["nfe_per_signal"] for r in result["rows"][:3]] == [20, 8, 6]  # guidance 2: two per step
    rec = result["recordings"]
    assert rec["held_out"] >= 6 and rec["reference"] >= 6 and rec["condition"] == rec["held_out"] + rec["reference"]
    for row in result["rows"]:
        for key in ("mean_waveform_correlation", "frechet", "c2st_auroc"):
            lo, hi = row[key]["ci"]
            assert np.isfinite(row[key]["value"]), (row["name"], key)
            assert lo <= hi
        assert row["frechet"]["value"] >= 0 and 0 <= row["c2st_auroc"]["value"] <= 1
        assert set(row["wave_shares_in_reference_iqr"]) == {"I", "III", "V", "all"}
        assert set(row["togtr"]) == {"intensity_r2", "intensity_mae", "infant_auroc"}
    assert "acceptance" in result["rows"][0] and "acceptance" not in result["rows"][-1]
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nother section\n\n<!-- generation: begin -->\n")
    assert text.rstrip().endswith("<!-- generation: end -->") and "| DPM-Solver++-3 | 6 |" in text
    printed = capsys.readouterr()
    assert "| DDPM-10 | 20 |" in printed.out  # replacing the section: tests/bench/test_common.py
    # issue 29: progress on stderr (a line when each step starts, one with its seconds); stdout keeps its lines
    steps = finished_phases(printed.err, "bench/generation.py")
    for name in names[:3]:
        assert f"{name}: generating {rec['held_out']} signals" in steps
        assert f"{name}: scoring against the reference set (10 bootstrap resamples)" in steps
    assert "bench/generation.py:" not in printed.out and "DDPM-10: " in printed.out  # its per-sampler line
