"""evaluation.generate: the core generate() function, the files it writes, and the CLI on a fake run."""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from data.stats import DataStats
from evaluation.generate import FORMAT_NAME, generate, main, write_generated
from models import ModelConfig, build_model
from training.config import DiffusionConfig
from training.diffusion import GaussianDiffusion

STATS = DataStats(0.1, 0.25, [1.0, 60.0, 20.0, 300.0], [2.0, 20.0, 10.0, 200.0], 7.8, 1.0, 0.17, 0.2, 30.0, 20.0,
                  static_min=[0.0, 0.0, 10.0, 0.0], static_max=[10.0, 100.0, 50.0, 1000.0])  # defaults inside
STATIC = torch.tensor([0.5, 80.0, 21.1, 300.0])


class ConstantX0(nn.Module):
    """Predicts x0 = a with the condition, b without; checks the network contract's input shapes."""

    def __init__(self, a: float = 2.0, b: float = -1.0):
        super().__init__()
        self.a, self.b = a, b
        self.scale = nn.Parameter(torch.ones(()))
        self.seen_static: list[Tensor] = []
        self.modes: list[bool] = []

    def forward(self, x_t, t, static, drop_cond=None):
        B = x_t.shape[0]
        assert x_t.shape == (B, 1, 200) and t.shape == (B,) and static.shape == (B, 4)
        assert drop_cond.dtype == torch.bool and drop_cond.shape == (B,)
        self.seen_static.append(static.clone())
        self.modes.append(self.training)
        x0 = torch.where(drop_cond.view(-1, 1, 1), self.b, self.a) * self.scale
        return {"signal": x0.expand_as(x_t)}



def x0_diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(prediction="x0", timesteps=100, sampling_steps=10))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp2m"])
def test_generate_denormalizes_to_microvolts(sampler):
    net = ConstantX0(a=2.0)
    x = generate(net, x0_diffusion(), STATS, STATIC, 5, sampler, 10, 1.0, torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 200) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.full((5, 1, 200), 2.0 * 0.25 + 0.1))  # x0 * std + mean
    assert all(torch.equal(s, STATIC.expand(len(s), 4)) for s in net.seen_static)  # physical units, as given


def test_generate_guidance_batches_and_eval_mode():
    net = ConstantX0(a=2.0, b=-1.0)
    net.train()
    x = generate(net, x0_diffusion(), STATS, STATIC, 7, "ddim", 4, 3.0, torch.Generator().manual_seed(0),
                 batch_size=3)
    guided = -1.0 + 3.0 * (2.0 - -1.0)  # uncond + w (cond - uncond)
    torch.testing.assert_close(x, torch.full((7, 1, 200), guided * 0.25 + 0.1))
    assert [len(s) for s in net.seen_static[::8]] == [3, 3, 1]  # 3 batches x 4 steps x (cond, uncond)
    assert not any(net.modes) and net.training  # sampled in eval mode, mode restored


def test_generate_per_sample_static_and_errors():
    net = ConstantX0()
    static = torch.stack([STATIC, STATIC + 1])
    generate(net, x0_diffusion(), STATS, static, 2, "ddim", 2, 1.0)
    assert torch.equal(net.seen_static[0], static)
    with pytest.raises(ValueError, match=r"generate static: expected shape \[4\] or \[3, 4\], found \[2, 4\]"):
        generate(net, x0_diffusion(), STATS, static, 3)
    with pytest.raises(ValueError, match="generate n: expected at least 1 signal, found 0"):
        generate(net, x0_diffusion(), STATS, STATIC, 0)
    with pytest.raises(ValueError, match=r"generate tied: expected a divisor of n = 5, found 2"):
        generate(net, x0_diffusion(), STATS, STATIC, 5, tied=2)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_progress_advances_once_per_sampler_step_of_each_batch(guidance):
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    d = GaussianDiffusion(DiffusionConfig(prediction="x0", timesteps=100))
    generate(ConstantX0(), d, STATS, STATIC, 5, "ddim", 7, guidance, batch_size=2, progress=bar)
    assert bar.n == 3 * 7  # ceil(5 / 2) batches x 7 steps, whatever the evaluations per step


def test_generate_with_a_tiny_untrained_abrnet_is_seeded():
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_channels=4, d_state=4, cond_dim=8, head_dim=4), STATS)
    d = GaussianDiffusion(DiffusionConfig(timesteps=50, sampling_steps=5))

    def run():
        return generate(model, d, STATS, STATIC, 3, "dpmpp2m", 5, 2.0, torch.Generator().manual_seed(1))

    a, b = run(), run()
    assert a.shape == (3, 1, 200) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # different noise per sample


