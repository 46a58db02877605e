"""A physiologically grounded synthetic ABR data set, generated patient by patient.

    python -m data.synthetic --out synthetic.npz --patients 2000 --seed 0
    python -m data.synthetic --out wide.npz --patients 2000 --seed 1 --domain wide --catch-fraction 0.2
    python -m data.synthetic --stats synthetic.npz

An existing --out file is replaced only with --overwrite. Errors are one line (exit 2 for a bad
flag, value or file; 1 for a disk or permission error); --debug shows the traceback.

The generative model (docs/data.md gives it in full, with its sources):

1. Patients. The class is assigned by quota with the real data set's shares (DESIGN.md), then
   shuffled. Each patient gets an age (mostly infants; maturation follows the true age in months,
   the static input carries completed years as clinical records do), a hearing threshold drawn per
   class, and individual latency, slope, amplitude and noise traits.
2. Protocol. About 25 recordings per patient over the 21 intensities 0-100 dB nHL (half of them
   bracketing the threshold, as a clinician searches for it) and clinical stimulus rates 11.1-49.1/s.
3. Waves I, III and V as smooth transients with their troughs. Wave V latency falls with intensity
   (0.030-0.040 ms/dB), rises with rate and in infants; amplitude grows with sensation level.
   Pathology acts through an equivalent intensity in a normal ear: conductive loss subtracts the
   air-bone gap (all waves delayed as if attenuated); sensorineural loss compresses the range above
   threshold (recruitment: steep latency-intensity function); neuropathy removes or disorders the
   neural waves whatever the threshold and leaves a cochlear microphonic; total loss removes all.
4. Residual EEG after averaging: 1/f^alpha noise with a per-recording level, occasional 50 Hz hum,
   myogenic bursts and stimulus artefact. FMP is the recording's own F-ratio (signal variance over
   residual-noise variance).
5. Labels: class, threshold, and waves I, III and V presence / latency / amplitude as a peak marker
   marks them on the recorded average (the local maximum near the true wave; amplitude
   baseline-to-peak); a wave is present where the simulation gave it a non-zero amplitude.

Opt-in (issue 33; the defaults give the same bytes as before): ``domain="wide"`` records the same
patients through a randomized chain (delay, zero-phase filters, gain, wave shapes, noise spectra;
docs/data.md 1.6), the labels marked on the final waveform; ``catch_fraction`` adds catch sessions,
noise-only recordings at every level labelled TOTAL / no response (1.7).

Generation is vectorized and deterministic: patients are simulated in fixed-size chunks, each with
its own seed derived from (seed, chunk index), so the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from data import waveform as wf
from data.cli import ArgumentParser, run_main
from data.config import MAX_SYNTHETIC_PATIENTS
from data.records import NUM_CLASSES, SIGNAL_LENGTH, Records

NORMAL, NEUROPATHY, SENSORINEURAL, TOTAL, CONDUCTIVE = range(NUM_CLASSES)  # order of CLASS_NAMES
# Shares of recordings in the real data set (DESIGN.md): NORMAL, NÖROPATİ, SNİK, TOTAL, İTİK.
CLASS_SHARES = np.array([0.797, 0.008, 0.106, 0.033, 0.056])
LEVELS_DB = np.arange(0, 101, 5, dtype=np.float32)  # 21 intensities, dB nHL
LEVEL_P = (1.0 + LEVELS_DB / 50.0) / (1.0 + LEVELS_DB / 50.0).sum()  # high levels are recorded more often
RATES = np.array([11.1, 21.1, 27.7, 31.1, 39.1, 49.1], dtype=np.float32)  # clicks/s (clinical set)
RATE_P = np.array([0.15, 0.20, 0.10, 0.30, 0.15, 0.10])
NO_RESPONSE_THRESHOLD_DB = 105.0  # TOTAL: no response up to the 100 dB limit, coded limit + 5
PATIENT_CHUNK = 64  # patients simulated together; fixed, so output does not depend on N
BETA_I, BETA_III, BETA_V = 2.0, 2.0, 3.0  # peak-to-trough shape of each wave (waveform.add_wave)


@dataclass
class Patients:
    """Per-patient draws (all arrays (P,))."""

    label: np.ndarray  # class index
    threshold: np.ndarray  # true threshold, dB nHL (inf for TOTAL)
    cochlear_threshold: np.ndarray  # the normal-ear threshold underneath a conductive or sensorineural loss
    age_months: np.ndarray  # true age; the static input is completed years
    preterm_delay: np.ndarray  # ms of extra neural delay (immaturity), mostly 0
    brainstem_delay: np.ndarray  # ms added to the I-V interval, mostly 0
    lat_offset: np.ndarray  # ms, individual wave V latency offset
    li_slope: np.ndarray  # ms/dB, wave V latency-intensity slope in a normal ear
    ipl: np.ndarray  # ms, I-V interpeak interval
    amp_scale: np.ndarray  # µV, wave V amplitude at high sensation level
    noise: np.ndarray  # µV, median residual noise of this patient's recordings
    hum_prone: np.ndarray  # bool, recorded where line hum gets in
    disordered: np.ndarray  # bool, neuropathy with a dys-synchronous wave V at high levels
    cm_amp: np.ndarray  # µV, cochlear microphonic (neuropathy only)
    n_recordings: np.ndarray  # int


# The wide domain (docs/data.md 1.6): what a clinic's recording chain changes, drawn per patient.
DOMAINS = ("narrow", "wide", "mixed")  # mixed: each patient narrow or wide with p = 1/2 (training)
MIXED_WIDE_SHARE = 0.5
MIN_MARK_MS = 0.35  # a wave I or III whose delayed peak falls before this lies outside the window: not marked


@dataclass
class Chain:
    """One patient's recording chain and wave morphology in the wide domain (all arrays (P,) or (P k))."""

    delay_ms: np.ndarray  # added to every wave latency: earphone tube, synaptic and equipment delays
    highpass_hz: np.ndarray  # Butterworth high-pass corner, run forward and backward
    lowpass_hz: np.ndarray  # Butterworth low-pass corner
    hp_order: np.ndarray  # int 1-4
    lp_order: np.ndarray  # int 1-4
    gain: np.ndarray  # amplitude calibration of the amplifier (multiplies the whole recording)
    mains_hz: np.ndarray  # 50 or 60 Hz line hum
    rel_amp: np.ndarray  # (P 2) amplitude of waves I and III relative to the narrow model's
    width_scale: np.ndarray  # (P 3) width of waves I, III and V relative to the narrow model's


