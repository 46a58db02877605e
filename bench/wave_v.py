"""Do generated signals show wave V where real ones do? (issue 5's acceptance, on a trained run)

    python bench/wave_v.py --run logs/quickstart [--n 64] [--sampler ddim] [--steps 50] [--guidance 2.0]

Condition: normal hearing at high intensity (NORMAL test recordings at >= 70 dB nHL). The static
vector is the median of those recordings; the expected range is the 5th-95th percentile of their
labelled wave V latencies. The same peak picker (evaluation.metrics.pick_wave_v_latency) is run on
the generated signals, on the real recordings of the condition (what the picker achieves on real
data), and on white noise of the real signals' scale (chance). Prints a table, writes
bench/results/wave_v.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from data.dataset import build_data  # noqa: E402
from evaluation.generate import generate  # noqa: E402
from evaluation.metrics import pick_wave_v_latency  # noqa: E402
from training.checkpoint import load_run  # noqa: E402


def share_in(lat: np.ndarray, lo: float, hi: float) -> float:
    return float(np.mean((lat >= lo) & (lat <= hi)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    run = load_run(args.run, "best")
    test = build_data(run.cfg).test.tensors
    s = run.stats
    cond = (test["label"] == 0) & (test["static"][:, 1] >= 70)  # NORMAL, >= 70 dB nHL
    if not cond.any():
        raise ValueError(f"run '{args.run}': no NORMAL test recordings at >= 70 dB nHL")
    lat_true = test["peak_latency"][cond & test["peak_mask"]].numpy()
    lo, hi = np.percentile(lat_true, [5, 95])
    real_uv = (test["signal"][cond] * s.signal_std + s.signal_mean).numpy()  # [m,1,L] µV
    static = test["static"][cond].median(dim=0).values  # [4]
    gen = torch.Generator().manual_seed(args.seed)
    fake = generate(run.model, run.diffusion, s, static.expand(args.n, 4).clone(), args.n, sampler=args.sampler,
                    steps=args.steps, guidance=args.guidance, generator=gen).numpy()
    noise = np.random.default_rng(args.seed).normal(0, real_uv.std(), size=(args.n, 1, real_uv.shape[-1]))
    result = {
        "run": str(args.run), "condition": "NORMAL, >= 70 dB nHL (test split)", "recordings": int(cond.sum()),
        "static_median": [round(float(v), 3) for v in static], "expected_latency_ms": [float(lo), float(hi)],
        "sampler": args.sampler, "steps": args.steps, "guidance": args.guidance, "n": args.n,
        "share_in_range": {
            "generated": share_in(pick_wave_v_latency(fake), lo, hi),
            "real": share_in(pick_wave_v_latency(real_uv), lo, hi),
            "white_noise": share_in(pick_wave_v_latency(noise), lo, hi),
        },
        "median_latency_ms": {"generated": float(np.median(pick_wave_v_latency(fake))),
                              "real_labelled": float(np.median(lat_true))},
    }
    print(f"wave V in {lo:.2f}-{hi:.2f} ms (NORMAL, >= 70 dB; {args.sampler}-{args.steps}, w={args.guidance}):")
    print("| signals | share with the picked wave V in range |\n|---|---|")
    for k, v in result["share_in_range"].items():
        print(f"| {k} | {100 * v:.1f} % |")
    write_result(Path(__file__).resolve().parent / "results" / "wave_v.json", result)
    return result


if __name__ == "__main__":
    main()
