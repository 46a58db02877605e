"""Vectorized pieces of a synthetic averaged ABR: wave transients, residual noise, the peak marker, FMP.

All functions work on N recordings at once, in float32, on the pipeline's time grid
``T_MS`` (200 samples, 0-9.95 ms at 20 kHz). Physiology (which latency, amplitude and width each
wave gets) lives in ``data/synthetic.py``; this module only turns those numbers into samples.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from data.records import SAMPLE_RATE_HZ, SIGNAL_LENGTH

DT_MS = 1e3 / SAMPLE_RATE_HZ  # 0.05 ms per sample
T_MS = (np.arange(SIGNAL_LENGTH) * DT_MS).astype(np.float32)  # (L,)
N_FFT = 256  # noise is synthesized on 12.8 ms and cropped to 10 ms, so it is not periodic in the window
MAX_NOISE_HZ = 5000.0  # bins above carry < 3 % of the band-limited power; they are left at zero
FREQS_HZ = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE_HZ)[: int(MAX_NOISE_HZ * N_FFT / SAMPLE_RATE_HZ) + 1]  # (K,)
LOG_F = np.log(np.maximum(FREQS_HZ, 1.0)).astype(np.float32)  # (K,)
# Clinical recording filter 100-3000 Hz (Hood 1998): |H|^2 of a 1st-order high-pass, 2nd-order low-pass.
_F = np.maximum(FREQS_HZ, 1.0)
BAND_POWER = (1.0 / (1.0 + (100.0 / _F) ** 2) / (1.0 + (_F / 3000.0) ** 4)).astype(np.float32)
BAND_POWER[0] = 0.0  # no DC
# A peak is marked on the stored average when its latency is below this: the marker's ±0.25 ms search
# and the parabola's neighbours then lie inside the 10 ms window. Later peaks (a clinic's longer epoch
# showed them) are "beyond the window": data.synthetic labels them from the true latency.
MARK_LIMIT_MS = 9.6
MARK_SEARCH_MS = 0.25  # the marker takes the largest sample within this of the true latency
FMP_WINDOW = slice(int(round(2.0 / DT_MS)), SIGNAL_LENGTH)  # 2-10 ms, where waves I-V and the SN10 lie


def peak_offset(beta: float) -> float:
    """Where w(u) = exp(-u²/2)(1 - βu) peaks, in units of its width: the negative root of βu² - u - β."""
    return (1.0 - np.sqrt(1.0 + 4.0 * beta**2)) / (2.0 * beta)


def add_wave(x: np.ndarray, peak_ms: np.ndarray, amplitude: np.ndarray, width: np.ndarray, beta: float) -> None:
    """x += one ABR wave: a positive peak followed by its negative trough, in place.

    w(t) = κ A exp(-u²/2) (1 - β u),  u = (t - μ) / σ.   (a Gaussian times a linear ramp)
    β sets the trough: 0 is a pure Gaussian peak, 3 gives a trough about half the peak, ∞ the
    Gaussian derivative. μ and κ are chosen so the clean waveform peaks exactly at ``peak_ms``
    with value ``amplitude``. x: (N L); peak_ms, amplitude (µV), width σ (ms): (N,). Rows with
    zero amplitude are skipped.
    """
    rows = np.flatnonzero(amplitude)
    if len(rows) == 0:
        return
    u_star = peak_offset(beta)
    kappa = 1.0 / (np.exp(-0.5 * u_star**2) * (1.0 - beta * u_star))
    mu, sigma = peak_ms[rows] - u_star * width[rows], width[rows]  # (R,)
    # Only the columns within μ ± 5σ of some row (beyond, |w| < 1e-4 A): waves I and III span half the window.
    lo = max(int(np.floor((mu - 5 * sigma).min() / DT_MS)), 0)
    hi = min(int(np.ceil((mu + 5 * sigma).max() / DT_MS)) + 1, SIGNAL_LENGTH)
    if lo >= hi:
        return
    inv = np.sqrt(0.5) / sigma  # (R,) so that z² = u²/2
    ka = kappa * amplitude[rows]  # (R,)
    z = np.multiply.outer(inv.astype(np.float32), T_MS[lo:hi])  # (R C)
    z -= (mu * inv).astype(np.float32)[:, None]
    slope = (-beta * np.sqrt(2.0)) * ka  # κA(1 - βu) = κA - κAβ√2 z
    ramp = z * slope.astype(np.float32)[:, None]  # (R C)
    ramp += ka.astype(np.float32)[:, None]
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    z *= ramp
    if len(rows) == len(x):
        x[:, lo:hi] += z
    else:
        x[rows, lo:hi] += z


def coloured_noise(rng: np.random.Generator, sigma: np.ndarray, alpha: np.ndarray,
                   band_power: np.ndarray = BAND_POWER) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ f^-alpha · band_power and standard deviation sigma.

    sigma, alpha: (N,). Returns (N L) float32. Synthesized in the frequency domain: complex Gaussian
    coefficients X_k = a_k (U + iV) (Box-Muller from uniforms, the cheapest exact Gaussian here),
    one inverse FFT on N_FFT points, cropped to L. Each time sample then has variance
    4 Σ_k a_k² / N_FFT² (Parseval), so the scale is exact rather than estimated from the draw.
    """
    n, k = len(sigma), len(FREQS_HZ)
    power = np.exp(np.multiply.outer(-alpha.astype(np.float32), LOG_F)) * band_power  # (N K)
    scale = sigma / np.sqrt(4.0 * power.sum(axis=1) / N_FFT**2)  # (N,)
    u = rng.random((2, n, k), dtype=np.float32)  # (2 N K)
    radius = np.sqrt(np.float32(-2.0) * np.log1p(-u[0]))  # (N K) Rayleigh
    radius *= np.sqrt(power)
    radius *= scale.astype(np.float32)[:, None]
    phase = u[1] * np.float32(2.0 * np.pi)
    spec = np.zeros((n, N_FFT // 2 + 1), dtype=np.complex64)  # (N K_full)
    spec.real[:, :k] = radius * np.cos(phase)
    spec.imag[:, :k] = radius * np.sin(phase)
    return scipy.fft.irfft(spec, n=N_FFT, axis=1, workers=1)[:, :SIGNAL_LENGTH]


def band_noise(rng: np.random.Generator, sigma: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    """White noise limited to [lo_hz, hi_hz] with standard deviation sigma (N,): (N L)."""
    band = ((lo_hz <= FREQS_HZ) & (hi_hz >= FREQS_HZ)).astype(np.float32)
    return coloured_noise(rng, sigma, np.zeros_like(sigma), band_power=band)


def sinusoid(freq_hz: np.ndarray, phase: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """amplitude · sin(2π f t + phase): (N L); all arguments (N,), t in ms."""
    arg = np.multiply.outer((2e-3 * np.pi * freq_hz).astype(np.float32), T_MS)  # (N L)
    arg += phase.astype(np.float32)[:, None]
    return amplitude.astype(np.float32)[:, None] * np.sin(arg)


def gaussian_envelope(centre_ms: np.ndarray, width_ms: np.ndarray) -> np.ndarray:
    """exp(-(t - centre)² / (2 width²)): (N L)."""
    return np.exp(-0.5 * np.square((T_MS[None, :] - centre_ms[:, None]) / width_ms[:, None])).astype(np.float32)


def mark_peak(x: np.ndarray, latency: np.ndarray, search_ms: float = MARK_SEARCH_MS) -> tuple[np.ndarray, np.ndarray]:
    """Mark a peak the way a clinician does on the recorded average.

    The marker picks the largest sample of the recorded waveform x (N L) within ±search_ms of the
    true peak latency (N,), and refines it by parabolic interpolation through its two neighbours.
    Returns (latency ms, amplitude µV) of the marked point: the amplitude is the waveform's value
    there (baseline-to-peak, against the recording's zero line). Latencies must lie in the window.
    """
    half = int(round(search_ms / DT_MS))
    rows = np.arange(len(x))
    centre = np.clip(np.rint(latency / DT_MS).astype(np.int64), half + 1, SIGNAL_LENGTH - half - 2)  # (N,)
    cols = centre[:, None] + np.arange(-half, half + 1)[None, :]  # (N W)
    best = cols[rows, np.argmax(x[rows[:, None], cols], axis=1)]  # (N,) sample index of the maximum
    y0, ym, yp = x[rows, best], x[rows, best - 1], x[rows, best + 1]
    curv = ym - 2.0 * y0 + yp
    vertex = (y0 >= ym) & (y0 >= yp) & (curv < 0)  # a local maximum (not the edge of a slope)
    offset = np.where(vertex, np.clip(0.5 * (ym - yp) / np.where(vertex, curv, -1.0), -0.5, 0.5), 0.0)
    amp = y0 - 0.25 * (ym - yp) * offset
    return ((best + offset) * DT_MS).astype(np.float32), amp.astype(np.float32)


def fmp(x: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """F-ratio of the recorded average: its variance over 2-10 ms over the residual-noise variance.

    The quality measure of Elberling & Don (1984): the variance of the average against the variance
    its residual noise alone would give (estimated clinically from a single point across sweeps).
    About 1 with no response; it grows with the response's signal-to-noise ratio.
    """
    return (x[:, FMP_WINDOW].var(axis=1) / noise_var).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# the wide domain's recording filter (data/synthetic.py, data.synthetic.domain=wide)

EXT_WINDOWS = 3  # waves are drawn on -10..20 ms (three windows) so filtering sees no edge at 0 or 10 ms
EXT_FFT = 2048  # 102 ms: the filtered record does not wrap around (a 30 Hz high-pass decays within ~20 ms)
EXT_FREQS_HZ = np.fft.rfftfreq(EXT_FFT, 1.0 / SAMPLE_RATE_HZ)  # (K_ext,)


def zero_phase_gain(freq_hz: np.ndarray, highpass_hz: np.ndarray, lowpass_hz: np.ndarray, hp_order: np.ndarray,
                    lp_order: np.ndarray) -> np.ndarray:
    """Amplitude response G(f) = |H_hp(f) H_lp(f)|² of Butterworth high- and low-pass filters run forward
    and backward (``scipy.signal.filtfilt``): zero phase, so a peak stays where it was unless the filter
    reshapes the wave. freq_hz broadcasts against the (N 1) filter settings: (N K); 0 at DC."""
    f = np.maximum(np.asarray(freq_hz, dtype=np.float64), 1e-9)
    hp = 1.0 / (1.0 + (highpass_hz[:, None] / f) ** (2 * hp_order[:, None]))
    lp = 1.0 / (1.0 + (f / lowpass_hz[:, None]) ** (2 * lp_order[:, None]))
    return np.where(np.asarray(freq_hz) > 0, hp * lp, 0.0)


LOWPASS_ORDER = 8  # Butterworth order of lowpass_zero_phase (run twice: -6 dB at the cutoff, 1/20 of the power at 1.2x)


def lowpass_zero_phase(x: np.ndarray, cutoff_hz: float, order: int = LOWPASS_ORDER) -> np.ndarray:
    """x (N L) through a Butterworth low-pass run forward and backward (``scipy.signal.sosfiltfilt``, odd
    extension at the ends): zero phase, DC and the waves' band kept, nothing above ``cutoff_hz``. float64 (N L)."""
    import scipy.signal

    if not 0.0 < cutoff_hz < SAMPLE_RATE_HZ / 2:
        raise ValueError(f"low-pass cutoff: expected a frequency in (0, {SAMPLE_RATE_HZ / 2:g}) Hz, found {cutoff_hz}")
    sos = scipy.signal.butter(order, cutoff_hz, fs=SAMPLE_RATE_HZ, output="sos")
    return np.ascontiguousarray(scipy.signal.sosfiltfilt(sos, np.asarray(x, dtype=np.float64), axis=-1))


def filter_zero_phase(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """x (N M), M <= EXT_FFT, filtered by the amplitude response gain (N EXT_FFT//2+1) at EXT_FREQS_HZ,
    zero-padded (no wrap-around within M); returns (N M) float32."""
    spec = scipy.fft.rfft(x, n=EXT_FFT, axis=1, workers=1) * gain  # (N K_ext)
    return scipy.fft.irfft(spec, n=EXT_FFT, axis=1, workers=1)[:, : x.shape[1]].astype(np.float32)