def _log_uniform(rng: np.random.Generator, low: float, high: float, size) -> np.ndarray:
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


# The wide chain's recording filters (docs/data.md 1.6); training.augment's band-limited catch rows draw theirs
# from the same ranges.
HIGHPASS_HZ = (30.0, 300.0)  # log-uniform
LOWPASS_HZ = (1500.0, 3000.0)  # uniform
FILTER_ORDERS = (1, 4)  # each filter's Butterworth order, uniform over the integers, both ends included


def draw_chain(rng: np.random.Generator, p: int) -> Chain:
    """The wide domain's per-patient chain: one session, one earphone, one amplifier (docs/data.md 1.6)."""
    return Chain(
        delay_ms=rng.uniform(-1.5, 1.5, p),
        highpass_hz=_log_uniform(rng, *HIGHPASS_HZ, p),
        lowpass_hz=rng.uniform(*LOWPASS_HZ, p),
        hp_order=rng.integers(FILTER_ORDERS[0], FILTER_ORDERS[1] + 1, p),
        lp_order=rng.integers(FILTER_ORDERS[0], FILTER_ORDERS[1] + 1, p),
        gain=_log_uniform(rng, 0.5, 2.0, p),
        mains_hz=rng.choice([50.0, 60.0], p),
        rel_amp=_log_uniform(rng, 0.5, 2.0, (p, 2)),
        width_scale=_log_uniform(rng, 0.75, 1.33, (p, 3)),
    )


def class_quota(n_patients: int) -> np.ndarray:
    """Patients per class: largest-remainder rounding of the shares, at least one each when n >= 5."""
    raw = CLASS_SHARES * n_patients
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(-(raw - counts), kind="stable")[: n_patients - counts.sum()]] += 1
    if n_patients >= NUM_CLASSES:
        short = counts == 0
        counts[short] = 1
        counts[NORMAL] -= short.sum()
    return counts


def draw_labels(rng: np.random.Generator, n_patients: int) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(NUM_CLASSES), class_quota(n_patients)))


def draw_patients(rng: np.random.Generator, label: np.ndarray) -> Patients:
    p = len(label)
    # Age: ~62 % infants (newborn screening and follow-up skew to the first months), then children, adults.
    group = rng.choice(4, size=p, p=[0.62, 0.16, 0.10, 0.12])
    months = np.select(
        [group == 0, group == 1, group == 2],
        [12.0 * rng.beta(0.7, 2.2, p), rng.uniform(12, 84, p), rng.uniform(84, 216, p)],
        rng.uniform(216, 75 * 12 + 11, p),
    )
    preterm = np.where((months < 6) & (rng.random(p) < 0.15), rng.uniform(0.3, 2.0, p), 0.0)
    # Slowed brainstem conduction (immaturity, hyperbilirubinaemia, ...): a prolonged I-V interval.
    slow = np.where(rng.random(p) < 0.07, rng.uniform(0.5, 3.0, p), 0.0)
    # Thresholds (dB nHL): normal 0-25; conductive adds an air-bone gap of at most ~60 dB;
    # sensorineural spans mild to profound; neuropathy's behavioural threshold is unrelated to its ABR.
    cochlear = np.clip(rng.normal(12.0, 7.0, p), 0.0, 25.0)
    threshold = np.select(
        [label == NORMAL, label == CONDUCTIVE, label == SENSORINEURAL, label == NEUROPATHY],
        [cochlear, cochlear + 15 + 45 * rng.beta(2.0, 2.5, p), 30 + 65 * rng.beta(1.6, 2.0, p),
         20 + 70 * rng.beta(2, 2, p)],
        np.inf,
    )
    neuro = label == NEUROPATHY
    return Patients(
        label=label,
        threshold=threshold,
        cochlear_threshold=cochlear,
        age_months=months,
        preterm_delay=preterm,
        brainstem_delay=slow,
        lat_offset=rng.normal(0.0, 0.18, p),
        li_slope=rng.uniform(0.030, 0.040, p),
        ipl=4.0 + 1.0 * np.exp(-months / 10.0) - 0.2 * (label == SENSORINEURAL) + rng.normal(0, 0.12, p),
        amp_scale=np.minimum(np.exp(rng.normal(np.log(0.23), 0.35, p)), 0.8),
        noise=np.exp(rng.normal(np.log(0.045), 0.50, p)),
        hum_prone=rng.random(p) < 0.15,
        disordered=neuro & (rng.random(p) < 0.35),
        cm_amp=np.where(neuro & (rng.random(p) < 0.8), rng.uniform(0.05, 0.25, p), 0.0),
        n_recordings=18 + rng.poisson(7.5, p),
    )


