"""Sampling benchmark: signals per second on CPU for DDIM-50 and DPM-Solver++(2M)-20.

    python bench/sampling.py [--threads 1] [--batch 64] [--reps 3] [--full]

Runs :func:`evaluation.generate.generate` with the quickstart network (``ModelConfig()``; ``--full``
adds ``models.config.FULL_SIZE``), untrained (speed does not depend on the weights), for each sampler
without guidance (w = 1: one network evaluation per step) and with guidance (w = 2: two). The
``sampler only`` rows replace the network by a constant denoiser: the cost of the update rules
themselves. Prints a table and writes bench/results/sampling.json. Timings: median of ``--reps``
after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import timed  # noqa: E402
from data.cli import phase  # noqa: E402
from data.stats import DataStats  # noqa: E402
from evaluation.generate import generate  # noqa: E402
from models import ModelConfig, build_model  # noqa: E402
from models.config import FULL_SIZE  # noqa: E402
from training.config import DiffusionConfig  # noqa: E402
from training.diffusion import GaussianDiffusion  # noqa: E402

SETTINGS = (("ddim", 50), ("dpmpp2m", 20))
STATIC = torch.tensor([0.5, 80.0, 21.1, 300.0])
PROG = "bench/sampling.py"  # the start of its progress lines on stderr


class ConstantDenoiser(torch.nn.Module):
    """Network stand-in: the contract's output with no compute, to time the sampler alone."""

    def forward(self, x_t, t, static, drop_cond=None):
        return {"signal": torch.zeros_like(x_t)}


def time_generate(model, diffusion, batch: int, sampler: str, steps: int, guidance: float, reps: int) -> float:
    def once() -> None:
        generate(model, diffusion, DataStats.identity(), STATIC, batch, sampler, steps, guidance,
                 torch.Generator().manual_seed(0))

    return statistics.median(timed(once, reps, warmup=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64, help="signals per generate() call")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--full", action="store_true", help="also time the full-size network")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(DiffusionConfig())
    models = {"sampler only": ConstantDenoiser(), "quickstart net": build_model(ModelConfig(), DataStats.identity())}
    if args.full:
        models["full net"] = build_model(ModelConfig(**FULL_SIZE), DataStats.identity())
    rows = []
    for name, model in models.items():
        for sampler, steps in SETTINGS:
            for guidance in (1.0, 2.0):  # a progress line per row on stderr; stdout keeps the table
                with phase(PROG, f"{name}: {sampler}-{steps}, w={guidance:g}, {args.reps} timed runs of "
                                 f"{args.batch} signals"):
                    sec = time_generate(model, diffusion, args.batch, sampler, steps, guidance, args.reps)
                rows.append({"model": name, "sampler": sampler, "steps": steps, "guidance": guidance,
                             "batch": args.batch, "seconds": round(sec, 4),
                             "signals_per_s": round(args.batch / sec, 2)})
    print(f"{'model':<16} {'sampler':<8} {'steps':>5} {'w':>4} {'batch':>5} {'s/batch':>8} {'signals/s':>10}")
    for r in rows:
        print(f"{r['model']:<16} {r['sampler']:<8} {r['steps']:>5} {r['guidance']:>4g} {r['batch']:>5} "
              f"{r['seconds']:>8.3f} {r['signals_per_s']:>10.1f}")
    out = ROOT / "bench" / "results" / "sampling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": "cpu", "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "note": "shared machine: provisional numbers"}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
