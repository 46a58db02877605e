"""Health monitor: each alert fires on a crafted run, once per cooldown, and never on a healthy run."""

from __future__ import annotations

import math

import pytest
import torch

from tests.training.callbacks.fakes import FakeBalancer, FakeMetaLoss, healthy_losses
from training.balancers import BalancerConfig, build_balancer
from training.balancers.meta_loss import MetaLoss
from training.callbacks import default_callbacks
from training.callbacks.health import HealthMonitorCallback, near_clamp
from training.callbacks.metrics import StepMetricsCallback
from training.callbacks.weights import LossWeightLoggerCallback
from training.components import COMPONENTS


def run(make_trainer, losses=healthy_losses, steps=60, meta_loss=None, **step_kwargs):
    trainer = make_trainer([StepMetricsCallback(), LossWeightLoggerCallback(), HealthMonitorCallback()],
                           meta_loss=meta_loss)
    trainer.start()
    trainer.steps(steps, losses, **step_kwargs)
    return trainer


def alerts(trainer, name=None):
    return [r for r in trainer.of_kind("alert") if name is None or r.data["alert"] == name]


def test_silent_on_a_healthy_run(make_trainer, cfg):
    trainer = make_trainer(default_callbacks(cfg))
    trainer.start()
    for _ in range(5):
        trainer.steps(100, healthy_losses, grad_norm=lambda s: 2.0 + math.sin(s))
        trainer.validate({"val/total": 1.0})
        trainer.end_epoch({"train/total": 1.0, "val/total": 1.0, "lr": 1e-4})
        trainer.start_epoch()
    trainer.end()
    assert len(trainer.of_kind("step")) == 50
    assert alerts(trainer) == []


def test_nonfinite_values_and_skipped_steps(make_trainer):
    trainer = run(make_trainer, steps=20, grad_norm=lambda s: math.inf if s == 5 else 1.0,
                  skipped=lambda s: s == 15)
    found = alerts(trainer, "nonfinite")
    assert [a.step for a in found] == [10, 20]
    assert "grad_norm/total" in found[0].data["keys"] and found[1].data["skipped_steps"] == 1
    assert found[0].text.startswith("WARNING")


def test_negative_total_only_where_the_strategy_cannot_produce_it(make_trainer):
    trainer = run(make_trainer, steps=10, objective=-2.062)
    (a,) = alerts(trainer, "negative_total")
    assert a.data["total"] == pytest.approx(-2.062)
    allowed = run(make_trainer, steps=10, objective=-2.062, meta_loss=FakeMetaLoss(FakeBalancer(can_be_negative=True)))
    assert alerts(allowed) == []
    nll = run(make_trainer, steps=10, objective=-2.0, losses=lambda s: {**healthy_losses(s), "threshold": -9.0})
    assert alerts(nll, "negative_total") == []  # a Gaussian NLL component may be negative itself


def test_loss_spike(make_trainer):
    def losses(s):
        return {c: v * (50.0 if s == 45 else 1.0) for c, v in healthy_losses(s).items()}

    trainer = run(make_trainer, losses, steps=60)
    (a,) = alerts(trainer, "loss_spike")
    assert a.step == 50 and a.data["value"] > 5 * a.data["median"]


def test_gradient_explosion(make_trainer, cfg):
    trainer = run(make_trainer, steps=30, grad_norm=lambda s: 5e4 if s == 22 else 1.0)
    (a,) = alerts(trainer, "grad_explosion")
    assert a.step == 30 and a.data["value"] == 5e4
    cfg.logging.health.grad_explosion = 1e5
    assert alerts(run(make_trainer, steps=30, grad_norm=lambda s: 5e4 if s == 22 else 1.0)) == []


def test_stalled_component_seed_001(make_trainer, cfg):
    cfg.logging.health.stall_window = 20

    def losses(s):  # PeakLat flat at 15.9 while Class falls fast (seed 001: countdown vs pointers)
        return {**{c: math.exp(-s / 40) for c in COMPONENTS}, "peak_latency": 15.9, "class": 2.0 * math.exp(-s / 20)}

    trainer = run(make_trainer, losses, steps=40)
    (a,) = alerts(trainer, "stalled_component")
    assert a.step == 30 and a.data["component"] == "peak_latency" and a.data["improving"] == "class"
    assert "PeakLat changed" in a.text
    cfg.logging.health.improve_rel_change = 0.9  # Class's improvement no longer counts
    assert alerts(run(make_trainer, losses, steps=40), "stalled_component") == []


