"""SeriesNet: reads one intensity series and answers per series (DESIGN.md, "Patient level").

One recording cannot hold a threshold; the series of one ear can. Each recording becomes one token:
its *evidence* from the frozen ABRNet at t = 0 (the pooled shared features h and z, the five head
outputs) and its static parameters, plus a Fourier encoding of its intensity (the level is what a
clinician reads the series by). A small Transformer encoder lets every level see every other (the
rule "lowest level with a reproducible wave V" needs the levels above; the type of loss shows in
how wave V's latency and amplitude change with level), then masked attention + mean pooling gives
one vector per series and two heads:

    evidence (B S F), intensity (B S) dB nHL, mask (B S) True where a recording is
      -> threshold_logits (B 22): 0, 5, ..., 100 dB nHL and "no response"
      -> type_logits      (B K):  hearing-loss type of the series

Sizes: S recordings per series (padded), F evidence features, W the token width.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from data.records import SAMPLE_RATE_HZ
from data.waveform import zero_phase_gain

N_STATIC_FEATURES = 4  # age, intensity, rate, FMP: see static_features

# Level coherence (level_coherence): how much a recording looks like its series' neighbours.
COHERENCE_BAND_HZ = (150.0, 2000.0)  # waves I-V and the SN10's upper half; below, 1/f noise has few cycles
COHERENCE_WINDOW_MS = (1.0, 9.5)  # where the waves lie (the first millisecond holds stimulus artefacts)
NEIGHBOUR_LAG_MS = 0.5  # wave V moves about 0.2-0.4 ms per 10 dB step
TEMPLATE_LAG_MS = 2.0  # from the loudest level down to threshold wave V moves up to about 2 ms
N_COHERENCE = 3  # features per recording: louder neighbour, quieter neighbour, loudest recording

# The cochlear microphonic (microphonic_index): ringing at 1.5-3 kHz from about 0.4 ms, decaying over about
# 1 ms. The window starts after the stimulus artefact (a 4 kHz burst in the first 0.5 ms); chosen on a
# development cohort (5,000 patients, generator seed 777): 70 % of neuropathy series above the 95th
# percentile of total-loss series (mean over levels >= 70 dB), against 68 % for 0.3-2.0 ms.
MICROPHONIC_BAND_HZ = (1500.0, 3500.0)
MICROPHONIC_WINDOW_MS = (0.6, 2.0)
MICROPHONIC_BACKGROUND_MS = (6.0, 9.5)
N_MICROPHONIC = 1


def static_features(static: Tensor) -> Tensor:
    """(B 4) physical units -> (B 4) on comparable scales: intensity/100, rate/50, log1p age, log1p FMP."""
    age, level, rate, fmp = static.float().unbind(-1)
    return torch.stack([level / 100.0, rate / 50.0, torch.log1p(age.clamp_min(0)),
                        torch.log1p(fmp.clamp_min(0))], dim=-1)


@torch.no_grad()
def recording_evidence(net: nn.Module, x0: Tensor, static: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """One pass of the frozen network at t = 0 over clean recordings x0 (B 1 L) with static (B 4).

    Returns the network's outputs and the evidence (B F): mean-pooled h (B C0) and z (B Cz), class
    logits (B K), wave V logit, latency, amplitude, threshold (B 1 each), the waves' answers from the
    wave map head (B 12, :func:`wave_features`), static features (B 4).
    """
    t0 = torch.zeros(len(x0), dtype=torch.int64, device=x0.device)
    out = net(x0, t0, static, return_features=True)
    h, z = out.pop("features")  # (B L C0), (B Lb Cz)
    scalars = [out[k].float().reshape(-1, 1) for k in ("peak_logit", "peak_latency", "peak_amplitude", "threshold")]
    evidence = torch.cat([h.float().mean(1), z.float().mean(1), out["class_logits"].float(), *scalars,
                          *wave_features(out), static_features(static)], dim=1)  # (B F)
    return out, evidence


def wave_features(out: dict[str, Tensor]) -> list[Tensor]:
    """The wave map head's per-wave answers as evidence (none from the pooled head): presence logits,
    latencies (ms) and amplitudes (µV) of waves I, III, V (B 3 each) and the interpeak intervals
    I-III, III-V, I-V (B 3), which neuropathy and retrocochlear lesions prolong."""
    if "wave_presence" not in out:
        return []
    lat = out["wave_latency"].float()  # (B 3)
    ipl = torch.stack([lat[:, 1] - lat[:, 0], lat[:, 2] - lat[:, 1], lat[:, 2] - lat[:, 0]], dim=1)  # (B 3)
    return [out["wave_presence"].float(), lat, out["wave_amplitude"].float(), ipl]


def level_coherence(signal: np.ndarray | Tensor, members: list[np.ndarray], chunk: int = 8192) -> np.ndarray:
    """How much each recording looks like the others of its series, as a clinician checks a response by
    its replication and by following wave V down the waterfall: (N L) signals at SAMPLE_RATE_HZ and the
    rows of each series ordered by level (``members``, loudest last) -> (N N_COHERENCE) float32.

    Columns: the largest normalized cross-correlation (band COHERENCE_BAND_HZ, window COHERENCE_WINDOW_MS)
    with the next louder recording (lags within NEIGHBOUR_LAG_MS), with the next quieter one (the same pair's
    value), and with the series' loudest recording (lags within TEMPLATE_LAG_MS; 1 for the loudest itself).
    0 where there is no such neighbour (a series of one). A response repeats across levels (about 0.8 at
    loud levels); noise does not (about 0.2-0.5, the maximum over lags of chance correlations). The value is
    the same whatever the stated levels say, beyond the order they give the recordings."""
    N = len(signal)
    lo, hi = (int(round(ms * SAMPLE_RATE_HZ / 1000)) for ms in COHERENCE_WINDOW_MS)
    w = band_passed(signal, COHERENCE_BAND_HZ, 2, chunk)[:, lo:hi]  # (N W) band-passed window
    w = w - w.mean(1, keepdim=True)
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    louder = [(m[:-1], m[1:]) for m in members if len(m) > 1]  # (row, its louder neighbour)
    loudest = [(m[:-1], np.full(len(m) - 1, m[-1])) for m in members if len(m) > 1]
    out = np.zeros((N, N_COHERENCE), dtype=np.float32)
    if not louder:
        return out
    a, b = (np.concatenate(v) for v in zip(*louder, strict=True))
    pair = _max_xcorr(w, a, b, NEIGHBOUR_LAG_MS, chunk)  # (P,)
    out[a, 0], out[b, 1] = pair, pair
    a, b = (np.concatenate(v) for v in zip(*loudest, strict=True))
    out[a, 2] = _max_xcorr(w, a, b, TEMPLATE_LAG_MS, chunk)
    out[[m[-1] for m in members if len(m) > 1], 2] = 1.0
    return out


def band_passed(signal: np.ndarray | Tensor, band_hz: tuple[float, float], order: int, chunk: int = 8192) -> Tensor:
    """(N L) signals at SAMPLE_RATE_HZ through Butterworth high- and low-pass filters of ``order`` at ``band_hz``,
    zero phase (the square root of data.waveform.zero_phase_gain's power response): (N L) float32. Each
    recording's straight line (offset and drift) is removed first: the zero padding would turn it into steps at
    the ends, which the band-pass rings on."""
    x = signal.detach().float() if isinstance(signal, Tensor) else torch.as_tensor(np.asarray(signal),
                                                                                   dtype=torch.float32)  # (N L)
    N, L = x.shape
    t = torch.linspace(-1.0, 1.0, L, device=x.device)
    x = x - x.mean(1, keepdim=True)
    x = x - (x @ t / (t @ t))[:, None] * t
    n_fft = 1 << int(math.ceil(math.log2(3 * L)))  # room for the filter's ringing and every lag
    gain = np.sqrt(zero_phase_gain(np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE_HZ),
                                   *(np.array([v]) for v in (*band_hz, order, order))))[0]
    band = torch.from_numpy(gain).float().to(x.device)
    if not N:
        return x
    return torch.cat([torch.fft.irfft(torch.fft.rfft(x[i:i + chunk], n_fft) * band, n_fft)[:, :L]
                      for i in range(0, N, chunk)])


def microphonic_index(signal: np.ndarray | Tensor) -> np.ndarray:
    """How strongly a recording rings where a cochlear microphonic would, the sign clinicians read for
    auditory neuropathy (a microphonic without neural waves; Berlin et al. 2010): (N L) signals (any scale)
    -> (N N_MICROPHONIC) float32, the log ratio of the MICROPHONIC_BAND_HZ band's mean power in
    MICROPHONIC_WINDOW_MS to its mean power in MICROPHONIC_BACKGROUND_MS (where no microphonic rings). About 0
    for a recording without one; the series model reads it beside the level (the microphonic grows with it)."""
    return microphonic_log_ratio(signal)[:, None].cpu().numpy()


# The residual noise level (residual_rms): what a recording holds above a RESIDUAL_SMOOTH_MS centred moving average,
# about 1 kHz up, where the waves carry little and the averaged EEG most.
RESIDUAL_SMOOTH_MS = 0.5


def residual_rms(signal: np.ndarray | Tensor) -> Tensor:
    """(N L) signals -> (N,) float32, in the signals' unit: the RMS of x minus its centred RESIDUAL_SMOOTH_MS
    moving average (edges: the nearest value), on the signal's device. Slow waves barely reach it; white
    noise mostly does. The bench compares it (bench/virtual_patients.py) and ``model.noise_conditioning`` reads it."""
    x = torch.as_tensor(signal).float()  # (N L)
    width = int(round(RESIDUAL_SMOOTH_MS * SAMPLE_RATE_HZ / 1000)) | 1  # 11 samples at 20 kHz: odd, centred
    padded = nn.functional.pad(x[:, None], (width // 2, width // 2), mode="replicate")  # (N 1 L+width-1)
    smooth = nn.functional.avg_pool1d(padded, width, stride=1)[:, 0]  # (N L)
    return (x - smooth).pow(2).mean(1).sqrt()


def microphonic_log_ratio(signal: np.ndarray | Tensor) -> Tensor:
    """:func:`microphonic_index`'s value as a tensor (N,) on the signal's device (a training batch's)."""
    x = band_passed(signal, MICROPHONIC_BAND_HZ, 4)  # (N L)
    power = [x[:, slice(*(int(round(ms * SAMPLE_RATE_HZ / 1000)) for ms in window))].pow(2).mean(1)
             for window in (MICROPHONIC_WINDOW_MS, MICROPHONIC_BACKGROUND_MS)]  # 2 x (N,)
    return torch.log(power[0].clamp_min(1e-20) / power[1].clamp_min(1e-20))


def _max_xcorr(w: Tensor, a: np.ndarray, b: np.ndarray, lag_ms: float, chunk: int) -> np.ndarray:
    """Rows a and b of unit-norm windows w (N W): the largest cross-correlation over lags within ``lag_ms``, (P,)."""
    W = w.shape[1]
    lag = int(round(lag_ms * SAMPLE_RATE_HZ / 1000))
    n = 1 << int(math.ceil(math.log2(2 * W)))  # no circular wrap of lags up to W
    lags = torch.cat([torch.arange(0, lag + 1), torch.arange(n - lag, n)])  # b shifted later, then earlier
    out = []
    for i in range(0, len(a), chunk):
        ia, ib = torch.from_numpy(a[i:i + chunk]), torch.from_numpy(b[i:i + chunk])
        cc = torch.fft.irfft(torch.fft.rfft(w[ib], n) * torch.fft.rfft(w[ia], n).conj(), n)  # (P n)
        out.append(cc[:, lags].amax(1))
    return torch.cat(out).numpy()


class SeriesNet(nn.Module):
    def __init__(self, n_features: int, n_types: int, n_threshold: int, width: int = 64, heads: int = 4,
                 layers: int = 2, dropout: float = 0.1, n_freq: int = 8, coherence: bool = False,
                 waterfall: bool = False, microphonic: bool = False):
        super().__init__()
        # Whether the evidence's last N_COHERENCE columns are level_coherence's (series.coherence): the
        # callers build the evidence (training.series.SeriesSet); n_features counts them.
        self.coherence = coherence
        self.waterfall = waterfall  # then N_WATERFALL columns: the waves read down the waterfall
        self.microphonic = microphonic  # then N_MICROPHONIC columns: microphonic_index
        # Evidence standardization, fitted on the training series (fit_normalizer) and saved with the weights.
        self.register_buffer("mu", torch.zeros(n_features))  # (F)
        self.register_buffer("sd", torch.ones(n_features))  # (F)
        # Intensity periods 200/k dB, k = 1..n_freq: from the whole 0-100 dB range down to 25 dB.
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, n_freq + 1, dtype=torch.float32) / 200.0)
        self.embed = nn.Sequential(nn.Linear(n_features + 2 * n_freq, width), nn.GELU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.query = nn.Parameter(torch.randn(width) / math.sqrt(width))  # attention pooling
        self.threshold_head = nn.Linear(2 * width, n_threshold)
        self.type_head = nn.Linear(2 * width, n_types)

    READS = ("coherence", "waterfall", "microphonic")  # the evidence columns beyond the network's (series.*)

    def reads(self) -> dict[str, bool]:
        """Which further columns this model's evidence holds, as training.series.SeriesSet takes them."""
        return {k: getattr(self, k) for k in self.READS}

    @torch.no_grad()
    def fit_normalizer(self, evidence: Tensor) -> None:
        """evidence (N F): the training recordings' evidence."""
        self.mu.copy_(evidence.mean(0))
        self.sd.copy_(evidence.std(0).clamp_min(1e-4))

    def forward(self, evidence: Tensor, intensity: Tensor, mask: Tensor) -> dict[str, Tensor]:
        x = (evidence - self.mu) / self.sd  # (B S F)
        angle = intensity.float()[..., None] * self.freqs  # (B S n_freq)
        tok = self.embed(torch.cat([x, angle.sin(), angle.cos()], dim=-1))  # (B S W)
        tok = self.norm(self.encoder(tok, src_key_padding_mask=~mask))  # (B S W)
        score = (tok @ self.query / math.sqrt(tok.shape[-1])).masked_fill(~mask, float("-inf"))  # (B S)
        attn = torch.softmax(score, dim=1)[..., None]  # (B S 1)
        m = mask[..., None].float()  # (B S 1)
        pooled = torch.cat([(attn * tok).sum(1), (m * tok).sum(1) / m.sum(1).clamp_min(1)], dim=-1)  # (B 2W)
        return {"threshold_logits": self.threshold_head(pooled), "type_logits": self.type_head(pooled)}
