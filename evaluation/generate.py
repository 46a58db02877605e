"""Generate ABR signals for one clinical condition from a trained run.

    python -m evaluation.generate --run logs/EXP --n 64 --intensity 80 --age 0.5 --rate 21.1 \\
        --fmp 300 --sampler ddim --steps 50 --guidance 2.0

writes ``logs/EXP/eval/generated.npz`` and ``generated.png`` beside it (``--out FILE.npz`` names
another file), and says where. The run is loaded with
:func:`training.checkpoint.load_run`, which puts the EMA weights into the model when the run has
them, so sampling uses the EMA weights. Sampler, steps, eta, guidance and clipping default to the
run's ``diffusion`` config section.

The .npz follows the native data format's conventions (data/native.py): ``signal`` float32
(N, 200) in µV, ``static`` float32 (N, 4) age, intensity, rate, FMP, and a JSON ``meta`` member
with ``format_version``, ``sample_rate_hz``, ``units`` and the generation settings. It has no
labels, peaks or thresholds (a generated signal has none), so its ``meta.format`` is
``abr-generated`` and ``data.native.read_native`` does not take it as a training file.
"""

from __future__ import annotations

import argparse
import json
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
from data.records import SAMPLE_RATE_HZ, SIGNAL_LENGTH, STATIC_NAMES
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
PROG = "generate"  # the name its phase lines on stderr start with
MAX_SIGNALS = 100_000  # one command: 80 MB of float32 signals, hours of sampling on a CPU
MAX_BATCH_SIZE = 65_536
MAX_GUIDANCE = 100.0  # classifier-free guidance w; useful values are 1-10
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed


def generate(
    model: nn.Module,
    diffusion,
    stats: DataStats,
    static: Tensor,
    n: int,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    eta: float = 0.0,
    clip: float | None = None,
    batch_size: int = 256,
    length: int = SIGNAL_LENGTH,
    progress: Any = None,
) -> Tensor:
    """``n`` signals for the condition ``static`` (float [4] or [n, 4], physical units: age in years,
    intensity dB nHL, rate 1/s, FMP), de-normalized to µV: float32 [n, 1, length] on the CPU.

    ``model(x_t, t, static, drop_cond)["signal"]`` is the denoiser (DESIGN.md network contract);
    ``diffusion`` is the run's :class:`training.diffusion.GaussianDiffusion`. The model runs in eval
    mode (its mode is restored afterwards). With per-sample normalization the scale of each
    recording is not known; the training split's ``signal_mean`` / ``signal_std`` are used then.
    ``progress`` (a tqdm bar, or anything with ``update(n)``) advances by one per sampler step of
    each batch: ``ceil(n / batch_size) * steps`` in all.
    """
    if n < 1:
        raise ValueError(f"generate n: expected at least 1 signal, found {n}")
    device = diffusion.betas.device
    static = torch.as_tensor(static, dtype=torch.float32, device=device)
    if static.shape == (4,):
        static = static.expand(n, 4)  # (n 4)
    if static.shape != (n, 4):
        raise ValueError(f"generate static: expected shape [4] or [{n}, 4], found {list(static.shape)}")
    was_training = model.training
    model.eval()
    calls_per_step = 1 if guidance == 1.0 else 2  # guidance adds an unconditional evaluation
    calls = 0
    try:
        parts = []
        for start in range(0, n, batch_size):
            cond = static[start : start + batch_size]  # (b 4)

            def denoise_fn(x_t: Tensor, t: Tensor, drop_cond: Tensor, cond: Tensor = cond) -> Tensor:
                nonlocal calls
                calls += 1
                if progress is not None and calls % calls_per_step == 0:
                    progress.update(1)  # counted on the host: no device sync
                return model(x_t, t, cond, drop_cond=drop_cond)["signal"]

            parts.append(diffusion.sample(denoise_fn, (cond.shape[0], 1, length), sampler=sampler, steps=steps,
                                          eta=eta, guidance=guidance, generator=generator, clip=clip))
    finally:
        model.train(was_training)
    x = torch.cat(parts)  # (n 1 L) standardized
    return stats.to_uv(x.float()).cpu()  # (n 1 L) µV


SAMPLING_KEYS = ("sampler", "steps", "eta", "guidance", "clip")


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
    p.add_argument("--clip", type=number(float, ge=0.0), help="clamp x0_hat to [-c, c] (standardized units), "
                   "0: no clamping; default: the run's diffusion.clip_x0")


