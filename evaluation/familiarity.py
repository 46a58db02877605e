"""Is an input like the training data? A verdict per recording and per series, from the run's own statistics.

Each recording is described by a few features, each compared with the run's training recordings:

- ``amplitude``: log10 of the RMS (µV, mean removed); a scalp ABR is a fraction of a µV, a CAP tens;
- ``band_<lo>_<hi>``: log10 of the share of power in five bands (0-300, 300-1000, 1000-2000, 2000-4000,
  4000-10000 Hz): white noise, a hold-and-repeat resampling or mains pick-up move power between bands;
- ``denoise_<sigma>``: log10 of the network's own x0 error at fixed noise levels sigma = 0.3, 0.6, 0.9
  (one fixed noise draw per level, so every recording meets the same noise). A diffusion model denoises
  well what it was trained on: its denoising error is a learned familiarity score (cf. Graham et al. 2023,
  "Denoising diffusion models for out-of-distribution detection");
- ``feature_distance``: log10(1 + squared Mahalanobis distance) of the network's per-recording evidence
  vector (pooled features and head answers, :func:`models.series.recording_evidence`) to the training
  recordings' (Ledoit-Wolf covariance; Lee et al. 2018 use the same distance on a classifier's features).

Fitting (:func:`fit_familiarity`): the median and a robust spread (IQR / 1.349) of each feature over
training recordings; on the VALIDATION split, each feature's 99th percentile of |z| (``cap``: it puts the
features on one scale), then the quantiles of the recording score (max over features of |z| / cap):
``unusual`` above the 95th percentile, ``unlike training data`` above the 99th. A series is judged by its
median recording against the same two thresholds (its typical recording as odd as the validation's
rarest 5 % / 1 %). Static values outside the training split's span make a recording (and
its series) at least ``unusual``; far outside (more than a quarter of the span), ``unlike``.

The fit is saved as ``RUN/familiarity.json`` (``python -m evaluation.trust --run RUN`` writes it, and
training does after its last stage); ``evaluation.predict`` reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.files import load_fit, save_fit
from data.records import RANGES, SAMPLE_RATE_HZ, STATIC_NAMES

FILE = "familiarity.json"
VERDICTS = ("in range", "unusual", "unlike training data")
IN_RANGE, UNUSUAL, UNLIKE = VERDICTS
BANDS_HZ = ((0, 300), (300, 1000), (1000, 2000), (2000, 4000), (4000, 10_001))
NOISE_SIGMAS = (0.3, 0.6, 0.9)
NOISE_SEED = 1234
QUANTILES = (0.95, 0.99)  # of the validation scores: the "unusual" and "unlike" thresholds
CAP_QUANTILE = 0.99  # of each feature's validation |z|
FAR_OUTSIDE = 0.25  # a static value further outside its span than this share of the span: unlike
FEATURES = ("amplitude", *(f"band_{lo}_{hi}" for lo, hi in BANDS_HZ), *(f"denoise_{s:g}" for s in NOISE_SIGMAS),
            "feature_distance")


# ------------------------------------------------------------------------------------------------
# features


def signal_features(signal_uv: np.ndarray) -> np.ndarray:
    """Amplitude and band shares of recordings (N L) in µV -> (N 1+len(BANDS_HZ))."""
    x = signal_uv.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)  # (N L)
    rms = np.sqrt((x**2).mean(axis=1))  # (N,)
    power = np.abs(np.fft.rfft(x, axis=1)) ** 2  # (N L/2+1)
    freqs = np.fft.rfftfreq(x.shape[1], 1.0 / SAMPLE_RATE_HZ)
    total = power[:, 1:].sum(axis=1) + 1e-30
    # floors keep a flat line finite: log10 RMS -6 (1 pV) and band share -4 lie far outside any recording
    shares = [power[:, (freqs >= lo) & (freqs < hi) & (freqs > 0)].sum(axis=1) / total for lo, hi in BANDS_HZ]
    return np.stack([np.log10(rms + 1e-6), *(np.log10(s + 1e-4) for s in shares)], axis=1)


def noise_steps(diffusion: Any) -> list[int]:
    """The diffusion step t whose sigma_t is nearest each of NOISE_SIGMAS."""
    sigma = diffusion.sqrt_one_minus_alphas_cumprod.detach().cpu().double()  # (T,)
    return [int((sigma - s).abs().argmin()) for s in NOISE_SIGMAS]


def denoising_errors(model: Any, diffusion: Any, signal: Any, static: Any, *,
                     batch_size: int = 512, device: Any = "cpu") -> np.ndarray:
    """log10 of the mean squared x0 error of the network on recordings ``signal`` (N 1 L, normalized as the
    run's dataset does) with ``static`` (N 4), at each of NOISE_SIGMAS -> (N len(NOISE_SIGMAS))."""
    import torch

    model.eval()
    if isinstance(diffusion, torch.nn.Module):  # its schedule buffers index t on the model's device
        diffusion = diffusion.to(device)
    steps = noise_steps(diffusion)
    gen = torch.Generator().manual_seed(NOISE_SEED)
    eps = torch.randn(len(steps), 1, 1, signal.shape[-1], generator=gen)  # one draw per level, shared
    out = []
    with torch.no_grad():
        for i in range(0, len(signal), batch_size):
            x0, s = signal[i:i + batch_size].float().to(device), static[i:i + batch_size].float().to(device)
            cols = []
            for k, step in enumerate(steps):
                t = torch.full((len(x0),), step, dtype=torch.int64, device=device)
                x_t = diffusion.q_sample(x0, t, eps[k].to(device).expand_as(x0))  # (B 1 L)
                x0_hat, _ = diffusion.predict_x0_eps(model(x_t, t, s)["signal"].float(), x_t, t)
                cols.append((x0_hat - x0).pow(2).mean(dim=(1, 2)))  # (B,)
            out.append(torch.stack(cols, 1).cpu())
    return np.log10(torch.cat(out).double().numpy() + 1e-12)


def feature_distance(evidence: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """log10(1 + squared Mahalanobis distance) of evidence rows (N F) -> (N,)."""
    d = evidence.astype(np.float64) - mean  # (N F)
    d2 = np.einsum("nf,fg,ng->n", d, precision, d)
    return np.log10(1.0 + np.clip(d2, 0.0, None))


# ------------------------------------------------------------------------------------------------
# the fitted statistics


@dataclass
class Familiarity:
    """What :func:`fit_familiarity` learned from a run's train and validation splits (``FILE``)."""

    features: list[str]
    centre: list[float]  # per feature: training median
    spread: list[float]  # per feature: training IQR / 1.349
    cap: list[float]  # per feature: validation 99th percentile of |z|
    recording_thresholds: list[float]  # [unusual, unlike] on the recording score
    series_thresholds: list[float]  # [unusual, unlike] on the series score
    evidence_mean: list[float]  # (F,)
    evidence_precision: list[list[float]]  # (F F)
    noise_steps: list[int]
    n_train: int
    n_val_recordings: int
    n_val_series: int
    static_min: list[float]
    static_max: list[float]
    noise_sigmas: tuple[float, ...] = NOISE_SIGMAS
    noise_seed: int = NOISE_SEED
    quantiles: tuple[float, ...] = QUANTILES
    val_series_share: list[float] | None = None  # validation series above each series threshold (false alarms)

    def save(self, run_dir: str | Path) -> Path:
        return save_fit(Path(run_dir) / FILE, asdict(self))  # whole or not at all

    @classmethod
    def load(cls, run_dir: str | Path) -> Familiarity | None:
        """The run's fit, or None when the run has none; a file of another shape is a ValueError."""
        path = Path(run_dir) / FILE
        fam = load_fit(cls, path, "a familiarity fit", f"python -m evaluation.trust --run {run_dir}")
        if fam is None:
            return None
        if list(fam.features) != list(FEATURES):
            raise ValueError(f"'{path}': expected features {list(FEATURES)}, found {fam.features}; refit it with "
                             f"python -m evaluation.trust --run {run_dir}")
        return fam

    def z(self, feats: np.ndarray) -> np.ndarray:
        """|z| / cap per feature (N J): 1 = as far from the training median as the validation's 99th percentile."""
        return np.abs(feats - np.asarray(self.centre)) / np.asarray(self.spread) / np.asarray(self.cap)


def robust_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column (N J): median and IQR / 1.349 (the SD for a normal distribution), floored."""
    q25, q50, q75 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
    return q50, np.maximum((q75 - q25) / 1.349, 1e-3)


@dataclass
class Inputs:
    """What the features are computed from, for N recordings."""

    signal_uv: np.ndarray  # (N L) µV, as recorded
    signal: Any  # torch.Tensor (N 1 L) normalized as the run's dataset does
    static: Any  # torch.Tensor (N 4) physical units
    evidence: np.ndarray  # (N F) the network's evidence (training.series.extract)


def features(inp: Inputs, model: Any, diffusion: Any, mean: np.ndarray, precision: np.ndarray, *,
             device: Any = "cpu", batch_size: int = 512) -> np.ndarray:
    """The FEATURES of N recordings -> (N J)."""
    den = denoising_errors(model, diffusion, inp.signal, inp.static, device=device, batch_size=batch_size)
    return np.concatenate([signal_features(inp.signal_uv), den,
                           feature_distance(inp.evidence, mean, precision)[:, None]], axis=1)


def fit_familiarity(model: Any, diffusion: Any, train: Inputs, val: Inputs, val_series: Any,
                    static_span: tuple[list[float], list[float]], *, device: Any = "cpu") -> Familiarity:
    """Fit on ``train`` (a subsample is enough), cap and thresholds on ``val`` (whose series are
    ``val_series``, a training.clinical.Series); ``static_span``: the training split's (min, max) per static value."""
    from sklearn.covariance import LedoitWolf

    cov = LedoitWolf().fit(train.evidence.astype(np.float64))
    mean, precision = cov.location_, cov.precision_
    f_train = features(train, model, diffusion, mean, precision, device=device)
    centre, spread = robust_scale(f_train)
    f_val = features(val, model, diffusion, mean, precision, device=device)
    cap = np.maximum(np.quantile(np.abs(f_val - centre) / spread, CAP_QUANTILE, axis=0), 1e-3)
    fam = Familiarity(list(FEATURES), centre.tolist(), spread.tolist(), cap.tolist(), [0.0, 0.0], [0.0, 0.0],
                      mean.tolist(), precision.tolist(), noise_steps(diffusion), len(f_train), len(f_val),
                      len(val_series), list(static_span[0]), list(static_span[1]))
    rec = fam.z(f_val).max(axis=1)  # (N,)
    fam.recording_thresholds = np.quantile(rec, QUANTILES).tolist()
    # A series is judged by its median recording against the same thresholds: unlike training data when
    # its typical recording is as odd as the validation's rarest 1 %. Quantiles of the few hundred
    # validation series' medians instead sat within a few % of each other (medians vary little), so any
    # small shift between splits raised false alarms.
    fam.series_thresholds = list(fam.recording_thresholds)
    s_val = series_scores(rec, val_series)
    fam.val_series_share = [float((s_val > th).mean()) for th in fam.series_thresholds]
    return fam


def series_scores(recording_score: np.ndarray, series: Any) -> np.ndarray:
    """The median of each series' recording scores (S,): one odd recording does not condemn a series,
    a series whose recordings are all odd is odd."""
    return np.array([float(np.median(recording_score[m])) for m in series.members])


# ------------------------------------------------------------------------------------------------
# verdicts


@dataclass
class Verdicts:
    """Per recording (N) and per series (S): score, verdict (one of VERDICTS) and reason ("" when in range)."""

    score: np.ndarray
    verdict: list[str]
    reason: list[str]
    series_score: np.ndarray
    series_verdict: list[str]
    series_reason: list[str]

    def counts(self, level: str = "series") -> dict[str, int]:
        got = self.series_verdict if level == "series" else self.verdict
        return {v: sum(1 for g in got if g == v) for v in VERDICTS}


def grade(score: float, thresholds: list[float]) -> int:
    """0, 1, 2 for in range, unusual, unlike training data."""
    return int(score > thresholds[0]) + int(score > thresholds[1])


def describe(fam: Familiarity, j: int, value: float) -> str:
    """One feature's value in the reader's units, beside the training median."""
    name, c = fam.features[j], fam.centre[j]
    if name == "amplitude":
        return f"amplitude {10 ** value:.3g} µV RMS (training median {10 ** c:.3g})"
    if name.startswith("band_"):
        lo, hi = name.split("_")[1:]
        return (f"{10 ** value:.1%} of the power at {lo}-{min(int(hi), 10_000)} Hz "
                f"(training median {10 ** c:.1%})")
    if name.startswith("denoise_"):
        return f"the network's denoising error at noise {name[8:]} is {10 ** (value - c):.3g}x the training median"
    return f"the network's features lie {10 ** (value - c):.3g}x as far from the training data as the median"


def static_outside(static: np.ndarray, fam: Familiarity) -> list[tuple[int, str]]:
    """Per recording (N 4): (grade, reason) for its static values outside the training span (0, "" if none)."""
    units = {n: u for n, (_, _, u) in RANGES.items()}
    out = []
    for row in static:
        g, why = 0, []
        for k, name in enumerate(STATIC_NAMES):
            lo, hi, v = fam.static_min[k], fam.static_max[k], float(row[k])
            if lo <= v <= hi:
                continue
            far = max(lo - v, v - hi) > FAR_OUTSIDE * max(hi - lo, 1e-9)
            g = max(g, 2 if far else 1)
            why.append(f"{name} {v:.4g} {units[name]} outside the training span {lo:.4g}-{hi:.4g}")
        out.append((g, "; ".join(why)))
    return out


def judge(fam: Familiarity, feats: np.ndarray, static: np.ndarray, series: Any) -> Verdicts:
    """Verdicts for N recordings with features ``feats`` (N J) and ``static`` (N 4), grouped by ``series``."""
    z = fam.z(feats)  # (N J)
    score = z.max(axis=1)
    stat = static_outside(static, fam)
    verdict, reason = [], []
    for i in range(len(z)):
        g = grade(score[i], fam.recording_thresholds)
        why = [describe(fam, int(z[i].argmax()), feats[i, z[i].argmax()])] if g else []
        g = max(g, stat[i][0])
        verdict.append(VERDICTS[g])
        reason.append("; ".join(why + ([stat[i][1]] if stat[i][0] else [])))
    s_score = series_scores(score, series)
    s_verdict, s_reason = [], []
    for s, rows in enumerate(series.members):
        g = grade(s_score[s], fam.series_thresholds)
        zs = np.median(z[rows], axis=0)  # (J,) the series' typical departure per feature
        j = int(zs.argmax())
        why = [describe(fam, j, float(np.median(feats[rows, j])))] if g else []
        n_unlike = sum(verdict[r] == UNLIKE for r in rows)
        if n_unlike:
            why.append(f"{n_unlike} of {len(rows)} recordings unlike training data")
        st = max(stat[r][0] for r in rows)
        if st:
            why.append(f"static values outside the training span in {sum(stat[r][0] > 0 for r in rows)} of "
                       f"{len(rows)} recordings")
        s_verdict.append(VERDICTS[max(g, st)])
        s_reason.append("; ".join(why))
    return Verdicts(score, verdict, reason, s_score, s_verdict, s_reason)



def check(fam: Familiarity, inp: Inputs, model: Any, diffusion: Any, series: Any, *, device: Any = "cpu",
          batch_size: int = 512) -> Verdicts:
    """The verdicts of ``fam`` on N new recordings (``series``: their grouping, a training.clinical.Series)."""
    feats = features(inp, model, diffusion, np.asarray(fam.evidence_mean), np.asarray(fam.evidence_precision),
                     device=device, batch_size=batch_size)
    return judge(fam, feats, inp.static.numpy(), series)