def test_write_generated(tmp_path):
    signal = torch.randn(4, 1, 200)
    npz, png = write_generated(tmp_path / "sub" / "gen.npz", signal, STATIC, {"sampler": "ddim", "steps": 50,
                                                                             "guidance": 2.0})
    assert png == tmp_path / "sub" / "gen.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(npz, allow_pickle=False) as f:
        assert sorted(f.files) == ["meta", "signal", "static"]
        assert f["signal"].dtype == np.float32 and f["signal"].shape == (4, 200)
        np.testing.assert_array_equal(f["signal"], signal.reshape(4, 200).numpy())
        assert f["static"].dtype == np.float32 and f["static"].shape == (4, 4)
        np.testing.assert_array_equal(f["static"], np.tile(STATIC.numpy(), (4, 1)))
        meta = json.loads(str(f["meta"][()]))
    assert meta["format"] == FORMAT_NAME and meta["format_version"] == 1
    assert meta["sample_rate_hz"] == 20000 and meta["units"]["signal"] == "µV"
    assert meta["generation"] == {"sampler": "ddim", "steps": 50, "guidance": 2.0}
    with pytest.raises(ValueError, match=r"--out: expected a file name ending in .npz, found '.*gen.csv'"):
        write_generated(tmp_path / "gen.csv", signal, STATIC, {})


@dataclass
class FakeRun:
    cfg: object
    model: nn.Module
    stats: DataStats
    diffusion: GaussianDiffusion
    run_dir: Path
    checkpoint: dict


