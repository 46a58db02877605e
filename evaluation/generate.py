"""Generate ABR signals for one clinical condition from a trained run.

    python -m evaluation.generate --run logs/EXP --n 64 --intensity 80 --age 0.5 --rate 21.1 \\
        --fmp 300 --sampler ddim --steps 50 --guidance 2.0

A run trained with ``model.label_conditioning`` (issue 28) also takes the hearing-loss type and threshold,
each on its own (the other stays its null), both, or neither; and a series mode makes virtual patients,
one whole intensity series each (docs/generate.md):

    python -m evaluation.generate --run logs/EXP --n 8 --type SNIK --threshold 60 --levels 20,40,60,80

``--n`` is then the number of series (patients), each with one signal per level of ``--levels``. "One
set of individual traits" means here: a series' signals share the age, rate and FMP asked for, the type
and threshold asked for, and a share (``--share``, default SERIES_SHARE) of every noise draw of the
sampler, the starting noise x_T and (ddpm, ddim with eta > 0) each step's noise; the rest of each draw is
the level's own. The network has no explicit latent for an individual, so x_T carries both the
individual and the recording's residual noise: with every draw shared (``--share 1``) the same noise
pattern came back at every level, which no real series shows (its recordings are averaged from separate
sweeps) and which the series model, reading each recording beside its neighbours, took for a response at
every level (requested SNİK series read back SNİK 0 of 21 times on a development cohort; 48 % at 0.5).

writes ``logs/EXP/eval/generated.npz`` and ``generated.png`` beside it (``--out FILE.npz`` names
another file), and says where. The run is loaded with
:func:`training.checkpoint.load_run`, which puts the EMA weights into the model when the run has
them, so sampling uses the EMA weights. Sampler, steps, eta, guidance and clipping default to the
run's ``diffusion`` config section.

The .npz follows the native data format's conventions (data/native.py): ``signal`` float32
(N, 200) in µV, ``static`` float32 (N, 4) age, intensity, rate, FMP, and a JSON ``meta`` member
with ``format_version``, ``sample_rate_hz``, ``units`` and the generation settings (with ``type``,
``threshold`` and ``levels`` as asked for: null when not given). It has no labels, peaks or thresholds
(a generated signal has none: the requested type and threshold are conditions, kept in ``meta``), so
its ``meta.format`` is ``abr-generated`` and ``data.native.read_native`` does not take it as a
training file. The series mode adds ``series_id`` int64 (N,) (0 .. n-1, the rows of a series
together, in the order of ``--levels``), and its PNG is the first series' waterfall.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from data.cli import ArgumentParser, check_number, check_outputs, number, phase, resolve_device, run_main
from data.files import write_atomic
from data.native import standard_meta
from data.records import CLASS_NAMES, RANGES, SAMPLE_RATE_HZ, SIGNAL_LENGTH, STATIC_NAMES, class_index
from data.stats import DataStats

FORMAT_NAME = "abr-generated"

# Limits of the command-line flags. The static ranges are what is physically possible for an ABR
# recording, wider than the clinical data (age 0-75 y, 0-100 dB nHL, 11.1-49.1 /s, FMP 0-1515): a
# condition outside the training data is allowed (the model extrapolates), an impossible one is not.
STATIC_LIMITS: dict[str, dict[str, float]] = {
    "age": {"ge": 0.0, "le": 120.0},  # years
    "intensity": {"ge": -20.0, "le": 140.0},  # dB nHL
    "rate": {"gt": 0.0, "le": 1000.0},  # stimuli per second
    "fmp": {"ge": 0.0, "le": 100_000.0},
}
# --threshold: the range every data file is held to (data.records.RANGES); "no response" is 105 dB and above
THRESHOLD_LIMITS: dict[str, float] = {"ge": RANGES["threshold"][0], "le": RANGES["threshold"][1]}
DEFAULT_INTENSITY = 80.0  # dB nHL, when neither --intensity nor --levels is given
PROG = "generate"  # the name its phase lines on stderr start with
MAX_SIGNALS = 100_000  # one command: 80 MB of float32 signals, hours of sampling on a CPU
MAX_BATCH_SIZE = 65_536
MAX_GUIDANCE = 100.0  # classifier-free guidance w; useful values are 1-10
NOISE_UV_LIMITS = (1e-4, 10.0)  # µV: --noise-uv; recordings lie at about 0.005-0.15 (a thousandfold margin)
# Series mode: the share of every noise draw a virtual patient's recordings have in common (the rest is each
# recording's own). Chosen on a development cohort (bench/virtual_patients.py --patients 200 --seed 777,
# logs/clinical_lc): series-model type macro-F1 read back 0.216 / 0.392 / 0.389 / 0.364 and threshold within
# ±10 dB 66.5 / 75.5 / 74.0 / 69.0 % at share 1 / 0.5 / 0.2 / 0.
SERIES_SHARE = 0.5
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed
# Guidance by wave V alone (a run with model.wave_conditioning; generate()'s wave_guidance): chosen on a
# development cohort (docs/generate.md, "Wave V per ear").
WAVE_GUIDANCE = 1.0


def generate(
    model: nn.Module, diffusion, stats: DataStats, static: Tensor, n: int, sampler: str = "ddim", steps: int = 50,
    guidance: float = 1.0, generator: torch.Generator | None = None, *, eta: float = 0.0, clip: float | None = None,
    batch_size: int = 256, length: int = SIGNAL_LENGTH, progress: Any = None,
    label: int | Tensor | None = None, threshold: float | Tensor | None = None,
    tied: int = 1, share: float = 1.0, lowpass_hz: float | None = None, wave: Tensor | None = None,
    wave_guidance: float = 1.0, guidance_sigma_min: float | None = None,
) -> Tensor:
    """``n`` signals for the condition ``static`` (float [4] or [n, 4], physical units: age in years,
    intensity dB nHL, rate 1/s, FMP), de-normalized to µV: float32 [n, 1, length] on the CPU.

    ``label`` (a class index) and ``threshold`` (dB nHL), one for all rows or one per row ([n]), condition a
    network with ``model.label_conditioning`` (:func:`label_inputs`); ``tied``: each run of ``tied`` consecutive
    rows shares ``share`` of every noise draw (one virtual patient's series; training.samplers.gaussian);
    ``lowpass_hz``: the samples' low-pass (GaussianDiffusion.sample; None: the run's diffusion.lowpass_hz, 0: none);
    ``guidance_sigma_min``: guidance only above this noise level (GaussianDiffusion.sample; None: the run's).
    ``wave`` ([n, 3], [n, 4] with the microphonic index; evaluation.wave_profile draws it) and ``wave_guidance``:
    wave V's condition (:func:`denoise`).
    ``model(x_t, t, static, drop_cond)["signal"]`` is the denoiser (DESIGN.md network contract), run in eval
    mode (restored afterwards); ``diffusion``: the run's GaussianDiffusion. Per-sample normalization knows no
    recording's scale: the training split's ``signal_mean`` / ``signal_std`` are used then. ``progress`` (a
    tqdm bar, or anything with ``update(n)``) advances by one per sampler step of each batch:
    ``ceil(n / batch_size) * steps`` in all (batch_size rounded down to whole runs of ``tied``)."""
    device = diffusion.betas.device
    static = condition_rows(static, n, tied, device)  # (n 4)
    batch_size = max(tied, batch_size // tied * tied)  # whole series per batch
    was_training = model.training
    model.eval()
    calls_per_step = 1 if guidance == 1.0 else 2  # guidance adds an unconditional evaluation
    calls = 0
    every = label_inputs(n, device, label, threshold, wave)  # {} or label (n), threshold (n)[, wave (n 3)]
    try:
        parts = []
        for start in range(0, n, batch_size):
            cond = static[start : start + batch_size]  # (b 4)
            labels = {k: v[start : start + batch_size] for k, v in every.items()}  # (b) each

            def denoise_fn(x_t: Tensor, t: Tensor, drop_cond: Tensor, cond: Tensor = cond, labels: dict = labels):
                nonlocal calls
                calls += 1
                if progress is not None and calls % calls_per_step == 0:
                    progress.update(1)  # counted on the host: no device sync
                return denoise(model, x_t, t, cond, drop_cond, labels, wave_guidance)

            ties = {"tied": tied, "share": share} if tied > 1 else {}
            parts.append(diffusion.sample(denoise_fn, (cond.shape[0], 1, length), sampler=sampler, steps=steps,
                                          eta=eta, guidance=guidance, generator=generator, clip=clip,
                                          lowpass_hz=lowpass_hz, guidance_sigma_min=guidance_sigma_min, **ties))
    finally:
        model.train(was_training)
    x = torch.cat(parts)  # (n 1 L) standardized
    return stats.to_uv(x.float()).cpu()  # (n 1 L) µV


def denoise(model: nn.Module, x_t: Tensor, t: Tensor, cond: Tensor, drop_cond: Tensor, labels: dict[str, Tensor],
            wave_guidance: float) -> Tensor:
    """The denoiser's signal output (b 1 L) for one sampler evaluation. ``labels["wave"]`` ([b, 3]: present
    1 / 0 / NaN, latency ms, amplitude µV) conditions a network with ``model.wave_conditioning`` on each row's
    wave V (absent: its null); ``wave_guidance`` w_v != 1 guides by it on its own (compositional guidance, Liu et
    al. 2022, "Compositional Visual Generation with Composable Diffusion Models"): the conditional branch becomes
    c_0 + w_v (c_w - c_0), c_w and c_0 the network with and without wave V, at one more evaluation per step."""
    out = model(x_t, t, cond, drop_cond=drop_cond, **labels)["signal"]  # (b 1 L)
    if wave_guidance == 1.0 or "wave" not in labels or drop_cond.all():
        return out
    without = {k: v for k, v in labels.items() if k != "wave"}  # wave V's null
    plain = model(x_t, t, cond, drop_cond=drop_cond, **without)["signal"]  # (b 1 L)
    return plain + wave_guidance * (out - plain)  # rows dropped: out == plain there


def condition_rows(static: Tensor, n: int, tied: int, device: torch.device) -> Tensor:
    """generate()'s ``static`` as (n 4) float32 on ``device``; ValueError for a bad n, shape or tie."""
    if n < 1:
        raise ValueError(f"generate n: expected at least 1 signal, found {n}")
    static = torch.as_tensor(static, dtype=torch.float32, device=device)
    if static.shape == (4,):
        static = static.expand(n, 4)  # (n 4)
    if static.shape != (n, 4):
        raise ValueError(f"generate static: expected shape [4] or [{n}, 4], found {list(static.shape)}")
    if tied < 1 or n % tied:
        raise ValueError(f"generate tied: expected a divisor of n = {n}, found {tied}")
    return static


