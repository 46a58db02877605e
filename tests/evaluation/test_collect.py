"""collect(): heads at t = 0 on the clean signal, denoising at noise levels named by SNR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.collect import class_examples, collect, collect_train_targets, generate_conditions, timesteps_for_snr


def test_timesteps_for_snr_match_the_schedule(fx):
    diff = fx.FakeDiffusion(T=100)
    for snr, t, ab in timesteps_for_snr(diff, [10.0, 0.0, -10.0]):
        snr_all = 10 * torch.log10(diff.alpha_bar / (1 - diff.alpha_bar))
        assert abs(float(snr_all[t]) - snr) <= float((snr_all - snr).abs().min()) + 1e-4  # closest (ties allowed)
        assert ab == pytest.approx(float(diff.alpha_bar[t]), rel=1e-5)
    (_, t0, ab0), = timesteps_for_snr(diff, [0.0])
    assert ab0 == pytest.approx(0.5, abs=0.01)


def test_collect_shapes_heads_at_t0_and_denoising(fx, stats):
    items = fx.make_items(23)
    net, diff = fx.FakeNet(), fx.FakeDiffusion()
    col = collect(net, diff, items, stats, snr_levels_db=(10.0, 0.0), batch_size=8)
    n = len(items)
    assert col.proba.shape == (n, 5) and np.allclose(col.proba.sum(1), 1)
    assert col.signal.shape == (n, 200) and col.units == "µV"
    assert (col.label == np.arange(n) % 5).all()
    assert (col.patient_id == np.arange(n) // 5).all() and (col.series_id == np.arange(n)).all()  # a series each
    # batches of 8: 3 batches x (one head pass at t=0 + two noise levels)
    assert len(net.seen_t) == 9
    assert all(t.dtype == torch.int64 and (t == 0).all() for t in net.seen_t[::3])
    assert [lv.snr_db for lv in col.levels] == [10.0, 0.0]
    # ε-prediction of 0 gives x̂0 = x_t / sqrt(ᾱ): the estimate is exactly the noisy observation
    for lv in col.levels:
        assert np.allclose(lv.estimate, lv.noisy, atol=1e-5)
    # heads read the static input: latency = 9 - 0.03 * intensity
    assert np.allclose(col.latency_pred, 9.0 - 0.03 * col.static[:, 1], atol=1e-5)
    again = collect(fx.FakeNet(), diff, items, stats, snr_levels_db=(10.0, 0.0), batch_size=8)
    assert np.array_equal(again.levels[1].noisy, col.levels[1].noisy)  # seeded noise


def test_collect_undoes_global_normalization(fx):
    from data.stats import DataStats

    st = DataStats(2.0, 3.0, [0.0] * 4, [1.0] * 4, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0)
    items = fx.make_items(5)
    col = collect(fx.FakeNet(), fx.FakeDiffusion(), items, st, snr_levels_db=(0.0,))
    assert np.allclose(col.signal[0], items[0]["signal"].numpy().ravel() * 3.0 + 2.0, atol=1e-5)
    st.normalization = "per_sample"
    assert collect(fx.FakeNet(), fx.FakeDiffusion(), items, st, snr_levels_db=(0.0,)).units == "z-score"


def test_collect_refuses_an_empty_split(fx, stats):
    with pytest.raises(ValueError, match="expected a non-empty dataset split, found 0"):
        collect(fx.FakeNet(), fx.FakeDiffusion(), [], stats)


def test_generation_conditions_and_examples(fx, stats):
    items = fx.make_items(40)
    col = collect(fx.FakeNet(), fx.FakeDiffusion(), items, stats, snr_levels_db=(0.0,))
    conds = generate_conditions(fx.fake_generate, fx.FakeNet(), fx.FakeDiffusion(), stats, col, n=4)
    assert [c.name for c in conds] == ["intensity 0-40 dB", "intensity 40-70 dB", "intensity 70-100 dB"]
    for c in conds:
        lo = float(c.name.split()[1].split("-")[0])
        assert (c.real.shape[1], c.generated.shape) == (200, (4, 200))
        assert c.static[1] >= lo
    ex = class_examples(col, 5, fx.fake_generate, None, None, stats, n_generated=2)
    assert sorted(ex) == [0, 1, 2, 3, 4]
    assert set(ex[1]) == {"real", "static", "noisy", "denoised", "generated", "snr_db"}
    assert ex[1]["generated"].shape == (2, 200)
    train = collect_train_targets(items)
    assert train["label"].shape == (40,) and train["peak_mask"].dtype == bool