def draw_protocol(rng: np.random.Generator, pat: Patients) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recordings of each patient: (patient index, intensity dB nHL, rate /s), each (N,)."""
    idx = np.repeat(np.arange(len(pat.label)), pat.n_recordings)
    n = len(idx)
    # Half the levels bracket the threshold (the clinician's search, mostly from above), half span the range.
    thr = np.minimum(pat.threshold[idx], 100.0)
    near = thr + rng.choice(np.arange(-10, 35, 5), size=n)
    level = np.where(rng.random(n) < 0.5, near, rng.choice(LEVELS_DB, size=n, p=LEVEL_P))
    level = (np.clip(5.0 * np.round(level / 5.0), 0.0, 100.0) + 0.0).astype(np.float32)  # + 0.0: no -0.0
    rate = RATES[rng.choice(len(RATES), size=n, p=RATE_P)]
    return idx, level, rate


@dataclass
class Waves:
    """The true waves I, III and V of N recordings (before any recording chain)."""

    lat: np.ndarray  # (N 3) ms, peak latency of I, III, V
    amp: np.ndarray  # (N 3) µV, baseline-to-peak of the clean wave; 0 where absent
    width: np.ndarray  # (N 3) ms, σ of each transient
    present: np.ndarray  # (N,) bool, wave V present
    months: np.ndarray  # (N,) true age


def simulate(rng: np.random.Generator, pat: Patients, idx: np.ndarray, level: np.ndarray, rate: np.ndarray,
             out: np.ndarray | None = None, chain: Chain | None = None) -> dict:
    """Waveforms and labels of the recordings (idx, level, rate); returns the Records columns.
    ``out``: an (N L) float32 array to build the signals in (saves a copy), else one is allocated.
    ``chain``: the wide domain's recording chain per patient (None: the narrow clinical chain)."""
    n = len(idx)
    w = physiology(rng, pat, idx, level, rate)
    x = np.zeros((n, SIGNAL_LENGTH), dtype=np.float32) if out is None else out  # (N L) µV
    x[:] = 0.0
    if chain is None:
        noise_var = _record_narrow(rng, x, pat, idx, level, w)
        lat, amp_beyond = w.lat, w.amp[:, 2]
        early_present = w.amp[:, :2] > 0
    else:
        noise_var, lat, amp_beyond = _record_wide(rng, x, pat, chain, idx, level, w)
        early_present = (w.amp[:, :2] > 0) & (lat[:, :2] >= MIN_MARK_MS)  # a wave before the window is not seen
    # 7. Labels as marked on the recorded average; FMP from the recording's own signal-to-noise.
    lat_mark, amp_mark = _mark(rng, x, lat[:, 2], amp_beyond, w.present, np.sqrt(noise_var))
    waves = _mark_early_waves(x, lat[:, :2], early_present)
    fmp = wf.fmp(x, noise_var * np.exp(rng.normal(0.0, 0.15, n)))
    static = np.stack([np.floor(w.months / 12.0), level, rate, fmp], axis=1).astype(np.float32)
    threshold = np.where(np.isfinite(pat.threshold), np.clip(5.0 * np.ceil(pat.threshold / 5.0), 0, 100),
                         NO_RESPONSE_THRESHOLD_DB)[idx]
    return {"signal": x, "static": static, "label": pat.label[idx].astype(np.int64), "peak_mask": w.present,
            "peak_latency": lat_mark, "peak_amplitude": amp_mark, "threshold": threshold.astype(np.float32), **waves}


