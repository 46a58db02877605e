"""The clinical questions per intensity series, in the field's terms (DESIGN.md, "Patient level").

A *series* is the recordings of one ear or session (``series_id``); a clinician reads it top to
bottom and calls the threshold at the lowest level with a reproducible wave V. This module holds
what every caller of the series level shares - training's validation, ``evaluation.evaluate``,
``bench/clinical.py`` and ``evaluation.predict`` - as plain numpy:

- grouping recordings into series (:func:`series_index`) and their true answers;
- the audiologist's rule over per-recording wave V answers (:func:`rule_threshold`);
- the metrics: threshold MAE, exact on the 5 dB grid, within ±5 / ±10 dB, no-response detection;
  type macro-F1, balanced accuracy, per-class recall and the confusion matrix; wave V detection F1
  and latency within 0.1 / 0.2 ms; each with a 95 % bootstrap interval over series
  (:func:`bootstrap`), the unit of independence being the patient, not the recording.

Thresholds are on the clinical 5 dB grid, 0-100 dB nHL; "no response" (nothing up to the 100 dB
limit) is coded ``NO_RESPONSE_DB`` = 105 dB, one grid step above the limit, so an absolute error
is defined for it and 100 dB vs "no response" counts as within ±5 dB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GRID_STEP_DB = 5.0
MAX_LEVEL_DB = 100.0
NO_RESPONSE_DB = MAX_LEVEL_DB + GRID_STEP_DB  # data.synthetic codes total loss the same way
N_THRESHOLD_BINS = int(NO_RESPONSE_DB / GRID_STEP_DB) + 1  # 0, 5, ..., 100 dB and "no response": 22
DETECTION_P = 0.5  # a recording's wave V counts as detected at this probability
LATENCY_TOLERANCES_MS = (0.1, 0.2)


# ------------------------------------------------------------------------------------------------
# series


@dataclass
class Series:
    """Recordings grouped by series: ``members[s]`` are the row indices of series ``s`` (S series)."""

    ids: np.ndarray  # (S,) series_id of each series, ascending
    members: list[np.ndarray]  # S arrays of row indices, each ordered by intensity (loudest last)

    def __len__(self) -> int:
        return len(self.ids)

    def first_rows(self) -> np.ndarray:
        return np.array([m[0] for m in self.members], dtype=np.int64)  # (S,)


def series_index(series_id: np.ndarray, intensity: np.ndarray) -> Series:
    """Group rows by ``series_id`` (N,); inside a series, rows ordered by intensity (N,)."""
    ids, inverse = np.unique(series_id, return_inverse=True)
    order = np.lexsort((intensity, inverse))  # by series, then intensity
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return Series(ids=ids, members=np.split(order, bounds))


def to_bin(threshold_db: np.ndarray) -> np.ndarray:
    """dB nHL -> index on the grid 0, 5, ..., 100, no response (0..21); off-grid values round."""
    return np.clip(np.rint(np.asarray(threshold_db, dtype=np.float64) / GRID_STEP_DB), 0, N_THRESHOLD_BINS - 1
                   ).astype(np.int64)


def from_bin(index: np.ndarray) -> np.ndarray:
    return np.asarray(index, dtype=np.float64) * GRID_STEP_DB


def series_truth(series: Series, threshold: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true (threshold dB, type) of each series, read from its first row. A series whose rows
    disagree is a data error (threshold and type are properties of the ear, not of a recording)."""
    for s, rows in zip(series.ids, series.members, strict=True):
        if np.ptp(threshold[rows]) > 0 or np.ptp(label[rows]) > 0:
            found = f"thresholds {sorted(set(threshold[rows].tolist()))}, types {sorted(set(label[rows].tolist()))}"
            raise ValueError(f"series {s}: expected one threshold and one type across its recordings, found {found}")
    first = series.first_rows()
    return threshold[first].astype(np.float64), label[first].astype(np.int64)


# ------------------------------------------------------------------------------------------------
# the rule