def label_inputs(b: int, device: torch.device, label: int | Tensor | None, threshold: float | Tensor | None,
                 wave: Tensor | None = None) -> dict[str, Tensor]:
    """The network's label keywords for ``b`` rows: the class index (-1: the type's null) and the threshold
    in dB nHL (NaN: the threshold's null), each given once for every row or per row ([b]); {} when neither
    is given (the network is called as before); ``wave`` [b, 3] adds wave V's condition (a column more each
    with the microphonic index and the residual noise: ``model.microphonic_conditioning``,
    ``model.noise_conditioning``). Guidance's unconditional branch drops them with the rest, all but the noise
    level, which both branches read (models/conditioning.py)."""
    if wave is not None:
        wave = torch.as_tensor(wave, dtype=torch.float32, device=device)
        if wave.ndim != 2 or wave.shape[0] != b or wave.shape[1] not in (3, 4, 5):
            raise ValueError(f"generate wave: expected shape [{b}, 3] (up to [{b}, 5] with the microphonic index and "
                             f"the residual noise), found {list(wave.shape)}")
        return label_inputs(b, device, label, threshold) | {"wave": wave}  # (b 3 to 5)
    if label is None and threshold is None:
        return {}

    def column(name: str, value, null: float, dtype: torch.dtype) -> Tensor:
        v = torch.as_tensor(null if value is None else value, dtype=dtype, device=device)
        if v.ndim == 0:
            return v.expand(b)  # (b)
        if v.shape != (b,):
            raise ValueError(f"generate {name}: expected one value or one per row [{b}], found shape {list(v.shape)}")
        return v  # (b)

    return {"label": column("label", label, -1, torch.long),
            "threshold": column("threshold", threshold, float("nan"), torch.float32)}


