"""evaluation.generate: the core generate() function, the files it writes, and the CLI on a fake run."""

from __future__ import annotations

import json
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

STATS = DataStats(0.1, 0.25, [1.0, 60.0, 20.0, 300.0], [2.0, 20.0, 10.0, 200.0], 7.8, 1.0, 0.17, 0.2, 30.0, 20.0)
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
    assert calls == {"run_dir": str(tmp_path), "which": "best", "device": "cpu"}
    assert "wrote" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"][()]))
        np.testing.assert_allclose(f["signal"], (0.0 + 1.5 * 1.0) * 0.25 + 0.1, rtol=1e-6)  # guidance from config
        np.testing.assert_array_equal(f["static"][0], np.float32([0.5, 70.0, 21.1, 300.0]))
    gen = meta["generation"]
    assert (gen["sampler"], gen["steps"], gen["guidance"], gen["ema_weights"]) == ("dpmpp2m", 4, 1.5, True)
    assert len(net.seen_static) == 4 * 2  # 4 steps (flag), two evaluations each (w = 1.5)
    assert out.with_suffix(".png").is_file()
