"""Calibrated probabilities and intervals: temperature scaling fitted on the validation split, and the
measures that check it (expected calibration error, reliability diagrams, interval coverage).

Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks", sec. 4.2): one scalar
T per answer, p = softmax(log p_raw / T), T minimizing the negative log-likelihood on the validation split.
A temperature leaves every argmax (and so every headline number) unchanged; the per-recording class biases
below may move a single recording's most probable class, never a per-series answer. Fitted separately for

- ``recording``: the class head's per-recording probabilities, with a bias per class beside the temperature,
  p = softmax(log p_raw / T + b) (Guo et al.'s vector scaling with one shared scale). The head is trained with
  class weights (loss.class_weights) and, in the synthetic recipe, beside catch sessions labelled TOTAL, so
  its probabilities over-state the rare classes and TOTAL against a clinic's mix; the biases are the prior
  correction (Saerens et al. 2002, "Adjusting the outputs of a classifier to new a priori probabilities").
  Unlike the temperature they can change a recording's most probable class: on a development cohort (400
  patients, seed 777) per-recording accuracy rose from 0.678 to 0.795 and top-label ECE fell from 0.037 to
  0.009 (the temperature alone: 0.037 whatever the rows it was fitted on);
- ``evidence_sum``: the per-recording evidence summed over a series (training.clinical.evidence_proba).
  The sum treats the ~25 recordings of a series as independent witnesses, which they are not (one ear,
  one patient): T > 1 undoes that overconfidence, as if the series held 25 / T independent recordings;
- ``series_model``: the series model's type probabilities;
- ``threshold``: the series model's distribution over the threshold grid, from which the 10-90 % interval
  is read. Its only use is that interval, so its T is not the NLL's: it is the T whose interval holds the
  truth in 80 % of the validation series (:func:`fit_interval_temperature`). The NLL's T left the
  interval far too wide (97 % coverage): the series model is trained against a smoothed target (a 5 dB
  miss costs less than a 30 dB one), which spreads its distribution by design. Coverage is checked on
  held-out series.

Every fit reads the validation split's clinical series only: a synthetic run's catch sessions (noise labelled
TOTAL, docs/data.md 1.7; 11 % of the clinical recipe's validation recordings) are a training device, not a
mix a clinic records (``fit_calibration(catch_sessions=True)``).

ECE (Naeini et al. 2015; Guo et al. 2017 eq. 3): 15 equal-width bins of the top-label confidence, the
mean |accuracy - confidence| weighted by the bin's share. The fit is saved as ``RUN/calibration.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from data.files import load_fit, save_fit

FILE = "calibration.json"
N_BINS = 15
NOMINAL_COVERAGE = 0.8  # the 10-90 % interval


def log_proba(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(proba, 1e-12, 1.0))


def softmax_t(logits: np.ndarray, T: float) -> np.ndarray:
    """softmax(logits / T) over the last axis (… K)."""
    z = logits / T
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, T: float) -> float:
    p = softmax_t(logits, T)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """argmin_T NLL(softmax(logits / T), y) over T in [0.05, 100] (a bounded search on log T)."""
    from scipy.optimize import minimize_scalar

    if len(y) == 0:
        raise ValueError("temperature: expected labelled validation rows, found 0")
    res = minimize_scalar(lambda u: nll(logits, y, float(np.exp(u))), bounds=(np.log(0.05), np.log(100.0)),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def fit_temperature_bias(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """argmin over (T, b) of NLL(softmax(logits / T + b), y): a temperature in [0.05, 100] and a bias per
    class (K,), the first class's fixed at 0 (softmax ignores a common shift)."""
    from scipy.optimize import minimize

    if len(y) == 0:
        raise ValueError("temperature: expected labelled validation rows, found 0")
    K = logits.shape[-1]

    def loss(theta: np.ndarray) -> float:
        b = np.r_[0.0, theta[1:]]
        return nll(logits + b * np.exp(theta[0]), y, float(np.exp(theta[0])))  # (logits + b T) / T = logits / T + b

    start = np.r_[np.log(fit_temperature(logits, y)), np.zeros(K - 1)]
    res = minimize(loss, start, method="L-BFGS-B", bounds=[(np.log(0.05), np.log(100.0))] + [(-20.0, 20.0)] * (K - 1))
    return float(np.exp(res.x[0])), np.r_[0.0, res.x[1:]]