def series_rows(static: Tensor, levels: list[float], n: int) -> tuple[Tensor, np.ndarray]:
    """The rows of ``n`` series, one per level of ``levels``: (static [n*K, 4], series_id [n*K]) with the
    intensity column set to each level; series s holds rows s*K .. s*K+K-1 in the order of ``levels``."""
    K = len(levels)
    rows = static.reshape(1, 4).repeat(n * K, 1)  # (n*K 4)
    rows[:, STATIC_NAMES.index("intensity")] = torch.tensor(levels, dtype=torch.float32).repeat(n)
    return rows, np.repeat(np.arange(n, dtype=np.int64), K)


SAMPLING_KEYS = ("sampler", "steps", "eta", "guidance", "guidance_sigma_min", "clip", "lowpass_hz")


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    """The sampling flags of every CLI that samples a run (generate, evaluate); each defaults to the
    run's own ``diffusion`` setting (None: not given) and is checked (finite, within its range)."""
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp2m"), help="default: the run's diffusion.sampler")
    p.add_argument("--steps", type=number(int, ge=1),
                   help="network evaluations per sample, at most the run's diffusion.timesteps; "
                   "default: the run's diffusion.sampling_steps")
    p.add_argument("--eta", type=number(float, ge=0.0, le=1.0), help="DDIM eta in [0, 1]; default: the run's "
                   "diffusion.eta")
    p.add_argument("--guidance", type=number(float, ge=0.0, le=MAX_GUIDANCE, limit="MAX_GUIDANCE"),
                   help="classifier-free guidance w (1: off); default: the run's diffusion.guidance")
    p.add_argument("--guidance-sigma-min", dest="guidance_sigma_min", type=number(float, ge=0.0), metavar="SIGMA",
                   help="guidance only at the sampler's steps whose noise level sigma_t / alpha_t exceeds SIGMA, the "
                   "conditional model alone below it (0: every step); default: the run's diffusion.guidance_sigma_min")
    p.add_argument("--clip", type=number(float, ge=0.0), help="clamp x0_hat to [-c, c] (standardized units), "
                   "0: no clamping; default: the run's diffusion.clip_x0")
    p.add_argument("--lowpass-hz", dest="lowpass_hz",
                   type=number(float, ge=0.0, lt=SAMPLE_RATE_HZ / 2, limit="the Nyquist frequency"),
                   help="the generated signals through a zero-phase low-pass at this frequency (Hz), 0: none; "
                   "default: the run's diffusion.lowpass_hz")


