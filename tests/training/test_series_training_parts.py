"""What the series model trains on beyond the train split (issue 33): noise series of the train split's
own series (series.noise_series) and more patients from the generator (series.extra_patients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.dataset import build_data
from data.records import CLASS_NAMES
from data.schema import ConfigError
from models.unet import build_model
from tests.runs import tiny_config
from training.clinical import NO_RESPONSE_DB
from training.series import SeriesSet, extract
from training.series_stage import EXTRA_SEED_OFFSET, SeriesStage, build_stage, noise_copies, series_set


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("parts"), "data.synthetic.patients=12")
    return cfg, build_data(cfg.data, cfg.loss.class_weights)


def test_noise_copies_replace_every_recording_of_a_share_of_the_series(tiny):
    _, bundle = tiny
    train = bundle.train.tensors
    series = torch.unique(train["series_id"])
    noise = noise_copies(bundle.train, 0.5, seed=3).tensors
    chosen = torch.unique(noise["series_id"])
    assert len(chosen) == round(0.5 * len(series))
    rows = torch.isin(train["series_id"], chosen)
    assert len(noise["label"]) == int(rows.sum())  # every recording of a chosen series, once
    torch.testing.assert_close(noise["static"], train["static"][rows])  # the same stated levels
    assert not torch.isclose(noise["signal"], train["signal"][rows]).all(dim=-1).any()  # no recording kept
    assert (noise["label"] == CLASS_NAMES.index("TOTAL")).all() and (noise["threshold"] == NO_RESPONSE_DB).all()
    assert not noise["peak_mask"].any() and not noise["wave_mask"].any()
    # each noise recording has its own recording's size (std within the catch scale's 0.5-2x)
    ratio = noise["signal"].std(-1) / train["signal"][rows].std(-1)
    assert ((ratio > 0.45) & (ratio < 2.2)).all()
    again = noise_copies(bundle.train, 0.5, seed=3).tensors
    assert torch.equal(again["signal"], noise["signal"])  # drawn the same on every call (exact resume)
    assert noise_copies(bundle.train, 0.0, seed=3).tensors["signal"].shape[0] == 0


def test_series_set_keeps_the_parts_series_apart(tiny):
    cfg, bundle = tiny
    net = build_model(cfg.model, bundle.stats).eval()
    one = SeriesSet(extract(net, bundle.train), bundle.train.tensors["threshold"].numpy(),
                    bundle.train.tensors["label"].numpy())
    both = series_set(net, [bundle.train, bundle.train], "cpu")  # the same ids twice: shifted apart
    assert len(both) == 2 * len(one)
    torch.testing.assert_close(both.evidence[len(one):], one.evidence)
    assert torch.equal(both.type[len(one):], one.type) and torch.equal(both.threshold_bin, one.threshold_bin.repeat(2))


def test_extra_patients_come_from_the_runs_generator_at_another_seed(tiny, tmp_path):
    _, bundle = tiny
    cfg = tiny_config(tmp_path, "data.synthetic.patients=12", "series.extra_patients=3", "series.noise_series=0.5")
    parts = build_stage(cfg, int(bundle.class_weights.numel())).training_parts(bundle)
    assert [p is bundle.train for p in parts] == [True, False, False]
    extra = parts[1].tensors
    assert len(torch.unique(extra["patient_id"])) == 3
    from data.synthetic import generate

    raw = generate(3, cfg.data.synthetic.seed + EXTRA_SEED_OFFSET)
    torch.testing.assert_close(extra["signal"][:, 0], bundle.stats.from_uv(torch.from_numpy(raw.signal)))


def test_extra_patients_need_the_generator(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"^config key 'series\.extra_patients': expected 0 with data\.source 'file'"):
        tiny_config(tmp_path, "data.source=file", "data.path=x.npz", "series.extra_patients=10")
    cfg = tiny_config(tmp_path, "series.extra_patients=10")
    stage = SeriesStage(cfg.series, 5, seed=0, grad_clip=1.0, synthetic=None)  # what build_stage gives a data file
    with pytest.raises(ValueError, match="series.extra_patients"):
        stage.training_parts(tiny[1])



def test_series_coherence_appends_each_recordings_level_coherence(tiny, tmp_path):
    from models.series import N_COHERENCE, level_coherence
    from training.clinical import series_index
    from training.series import load_series
    from training.series_stage import save_series

    cfg, bundle = tiny
    net = build_model(cfg.model, bundle.stats).eval()
    ev = extract(net, bundle.train)
    t = bundle.train.tensors
    want = level_coherence(t["signal"][:, 0].numpy(), series_index(ev.series_id, ev.static[:, 1]).members)
    assert ev.coherence is not None and ev.coherence.shape == (len(ev.static), N_COHERENCE)
    torch.testing.assert_close(torch.from_numpy(ev.coherence), torch.from_numpy(want))
    plain, read = series_set(net, [bundle.train], "cpu"), series_set(net, [bundle.train], "cpu", coherence=True)
    assert read.evidence.shape[-1] == plain.evidence.shape[-1] + N_COHERENCE
    torch.testing.assert_close(read.evidence[..., :-N_COHERENCE], plain.evidence)
    s, rows = 0, read.series.members[0]
    torch.testing.assert_close(read.evidence[s, :len(rows), -N_COHERENCE:], torch.from_numpy(ev.coherence[rows]))
    ev.coherence = None
    with pytest.raises(ValueError, match="level coherence"):
        SeriesSet(ev, coherence=True)
    # the stage builds a series model that says it reads coherence, and series.pt keeps saying so
    on = tiny_config(tmp_path, "data.synthetic.patients=12", "series.coherence=true", "series.epochs=1",
                     "series.width=16", "series.heads=2")
    stage = build_stage(on, int(bundle.class_weights.numel()))
    stage.prepare(net, bundle)
    assert stage.net.coherence and stage.train_set.evidence.shape[-1] == read.evidence.shape[-1]
    save_series(tmp_path, stage.net, on.series, {"epoch": 1})
    assert load_series(tmp_path).coherence is True


def test_noise_surrogates_are_series_of_their_recordings_surrogates(tiny, tmp_path):
    _, bundle = tiny
    train = bundle.train.tensors
    plain = noise_copies(bundle.train, 0.5, seed=3).tensors
    sur = noise_copies(bundle.train, 0.5, seed=3, surrogates=1.0).tensors
    assert torch.equal(plain["series_id"], sur["series_id"])  # the same series chosen
    rows = torch.isin(train["series_id"], torch.unique(sur["series_id"]))
    own = train["signal"][rows, 0]
    torch.testing.assert_close(torch.fft.rfft(sur["signal"][:, 0]).abs(), torch.fft.rfft(own).abs(), atol=1e-3,
                               rtol=1e-4)
    assert (sur["threshold"] == NO_RESPONSE_DB).all() and not sur["peak_mask"].any()
    cfg = tiny_config(tmp_path, "data.synthetic.patients=12", "series.noise_series=0.5", "series.noise_surrogates=1")
    part = build_stage(cfg, int(bundle.class_weights.numel())).training_parts(bundle)[1].tensors
    assert torch.equal(part["signal"], noise_copies(bundle.train, 0.5, cfg.seed, 1.0).tensors["signal"])


def test_noise_band_puts_the_noise_series_in_a_recordings_band(tiny, tmp_path):
    """series.noise_band: the same series and recordings, their coloured noise through random recording filters:
    almost no power above 5 kHz (without it, white to brown noise to Nyquist keeps a good share there)."""
    _, bundle = tiny
    f = torch.fft.rfftfreq(bundle.train.tensors["signal"].shape[-1], 1 / 20000)  # (F,) Hz

    def above_5khz(x: torch.Tensor) -> float:
        power = torch.fft.rfft(x[:, 0]).abs().pow(2).mean(0)[1:]  # (F-1,) without the mean
        return (power[f[1:] > 5000].sum() / power.sum()).item()

    plain = noise_copies(bundle.train, 0.5, seed=3).tensors
    band = noise_copies(bundle.train, 0.5, seed=3, band=1.0).tensors
    assert torch.equal(plain["series_id"], band["series_id"]) and (band["threshold"] == NO_RESPONSE_DB).all()
    assert above_5khz(band["signal"]) < 0.005 < 0.03 < above_5khz(plain["signal"])
    half = noise_copies(bundle.train, 0.5, seed=3, band=0.5).tensors  # about half the recordings filtered
    assert above_5khz(band["signal"]) < above_5khz(half["signal"]) < above_5khz(plain["signal"])
    cfg = tiny_config(tmp_path, "data.synthetic.patients=12", "series.noise_series=0.5", "series.noise_band=1")
    part = build_stage(cfg, int(bundle.class_weights.numel())).training_parts(bundle)[1].tensors
    assert torch.equal(part["signal"], noise_copies(bundle.train, 0.5, cfg.seed, band=1.0).tensors["signal"])
    with pytest.raises(ConfigError, match=r"^config key 'series\.noise_band': expected 0 with series\.noise_"):
        tiny_config(tmp_path, "series.noise_band=0.5")


def test_noise_series_above_one_are_whole_copies_each_its_own_draw(tiny, tmp_path):
    _, bundle = tiny
    n_series = len(torch.unique(bundle.train.tensors["series_id"]))
    cfg = tiny_config(tmp_path, "data.synthetic.patients=12", "series.noise_series=2.5")
    noise = build_stage(cfg, int(bundle.class_weights.numel())).training_parts(bundle)[1:]
    assert [len(torch.unique(p.tensors["series_id"])) for p in noise] == [n_series, n_series, round(0.5 * n_series)]
    first, second = noise[0].tensors, noise[1].tensors
    assert torch.equal(first["series_id"], second["series_id"]) and not torch.equal(first["signal"], second["signal"])
    assert torch.equal(first["signal"], noise_copies(bundle.train, 1.0, cfg.seed).tensors["signal"])  # = share 1
    with pytest.raises(ConfigError, match=r"series\.noise_series"):
        tiny_config(tmp_path, "series.noise_series=4.5")


def test_thinned_copies_keep_a_few_levels_one_recording_each(tiny, tmp_path):
    from training.series_stage import THINNED_LEVELS, thinned_copies

    _, bundle = tiny
    train = bundle.train.tensors
    thin = thinned_copies(bundle.train, 0.5, seed=4).tensors
    sid, level = thin["series_id"], thin["static"][:, 1]
    ids = torch.unique(sid)
    assert len(ids) == round(0.5 * len(torch.unique(train["series_id"])))
    for s in ids.tolist():
        lv = level[sid == s]
        n_levels = len(torch.unique(train["static"][train["series_id"] == s, 1]))
        assert len(torch.unique(lv)) == len(lv)  # one recording per level
        assert min(THINNED_LEVELS[0], n_levels) <= len(lv) <= THINNED_LEVELS[1]
    # every kept row is a recording of the train split, labels and all
    rows = [int(torch.nonzero((train["signal"][:, 0] == x).all(-1))[0]) for x in thin["signal"][:, 0]]
    assert torch.equal(train["label"][rows], thin["label"]) and torch.equal(train["threshold"][rows], thin["threshold"])
    assert torch.equal(thinned_copies(bundle.train, 0.5, seed=4).tensors["signal"], thin["signal"])  # exact resume
    cfg = tiny_config(tmp_path, "data.synthetic.patients=12", "series.extra_patients=3", "series.thinned_series=0.5")
    parts = build_stage(cfg, int(bundle.class_weights.numel())).training_parts(bundle)
    assert len(parts) == 4  # train, extra patients, and a thinned copy of each
    assert torch.equal(parts[2].tensors["signal"], thinned_copies(bundle.train, 0.5, cfg.seed).tensors["signal"])


def test_series_waterfall_appends_the_waves_read_down_the_waterfall(tiny, tmp_path):
    """series.waterfall: each recording's evidence gains its waves' presence and latency read down its
    series' waterfall (training.series.waterfall_features); the series model says so in series.pt."""
    from training.series import N_WATERFALL, load_series, waterfall_waves
    from training.series_stage import save_series

    _, bundle = tiny
    on = tiny_config(tmp_path, "data.synthetic.patients=12", "model.peak_head=map", "series.waterfall=true",
                     "series.epochs=1", "series.width=16", "series.heads=2")
    net = build_model(on.model, bundle.stats).eval()
    ev = extract(net, bundle.train)
    plain, read = series_set(net, [bundle.train], "cpu"), series_set(net, [bundle.train], "cpu", waterfall=True)
    assert read.evidence.shape[-1] == plain.evidence.shape[-1] + N_WATERFALL
    torch.testing.assert_close(read.evidence[..., :-N_WATERFALL], plain.evidence)
    rows = read.series.members[0]
    want = waterfall_waves(ev)
    torch.testing.assert_close(read.evidence[0, :len(rows), -N_WATERFALL:],
                               torch.from_numpy(np.concatenate([want["prob"], want["latency"]], 1)[rows]).float())
    stage = build_stage(on, int(bundle.class_weights.numel()))
    stage.prepare(net, bundle)
    assert stage.net.waterfall and stage.train_set.evidence.shape[-1] == read.evidence.shape[-1]
    save_series(tmp_path, stage.net, on.series, {"epoch": 1})
    assert load_series(tmp_path).waterfall is True
    with pytest.raises(ConfigError, match=r"^config key 'series\.waterfall': expected false with model\.peak_head"):
        tiny_config(tmp_path, "series.waterfall=true", "model.peak_head=pooled")


