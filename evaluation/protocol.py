"""What the recording protocol gives away, so a benchmark can say it (bench/clinical.py, issue 27).

The synthetic generator records about 25 levels per patient, half of them bracketing the threshold, as
a clinician searching for it does: the levels alone, with no waveform, already point at the threshold.
Beside the model, a benchmark therefore shows

- ``levels_only``: the centre of the densest ``WINDOW_DB`` window of the recorded levels (counted in
  recordings), on the 5 dB grid; it never answers "no response";
- ``rule_true_marks``: the audiologist's rule (training.clinical.rule_thresholds) fed the generator's true
  wave V marks instead of the network's: the ceiling of the rule itself;
- a sparse clinic protocol (:func:`sparse_rows`): at most one recording at each of SPARSE_LEVELS_DB
  (7 levels between 20 and 100 dB, as a screening-then-diagnostic visit records), which takes the
  bracketing away.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.clinical import Series, from_bin, rule_thresholds, series_index, series_truth, threshold_metrics, to_bin

WINDOW_DB = 15.0
SPARSE_LEVELS_DB = (20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0)


def levels_only_thresholds(series: Series, level: np.ndarray, window: float = WINDOW_DB) -> np.ndarray:
    """Per series (S,): the centre of the window [a, a + window] holding the most recordings (the lowest
    such a on a tie), a running over the series' levels, snapped to the 5 dB grid."""
    out = []
    for m in series.members:
        lv = np.sort(level[m])
        counts = np.searchsorted(lv, lv + window, side="right") - np.arange(len(lv))  # recordings in [a, a+w]
        out.append(lv[int(counts.argmax())] + window / 2)
    return from_bin(to_bin(np.asarray(out)))


def true_mark_thresholds(series: Series, level: np.ndarray, peak_mask: np.ndarray) -> np.ndarray:
    """The rule over the true wave V marks (S,)."""
    return rule_thresholds(series, level, np.asarray(peak_mask, dtype=np.float64))


def sparse_rows(series_id: np.ndarray, level: np.ndarray, levels: tuple[float, ...] = SPARSE_LEVELS_DB
                ) -> np.ndarray:
    """Row indices of the sparse protocol: per series, the first recording at each of ``levels`` that it
    has (a level it lacks is skipped, so a series keeps at most len(levels) recordings)."""
    keep = np.isin(level, levels)
    _, first = np.unique(np.stack([series_id[keep], level[keep]], axis=1), axis=0, return_index=True)
    return np.sort(np.flatnonzero(keep)[first])


def baseline_thresholds(tensors: dict[str, Any], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """threshold_metrics of ``levels_only`` and ``rule_true_marks`` on a labelled dataset's tensors."""
    t = {k: tensors[k].numpy() for k in ("series_id", "static", "threshold", "label", "peak_mask")}
    level = t["static"][:, 1]
    series = series_index(t["series_id"], level)
    truth_db, _ = series_truth(series, t["threshold"], t["label"])
    kw = {"n_boot": n_boot, "seed": seed}
    return {"levels_only": threshold_metrics(truth_db, levels_only_thresholds(series, level), **kw),
            "rule_true_marks": threshold_metrics(truth_db, true_mark_thresholds(series, level, t["peak_mask"]), **kw)}