def add_wave_guidance_flag(p: argparse.ArgumentParser) -> None:
    """--wave-guidance: generate()'s wave_guidance, for a run with model.wave_conditioning (ignored otherwise)."""
    p.add_argument("--wave-guidance", type=number(float, ge=0.0, le=MAX_GUIDANCE, limit="MAX_GUIDANCE"),
                   default=WAVE_GUIDANCE, metavar="W",
                   help=f"a run trained with model.wave_conditioning: guidance by the drawn wave V alone, on top of "
                        f"--guidance (default {WAVE_GUIDANCE:g}; 1: none, one evaluation per step less)")


def sampling_settings(diffusion, args: argparse.Namespace) -> dict:
    """The run's sampling defaults (its ``diffusion`` config section), overridden by the command-line
    flags that were given (``None``: not given). One rule for every CLI that samples a run."""
    kw = diffusion.sampling_kwargs()
    for key in SAMPLING_KEYS:
        if getattr(args, key, None) is not None:
            kw[key] = getattr(args, key)
    if getattr(args, "eta", None) is not None and kw["sampler"] != "ddim":
        raise ValueError(f"--eta: only --sampler ddim reads it; the sampler here is {kw['sampler']} (leave --eta out)")
    timesteps = getattr(getattr(diffusion, "cfg", None), "timesteps", None)
    if getattr(args, "steps", None) is not None and timesteps is not None:
        check_number("--steps", args.steps, int, ge=1, le=timesteps, limit="the run's diffusion.timesteps")
    if kw["clip"] == 0:
        kw["clip"] = None  # --clip 0: no clamping, as clip_x0 = 0 in the config
    return kw


