"""training/objective.py: the draws of (t, eps, guidance drop) per batch and their DDP shards (issue 31)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.config import DiffusionConfig
from training.diffusion import GaussianDiffusion
from training.objective import Objective
from training.series import Evidence, concat_evidence

SHAPE = (8, 1, 20)


@pytest.fixture
def objective() -> Objective:
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=100))
    return Objective(diffusion, torch.nn.Identity(), cond_drop_prob=0.5, head_input="clean")


def _draw(objective, shard, seed=3):
    return objective.draw(SHAPE, torch.device("cpu"), torch.Generator().manual_seed(seed), train=True, shard=shard)


def test_one_process_draws_t_noise_drop_in_that_order(objective):
    """What a single process draws is what it drew before shards existed (resumed runs stay exact)."""
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (SHAPE[0],), generator=g)
    noise = torch.randn(SHAPE, generator=g)
    drop = torch.rand(SHAPE[0], generator=g) < 0.5
    for got, want in zip(_draw(objective, (0, 1)), (t, noise, drop), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_ranks_take_distinct_slices_of_one_global_draw(objective):
    """Two ranks with the same generator state get distinct (t, eps): together the global batch's draw."""
    r0, r1 = _draw(objective, (0, 2)), _draw(objective, (1, 2))
    g = torch.Generator().manual_seed(3)
    whole = objective.draw((2 * SHAPE[0], *SHAPE[1:]), torch.device("cpu"), g, train=True)
    for a, b, w in zip(r0, r1, whole, strict=True):
        assert a.shape == b.shape and a.shape[0] == SHAPE[0]
        torch.testing.assert_close(torch.cat([a, b]), w, rtol=0, atol=0)
    assert not torch.equal(r0[1], r1[1]) and not torch.equal(r0[0], r1[0])


def test_concat_evidence_keeps_row_order_and_optional_parts():
    def part(rows: list[int]) -> Evidence:
        r = np.asarray(rows)
        return Evidence(evidence=r[:, None].astype(np.float32), proba=r[:, None] * np.ones((1, 5)), peak_prob=r * 1.0,
                        latency=r * 1.0, amplitude=r * 1.0, threshold=r * 1.0, static=np.zeros((len(r), 4)),
                        series_id=r, patient_id=r, truth={"label": r}, waves=None)

    ev = concat_evidence([part([0, 1, 2]), part([3, 4])])
    assert ev.series_id.tolist() == [0, 1, 2, 3, 4] and ev.truth["label"].tolist() == [0, 1, 2, 3, 4]
    assert ev.waves is None and ev.proba.shape == (5, 5)


# --------------------------------------------------------------------------------------------
# label conditioning (issue 28): the type and threshold drops


def _label_objective(p_type: float, p_threshold: float) -> Objective:
    return Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), cond_drop_prob=0.1,
                     head_input="clean", label_drop=(p_type, p_threshold))


def _label_batch(B: int) -> dict[str, torch.Tensor]:
    return {"label": torch.arange(B) % 5, "threshold": 5.0 * (torch.arange(B) % 22).float()}


def test_label_drops_honour_their_probabilities_independently():
    """Type and threshold are dropped to their nulls (-1, NaN) with their own probabilities (model.type_drop_prob,
    model.threshold_drop_prob), independently; the heads' half (the second B rows) always gets both nulls."""
    B, batch = 40_000, _label_batch(40_000)
    out = _label_objective(0.3, 0.6).label_inputs(batch, torch.Generator().manual_seed(0), train=True, shard=(0, 1))
    y, h = out["label"], out["threshold"]
    assert y.shape == h.shape == (2 * B,)
    type_dropped, threshold_dropped = y[:B] == -1, h[:B].isnan()
    assert type_dropped.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert threshold_dropped.float().mean().item() == pytest.approx(0.6, abs=0.01)
    both = (type_dropped & threshold_dropped).float().mean().item()
    assert both == pytest.approx(0.3 * 0.6, abs=0.01)  # independent: type alone, threshold alone, both, neither
    kept = ~type_dropped
    assert torch.equal(y[:B][kept], batch["label"][kept])
    assert torch.equal(h[:B][~threshold_dropped], batch["threshold"][~threshold_dropped])
    assert (y[B:] == -1).all() and h[B:].isnan().all()  # the heads' half: never a label


@pytest.mark.parametrize(("p", "expected"), [(0.0, 0.0), (1.0, 1.0)])
def test_label_drop_extremes(p, expected):
    out = _label_objective(p, p).label_inputs(_label_batch(50), torch.Generator().manual_seed(1), train=True,
                                             shard=(0, 1))
    assert (out["label"][:50] == -1).float().mean().item() == expected
    assert out["threshold"][:50].isnan().float().mean().item() == expected