def rule_threshold(intensity: np.ndarray, detected: np.ndarray, consistency: float = 0.9) -> float:
    """The audiologist's rule on one series: the lowest level L at which wave V is detected (in at
    least half of the recordings at L) and from which at least ``consistency`` of the recordings at
    L and above are detected; ``NO_RESPONSE_DB`` when no level qualifies.

    intensity (n,) dB nHL; detected (n,) bool.
    """
    detected = np.asarray(detected, dtype=bool)
    for level in np.unique(intensity):  # ascending: the first level that qualifies is the lowest
        at, above = intensity == level, intensity >= level
        if detected[at].mean() >= 0.5 and detected[above].mean() >= consistency:
            return float(level)
    return NO_RESPONSE_DB


def rule_thresholds(series: Series, intensity: np.ndarray, peak_prob: np.ndarray,
                    consistency: float = 0.9) -> np.ndarray:
    """:func:`rule_threshold` per series over the per-recording wave V probabilities (S,)."""
    detected = peak_prob >= DETECTION_P
    return np.array([rule_threshold(intensity[m], detected[m], consistency) for m in series.members])


def head_mean_thresholds(series: Series, threshold_pred: np.ndarray) -> np.ndarray:
    """Baseline: the per-recording threshold head averaged over the series, snapped to the grid (S,)."""
    return from_bin(to_bin([threshold_pred[m].mean() for m in series.members]))