def sampling_settings(diffusion, args: argparse.Namespace) -> dict:
    """The run's sampling defaults (its ``diffusion`` config section), overridden by the command-line
    flags that were given (``None``: not given). One rule for every CLI that samples a run."""
    kw = diffusion.sampling_kwargs()
    for key in SAMPLING_KEYS:
        if getattr(args, key, None) is not None:
            kw[key] = getattr(args, key)
    timesteps = getattr(getattr(diffusion, "cfg", None), "timesteps", None)
    if getattr(args, "steps", None) is not None and timesteps is not None:
        check_number("--steps", args.steps, int, ge=1, le=timesteps, limit="the run's diffusion.timesteps")
    if kw["clip"] == 0:
        kw["clip"] = None  # --clip 0: no clamping, as clip_x0 = 0 in the config
    return kw


def write_generated(path: str | Path, signal_uv: Tensor, static: Tensor, settings: dict) -> tuple[Path, Path]:
    """Write the .npz (see module docstring) and a PNG of the signals next to it; return both paths."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--out: expected a file name ending in .npz, found '{path}'")
    signal = signal_uv.detach().cpu().float().reshape(signal_uv.shape[0], -1).numpy()  # (N L)
    static = torch.as_tensor(static, dtype=torch.float32).expand(signal.shape[0], 4).cpu().numpy()  # (N 4)
    meta = standard_meta({"generation": settings})
    meta["format"] = FORMAT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    write_atomic(path, lambda f: np.savez(f, signal=signal.astype(np.float32), static=static.astype(np.float32),
                                           meta=np.array(json.dumps(meta, sort_keys=True, ensure_ascii=False))))
    write_atomic(png, lambda f: plot_signals(signal, static[0], f, settings))
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


# --------------------------------------------------------------------------------------------
# command line


def _static_flag(name: str) -> Callable[[str], float]:
    return number(float, **STATIC_LIMITS[name], limit="STATIC_LIMITS")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m evaluation.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory, e.g. logs/EXP")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--n", type=number(int, ge=1, le=MAX_SIGNALS, limit="MAX_SIGNALS"), default=64,
                   help=f"signals to generate (at most {MAX_SIGNALS})")
    p.add_argument("--age", type=_static_flag("age"), default=0.5, help="years")
    p.add_argument("--intensity", type=_static_flag("intensity"), default=80.0, help="dB nHL")
    p.add_argument("--rate", type=_static_flag("rate"), default=21.1, help="stimulus rate, 1/s")
    p.add_argument("--fmp", type=_static_flag("fmp"), default=300.0, help="FMP")
    add_sampling_flags(p)
    p.add_argument("--seed", type=number(int, ge=0, le=MAX_SEED, limit="MAX_SEED"), default=0)
    p.add_argument("--batch-size", type=number(int, ge=1, le=MAX_BATCH_SIZE, limit="MAX_BATCH_SIZE"), default=256)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, auto")
    p.add_argument("--out", help="output .npz (a .png is written next to it); default: RUN/eval/generated.npz")
    p.add_argument("--overwrite", action="store_true", help="replace the .npz and .png if they exist")
    return p.parse_args(argv)


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
    for line in loaded.stats.outside_span({n: getattr(args, n) for n in ("age", "intensity", "rate", "fmp")}):
        print(f"warning: {line}", file=sys.stderr)
    static = torch.tensor([args.age, args.intensity, args.rate, args.fmp], dtype=torch.float32)
    generator = torch.Generator().manual_seed(args.seed)
    total = -(-args.n // args.batch_size) * kw["steps"]
    what = f"sampling {args.n} signals ({kw['sampler']}, {kw['steps']} steps, guidance {kw['guidance']:g}) on {device}"
    # the bar shows on a terminal only (disable=None); the phase lines reach a log file too
    with phase(PROG, what), tqdm(total=total, desc="sampling", unit="step", file=sys.stderr, leave=False,
                                 disable=None) as bar:
        signal = generate(loaded.model, loaded.diffusion, loaded.stats, static, args.n, kw["sampler"], kw["steps"],
                          kw["guidance"], generator, eta=kw["eta"], clip=kw["clip"], batch_size=args.batch_size,
                          progress=bar)
    bad = int((~torch.isfinite(signal)).sum())
    if bad:
        raise ValueError(f"run '{args.run}' ({args.checkpoint} checkpoint): generated {bad} non-finite values of "
                         f"{signal.numel()} with {kw}; nothing written")
    ckpt = getattr(loaded, "checkpoint", None) or {}
    settings = kw | {"seed": args.seed, "run": str(args.run), "checkpoint": args.checkpoint,
                     "ema_weights": ckpt.get("ema") is not None}
    npz, png = write_generated(out, signal, static, settings)
    print(f"wrote {npz} ({args.n} signals, µV) and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