def test_validation_keeps_every_label_and_draws_nothing_more():
    """train=False: no drop, and the generator is left where it was (validation's draws stay as before)."""
    g = torch.Generator().manual_seed(2)
    before = g.get_state()
    batch = _label_batch(30)
    out = _label_objective(0.5, 0.5).label_inputs(batch, g, train=False, shard=(0, 1))
    assert torch.equal(out["label"][:30], batch["label"]) and torch.equal(out["threshold"][:30], batch["threshold"])
    assert torch.equal(g.get_state(), before)


def test_label_drops_shard_like_the_other_draws():
    """Under DDP each rank keeps its slice of one global draw (as for t, eps and the guidance drop)."""
    obj = _label_objective(0.5, 0.5)
    r0 = obj.draw_label_drop(8, torch.device("cpu"), torch.Generator().manual_seed(3), shard=(0, 2))
    r1 = obj.draw_label_drop(8, torch.device("cpu"), torch.Generator().manual_seed(3), shard=(1, 2))
    whole = obj.draw_label_drop(16, torch.device("cpu"), torch.Generator().manual_seed(3))
    for a, b, w in zip(r0, r1, whole, strict=True):
        assert torch.equal(torch.cat([a, b]), w)


def test_without_label_conditioning_nothing_is_passed_or_drawn(objective):
    g = torch.Generator().manual_seed(4)
    before = g.get_state()
    assert objective.label_inputs(_label_batch(4), g, train=True, shard=(0, 1)) == {}
    assert torch.equal(g.get_state(), before)


def test_label_conditioning_needs_the_clean_head_pass():
    with pytest.raises(ValueError, match=r"^model.label_conditioning: expected loss.head_input 'clean'"):
        Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), cond_drop_prob=0.1,
                  head_input="noisy", label_drop=(0.2, 0.2))


def test_wave_condition_carries_the_batch_wave_v_and_drops_to_its_null():
    """model.wave_conditioning: the denoiser's half reads [present, latency, amplitude] of each recording
    (NaN latency and amplitude where wave V is absent), dropped to the all-NaN null with wave_drop_prob, drawn
    after the labels' drops; the heads' half is all null; validation drops nothing."""
    B = 20_000
    mask = torch.arange(B) % 3 != 0
    batch = _label_batch(B) | {"peak_mask": mask, "peak_latency": torch.where(mask, 6.5, 0.0),
                               "peak_amplitude": torch.where(mask, 0.3, 0.0)}
    obj = Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), cond_drop_prob=0.1,
                    head_input="clean", label_drop=(0.3, 0.6), wave_drop=0.25)
    out = obj.label_inputs(batch, torch.Generator().manual_seed(0), train=True, shard=(0, 1))
    wave = out["wave"]
    assert wave.shape == (2 * B, 3) and wave[B:].isnan().all()
    dropped = wave[:B, 0].isnan()
    assert dropped.float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert wave[:B][dropped].isnan().all()
    kept = wave[:B][~dropped]
    kept_mask = mask[~dropped]
    assert torch.equal(kept[:, 0], kept_mask.float())
    assert (kept[kept_mask, 1] == 6.5).all() and (kept[kept_mask, 2] == 0.3).all()
    assert kept[~kept_mask, 1:].isnan().all()
    # the labels' drops are drawn first, as without the wave condition: the same type and threshold drops
    without = _label_objective(0.3, 0.6).label_inputs(batch, torch.Generator().manual_seed(0), train=True,
                                                      shard=(0, 1))
    assert torch.equal(out["label"], without["label"])
    val = obj.label_inputs(batch, torch.Generator().manual_seed(0), train=False, shard=(0, 1))["wave"]
    assert not val[:B, 0].isnan().any()


def test_wave_condition_needs_the_labels():
    with pytest.raises(ValueError, match="model.wave_conditioning: expected model.label_conditioning as well"):
        Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), cond_drop_prob=0.1,
                  head_input="clean", wave_drop=0.2)


def test_signal_class_weights_weight_each_recording_by_its_type():
    """loss.signal_class_weights: the signal loss's weight of a recording is its type's class weight (the class
    loss's buffer); off, no weights; a recording without a type is refused by name."""
    components = torch.nn.Module()
    components.register_buffer("class_weights", torch.tensor([1.0, 8.0, 2.0, 3.0, 4.0]))
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=100))
    on = Objective(diffusion, components, cond_drop_prob=0.1, head_input="clean", signal_class_weights=True)
    off = Objective(diffusion, components, cond_drop_prob=0.1, head_input="clean")
    label = torch.tensor([0, 1, 1, 4, 2])
    assert torch.equal(on.signal_weights(label), torch.tensor([1.0, 8.0, 8.0, 4.0, 2.0]))
    assert off.signal_weights(label) is None
    with pytest.raises(ValueError, match=r"^loss.signal_class_weights: expected every training recording "
                                         r"labelled with a type, found 1 without one$"):
        on.signal_weights(torch.tensor([0, -1]))