def test_series_microphonic_appends_each_recordings_microphonic_index(tiny, tmp_path):
    from models.series import N_MICROPHONIC, microphonic_index
    from training.series import load_series
    from training.series_stage import save_series

    cfg, bundle = tiny
    net = build_model(cfg.model, bundle.stats).eval()
    ev = extract(net, bundle.train)
    np.testing.assert_allclose(ev.microphonic, microphonic_index(bundle.train.tensors["signal"][:, 0]), atol=1e-5)
    plain, read = series_set(net, [bundle.train], "cpu"), series_set(net, [bundle.train], "cpu", microphonic=True)
    assert read.evidence.shape[-1] == plain.evidence.shape[-1] + N_MICROPHONIC
    rows = read.series.members[0]
    torch.testing.assert_close(read.evidence[0, :len(rows), -N_MICROPHONIC:], torch.from_numpy(ev.microphonic[rows]))
    on = tiny_config(tmp_path, "data.synthetic.patients=12", "series.microphonic=true", "series.epochs=1",
                     "series.width=16", "series.heads=2")
    stage = build_stage(on, int(bundle.class_weights.numel()))
    stage.prepare(net, bundle)
    assert stage.net.reads() == {"coherence": False, "waterfall": False, "microphonic": True}
    save_series(tmp_path, stage.net, on.series, {"epoch": 1})
    assert load_series(tmp_path).microphonic is True
    ev.microphonic = None
    with pytest.raises(ValueError, match="microphonic index"):
        SeriesSet(ev, microphonic=True)


