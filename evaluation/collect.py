"""Run a trained network over a data split and return plain numpy arrays for the metrics.

Two passes per batch (DESIGN.md, network contract):
1. the auxiliary heads on the CLEAN signal with t = 0 (int64 zeros): class, wave V, threshold;
2. denoising: the clean signal is noised to x_t = q_sample(x0, t, ε) at a few noise levels, the
   network's signal output is turned into x̂0 with ``diffusion.predict_x0_eps`` and compared with x0.

Noise levels are named by their diffusion SNR ᾱ_t / (1 - ᾱ_t) in dB (on the standardized signal),
not by t, so they mean the same thing for any schedule and T: 0 dB is ᾱ = 0.5, the "moderate"
level the acceptance criterion refers to. ᾱ_t is read through the diffusion's own ``q_sample``
(q_sample(1, t, 0) = sqrt(ᾱ_t)), so nothing here depends on its buffer names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.stats import DataStats, to_physical

DEFAULT_SNR_LEVELS_DB: tuple[float, ...] = (10.0, 0.0, -10.0)
MODERATE_SNR_DB = 0.0


@dataclass
class NoiseLevel:
    snr_db: float  # diffusion SNR the level was chosen for (dB)
    t: int  # the timestep whose SNR is closest to it
    alpha_bar: float
    noisy: np.ndarray  # [N, L] x_t / sqrt(ᾱ_t): the noisy observation on the clean signal's scale
    estimate: np.ndarray  # [N, L] x̂0 from the network


@dataclass
class Collected:
    """Everything the metrics need, one row per recording of the split (N rows)."""

    label: np.ndarray  # int64 [N]
    proba: np.ndarray  # float [N, K] softmax of class_logits
    peak_mask: np.ndarray  # bool [N]
    peak_prob: np.ndarray  # float [N] sigmoid of peak_logit
    latency_true: np.ndarray  # ms [N] (meaningful where peak_mask)
    latency_pred: np.ndarray
    amplitude_true: np.ndarray  # µV [N]
    amplitude_pred: np.ndarray
    threshold_true: np.ndarray  # dB nHL [N]
    threshold_pred: np.ndarray
    static: np.ndarray  # [N, 4] physical units
    signal: np.ndarray  # [N, L] clean signal, in `units`
    units: str  # "µV" (global normalization undone) or "z-score" (per-sample normalization)
    levels: list[NoiseLevel] = field(default_factory=list)
    patient_id: np.ndarray | None = None  # int64 [N]; None when the split carries no patient ids
    series_id: np.ndarray | None = None  # int64 [N]: one intensity series (ear or session) of its patient

    @property
    def pred(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


def sqrt_alpha_bar(diffusion, t: torch.Tensor) -> torch.Tensor:
    """sqrt(ᾱ_t) [len(t)] through the diffusion's public q_sample (x0 = 1, ε = 0)."""
    device = next(iter(diffusion.buffers()), torch.empty(0)).device if isinstance(diffusion, torch.nn.Module) else "cpu"
    ones = torch.ones(len(t), 1, 1, device=device)
    return diffusion.q_sample(ones, t.to(device), torch.zeros_like(ones)).reshape(-1).cpu()


def timesteps_for_snr(diffusion, snr_levels_db: Sequence[float]) -> list[tuple[float, int, float]]:
    """For each SNR (dB), (snr_db, t, ᾱ_t) with t the timestep whose ᾱ/(1-ᾱ) is closest in dB."""
    t_all = torch.arange(diffusion.T, dtype=torch.int64)
    alpha_bar = sqrt_alpha_bar(diffusion, t_all).double() ** 2  # [T]
    snr_all_db = 10 * torch.log10(alpha_bar / (1 - alpha_bar).clamp_min(1e-12))
    out = []
    for s in snr_levels_db:
        t = int(torch.argmin((snr_all_db - s).abs()))
        out.append((float(s), t, float(alpha_bar[t])))
    return out