def test_a_noisy_improving_component_is_not_stalled(make_trainer, cfg):
    """The healthy quickstart: Class fell 12 % over 200 steps, but one window mean of it matched the
    window 200 steps earlier within 1 % (batch noise), and a single-window comparison alerted."""
    assert cfg.logging.health.stall_window == 200

    def losses(s):
        noise = 0.1 * math.sin(1.7 * (s // 10))  # +-10 % per 10-step window, as class batches move
        klass = (1.0 - 0.0006 * s) * (1 + noise)
        if 390 < s <= 400:  # the window at step 400 equals the one at step 200 (about 1 chance in 20)
            klass = (1.0 - 0.0006 * 200) * (1 + 0.1 * math.sin(1.7 * 19))
        return {**{c: math.exp(-s / 400) for c in COMPONENTS}, "class": klass}

    trainer = run(make_trainer, losses, steps=400)
    windows = {r.step: r.scalars["train/class"] for r in trainer.of_kind("step")}
    assert abs(windows[400] - windows[200]) / windows[200] < 0.01  # what the old rule compared
    assert alerts(trainer, "stalled_component") == []


def test_stall_needs_a_flat_component(make_trainer, cfg):
    cfg.logging.health.stall_window = 20
    cfg.logging.health.stall_rel_change = 1e-6  # a 0.1 % drift is no longer "flat"

    def losses(s):
        return {**{c: 1.0 - 1e-4 * s for c in COMPONENTS}, "class": 2.0 * math.exp(-s / 20)}

    assert alerts(run(make_trainer, losses, steps=40), "stalled_component") == []


def real_meta_loss(strategy: str, **block: float) -> MetaLoss:
    cfg = BalancerConfig(strategy=strategy)
    for k, v in block.items():
        setattr(cfg.inverse_loss if strategy in ("equal_init", "equal_init_ema", "ema") else cfg.gradnorm, k, v)
    return MetaLoss(torch.nn.Module(), build_balancer(cfg))


@pytest.mark.parametrize("strategy", ["equal_init", "equal_init_ema", "ema"])
def test_weight_near_clamp_fires_on_a_real_balancer_pinned_at_its_clamps(make_trainer, cfg, strategy):
    meta = real_meta_loss(strategy)  # clamps 1e-4 .. 1e4 (config defaults)
    cfg.logging.health.cooldown_steps = 1000
    means = {**dict.fromkeys(COMPONENTS, 1.0), "signal": 1e-9, "threshold": 1e5}  # w0 / L: 1e9 and 1e-5
    for epoch in range(1, 200):  # equal_init jumps at epoch 1; the EMAs (alpha 0.9) converge onto the clamps
        meta.balancer.on_epoch_end(epoch, means)
    near = alerts(run(make_trainer, steps=10, meta_loss=meta), "weight_near_clamp")
    assert {(a.data["component"], a.data["clamp"]) for a in near} == {("signal", 1e4), ("threshold", 1e-4)}
    assert "weight of Signal is 1e+04, near the balancer's max_weight 1e+04" in near[0].text + near[1].text


def test_weight_near_clamp_fires_on_gradnorm_at_its_floor(make_trainer):
    meta = real_meta_loss("gradnorm", min_weight=0.01)
    with torch.no_grad():
        meta.balancer.w.copy_(torch.tensor([0.01, 1.0, 1.0, 1.0, 1.0, 1.99]))  # where the clamp leaves it
    (a,) = alerts(run(make_trainer, steps=10, meta_loss=meta), "weight_near_clamp")
    assert a.data["component"] == "signal" and a.data["clamp"] == 0.01


@pytest.mark.parametrize("strategy", ["fixed", "scale_norm", "equal_init", "gradnorm", "famo"])
def test_weight_near_clamp_is_silent_on_real_balancers_away_from_their_clamps(make_trainer, strategy):
    meta = real_meta_loss(strategy)
    meta.balancer.on_epoch_end(1, {**dict.fromkeys(COMPONENTS, 1.0), "threshold": 50.0})  # weight 0.02: fine
    assert alerts(run(make_trainer, steps=30, meta_loss=meta), "weight_near_clamp") == []


def test_near_clamp_is_measured_on_a_log_scale():
    assert near_clamp(2.4e-4, 1e-4, 1e4, 0.05) == "min_weight"  # within (1e8)^0.05 = 2.51x of the floor
    assert near_clamp(2.6e-4, 1e-4, 1e4, 0.05) == ""
    assert near_clamp(500.0, 1e-4, 1e4, 0.05) == ""  # a linear 5 % of the range would have said "min"
    assert near_clamp(4.0e3, 1e-4, 1e4, 0.05) == "max_weight"
    assert near_clamp(1.04e-4, 1e-4, None, 0.05) == "min_weight" and near_clamp(1.06e-4, 1e-4, None, 0.05) == ""
    assert near_clamp(1e-4, 1e-4, 1e4, 0.0) == "min_weight" and near_clamp(1.01e-4, 1e-4, 1e4, 0.0) == ""
    assert near_clamp(1.0, None, None, 0.05) == ""


class Alternating(FakeBalancer):
    """Signal's weight jumps up and down at every read (seed 000: rapid oscillation)."""

    reads = 0

    def get_loss_weights(self):
        self.reads += 1
        self.weights["signal"] = 1.3 if self.reads % 2 else 0.7
        return super().get_loss_weights()


def test_weight_oscillation(make_trainer, cfg):
    cfg.logging.health.oscillation_window = 6
    trainer = run(make_trainer, steps=60, meta_loss=FakeMetaLoss(Alternating()))
    (a,) = alerts(trainer, "weight_oscillation")
    assert a.data["component"] == "signal" and a.step == 50  # the 6th record (steps 0, 10, ..., 50)


def test_dominant_component_and_cooldown(make_trainer, cfg):
    def losses(s):  # seed 003: Thresh 130 against ~1 for the rest
        return {**{c: 1.0 for c in COMPONENTS}, "threshold": 130.0}

    trainer = run(make_trainer, losses, steps=60)
    (a,) = alerts(trainer, "dominant_component")
    assert a.data["component"] == "threshold" and a.data["share"] == pytest.approx(130 / 135)
    cfg.logging.health.cooldown_steps = 20
    assert [a.step for a in alerts(run(make_trainer, losses, steps=60), "dominant_component")] == [10, 30, 50]
    cfg.logging.health.dominance_share = 0.99
    assert alerts(run(make_trainer, losses, steps=60)) == []


def test_state_round_trip_keeps_cooldowns(make_trainer):
    losses = lambda s: {**{c: 1.0 for c in COMPONENTS}, "threshold": 130.0}  # noqa: E731
    first = run(make_trainer, losses, steps=10)
    state = first.callbacks[2].state_dict()
    monitor = HealthMonitorCallback()
    monitor.load_state_dict(state)
    resumed = make_trainer([StepMetricsCallback(), LossWeightLoggerCallback(), monitor], step=10, resumed=True)
    resumed.start()
    resumed.steps(20, losses)
    assert alerts(resumed) == []  # within the cooldown of the alert at step 10


def test_disabled_by_config(cfg):
    assert any(isinstance(cb, HealthMonitorCallback) for cb in default_callbacks(cfg))
    cfg.logging.health.enabled = False
    assert not any(isinstance(cb, HealthMonitorCallback) for cb in default_callbacks(cfg))


def test_spike_factor_sets_what_counts_as_a_spike(make_trainer, cfg):
    def losses(s):
        return {c: v * (50.0 if s == 45 else 1.0) for c, v in healthy_losses(s).items()}

    assert len(alerts(run(make_trainer, losses, steps=60), "loss_spike")) == 1  # default factor 5
    cfg.logging.health.spike_factor = 100.0  # a 50x window max is no longer a spike
    assert alerts(run(make_trainer, losses, steps=60), "loss_spike") == []


def test_weight_clamp_margin_sets_how_near_a_clamp_alerts(make_trainer, cfg):
    def meta():
        m = real_meta_loss("gradnorm", min_weight=0.01)
        with torch.no_grad():
            m.balancer.w.copy_(torch.tensor([0.0104, 1.0, 1.0, 1.0, 1.0, 1.9896]))  # 4 % above the floor
        return m

    assert len(alerts(run(make_trainer, steps=10, meta_loss=meta()), "weight_near_clamp")) == 1  # margin 0.05
    cfg.logging.health.weight_clamp_margin = 0.01
    assert alerts(run(make_trainer, steps=10, meta_loss=meta()), "weight_near_clamp") == []


def test_a_new_stage_is_not_compared_with_the_last_one(make_trainer):
    """The series stage's losses (issue 26) are not a spike of the network's: the history starts again."""
    trainer = run(make_trainer, steps=60)
    trainer.stage = "series"
    trainer.start_epoch()
    trainer.steps(30, lambda step: {"series_threshold": 60.0, "series_type": 40.0})
    assert alerts(trainer, "loss_spike") == [] and alerts(trainer) == []
    trainer.steps(10, lambda step: {"series_threshold": 600.0, "series_type": 400.0})
    assert len(alerts(trainer, "loss_spike")) == 1  # within the stage, spikes are still seen