def test_the_wave_condition_carries_the_microphonic_index_when_asked():
    """model.microphonic_conditioning: a fourth column, each recording's microphonic index of its own signal
    (models.series.microphonic_log_ratio), dropped with the rest of the row; without it, three columns."""
    from models.series import microphonic_log_ratio

    B = 400
    g = torch.Generator().manual_seed(1)
    t_ms = torch.arange(200) / 20.0
    ring = torch.sin(2 * math.pi * 2.0 * t_ms) * torch.exp(-(t_ms - 0.4).clamp_min(0)) * (t_ms >= 0.4)
    signal = torch.randn(B, 1, 200, generator=g) * 0.1 + (torch.arange(B) % 2 == 0)[:, None, None] * ring
    mask = torch.ones(B, dtype=torch.bool)
    batch = _label_batch(B) | {"signal": signal, "peak_mask": mask, "peak_latency": torch.full((B,), 6.5),
                               "peak_amplitude": torch.full((B,), 0.3)}
    kw = {"cond_drop_prob": 0.1, "head_input": "clean", "label_drop": (0.3, 0.6), "wave_drop": 0.25}
    obj = Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), wave_microphonic=True,
                    **kw)
    wave = obj.label_inputs(batch, torch.Generator().manual_seed(0), train=True, shard=(0, 1))["wave"]
    assert wave.shape == (2 * B, 4) and wave[B:].isnan().all()
    kept = ~wave[:B, 0].isnan()
    assert 0.6 < kept.float().mean() < 0.9 and wave[:B][~kept].isnan().all()
    torch.testing.assert_close(wave[:B][kept, 3], microphonic_log_ratio(signal[:, 0])[kept])
    even = torch.arange(B) % 2 == 0  # the ringing rows
    assert wave[:B][kept & even, 3].mean() > wave[:B][kept & ~even, 3].mean() + 1
    plain = Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), **kw)
    three = plain.label_inputs(batch, torch.Generator().manual_seed(0), train=True, shard=(0, 1))["wave"]
    assert three.shape == (2 * B, 3)
    with pytest.raises(ValueError, match="model.microphonic_conditioning: expected model.wave_conditioning"):
        Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), cond_drop_prob=0.1,
                  head_input="clean", label_drop=(0.3, 0.6), wave_microphonic=True)


def test_the_wave_condition_carries_the_residual_noise_in_uv_when_asked():
    """model.noise_conditioning: the last column is each recording's residual noise in µV (models.series.
    residual_rms of its standardized signal times the µV scale), after the microphonic index, dropped with the
    rest of the row; noise_scale gives the scale only under a global standardization."""
    from types import SimpleNamespace

    from models.series import microphonic_log_ratio, residual_rms
    from training.objective import noise_scale

    B = 400
    g = torch.Generator().manual_seed(1)
    level = torch.where(torch.arange(B) % 2 == 0, 1.0, 0.1)  # (B) loud and quiet rows, standardized units
    signal = torch.randn(B, 1, 200, generator=g) * level[:, None, None]
    batch = _label_batch(B) | {"signal": signal, "peak_mask": torch.ones(B, dtype=torch.bool),
                               "peak_latency": torch.full((B,), 6.5), "peak_amplitude": torch.full((B,), 0.3)}
    kw = {"cond_drop_prob": 0.1, "head_input": "clean", "label_drop": (0.3, 0.6), "wave_drop": 0.25}
    scale = noise_scale(True, SimpleNamespace(normalization="global", signal_std=0.4))
    obj = Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), wave_microphonic=True,
                    wave_noise_uv=scale, **kw)
    wave = obj.label_inputs(batch, torch.Generator().manual_seed(0), train=True, shard=(0, 1))["wave"]
    assert wave.shape == (2 * B, 5) and wave[B:].isnan().all()
    kept = ~wave[:B, 0].isnan()
    assert 0.6 < kept.float().mean() < 0.9 and wave[:B][~kept].isnan().all()
    torch.testing.assert_close(wave[:B][kept, 3], microphonic_log_ratio(signal[:, 0])[kept])
    torch.testing.assert_close(wave[:B][kept, 4], 0.4 * residual_rms(signal[:, 0])[kept])
    loud = torch.arange(B) % 2 == 0
    assert wave[:B][kept & loud, 4].median() > 8 * wave[:B][kept & ~loud, 4].median()
    assert noise_scale(False, SimpleNamespace(normalization="per_sample", signal_std=1.0)) is None
    with pytest.raises(ValueError, match="model.noise_conditioning: expected data.normalization 'global'"):
        noise_scale(True, SimpleNamespace(normalization="per_sample", signal_std=1.0))
    with pytest.raises(ValueError, match="model.noise_conditioning: expected model.wave_conditioning"):
        Objective(GaussianDiffusion(DiffusionConfig(timesteps=100)), torch.nn.Identity(), cond_drop_prob=0.1,
                  head_input="clean", label_drop=(0.3, 0.6), wave_noise_uv=0.4)
