"""Per-series answers that contradict each other, flagged with a short reason (patients.csv ``coherence``).

A clinician reading "no response" beside type NORMAL, or a threshold 40 dB below every level where
wave V was seen, would stop and look; so does this check. The flags:

- ``no response`` with type NORMAL (normal hearing answers at some level);
- type TOTAL with a threshold (total loss is no response at every level);
- a threshold more than ``WIDE_DB`` below the lowest level with a detected wave V, although quieter
  levels between the two were recorded and showed none;
- a split type: the top type's probability under ``SPLIT_P``, or the runner-up within ``CLOSE_P`` of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.records import CLASS_NAMES
from training.clinical import DETECTION_P, NO_RESPONSE_DB

WIDE_DB = 20.0
SPLIT_P = 0.5
CLOSE_P = 0.15
NORMAL, TOTAL = CLASS_NAMES.index("NORMAL"), CLASS_NAMES.index("TOTAL")


def series_flags(threshold_db: float, type_proba: np.ndarray, levels: np.ndarray, peak_prob: np.ndarray) -> list[str]:
    """The contradictions of one series: its threshold (dB, NO_RESPONSE_DB for none), type probabilities
    (K,), and its recordings' levels (n,) and wave V probabilities (n,)."""
    flags = []
    k = int(type_proba.argmax())
    no_response = threshold_db >= NO_RESPONSE_DB
    if no_response and k == NORMAL:
        flags.append("no response beside type NORMAL")
    if not no_response and k == TOTAL:
        flags.append(f"type TOTAL beside a threshold of {threshold_db:g} dB")
    detected = peak_prob >= DETECTION_P
    if not no_response and detected.any():
        lowest = float(levels[detected].min())
        quiet_absent = ((levels > threshold_db) & (levels < lowest) & ~detected).any()
        if lowest - threshold_db > WIDE_DB and quiet_absent:
            flags.append(f"threshold {threshold_db:g} dB is {lowest - threshold_db:g} dB below the lowest level "
                         f"with wave V ({lowest:g} dB), and levels between show none")
    top2 = np.sort(type_proba)[::-1][:2]
    if top2[0] < SPLIT_P or top2[0] - top2[1] < CLOSE_P:
        second = int(np.argsort(type_proba)[::-1][1])
        flags.append(f"type split: {CLASS_NAMES[k]} {top2[0]:.2f} vs {CLASS_NAMES[second]} {top2[1]:.2f}")
    return flags


def coherence(answers: Any, levels: np.ndarray, peak_prob: np.ndarray) -> list[list[str]]:
    """Per series of ``answers`` (training.series.SeriesAnswers, its ``best`` method): the flags;
    ``levels`` and ``peak_prob``: per recording (N,)."""
    best = answers.best
    return [series_flags(float(answers.thresholds[best][s]), answers.types[best][s], levels[m], peak_prob[m])
            for s, m in enumerate(answers.series.members)]
