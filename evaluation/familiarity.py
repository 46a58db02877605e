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
rarest 5 % / 1 %), and by what only a whole series shows (SERIES_FEATURES, the same recipe fitted on
whole training and validation series):

- ``median_<feature>``: each feature's median over the series' recordings, against the training series'
  medians. A series' median varies far less than single recordings do, so a series ten times too large
  stands out where its recordings, one by one, are as large as a loud patient's (bench/ood.py: x10 series
  flagged 76 % by the median recording alone);
- the **time direction** (its own check): does the series run forwards in time? A response does (each
  wave's trough follows its peak, waves I to V in order); no amplitude, spectrum or denoising error sees
  the order. The network reads each recording as recorded and played backwards; a logistic regression
  without intercept on the difference of its two evidence vectors, fitted on the training recordings
  (each run forwards, each reversed copy backwards: labels for free), gives each recording a log-odds that
  it runs forwards (antisymmetric: reversing a recording flips its sign). A series' direction is the mean
  over its DIRECTION_TOP recordings of largest |log-odds| (most recordings of a series are below threshold
  and say nothing about direction); pure noise scores about 0, and only a series read more backwards than
  forwards (log-odds below 0) can be flagged.

- the **gain**: how much louder than the training series a series' median amplitude is (signed, on the series
  medians' scale), on its own. The ten-feature maximum dilutes it (a quiet patient's series ten times too
  large stays inside the maximum's thresholds, which the ten features together set), and a gain or unit
  error only ever shows in the amplitude (bench/ood.py on a development split of `logs/clinical_lc`: x10
  series flagged 0.950 -> 0.980).

The series-median, time-direction and gain checks each get their own [unusual, unlike] thresholds at the
validation series' 95th / 99th percentiles, so each adds about 1 % false alarms on validation series.
Static values outside the training split's span make a recording (and its series) at least ``unusual``;
far outside (more than a quarter of the span), ``unlike``.

A fit saved before the series features existed still loads and judges series by their median recording
alone. The fit is saved as ``RUN/familiarity.json`` (``python -m evaluation.trust --run RUN`` writes it, and
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
SERIES_FEATURES = tuple(f"median_{f}" for f in FEATURES)
AMPLITUDE = FEATURES.index("amplitude")
DIRECTION_TOP = 5  # recordings of a series whose forwards log-odds are averaged
DIRECTION_C = 0.1  # inverse L2 strength of the direction regression (1e-2 to 1 read the same on a development split)


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


def reversed_evidence(model: Any, signal: Any, static: Any, *, batch_size: int = 512, device: Any = "cpu"
                      ) -> np.ndarray:
    """The network's evidence (models.series.recording_evidence) on recordings ``signal`` (N 1 L, normalized)
    played backwards in time -> (N F)."""
    import torch

    from models.series import recording_evidence

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(signal), batch_size):
            x = signal[i:i + batch_size].float().flip(-1).to(device)  # (B 1 L) reversed in time
            out.append(recording_evidence(model, x, static[i:i + batch_size].float().to(device))[1].cpu())
    return torch.cat(out).double().numpy() if out else np.zeros((0, 0))


def fit_direction(forwards: np.ndarray, backwards: np.ndarray) -> np.ndarray:
    """Weights w (F,) such that (ev(x) - ev(x reversed)) @ w is the log-odds that recording x runs forwards,
    from training recordings' evidence as recorded ``forwards`` (N F) and reversed ``backwards`` (N F)."""
    from sklearn.linear_model import LogisticRegression

    d = (forwards - backwards).astype(np.float64)  # (N F)
    scale = np.maximum(np.sqrt((d**2).mean(axis=0)), 1e-9)  # (F,) no centring: the model must stay antisymmetric
    x = np.concatenate([d, -d]) / scale
    y = np.r_[np.ones(len(d)), np.zeros(len(d))]
    reg = LogisticRegression(C=DIRECTION_C, fit_intercept=False, max_iter=2000).fit(x, y)
    return reg.coef_[0] / scale


def series_direction(log_odds: np.ndarray, series: Any) -> np.ndarray:
    """Per recording forwards log-odds (N,) -> per series (S,): the mean of its DIRECTION_TOP largest |log-odds|."""
    return np.array([float(np.mean(d[np.argsort(-np.abs(d), kind="stable")[:DIRECTION_TOP]]))
                     for d in (log_odds[m] for m in series.members)])


def series_medians(feats: np.ndarray, series: Any) -> np.ndarray:
    """Recording features (N J) -> each feature's median over each series (S J)."""
    return np.array([np.median(feats[m], axis=0) for m in series.members]).reshape(-1, feats.shape[1])


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
    val_series_share: list[float] | None = None  # validation series judged [not in range, unlike] (false alarms)
    # The series checks (None in a fit saved before them). SERIES_FEATURES: training series' median and spread,
    # validation series' 99th percentile of |z|, [unusual, unlike] on their score. Time direction: the
    # regression's weights on the evidence difference (F,), the training series' median forwards log-odds,
    # [unusual, unlike] on the backwardness (minus the log-odds) of validation series.
    series_features: list[str] | None = None
    series_centre: list[float] | None = None
    series_spread: list[float] | None = None
    series_cap: list[float] | None = None
    series_feature_thresholds: list[float] | None = None
    direction_weights: list[float] | None = None
    direction_centre: float | None = None
    direction_thresholds: list[float] | None = None
    n_train_series: int = 0
    # The gain check (None in a fit saved before it): [unusual, unlike] on how much louder than the training
    # series a series' median amplitude is (loudness, signed), at the validation series' QUANTILES.
    gain_thresholds: list[float] | None = None

    def save(self, run_dir: str | Path) -> Path:
        return save_fit(Path(run_dir) / FILE, asdict(self))  # whole or not at all

    @classmethod
    def load(cls, run_dir: str | Path) -> Familiarity | None:
        """The run's fit, or None when the run has none; a file of another shape is a ValueError."""
        path = Path(run_dir) / FILE
        fam = load_fit(cls, path, "a familiarity fit", f"python -m evaluation.trust --run {run_dir}")
        if fam is None:
            return None
        for got, want in ((fam.features, FEATURES), (fam.series_features, SERIES_FEATURES)):
            if got is not None and list(got) != list(want):
                raise ValueError(f"'{path}': expected features {list(want)}, found {got}; refit it with "
                                 f"python -m evaluation.trust --run {run_dir}")
        return fam

    def z(self, feats: np.ndarray) -> np.ndarray:
        """|z| / cap per feature (N J): 1 = as far from the training median as the validation's 99th percentile."""
        return np.abs(feats - np.asarray(self.centre)) / np.asarray(self.spread) / np.asarray(self.cap)

    def loudness(self, medians: np.ndarray) -> np.ndarray:
        """The series' median amplitude (S,) above the training series' median, on series_z's scale, signed."""
        a = AMPLITUDE
        return (medians[:, a] - self.series_centre[a]) / self.series_spread[a] / self.series_cap[a]

    def series_z(self, medians: np.ndarray) -> np.ndarray:
        """The same for the series' medians (S J), against the training series' medians."""
        return np.abs(medians - np.asarray(self.series_centre)) / np.asarray(self.series_spread) / np.asarray(
            self.series_cap)

    @property
    def checks_series(self) -> bool:
        """Whether the fit has the series checks (a fit saved before them has not)."""
        return self.series_features is not None


@dataclass
class WholeSeries:
    """What only whole series show, for S series (module docstring)."""

    medians: np.ndarray  # (S J) each feature's median over the series
    direction: np.ndarray  # (S,) forwards log-odds, the mean over the DIRECTION_TOP largest |log-odds|


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


def whole_series(inp: Inputs, feats: np.ndarray, series: Any, model: Any, weights: np.ndarray, *,
                 device: Any = "cpu", batch_size: int = 512, backwards: np.ndarray | None = None) -> WholeSeries:
    """The WholeSeries of N recordings with features ``feats`` (N J) grouped by ``series``; ``weights``: the
    direction regression's (F,); ``backwards``: their reversed evidence (N F) when already computed."""
    if backwards is None:
        backwards = reversed_evidence(model, inp.signal, inp.static, device=device, batch_size=batch_size)
    log_odds = (inp.evidence.astype(np.float64) - backwards) @ np.asarray(weights)  # (N,)
    return WholeSeries(series_medians(feats, series), series_direction(log_odds, series))


def fit_familiarity(model: Any, diffusion: Any, train: Inputs, val: Inputs, val_series: Any,
                    static_span: tuple[list[float], list[float]], *, train_series: Any, device: Any = "cpu"
                    ) -> Familiarity:
    """Fit on ``train`` (whole series, grouped by ``train_series``; a subsample of them is enough), cap and
    thresholds on ``val`` (whose series are ``val_series``); series are training.clinical.Series;
    ``static_span``: the training split's (min, max) per static value."""
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
    back = reversed_evidence(model, train.signal, train.static, device=device)
    weights = fit_direction(train.evidence, back)
    w_train = whole_series(train, f_train, train_series, model, weights, device=device, backwards=back)
    w_val = whole_series(val, f_val, val_series, model, weights, device=device)
    s_centre, s_spread = robust_scale(w_train.medians)
    s_cap = np.maximum(np.quantile(np.abs(w_val.medians - s_centre) / s_spread, CAP_QUANTILE, axis=0), 1e-3)
    fam.series_features, fam.n_train_series = list(SERIES_FEATURES), len(w_train.direction)
    fam.series_centre, fam.series_spread, fam.series_cap = s_centre.tolist(), s_spread.tolist(), s_cap.tolist()
    fam.series_feature_thresholds = np.quantile(fam.series_z(w_val.medians).max(axis=1), QUANTILES).tolist()
    fam.gain_thresholds = np.quantile(fam.loudness(w_val.medians), QUANTILES).tolist()
    fam.direction_weights, fam.direction_centre = weights.tolist(), float(np.median(w_train.direction))
    # at least 0: a series is only ever called backwards when it reads more backwards than forwards (a clean
    # validation split alone would put the thresholds among forwards series)
    fam.direction_thresholds = np.maximum(np.quantile(-w_val.direction, QUANTILES), 0.0).tolist()
    got = judge(fam, f_val, np.asarray(val.static), val_series, w_val).series_verdict
    fam.val_series_share = [float(np.mean([v != IN_RANGE for v in got])), float(np.mean([v == UNLIKE for v in got]))]
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


def whole_series_parts(fam: Familiarity, whole: WholeSeries | None, n_series: int
                       ) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The series checks of S series: their score on the recording score's scale (S,: each check rescaled
    so that its "unlike" threshold falls on the series one; 0 without the checks) and per series its
    (grade, reason) of the stronger check ((0, "") when in range)."""
    if whole is None or not fam.checks_series:
        return np.zeros(n_series), [(0, "")] * n_series
    zs = fam.series_z(whole.medians)  # (S J)
    back = -whole.direction  # (S,) backwardness
    lo = -fam.direction_centre  # the training series' median backwardness
    unlike = fam.series_thresholds[1]
    score = np.maximum(zs.max(axis=1) * unlike / fam.series_feature_thresholds[1],
                       unlike * (back - lo) / max(fam.direction_thresholds[1] - lo, 1e-9))
    gain = fam.gain_thresholds or [np.inf, np.inf]  # a fit saved before the gain check: none
    loud = fam.loudness(whole.medians) if fam.gain_thresholds else np.zeros(n_series)  # (S,)
    score = np.maximum(score, loud * unlike / gain[1])
    parts = []
    for s in range(n_series):
        j = int(zs[s].argmax())
        g_med, g_dir = grade(float(zs[s, j]), fam.series_feature_thresholds), grade(back[s], fam.direction_thresholds)
        g_gain = grade(float(loud[s]), gain)
        if g_gain > g_med:  # louder than training series: a gain or unit error the ten-feature maximum dilutes
            j, g_med = AMPLITUDE, g_gain
        if max(g_med, g_dir) == 0:
            parts.append((0, ""))
        elif g_dir >= g_med:
            parts.append((g_dir, f"the series reads backwards in time (log-odds {whole.direction[s]:+.2f} that it runs "
                                 f"forwards on its {DIRECTION_TOP} most telling recordings; training series median "
                                 f"{fam.direction_centre:+.2f}): recorded or written backwards?"))
        else:
            parts.append((g_med, "series median: " + describe(fam, j, float(whole.medians[s, j]))))
    return score, parts


def judge(fam: Familiarity, feats: np.ndarray, static: np.ndarray, series: Any,
          whole: WholeSeries | None = None) -> Verdicts:
    """Verdicts for N recordings with features ``feats`` (N J) and ``static`` (N 4), grouped by ``series``;
    ``whole``: what their whole series show, read when the fit has the series checks."""
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
    median = series_scores(score, series)
    whole_score, whole_parts = whole_series_parts(fam, whole, len(median))
    s_verdict, s_reason = [], []
    for s, rows in enumerate(series.members):
        g_median = grade(median[s], fam.series_thresholds)
        zs = np.median(z[rows], axis=0)  # (J,) the series' typical departure per feature
        j = int(zs.argmax())
        why = [describe(fam, j, float(np.median(feats[rows, j])))] if g_median else []
        g_whole, why_whole = whole_parts[s]
        if g_whole:
            why.insert(0 if g_whole > g_median else len(why), why_whole)
        n_unlike = sum(verdict[r] == UNLIKE for r in rows)
        if n_unlike:
            why.append(f"{n_unlike} of {len(rows)} recordings unlike training data")
        st = max(stat[r][0] for r in rows)
        if st:
            why.append(f"static values outside the training span in {sum(stat[r][0] > 0 for r in rows)} of "
                       f"{len(rows)} recordings")
        s_verdict.append(VERDICTS[max(g_median, g_whole, st)])
        s_reason.append("; ".join(why))
    return Verdicts(score, verdict, reason, np.maximum(median, whole_score), s_verdict, s_reason)


def check(fam: Familiarity, inp: Inputs, model: Any, diffusion: Any, series: Any, *, device: Any = "cpu",
          batch_size: int = 512) -> Verdicts:
    """The verdicts of ``fam`` on N new recordings (``series``: their grouping, a training.clinical.Series)."""
    feats = features(inp, model, diffusion, np.asarray(fam.evidence_mean), np.asarray(fam.evidence_precision),
                     device=device, batch_size=batch_size)
    whole = (whole_series(inp, feats, series, model, np.asarray(fam.direction_weights), device=device,
                          batch_size=batch_size) if fam.checks_series else None)
    return judge(fam, feats, inp.static.numpy(), series, whole)
