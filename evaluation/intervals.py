"""95 % intervals over PATIENTS for the per-recording tables of an evaluation report.

Recordings of one patient are not independent (about 25 per patient in the synthetic data, one
class and one threshold each): an interval that resamples recordings would be far too narrow. The
unit resampled here is the patient, with all of its recordings (the cluster bootstrap, Davison &
Hinkley 1997, sec. 3.8), with the percentile interval of ``training.clinical.bootstrap``.

A resample is a weight per recording: how often its patient was drawn. Every metric of the tables
is then a weighted sum over recordings, computed for all resamples at once as a (B, N) matrix
product; ``evaluation.metrics`` (scikit-learn) on 1,000 index resamples takes minutes per table on
two CPU cores, this takes a second. With unit weights each function here returns exactly what its
``evaluation.metrics`` counterpart returns (tests/evaluation/test_intervals.py).

Without patient ids (a hand-built split) each recording is its own unit and the report says so.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from evaluation import metrics as M

N_BOOT = 1000
SMALL_N_PATIENTS = 10  # an interval resting on fewer patients than this is flagged


def resample_weights(patient_id: np.ndarray | None, n: int, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(B, N): how many times each recording's patient is drawn in each of ``n_boot`` resamples of
    the patients with replacement. Without ids each recording is its own patient."""
    codes = np.arange(n) if patient_id is None else np.unique(np.asarray(patient_id), return_inverse=True)[1]
    n_p = int(codes.max()) + 1 if n else 0
    draws = np.random.default_rng(seed).integers(0, n_p, (n_boot, n_p))  # (B, P) patients drawn
    counts = np.zeros((n_boot, n_p))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, codes]  # (B, N)


