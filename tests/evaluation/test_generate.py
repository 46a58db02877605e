"""evaluation.generate: the core generate() function, the files it writes, and the CLI on a fake run."""

from __future__ import annotations

import json
import re
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
