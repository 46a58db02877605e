"""A physiologically grounded synthetic ABR data set, generated patient by patient.

    python -m data.synthetic --out synthetic.npz --patients 2000 --seed 0
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

Generation is vectorized and deterministic: patients are simulated in fixed-size chunks, each with
its own seed derived from (seed, chunk index), so the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
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


def simulate(rng: np.random.Generator, pat: Patients, idx: np.ndarray, level: np.ndarray, rate: np.ndarray,
             out: np.ndarray | None = None) -> dict:
    """Waveforms and labels of the recordings (idx, level, rate); returns the Records columns.
    ``out``: an (N L) float32 array to build the signals in (saves a copy), else one is allocated."""
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

    x = np.zeros((n, SIGNAL_LENGTH), dtype=np.float32) if out is None else out  # (N L) µV
    x[:] = 0.0
    wf.add_wave(x, lat_i, amp_i, 0.22 + 0.05 * infant, BETA_I)
    wf.add_wave(x, lat_iii, amp_iii, 0.28 + 0.05 * infant, BETA_III)
    wf.add_wave(x, lat_v, amp_v, width_v, BETA_V)
    # 6. Residual noise (Elberling & Don 1984): 1/f^alpha EEG at a per-recording level, plus hum,
    #    myogenic bursts, stimulus artefact and, in neuropathy, the cochlear microphonic.
    sigma = (pat.noise[idx] * np.exp(rng.normal(0.0, 0.30, n))).astype(np.float32)
    noise_var = sigma.astype(np.float64) ** 2
    x += wf.coloured_noise(rng, sigma, rng.uniform(0.8, 1.8, n).astype(np.float32))
    noise_var += _add_subset(x, rng, pat.hum_prone[idx] & (rng.random(n) < 0.7) | (rng.random(n) < 0.03),
                             lambda r, s: _hum(r, s, sigma[s]))
    noise_var += _add_subset(x, rng, rng.random(n) < 0.05, lambda r, s: _myogenic_burst(r, s, sigma[s]))
    _add_subset(x, rng, (level >= 60) & (rng.random(n) < 0.08), lambda r, s: _artefact(r, level[s]))
    cm = pat.cm_amp[idx] * (level - 40.0) / 60.0
    _add_subset(x, rng, (cm > 0) & (level >= 50), lambda r, s: _microphonic(r, cm[s]))
    # 7. Labels as marked on the recorded average; FMP from the recording's own signal-to-noise.
    lat_mark, amp_mark = _mark(rng, x, lat_v, amp_v, present, np.sqrt(noise_var))
    waves = _mark_early_waves(x, np.stack([lat_i, lat_iii], axis=1), np.stack([amp_i, amp_iii], axis=1) > 0)
    fmp = wf.fmp(x, noise_var * np.exp(rng.normal(0.0, 0.15, n)))
    static = np.stack([np.floor(months / 12.0), level, rate, fmp], axis=1).astype(np.float32)
    threshold = np.where(np.isfinite(pat.threshold), np.clip(5.0 * np.ceil(pat.threshold / 5.0), 0, 100),
                         NO_RESPONSE_THRESHOLD_DB)[idx]
    return {"signal": x, "static": static, "label": label.astype(np.int64), "peak_mask": present,
            "peak_latency": lat_mark, "peak_amplitude": amp_mark, "threshold": threshold.astype(np.float32), **waves}


def _add_subset(x: np.ndarray, rng: np.random.Generator, rows: np.ndarray, make) -> np.ndarray:
    """x[rows] += make(rng, rows) for a boolean row mask; returns the added noise variance per row (N,)."""
    sel = np.flatnonzero(rows)
    var = np.zeros(len(x))
    if len(sel):
        add = make(rng, sel)
        x[sel] += add
        var[sel] = add.var(axis=1)
    return var


def _hum(rng: np.random.Generator, sel: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """50 Hz mains (Turkey) and its 3rd harmonic; a 10 ms window holds half a cycle, so it reads as a drift."""
    n = len(sel)
    amp = sigma * rng.uniform(0.5, 3.0, n)
    return (wf.sinusoid(np.full(n, 50.0), rng.uniform(0, 2 * np.pi, n), amp)
            + wf.sinusoid(np.full(n, 150.0), rng.uniform(0, 2 * np.pi, n), 0.3 * amp))


def _myogenic_burst(rng: np.random.Generator, sel: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """A short burst of muscle activity (300-1500 Hz) at a random time in the window."""
    n = len(sel)
    burst = wf.band_noise(rng, (sigma * rng.uniform(2.0, 6.0, n)).astype(np.float32), 300.0, 1500.0)
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


def generate(n_patients: int, seed: int = 0) -> Records:
    """Simulate ``n_patients`` patients (about 25.5 recordings each); deterministic in ``seed``."""
    if not 1 <= n_patients <= MAX_SYNTHETIC_PATIENTS:
        raise ValueError(f"synthetic patients: expected 1 to {MAX_SYNTHETIC_PATIENTS:,} (MAX_SYNTHETIC_PATIENTS), "
                         f"found {n_patients}")
    if seed < 0:
        raise ValueError(f"synthetic seed: expected an integer >= 0, found {seed}")
    labels = draw_labels(np.random.default_rng([seed, 0]), n_patients)
    chunks = []  # (rng, patients, first patient id): drawn first so the output can be allocated once
    for chunk, start in enumerate(range(0, n_patients, PATIENT_CHUNK)):
        rng = np.random.default_rng([seed, 1, chunk])
        chunks.append((rng, draw_patients(rng, labels[start : start + PATIENT_CHUNK]), start))
    n = int(sum(pat.n_recordings.sum() for _, pat, _ in chunks))
    out = Records(
        signal=np.empty((n, SIGNAL_LENGTH), np.float32), static=np.empty((n, 4), np.float32),
        label=np.empty(n, np.int64), peak_mask=np.empty(n, bool), peak_latency=np.empty(n, np.float32),
        peak_amplitude=np.empty(n, np.float32), threshold=np.empty(n, np.float32), patient_id=np.empty(n, np.int64),
        wave_present=np.empty((n, 2), np.int8), wave_latency=np.empty((n, 2), np.float32),
        wave_amplitude=np.empty((n, 2), np.float32),
        meta={"source": {"kind": "synthetic", "generator": "data.synthetic", "patients": n_patients, "seed": seed}},
    )
    row = 0
    for rng, pat, start in chunks:
        idx, level, rate = draw_protocol(rng, pat)
        part = slice(row, row + len(idx))
        for name, values in simulate(rng, pat, idx, level, rate, out=out.signal[part]).items():
            if name != "signal":
                getattr(out, name)[part] = values
        out.patient_id[part] = start + idx
        out.series_id[part] = start + idx  # one ear per simulated patient: one series each
        row += len(idx)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m data.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write a native .npz file")
    ap.add_argument("--patients", type=int, default=2000, help=f"1 to {MAX_SYNTHETIC_PATIENTS:,} (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help=">= 0 (default 0)")
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
        if args.out.suffix.lower() != ".npz":
            raise ValueError(f"--out {args.out}: expected a .npz file name (the native format)")
        check_output(args.out, "--out", args.overwrite)
    if args.stats is not None and not args.stats.is_file():
        raise ValueError(f"--stats {args.stats}: file not found")
    if args.out is not None:
        records = generate(args.patients, args.seed)
        write_native(args.out, records)
        print(f"wrote {args.out}: {len(records)} recordings from {args.patients} patients (seed {args.seed})")
    if args.stats is not None:
        records, _ = read_native(args.stats)
        print(format_summary(summarize(records), title=str(args.stats)))


if __name__ == "__main__":
    sys.exit(main())