def fit_interval_temperature(logits: np.ndarray, truth_db: np.ndarray, target: float = NOMINAL_COVERAGE) -> float:
    """The T in [0.02, 5] (a log grid of 200) whose 10-90 % interval of softmax(logits / T) (S 22) covers
    ``truth_db`` (S,) in the share of series nearest ``target``; among equally near ones the widest
    (largest T). On the 5 dB grid coverage moves in steps, so it is met as closely as the grid allows."""
    if len(truth_db) == 0:
        raise ValueError("interval temperature: expected labelled validation series, found 0")
    grid = np.exp(np.linspace(np.log(0.02), np.log(5.0), 200))
    cov = np.array([covered(truth_db, *interval_from_proba(softmax_t(logits, T))).mean() for T in grid])
    gap = np.abs(cov - target)
    return float(grid[np.flatnonzero(gap <= gap.min() + 1e-12)[-1]])


def reliability(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of the top-label confidence: mean confidence, accuracy, count (each (n_bins,))."""
    conf, correct = proba.max(axis=1), (proba.argmax(axis=1) == y).astype(np.float64)
    b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)  # (N,) bins (k/n, (k+1)/n]
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"confidence": np.bincount(b, conf, n_bins) / count, "accuracy": np.bincount(b, correct, n_bins) / count,
                "count": count}


def ece(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    r = reliability(proba, y, n_bins)
    used = r["count"] > 0
    gap = np.abs(r["accuracy"][used] - r["confidence"][used])
    return float((gap * r["count"][used]).sum() / max(r["count"].sum(), 1.0))


def interval_from_proba(proba: np.ndarray, low: float = 0.1, high: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The ``low``-``high`` quantiles (dB) of distributions over the threshold grid (S 22)."""
    from training.clinical import N_THRESHOLD_BINS, from_bin

    cdf = proba.cumsum(axis=1)
    q = [np.minimum((cdf < p).sum(axis=1), N_THRESHOLD_BINS - 1) for p in (low, high)]
    return from_bin(q[0]), from_bin(q[1])


def covered(truth_db: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per series: does [low, high] hold the truth (on the 5 dB grid; "no response" its top bin)."""
    from training.clinical import from_bin, to_bin

    t = from_bin(to_bin(truth_db))
    return (t >= low) & (t <= high)


# ------------------------------------------------------------------------------------------------
# the fitted temperatures


@dataclass
class Calibration:
    """Temperatures (and the per-recording class biases) fitted on a run's validation split (``FILE``); 1.0 and
    no biases leave an answer as it was."""

    recording: float = 1.0
    recording_bias: list[float] | None = None  # (K,) added after the temperature; None: 0 (a fit saved before it)
    evidence_sum: float = 1.0
    series_model: float | None = None  # None: the run has no series model
    threshold: float | None = None
    n_val_recordings: int = 0
    n_val_series: int = 0
    val: dict[str, float] = field(default_factory=dict)  # ECE and coverage on val before/after, for the record

    def save(self, run_dir: str | Path) -> Path:
        return save_fit(Path(run_dir) / FILE, asdict(self), indent=1)

    @classmethod
    def load(cls, run_dir: str | Path) -> Calibration | None:
        return load_fit(cls, Path(run_dir) / FILE, "a calibration", f"python -m evaluation.trust --run {run_dir}")


@dataclass
class Raw:
    """The uncalibrated answers that calibration acts on, for N recordings in S series."""

    recording: np.ndarray  # (N K) class probabilities
    evidence_sum: np.ndarray  # (S K) summed log-probabilities (unnormalized logits)
    series_model: np.ndarray | None  # (S K) log type probabilities
    threshold: np.ndarray | None  # (S 22) log threshold probabilities


def raw_answers(ev: Any, series_net: Any | None) -> tuple[Any, Raw]:
    """The series of ``ev`` (a training.series.Evidence) and its uncalibrated answers."""
    from training.clinical import series_index
    from training.series import SeriesSet, predict

    series = series_index(ev.series_id, ev.static[:, 1])
    logp = log_proba(ev.proba)
    summed = np.stack([logp[m].sum(axis=0) for m in series.members])  # (S K), as evidence_proba sums
    sm = thr = None
    if series_net is not None:
        p = predict(series_net, SeriesSet(ev, **series_net.reads()))
        sm, thr = log_proba(p["type_proba"]), log_proba(p["threshold_proba"])
    return series, Raw(ev.proba, summed, sm, thr)


def fit_calibration(ev: Any, series_net: Any | None, *, catch_sessions: bool = False) -> Calibration:
    """Temperatures (and the recording's biases) on the validation split's evidence ``ev`` (labelled), and val
    ECE/coverage before and after; ``catch_sessions``: ``ev`` is a synthetic run's, whose catch sessions are
    left out (module docstring)."""
    from data.synthetic import catch_session_rows
    from training.clinical import series_truth

    if catch_sessions:
        ev = ev.take(np.flatnonzero(~catch_session_rows(ev.series_id, ev.patient_id)))
    series, raw = raw_answers(ev, series_net)
    truth_db, truth_type = series_truth(series, ev.truth["threshold"], ev.truth["label"])
    y = ev.truth["label"].astype(np.int64)
    T, bias = fit_temperature_bias(log_proba(raw.recording), y)
    cal = Calibration(recording=T, recording_bias=bias.tolist(),
                      evidence_sum=fit_temperature(raw.evidence_sum, truth_type),
                      n_val_recordings=len(y), n_val_series=len(series))
    if raw.series_model is not None:
        cal.series_model = fit_temperature(raw.series_model, truth_type)
        cal.threshold = fit_interval_temperature(raw.threshold, truth_db)
    cal.val = {k: v.value for k, v in calibration_metrics(ev, series_net, cal, n_boot=0).items()
               if hasattr(v, "value")}
    return cal


def calibrated(raw: Raw, cal: Calibration) -> Raw:
    """The answers after temperature scaling (the per-recording ones with their class biases), as
    probabilities (the threshold's too)."""
    bias = np.zeros(raw.recording.shape[-1]) if cal.recording_bias is None else np.asarray(cal.recording_bias)
    return Raw(softmax_t(log_proba(raw.recording) + bias * cal.recording, cal.recording),
               softmax_t(raw.evidence_sum, cal.evidence_sum),
               None if raw.series_model is None else softmax_t(raw.series_model, cal.series_model or 1.0),
               None if raw.threshold is None else softmax_t(raw.threshold, cal.threshold or 1.0))


def uncalibrated(raw: Raw) -> Raw:
    return calibrated(raw, Calibration(series_model=1.0, threshold=1.0))


def apply(ev: Any, answers: Any, raw: Raw, cal: Calibration | None) -> tuple[Any, Any]:
    """``ev`` and ``answers`` (training.series.SeriesAnswers) with calibrated type probabilities and the
    threshold interval read from the calibrated distribution (the median threshold is left as it was);
    unchanged when ``cal`` is None."""
    if cal is None:
        return ev, answers
    c = calibrated(raw, cal)
    types = dict(answers.types) | {"evidence_sum": c.evidence_sum, "rule": c.evidence_sum}
    interval = answers.interval
    if c.series_model is not None:
        types["series_model"] = c.series_model
        interval = interval_from_proba(c.threshold)
    return replace(ev, proba=c.recording), replace(answers, types=types, interval=interval)


# ------------------------------------------------------------------------------------------------
# measuring


def calibration_metrics(ev: Any, series_net: Any | None, cal: Calibration | None, *, n_boot: int = 1000,
                        seed: int = 0) -> dict[str, Any]:
    """ECE (15 bins) per recording and per series type method, and the threshold interval's coverage
    (nominal 80 %), each before (``raw/``) and after (``calibrated/``) temperature scaling, with 95 %
    bootstrap intervals (over recordings for the per-recording ECE, over series otherwise)."""
    from training.clinical import bootstrap, series_truth

    series, raw = raw_answers(ev, series_net)
    truth_db, truth_type = series_truth(series, ev.truth["threshold"], ev.truth["label"])
    y = ev.truth["label"].astype(np.int64)
    kw = {"n_boot": n_boot, "seed": seed}
    out: dict[str, Any] = {}
    versions = {"raw": uncalibrated(raw)} | ({"calibrated": calibrated(raw, cal)} if cal is not None else {})
    for name, r in versions.items():
        out[f"{name}/recording_ece"] = bootstrap(lambda i, r=r: ece(r.recording[i], y[i]), len(y), **kw)
        out[f"{name}/evidence_sum_ece"] = bootstrap(lambda i, r=r: ece(r.evidence_sum[i], truth_type[i]),
                                                    len(series), **kw)
        if r.series_model is not None:
            out[f"{name}/series_model_ece"] = bootstrap(lambda i, r=r: ece(r.series_model[i], truth_type[i]),
                                                        len(series), **kw)
            hit = covered(truth_db, *interval_from_proba(r.threshold)).astype(np.float64)
            out[f"{name}/threshold_coverage"] = bootstrap(lambda i, h=hit: float(h[i].mean()), len(series), **kw)
    out["reliability"] = {f"{name}/{k}": reliability(getattr(r, k), y if k == "recording" else truth_type)
                          for name, r in versions.items() for k in ("recording", "evidence_sum", "series_model")
                          if getattr(r, k) is not None}
    return out


def markdown(m: dict[str, Any]) -> list[str]:
    """The report section: ECE and coverage before and after temperature scaling."""
    rows = [("recording_ece", "type ECE per recording (15 bins)"),
            ("evidence_sum_ece", "type ECE per series, summed evidence"),
            ("series_model_ece", "type ECE per series, series model"),
            ("threshold_coverage", f"threshold 10-90 % interval coverage (nominal {NOMINAL_COVERAGE:.0%})")]
    lines = ["## Calibration (95 % bootstrap intervals)", "",
             "| measure | raw | temperature-scaled on val |", "|---|---|---|"]
    for key, label in rows:
        if f"raw/{key}" in m:
            after = m.get(f"calibrated/{key}")
            lines.append(f"| {label} | {m[f'raw/{key}']} | {after if after is not None else 'no calibration.json'} |")
    return lines + [""]


def plot_reliability(rel: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """Reliability diagrams: accuracy against confidence per bin, one panel per answer, raw and calibrated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k.split("/", 1)[1] for k in rel})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        n = 0
        for version, style in (("raw", "o-"), ("calibrated", "s-")):
            r = rel.get(f"{version}/{kind}")
            if r is not None:
                used = r["count"] > 0
                n = int(r["count"].sum())
                # ECE from the bins drawn: the count-weighted gap between accuracy and confidence
                ece = float((r["count"][used] * np.abs(r["accuracy"][used] - r["confidence"][used])).sum() / max(n, 1))
                ax.plot(r["confidence"][used], r["accuracy"][used], style, ms=4, label=f"{version} (ECE {ece:.3f})")
        ax.set(title=f"{kind.replace('_', ' ')} (n = {n})", xlabel="confidence (top class probability)",
               ylabel="accuracy (share correct)", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
