"""Network benchmark: forward+backward time, S4D vs attention at L = 200, and the bottleneck-attention question.

    python bench/model.py [--threads 1] [--reps 5] [--quick-batch 64] [--full-batch 16] [--train-steps 300]

1. ``speed``: forward+backward milliseconds per batch on CPU for the quickstart network (``ModelConfig()``)
   and the full-size one (``models.config.FULL_SIZE``, what configs/config.yaml holds).
2. ``layers``: one S4D layer against one self-attention layer of the same width (pre-norm, SDPA), and the
   encoder/decoder blocks built on them, at L = 200.
3. ``bottleneck_attention``: the quickstart network with and without the bottleneck attention block, trained
   for ``--train-steps`` on fresh synthetic batches (Gaussian wave-V bumps: denoising + the five head
   targets); held-out summed loss, parameters and time. Decides ``model.bottleneck_attention``.

Prints a table and writes bench/results/model.json. Timings are the median of ``--reps`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import timed  # noqa: E402
from data.cli import phase  # noqa: E402
from data.stats import DataStats  # noqa: E402
from models import ModelConfig, build_model, param_groups  # noqa: E402
from models.blocks import Attention, S4Block, TransformerBlock  # noqa: E402
from models.config import FULL_SIZE  # noqa: E402
from models.s4d import S4D  # noqa: E402

L = 200
PROG = "bench/model.py"  # the start of its progress lines on stderr


def _time_ms(fn, reps: int) -> float:
    return 1000 * statistics.median(timed(fn, reps, warmup=1))


def _inputs(B: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(B, 1, L), torch.randint(0, 1000, (B,)), torch.rand(B, 4) * torch.tensor([10, 100, 50, 1500])


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def bench_speed(name: str, cfg: ModelConfig, B: int, reps: int) -> dict:
    model = build_model(cfg, DataStats.identity()).train()
    x, t, s = _inputs(B)
    drop = torch.zeros(B, dtype=torch.bool)

    def step() -> None:
        out = model(x, t, s, drop_cond=drop)
        sum(v.float().mean() for v in out.values()).backward()

    ms = _time_ms(step, reps)
    return {"config": name, "params": _params(model), "batch": B, "fwd_bwd_ms": ms, "ms_per_sample": ms / B}


def bench_layers(widths: list[int], B: int, reps: int) -> list[dict]:
    rows = []
    for H in widths:
        heads = max(1, H // 32)
        c = torch.randn(B, 64)  # condition, for the FiLM'd blocks
        layers = {
            "S4D layer (bidirectional)": S4D(H, 64, bidirectional=True),
            "self-attention layer": torch.nn.Sequential(torch.nn.LayerNorm(H), Attention(H, heads, 0.0)),
            "S4Block (S4D + FiLM MLP)": S4Block(H, 64, 64, True, 2, 0.0, 1e-3),
            "TransformerBlock (no cross)": TransformerBlock(H, 64, heads, 2, 0.0, cross=False),
        }
        x = torch.randn(B, L, H, requires_grad=True)
        for name, m in layers.items():
            args = (x, c) if isinstance(m, (S4Block, TransformerBlock)) else (x,)
            ms = _time_ms(lambda m=m, args=args: m(*args).square().mean().backward(), reps)
            rows.append({"layer": name, "width": H, "heads": heads, "batch": B, "params": _params(m), "fwd_bwd_ms": ms})
    return rows


def _bumps(B: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    latency = 5.0 + 4.0 * torch.rand(B, generator=g)  # ms
    amplitude = -0.5 + 1.7 * torch.rand(B, generator=g)  # µV
    clean = amplitude[:, None] * torch.exp(-0.5 * ((torch.arange(L) / 20.0 - latency[:, None]) / 0.4) ** 2)
    noise = torch.randn(B, 1, L, generator=g)
    a = torch.rand(B, 1, 1, generator=g)  # signal fraction, a toy noise level
    return {
        "x_t": a.sqrt() * clean[:, None] + (1 - a).sqrt() * noise, "t": (1000 * (1 - a.flatten())).long().clamp(0, 999),
        "static": torch.rand(B, 4, generator=g) * torch.tensor([10.0, 100, 50, 1500]), "noise": noise,
        "label": ((latency - 5.0) / 0.8).long().clamp(0, 4), "mask": amplitude > 0,
        "latency": latency, "amplitude": amplitude, "threshold": 120.0 * (1.2 - amplitude) / 1.7,
    }


def _loss(out: dict, b: dict) -> torch.Tensor:
    m = b["mask"]
    return (F.mse_loss(out["signal"], b["noise"]) + F.cross_entropy(out["class_logits"], b["label"])
            + F.binary_cross_entropy_with_logits(out["peak_logit"], m.float())
            + F.mse_loss(out["peak_latency"][m], b["latency"][m]) / 1.2 ** 2
            + F.mse_loss(out["peak_amplitude"][m], b["amplitude"][m]) / 0.5 ** 2
            + F.mse_loss(out["threshold"], b["threshold"]) / 35.0 ** 2)


def bench_bottleneck(steps: int, B: int, seeds: list[int]) -> list[dict]:
    stats = DataStats(0.0, 1.0, [5.0, 50.0, 25.0, 750.0], [3.0, 29.0, 14.0, 430.0], 7.0, 1.2, 0.35, 0.5, 60.0, 35.0)
    rows = []
    for attn in (False, True):
        for seed in seeds:  # hundreds of training steps each: a progress line per run on stderr
            with phase(PROG, f"{steps} training steps, bottleneck attention {'on' if attn else 'off'}, seed {seed}"):
                torch.manual_seed(seed)
                model = build_model(ModelConfig(bottleneck_attention=attn), stats).train()
                opt = torch.optim.AdamW(param_groups(model, 2e-3, 0.01))
                g = torch.Generator().manual_seed(1000 + seed)
                t0 = time.perf_counter()
                for _ in range(steps):
                    b = _bumps(B, g)
                    loss = _loss(model(**_fields(b)), b)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                seconds = time.perf_counter() - t0
                model.eval()
                held_out = _bumps(512, torch.Generator().manual_seed(99))
                with torch.no_grad():
                    val = _loss(model(**_fields(held_out)), held_out).item()
            rows.append({"bottleneck_attention": attn, "seed": seed, "params": _params(model), "steps": steps,
                         "batch": B, "train_s": seconds, "held_out_loss": val})
    return rows


def _fields(b: dict) -> dict:
    drop = torch.zeros(len(b["t"]), dtype=torch.bool)
    return {"x_t": b["x_t"], "t": b["t"], "static": b["static"], "drop_cond": drop}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick-batch", type=int, default=64)
    ap.add_argument("--full-batch", type=int, default=16)
    ap.add_argument("--layer-batch", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=300, help="0 skips the bottleneck-attention training runs")
    ap.add_argument("--seeds", type=str, default="0,1")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "model.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    # progress lines on stderr as each measurement starts and ends; stdout keeps the tables
    with phase(PROG, f"forward+backward of the quickstart network (batch {args.quick_batch})"):
        speed = [bench_speed("quickstart", ModelConfig(), args.quick_batch, args.reps)]
    with phase(PROG, f"forward+backward of the full-size network (batch {args.full_batch})"):
        speed.append(bench_speed("full", ModelConfig(**FULL_SIZE), args.full_batch, max(2, args.reps // 2)))
    print(f"\n{'config':<12}{'params':>12}{'batch':>7}{'fwd+bwd ms':>12}{'ms/sample':>11}")
    for r in speed:
        print(f"{r['config']:<12}{r['params']:>12,}{r['batch']:>7}{r['fwd_bwd_ms']:>12.1f}{r['ms_per_sample']:>11.2f}")

    with phase(PROG, f"S4D and attention layers and blocks at widths 64 and 256 (batch {args.layer_batch})"):
        layers = bench_layers([64, 256], args.layer_batch, args.reps)
    print(f"\n{'layer at L=200':<30}{'width':>6}{'params':>10}{'fwd+bwd ms':>12}")
    for r in layers:
        print(f"{r['layer']:<30}{r['width']:>6}{r['params']:>10,}{r['fwd_bwd_ms']:>12.1f}")

    bottleneck = []
    if args.train_steps > 0:
        bottleneck = bench_bottleneck(args.train_steps, 32, [int(s) for s in args.seeds.split(",")])
        print(f"\n{'bottleneck attention':<22}{'seed':>5}{'params':>10}{'train s':>9}{'held-out loss':>15}")
        for r in bottleneck:
            print(f"{str(r['bottleneck_attention']):<22}{r['seed']:>5}{r['params']:>10,}{r['train_s']:>9.1f}"
                  f"{r['held_out_loss']:>15.4f}")

    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "threads": args.threads, "note": "shared, loaded CPU: provisional numbers"},
        "speed": speed, "layers": layers, "bottleneck_attention": bottleneck,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
