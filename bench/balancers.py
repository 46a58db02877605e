"""Balancer benchmark: training-step time of each strategy relative to `fixed`.

    python bench/balancers.py [--threads 1] [--batch 16] [--steps 12] [--warmup 2]
        [--strategies fixed jacobian jacobian:engine=autojac jacobian:aggregator=mgda,engine=gramian]
        [--profile 3]

One training step as the trainer does it, on the quickstart network (``ModelConfig()``): one
forward over the noisy x_t (for ``signal``) and the clean x0 at t = 0 (for the heads), the six
component losses, ``balancer.backward``, clipping, the optimizer step and
``balancer.after_optimizer_step``. Every strategy gets its own identically seeded model; the
strategies take turns step by step (round robin) so that machine load drifts hit all of them
alike. Reported: the median step time over ``--steps`` timed steps and its ratio to `fixed`. A strategy
that computes its weights only every N-th step (``jacobian:update_every=N``) has two kinds of step, so
its time per step is the median over its complete N-step cycles of the cycle's time / N (the cost
amortized over a cycle; for every other strategy N = 1 and it is the median step), and the ratio uses it.

A strategy is a name or ``name:key=value,...``, the keys of that strategy's config block
(``jacobian:engine=autojac``). ``--profile N`` then runs N more steps of each under
``torch.profiler`` and reports the CPU time per step of each phase (``step.*``: forward, balancer
backward, optimizer; ``jacobian.*``: the parts of a `jacobian` step, training/balancers/jacobian.py).

Prints a table and writes bench/results/balancers.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import progress_bar, strategy_overrides, write_result  # noqa: E402
from data.cli import phase  # noqa: E402
from data.stats import DataStats  # noqa: E402
from models import ModelConfig, build_model  # noqa: E402
from training.balancers import BalanceContext, BalancerConfig, build_balancer  # noqa: E402
from training.balancers.config import STRATEGIES  # noqa: E402
from training.balancers.meta_loss import MetaLoss  # noqa: E402
from training.config import DiffusionConfig, LossConfig, load_config  # noqa: E402
from training.diffusion import GaussianDiffusion  # noqa: E402
from training.losses import ComponentLosses  # noqa: E402
from training.objective import Objective  # noqa: E402

L = 200
PROG = "bench/balancers.py"  # the start of its progress lines on stderr


def make_batch(B: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    mask = torch.rand(B, generator=g) < 0.75
    return {
        "signal": torch.randn(B, 1, L, generator=g),
        "static": torch.rand(B, 4, generator=g) * torch.tensor([10.0, 100.0, 50.0, 1500.0]),
        "label": torch.randint(0, 5, (B,), generator=g),
        "peak_mask": mask,
        "peak_latency": 7.8 + torch.randn(B, generator=g),
        "peak_amplitude": 0.17 + 0.1 * torch.randn(B, generator=g),
        "threshold": 40 + 20 * torch.randn(B, generator=g),
    }


class Setup:
    """One strategy's model, diffusion, MetaLoss and optimizer (same seed for every strategy)."""

    def __init__(self, strategy: str, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = build_model(ModelConfig(), DataStats.identity()).train()
        self.diffusion = GaussianDiffusion(DiffusionConfig())
        self.meta = MetaLoss(ComponentLosses(LossConfig(), DataStats.identity(), torch.ones(5)),
                             build_balancer(balancer_config(strategy)))
        self.params = [*self.model.parameters(), *self.meta.balancer.trainable_parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=1e-3)
        self.shared = list(self.model.shared_parameters())
        self.last_shared = list(self.model.last_shared_parameters())
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.objective = Objective(self.diffusion, self.meta.components, cond_drop_prob=0.0, head_input="clean")

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        with record_function("step.forward"):
            out = self.objective(self.model, batch, self.gen, train=True)
        ctx = BalanceContext(shared_params=self.shared, last_shared_params=self.last_shared, features=out.features)
        with record_function("step.balancer_backward"):
            self.meta.balancer.backward(out.losses, ctx)
        with record_function("step.optimizer"):
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.meta.balancer.after_optimizer_step()
            self.opt.zero_grad(set_to_none=True)


def balancer_config(spec: str) -> BalancerConfig:
    """``name`` or ``name:key=value,...`` (keys of the strategy's config block) -> its BalancerConfig,
    read as the config overrides ``loss.balancer.name.key=value`` (validated there)."""
    return load_config(None, strategy_overrides(spec)).loss.balancer


def update_every(spec: str) -> int:
    """How many steps one cycle of the strategy ``spec`` spans (its weights computed on the first): 1 but for
    ``jacobian:update_every=N``."""
    return balancer_config(spec).jacobian.update_every if spec.partition(":")[0] == "jacobian" else 1


def per_step_time(times: list[float], warmup: int, every: int) -> float:
    """Seconds per step: the median over the complete cycles of ``every`` steps among the timed ones (step
    ``warmup + j`` is ``times[j]``; a cycle starts where the step count is a multiple of ``every``) of the
    cycle's time / ``every``; with ``every`` 1 the median step."""
    first = (-warmup) % every  # the first timed step that starts a cycle
    cycles = [sum(times[j:j + every]) / every for j in range(first, len(times) - every + 1, every)]
    if not cycles:
        raise ValueError(f"expected --steps of at least {first + every} to time one whole {every}-step cycle, "
                         f"found {len(times)}")
    return statistics.median(cycles)


def profile_phases(setup: Setup, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """CPU ms per step of each ``step.*`` / ``jacobian.*`` phase over ``batches`` (one step each)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for batch in batches:
            setup.step(batch)
    return {e.key: round(e.cpu_time_total / 1000 / len(batches), 2) for e in prof.key_averages()
            if e.key.startswith(("step.", "jacobian."))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per strategy")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per strategy first")
    ap.add_argument("--strategies", nargs="*", default=list(STRATEGIES),
                    help="names, or name:key=value,... (that strategy's config keys)")
    ap.add_argument("--profile", type=int, default=0, help="then profile N steps of each: CPU ms per phase")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "balancers.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    strategies = ["fixed", *[s for s in args.strategies if s != "fixed"]]
    # progress on stderr (stdout keeps the table): a line per stage, a bar on a terminal over the steps
    with phase(PROG, f"building a network per strategy ({len(strategies)})"):
        setups = {s: Setup(s) for s in strategies}
    g = torch.Generator().manual_seed(123)
    times: dict[str, list[float]] = {s: [] for s in strategies}
    total = args.warmup + args.steps
    with (phase(PROG, f"{args.warmup} warm-up and {args.steps} timed steps of every strategy, round robin"),
          progress_bar(total, "steps") as bar):
        for i in range(total):
            batch = make_batch(args.batch, g)
            for s in strategies:  # round robin: load drift is shared
                t0 = time.perf_counter()
                setups[s].step(batch)
                if i >= args.warmup:
                    times[s].append(time.perf_counter() - t0)
            bar.update(1)  # between the timed calls, not inside them
    every = {s: update_every(s) for s in strategies}
    per_step = {s: per_step_time(times[s], args.warmup, every[s]) for s in strategies}
    base = per_step["fixed"]
    rows = []
    for s in strategies:
        rows.append({"strategy": s, "update_every": every[s], "per_step_ms": round(1000 * per_step[s], 2),
                     "relative_to_fixed": round(per_step[s] / base, 3),
                     "median_ms": round(1000 * statistics.median(times[s]), 2),
                     "min_ms": round(1000 * min(times[s]), 2), "max_ms": round(1000 * max(times[s]), 2)})
    width = max(16, *map(len, strategies))
    print(f"{'strategy':{width}s} {'ms/step':>8s} {'x fixed':>8s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s}")
    for r in rows:
        print(f"{r['strategy']:{width}s} {r['per_step_ms']:8.1f} {r['relative_to_fixed']:8.2f} {r['median_ms']:10.1f} "
              f"{r['min_ms']:8.1f} {r['max_ms']:8.1f}")
    phases = {}
    if args.profile:
        batches = [make_batch(args.batch, g) for _ in range(args.profile)]
        phases = {s: profile_phases(setups[s], batches) for s in strategies}
        print(f"\nCPU ms per step by phase ({args.profile} profiled steps each):")
        for s, p in phases.items():
            print(f"{s}: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(p.items())))
    result = {
        "what": "training-step time per balancer strategy, quickstart model, CPU",
        "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
        "torch": torch.__version__, "machine": platform.platform(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d"),
        "rows": rows, "phases_ms_per_step": phases,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