def test_val_noise_series_join_the_score_the_best_epoch_is_kept_by(tiny, tmp_path):
    from training.clinical import N_THRESHOLD_BINS, Estimate
    from training.series_stage import selection_score

    cfg, bundle = tiny
    net = build_model(cfg.model, bundle.stats).eval()
    on = tiny_config(tmp_path, "data.synthetic.patients=12", "series.val_noise_series=1", "series.epochs=1",
                     "series.width=16", "series.heads=2")
    stage = build_stage(on, int(bundle.class_weights.numel()))
    stage.prepare(net, bundle)
    noise = stage.noise_val_set
    assert len(noise) == len(stage.val_set)  # every val series once more, as noise
    assert (noise.type == CLASS_NAMES.index("TOTAL")).all() and (noise.threshold_bin == N_THRESHOLD_BINS - 1).all()
    assert not torch.allclose(noise.evidence, stage.val_set.evidence)
    got = stage.validate()
    assert 0.0 <= got["val/series/noise/no_response"] <= 1.0
    m = {"threshold": {"within_5db": Estimate(0.5, 0.4, 0.6)}, "type": {"macro_f1": Estimate(0.25, 0.2, 0.3)}}
    assert selection_score(m) == pytest.approx(0.75)
    assert selection_score(m, 0.9) == pytest.approx(1.65)  # equal say with the two answers
    assert stage.best["score"] == pytest.approx(got["val/series/threshold/within_5db"]
                                                + got["val/series/type/macro_f1"]
                                                + got["val/series/noise/no_response"])
    plain = build_stage(tiny_config(tmp_path, "data.synthetic.patients=12"), int(bundle.class_weights.numel()))
    plain.prepare(net, bundle)
    assert plain.noise_val_set is None and "val/series/noise/no_response" not in plain.validate()
    few = build_stage(tiny_config(tmp_path, "data.synthetic.patients=12", "series.val_noise_series=0.01"),
                      int(bundle.class_weights.numel()))
    with pytest.raises(ValueError, match=r"^series\.val_noise_series: 0\.01 of the val split's series is none"):
        few.prepare(net, bundle)
