"""Coherence flags per series (evaluation/coherence.py): one test per flag, and none on a coherent series."""

from __future__ import annotations

import numpy as np

from data.records import CLASS_NAMES
from evaluation.coherence import series_flags
from training.clinical import NO_RESPONSE_DB

LEVELS = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0])


def onehot(name: str, p: float = 0.9) -> np.ndarray:
    out = np.full(5, (1 - p) / 4)
    out[CLASS_NAMES.index(name)] = p
    return out


def test_coherent_series_has_no_flag():
    seen = (LEVELS >= 40).astype(float)
    assert series_flags(40.0, onehot("SNİK"), LEVELS, seen) == []


def test_no_response_beside_normal():
    assert series_flags(NO_RESPONSE_DB, onehot("NORMAL"), LEVELS, np.zeros(7)) == ["no response beside type NORMAL"]


def test_total_beside_a_threshold():
    flags = series_flags(60.0, onehot("TOTAL"), LEVELS, (LEVELS >= 60).astype(float))
    assert flags == ["type TOTAL beside a threshold of 60 dB"]


def test_threshold_far_below_the_lowest_wave_v():
    seen = (LEVELS >= 70).astype(float)  # 20-60 dB recorded, no wave V
    flags = series_flags(20.0, onehot("SNİK"), LEVELS, seen)
    assert len(flags) == 1 and "50 dB below the lowest level with wave V (70 dB)" in flags[0]
    assert series_flags(55.0, onehot("SNİK"), LEVELS, seen) == []  # 15 dB: within the margin


def test_split_type():
    p = np.array([0.45, 0.0, 0.40, 0.1, 0.05])
    assert series_flags(40.0, p, LEVELS, (LEVELS >= 40).astype(float)) == ["type split: NORMAL 0.45 vs SNİK 0.40"]
