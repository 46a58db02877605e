"""models.series.level_coherence: a response repeats across the levels of a series, noise does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.records import SAMPLE_RATE_HZ
from models.series import N_COHERENCE, level_coherence

L = 200
T_MS = np.arange(L) * 1000.0 / SAMPLE_RATE_HZ


def wave(latency_ms: float, amplitude: float = 1.0) -> np.ndarray:
    """An ABR-like trace: waves I, III and V (Gaussian bumps 0.3 ms wide), V at ``latency_ms``."""
    peaks = [(latency_ms - 4.0, 0.4), (latency_ms - 2.0, 0.6), (latency_ms, 1.0)]
    return amplitude * sum(a * np.exp(-0.5 * ((T_MS - t) / 0.3) ** 2) for t, a in peaks)


def test_a_response_followed_down_the_levels_coheres_and_noise_does_not():
    rng = np.random.default_rng(0)
    # one series of five levels: wave V 0.3 ms later and smaller at each 10 dB step down, a little noise
    levels = [60, 70, 80, 90, 100]
    resp = np.stack([wave(5.6 + 0.03 * (100 - lv), amplitude=lv / 100) + 0.05 * rng.standard_normal(L)
                     for lv in levels])
    noise = rng.standard_normal((5, L))
    members = [np.arange(5), np.arange(5, 10)]  # rows ordered by level, loudest last
    c = level_coherence(np.concatenate([resp, noise]).astype(np.float32), members)
    assert c.shape == (10, N_COHERENCE) and c.dtype == np.float32
    assert (c[:4, 0] > 0.8).all() and (c[1:5, 1] > 0.8).all() and (c[:5, 2] > 0.7).all()
    assert (np.abs(c[5:9, 0]) < 0.6).all() and (np.abs(c[5:9, 2]) < 0.6).all()
    # the pair's value is shared: row i's louder neighbour is row i + 1, whose quieter neighbour is row i
    np.testing.assert_array_equal(c[:4, 0], c[1:5, 1])
    # the ends: nothing louder than the loudest, nothing quieter than the quietest; the loudest is its own template
    assert c[4, 0] == 0 and c[0, 1] == 0 and c[4, 2] == 1.0 and c[9, 2] == 1.0


def test_it_does_not_depend_on_size_offset_or_the_levels_beyond_their_order():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, L)).astype(np.float32) + wave(6.0)
    members = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    base = level_coherence(x, members)
    scaled = x * np.array([3.0, 0.1, 1, 1, 7, 1], np.float32)[:, None] + 5.0  # sizes and offsets change
    np.testing.assert_allclose(level_coherence(scaled, members), base, atol=1e-5)
    # a series of one has no neighbour (zeros), and the order inside members is what counts
    single = level_coherence(x[:1], [np.array([0])])
    np.testing.assert_array_equal(single, np.zeros((1, N_COHERENCE), np.float32))
    flipped = level_coherence(x, [np.array([2, 1, 0]), np.array([3, 4, 5])])
    assert flipped[1, 0] == pytest.approx(base[0, 0], abs=1e-6) and flipped[0, 2] == 1.0 and flipped[0, 0] == 0


def test_lags_are_searched_within_their_windows():
    # the same trace 0.4 ms later: inside the neighbours' 0.5 ms; 1.5 ms later: only the loudest's 2 ms reaches it
    x = np.stack([wave(6.4), wave(6.0), wave(7.5), wave(6.0)]).astype(np.float32)
    c = level_coherence(x, [np.array([0, 1]), np.array([2, 3])])
    assert c[0, 0] > 0.95
    assert c[2, 0] < 0.8 and c[2, 2] > 0.95


def test_microphonic_index_reads_early_ringing_whatever_the_size():
    """A 2 kHz ringing from 0.6 ms (a cochlear microphonic) stands out; waves and noise alone stay near 0."""
    from models.series import N_MICROPHONIC, microphonic_index

    rng = np.random.default_rng(2)
    noise = 0.05 * rng.standard_normal((4, L))
    ring = 0.3 * np.sin(2 * np.pi * 2.0 * T_MS) * np.exp(-np.maximum(T_MS - 0.6, 0) / 1.0) * (T_MS >= 0.6)
    x = np.stack([wave(5.8) + noise[0], wave(5.8) + ring + noise[1], noise[2], ring + noise[3]]).astype(np.float32)
    m = microphonic_index(x)
    assert m.shape == (4, N_MICROPHONIC) and m.dtype == np.float32
    assert m[1, 0] > m[0, 0] + 2 and m[3, 0] > m[2, 0] + 2  # ringing: many times the background's band power
    assert abs(m[2, 0]) < 1.5  # noise alone: the same power early and late
    np.testing.assert_allclose(microphonic_index(7.0 * x + 3.0), m, atol=1e-4)  # size and offset do not matter


def test_residual_rms_is_the_rms_above_a_centred_half_millisecond_average():
    """models.series.residual_rms: x minus its centred 11-sample (0.5 ms) moving average with the edges held,
    as scipy's uniform_filter1d computes it; in the signal's unit, on tensors and arrays alike."""
    from scipy.ndimage import uniform_filter1d

    from models.series import residual_rms

    x = np.random.default_rng(0).standard_normal((6, 200)).cumsum(1) * 0.1  # (N L) slow and fast parts
    expected = np.sqrt(((x - uniform_filter1d(x, 11, axis=1, mode="nearest")) ** 2).mean(1))
    np.testing.assert_allclose(residual_rms(x).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(residual_rms(torch.from_numpy(3 * x)).numpy(), 3 * expected, rtol=1e-5)