def _x0_from_output(diffusion, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    pred = diffusion.predict_x0_eps(model_out, x_t, t)
    return pred[0] if isinstance(pred, (tuple, list)) else pred


@torch.no_grad()
def collect(
    model: torch.nn.Module,
    diffusion,
    dataset: Dataset,
    stats: DataStats,
    *,
    snr_levels_db: Sequence[float] = DEFAULT_SNR_LEVELS_DB,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Collected:
    """Heads at t = 0 on the clean signal, and denoising at each level of ``snr_levels_db``.

    The noise ε is drawn from a CPU generator seeded with ``seed``: the same split, checkpoint and
    seed give the same numbers.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    levels = timesteps_for_snr(diffusion, snr_levels_db)
    rows: dict[str, list[torch.Tensor]] = {}
    noisy: list[list[torch.Tensor]] = [[] for _ in levels]
    est: list[list[torch.Tensor]] = [[] for _ in levels]
    units = "µV"
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x0 = batch["signal"].float().to(device)  # (B 1 L)
        static = batch["static"].float().to(device)  # (B 4)
        heads, units = _head_rows(model, batch, x0, static, stats)
        for key, value in heads.items():
            rows.setdefault(key, []).append(value.detach().cpu())
        for i, (noisy_i, est_i) in enumerate(_denoise_batch(model, diffusion, x0, static, stats, levels, gen)):
            noisy[i].append(noisy_i)
            est[i].append(est_i)
    if not rows:
        raise ValueError("collect: expected a non-empty dataset split, found 0 recordings")
    return _as_collected(rows, units, levels, noisy, est)


def _head_rows(model: torch.nn.Module, batch: dict[str, torch.Tensor], x0: torch.Tensor, static: torch.Tensor,
               stats: DataStats) -> tuple[dict[str, torch.Tensor], str]:
    """Pass 1 on one batch: the heads at t = 0 on the clean signal beside the batch's targets, and the
    clean signal in physical units; (rows, units)."""
    t0 = torch.zeros(len(x0), dtype=torch.int64, device=x0.device)
    out = model(x0, t0, static)
    heads = {
        "proba": torch.softmax(out["class_logits"].float(), dim=-1),
        "peak_prob": torch.sigmoid(out["peak_logit"].float().reshape(-1)),
        "latency_pred": out["peak_latency"].float().reshape(-1),
        "amplitude_pred": out["peak_amplitude"].float().reshape(-1),
        "threshold_pred": out["threshold"].float().reshape(-1),
        "label": batch["label"],
        "peak_mask": batch["peak_mask"],
        "latency_true": batch["peak_latency"],
        "amplitude_true": batch["peak_amplitude"],
        "threshold_true": batch["threshold"],
        "static": batch["static"],
    }
    for key in ("patient_id", "series_id"):
        if key in batch:
            heads[key] = batch[key]
    x0_phys, units = to_physical(x0, stats)
    heads["signal"] = x0_phys.flatten(1)
    return heads, units


def _denoise_batch(
    model: torch.nn.Module, diffusion, x0: torch.Tensor, static: torch.Tensor, stats: DataStats,
    levels: list[tuple[float, int, float]], gen: torch.Generator,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pass 2 on one batch: per level, (noisy x_t / sqrt(ᾱ_t), x̂0), each (B L) in physical units on the CPU.
    ε is drawn from ``gen`` level after level, so the numbers depend only on the seed."""
    device = x0.device
    out = []
    for _snr, t_level, _ab in levels:
        t = torch.full((len(x0),), t_level, dtype=torch.int64, device=device)
        eps = torch.randn(x0.shape, generator=gen).to(device)  # (B 1 L)
        x_t = diffusion.q_sample(x0, t, eps)
        x0_hat = _x0_from_output(diffusion, model(x_t, t, static)["signal"].float(), x_t, t)
        scale = sqrt_alpha_bar(diffusion, t.cpu()).to(device).reshape(-1, 1, 1)
        noisy = to_physical(x_t / scale, stats)[0].flatten(1).cpu()  # (B L)
        out.append((noisy, to_physical(x0_hat, stats)[0].flatten(1).cpu()))
    return out


def _as_collected(rows: dict[str, list[torch.Tensor]], units: str, levels: list[tuple[float, int, float]],
                  noisy: list[list[torch.Tensor]], est: list[list[torch.Tensor]]) -> Collected:
    """The batches' rows joined into one :class:`Collected`."""
    arr = {k: torch.cat(v).numpy() for k, v in rows.items()}
    return Collected(
        label=arr["label"].astype(np.int64),
        proba=arr["proba"],
        peak_mask=arr["peak_mask"].astype(bool),
        peak_prob=arr["peak_prob"],
        latency_true=arr["latency_true"],
        latency_pred=arr["latency_pred"],
        amplitude_true=arr["amplitude_true"],
        amplitude_pred=arr["amplitude_pred"],
        threshold_true=arr["threshold_true"],
        threshold_pred=arr["threshold_pred"],
        static=arr["static"],
        signal=arr["signal"],
        units=units,
        patient_id=arr["patient_id"].astype(np.int64) if "patient_id" in arr else None,
        series_id=arr["series_id"].astype(np.int64) if "series_id" in arr else None,
        levels=[
            NoiseLevel(snr, t, ab, torch.cat(noisy[i]).numpy(), torch.cat(est[i]).numpy())
            for i, (snr, t, ab) in enumerate(levels)
        ],
    )

def collect_train_targets(dataset: Dataset, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Labels of the TRAIN split that the trivial baselines are fitted on (no model involved)."""
    keys = ("label", "peak_mask")
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        for k in keys:
            rows[k].append(batch[k])
    if not rows["label"]:
        raise ValueError("collect_train_targets: expected a non-empty train split, found 0 recordings")
    return {k: torch.cat(v).numpy() for k, v in rows.items()}


# --------------------------------------------------------------------------------------------
# generation


GenerateFn = Callable[..., torch.Tensor]
"""``evaluation.generate.generate(model, diffusion, stats, static, n, sampler, steps, guidance,
generator) -> Tensor µV [n, 1, L]``; ``static`` is one condition, float [4] in physical units."""

DEFAULT_INTENSITY_BANDS: tuple[tuple[float, float], ...] = ((0.0, 40.0), (40.0, 70.0), (70.0, 101.0))


@dataclass
class GeneratedCondition:
    name: str  # e.g. "intensity 70-100 dB"
    static: np.ndarray  # [4] the condition generated for: median static of the group's recordings
    real: np.ndarray  # [M, L] the group's real recordings (units of Collected.signal)
    real_latency: np.ndarray  # ms, true wave V latencies of the group (where present)
    generated: np.ndarray  # [n, L]


def _like_dataset(gen_uv: np.ndarray, units: str) -> np.ndarray:
    """Generated µV signals on the scale the real ones are compared in."""
    if units == "µV":
        return gen_uv
    mu = gen_uv.mean(axis=1, keepdims=True)
    sd = gen_uv.std(axis=1, keepdims=True) + 1e-8
    return (gen_uv - mu) / sd


def generate_conditions(
    generate_fn: GenerateFn,
    model: torch.nn.Module,
    diffusion,
    stats: DataStats,
    col: Collected,
    *,
    n: int = 32,
    bands: Sequence[tuple[float, float]] = DEFAULT_INTENSITY_BANDS,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
) -> list[GeneratedCondition]:
    """One condition per stimulus-intensity band (intensity drives wave V latency and amplitude):
    the median static vector of the split's recordings in the band is generated ``n`` times and
    compared with those recordings. Bands without recordings are skipped."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    intensity = col.static[:, 1]
    for lo, hi in bands:
        members = (intensity >= lo) & (intensity < hi)
        if not members.any():
            continue
        static = np.median(col.static[members], axis=0).astype(np.float32)
        signals = generate_fn(model, diffusion, stats, torch.from_numpy(static), n, sampler, steps, guidance, gen)
        generated = _like_dataset(signals.detach().cpu().double().reshape(n, -1).numpy(), col.units)
        out.append(
            GeneratedCondition(
                name=f"intensity {lo:g}-{min(hi, 100.0):g} dB",
                static=static,
                real=col.signal[members],
                real_latency=col.latency_true[members & col.peak_mask],
                generated=generated,
            )
        )
    return out


def class_examples(
    col: Collected,
    n_classes: int,
    generate_fn: GenerateFn | None = None,
    model: torch.nn.Module | None = None,
    diffusion=None,
    stats: DataStats | None = None,
    *,
    level_index: int = 0,
    n_generated: int = 3,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
) -> dict[int, dict[str, np.ndarray]]:
    """Per class present in the split: one real recording (the first of that class with a wave V
    when there is one), its denoised version at noise level ``level_index``, and ``n_generated``
    signals generated for its static condition (omitted when ``generate_fn`` is None)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[int, dict[str, np.ndarray]] = {}
    for k in range(n_classes):
        idx = np.flatnonzero(col.label == k)
        if len(idx) == 0:
            continue
        with_peak = idx[col.peak_mask[idx]]
        i = int(with_peak[0] if len(with_peak) else idx[0])
        ex = {"real": col.signal[i], "static": col.static[i]}
        if col.levels:
            ex["noisy"] = col.levels[level_index].noisy[i]
            ex["denoised"] = col.levels[level_index].estimate[i]
            ex["snr_db"] = col.levels[level_index].snr_db  # the panel names the noise level it shows
        if generate_fn is not None:
            static = torch.from_numpy(col.static[i].astype(np.float32))
            signals = generate_fn(model, diffusion, stats, static, n_generated, sampler, steps, guidance, gen)
            ex["generated"] = _like_dataset(signals.detach().cpu().double().reshape(n_generated, -1).numpy(), col.units)
        out[k] = ex
    return out