def write_generated(path: str | Path, signal_uv: Tensor, static: Tensor, settings: dict,
                    series_id: np.ndarray | None = None) -> tuple[Path, Path]:
    """Write the .npz (see module docstring) and a PNG of the signals next to it; return both paths.
    ``series_id`` (N,): the series mode's member, and the PNG is then the first series' waterfall."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--out: expected a file name ending in .npz, found '{path}'")
    signal = signal_uv.detach().cpu().float().reshape(signal_uv.shape[0], -1).numpy()  # (N L)
    static = torch.as_tensor(static, dtype=torch.float32).expand(signal.shape[0], 4).cpu().numpy()  # (N 4)
    meta = standard_meta({"generation": settings})
    meta["format"] = FORMAT_NAME
    members = {"signal": signal.astype(np.float32), "static": static.astype(np.float32)}
    if series_id is not None:
        members["series_id"] = np.asarray(series_id, dtype=np.int64).reshape(signal.shape[0])  # (N)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    write_atomic(path, lambda f: np.savez(f, **members,
                                           meta=np.array(json.dumps(meta, sort_keys=True, ensure_ascii=False))))
    if series_id is None:
        write_atomic(png, lambda f: plot_signals(signal, static[0], f, settings))
    else:
        first = members["series_id"] == members["series_id"][0]
        write_atomic(png, lambda f: plot_series(signal[first], static[first], f, settings))
    return path, png


def plot_signals(signal: np.ndarray, static: np.ndarray, path, settings: dict) -> None:
    """All signals (thin) and their mean (bold) against time in ms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_ms = np.arange(signal.shape[1]) / SAMPLE_RATE_HZ * 1e3  # (L)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(t_ms, signal.T, color="tab:blue", lw=0.6, alpha=max(0.08, min(0.6, 8 / len(signal))))
    ax.plot(t_ms, signal.mean(axis=0), color="black", lw=1.8, label=f"mean of {len(signal)}")
    cond = ", ".join(f"{k} {v:g}" for k, v in zip(STATIC_NAMES, static.tolist(), strict=True))
    how = f"{settings.get('sampler')} {settings.get('steps')} steps, w={settings.get('guidance')}"
    ax.set(xlabel="time (ms)", ylabel="µV", title=f"{cond}\n{how}")
    ax.title.set_fontsize(9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_series(signal: np.ndarray, static: np.ndarray, f, settings: dict) -> None:
    """One virtual patient's series as a waterfall (evaluation.plots.Waterfall), loudest on top, the
    requested threshold as its dashed line (none without one, or at "no response"), into the file ``f``."""
    import tempfile

    from evaluation.plots import plot_waterfall

    threshold = settings.get("threshold")
    age, rate, fmp = (static[0, STATIC_NAMES.index(k)] for k in ("age", "rate", "fmp"))
    asked = ", ".join(x for x in (settings.get("type"), None if threshold is None else f"threshold {threshold:g} dB")
                      if x) or "no type or threshold asked for"
    title = (f"generated series_id 0 (of {settings.get('series')}): {asked}\n"
             f"age {age:g}, rate {rate:g}, FMP {fmp:g}; {settings.get('sampler')} {settings.get('steps')} steps, "
             f"w={settings.get('guidance')}" + ("; wave V per ear: the run's profile" if settings.get("wave_profile")
                                                else ""))
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "series.png"
        plot_waterfall(signal, static[:, STATIC_NAMES.index("intensity")], None, None,
                       math.inf if threshold is None else float(threshold), png, title=title)
        f.write(png.read_bytes())


# --------------------------------------------------------------------------------------------
# command line


def _static_flag(name: str) -> Callable[[str], float]:
    return number(float, **STATIC_LIMITS[name], limit="STATIC_LIMITS")


def type_flag(text: str) -> int:
    """--type NAME -> its class index (case and Turkish diacritics ignored: SNIK is SNİK)."""
    index = class_index(text)
    if index < 0:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(CLASS_NAMES)} (case and diacritics ignored), "
                                         f"found {text!r}")
    return index


