"""Validation waveform figures: units from the run's normalization, conditions named, legend apart."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from data.stats import DataStats
from training.callbacks.figures import WaveformFigureCallback, waveform_figure
from training.config import Config, DiffusionConfig
from training.diffusion import GaussianDiffusion
from training.objective import Objective


def fake_trainer(normalization: str, records: list):
    cfg = Config()

    def net(x, t, static, drop_cond=None):
        return {"signal": torch.zeros_like(x)}

    stats = dataclasses.replace(DataStats.identity(), signal_mean=0.1, signal_std=0.5, normalization=normalization)
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=20, sampling_steps=5))
    trainer = SimpleNamespace(
        cfg=cfg, is_main=True, stage="network", ema=None, step=7, epoch=1, device=torch.device("cpu"),
        diffusion=diffusion,
        objective=Objective(diffusion, torch.nn.Identity(), cond_drop_prob=0.0, head_input="clean"),
        data=SimpleNamespace(val=records, stats=stats),
        first_batch=lambda split, n: next(iter(torch.utils.data.DataLoader(records, batch_size=n))),
    )
    trainer.model = type("Net", (), {"eval": lambda self: None, "__call__": lambda self, *a, **k: net(*a, **k)})()
    records_out: list = []
    trainer.emit = records_out.append
    return trainer, records_out


@pytest.mark.parametrize(("normalization", "units"), [("global", "µV"), ("per_sample", "z-score")])
def test_amplitude_axis_follows_the_normalization(normalization, units):
    items = [{"signal": torch.randn(1, 200), "static": torch.tensor([0.0, 70.0 - 10 * i, 21.1, 300.0])}
             for i in range(4)]
    trainer, out = fake_trainer(normalization, items)
    WaveformFigureCallback().on_validation_end(trainer, {})
    (record,) = out
    fig = record.figure
    assert fig.axes[0].get_ylabel() == f"amplitude ({units})"  # never µV for z-scores
    real = fig.axes[0].lines[0].get_ydata()
    scale = (0.5, 0.1) if normalization == "global" else (1.0, 0.0)  # de-normalized through to_physical
    assert real == pytest.approx(items[0]["signal"][0].numpy() * scale[0] + scale[1], abs=1e-6)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["70 dB nHL, 21.1/s\nage < 1 y, FMP 300",
                                                       "60 dB nHL, 21.1/s\nage < 1 y, FMP 300"]


def test_legend_sits_outside_the_panels():
    x = torch.randn(2, 1, 200)
    fig = waveform_figure(x, x, x, n=2, static=torch.tensor([[0.25, 70.0, 21.1, 300.0]] * 2), units="µV")
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    legend_box = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
    for ax in fig.axes:
        assert not legend_box.overlaps(ax.get_window_extent())
    assert "age 3 mo" in fig.axes[0].get_title()


def test_no_figures_while_the_series_stage_trains():
    """The waveforms are the network's: the series stage (issue 26) draws none."""
    items = [{"signal": torch.randn(1, 200), "static": torch.tensor([0.0, 70.0, 21.1, 300.0])}] * 4
    trainer, records = fake_trainer("global", items)
    trainer.stage = "series"
    WaveformFigureCallback().on_validation_end(trainer, {})
    assert records == []