def test_cli_uses_run_defaults_and_flags(tmp_path, monkeypatch, capsys):
    import training.checkpoint

    net = ConstantX0(a=1.0, b=0.0)
    cfg = DiffusionConfig(prediction="x0", timesteps=100, sampler="dpmpp2m", sampling_steps=7, guidance=1.5)
    calls = {}

    def fake_load_run(run_dir, which="best", device="cpu"):
        calls.update(run_dir=run_dir, which=which, device=device)
        return FakeRun(None, net, STATS, GaussianDiffusion(cfg), Path(run_dir), {"ema": {"w": 1}})

    monkeypatch.setattr(training.checkpoint, "load_run", fake_load_run)
    out = tmp_path / "g.npz"
    assert main(["--run", str(tmp_path), "--n", "3", "--intensity", "70", "--out", str(out), "--steps", "4"]) == 0
    assert calls == {"run_dir": str(tmp_path), "which": "best", "device": torch.device("cpu")}
    captured = capsys.readouterr()
    assert "wrote" in captured.out
    # never silent while it samples (it printed nothing until the end): a phase line, then its time
    start, end = captured.err.strip().splitlines()
    assert start == "generate: sampling 3 signals (dpmpp2m, 4 steps, guidance 1.5) on cpu ..."
    assert re.fullmatch(r"generate: sampling 3 signals \(dpmpp2m, 4 steps, guidance 1\.5\) on cpu: \d+\.\d s", end)
    with np.load(out, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"][()]))
        np.testing.assert_allclose(f["signal"], (0.0 + 1.5 * 1.0) * 0.25 + 0.1, rtol=1e-6)  # guidance from config
        np.testing.assert_array_equal(f["static"][0], np.float32([0.5, 70.0, 21.1, 300.0]))
    gen = meta["generation"]
    assert (gen["sampler"], gen["steps"], gen["guidance"], gen["ema_weights"]) == ("dpmpp2m", 4, 1.5, True)
    assert len(net.seen_static) == 4 * 2  # 4 steps (flag), two evaluations each (w = 1.5)
    assert out.with_suffix(".png").is_file()
    net.seen_static.clear()  # --guidance-sigma-min above every step's noise level: the conditional model alone
    bounded = tmp_path / "bounded.npz"
    assert main(["--run", str(tmp_path), "--n", "3", "--out", str(bounded), "--steps", "4",
                 "--guidance-sigma-min", "1e9"]) == 0
    assert len(net.seen_static) == 4
    with np.load(bounded, allow_pickle=False) as f:
        assert json.loads(str(f["meta"][()]))["generation"]["guidance_sigma_min"] == 1e9


# --------------------------------------------------------------------------------------------
# the CLI on bad input (issue 17): one line, exit 2, nothing written; --debug shows the traceback


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A run that training.checkpoint.load_run returns without reading a file; the network is
    ConstantX0 (finite) unless the test swaps it."""
    import training.checkpoint

    cfg = DiffusionConfig(prediction="x0", timesteps=100, sampling_steps=4)
    run = FakeRun(None, ConstantX0(), STATS, GaussianDiffusion(cfg), tmp_path / "run", {"ema": None})
    monkeypatch.setattr(training.checkpoint, "load_run", lambda run_dir, which="best", device="cpu": run)
    return run


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--n", "0", r"argument --n: expected an integer >= 1 and <= 100000 \(MAX_SIGNALS\), found '0'"),
    ("--n", "1000000000", r"argument --n: expected an integer >= 1 and <= 100000 \(MAX_SIGNALS\)"),
    ("--steps", "0", r"argument --steps: expected an integer >= 1"),
    ("--batch-size", "0", r"argument --batch-size: expected an integer >= 1 and <= 65536 \(MAX_BATCH_SIZE\)"),
    ("--guidance", "nan", r"argument --guidance: expected a finite number >= 0 and <= 100 \(MAX_GUIDANCE\)"),
    ("--guidance", "-1", r"argument --guidance: expected a finite number >= 0"),
    ("--eta", "2", r"argument --eta: expected a finite number >= 0 and <= 1, found '2'"),
    ("--clip", "-1", r"argument --clip: expected a finite number >= 0"),
    ("--lowpass-hz", "10000",
     r"argument --lowpass-hz: expected a finite number >= 0 and < 10000 \(the Nyquist frequency\), found '10000'"),
    ("--fmp", "nan", r"argument --fmp: expected a finite number >= 0 and <= 100000 \(STATIC_LIMITS\)"),
    ("--intensity", "500", r"argument --intensity: expected a finite number >= -20 and <= 140 \(STATIC_LIMITS\)"),
    ("--age", "-1", r"argument --age: expected a finite number >= 0 and <= 120 \(STATIC_LIMITS\), found '-1'"),
    ("--rate", "inf", r"argument --rate: expected a finite number > 0 and <= 1000 \(STATIC_LIMITS\)"),
    ("--seed", "-1", r"argument --seed: expected an integer >= 0"),
])
def test_cli_refuses_every_bad_number_on_one_line(fake_run, tmp_path, capsys, flag, value, expected):
    out = tmp_path / "g.npz"
    with pytest.raises(SystemExit) as exc:
        main(["--run", str(fake_run.run_dir), "--out", str(out), flag, value])
    assert exc.value.code == 2
    err = _one_error_line(capsys)
    assert re.search(expected, err), err
    assert not out.exists() and not fake_run.model.seen_static  # refused before anything ran


def test_cli_steps_beyond_the_runs_timesteps(fake_run, tmp_path, capsys):
    assert main(["--run", str(fake_run.run_dir), "--out", str(tmp_path / "g.npz"), "--steps", "101"]) == 2
    assert re.search(r"--steps: expected an integer >= 1 and <= 100 \(the run's diffusion.timesteps\), found 101",
                     _one_error_line(capsys))


def test_cli_refuses_eta_for_a_sampler_that_does_not_read_it(fake_run, tmp_path, capsys):
    out = tmp_path / "g.npz"
    assert main(["--run", str(fake_run.run_dir), "--out", str(out), "--sampler", "dpmpp2m", "--eta", "0.5"]) == 2
    assert ("--eta: only --sampler ddim reads it; the sampler here is dpmpp2m (leave --eta out)"
            in _one_error_line(capsys))
    assert not out.exists() and not fake_run.model.seen_static
    assert main(["--run", str(fake_run.run_dir), "--out", str(out), "--sampler", "ddim", "--eta", "0.5"]) == 0


def test_cli_refuses_to_write_non_finite_signals(fake_run, tmp_path, capsys):
    fake_run.model.a = float("nan")
    out = tmp_path / "g.npz"
    assert main(["--run", str(fake_run.run_dir), "--out", str(out), "--n", "3"]) == 2
    *phases, err = capsys.readouterr().err.strip().splitlines()  # the sampling ran (its phase lines), then failed
    assert [p.split(" signals")[0] for p in phases] == ["generate: sampling 3"] * 2 and "Traceback" not in err
    assert "generated 600 non-finite values of 600" in err and "nothing written" in err
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_cli_never_replaces_an_existing_file_without_overwrite(fake_run, tmp_path, capsys):
    out = tmp_path / "good.npz"
    out.write_bytes(b"precious")
    args = ["--run", str(fake_run.run_dir), "--out", str(out), "--n", "2"]
    assert main(args) == 2
    err = _one_error_line(capsys)
    assert "--out: '" in err and "good.npz' already exists: choose another --out, or replace it with --overwrite" \
        in err
    assert out.read_bytes() == b"precious" and not fake_run.model.seen_static
    out.unlink()
    out.with_suffix(".png").write_bytes(b"precious figure")  # the figure written beside it counts too
    assert main(args) == 2
    assert "good.png' already exists" in _one_error_line(capsys)
    assert main([*args, "--overwrite"]) == 0
    with np.load(out, allow_pickle=False) as f:
        assert f["signal"].shape == (2, 200)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_cli_default_output_is_not_replaced_either(fake_run, capsys):
    default = fake_run.run_dir / "eval" / "generated.npz"
    default.parent.mkdir(parents=True)
    default.write_bytes(b"earlier")
    assert main(["--run", str(fake_run.run_dir), "--n", "2"]) == 2
    assert "generated.npz' already exists" in _one_error_line(capsys)
    assert default.read_bytes() == b"earlier"


def test_cli_bad_out_name_is_refused_before_sampling(fake_run, tmp_path, capsys):
    assert main(["--run", str(fake_run.run_dir), "--out", str(tmp_path / "g.csv")]) == 2
    assert "--out: expected a file name ending in .npz" in _one_error_line(capsys)
    assert not fake_run.model.seen_static


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_on_a_cpu_machine(fake_run, capsys):
    assert main(["--run", str(fake_run.run_dir), "--device", "cuda"]) == 2
    assert _one_error_line(capsys) == "error: --device: 'cuda' requested but no CUDA device is available\n"


class Payload:
    """Unpickling this runs ``touch <target>``: the file must never appear."""

    def __init__(self, target) -> None:
        self.target = str(target)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_cli_broken_run_directories(tmp_path, capsys):
    """No mock: the real load_run on a missing run, a missing checkpoint, a truncated one, a hostile one."""
    from training.checkpoint import CheckpointError

    missing = tmp_path / "nowhere"
    assert main(["--run", str(missing)]) == 2
    assert re.search(r"^error: run directory '.*nowhere': not found$", _one_error_line(capsys))
    run = tmp_path / "run"
    run.mkdir()
    assert main(["--run", str(run)]) == 2
    assert re.search(r"^error: run directory .*run.: not a run directory \(expected", _one_error_line(capsys))
    (run / "checkpoints").mkdir()
    assert main(["--run", str(run)]) == 2
    assert re.search(r"^error: checkpoint '.*run/checkpoints/best.pt': not found$", _one_error_line(capsys))
    marker = tmp_path / "pwned"
    torch.save({"format_version": 1, "model": Payload(marker)}, run / "checkpoints" / "best.pt")
    assert main(["--run", str(run)]) == 2
    err = _one_error_line(capsys)
    assert re.search(r"^error: checkpoint '.*best.pt': refusing to load '(posix|os|nt).system'", err)
    assert not marker.exists()
    (run / "checkpoints" / "best.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main(["--run", str(run)]) == 2
    assert re.search(r"^error: checkpoint '.*best.pt': unreadable", _one_error_line(capsys))
    with pytest.raises(CheckpointError):
        main(["--run", str(run), "--debug"])


def test_cli_checkpoint_with_unusable_stats_names_the_file(tmp_path, capsys):
    from training.checkpoint import FORMAT_VERSION

    path = tmp_path / "run" / "checkpoints" / "best.pt"
    path.parent.mkdir(parents=True)
    torch.save({"format_version": FORMAT_VERSION, "model": {}, "config": {}, "stats": {"signal_mean": 0.0},
                "step": 1, "epoch": 1}, path)
    assert main(["--run", str(tmp_path / "run")]) == 2
    assert re.search(r"^error: checkpoint '.*best.pt': unusable stats \(", _one_error_line(capsys))


def test_cli_warns_once_per_condition_outside_the_training_span(tmp_path, monkeypatch, capsys):
    """issue 27: --intensity 120 and --fmp 300 on a run trained on 0-100 dB and FMP up to 123: one line each."""
    import dataclasses

    import training.checkpoint

    stats = dataclasses.replace(STATS, static_min=[0.0, 0.0, 11.1, 0.2], static_max=[7.5, 100.0, 49.1, 123.0])
    cfg = DiffusionConfig(prediction="x0", timesteps=100, sampling_steps=2)
    run = FakeRun(None, ConstantX0(), stats, GaussianDiffusion(cfg), tmp_path / "run", {"ema": None})
    monkeypatch.setattr(training.checkpoint, "load_run", lambda run_dir, which="best", device="cpu": run)
    argv = ["--run", str(tmp_path), "--n", "2", "--out", str(tmp_path / "g.npz"), "--age", "0.5", "--rate", "21.1"]
    assert main([*argv, "--intensity", "120", "--fmp", "300"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: intensity 120 dB nHL lies outside the run's training span 0 to 100")
    assert warnings[1].startswith("warning: fmp 300 ratio lies outside the run's training span 0.2 to 123")
    assert main([*argv, "--intensity", "80", "--fmp", "100", "--overwrite"]) == 0
    assert "warning" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# issue 28: --type, --threshold and the series mode (--levels); the old path unchanged


class LabelConstantX0(ConstantX0):
    """ConstantX0 that says it reads labels and records what it was given (the network nulls them itself)."""

    label_conditioned = True

    def __init__(self, a: float = 2.0, b: float = -1.0):
        super().__init__(a, b)
        self.seen_labels: list[tuple[Tensor, Tensor]] = []

    def forward(self, x_t, t, static, drop_cond=None, label=None, threshold=None):
        self.seen_labels.append((label.clone(), threshold.clone()))
        return super().forward(x_t, t, static, drop_cond)


class WaveConstantX0(ConstantX0):
    """x0 = a + (the row's wave latency, or 0 for wave V's null) with the condition, b without."""

    label_conditioned = wave_conditioned = True

    def forward(self, x_t, t, static, drop_cond=None, label=None, threshold=None, wave=None):
        out = super().forward(x_t, t, static, drop_cond)["signal"]
        shift = torch.zeros(x_t.shape[0]) if wave is None else wave[:, 1].nan_to_num(0.0)
        return {"signal": out + torch.where(drop_cond, 0.0, shift).view(-1, 1, 1)}


@pytest.mark.parametrize("w_v", [1.0, 2.5])
def test_wave_guidance_scales_what_wave_v_adds_to_the_conditional_branch(w_v):
    """wave_guidance w_v: cond = c_0 + w_v (c_w - c_0), then the usual guidance w: uncond + w (cond - uncond)."""
    net = WaveConstantX0(a=2.0, b=-1.0)
    wave = torch.tensor([[1.0, 0.4, 0.2], [0.0, math.nan, math.nan], [math.nan] * 3])
    x = generate(net, x0_diffusion(), STATS, STATIC, 3, "ddim", 4, 2.0, torch.Generator().manual_seed(0),
                 label=1, threshold=40.0, wave=wave, wave_guidance=w_v)
    cond = 2.0 + w_v * torch.tensor([0.4, 0.0, 0.0])  # absent and null rows add nothing
    guided = -1.0 + 2.0 * (cond - -1.0)
    torch.testing.assert_close(x[:, 0, 0], guided * 0.25 + 0.1)
    with pytest.raises(ValueError, match=r"generate wave: expected shape \[3, 3\] \(up to \[3, 5\] with the "
                                         r"microphonic index and the residual noise\), found \[3, 2\]"):
        generate(net, x0_diffusion(), STATS, STATIC, 3, "ddim", 4, 2.0, wave=torch.zeros(3, 2))


class NoiseEcho(nn.Module):
    """Predicts eps = 0: every sample is its own noise path, whatever the condition (the series' shared traits)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen_static: list[Tensor] = []

    def forward(self, x_t, t, static, drop_cond=None):
        self.seen_static.append(static.clone())
        return {"signal": torch.zeros_like(x_t) * self.scale}


@pytest.fixture
def label_fake_run(tmp_path, monkeypatch):
    import dataclasses

    import training.checkpoint

    stats = dataclasses.replace(STATS, threshold_min=0.0, threshold_max=105.0)
    cfg = DiffusionConfig(prediction="x0", timesteps=100, sampling_steps=2)
    run = FakeRun(None, LabelConstantX0(), stats, GaussianDiffusion(cfg), tmp_path / "run", {"ema": None})
    monkeypatch.setattr(training.checkpoint, "load_run", lambda run_dir, which="best", device="cpu": run)
    return run


@pytest.mark.parametrize(("flags", "label", "threshold"), [
    (["--type", "TOTAL", "--threshold", "105"], 3, 105.0),
    (["--type", "snik"], 2, None),  # case and diacritics ignored; the threshold's null
    (["--threshold", "40"], -1, 40.0),  # the type's null
])
def test_cli_passes_type_and_threshold_to_every_evaluation(label_fake_run, tmp_path, flags, label, threshold):
    out = tmp_path / "g.npz"
    assert main(["--run", str(label_fake_run.run_dir), "--n", "3", "--out", str(out), "--guidance", "2", *flags]) == 0
    seen = label_fake_run.model.seen_labels
    assert len(seen) == 2 * 2  # 2 steps x (conditional, unconditional): the network drops them where told
    for y, h in seen:
        assert y.tolist() == [label] * 3
        assert (h.isnan().all() if threshold is None else (h == threshold).all())
    with np.load(out, allow_pickle=False) as f:
        gen = json.loads(str(f["meta"][()]))["generation"]
        assert "series_id" not in f.files
    from data.records import CLASS_NAMES

    assert gen["type"] == (CLASS_NAMES[label] if label >= 0 else None) and gen["threshold"] == threshold


def test_generate_takes_one_label_and_threshold_per_row_in_batch_order():
    """label and threshold given per row ([n]) reach the network row by row across batches (many requests in
    one call: bench/virtual_patients.py); a wrong length is one line."""
    net = LabelConstantX0()
    label, threshold = torch.tensor([0, 2, -1, 3, 4]), torch.tensor([10.0, 60.0, float("nan"), 105.0, 40.0])
    generate(net, x0_diffusion(), STATS, STATIC, 5, "ddim", 2, 2.0, batch_size=2, label=label, threshold=threshold)
    seen = net.seen_labels[::4]  # 3 batches x 2 steps x (conditional, unconditional)
    assert torch.equal(torch.cat([y for y, _ in seen]), label)
    torch.testing.assert_close(torch.cat([h for _, h in seen]), threshold, equal_nan=True)
    with pytest.raises(ValueError, match=r"generate label: expected one value or one per row \[5\], found shape \[4\]"):
        generate(net, x0_diffusion(), STATS, STATIC, 5, label=label[:4])


def test_cli_without_label_flags_calls_the_network_as_before(label_fake_run, tmp_path, monkeypatch):
    """Neither flag: the network is called without label keywords at all (every existing run works so)."""
    calls = []
    model = label_fake_run.model
    monkeypatch.setattr(model, "forward", lambda *a, **kw: calls.append(kw) or ConstantX0.forward(model, *a, **kw))
    assert main(["--run", str(label_fake_run.run_dir), "--n", "2", "--out", str(tmp_path / "g.npz")]) == 0
    assert calls and all(set(kw) == {"drop_cond"} for kw in calls)


def test_series_mode_shares_the_noise_within_a_series_and_sets_each_level(tmp_path, monkeypatch):
    """--levels: --n series x K levels, series_id, the intensity column per level, other values shared, and
    every noise draw shared within a series (ddpm: the step noise too): a network that ignores the condition
    makes the levels of one series identical and two series different."""
    import training.checkpoint

    net = NoiseEcho()
    cfg = DiffusionConfig(prediction="eps", timesteps=100, sampling_steps=5, sampler="ddpm")
    run = FakeRun(None, net, STATS, GaussianDiffusion(cfg), tmp_path / "run", {"ema": None})
    monkeypatch.setattr(training.checkpoint, "load_run", lambda run_dir, which="best", device="cpu": run)
    out = tmp_path / "s.npz"
    argv = ["--run", str(run.run_dir), "--n", "3", "--levels", "60,20,40", "--age", "2", "--rate", "31.1", "--fmp",
            "50", "--out", str(out), "--batch-size", "4"]
    assert main([*argv, "--share", "1"]) == 0
    assert [len(s) for s in net.seen_static[::5]] == [3, 3, 3]  # batches of whole series: 4 rows -> 3 (one series)
    with np.load(out, allow_pickle=False) as f:
        assert sorted(f.files) == ["meta", "series_id", "signal", "static"]
        assert f["series_id"].dtype == np.int64 and f["series_id"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        np.testing.assert_array_equal(f["static"][:, 1], np.float32([60, 20, 40] * 3))
        np.testing.assert_array_equal(f["static"][:, [0, 2, 3]], np.tile(np.float32([2, 31.1, 50]), (9, 1)))
        x = f["signal"].reshape(3, 3, 200)  # (series level L)
        gen = json.loads(str(f["meta"][()]))["generation"]
    assert (x == x[:, :1]).all()  # the levels of one series: one noise path
    assert not np.allclose(x[0], x[1]) and not np.allclose(x[1], x[2])
    assert (gen["levels"], gen["series"], gen["type"], gen["threshold"]) == ([60.0, 20.0, 40.0], 3, None, None)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"  # the first series' waterfall
    assert main([*argv, "--overwrite"]) == 0  # the default share: half of every draw in common
    with np.load(out, allow_pickle=False) as f:
        x = f["signal"].reshape(3, 3, 200)
    r = np.corrcoef(x[0])[np.triu_indices(3, 1)]
    assert not np.allclose(x[0, 0], x[0, 1]) and (r > 0.2).all() and (r < 0.8).all()


def test_type_threshold_and_series_on_a_tiny_label_run(tiny_label_run, tmp_path, capsys):
    """The real network: each request (type alone, threshold alone, both, neither) reaches the sampler; a
    series reads its levels while its levels stay closer to each other than to another patient's."""
    outs = {}
    base = ["--run", str(tiny_label_run), "--n", "2", "--steps", "3", "--guidance", "2", "--seed", "7"]
    for name, flags in {"neither": [], "type": ["--type", "SNİK"], "threshold": ["--threshold", "60"],
                        "both": ["--type", "SNIK", "--threshold", "60"]}.items():
        out = tmp_path / f"{name}.npz"
        assert main([*base, *flags, "--levels", "20,50,80", "--out", str(out)]) == 0
        assert f"wrote {out} (2 series x 3 levels, µV)" in capsys.readouterr().out
        with np.load(out, allow_pickle=False) as f:
            outs[name] = f["signal"].reshape(2, 3, 200)
            assert f["series_id"].tolist() == [0, 0, 0, 1, 1, 1] and np.isfinite(f["signal"]).all()
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[:i]:
            assert not np.array_equal(outs[a], outs[b]), (a, b)
    x = outs["both"]
    assert not np.array_equal(x[:, 0], x[:, 1])  # the level is read
    within = np.abs(x[:, 1:] - x[:, :1]).mean()  # the other levels vs the first, same patient
    across = np.abs(x[1] - x[0]).mean()  # the same levels, two patients
    assert within < across


@pytest.mark.parametrize(("flags", "given"), [(["--type", "NORMAL"], "--type"), (["--threshold", "40"], "--threshold"),
                                              (["--type", "TOTAL", "--threshold", "105"], "--type and --threshold")])
def test_label_flags_on_a_run_trained_without_them_are_one_line(tiny_run, tmp_path, capsys, flags, given):
    out = tmp_path / "g.npz"
    assert main(["--run", str(tiny_run), "--out", str(out), *flags]) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {given}: expected a run trained with model.label_conditioning true, found run '")
    assert "trained without it" in err and not out.exists()


def test_a_checkpoint_saved_before_label_conditioning_loads_and_generates_as_before(tiny_run, tmp_path, capsys):
    """A run whose config and statistics lack issue 28's keys (model.label_conditioning and its drop
    probabilities; threshold_min/max) loads strictly and generates, one level or a series, bit for bit as
    the same run with them."""
    import shutil

    from training.checkpoint import load_checkpoint

    old = tmp_path / "old"
    shutil.copytree(tiny_run, old, ignore=shutil.ignore_patterns("eval"))
    for path in (old / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        for key in ("label_conditioning", "type_drop_prob", "threshold_drop_prob"):
            del state["config"]["model"][key]
        del state["stats"]["threshold_min"], state["stats"]["threshold_max"]
        torch.save(state, path)
    for flags in (["--intensity", "70", "--guidance", "2"], ["--levels", "30,70"]):
        signals = []
        for run in (tiny_run, old):
            out = tmp_path / f"{run.name}-{len(flags)}.npz"
            assert main(["--run", str(run), "--n", "3", "--steps", "3", "--out", str(out), *flags]) == 0
            with np.load(out, allow_pickle=False) as f:
                signals.append(f["signal"])
        assert np.array_equal(*signals)
    capsys.readouterr()


@pytest.mark.parametrize(("argv", "expected"), [
    (["--type", "FOO"], r"argument --type: expected one of NORMAL, NÖROPATİ, SNİK, TOTAL, İTİK \(case and "
                        r"diacritics ignored\), found 'FOO'"),
    (["--threshold", "nan"], r"argument --threshold: expected a finite number >= -20 and <= 140 "
                             r"\(data.records.RANGES\), found 'nan'"),
    (["--threshold", "141"], r"argument --threshold: expected a finite number >= -20 and <= 140"),
    (["--levels", "20,abc"], r"argument --levels: expected comma-separated levels in dB nHL, each a finite number "
                             r">= -20 and <= 140 \(STATIC_LIMITS\), found 'abc'"),
    (["--levels", "20,200"], r"argument --levels: expected comma-separated levels in dB nHL, each a finite number"),
    (["--levels", "20,40,20"], r"argument --levels: expected distinct levels, found 20 twice in '20,40,20'"),
    (["--levels", "20,40", "--intensity", "50"], r"argument --levels: expected either --levels \(a series\) or "
                                                 r"--intensity \(one level\), found both"),
    (["--n", "50000", "--levels", "20,40,60"], r"argument --levels: expected --n x levels <= 100000 signals "
                                               r"\(MAX_SIGNALS\), found 50000 x 3 = 150000"),
])
def test_cli_refuses_bad_label_and_series_flags_on_one_line(label_fake_run, tmp_path, capsys, argv, expected):
    out = tmp_path / "g.npz"
    with pytest.raises(SystemExit) as exc:
        main(["--run", str(label_fake_run.run_dir), "--out", str(out), *argv])
    assert exc.value.code == 2
    err = _one_error_line(capsys)
    assert re.search(expected, err), err
    assert not out.exists() and not label_fake_run.model.seen_static


def test_cli_warns_for_a_threshold_or_a_level_outside_the_training_span(label_fake_run, tmp_path, capsys):
    argv = ["--run", str(label_fake_run.run_dir), "--n", "1", "--out", str(tmp_path / "g.npz")]
    assert main([*argv, "--threshold", "120", "--levels", "20,120,130"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: threshold 120 dB nHL lies outside the run's training span 0 to 105: the model extrapolates",
        "warning: intensity 120 dB nHL lies outside the run's training span 0 to 100: the model extrapolates",
        "warning: intensity 130 dB nHL lies outside the run's training span 0 to 100: the model extrapolates"]
    assert main([*argv, "--threshold", "105", "--levels", "20,100", "--overwrite"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_wave_run_draws_each_ears_wave_v_from_its_profile(tiny_wave_run, tmp_path, capsys):
    """model.wave_conditioning: training leaves wave_profile.json; with --type and --threshold generate draws
    each series' wave V from it (meta says so), --no-wave-profile leaves its null (other signals), and a run
    without the file is one line naming the command that fits it."""
    assert (tiny_wave_run / "wave_profile.json").is_file()
    base = ["--run", str(tiny_wave_run), "--n", "2", "--steps", "3", "--seed", "7", "--type", "SNIK",
            "--threshold", "40", "--levels", "20,60,90"]
    signals, metas = {}, {}
    for name, flags in {"drawn": [], "null": ["--no-wave-profile"]}.items():
        out = tmp_path / f"{name}.npz"
        assert main([*base, *flags, "--out", str(out)]) == 0
        capsys.readouterr()
        with np.load(out, allow_pickle=False) as f:
            signals[name], metas[name] = f["signal"], json.loads(str(f["meta"]))["generation"]
    assert metas["drawn"]["wave_profile"] is True and metas["null"]["wave_profile"] is False
    assert not np.array_equal(signals["drawn"], signals["null"])
    copy = tmp_path / "no_profile"
    shutil.copytree(tiny_wave_run, copy)
    (copy / "wave_profile.json").unlink()
    assert main([*base[:1], str(copy), *base[2:], "--out", str(tmp_path / "x.npz")]) == 2
    err = _one_error_line(capsys)
    assert "expected wave_profile.json beside a network trained with model.wave_conditioning" in err
    assert f"python -m evaluation.wave_profile --run {copy}" in err


def test_the_wave_profile_cli_refits_a_runs_profile(tiny_wave_run, tmp_path, capsys):
    """python -m evaluation.wave_profile --run RUN writes RUN/wave_profile.json from the run's training split,
    the same file training wrote."""
    from evaluation.wave_profile import main as profile_main

    copy = tmp_path / "run"
    shutil.copytree(tiny_wave_run, copy)
    written = (copy / "wave_profile.json").read_text()
    (copy / "wave_profile.json").unlink()
    assert profile_main(["--run", str(copy)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {copy / 'wave_profile.json'}"
    assert json.loads((copy / "wave_profile.json").read_text()) == json.loads(written)


def test_a_microphonic_and_noise_run_draws_both_beside_wave_v(tmp_path, capsys, monkeypatch):
    """model.microphonic_conditioning and model.noise_conditioning through train.py and generate: the run's profile
    holds the microphonic index's quantiles and the residual noise's fit, --type/--threshold generation hands the
    network its five-column condition (the noise drawn, in µV, last), and --noise-uv states every row's noise."""
    import evaluation.generate as gen
    from tests.reliability.procs import in_process_args, train_in_process

    assert train_in_process(in_process_args(tmp_path, "run", "training.epochs=1", "model.base_channels=4",
                                            "data.synthetic.patients=6", "model.label_conditioning=true",
                                            "model.wave_conditioning=true", "model.microphonic_conditioning=true",
                                            "model.noise_conditioning=true", "logging.use_tensorboard=false")) == 0
    run = tmp_path / "run"
    profile = json.loads((run / "wave_profile.json").read_text(encoding="utf-8"))
    assert len(profile["microphonic_quantiles"]) == len(profile["types"]["NÖROPATİ"]["microphonic"][0])
    assert len(profile["log10_noise_uv"]["NÖROPATİ"]["beta"]) == len(profile["noise_features"])
    seen = []
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda *a, **kw: seen.append(kw["wave"]) or real(*a, **kw))
    base = ["--run", str(run), "--n", "2", "--steps", "3", "--type", "NOROPATI", "--threshold", "40",
            "--levels", "50,90"]
    metas = []
    for flags in ([], ["--noise-uv", "0.03"], ["--no-wave-profile", "--noise-uv", "0.03"]):
        out = tmp_path / f"g{len(metas)}.npz"
        assert main([*base, *flags, "--out", str(out)]) == 0
        capsys.readouterr()
        with np.load(out, allow_pickle=False) as f:
            assert f["signal"].shape == (4, 200)
            metas.append(json.loads(str(f["meta"]))["generation"])
    drawn, stated, alone = seen
    assert drawn.shape == (4, 5) and (drawn[:, 4] > 0).all() and drawn[:, 4].unique().numel() > 1
    torch.testing.assert_close(stated[:, :4], drawn[:, :4], equal_nan=True)
    assert (stated[:, 4] == 0.03).all() and alone[:, :4].isnan().all() and (alone[:, 4] == 0.03).all()
    assert [m["wave_profile"] for m in metas] == [True, True, False]
    assert [m["noise_uv"] for m in metas] == [None, 0.03, 0.03]


def test_noise_uv_on_a_run_without_noise_conditioning_is_one_line(tiny_wave_run, tmp_path, capsys):
    assert main(["--run", str(tiny_wave_run), "--n", "2", "--steps", "3", "--noise-uv", "0.03",
                 "--out", str(tmp_path / "x.npz")]) == 2
    err = _one_error_line(capsys)
    assert "--noise-uv: expected a run trained with model.noise_conditioning true" in err
    assert not (tmp_path / "x.npz").exists()


def test_a_requested_type_gets_the_microphonic_of_one_training_ear(tiny_wave_run, tmp_path, capsys):
    """--type composes each series' cochlear microphonic from the run's bank (one ear of the type, level by level:
    the signal differs from --no-microphonic-bank's, same seed, by exactly that ear's components); a run without
    a bank generates with one warning line naming the command that fits it."""
    from evaluation.microphonic_bank import FILE, fit_bank, save_bank, window

    assert (tiny_wave_run / FILE).is_file()  # training fitted it: the run is label-conditioned
    copy = tmp_path / "run"
    shutil.copytree(tiny_wave_run, copy)
    levels = np.array([20.0, 60.0, 90.0])
    bank = fit_bank(np.zeros((3, 200), np.float32), levels, np.full(3, 2), np.zeros(3))  # one SNİK ear
    bank["component"], bank["row"] = (np.arange(1, 4)[:, None] * window()[None]).astype(np.float32), np.arange(3)
    save_bank(copy, bank)
    base = ["--run", str(copy), "--n", "2", "--steps", "3", "--seed", "7", "--type", "SNIK", "--threshold", "40",
            "--levels", "20,60,90"]
    signals, metas = {}, {}
    for name, flags in {"composed": [], "plain": ["--no-microphonic-bank"]}.items():
        out = tmp_path / f"{name}.npz"
        assert main([*base, *flags, "--out", str(out)]) == 0
        assert "microphonic" not in capsys.readouterr().err
        with np.load(out, allow_pickle=False) as f:
            signals[name], metas[name] = f["signal"], json.loads(str(f["meta"]))["generation"]
    assert metas["composed"]["microphonic_composed"] == 6 and metas["plain"]["microphonic_composed"] is None
    diff = (signals["composed"] - signals["plain"]).reshape(2, 3, 200)
    np.testing.assert_allclose(diff, np.broadcast_to(bank["component"], (2, 3, 200)), atol=1e-5)
    (copy / FILE).unlink()
    assert main([*base, "--out", str(tmp_path / "none.npz")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "microphonic" in line]
    assert len(err) == 1 and err[0].startswith(f"warning: run '{copy}' has no {FILE}")
    assert err[0].endswith(f"python -m evaluation.microphonic_bank --run {copy} fits it)")
