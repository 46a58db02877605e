"""Wave V profiles for virtual patients (issue 28): what a wave-conditioned network (``model.wave_conditioning``)
is asked to draw, level by level, for one ear of a requested type and threshold.

    python -m evaluation.wave_profile --run logs/EXP      # writes RUN/wave_profile.json (training runs it too)

Conditioned on the static values, the type and the threshold alone, the network let each level's wave V regress
to the middle (docs/results.md, "Virtual patients": an infant NORMAL twin at 8.00 / 7.53 / 7.51 ms at 20 / 60 /
100 dB against about 8.7 -> 6.0 ms recorded), and the latency-intensity function is what tells SNİK from İTİK
and NORMAL. This module draws one latency- and amplitude-intensity function per series, fitted on the run's own
training split as a varying-intercept model (Gelman & Hill 2007, "Data Analysis Using Regression and
Multilevel/Hierarchical Models", ch. 12):

    latency_ij  = x_ij' b_k + u_i + e_ij,     u_i ~ N(0, sd_between²),  e_ij ~ N(0, sd_within²)
    log amp_ij  = the same with its own b_k, u_i and e_ij
    present_ij  = U_i < p_k(SL_ij),           U_i ~ U(0, 1), one per series

for recording j of series i of type k; x = [1, level, level², level³, SL, SL², log age, log age², level x log age,
SL x log age, rate] with SL the
sensation level (level - threshold, clipped at 0; 0 for no response), b_k least squares over type k's training
recordings with wave V (the pooled fit for a type with fewer than MIN_ROWS), p_k the share of type k's
recordings with wave V per 5 dB bin of level - threshold (made non-decreasing; no response: one share). One
uniform per series makes presence monotone in level, as in one ear. For a network with
``model.microphonic_conditioning`` the profile also holds, per type and 10 dB level bin, MICROPHONIC_QUANTILES of
the training recordings' microphonic index (models.series.microphonic_index; the type's recordings at every level
where a bin holds fewer than MIN_BIN); a series draws one uniform and reads each level's quantile at it, so an ear
with a strong microphonic has it at every level. For a network with ``model.noise_conditioning`` the profile holds
one more varying-intercept fit per type, of log10 of the training recordings' residual noise (µV,
models.series.residual_rms) on x and log10 FMP and its square (NOISE_FEATURES; FMP is the recording's own
signal-to-noise, a static value every request states, so a drawn noise level agrees with it), drawn as latency
is: one intercept per ear, one residual per recording. Nothing here reads a test split or a benchmark cohort.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.files import write_atomic
from data.records import CLASS_NAMES
from data.synthetic import NO_RESPONSE_THRESHOLD_DB

FILE = "wave_profile.json"
VERSION = 1
MIN_ROWS = 200  # recordings with wave V below which a type uses the pooled fit
SL_EDGES = np.arange(-40.0, 65.0, 5.0)  # dB, level - threshold: bins of the presence share
RIDGE = 1e-3  # per row, on the regressors' scale (each about 0-1)
LEVEL_EDGES = np.arange(0.0, 110.0, 10.0)  # dB, the microphonic index's level bins
MICROPHONIC_QUANTILES = np.linspace(0.0, 1.0, 21)
MIN_BIN = 20  # recordings below which a level bin uses its type's recordings at every level
MIN_FMP = 0.05  # noise_design: FMP below it reads as this (a recording of noise alone sits about 1)
FEATURES = ("1", "level", "level^2", "level^3", "SL", "SL^2", "log age", "log age^2", "level x log age",
            "SL x log age", "rate")
NOISE_FEATURES = (*FEATURES, "log10 FMP", "log10 FMP^2")  # model.noise_conditioning: noise_design


def design(static: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """(N 11) the regressors x (FEATURES) of recordings: static (N 4) age, level, rate, FMP; threshold (N,) dB."""
    level = static[:, 1].astype(np.float64) / 100.0
    none = threshold >= NO_RESPONSE_THRESHOLD_DB
    sl = np.where(none, 0.0, np.clip(static[:, 1] - threshold, 0.0, None)) / 100.0
    age = np.log1p(np.clip(static[:, 0].astype(np.float64), 0.0, None)) / 4.0
    rate = static[:, 2].astype(np.float64) / 50.0
    return np.column_stack([np.ones_like(level), level, level**2, level**3, sl, sl**2, age, age**2, level * age,
                            sl * age, rate])


def noise_design(static: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """(N 13) the noise fit's regressors (NOISE_FEATURES): design's and log10 FMP (clipped at MIN_FMP), squared."""
    log_fmp = np.log10(np.clip(static[:, 3].astype(np.float64), MIN_FMP, None))
    return np.column_stack([design(static, threshold), log_fmp, log_fmp**2])


def fit_part(x: np.ndarray, y: np.ndarray, series: np.ndarray) -> dict[str, Any]:
    """Ridge least squares b (RIDGE on every coefficient but the intercept, per row: a few patients' collinear
    regressors must not extrapolate to absurd values) and the varying intercept's spread: sd_between of the
    series' mean residuals, sd_within of the residuals about their series' mean (series with >= 2 rows)."""
    penalty = RIDGE * len(y) * np.diag([0.0] + [1.0] * (x.shape[1] - 1))
    beta = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    r = y - x @ beta
    ids, inverse, counts = np.unique(series, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, r) / counts  # (S,)
    within = r - means[inverse]
    several = counts[inverse] >= 2
    return {"beta": beta.tolist(), "sd_between": float(np.std(means[counts >= 2])) if (counts >= 2).any() else 0.0,
            "sd_within": float(np.std(within[several])) if several.any() else float(np.std(r))}


def presence_share(level: np.ndarray, threshold: np.ndarray, present: np.ndarray) -> dict[str, Any]:
    """p(SL) per SL_EDGES bin (non-decreasing; an empty bin takes its left neighbour's) and p for no response."""
    none = threshold >= NO_RESPONSE_THRESHOLD_DB
    sl = level[~none] - threshold[~none]
    k = np.clip(np.searchsorted(SL_EDGES, sl, side="right") - 1, 0, len(SL_EDGES) - 1)
    hits = np.bincount(k, present[~none].astype(float), minlength=len(SL_EDGES))
    rows = np.bincount(k, minlength=len(SL_EDGES))
    share = np.zeros(len(SL_EDGES))
    for i in range(len(SL_EDGES)):
        share[i] = hits[i] / rows[i] if rows[i] else (share[i - 1] if i else 0.0)
    return {"share": np.maximum.accumulate(share).tolist(),
            "no_response": float(present[none].mean()) if none.any() else 0.0}


def microphonic_quantiles(level: np.ndarray, index: np.ndarray) -> list[list[float]]:
    """(len(LEVEL_EDGES), len(MICROPHONIC_QUANTILES)) quantiles of one type's microphonic index per level bin."""
    k = np.clip(np.searchsorted(LEVEL_EDGES, level, side="right") - 1, 0, len(LEVEL_EDGES) - 1)
    pooled = np.quantile(index, MICROPHONIC_QUANTILES)
    return [(np.quantile(index[k == b], MICROPHONIC_QUANTILES) if (k == b).sum() >= MIN_BIN else pooled).tolist()
            for b in range(len(LEVEL_EDGES))]


def fit_profile(static: np.ndarray, threshold: np.ndarray, label: np.ndarray, present: np.ndarray,
                latency: np.ndarray, amplitude: np.ndarray, series_id: np.ndarray,
                microphonic: np.ndarray | None = None, noise: np.ndarray | None = None) -> dict[str, Any]:
    """The profile (module docstring) from training recordings: static (N 4), threshold (N,) dB, label (N,),
    present (N,) bool wave V, latency (N,) ms and amplitude (N,) µV (read where present), series_id (N,);
    ``microphonic`` (N,) each recording's microphonic index and ``noise`` (N,) its residual noise µV, for a
    network that reads them."""
    present = present.astype(bool) & (amplitude > 0)  # log amplitude: a marked wave V has a positive amplitude
    if not present.any():
        raise ValueError("wave profile: expected training recordings with a marked wave V (positive amplitude), "
                         "found none")
    x = design(static, threshold)
    pooled = {"latency": fit_part(x[present], latency[present], series_id[present]),
              "log_amplitude": fit_part(x[present], np.log(amplitude[present]), series_id[present])}
    types = {}
    for k, name in enumerate(CLASS_NAMES):
        mine = label == k
        rows = mine & present
        parts = pooled if rows.sum() < MIN_ROWS else {
            "latency": fit_part(x[rows], latency[rows], series_id[rows]),
            "log_amplitude": fit_part(x[rows], np.log(amplitude[rows]), series_id[rows])}
        types[name] = {**parts, "presence": presence_share(static[mine, 1], threshold[mine], present[mine]),
                       "recordings": int(mine.sum()), "with_wave_v": int(rows.sum()),
                       "pooled": bool(rows.sum() < MIN_ROWS)}
        if microphonic is not None:
            source = mine if mine.any() else np.ones_like(mine)  # a type the split lacks: every recording's
            types[name]["microphonic"] = microphonic_quantiles(static[source, 1], microphonic[source])
    extra = {"level_edges_db": LEVEL_EDGES.tolist(), "microphonic_quantiles": MICROPHONIC_QUANTILES.tolist()} \
        if microphonic is not None else {}
    if noise is not None:
        extra |= fit_noise(static, threshold, label, np.log10(noise), series_id)
    return {"version": VERSION, "features": list(FEATURES), "sl_edges_db": SL_EDGES.tolist(), "types": types, **extra,
            "latency_range_ms": [float(latency[present].min()), float(latency[present].max())],
            "amplitude_range_uv": [float(amplitude[present].min()), float(amplitude[present].max())]}


def fit_noise(static: np.ndarray, threshold: np.ndarray, label: np.ndarray, log_noise: np.ndarray,
              series_id: np.ndarray) -> dict[str, Any]:
    """The noise fit (module docstring) of log10 residual noise ``log_noise`` (N,): per type (the pooled fit for a
    type with fewer than MIN_ROWS recordings) and the span the draws are kept within."""
    x = noise_design(static, threshold)
    pooled = fit_part(x, log_noise, series_id)
    fits = {name: pooled if (label == k).sum() < MIN_ROWS else
            fit_part(x[label == k], log_noise[label == k], series_id[label == k]) for k, name in enumerate(CLASS_NAMES)}
    return {"noise_features": list(NOISE_FEATURES), "log10_noise_uv": fits,
            "log10_noise_range": [float(log_noise.min()), float(log_noise.max())]}


def draw_noise(profile: dict[str, Any], static: np.ndarray, threshold: np.ndarray, label: np.ndarray,
               inverse: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) float32 residual noise µV: per series (``inverse``: each recording's series, 0..S-1) one intercept,
    per recording one residual, about its type's fit (fit_noise), within the training span."""
    fits = require_key(profile, "log10_noise_uv", "model.noise_conditioning")
    x = noise_design(static, threshold)
    u, e = rng.standard_normal(inverse.max() + 1 if len(inverse) else 0)[inverse], rng.standard_normal(len(inverse))
    out = np.empty(len(label), np.float32)
    for k, name in enumerate(CLASS_NAMES):
        rows, fit = label == k, fits[name]
        out[rows] = x[rows] @ np.asarray(fit["beta"]) + fit["sd_between"] * u[rows] + fit["sd_within"] * e[rows]
    return 10.0 ** np.clip(out, *profile["log10_noise_range"])


def draw_waves(profile: dict[str, Any], static: np.ndarray, threshold: np.ndarray, label: np.ndarray,
               series_id: np.ndarray, rng: np.random.Generator, microphonic: bool = False,
               noise: bool = False) -> np.ndarray:
    """(N 3) float32 [present 1/0, latency ms, amplitude µV] (NaN where absent): one drawn ear per series_id
    (its intercepts and its presence uniform shared by its recordings), for recordings with static (N 4),
    threshold (N,) dB and label (N,) a class index; with ``microphonic`` a column more, the drawn microphonic index
    (its own uniform per series, drawn after the rest: wave V's draws are those without it), and with ``noise``
    one more, the drawn residual noise µV, last (drawn after everything else)."""
    x = design(static, threshold)
    out = np.full((len(static), 3), np.nan, np.float32)
    ids, inverse = np.unique(series_id, return_inverse=True)
    u_lat, u_amp, u_pres = rng.standard_normal(len(ids)), rng.standard_normal(len(ids)), rng.random(len(ids))
    e_lat, e_amp = rng.standard_normal(len(static)), rng.standard_normal(len(static))
    none = threshold >= NO_RESPONSE_THRESHOLD_DB
    sl = static[:, 1] - threshold
    edges = np.asarray(profile["sl_edges_db"])
    for k, name in enumerate(CLASS_NAMES):
        rows = np.flatnonzero(label == k)
        if not len(rows):
            continue
        part = profile["types"][name]
        share = np.asarray(part["presence"]["share"])
        bins = np.clip(np.searchsorted(edges, sl[rows], side="right") - 1, 0, len(edges) - 1)
        p = np.where(none[rows], part["presence"]["no_response"], np.where(sl[rows] < edges[0], 0.0, share[bins]))
        present = u_pres[inverse[rows]] < p
        lat, amp = part["latency"], part["log_amplitude"]
        latency = (x[rows] @ np.asarray(lat["beta"]) + lat["sd_between"] * u_lat[inverse[rows]]
                   + lat["sd_within"] * e_lat[rows])
        log_amp = (x[rows] @ np.asarray(amp["beta"]) + amp["sd_between"] * u_amp[inverse[rows]]
                   + amp["sd_within"] * e_amp[rows])
        out[rows, 0] = present
        # a draw stays within what the training split recorded
        out[rows[present], 1] = np.clip(latency[present], *profile["latency_range_ms"])
        out[rows[present], 2] = np.clip(np.exp(np.minimum(log_amp[present], 10.0)), *profile["amplitude_range_uv"])
    if microphonic:
        out = np.concatenate([out, draw_microphonic(profile, static[:, 1], label, inverse, rng)[:, None]], axis=1)
    if noise:
        out = np.concatenate([out, draw_noise(profile, static, threshold, label, inverse, rng)[:, None]], axis=1)
    return out


def require_key(profile: dict[str, Any], key: str, flag: str) -> Any:
    """profile[key], or one line naming the training flag and the refit command."""
    if key not in profile:
        raise ValueError(f"wave profile: expected '{key}' (a run trained with {flag}), found a profile without it; "
                         f"refit it with python -m evaluation.wave_profile --run RUN")
    return profile[key]


def draw_microphonic(profile: dict[str, Any], level: np.ndarray, label: np.ndarray, inverse: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """(N,) float32 microphonic indices: per series (``inverse``: each recording's series, 0..S-1) one uniform,
    read at each recording's type and level bin off the profile's quantiles."""
    grid = np.asarray(require_key(profile, "microphonic_quantiles", "model.microphonic_conditioning"))
    edges = np.asarray(profile["level_edges_db"])
    u = rng.random(inverse.max() + 1 if len(inverse) else 0)[inverse]  # (N,) one per series
    bins = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, len(edges) - 1)
    out = np.empty(len(level), np.float32)
    for k, name in enumerate(CLASS_NAMES):
        table = np.asarray(profile["types"][name]["microphonic"])  # (bins quantiles)
        for b in np.unique(bins[label == k]):
            rows = (label == k) & (bins == b)
            out[rows] = np.interp(u[rows], grid, table[b])
    return out


def save_profile(run_dir: str | Path, profile: dict[str, Any]) -> Path:
    text = (json.dumps(profile, indent=1) + "\n").encode()
    return write_atomic(Path(run_dir) / FILE, lambda f: f.write(text))


def load_profile(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/wave_profile.json, or None where the run has none (one line where it is not a profile)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON (or not UTF-8)
        raise ValueError(f"{path}: expected the JSON of a wave profile, found unreadable text ({exc}); refit it with "
                         f"python -m evaluation.wave_profile --run {run_dir}") from None
    if not isinstance(profile, dict) or profile.get("version") != VERSION or \
            set(profile.get("types", {})) != set(CLASS_NAMES):
        raise ValueError(f"{path}: expected a wave profile of version {VERSION} with every type "
                         f"({', '.join(CLASS_NAMES)}); refit it with python -m evaluation.wave_profile --run {run_dir}")
    return profile


def require_profile(run_dir: str | Path, opt_out: str = "") -> dict[str, Any]:
    """The run's profile, or one line naming the command that fits it (``opt_out``: the caller's way around)."""
    profile = load_profile(run_dir)
    if profile is None:
        raise ValueError(f"run '{run_dir}': expected {FILE} beside a network trained with model.wave_conditioning "
                         f"(python -m evaluation.wave_profile --run {run_dir} fits it){opt_out}")
    return profile


def fit_run_profile(run_dir: str | Path, train: Any, microphonic: bool = False, noise_uv: float | None = None
                    ) -> Path:
    """Fit and save the profile of a run from its training split ``train`` (an ABRDataset); ``microphonic``: with
    the microphonic index's quantiles (``model.microphonic_conditioning``); ``noise_uv``: with the residual noise's fit
    (``model.noise_conditioning``; µV per unit of the standardized signal, training.objective.noise_scale)."""
    from models.series import microphonic_index, residual_rms

    t = {k: v.numpy() for k, v in train.tensors.items()}
    index = microphonic_index(t["signal"][:, 0])[:, 0] if microphonic else None  # (N,) scale-free
    noise = None if noise_uv is None else residual_rms(t["signal"][:, 0]).double().numpy() * noise_uv  # (N,) µV
    profile = fit_profile(t["static"], t["threshold"], t["label"], t["peak_mask"], t["peak_latency"],
                          t["peak_amplitude"], t["series_id"], index, noise)
    return save_profile(run_dir, profile)


def main(argv: Sequence[str] | None = None) -> int:
    from data.cli import ArgumentParser, run_main

    p = ArgumentParser(prog="python -m evaluation.wave_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory trained with model.wave_conditioning, e.g. logs/EXP")
    args = p.parse_args(argv)

    def body() -> int:
        from data.dataset import build_data
        from training.checkpoint import load_run
        from training.objective import noise_scale

        cfg = load_run(args.run).cfg
        if not cfg.model.wave_conditioning:
            raise ValueError(f"run '{args.run}': expected a run trained with model.wave_conditioning true, found "
                             f"one trained without it (its network reads no wave V condition)")
        data = build_data(cfg.data, cfg.loss.class_weights)
        path = fit_run_profile(args.run, data.train, cfg.model.microphonic_conditioning,
                               noise_scale(cfg.model.noise_conditioning, data.stats))
        print(f"wrote {path}")
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
