"""Do generated signals show wave V where real ones do? (issue 5's acceptance, on a trained run)

    python bench/wave_v.py --run logs/quickstart [--n 256] [--guidance 1,2,3] [--eta 0,1] [--steps 50]

Condition: normal hearing at high intensity (NORMAL test recordings at >= 70 dB nHL; --split val
for the validation split). The static
vector is the median of those recordings; the expected range is the 5th-95th percentile of their
labelled wave V latencies. The same peak picker (evaluation.metrics.pick_wave_v_latency) is run on
the generated signals, on the real recordings of the condition (what the picker achieves on real
data), and on white noise of the real signals' scale (chance). Sampling settings default to the
run's own (its `diffusion` section); --guidance and --eta take comma-separated lists and every
combination gets a row. With n = 256 a share's standard error is at most 3.1 points. Prints a
table, writes bench/results/wave_v.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from data.dataset import build_data  # noqa: E402
from evaluation.generate import generate, sampling_settings  # noqa: E402
from evaluation.metrics import pick_wave_v_latency  # noqa: E402
from training.checkpoint import load_run  # noqa: E402


def share_in(lat: np.ndarray, lo: float, hi: float) -> float:
    return float(np.mean((lat >= lo) & (lat <= hi)))


def floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, found '{text}'") from None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp2m"), help="default: the run's diffusion.sampler")
    p.add_argument("--steps", type=int, help="default: the run's diffusion.sampling_steps")
    p.add_argument("--guidance", type=floats, help="comma-separated w values; default: the run's diffusion.guidance")
    p.add_argument("--eta", type=floats, help="comma-separated DDIM eta values; default: the run's diffusion.eta")
    p.add_argument("--split", choices=("val", "test"), default="test", help="recordings that define the condition")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "wave_v.json"))
    args = p.parse_args(argv)

    run = load_run(args.run, "best")
    kw = sampling_settings(run.diffusion, argparse.Namespace(sampler=args.sampler, steps=args.steps))
    guidances, etas = args.guidance or [kw["guidance"]], args.eta or [kw["eta"]]
    test = getattr(build_data(run.cfg.data, run.cfg.loss.class_weights), args.split).tensors
    s = run.stats
    cond = (test["label"] == 0) & (test["static"][:, 1] >= 70)  # NORMAL, >= 70 dB nHL
    if not cond.any():
        raise ValueError(f"run '{args.run}': no NORMAL {args.split} recordings at >= 70 dB nHL")
    lat_true = test["peak_latency"][cond & test["peak_mask"]].numpy()
    lo, hi = np.percentile(lat_true, [5, 95])
    real_uv = (test["signal"][cond] * s.signal_std + s.signal_mean).numpy()  # [m,1,L] µV
    static = test["static"][cond].median(dim=0).values  # [4]
    real_picked = pick_wave_v_latency(real_uv)  # [m] ms: what the picker finds on real recordings
    noise = np.random.default_rng(args.seed).normal(0, real_uv.std(), size=(args.n, 1, real_uv.shape[-1]))
    rows = []
    for w, eta in itertools.product(guidances, etas):
        gen = torch.Generator().manual_seed(args.seed)
        fake = generate(run.model, run.diffusion, s, static.expand(args.n, 4).clone(), args.n, kw["sampler"],
                        kw["steps"], w, gen, eta=eta, clip=kw["clip"]).numpy()
        picked = pick_wave_v_latency(fake)
        rows.append({"guidance": w, "eta": eta, "share_in_range": share_in(picked, lo, hi),
                     "median_latency_ms": float(np.median(picked))})
    result = {
        "run": str(args.run), "condition": f"NORMAL, >= 70 dB nHL ({args.split} split)", "recordings": int(cond.sum()),
        "static_median": [round(float(v), 3) for v in static], "expected_latency_ms": [float(lo), float(hi)],
        "sampler": kw["sampler"], "steps": kw["steps"], "n": args.n, "seed": args.seed,
        "run_settings": {"guidance": kw["guidance"], "eta": kw["eta"]},
        "generated": rows,
        "share_in_range": {"real": share_in(real_picked, lo, hi),
                           "white_noise": share_in(pick_wave_v_latency(noise), lo, hi)},
        "median_latency_ms": {"real_labelled": float(np.median(lat_true)),
                              "real_picked": float(np.median(real_picked))},
    }
    print(f"wave V picked in {lo:.2f}-{hi:.2f} ms (NORMAL, >= 70 dB nHL, {args.split} split; "
          f"{kw['sampler']}-{kw['steps']}, n = {args.n}; the run's own setting is w={kw['guidance']:g}, "
          f"eta={kw['eta']:g}):")
    print("| signals | share in range | median picked latency (ms) |\n|---|---|---|")
    for r in rows:
        print(f"| generated, w={r['guidance']:g}, eta={r['eta']:g} | {100 * r['share_in_range']:.1f} % "
              f"| {r['median_latency_ms']:.2f} |")
    print(f"| real recordings ({int(cond.sum())}) | {100 * result['share_in_range']['real']:.1f} % | "
          f"{result['median_latency_ms']['real_picked']:.2f} |")
    print(f"| white noise | {100 * result['share_in_range']['white_noise']:.1f} % | — |")
    write_result(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