def n_units(patient_id: np.ndarray | None, where: np.ndarray) -> int:
    """Patients (or recordings, without ids) among the recordings selected by the bool mask ``where``."""
    return int(where.sum()) if patient_id is None else len(np.unique(np.asarray(patient_id)[where]))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b with nan where b is 0 (an undefined statistic, left out of the interval)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def weighted_auroc(score: np.ndarray, positive: np.ndarray, W: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` for the bool labels ``positive`` (N) under each weight row of W (B, N): the
    Mann-Whitney form, ties counted 1/2, as sklearn.metrics.roc_auc_score; nan without both labels."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first recording of each distinct score
    pos = np.add.reduceat(W[:, order] * positive[order], starts, axis=1)  # (B, U)
    neg = np.add.reduceat(W[:, order] * ~positive[order], starts, axis=1)  # (B, U)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each score
    return _div(np.sum(pos * (below + 0.5 * neg), axis=1), pos.sum(axis=1) * neg.sum(axis=1))


def class_draws(y: np.ndarray, y_pred: np.ndarray, proba: np.ndarray, n_classes: int, W: np.ndarray
                ) -> dict[str, np.ndarray]:
    """M.class_metrics' numbers per weight row: (B,) scalars, (B, K) per-class lists."""
    K = n_classes
    onehot = np.zeros((len(y), K * K))
    onehot[np.arange(len(y)), y * K + y_pred] = 1.0
    cm = (W @ onehot).reshape(-1, K, K)  # (B, K, K) rows true, columns predicted
    diag, support, predicted = np.diagonal(cm, axis1=1, axis2=2), cm.sum(axis=2), cm.sum(axis=1)
    recall, precision = _div(diag, support), _div(diag, predicted)
    f1 = _div(2 * diag, support + predicted)  # classes in y_true or y_pred, as sklearn's macro average
    auroc = np.stack([weighted_auroc(proba[:, k], y == k, W) for k in range(K)], axis=1)  # (B, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any defined class: nan
        return {"accuracy": _div(diag.sum(axis=1), W.sum(axis=1)),
                "balanced_accuracy": np.nanmean(recall, axis=1), "macro_f1": np.nanmean(f1, axis=1),
                "macro_auroc": np.nanmean(auroc, axis=1), "precision": precision, "recall": recall,
                "auroc_per_class": auroc}


def binary_draws(y: np.ndarray, prob: np.ndarray, W: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """M.binary_metrics' numbers per weight row (B,)."""
    y, y_pred = np.asarray(y).astype(bool), np.asarray(prob) >= threshold
    tp, fp, fn = (W @ (a & b).astype(float) for a, b in ((y, y_pred), (~y, y_pred), (y, ~y_pred)))
    total = W.sum(axis=1)
    return {"f1": np.nan_to_num(_div(2 * tp, 2 * tp + fp + fn), nan=0.0),  # sklearn's zero_division=0
            "auroc": weighted_auroc(np.asarray(prob, dtype=np.float64), y, W),
            "accuracy": _div(W @ (y == y_pred).astype(float), total),
            "positive_rate_pred": _div(W @ y_pred.astype(float), total),
            "positive_rate_true": _div(W @ y.astype(float), total)}


def regression_draws(y: np.ndarray, y_pred: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """M.regression_metrics' numbers per weight row (B,); the population (ddof 0) moments it uses."""
    total = W.sum(axis=1)

    def mean(x: np.ndarray) -> np.ndarray:
        return _div(W @ x, total)

    e = y_pred - y
    my, mp = mean(y), mean(y_pred)
    vy = mean(y**2) - my**2  # (B,)
    vp = mean(y_pred**2) - mp**2
    cov = mean(y * y_pred) - my * mp
    tiny = 1e-12 * (1.0 + my**2)  # a constant column up to rounding
    return {"mae": mean(np.abs(e)), "rmse": np.sqrt(mean(e**2)),
            "pearson_r": _div(cov, np.sqrt(np.clip(vy, 0, None) * np.clip(vp, 0, None)) * (vy > tiny) * (vp > tiny)),
            "r2": 1.0 - _div(mean(e**2), np.where(vy > tiny, vy, 0.0)),
            "pred_std": np.sqrt(np.clip(vp, 0, None)), "true_std": np.sqrt(np.clip(vy, 0, None))}


def interval(draws: np.ndarray) -> list:
    """95 % percentile interval over axis 0 of (B,) -> [low, high], of (B, K) -> K of them; resamples
    where the statistic is undefined (nan) are left out; none left: [nan, nan]."""
    if draws.ndim == 2:
        return [interval(draws[:, k]) for k in range(draws.shape[1])]
    x = draws[np.isfinite(draws)]
    if len(x) == 0:
        return [float("nan"), float("nan")]
    low, high = np.percentile(x, [2.5, 97.5])
    return [float(low), float(high)]


def recording_intervals(col: Any, train: dict[str, np.ndarray], n_classes: int, *, n_boot: int = N_BOOT,
                        seed: int = 0) -> dict[str, Any]:
    """Intervals over patients of every per-recording table (class, wave V existence, the three
    regressions, each denoising level) and of accuracy minus the majority baseline's.

    ``col``: evaluation.collect.Collected; ``train``: the train split's labels (``collect_train_targets``)."""
    W = resample_weights(col.patient_id, len(col.label), n_boot=n_boot, seed=seed)  # (B, N)

    def ci(draws: dict[str, np.ndarray]) -> dict[str, Any]:
        return {k: interval(v) for k, v in draws.items()}

    majority, _ = M.majority_class_baseline(train["label"], n_classes)
    out: dict[str, Any] = {
        "class": ci(class_draws(col.label, col.pred, col.proba, n_classes, W)),
        "accuracy_minus_majority": interval(_div(W @ ((col.pred == col.label).astype(float)
                                                      - (col.label == majority)), W.sum(axis=1))),
        "peak_exist": ci(binary_draws(col.peak_mask, col.peak_prob, W)),
    }
    every = np.ones(len(col.label), dtype=bool)
    for task, y, y_pred, mask in (("peak_latency", col.latency_true, col.latency_pred, col.peak_mask),
                                  ("peak_amplitude", col.amplitude_true, col.amplitude_pred, col.peak_mask),
                                  ("threshold", col.threshold_true, col.threshold_pred, every)):
        out[task] = ci(regression_draws(y[mask], y_pred[mask], W[:, mask]))
    out["denoising"] = [ci({k: _div(W @ v, W.sum(axis=1)) for k, v in
                            M.signal_per_recording(col.signal, lv.estimate, lv.noisy).items()}) for lv in col.levels]
    return out


def cell(value: float, ci: list[float] | None, digits: int = 3) -> str:
    """``0.785 [0.741, 0.823]``; the bare value where there is no interval; "n/a" for nan."""
    def f(x: float | None) -> str:
        return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"

    if not ci or ci[0] is None or not np.isfinite(ci[0]):
        return f(value)
    return f"{f(value)} [{f(ci[0])}, {f(ci[1])}]"
