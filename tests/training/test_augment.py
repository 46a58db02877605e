"""training/augment.py and the keys training.intensity_dropout / training.intensity_jitter_db (issue 33)."""

from __future__ import annotations

import pytest
import torch

from data.schema import ConfigError
from tests.runs import tiny_config
from training.augment import (
    CATCH_LABEL,
    DRIFT_SPAN,
    coloured_noise,
    noise_catch,
    perturb_intensity,
    phase_surrogate,
    recording_band,
)
from training.clinical import NO_RESPONSE_DB
from training.setup import build_trainer

SMALL = ["data.synthetic.patients=3", "training.epochs=1", "training.clinical_validation=false",
         "logging.use_tensorboard=false"]


def _static(n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    level = 5.0 * torch.randint(0, 21, (n,), generator=g).float()
    return torch.stack([torch.full((n,), 1.0), level, torch.full((n,), 31.1), torch.full((n,), 2.0)], dim=1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_off_is_the_same_tensor_and_draws_nothing():
    static, g = _static(), torch.Generator().manual_seed(1)
    state = g.get_state()
    assert perturb_intensity(static, dropout=0.0, jitter_db=0.0, fill_db=50.0, generator=g) is static
    assert torch.equal(g.get_state(), state)  # a run without the options draws the same noise as before


def test_dropout_fills_the_share_asked_and_touches_nothing_else():
    static = _static()
    out = perturb_intensity(static, dropout=0.3, jitter_db=0.0, fill_db=47.5, generator=_gen(2))
    dropped = out[:, 1] != static[:, 1]
    assert abs(dropped.float().mean().item() - 0.3) < 0.03  # 47.5 is off the 5 dB grid: every fill shows
    assert bool((out[dropped, 1] == 47.5).all())
    assert torch.equal(out[:, [0, 2, 3]], static[:, [0, 2, 3]]) and static[:, 1].remainder(5).eq(0).all()


def test_jitter_has_the_spread_asked_within_the_clinical_range():
    static = _static()
    static[:, 1] = 50.0
    out = perturb_intensity(static, dropout=0.0, jitter_db=10.0, fill_db=0.0, generator=_gen(3))
    assert abs((out[:, 1] - 50.0).std().item() - 10.0) < 0.5
    edge = _static()
    edge[:, 1] = 100.0
    out = perturb_intensity(edge, dropout=0.0, jitter_db=20.0, fill_db=0.0, generator=_gen(4))
    assert out[:, 1].max().item() == 100.0 and out[:, 1].min().item() < 90.0


class StaticSeen:
    """The stated intensities the network is called with in training mode."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.levels: list[torch.Tensor] = []
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if module.training:
            self.levels.append(args[2][:, 1].detach().clone())


@pytest.mark.parametrize("key", ["intensity_dropout", "intensity_jitter_db"])
def test_the_trainer_perturbs_the_stated_intensity_of_training_batches(tmp_path, key):
    seen = {}
    for value in (0, {"intensity_dropout": 1.0, "intensity_jitter_db": 10.0}[key]):
        trainer = build_trainer(tiny_config(tmp_path, *SMALL, f"training.{key}={value}"), tmp_path / f"{key}{value}",
                                callbacks=[])
        hook = StaticSeen(trainer.model)
        trainer.fit()
        seen[value] = torch.cat(hook.levels)
        mean = trainer.data.stats.static_mean[1]
    stated = seen[0]
    assert bool(stated.remainder(5).eq(0).all())  # off: the stated grid levels, as recorded
    changed = seen[max(seen)]
    if key == "intensity_dropout":
        assert torch.allclose(changed, torch.full_like(changed, mean))  # p = 1: every level is the training mean
    else:
        assert changed.remainder(5).ne(0).float().mean() > 0.9 and bool(((changed >= 0) & (changed <= 100)).all())


def _batch(B: int = 2000) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {"signal": 0.5 + 2.0 * torch.randn(B, 1, 200, generator=g), "label": torch.zeros(B, dtype=torch.int64),
            "threshold": torch.full((B,), 20.0), "peak_mask": torch.ones(B, dtype=torch.bool),
            "wave_mask": torch.ones(B, 3, dtype=torch.bool), "wave_known": torch.zeros(B, 3, dtype=torch.bool)}


def test_noise_catch_off_is_the_same_batch_and_draws_nothing():
    batch, g = _batch(), _gen(6)
    state = g.get_state()
    assert noise_catch(batch, 0.0, g) is batch and torch.equal(g.get_state(), state)


def test_noise_catch_rows_are_noise_of_the_rows_size_labelled_as_catch_trials():
    batch = _batch()
    out = noise_catch(batch, 0.25, _gen(7))
    c = (out["signal"] != batch["signal"]).any(-1)[:, 0]  # (B,) replaced rows
    assert abs(c.float().mean().item() - 0.25) < 0.03
    assert bool((out["label"][c] == CATCH_LABEL).all()) and bool((out["label"][~c] == 0).all())
    assert bool((out["threshold"][c] == NO_RESPONSE_DB).all()) and bool((out["threshold"][~c] == 20.0).all())
    assert not out["peak_mask"][c].any() and out["peak_mask"][~c].all()
    assert not out["wave_mask"][c].any() and out["wave_known"][c].all() and not out["wave_known"][~c].any()
    x = out["signal"][c, 0]
    ratio = x.std(-1) / batch["signal"][c, 0].std(-1)  # log-uniform 0.5-2 of the row's own size
    assert ratio.min().item() > 0.49 and ratio.max().item() < 2.01 and abs(ratio.log().mean().item()) < 0.1
    assert torch.allclose(x.mean(-1), batch["signal"][c, 0].mean(-1), atol=1e-4)
    assert torch.equal(batch["label"], torch.zeros_like(batch["label"]))  # the input batch is not changed


def test_coloured_noise_has_the_slope_asked():
    """Power falls as 1/f^alpha: the log-log slope of the averaged (Hann-windowed) periodogram is -alpha; the
    window is cut from a longer stretch, so pink and brown noise drift across it (not periodic in it)."""
    for alpha in (0.0, 1.0, 2.0):
        x = coloured_noise((4000, 200), torch.full((4000,), alpha), _gen(8), span=DRIFT_SPAN)
        power = torch.fft.rfft(x * torch.hann_window(200, periodic=False)).abs().pow(2).mean(0)[1:]  # (F-1) no DC
        f = torch.arange(1, len(power) + 1, dtype=torch.float32)
        slope = torch.linalg.lstsq(torch.stack([f.log(), torch.ones_like(f)], 1), power.log()[:, None]).solution[0]
        assert abs(slope.item() + alpha) < 0.1, (alpha, slope.item())
        jump = (x[:, -1] - x[:, 0]).abs().mean().item()  # periodic noise would join up; drifting noise does not
        step = (x[:, 1:] - x[:, :-1]).abs().mean().item()
        assert (jump > 1.5 * step) == (alpha >= 1.0), (alpha, jump, step)
        periodic = coloured_noise((4000, 200), torch.full((4000,), alpha), _gen(8))  # span 1: one period, no drift
        assert (periodic[:, -1] - periodic[:, 0]).abs().mean().item() < 1.5 * step


def test_the_objective_replaces_only_the_heads_half(tmp_path):
    """training.noise_catch: the signal loss (the denoiser's half) is that of the run without it; the heads'
    losses move."""
    losses = {}
    for p in (0.0, 0.9):
        trainer = build_trainer(tiny_config(tmp_path, *SMALL, f"training.noise_catch={p}"), tmp_path / f"c{p}",
                                callbacks=[])
        batch = next(iter(torch.utils.data.DataLoader(trainer.data.train, batch_size=32)))
        torch.manual_seed(0)
        out = trainer.objective(trainer.model.train(), batch, torch.Generator().manual_seed(9), train=True)
        losses[p] = {k: v.item() for k, v in out.losses.items()}
    assert losses[0.0]["signal"] == pytest.approx(losses[0.9]["signal"], rel=1e-6)
    assert losses[0.0]["class"] != pytest.approx(losses[0.9]["class"], rel=1e-3)


def test_band_limited_catch_noise_carries_no_power_a_recording_cannot_have():
    """training.catch_band: 1/f noise through random recording filters (low-pass 1.5-3 kHz, orders 1-4) keeps
    about 0.1 % of its power above 5 kHz, against 14 % without (the cue the network learned); unit variance."""
    f = torch.fft.rfftfreq(200, 1 / 20000)  # (F,) Hz
    alpha = torch.full((4000,), 1.0)

    def above_5khz(x: torch.Tensor) -> float:
        power = torch.fft.rfft(x).abs().pow(2).mean(0)  # (F,)
        return (power[f > 5000].sum() / power.sum()).item()

    band = recording_band(4000, 200, _gen(20))  # (B F)
    assert band.shape == (4000, 101) and bool((band[:, 0] == 0).all()) and float(band.max()) <= 1.0
    x = coloured_noise((4000, 200), alpha, _gen(21), band=band)
    torch.testing.assert_close(x.std(-1), torch.ones(4000), atol=1e-4, rtol=0)
    assert above_5khz(x) < 0.005 < 0.10 < above_5khz(coloured_noise((4000, 200), alpha, _gen(21)))
    drifting = coloured_noise((64, 200), alpha[:64], _gen(22), DRIFT_SPAN, recording_band(64, 800, _gen(23)))
    assert above_5khz(drifting) < 0.005  # the band follows the grid of the longer stretch


def test_catch_band_reaches_the_catch_rows_of_the_objective(tmp_path):
    """The same catch rows, band-limited noise: the heads' losses move, the denoiser's does not."""
    losses, band = {}, {}
    for on in (False, True):
        trainer = build_trainer(tiny_config(tmp_path, *SMALL, "training.noise_catch=0.9",
                                            f"training.catch_band={str(on).lower()}"),
                                tmp_path / f"b{on}", callbacks=[])
        band[on] = trainer.objective.catch_band
        batch = next(iter(torch.utils.data.DataLoader(trainer.data.train, batch_size=32)))
        torch.manual_seed(0)
        out = trainer.objective(trainer.model.train(), batch, torch.Generator().manual_seed(9), train=True)
        losses[on] = {k: v.item() for k, v in out.losses.items()}
    assert band == {False: False, True: True}
    assert losses[False]["signal"] == pytest.approx(losses[True]["signal"], rel=1e-6)
    assert losses[False]["class"] != pytest.approx(losses[True]["class"], rel=1e-4)
    with pytest.raises(ConfigError, match=r"^config key 'training\.catch_band': expected false with training"):
        tiny_config(tmp_path, "training.catch_band=true")


def test_a_phase_surrogate_keeps_the_amplitude_spectrum_and_loses_the_waveform():
    x = torch.randn(64, 200, generator=_gen(10)) + torch.linspace(0, 3, 200)  # (B L), with a mean and a drift
    s = phase_surrogate(x, _gen(11))
    torch.testing.assert_close(torch.fft.rfft(s).abs(), torch.fft.rfft(x).abs(), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(s.mean(-1), x.mean(-1), atol=1e-5, rtol=0)
    xc, sc = x - x.mean(-1, keepdim=True), s - s.mean(-1, keepdim=True)
    r = (xc * sc).sum(-1) / (xc.norm(dim=-1) * sc.norm(dim=-1))  # (B,) waveform correlation with the original
    assert r.abs().mean().item() < 0.3


def test_surrogate_catch_rows_are_surrogates_of_their_own_recording():
    batch = _batch()
    plain = noise_catch(batch, 0.5, _gen(12))
    assert torch.equal(noise_catch(batch, 0.5, _gen(12), surrogates=0.0)["signal"], plain["signal"])  # 0: as before
    out = noise_catch(batch, 0.5, _gen(12), surrogates=1.0)
    c = (out["signal"] != batch["signal"]).any(-1)[:, 0]  # (B,) replaced rows: the same rows as without surrogates
    assert torch.equal(c, (plain["signal"] != batch["signal"]).any(-1)[:, 0])
    torch.testing.assert_close(torch.fft.rfft(out["signal"][c, 0]).abs(), torch.fft.rfft(batch["signal"][c, 0]).abs(),
                               atol=1e-3, rtol=1e-4)
    assert bool((out["label"][c] == CATCH_LABEL).all()) and not out["peak_mask"][c].any()
    half = noise_catch(batch, 0.5, _gen(12), surrogates=0.5)["signal"][c, 0]  # about half of them surrogates
    same = torch.isclose(torch.fft.rfft(half).abs(), torch.fft.rfft(batch["signal"][c, 0]).abs(), atol=1e-3).all(-1)
    assert abs(same.float().mean().item() - 0.5) < 0.06


def test_the_trainer_passes_catch_surrogates_to_the_objective(tmp_path):
    trainer = build_trainer(tiny_config(tmp_path, *SMALL, "training.noise_catch=0.5", "training.catch_surrogates=0.5"),
                            tmp_path / "s", callbacks=[])
    assert trainer.objective.catch_surrogates == 0.5
    with pytest.raises(ConfigError, match=r"^config key 'training\.catch_surrogates': expected 0 with training"):
        tiny_config(tmp_path, "training.catch_surrogates=0.5")
    with pytest.raises(ConfigError, match=r"^config key 'series\.noise_surrogates': expected 0 with series\.noise_"):
        tiny_config(tmp_path, "series.noise_surrogates=0.5")
