"""evaluation.microphonic_bank: the cochlear microphonic composed onto virtual patients from training ears."""

from __future__ import annotations

import numpy as np
import pytest

from data.records import SIGNAL_LENGTH
from evaluation import microphonic_bank as mb
from models.series import microphonic_index

RING_HZ = 2500.0


def _recordings(n: int, ring_uv: float, seed: int) -> np.ndarray:
    """(n L) µV: white noise of 0.05 µV, plus (ring_uv > 0) a microphonic ringing at RING_HZ from 0.4 ms."""
    rng = np.random.default_rng(seed)
    t = np.arange(SIGNAL_LENGTH) / 20.0  # ms
    ring = ring_uv * np.sin(2 * np.pi * RING_HZ * t / 1e3) * np.exp(-np.maximum(t - 0.4, 0) / 1.0) * (t >= 0.4)
    return (rng.normal(0.0, 0.05, (n, SIGNAL_LENGTH)) + ring).astype(np.float32)


def _bank() -> dict[str, np.ndarray]:
    """Two ears of type 1 with a microphonic (levels 40-100 dB), two of type 0 without; one ear of type 2 with
    a microphonic only at 100 dB."""
    levels = np.array([40.0, 60.0, 80.0, 100.0])
    parts = [(ear, k, _recordings(4, ring, ear)) for ear, k, ring in
             ((0, 1, 1.0), (1, 1, 1.0), (2, 0, 0.0), (3, 0, 0.0))]
    x2 = _recordings(4, 0.0, 4)
    x2[3] = _recordings(1, 1.0, 5)[0]
    parts.append((4, 2, x2))
    x = np.concatenate([p[2] for p in parts])
    return mb.fit_bank(x, np.tile(levels, len(parts)), np.repeat([p[1] for p in parts], 4),
                       np.repeat([p[0] for p in parts], 4))


def test_only_a_microphonic_is_kept_and_only_inside_its_window():
    bank = _bank()
    has = bank["row"] >= 0
    assert has.tolist() == [True] * 8 + [False] * 8 + [False] * 3 + [True]
    assert bank["component"].shape == (9, SIGNAL_LENGTH) and bank["component"].dtype == np.float32
    w = mb.window()
    assert w[0] == 0 and w.max() == 1 and (bank["component"][:, w == 0] == 0).all()
    # what is kept rings at the microphonic's frequency: its spectrum peaks there
    spectrum = np.abs(np.fft.rfft(bank["component"], 4 * SIGNAL_LENGTH)).mean(0)
    peak_hz = np.fft.rfftfreq(4 * SIGNAL_LENGTH, 1 / 20_000)[spectrum.argmax()]
    assert abs(peak_hz - RING_HZ) < 300


def test_each_series_gets_one_ear_of_its_type_level_by_level():
    bank = _bank()
    level = np.array([40.0, 60.0, 100.0, 40.0, 60.0, 100.0, 100.0, 100.0, 75.0])
    label = np.array([1, 1, 1, 0, 0, 0, 2, 2, 1])
    series = np.array([0, 0, 0, 1, 1, 1, 2, 3, 4])
    extra, n = mb.compose(bank, level, label, series, np.random.default_rng(0))
    assert extra.shape == (9, SIGNAL_LENGTH) and n == 3 + 2 + 1
    rows = {tuple(c) for c in bank["component"].round(6)}
    got = [tuple(e) for e in extra.round(6)]
    assert all(g in rows for g in got[:3])  # the microphonic type: every level composed ...
    ears = {int(bank["ear"][np.flatnonzero(bank["row"] == i)[0]]) for i, c in enumerate(bank["component"].round(6))
            if tuple(c) in got[:3]}
    assert len(ears) == 1  # ... from one ear
    assert not extra[3:6].any()  # type 0's ears hold none
    assert extra[6].any() and extra[7].any()  # type 2's one ear at 100 dB
    assert extra[8].any()  # 75 dB: the nearest level (80 dB) within the tolerance
    again, _ = mb.compose(bank, level, label, series, np.random.default_rng(0))
    assert np.array_equal(extra, again)


def test_a_level_beyond_the_tolerance_or_a_type_without_ears_gets_nothing():
    bank = _bank()
    far = 40.0 - mb.LEVEL_TOLERANCE_DB - 5.0  # type 1's ears hold a microphonic from 40 dB
    extra, n = mb.compose(bank, np.array([far, 60.0]), np.array([1, 3]), np.array([0, 1]), np.random.default_rng(0))
    assert n == 0 and not extra.any()


def test_a_series_asking_for_two_types_is_refused():
    with pytest.raises(ValueError, match=r"expected one type per series, found series 0 asking for types \[0, 1\]"):
        mb.compose(_bank(), np.array([40.0, 60.0]), np.array([0, 1]), np.array([0, 0]), np.random.default_rng(0))


def test_the_composed_microphonic_reads_as_one():
    """The point of it: a recording without a microphonic, plus a composed one, reads like a recording with one."""
    bank = _bank()
    plain = _recordings(1, 0.0, 9)
    extra, _ = mb.compose(bank, np.array([80.0]), np.array([1]), np.array([0]), np.random.default_rng(0))
    assert microphonic_index(plain)[0, 0] < mb.GATE < microphonic_index(plain + extra)[0, 0]


def test_save_and_load_round_trip_and_bad_files_are_one_line(tmp_path):
    bank = _bank()
    assert mb.load_bank(tmp_path) is None
    mb.save_bank(tmp_path, bank)
    back = mb.load_bank(tmp_path)
    assert set(back) == set(mb.KEYS) and all(np.array_equal(back[k], bank[k]) for k in mb.KEYS)
    (tmp_path / mb.FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"expected a safetensors microphonic bank, found an unreadable file .*"
                                         r"python -m evaluation.microphonic_bank --run"):
        mb.load_bank(tmp_path)
    mb.save_bank(tmp_path, {**bank, "row": bank["row"] + 100})
    with pytest.raises(ValueError, match="expected a microphonic bank of version 1 with component, row"):
        mb.load_bank(tmp_path)


def test_the_cli_refits_the_bank_training_wrote(tiny_wave_run, tmp_path, capsys):
    """A label-conditioned run leaves microphonic_bank.safetensors; the CLI writes the same from its training split."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_wave_run, copy)
    written = mb.load_bank(copy)
    (copy / mb.FILE).unlink()
    assert mb.main(["--run", str(copy)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"wrote {copy / mb.FILE} (") and "training recordings)" in out
    again = mb.load_bank(copy)
    assert all(np.array_equal(again[k], written[k]) for k in mb.KEYS) and len(again["row"]) > 0