def simulate_mixed(rng: np.random.Generator, pat: Patients, idx: np.ndarray, level: np.ndarray, rate: np.ndarray,
                   out: np.ndarray, chain: Chain | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """simulate() where a chain's NaN delay marks a patient recorded through the narrow chain (the mixed
    domain): the narrow patients' recordings first, then the wide ones' (order kept within each), into
    ``out``. Returns the recordings' (idx, level, rate) in that order and the columns. Without NaN
    (narrow, wide) it is simulate() itself: the same draws, the same bytes."""
    if chain is None or not np.isnan(chain.delay_ms).any():
        return idx, level, rate, simulate(rng, pat, idx, level, rate, out=out, chain=chain)
    order = np.argsort(~np.isnan(chain.delay_ms[idx]), kind="stable")  # narrow recordings first
    idx, level, rate = idx[order], level[order], rate[order]
    k = int(np.isnan(chain.delay_ms[idx]).sum())
    parts = [simulate(rng, pat, idx[:k], level[:k], rate[:k], out=out[:k], chain=None),
             simulate(rng, pat, idx[k:], level[k:], rate[k:], out=out[k:], chain=chain)]
    # the signals are already in place in ``out``; only the label columns are joined
    return idx, level, rate, {"signal": out} | {name: np.concatenate([p[name] for p in parts])
                                               for name in parts[0] if name != "signal"}


def physiology(rng: np.random.Generator, pat: Patients, idx: np.ndarray, level: np.ndarray, rate: np.ndarray
               ) -> Waves:
    """Steps 1-5: the true waves of the recordings (idx, level, rate)."""
    n = len(idx)
    label = pat.label[idx]
    months = pat.age_months[idx]
    infant = np.exp(-months / 12.0)  # 1 at birth, 0.14 at two years
    rate_excess = rate - RATES[0]
    # 1. Sensation level, with uncertainty near threshold: the response threshold of one recording
    #    varies a few dB (state, noise) and rises slightly at fast rates.
    thr = pat.threshold[idx] + rng.normal(0.0, 3.0, n) + 0.08 * rate_excess
    sl = level - thr
    # 2. Equivalent intensity in a normal ear (Hood 1998): conductive loss attenuates the stimulus by
    #    the air-bone gap; cochlear loss maps [threshold, 100] onto [normal threshold, 100] (recruitment).
    cochlear = pat.cochlear_threshold[idx]
    gap = np.where(label == CONDUCTIVE, pat.threshold[idx] - cochlear, 0.0)
    compress = np.where(label == SENSORINEURAL, (100.0 - cochlear) / np.maximum(100.0 - pat.threshold[idx], 5.0), 1.0)
    level_eq = np.where(label == SENSORINEURAL, cochlear + sl * compress, level - gap)
    sl_eq = np.maximum(level_eq - cochlear, 0.0)
    # 3. Wave V latency (ms): 5.55 ms at 80 dB nHL in adults, +1.2 ms at birth (Gorga et al. 1989),
    #    slope 0.030-0.040 ms/dB, flatter above 80 dB and steeper near threshold (more so in infants),
    #    +0.005-0.011 ms per click/s (Don et al. 1977).
    lat_v = (5.55 + 1.2 * np.exp(-months / 9.0) + pat.preterm_delay[idx] + pat.brainstem_delay[idx]
             + pat.lat_offset[idx]
             + pat.li_slope[idx] * (80.0 - level_eq) * np.where(level_eq > 80.0, 0.5, 1.0)
             + 0.7 * (1.0 + 0.5 * infant) * np.exp(-sl_eq / 10.0)
             + rate_excess * (0.005 + 0.006 * infant)
             + 0.3 * np.clip((pat.threshold[idx] - 25.0) / 70.0, 0.0, 1.0) * (label == SENSORINEURAL)
             + rng.normal(0.0, 0.07, n))
    ipl = pat.ipl[idx] + pat.brainstem_delay[idx]
    lat_i = lat_v - ipl
    lat_iii = lat_i + 0.53 * ipl
    # 4. Amplitudes (µV, baseline-to-peak) saturate with sensation level; wave I and III need more of it.
    def sat(x: np.ndarray) -> np.ndarray:
        return 1.0 - np.exp(-np.maximum(x, 0.0) / 22.0)

    rate_loss = 1.0 - 0.004 * rate_excess
    amp_v = pat.amp_scale[idx] * sat(sl_eq) * rate_loss
    amp_i = pat.amp_scale[idx] * (0.45 + 0.4 * infant) * sat(sl_eq - 20.0) * (1.0 - 0.008 * rate_excess)
    amp_i *= np.where(label == SENSORINEURAL, 0.6, 1.0)
    amp_iii = pat.amp_scale[idx] * 0.6 * sat(sl_eq - 10.0) * rate_loss
    width_v = 0.40 + 0.20 * np.exp(-sl_eq / 15.0) + 0.08 * infant
    present = (sl > 0) & np.isin(label, (NORMAL, SENSORINEURAL, CONDUCTIVE))
    # 5. Neuropathy (Starr et al. 1996): no neural waves, or a small, broad, late, jittery wave V only
    #    at high levels, whatever the threshold; total loss: nothing.
    disordered = pat.disordered[idx] & (level >= 75.0 + rng.normal(0.0, 5.0, n))
    neural = np.isin(label, (NORMAL, SENSORINEURAL, CONDUCTIVE))
    lat_v = np.where(disordered, lat_v + rng.uniform(1.5, 4.0, n) + rng.normal(0.0, 0.4, n), lat_v)
    amp_v = np.where(disordered, rng.uniform(0.04, 0.15, n), np.where(present, amp_v, 0.0))
    width_v = np.where(disordered, rng.uniform(0.5, 0.9, n), width_v)
    amp_i, amp_iii = (np.where(present & neural, a, 0.0) for a in (amp_i, amp_iii))
    present = present | disordered

    return Waves(lat=np.stack([lat_i, lat_iii, lat_v], axis=1), amp=np.stack([amp_i, amp_iii, amp_v], axis=1),
                 width=np.stack([0.22 + 0.05 * infant, 0.28 + 0.05 * infant, width_v], axis=1), present=present,
                 months=months)


def _record_narrow(rng: np.random.Generator, x: np.ndarray, pat: Patients, idx: np.ndarray, level: np.ndarray,
                   w: Waves) -> np.ndarray:
    """Step 6, the clinical chain of docs/data.md: the waves and the residual noise into x (N L), in place;
    returns the residual-noise variance per recording (N,)."""
    n = len(idx)
    add_waves(x, w.lat, w.amp, w.width)
    # 6. Residual noise (Elberling & Don 1984): 1/f^alpha EEG at a per-recording level, plus hum,
    #    myogenic bursts, stimulus artefact and, in neuropathy, the cochlear microphonic.
    sigma = (pat.noise[idx] * np.exp(rng.normal(0.0, 0.30, n))).astype(np.float32)
    noise_var = sigma.astype(np.float64) ** 2
    x += wf.coloured_noise(rng, sigma, rng.uniform(0.8, 1.8, n).astype(np.float32))
    noise_var += _add_subset(x, rng, pat.hum_prone[idx] & (rng.random(n) < 0.7) | (rng.random(n) < 0.03),
                             lambda r, s: _hum(r, s, sigma[s]))
    noise_var += _add_subset(x, rng, rng.random(n) < 0.05, lambda r, s: _myogenic_burst(r, s, sigma[s]))
    _add_stimulus_related(x, rng, pat, idx, level)
    return noise_var


def _record_wide(rng: np.random.Generator, x: np.ndarray, pat: Patients, chain: Chain, idx: np.ndarray,
                 level: np.ndarray, w: Waves) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 6 through the patient's wide chain (docs/data.md 1.6), into x (N L) in place. Returns the
    residual-noise variance (N,), the latencies the marker looks at (N 3: true + chain delay) and wave
    V's amplitude for a peak beyond the window (N,: the filtered clean wave there, times the gain)."""
    n, L = len(idx), SIGNAL_LENGTH
    lat = w.lat + chain.delay_ms[idx, None]  # (N 3) ms
    amp = w.amp * np.concatenate([chain.rel_amp[idx], np.ones((n, 1))], axis=1)  # (N 3) µV
    width = w.width * chain.width_scale[idx]  # (N 3) ms
    hp, lp, hpo, lpo = (getattr(chain, k)[idx] for k in ("highpass_hz", "lowpass_hz", "hp_order", "lp_order"))
    # The clean record (waves, artefact, microphonic) on -10..20 ms, filtered zero-phase as a whole.
    ext = np.zeros((n, wf.EXT_WINDOWS * L), dtype=np.float32)  # (N 3L) µV
    for k in range(wf.EXT_WINDOWS):
        add_waves(ext[:, k * L : (k + 1) * L], lat - (k - 1) * L * wf.DT_MS, amp, width)
    _add_stimulus_related(ext[:, L : 2 * L], rng, pat, idx, level)
    ext = wf.filter_zero_phase(ext, wf.zero_phase_gain(wf.EXT_FREQS_HZ, hp, lp, hpo, lpo))  # (N 3L)
    x[:] = ext[:, L : 2 * L]
    col = np.clip(L + np.rint(lat[:, 2] / wf.DT_MS).astype(np.int64), 0, wf.EXT_WINDOWS * L - 1)
    amp_beyond = ext[np.arange(n), col]  # (N,)
    # Residual noise: the narrow level, measured after the filter; white or 1/f^alpha EEG, the clinic's mains.
    power = wf.zero_phase_gain(wf.FREQS_HZ, hp, lp, hpo, lpo) ** 2  # (N K) noise power through |H|^4
    sigma = (pat.noise[idx] * np.exp(rng.normal(0.0, 0.30, n))).astype(np.float32)
    noise_var = sigma.astype(np.float64) ** 2
    alpha = np.where(rng.random(n) < 0.25, 0.0, rng.uniform(0.5, 2.0, n)).astype(np.float32)
    x += wf.coloured_noise(rng, sigma, alpha, band_power=power.astype(np.float32))
    mains = chain.mains_hz[idx]
    hum_gain = wf.zero_phase_gain(np.stack([mains, 3 * mains], axis=1), hp, lp, hpo, lpo)  # (N 2)
    noise_var += _add_subset(x, rng, pat.hum_prone[idx] & (rng.random(n) < 0.7) | (rng.random(n) < 0.03),
                             lambda r, s: _hum(r, s, sigma[s], mains[s], hum_gain[s]))
    band = ((wf.FREQS_HZ >= 300.0) & (wf.FREQS_HZ <= 1500.0)) * power  # (N K)
    noise_var += _add_subset(x, rng, rng.random(n) < 0.05,
                             lambda r, s: _myogenic_burst(r, s, sigma[s], band[s].astype(np.float32)))
    g = chain.gain[idx]
    x *= g.astype(np.float32)[:, None]
    return noise_var * g**2, lat, amp_beyond * g


def add_waves(x: np.ndarray, lat: np.ndarray, amp: np.ndarray, width: np.ndarray) -> None:
    """x (N L) += waves I, III and V (lat, amp, width: (N 3)), in place."""
    for k, beta in enumerate((BETA_I, BETA_III, BETA_V)):
        wf.add_wave(x, lat[:, k], amp[:, k], width[:, k], beta)


def _add_stimulus_related(x: np.ndarray, rng: np.random.Generator, pat: Patients, idx: np.ndarray,
                          level: np.ndarray) -> None:
    """The stimulus artefact (8 % of recordings at 60 dB or more) and, in neuropathy, the cochlear microphonic."""
    n = len(idx)
    _add_subset(x, rng, (level >= 60) & (rng.random(n) < 0.08), lambda r, s: _artefact(r, level[s]))
    cm = pat.cm_amp[idx] * (level - 40.0) / 60.0
    _add_subset(x, rng, (cm > 0) & (level >= 50), lambda r, s: _microphonic(r, cm[s]))


def _add_subset(x: np.ndarray, rng: np.random.Generator, rows: np.ndarray, make) -> np.ndarray:
    """x[rows] += make(rng, rows) for a boolean row mask; returns the added noise variance per row (N,)."""
    sel = np.flatnonzero(rows)
    var = np.zeros(len(x))
    if len(sel):
        add = make(rng, sel)
        x[sel] += add
        var[sel] = add.var(axis=1)
    return var


def _hum(rng: np.random.Generator, sel: np.ndarray, sigma: np.ndarray, mains: np.ndarray | None = None,
         gain: np.ndarray | None = None) -> np.ndarray:
    """50 Hz mains (Turkey) and its 3rd harmonic; a 10 ms window holds half a cycle, so it reads as a drift.
    Wide domain: ``mains`` (n,) 50 or 60 Hz, each component scaled by the filter's ``gain`` (n 2)."""
    n = len(sel)
    amp = sigma * rng.uniform(0.5, 3.0, n)
    f = np.full(n, 50.0) if mains is None else mains
    g = np.ones((n, 2)) if gain is None else gain
    return (wf.sinusoid(f, rng.uniform(0, 2 * np.pi, n), amp * g[:, 0])
            + wf.sinusoid(3 * f, rng.uniform(0, 2 * np.pi, n), 0.3 * amp * g[:, 1]))


def _myogenic_burst(rng: np.random.Generator, sel: np.ndarray, sigma: np.ndarray,
                    band: np.ndarray | None = None) -> np.ndarray:
    """A short burst of muscle activity (300-1500 Hz) at a random time in the window. Wide domain:
    ``band`` (n K), its power spectrum through the chain's filter."""
    n = len(sel)
    level = (sigma * rng.uniform(2.0, 6.0, n)).astype(np.float32)
    burst = (wf.band_noise(rng, level, 300.0, 1500.0) if band is None
             else wf.coloured_noise(rng, level, np.zeros_like(level), band_power=band))
    return burst * wf.gaussian_envelope(rng.uniform(1.0, 9.0, n), rng.uniform(0.3, 1.2, n))


def _artefact(rng: np.random.Generator, level: np.ndarray) -> np.ndarray:
    """Stimulus artefact: a brief bipolar deflection in the first 0.5 ms, growing with intensity."""
    n = len(level)
    amp = rng.uniform(0.1, 0.6, n) * level / 100.0 * rng.choice([-1.0, 1.0], n)
    return wf.sinusoid(np.full(n, 4000.0), np.zeros(n), amp) * wf.gaussian_envelope(np.full(n, 0.15), np.full(n, 0.1))


def _microphonic(rng: np.random.Generator, amp: np.ndarray) -> np.ndarray:
    """Cochlear microphonic: ringing at 1.5-3 kHz from ~0.4 ms, decaying over ~1 ms (Berlin et al. 2010)."""
    n = len(amp)
    ring = wf.sinusoid(rng.uniform(1500, 3000, n), rng.uniform(0, 2 * np.pi, n), amp)
    t = wf.T_MS[None, :]
    return ring * (np.exp(-np.maximum(t - 0.4, 0.0) / rng.uniform(0.7, 1.5, n)[:, None]) * (t >= 0.4))


def _mark(rng: np.random.Generator, x: np.ndarray, lat: np.ndarray, amp: np.ndarray, present: np.ndarray,
          noise_sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wave V label: marked on the waveform when in the window; beyond it (the clinic's longer epoch
    showed it) the true latency with marking jitter and the clean amplitude plus noise."""
    lat_mark = np.full(len(x), np.nan, dtype=np.float32)
    amp_mark = np.full(len(x), np.nan, dtype=np.float32)
    inside = present & (lat < wf.MARK_LIMIT_MS)
    lat_mark[inside], amp_mark[inside] = wf.mark_peak(x[inside], lat[inside])
    beyond = present & ~inside
    lat_mark[beyond] = lat[beyond] + rng.normal(0.0, 0.05, beyond.sum())
    amp_mark[beyond] = amp[beyond] + noise_sd[beyond] * rng.standard_normal(beyond.sum())
    return lat_mark, amp_mark


def _mark_early_waves(x: np.ndarray, lat: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
    """Waves I and III (EXTRA_WAVES) marked like wave V: the marker's point near the true latency
    where the wave is there (lat, present: (N 2)); the Records wave columns."""
    out = {"wave_present": present.astype(np.int8), "wave_latency": np.full(lat.shape, np.nan, np.float32),
           "wave_amplitude": np.full(lat.shape, np.nan, np.float32)}
    for k in range(lat.shape[1]):
        rows = np.flatnonzero(present[:, k])
        out["wave_latency"][rows, k], out["wave_amplitude"][rows, k] = wf.mark_peak(x[rows], lat[rows, k])
    return out


def generate(n_patients: int, seed: int = 0, *, domain: str = "narrow", catch_fraction: float = 0.0) -> Records:
    """Simulate ``n_patients`` patients (about 25.5 recordings each); deterministic in ``seed``.

    ``domain``: "narrow" (the clinical chain of docs/data.md 1.3) or "wide" (1.6: the same patients,
    protocol and physiology through a randomized recording chain). ``catch_fraction``: the share of
    patients that also get a catch session (1.7), appended after every real recording. The defaults
    give the same bytes as before either option existed."""
    if not 1 <= n_patients <= MAX_SYNTHETIC_PATIENTS:
        raise ValueError(f"synthetic patients: expected 1 to {MAX_SYNTHETIC_PATIENTS:,} (MAX_SYNTHETIC_PATIENTS), "
                         f"found {n_patients}")
    if seed < 0:
        raise ValueError(f"synthetic seed: expected an integer >= 0, found {seed}")
    if domain not in DOMAINS:
        raise ValueError(f"synthetic domain: expected one of {', '.join(DOMAINS)}, found {domain!r}")
    if not 0.0 <= catch_fraction <= 1.0:
        raise ValueError(f"synthetic catch_fraction: expected a share from 0 to 1, found {catch_fraction}")
    labels = draw_labels(np.random.default_rng([seed, 0]), n_patients)
    chunks = []  # (rng, patients, first patient id, chain, catch): drawn first so the output is allocated once
    for chunk, start in enumerate(range(0, n_patients, PATIENT_CHUNK)):
        rng = np.random.default_rng([seed, 1, chunk])
        pat = draw_patients(rng, labels[start : start + PATIENT_CHUNK])
        # Own streams: the real recordings' draws (and so their truth) are the same in every domain.
        chain = draw_chain(np.random.default_rng([seed, 3, chunk]), len(pat.label)) if domain != "narrow" else None
        if domain == "mixed":  # the narrow patients' chain is marked NaN: simulate_mixed records them narrow
            chain.delay_ms[np.random.default_rng([seed, 4, chunk]).random(len(pat.label)) >= MIXED_WIDE_SHARE] = np.nan
        catch = draw_catch(np.random.default_rng([seed, 2, chunk]), pat, catch_fraction) if catch_fraction else None
        chunks.append((rng, pat, start, chain, catch))
    n = int(sum(c[1].n_recordings.sum() + (len(c[4][1]) if c[4] else 0) for c in chunks))
    meta = {"kind": "synthetic", "generator": "data.synthetic", "patients": n_patients, "seed": seed}
    meta.update({k: v for k, v in (("domain", domain), ("catch_fraction", catch_fraction))
                 if v != {"domain": "narrow", "catch_fraction": 0.0}[k]})
    out = Records(
        signal=np.empty((n, SIGNAL_LENGTH), np.float32), static=np.empty((n, 4), np.float32),
        label=np.empty(n, np.int64), peak_mask=np.empty(n, bool), peak_latency=np.empty(n, np.float32),
        peak_amplitude=np.empty(n, np.float32), threshold=np.empty(n, np.float32), patient_id=np.empty(n, np.int64),
        wave_present=np.empty((n, 2), np.int8), wave_latency=np.empty((n, 2), np.float32),
        wave_amplitude=np.empty((n, 2), np.float32), meta={"source": meta},
    )
    row = 0
    for rng, pat, start, chain, _ in chunks:
        idx, level, rate = draw_protocol(rng, pat)
        idx, level, rate, sim = simulate_mixed(rng, pat, idx, level, rate, out=out.signal[row : row + len(idx)],
                                               chain=chain)
        row = _fill(out, row, sim, patient=start + idx, series=start + idx)  # one ear per patient: one series
    for _, pat, start, chain, catch in chunks:
        if catch:
            crng, idx, level, rate = catch
            idx, level, rate, sim = simulate_mixed(crng, no_stimulus(pat), idx, level, rate,
                                                   out=out.signal[row : row + len(idx)], chain=chain)
            row = _fill(out, row, sim, patient=start + idx, series=n_patients + start + idx)
    return out


def true_waves(n_patients: int, seed: int = 0) -> Waves:
    """The true (unmarked) waves I, III, V of ``generate(n_patients, seed)``'s recordings, in its row
    order (narrow domain, no catch sessions): the same draws replayed up to step 5, before any noise.
    For references that are told what the generator knows (bench/waves.py's cap), never for training."""
    labels = draw_labels(np.random.default_rng([seed, 0]), n_patients)
    parts = []
    for chunk, start in enumerate(range(0, n_patients, PATIENT_CHUNK)):
        rng = np.random.default_rng([seed, 1, chunk])
        pat = draw_patients(rng, labels[start : start + PATIENT_CHUNK])
        parts.append(physiology(rng, pat, *draw_protocol(rng, pat)))
    return Waves(**{f.name: np.concatenate([getattr(w, f.name) for w in parts]) for f in fields(Waves)})


def _fill(out: Records, row: int, columns: dict, *, patient: np.ndarray, series: np.ndarray) -> int:
    """Write simulate()'s columns (the signal is already in place) at ``row``; returns the next free row."""
    part = slice(row, row + len(patient))
    for name, values in columns.items():
        if name != "signal":
            getattr(out, name)[part] = values
    out.patient_id[part] = patient
    out.series_id[part] = series
    return part.stop


def catch_session_rows(series_id: np.ndarray, patient_id: np.ndarray) -> np.ndarray:
    """(N,) bool: the rows of :func:`generate`'s catch sessions, whose series id is not their patient's (each
    patient's one real series carries the patient's id, its catch session one past every patient's)."""
    return np.asarray(series_id) != np.asarray(patient_id)


def draw_catch(rng: np.random.Generator, pat: Patients, fraction: float
               ) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray] | None:
    """Catch sessions (docs/data.md 1.7): each patient with probability ``fraction`` gets one, of half as
    many recordings as its real series (so the patient's own class stays the most frequent label of its
    recordings, which the split stratifies by), at levels drawn evenly from the whole 0-100 dB grid and
    the clinical rates. Returns (rng, patient index, level, rate) or None when no patient got one."""
    has = rng.random(len(pat.label)) < fraction
    counts = np.where(has, (pat.n_recordings + 1) // 2, 0)
    if counts.sum() == 0:
        return None
    idx = np.repeat(np.arange(len(pat.label)), counts)
    level = rng.choice(LEVELS_DB, size=len(idx))
    rate = RATES[rng.choice(len(RATES), size=len(idx), p=RATE_P)]
    return rng, idx, level, rate


def no_stimulus(pat: Patients) -> Patients:
    """The patients as a catch session shows them: the same person, electrodes and noise, but nothing
    reached the ear, so no wave and no microphonic at any level: labelled like total loss (TOTAL,
    "no response"), which is what the recordings show (docs/data.md 1.7 gives the reason)."""
    p = len(pat.label)
    return dataclasses.replace(pat, label=np.full(p, TOTAL), threshold=np.full(p, np.inf),
                               disordered=np.zeros(p, bool), cm_amp=np.zeros(p))


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m data.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write a native .npz file")
    ap.add_argument("--patients", type=int, default=2000, help=f"1 to {MAX_SYNTHETIC_PATIENTS:,} (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help=">= 0 (default 0)")
    ap.add_argument("--domain", default="narrow", choices=DOMAINS,
                    help="wide: the same patients through a randomized recording chain (docs/data.md 1.6)")
    ap.add_argument("--catch-fraction", type=float, default=0.0,
                    help="share of patients with a catch session, 0 to 1 (docs/data.md 1.7; default 0)")
    ap.add_argument("--stats", type=Path, metavar="FILE", help="print the statistics of a native file")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    if args.out is None and args.stats is None:
        ap.error("give --out FILE to generate, or --stats FILE to summarize")
    return run_main(lambda: run(args), debug=args.debug, source=args.out or args.stats)


def run(args: argparse.Namespace) -> None:
    from data.convert import check_output
    from data.native import read_native, write_native
    from data.summary import format_summary, summarize

    if args.out is not None:  # every argument is checked before minutes of generation
        if not 1 <= args.patients <= MAX_SYNTHETIC_PATIENTS:
            raise ValueError(f"--patients: expected 1 to {MAX_SYNTHETIC_PATIENTS:,}, found {args.patients}")
        if args.seed < 0:
            raise ValueError(f"--seed: expected an integer >= 0, found {args.seed}")
        if not 0.0 <= args.catch_fraction <= 1.0:
            raise ValueError(f"--catch-fraction: expected a share from 0 to 1, found {args.catch_fraction}")
        if args.out.suffix.lower() != ".npz":
            raise ValueError(f"--out {args.out}: expected a .npz file name (the native format)")
        check_output(args.out, "--out", args.overwrite)
    if args.stats is not None and not args.stats.is_file():
        raise ValueError(f"--stats {args.stats}: file not found")
    if args.out is not None:
        records = generate(args.patients, args.seed, domain=args.domain, catch_fraction=args.catch_fraction)
        write_native(args.out, records)
        print(f"wrote {args.out}: {len(records)} recordings from {args.patients} patients (seed {args.seed})")
    if args.stats is not None:
        records, _ = read_native(args.stats)
        print(format_summary(summarize(records), title=str(args.stats)))


if __name__ == "__main__":
    sys.exit(main())

