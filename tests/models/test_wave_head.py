"""The wave map head (models/heads.py WaveMapHead, model.peak_head = "map") and its read-out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data import waveform as wf
from data.records import WAVE_NAMES
from models import build_model
from models.heads import local_maxima, parabolic_peak, peak_candidates, pick_peaks
from models.unet import HEAD_OUTPUTS, MARK_SEARCH_SAMPLES, MS_PER_SAMPLE, N_CANDIDATES, WAVE_OUTPUTS
from tests.models.conftest import make_inputs, make_stats, tiny_cfg


@pytest.fixture
def map_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg(peak_head="map"), make_stats()).eval()


def test_outputs_and_shapes(map_model):
    x, t, static = make_inputs(3)
    out = map_model(x, t, static)
    K, L = len(WAVE_NAMES), x.shape[-1]
    assert set(HEAD_OUTPUTS) | set(WAVE_OUTPUTS) <= set(out)
    assert out["wave_logits"].shape == (3, K, L)
    for k in ("wave_presence", "wave_latency", "wave_amplitude", "wave_soft_amplitude"):
        assert out[k].shape == (3, K)
    V = WAVE_NAMES.index("V")  # the seeds' wave V outputs are the map's wave V
    assert torch.equal(out["peak_logit"], out["wave_presence"][:, V])
    assert torch.equal(out["peak_latency"], out["wave_latency"][:, V])
    assert ((out["wave_latency"] >= 0) & (out["wave_latency"] <= (L - 1) * MS_PER_SAMPLE)).all()


def test_presence_is_the_log_odds_of_somewhere(map_model):
    """presence = logsumexp(location logits) - absent logit: one categorical over L + 1 outcomes."""
    x, t, static = make_inputs(2)
    with torch.no_grad():
        out = map_model(x, t, static, return_features=True)
        h, z = out["features"]
        absent = map_model.heads["peak"].absent(h, z)
    expected = torch.logsumexp(out["wave_logits"], -1) - absent
    torch.testing.assert_close(out["wave_presence"], expected)


def test_amplitude_is_read_off_the_input_in_microvolts(map_model):
    """The picked amplitude is the input's value (µV) at the parabola's vertex, never a regression."""
    x, t, static = make_inputs(4, seed=3)
    with torch.no_grad():
        out = map_model(x, t, static)
    stats = make_stats()
    x_uv = (x[:, 0] * stats.signal_std + stats.signal_mean).numpy()
    samples = out["wave_latency"].numpy() / MS_PER_SAMPLE
    lo = np.floor(samples).astype(int)
    for b in range(4):
        for k in range(len(WAVE_NAMES)):
            i = lo[b, k]
            span = x_uv[b, max(i - 1, 0): i + 3]
            assert span.min() - 1e-5 <= out["wave_amplitude"][b, k] <= span.max() + 0.25 * np.ptp(span) + 1e-5


def test_parabolic_peak_is_the_markers_refinement():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 200)).astype(np.float32)
    lat = rng.uniform(1.0, 9.0, 64).astype(np.float32)
    want_lat, want_amp = wf.mark_peak(x, lat)
    half = MARK_SEARCH_SAMPLES
    centre = np.clip(np.rint(lat / MS_PER_SAMPLE).astype(int), half + 1, 200 - half - 2)
    cols = centre[:, None] + np.arange(-half, half + 1)
    best = cols[np.arange(64), np.argmax(x[np.arange(64)[:, None], cols], axis=1)]
    pos, amp = parabolic_peak(torch.from_numpy(x), torch.from_numpy(best))
    np.testing.assert_allclose(pos.numpy() * MS_PER_SAMPLE, want_lat, atol=1e-5)
    np.testing.assert_allclose(amp.numpy(), want_amp, atol=1e-6)


def test_pick_peaks_replays_the_marker_at_the_maps_choice():
    """With the map's most likely sample at the true latency, the read-out equals the generator's mark."""
    rng = np.random.default_rng(1)
    n = 32
    x = np.zeros((n, 200), np.float32)
    lat = rng.uniform(2.0, 9.0, n)
    wf.add_wave(x, lat, rng.uniform(0.1, 0.4, n), np.full(n, 0.4), 3.0)
    x += 0.03 * rng.standard_normal(x.shape).astype(np.float32)
    want, _ = wf.mark_peak(x, lat.astype(np.float32))
    logits = torch.full((n, 1, 200), -10.0)
    logits[torch.arange(n), 0, torch.from_numpy(np.rint(lat / MS_PER_SAMPLE).astype(np.int64))] = 10.0
    xt = torch.from_numpy(x)
    best = pick_peaks(logits, xt, MARK_SEARCH_SAMPLES)
    pos, _ = parabolic_peak(xt.unsqueeze(1).expand_as(logits), best)
    np.testing.assert_allclose(pos[:, 0].numpy() * MS_PER_SAMPLE, want, atol=1e-5)


def test_local_maxima():
    x = torch.tensor([[0.0, 1.0, 0.0, 2.0, 2.0, 1.0, 3.0]])
    assert local_maxima(x).tolist() == [[False, True, False, True, True, False, False]]


def test_map_head_with_per_sample_normalization_is_refused():
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.peak_head.*per_sample"):
        load_config(None, ["model.peak_head=map", "data.normalization=per_sample"])


def test_peak_head_key_chooses_the_head():
    """model.peak_head: 'pooled' keeps the earlier wave V regression (no wave outputs), 'map' the maps."""
    x, t, static = make_inputs(2)
    pooled = build_model(tiny_cfg(peak_head="pooled"), make_stats()).eval()(x, t, static)
    mapped = build_model(tiny_cfg(peak_head="map"), make_stats()).eval()(x, t, static)
    assert not set(WAVE_OUTPUTS) & set(pooled) and set(WAVE_OUTPUTS) <= set(mapped)


def test_peak_candidates_start_with_the_answer_and_follow_the_map():
    """Candidate 0 is pick_peaks' answer; the rest are the map's other local maxima, most likely first;
    a map with fewer maxima than asked for pads with -inf."""
    x = torch.zeros(1, 40)
    x[0, [10, 20, 30]] = 1.0  # three input peaks
    logits = (-5.0 - 0.01 * torch.arange(40.0)).expand(1, 2, 40).clone()  # a falling floor: no maxima of its own
    logits[0, 0, [11, 21, 29]] = torch.tensor([1.0, 3.0, 2.0])  # wave 0: three map peaks near the input's
    logits[0, 1, 5] = 4.0  # wave 1: one map peak
    index, logp = peak_candidates(logits, x, search=2, m=4)
    assert index[0, 0].tolist()[:3] == [20, 30, 10] and index[0, 0, 0] == pick_peaks(logits, x, 2)[0, 0]
    assert (logp[0, 0, :3].diff() < 0).all() and torch.isinf(logp[0, 0, 3])
    assert index[0, 1, 0] == pick_peaks(logits, x, 2)[0, 1] and torch.isinf(logp[0, 1, 1:]).all()


def test_read_candidates_first_is_the_networks_answer(map_model):
    x, t, static = make_inputs(5, seed=4)
    with torch.no_grad():
        out = map_model(x, t, static)
    cand = map_model.read_candidates(out["wave_logits"], x)
    assert cand["latency"].shape == (5, len(WAVE_NAMES), N_CANDIDATES)
    torch.testing.assert_close(cand["latency"][..., 0], out["wave_latency"])
    torch.testing.assert_close(cand["amplitude"][..., 0], out["wave_amplitude"])
