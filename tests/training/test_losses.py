"""The five head components (training/losses.py), against formulas written out here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.stats import DataStats
from training.config import LossConfig
from training.losses import ComponentLosses, focal_loss, masked_huber

CW = torch.tensor([0.5, 4.0, 1.0, 2.0, 1.5])


def stats(**kw) -> DataStats:
    return dataclasses.replace(DataStats.identity(), latency_std=2.0, amplitude_std=0.25, threshold_std=20.0, **kw)


def make(B: int = 6, mask=None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "class_logits": torch.randn(B, 5, generator=g, requires_grad=True),
        "peak_logit": torch.randn(B, generator=g, requires_grad=True),
        "peak_latency": (7.8 + torch.randn(B, generator=g)).requires_grad_(True),
        "peak_amplitude": (0.2 + 0.1 * torch.randn(B, generator=g)).requires_grad_(True),
        "threshold": (40 + 10 * torch.randn(B, generator=g)).requires_grad_(True),
    }
    m = torch.tensor(mask) if mask is not None else torch.arange(B) % 2 == 0
    batch = {
        "label": torch.arange(B) % 5,
        "peak_mask": m,
        "peak_latency": torch.where(m, 7.0 + torch.randn(B, generator=g), torch.full((B,), float("nan"))),
        "peak_amplitude": torch.where(m, 0.1 + 0.1 * torch.randn(B, generator=g), torch.full((B,), float("nan"))),
        "threshold": 30 + 10 * torch.randn(B, generator=g),
    }
    return outputs, batch


def huber(e: torch.Tensor, d: float) -> torch.Tensor:
    a = e.abs()
    return torch.where(a <= d, 0.5 * e**2, d * (a - 0.5 * d))


def test_components_match_their_formulas():
    cfg = LossConfig(huber_delta=0.5)
    losses = ComponentLosses(cfg, stats(), CW)
    out, batch = make()
    L = losses(out, batch)
    assert list(L) == ["class", "peak_exist", "peak_latency", "peak_amplitude", "threshold"]
    y = batch["label"]
    logp = F.log_softmax(out["class_logits"].detach(), -1)[torch.arange(6), y]
    assert L["class"].item() == pytest.approx(float((CW[y] * -logp).sum() / CW[y].sum()), rel=1e-6)
    p = torch.sigmoid(out["peak_logit"].detach())
    m = batch["peak_mask"].float()
    assert L["peak_exist"].item() == pytest.approx(float(-(m * p.log() + (1 - m) * (1 - p).log()).mean()), rel=1e-5)
    keep = batch["peak_mask"]
    e_lat = (out["peak_latency"].detach()[keep] - batch["peak_latency"][keep]) / 2.0
    assert L["peak_latency"].item() == pytest.approx(float(huber(e_lat, 0.5).mean()), rel=1e-6)
    e_amp = (out["peak_amplitude"].detach()[keep] - batch["peak_amplitude"][keep]) / 0.25
    assert L["peak_amplitude"].item() == pytest.approx(float(huber(e_amp, 0.5).mean()), rel=1e-6)
    e_thr = (out["threshold"].detach() - batch["threshold"]) / 20.0
    assert L["threshold"].item() == pytest.approx(float(huber(e_thr, 0.5).mean()), rel=1e-6)
    sum(L.values()).backward()
    assert all(torch.isfinite(v.grad).all() for v in out.values())  # NaN targets never leak


def test_no_peak_in_batch_gives_exact_zero_with_zero_gradient():
    losses = ComponentLosses(LossConfig(), stats(), CW)
    out, batch = make(B=4, mask=[False] * 4)
    L = losses(out, batch)
    for k in ("peak_latency", "peak_amplitude"):
        assert L[k].item() == 0.0 and L[k].requires_grad
    (L["peak_latency"] + L["peak_amplitude"]).backward()
    assert torch.equal(out["peak_latency"].grad, torch.zeros(4))
    assert torch.equal(out["peak_amplitude"].grad, torch.zeros(4))


def test_focal_keeps_class_weights_and_reduces_to_weighted_ce_at_gamma_zero():
    out, batch = make(B=10)
    logits, y = out["class_logits"].detach(), batch["label"]
    ce = F.cross_entropy(logits, y, weight=CW)
    assert focal_loss(logits, y, 0.0, CW).item() == pytest.approx(ce.item(), rel=1e-6)
    gamma = 2.0
    p = F.softmax(logits, -1)[torch.arange(10), y]
    expected = (CW[y] * (1 - p) ** gamma * -p.log()).sum() / CW[y].sum()
    assert focal_loss(logits, y, gamma, CW).item() == pytest.approx(expected.item(), rel=1e-6)
    cfg = LossConfig(class_loss="focal", focal_gamma=gamma)
    assert ComponentLosses(cfg, stats(), CW)(out, batch)["class"].item() == pytest.approx(expected.item(), rel=1e-6)
    unweighted = focal_loss(logits, y, gamma, None).item()
    assert unweighted != pytest.approx(expected.item(), rel=1e-3)  # the weights do change the loss


def test_class_weights_none_ignores_the_tensor():
    out, batch = make()
    a = ComponentLosses(LossConfig(class_weights="none"), stats(), CW)(out, batch)["class"]
    ref = F.cross_entropy(out["class_logits"], batch["label"])
    assert a.item() == pytest.approx(ref.item(), rel=1e-6)


def test_a_threshold_loss_other_than_huber_is_refused_not_replaced():
    # training.config refuses gaussian_nll when the config is read; a LossConfig built by hand gets
    # the same answer at the first step instead of a silent Huber loss.
    out, batch = make()
    with pytest.raises(ValueError, match=r"^expected loss.threshold_loss 'huber', found 'gaussian_nll'$"):
        ComponentLosses(LossConfig(threshold_loss="gaussian_nll"), stats(), CW)(out, batch)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"expected class_weights: 5 finite values >= 0, found"):
        ComponentLosses(LossConfig(), stats(), torch.ones(4))
    with pytest.raises(ValueError, match=r"expected stats.latency_std > 0 .*, found 0.0"):
        ComponentLosses(LossConfig(), dataclasses.replace(stats(), latency_std=0.0), CW)


def test_masked_huber_delta_is_in_std_units():
    pred, y = torch.tensor([3.0]), torch.tensor([0.0])
    # error 3 / std 1.5 = 2 std; delta 1: 1 * (2 - 0.5) = 1.5
    assert masked_huber(pred, y, torch.tensor([True]), 1.5, 1.0).item() == pytest.approx(1.5)


def test_focal_gamma_is_read():
    out, batch = make(B=10)
    logits, y = out["class_logits"].detach(), batch["label"]
    p = F.softmax(logits, -1)[torch.arange(10), y]
    for gamma in (0.5, 3.0):
        expected = (CW[y] * (1 - p) ** gamma * -p.log()).sum() / CW[y].sum()
        got = ComponentLosses(LossConfig(class_loss="focal", focal_gamma=gamma), stats(), CW)(out, batch)["class"]
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# the wave map head's components (model.peak_head = "map")


def make_waves(B: int = 4, L: int = 200, seed: int = 0, present=None, known=None):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "class_logits": torch.randn(B, 5, generator=g, requires_grad=True),
        "threshold": (40 + 10 * torch.randn(B, generator=g)).requires_grad_(True),
        "wave_logits": torch.randn(B, 3, L, generator=g, requires_grad=True),
        "wave_presence": torch.randn(B, 3, generator=g, requires_grad=True),
        "wave_soft_amplitude": (0.2 + 0.1 * torch.randn(B, 3, generator=g)).requires_grad_(True),
    }
    present = torch.tensor(present) if present is not None else torch.rand(B, 3, generator=g) < 0.6
    known = torch.tensor(known) if known is not None else torch.ones(B, 3, dtype=torch.bool)
    batch = {
        "label": torch.arange(B) % 5, "threshold": 30 + 10 * torch.randn(B, generator=g),
        "peak_mask": present[:, 2],
        "wave_known": known, "wave_mask": present,
        "wave_latency": torch.where(present, torch.rand(B, 3, generator=g) * 9.0, torch.zeros(B, 3)),
        "wave_amplitude": torch.where(present, 0.2 * torch.rand(B, 3, generator=g), torch.zeros(B, 3)),
    }
    return outputs, batch


def test_wave_components_match_their_formulas():
    losses = ComponentLosses(LossConfig(huber_delta=0.5), stats(), CW)
    out, batch = make_waves()
    L = losses(out, batch)
    assert list(L) == ["class", "peak_exist", "peak_latency", "peak_amplitude", "threshold"]
    m = batch["wave_mask"]
    want_exist = F.binary_cross_entropy_with_logits(out["wave_presence"].detach(), m.float())
    assert L["peak_exist"].item() == pytest.approx(float(want_exist), rel=1e-6)
    # the location cross-entropy against the two-hot encoding of the fractional marked sample (0.05 ms)
    logp = F.log_softmax(out["wave_logits"].detach(), -1)
    nll = []
    for b, k in zip(*torch.nonzero(m, as_tuple=True), strict=True):
        s = float(batch["wave_latency"][b, k]) / 0.05
        lo, frac = int(np.floor(s)), s - np.floor(s)
        nll.append(-((1 - frac) * logp[b, k, lo] + frac * logp[b, k, lo + 1]))
    assert L["peak_latency"].item() == pytest.approx(float(torch.stack(nll).mean()), rel=1e-5)
    e = (out["wave_soft_amplitude"].detach()[m] - batch["wave_amplitude"][m]) / 0.25
    assert L["peak_amplitude"].item() == pytest.approx(float(huber(e, 0.5).mean()), rel=1e-5)
    sum(L.values()).backward()
    assert all(torch.isfinite(v.grad).all() for v in out.values())


def test_unmarked_waves_are_ignored():
    """A wave the source does not mark (wave_known False) changes no component, whatever its values."""
    losses = ComponentLosses(LossConfig(), stats(), CW)
    known = [[False, True, True]] * 4
    out, batch = make_waves(known=known)
    base = losses(out, batch)
    batch["wave_mask"][:, 0] = ~batch["wave_mask"][:, 0]
    batch["wave_latency"][:, 0] = 3.0
    again = losses(out, batch)
    assert all(torch.equal(base[k], again[k]) for k in base)


def test_no_wave_in_batch_gives_exact_zero_location_and_amplitude():
    losses = ComponentLosses(LossConfig(), stats(), CW)
    out, batch = make_waves(present=[[False] * 3] * 4)
    L = losses(out, batch)
    for k in ("peak_latency", "peak_amplitude"):
        assert L[k].item() == 0.0 and L[k].requires_grad
    (L["peak_latency"] + L["peak_amplitude"]).backward()
    assert torch.equal(out["wave_logits"].grad, torch.zeros_like(out["wave_logits"]))


def test_location_loss_is_least_at_the_marked_position():
    """Logits concentrated on the two samples around the mark, split as its fraction, beat any other."""
    losses = ComponentLosses(LossConfig(), stats(), CW)
    out, batch = make_waves(B=1, present=[[False, False, True]])
    batch["wave_latency"][0, 2] = 6.0125  # sample 120.25
    logits = torch.full((1, 3, 200), -20.0)
    logits[0, 2, 120], logits[0, 2, 121] = np.log(0.75), np.log(0.25)
    out["wave_logits"] = logits
    best = losses(out, batch)["peak_latency"].item()
    shifted = logits.roll(1, dims=-1)
    out["wave_logits"] = shifted
    assert losses(out, batch)["peak_latency"].item() > best + 1.0