def _levels_flag(text: str) -> list[float]:
    """--levels 20,40,60 -> [20.0, 40.0, 60.0]: distinct levels, each within STATIC_LIMITS' intensity range."""
    levels = []
    for part in text.split(","):
        try:
            level = check_number("", part.strip(), float, **STATIC_LIMITS["intensity"], limit="STATIC_LIMITS")
        except ValueError as exc:  # ": expected a finite number >= ..., found 'abc'"
            each = str(exc).removeprefix(": expected ")
            raise argparse.ArgumentTypeError(f"expected comma-separated levels in dB nHL, each {each}") from None
        if level in levels:
            raise argparse.ArgumentTypeError(f"expected distinct levels, found {level:g} twice in {text!r}")
        levels.append(level)
    return levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m evaluation.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory, e.g. logs/EXP")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--n", type=number(int, ge=1, le=MAX_SIGNALS, limit="MAX_SIGNALS"), default=64,
                   help=f"signals to generate (at most {MAX_SIGNALS})")
    p.add_argument("--age", type=_static_flag("age"), default=0.5, help="years")
    p.add_argument("--intensity", type=_static_flag("intensity"),
                   help=f"dB nHL (default {DEFAULT_INTENSITY:g}; not with --levels)")
    p.add_argument("--rate", type=_static_flag("rate"), default=21.1, help="stimulus rate, 1/s")
    p.add_argument("--fmp", type=_static_flag("fmp"), default=300.0, help="FMP")
    p.add_argument("--type", type=type_flag, metavar="NAME",
                   help=f"hearing-loss type, one of {', '.join(CLASS_NAMES)} (a run trained with "
                        "model.label_conditioning; default: not conditioned on, the type's null)")
    p.add_argument("--threshold", type=number(float, **THRESHOLD_LIMITS, limit="data.records.RANGES"), metavar="DB",
                   help="hearing threshold, dB nHL; 105: no response (a run trained with model.label_conditioning; "
                        "default: not conditioned on, the threshold's null)")
    p.add_argument("--no-wave-profile", action="store_true",
                   help="a run trained with model.wave_conditioning: leave wave V's condition at its null instead of "
                        "drawing each ear's latency-intensity function from the run's wave_profile.json (drawn only "
                        "when both --type and --threshold are given)")
    p.add_argument("--noise-uv", type=number(float, ge=NOISE_UV_LIMITS[0], le=NOISE_UV_LIMITS[1],
                                             limit="NOISE_UV_LIMITS"), metavar="UV",
                   help="a run trained with model.noise_conditioning: every signal's residual noise level, µV RMS "
                        "above about 1 kHz (models.series.residual_rms; recordings: about 0.005-0.15); default: drawn "
                        "per ear from the run's wave_profile.json with the wave profile, unknown without it")
    p.add_argument("--no-microphonic-bank", action="store_true",
                   help="with --type: compose no cochlear microphonic from the run's microphonic_bank.safetensors "
                        "(by default each ear gets one training ear's of the type: evaluation/microphonic_bank.py)")
    p.add_argument("--levels", type=_levels_flag, metavar="DB,DB,...",
                   help="series mode: --n virtual patients, each one series at these levels (dB nHL) with one set "
                        "of individual traits (module docstring)")
    p.add_argument("--share", type=number(float, ge=0.0, le=1.0), default=SERIES_SHARE,
                   help=f"series mode: the share of the sampler's noise a series' levels have in common, the rest "
                        f"each level's own (default {SERIES_SHARE}; 1: every draw shared)")
    add_sampling_flags(p)
    add_wave_guidance_flag(p)
    p.add_argument("--seed", type=number(int, ge=0, le=MAX_SEED, limit="MAX_SEED"), default=0)
    p.add_argument("--batch-size", type=number(int, ge=1, le=MAX_BATCH_SIZE, limit="MAX_BATCH_SIZE"), default=256)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, auto")
    p.add_argument("--out", help="output .npz (a .png is written next to it); default: RUN/eval/generated.npz")
    p.add_argument("--overwrite", action="store_true", help="replace the .npz and .png if they exist")
    args = p.parse_args(argv)
    if args.levels is not None and args.intensity is not None:
        p.error("argument --levels: expected either --levels (a series) or --intensity (one level), found both")
    if args.levels is not None and args.n * len(args.levels) > MAX_SIGNALS:
        p.error(f"argument --levels: expected --n x levels <= {MAX_SIGNALS} signals (MAX_SIGNALS), found "
                f"{args.n} x {len(args.levels)} = {args.n * len(args.levels)}")
    if args.intensity is None and args.levels is None:
        args.intensity = DEFAULT_INTENSITY
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args), debug=args.debug)