def evidence_proba(series: Series, proba: np.ndarray) -> np.ndarray:
    """Per-recording class evidence summed per series (sum of log-probabilities), normalized (S K): the
    recordings taken as independent witnesses, so the result is sharper than any one of them."""
    logp = np.log(np.clip(proba, 1e-12, 1.0))
    summed = np.stack([logp[m].sum(axis=0) for m in series.members])  # (S K)
    e = np.exp(summed - summed.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def evidence_types(series: Series, proba: np.ndarray) -> np.ndarray:
    """Baseline: the argmax of :func:`evidence_proba` (S,)."""
    return evidence_proba(series, proba).argmax(axis=1).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# metrics with intervals


@dataclass
class Estimate:
    value: float
    low: float  # 95 % bootstrap interval over series (percentile)
    high: float

    def to_dict(self) -> dict[str, Any]:
        """The form metrics.json and clinical.json keep (data.jsonable.to_jsonable writes it)."""
        return {"value": self.value, "ci": [self.low, self.high]}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(stat: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """``stat(index)`` on all n units, and its 95 % percentile interval over ``n_boot`` resamples of
    the units with replacement (Efron & Tibshirani 1993, ch. 13). Resamples where the statistic is
    undefined (NaN, e.g. a class absent from the resample) are left out of the interval."""
    value = float(stat(np.arange(n)))
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return Estimate(value, float("nan"), float("nan"))
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(value, float(low), float(high))


def jackknife(stat: Callable[[np.ndarray], float], n: int) -> Estimate:
    """``stat(index)`` on all n units, and the 95 % normal interval value +- 1.96 SE with the
    delete-one jackknife SE = sqrt((n-1)/n sum_i (theta_(i) - mean)^2) (Efron & Tibshirani 1993,
    ch. 11). For statistics that resampling with replacement biases: duplicated rows shrink a
    covariance (Fréchet distance) and fool leave-one-out model selection; leaving a unit out does neither."""
    value = float(stat(np.arange(n)))
    if n < 2:
        return Estimate(value, float("nan"), float("nan"))
    loo = np.array([stat(np.delete(np.arange(n), i)) for i in range(n)], dtype=np.float64)  # (n)
    if not np.isfinite(loo).all():
        return Estimate(value, float("nan"), float("nan"))
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    return Estimate(value, value - 1.96 * se, value + 1.96 * se)


def threshold_metrics(true_db: np.ndarray, pred_db: np.ndarray, *, n_boot: int = 1000, seed: int = 0
                      ) -> dict[str, Estimate]:
    """Series thresholds (S,) in dB, "no response" as NO_RESPONSE_DB. MAE (dB), exact on the grid,
    within ±5 / ±10 dB (shares), and no-response detection: sensitivity (true NR called NR) and
    specificity (a response called a response)."""
    t, p = to_bin(true_db), to_bin(pred_db)
    err = np.abs(from_bin(p) - from_bin(t))  # (S,) dB
    nr_t, nr_p = t == N_THRESHOLD_BINS - 1, p == N_THRESHOLD_BINS - 1

    def share(mask: np.ndarray, among: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda i: float(mask[i][among[i]].mean()) if among[i].any() else float("nan")

    everyone = np.ones(len(t), dtype=bool)
    stats = {
        "mae_db": lambda i: float(err[i].mean()),
        "exact": share(err == 0, everyone),
        "within_5db": share(err <= 5, everyone),
        "within_10db": share(err <= 10, everyone),
        "no_response_sensitivity": share(nr_p, nr_t),
        "no_response_specificity": share(~nr_p, ~nr_t),
    }
    return {k: bootstrap(f, len(t), n_boot=n_boot, seed=seed) for k, f in stats.items()}


def type_metrics(true: np.ndarray, pred: np.ndarray, n_classes: int, *, n_boot: int = 1000, seed: int = 0
                 ) -> dict[str, object]:
    """Series types (S,): macro-F1 and balanced accuracy over the classes present in ``true``,
    recall per class (each with an interval), and the confusion matrix (rows true, columns predicted)."""
    from sklearn.metrics import confusion_matrix, f1_score  # here: prediction imports this module, not sklearn

    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    present = np.unique(true)

    def macro_f1(i: np.ndarray) -> float:
        return float(f1_score(true[i], pred[i], labels=present, average="macro", zero_division=0))

    def recall(k: int) -> Callable[[np.ndarray], float]:
        return lambda i: float((pred[i] == k)[true[i] == k].mean()) if (true[i] == k).any() else float("nan")

    def balanced(i: np.ndarray) -> float:
        return float(np.nanmean([recall(int(k))(i) for k in present]))

    out: dict[str, object] = {
        "macro_f1": bootstrap(macro_f1, len(true), n_boot=n_boot, seed=seed),
        "balanced_accuracy": bootstrap(balanced, len(true), n_boot=n_boot, seed=seed),
        "recall": {int(k): bootstrap(recall(int(k)), len(true), n_boot=n_boot, seed=seed) for k in present},
        "support": {int(k): int((true == k).sum()) for k in present},
        "confusion": confusion_matrix(true, pred, labels=list(range(n_classes))).tolist(),
    }
    return out


def wave_v_metrics(series: Series, peak_mask: np.ndarray, peak_prob: np.ndarray, latency_true: np.ndarray,
                   latency_pred: np.ndarray, tolerances_ms: Sequence[float] = LATENCY_TOLERANCES_MS, *,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """Per recording, resampled by series: detection F1 (wave V present vs p >= DETECTION_P), and
    the share of marked peaks whose latency estimate lies within each tolerance (ms)."""
    return _per_recording(series, peak_mask, peak_prob, peak_mask, np.abs(latency_pred - latency_true), None,
                          tolerances_ms, n_boot=n_boot, seed=seed)


def wave_metrics(series: Series, present: np.ndarray, prob: np.ndarray, latency_true: np.ndarray,
                 latency_pred: np.ndarray, amplitude_true: np.ndarray, amplitude_pred: np.ndarray,
                 tolerances_ms: Sequence[float] = LATENCY_TOLERANCES_MS, *, n_boot: int = 1000, seed: int = 0
                 ) -> dict[str, Estimate]:
    """One wave per recording (N,), resampled by series: detection F1 (present vs p >= DETECTION_P);
    over the peaks marked inside the stored window (latency < MARK_LIMIT_MS), the share of latency
    estimates within each tolerance (ms), the amplitude MAE (µV) and the latency correlation ``latency_r``
    (Pearson, estimate against mark); ``n_marked`` counts them."""
    from data.waveform import MARK_LIMIT_MS

    scored = present & (np.nan_to_num(latency_true, nan=np.inf) < MARK_LIMIT_MS)
    out = _per_recording(series, present, prob, scored, np.abs(latency_pred - latency_true),
                         np.abs(amplitude_pred - amplitude_true), tolerances_ms, n_boot=n_boot, seed=seed,
                         latency_pairs=(latency_true, latency_pred))
    out["n_marked"] = int(scored.sum())
    return out


def _per_recording(series: Series, present: np.ndarray, prob: np.ndarray, scored: np.ndarray,
                   latency_err: np.ndarray, amplitude_err: np.ndarray | None, tolerances_ms: Sequence[float], *,
                   n_boot: int, seed: int, latency_pairs: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> dict[str, Estimate]:
    """Detection F1 over every recording; latency within each tolerance and the amplitude MAE (when
    given) over the ``scored`` ones (N,) each; bootstrap over series."""
    from sklearn.metrics import f1_score

    detected = prob >= DETECTION_P

    def rows(i: np.ndarray) -> np.ndarray:
        return np.concatenate([series.members[j] for j in i])

    def f1(i: np.ndarray) -> float:
        r = rows(i)
        return float(f1_score(present[r], detected[r], zero_division=0))

    def over_scored(values: np.ndarray, tol: float | None = None) -> Callable[[np.ndarray], float]:
        def stat(i: np.ndarray) -> float:
            r = rows(i)
            r = r[scored[r]]
            if not len(r):
                return float("nan")
            return float((values[r] <= tol).mean()) if tol is not None else float(values[r].mean())
        return stat

    out = {"detection_f1": bootstrap(f1, len(series), n_boot=n_boot, seed=seed)}
    for tol in tolerances_ms:
        out[f"latency_within_{tol:g}ms"] = bootstrap(over_scored(latency_err, tol), len(series), n_boot=n_boot,
                                                       seed=seed)
    if amplitude_err is not None:
        out["amplitude_mae_uv"] = bootstrap(over_scored(amplitude_err), len(series), n_boot=n_boot, seed=seed)
    if latency_pairs is not None:  # Pearson r of estimate and mark over the scored peaks
        true, pred = latency_pairs

        def r(i: np.ndarray) -> float:
            rows_ = rows(i)
            rows_ = rows_[scored[rows_]]
            a, b = true[rows_], pred[rows_]
            if len(rows_) < 3 or a.std() == 0 or b.std() == 0:  # undefined: no spread to correlate
                return float("nan")
            return float(np.corrcoef(a, b)[0, 1])

        out["latency_r"] = bootstrap(r, len(series), n_boot=n_boot, seed=seed)
    return out


def latency_intensity_slopes(series: Series, intensity: np.ndarray, latency: np.ndarray, detected: np.ndarray
                             ) -> np.ndarray:
    """Per series (S,): the least-squares slope of wave V latency on intensity (ms/dB) over its
    detected recordings at two or more levels; NaN where fewer. Clinically: conductive loss shifts the
    latency-intensity function to the right, sensorineural loss steepens it near threshold."""
    out = np.full(len(series), np.nan)
    for s, rows in enumerate(series.members):
        r = rows[detected[rows]]
        if len(np.unique(intensity[r])) >= 2:
            out[s] = np.polyfit(intensity[r].astype(np.float64), latency[r].astype(np.float64), 1)[0]
    return out


def waterfall_presence(series: Series, intensity: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """A wave's presence read down the waterfall, as a clinician reads it: within each series the
    probability is made non-decreasing in level (isotonic regression of the per-recording probabilities
    on intensity, sklearn), since a response seen at 40 dB is there at 60 dB and one missing at 60 dB
    is doubtful at 40 dB. (N,) -> (N,). The per-recording probability stays the network's answer about
    one waveform (blind to the level); this reading uses the levels only to order a series' recordings."""
    from sklearn.isotonic import IsotonicRegression

    out = np.asarray(prob, np.float64).copy()
    for rows in series.members:
        if len(np.unique(intensity[rows])) >= 2:
            out[rows] = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0).fit_transform(
                intensity[rows].astype(np.float64), out[rows])
    return out


# Reading latencies down the waterfall (waterfall_latency), chosen on a development cohort (400 patients,
# generator seed 777; neither a training nor the benchmark cohort; run logs/clinical_v7s): docs/waves.md.
WATERFALL_SIGMA_MS = 0.3  # the prior's width about the series' trend (0.2 and 0.5 within 0.5 points)
WATERFALL_TREND_P = 0.7  # the recordings the trend is fitted on: wave probability at least this
WATERFALL_OUTLIER_MS = 0.6  # fit, drop residuals beyond this (wrong peaks are off by ~0.85 ms), refit
WATERFALL_PASSES = 2  # the trend refitted on the first pass's re-read latencies, then read again


def latency_trend(level: np.ndarray, latency: np.ndarray, outlier_ms: float = WATERFALL_OUTLIER_MS
                  ) -> Callable[[np.ndarray], np.ndarray] | None:
    """A series' latency-intensity function from its recordings' latencies (n,) at ``level`` (n,) dB:
    least squares, quadratic in level (linear with two distinct levels, constant with one), refitted
    twice without the recordings more than ``outlier_ms`` off it. None with fewer than 3 recordings
    or fewer inliers than parameters + 1. The quadratic is evaluated outside the fitted levels as well."""
    if len(latency) < 3:
        return None
    degree = min(2, len(np.unique(level)) - 1)

    def design(lv: np.ndarray) -> np.ndarray:
        return np.vander((np.asarray(lv, np.float64) - 50.0) / 50.0, degree + 1, increasing=True)  # (n degree+1)

    keep = np.ones(len(latency), dtype=bool)
    for _ in range(3):
        if keep.sum() < degree + 2:
            return None
        beta = np.linalg.lstsq(design(level[keep]), latency[keep], rcond=None)[0]
        keep = np.abs(latency - design(level) @ beta) <= outlier_ms
    return lambda lv: design(lv) @ beta


def waterfall_latency(series: Series, intensity: np.ndarray, prob: np.ndarray, cand_latency: np.ndarray,
                      cand_amplitude: np.ndarray, cand_logp: np.ndarray, sigma_ms: float = WATERFALL_SIGMA_MS
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One wave's latency read down the waterfall, as a clinician traces a wave from level to level:
    within each series a smooth latency-intensity function is fitted to the clearly present
    recordings' latencies (:func:`latency_trend`), and each recording's answer becomes the candidate
    peak (ABRNet.read_candidates) that is most likely under the map times a Gaussian prior of
    ``sigma_ms`` about the function at its level. Where a series has too few clear recordings the
    network's answer (candidate 0) stays. The per-recording answer remains the network's reading of one
    waveform (blind to the level); this reading uses the levels only to relate a series' recordings.
    intensity, prob (N,); cand_* (N M) -> latency (ms), amplitude (µV), each (N,)."""
    latency = cand_latency[:, 0].astype(np.float64)
    pick = np.zeros(len(latency), dtype=np.int64)
    for _ in range(WATERFALL_PASSES):
        for rows in series.members:
            clear = rows[prob[rows] >= WATERFALL_TREND_P]
            trend = latency_trend(intensity[clear], latency[clear])
            if trend is not None:
                prior = -0.5 * ((cand_latency[rows] - trend(intensity[rows])[:, None]) / sigma_ms) ** 2  # (n M)
                pick[rows] = np.argmax(cand_logp[rows] + prior, axis=1)
        latency = np.take_along_axis(cand_latency, pick[:, None], axis=1)[:, 0].astype(np.float64)
    return latency, np.take_along_axis(cand_amplitude, pick[:, None], axis=1)[:, 0]


def flatten(metrics: dict[str, object], prefix: str) -> dict[str, float]:
    """{"a": Estimate, "b": {"c": Estimate}} -> {"prefix/a": value, "prefix/b/c": value}: the point
    values only, for scalar logs (TensorBoard, W&B, metrics.jsonl)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Estimate):
            out[name] = value.value
        elif isinstance(value, dict):
            out.update(flatten(value, name))
    return out