def run(args: argparse.Namespace) -> int:
    from training.checkpoint import load_run  # the CLI needs the whole stack, generate() does not

    out = Path(args.out) if args.out else Path(args.run) / "eval" / "generated.npz"
    if out.suffix != ".npz":
        raise ValueError(f"--out: expected a file name ending in .npz, found '{out}'")
    # before hours of sampling; the default, RUN/eval, is in the command's own run
    check_outputs([out, out.with_suffix(".png")], overwrite=args.overwrite, own_run=args.run)
    from tqdm import tqdm

    device = resolve_device(args.device)
    loaded = load_run(args.run, which=args.checkpoint, device=device)  # seconds; its errors stay one line
    kw = sampling_settings(loaded.diffusion, args)
    check_labels(loaded.model, args)
    profile = requested_profile(loaded.model, args)  # before any warning: a missing file is the one line
    bank = requested_bank(args)
    for line in span_warnings(loaded.stats, args):
        print(f"warning: {line}", file=sys.stderr)
    levels, series_id, tied, total_signals = args.levels, None, 1, args.n
    static = torch.tensor([args.age, (levels or [args.intensity])[0], args.rate, args.fmp], dtype=torch.float32)
    if levels is not None:
        static, series_id = series_rows(static, levels, args.n)  # (n*K 4), (n*K)
        tied, total_signals = len(levels), args.n * len(levels)
    generator = torch.Generator().manual_seed(args.seed)
    wave = wave_condition(loaded.model, profile, args, static.expand(total_signals, 4), series_id)
    per_batch = max(tied, args.batch_size // tied * tied)
    total = -(-total_signals // per_batch) * kw["steps"]
    what = (f"sampling {args.n} series x {len(levels)} levels = {total_signals} signals" if levels is not None
            else f"sampling {args.n} signals")
    what += f" ({kw['sampler']}, {kw['steps']} steps, guidance {kw['guidance']:g}) on {device}"
    # the bar shows on a terminal only (disable=None); the phase lines reach a log file too
    with phase(PROG, what), tqdm(total=total, desc="sampling", unit="step", file=sys.stderr, leave=False,
                                 disable=None) as bar:
        signal = generate(loaded.model, loaded.diffusion, loaded.stats, static, total_signals, kw["sampler"],
                          kw["steps"], kw["guidance"], generator, eta=kw["eta"], clip=kw["clip"],
                          batch_size=args.batch_size, progress=bar, label=args.type, threshold=args.threshold,
                          tied=tied, share=args.share, lowpass_hz=kw["lowpass_hz"],
                          wave=None if wave is None else torch.from_numpy(wave), wave_guidance=args.wave_guidance,
                          guidance_sigma_min=kw["guidance_sigma_min"])
    bad = int((~torch.isfinite(signal)).sum())
    if bad:
        raise ValueError(f"run '{args.run}' ({args.checkpoint} checkpoint): generated {bad} non-finite values of "
                         f"{signal.numel()} with {kw}; nothing written")
    signal, composed = with_microphonic(bank, signal, static.expand(total_signals, 4), series_id, args)
    ckpt = getattr(loaded, "checkpoint", None) or {}
    settings = kw | {"seed": args.seed, "run": str(args.run), "checkpoint": args.checkpoint,
                     "ema_weights": ckpt.get("ema") is not None,
                     "type": None if args.type is None else CLASS_NAMES[args.type], "threshold": args.threshold,
                     "levels": levels, "series": args.n if levels is not None else None,
                     "wave_profile": profile is not None, "noise_uv": args.noise_uv,
                     "wave_guidance": args.wave_guidance if wave is not None else None,
                     "microphonic_composed": composed}
    npz, png = write_generated(out, signal, static, settings, series_id=series_id)
    what = f"{args.n} series x {len(levels)} levels" if levels is not None else f"{args.n} signals"
    print(f"wrote {npz} ({what}, µV) and {png}")
    return 0


def requested_profile(model: nn.Module, args: argparse.Namespace) -> dict | None:
    """The run's wave profile (evaluation/wave_profile.py) where generate draws each ear's wave V from it: a
    network with model.wave_conditioning asked for both --type and --threshold, without --no-wave-profile;
    None otherwise (wave V's null). One line where the run has no profile."""
    from evaluation.wave_profile import require_profile

    if not getattr(model, "wave_conditioned", False) or args.no_wave_profile or None in (args.type, args.threshold):
        return None
    return require_profile(args.run, ", or --no-wave-profile")


def requested_bank(args: argparse.Namespace) -> dict | None:
    """The run's microphonic bank (evaluation/microphonic_bank.py) where generate composes each ear's cochlear
    microphonic from it: --type given, without --no-microphonic-bank; None otherwise, with a warning line where
    the run has none (its neuropathy then rings with no microphonic)."""
    from evaluation.microphonic_bank import FILE, load_bank

    if args.type is None or args.no_microphonic_bank:
        return None
    bank = load_bank(args.run)
    if bank is None:
        print(f"warning: run '{args.run}' has no {FILE}: no cochlear microphonic is composed (the network draws none; "
              f"python -m evaluation.microphonic_bank --run {args.run} fits it)", file=sys.stderr)
    return bank


def with_microphonic(bank: dict | None, signal: Tensor, static: Tensor, series_id: np.ndarray | None,
                     args: argparse.Namespace) -> tuple[Tensor, int | None]:
    """Generated ``signal`` (N 1 L) µV with static rows (N 4) and the cochlear microphonic the network does not
    draw composed from ``bank`` (one training ear of the requested type per series, each signal its own ear
    without --levels), and the number of signals given one; unchanged and None without a bank."""
    from evaluation.microphonic_bank import compose

    if bank is None:
        return signal, None
    n = signal.shape[0]
    extra, composed = compose(bank, static[:, 1].numpy(), np.full(n, args.type),
                              np.arange(n) if series_id is None else series_id, np.random.default_rng([args.seed, 28]))
    return signal + torch.from_numpy(extra)[:, None].to(signal), composed


def wave_condition(model: nn.Module, profile: dict | None, args: argparse.Namespace, static: Tensor,
                   series_id: np.ndarray | None) -> np.ndarray | None:
    """(N columns) the wave condition for rows ``static`` (N 4), or None (its null): drawn from ``profile`` where
    there is one (one ear per series, each signal its own without --levels, of the requested type and threshold),
    with --noise-uv as every row's residual noise; without a profile, only --noise-uv's column known."""
    from evaluation.wave_profile import draw_waves

    noise = getattr(model, "noise_conditioned", False)  # check_labels: --noise-uv only with it
    rows = static.shape[0]  # N
    if profile is None:
        if args.noise_uv is None:
            return None
        wave = np.full((rows, model.cond.wave.columns), np.nan, np.float32)  # every other column unknown
    else:
        ids = np.arange(rows) if series_id is None else series_id
        wave = draw_waves(profile, static.numpy(), np.full(rows, args.threshold), np.full(rows, args.type), ids,
                          np.random.default_rng(args.seed), getattr(model, "microphonic_conditioned", False), noise)
    if args.noise_uv is not None:
        wave[:, -1] = args.noise_uv  # µV: the noise column is the last (models/conditioning.py)
    return wave


def check_labels(model: nn.Module, args: argparse.Namespace) -> None:
    """--type and --threshold need a network trained with label conditioning, --noise-uv one trained with noise
    conditioning: one line otherwise."""
    if args.noise_uv is not None and not getattr(model, "noise_conditioned", False):
        raise ValueError(f"--noise-uv: expected a run trained with model.noise_conditioning true, found run "
                         f"'{args.run}' trained without it (leave --noise-uv out)")
    given = [flag for flag, value in (("--type", args.type), ("--threshold", args.threshold)) if value is not None]
    if given and not getattr(model, "label_conditioned", False):
        raise ValueError(f"{' and '.join(given)}: expected a run trained with model.label_conditioning true, found "
                         f"run '{args.run}' trained without it (leave {' and '.join(given)} out, or train with "
                         f"model.label_conditioning=true)")


def span_warnings(stats: DataStats, args: argparse.Namespace) -> list[str]:
    """One line per requested value outside the run's training span (DataStats.outside_span): the static
    values, each level of --levels, and --threshold when given."""
    values = {"age": args.age, "intensity": (args.levels or [args.intensity])[0], "rate": args.rate, "fmp": args.fmp}
    if args.threshold is not None:
        values["threshold"] = args.threshold
    lines = stats.outside_span(values)
    for level in (args.levels or [])[1:]:  # the unchecked-span line is said once, above
        lines += [line for line in stats.outside_span({"intensity": level}) if line.startswith("intensity")]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
