"""The GPU check: configs/config.yaml's network trained by the Trainer in bf16 on one CUDA device.

    bash bench/gpu.sh                       # = python bench/gpu.py: config.yaml, cuda, 300 steps
    python bench/gpu.py [--config configs/config.yaml] [--device cuda] [--steps 300] [--warmup 20]
                        [--batch N] [--agree-steps 50] [--sync-steps 10] [--compile-steps 100]
                        [--no-compile] [--out bench/results/gpu.json] [key.path=value ...]
    python bench/gpu.py --smoke            # CPU, a tiny network and a handful of steps (tested)

Every phase trains a fresh Trainer built by ``training.setup.build_trainer`` from the same config and
seed (same initialization, same batches in the same order, same diffusion noise), without callbacks:
the optimizer step measured is ``Trainer._optimizer_step`` itself (bench/throughput.py measures what
monitoring adds on top). Phases:

1. ``bf16``: ``--warmup`` steps, then ``--steps`` timed steps. Step time per step from CUDA events
   (no extra host sync), samples/s from the wall time of the whole window, peak memory allocated
   and reserved (``torch.cuda.max_memory_*``).
2. ``syncs``: ``--sync-steps`` more steps under ``torch.cuda.set_sync_debug_mode("warn")``, counting
   torch's "synchronizing CUDA operation" warnings per step, and the tensor-to-host reads made by the
   repository's own code (bench/throughput.py's counter; the only count on CPU). The Trainer
   documents one per step: the finiteness check before ``optimizer.step()``.
3. ``fp32``: ``--agree-steps`` steps in float32 on the same batches; the objective and the six
   component losses per step against the bf16 run's first ``--agree-steps`` steps (relative
   difference, fp32 as the reference). Step 1 isolates numerics (identical weights and inputs);
   later steps add the drift of two diverging trajectories.
4. ``compile``: ``torch.compile`` of the network (the Trainer's forward goes through it), bf16: the
   first step's time (compilation), then ``--compile-steps`` timed steps against eager, and the loss
   agreement with the eager bf16 run, graph breaks. Any failure is caught and reported with its type and
   message (first 500 characters); ``--compile-backend aot_eager`` or ``eager`` tells a tracing failure
   from a code-generation one.

Prints a table and writes bench/results/gpu.json (``--out``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gc  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from itertools import pairwise  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from bench.common import write_result  # noqa: E402
from bench.throughput import Variant, _batches, count_host_reads  # noqa: E402
from data.cli import ArgumentParser, number, one_line, run_main  # noqa: E402
from data.cli import phase as progress_lines  # noqa: E402
from training.components import COMPONENTS  # noqa: E402
from training.config import Config, load_config  # noqa: E402
from training.trainer import Trainer  # noqa: E402

# --smoke: config.yaml's structure at a size a CPU runs in a second per phase.
SMOKE = [
    "data.synthetic.patients=12", "data.num_workers=0", "training.batch_size=8",
    "diffusion.timesteps=100", "model.base_channels=8", "model.blocks_per_level=1", "model.d_state=8",
    "model.attn_heads=1", "model.cond_dim=16", "model.head_dim=8",
]
STEPS = {"steps": 300, "warmup": 20, "agree_steps": 50, "sync_steps": 10, "compile_steps": 100}
SMOKE_STEPS = {"steps": 3, "warmup": 1, "agree_steps": 2, "sync_steps": 2, "compile_steps": 2}
SYNC_WARNING = "called a synchronizing CUDA operation"  # torch's text under set_sync_debug_mode("warn")
LOSS_NAMES = ("objective", *COMPONENTS)
# the start of its progress lines on stderr (gpu.sh copies them into its log); they come from data.cli.phase,
# imported as progress_lines since Phase here is one training phase of this bench
PROG = "bench/gpu.py"


class Phase:
    """One Trainer stepping through its own epoch order; ``losses`` rows are [objective, *COMPONENTS]."""

    def __init__(self, cfg: Config, data: Any, device: torch.device, run_dir: Path) -> None:
        from training.setup import build_trainer

        run_dir.mkdir(parents=True)
        self.trainer: Trainer = build_trainer(cfg, run_dir, device=device, callbacks=[], data=data)
        self.trainer.model.train()
        self.batches: Iterator[dict[str, torch.Tensor]] = _batches(self.trainer)
        self.losses: list[torch.Tensor] = []  # device vectors [1 + K], read once at the end

    def step(self) -> None:
        t = self.trainer
        out = t._optimizer_step([t.to_device(next(self.batches))])
        self.losses.append(torch.stack([out.objective, *(out.losses[k] for k in COMPONENTS)]).detach())

    def timed(self, steps: int) -> dict[str, float]:
        """``steps`` steps: median step time (CUDA events, or the wall clock on CPU) and samples/s."""
        device = self.trainer.device
        cuda = device.type == "cuda"
        marks: list[Any] = []
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            marks.append(torch.cuda.Event(enable_timing=True) if cuda else time.perf_counter())
            if cuda:
                marks[-1].record()
            self.step()
        marks.append(torch.cuda.Event(enable_timing=True) if cuda else time.perf_counter())
        if cuda:
            marks[-1].record()
        sync(device)
        wall = time.perf_counter() - t0
        step_ms = ([a.elapsed_time(b) for a, b in pairwise(marks)] if cuda
                   else [1000 * (b - a) for a, b in pairwise(marks)])
        return {"steps": steps, "step_ms_median": statistics.median(step_ms), "step_ms_min": min(step_ms),
                "step_ms_max": max(step_ms), "wall_s": wall,
                "samples_per_s": steps * self.trainer.cfg.training.batch_size / wall}

    def loss_table(self) -> list[list[float]]:
        return torch.stack(self.losses).float().cpu().tolist() if self.losses else []

    def close(self) -> None:
        del self.trainer, self.batches
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"peak_allocated_mib": None, "peak_reserved_mib": None}
    return {"peak_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20}


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def count_syncs(phase: Phase, steps: int) -> dict[str, Any]:
    """Host syncs per step: torch's own sync warnings (CUDA) and the repository's tensor-to-host reads."""
    device = phase.trainer.device
    per_step: list[int] | None = None
    if device.type == "cuda":
        per_step = []
        previous = torch.cuda.get_sync_debug_mode()
        try:
            torch.cuda.set_sync_debug_mode("warn")
            for _ in range(steps):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    phase.step()
                    sync(device)  # an explicit synchronize is not itself reported
                per_step.append(sum(SYNC_WARNING in str(w.message) for w in caught))
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    variant = Variant("trainer", phase.trainer)
    variant.batches = phase.batches  # continue the same epoch order
    reads = count_host_reads(variant, steps)
    return {
        "steps": steps,
        "cuda_syncs_per_step": per_step,
        "cuda_syncs_median_step": statistics.median(per_step) if per_step else None,
        "repo_host_reads_per_step": reads,
        "repo_host_reads_median_step": statistics.median(reads),
    }


def agreement(test: list[list[float]], ref: list[list[float]]) -> dict[str, Any]:
    """Relative differences |test - ref| / max(|ref|, 1e-3) per step and loss (ref: the reference run)."""
    n = min(len(test), len(ref))
    if n == 0:
        raise ValueError("agreement: expected at least one step in both runs, found none")
    rel = [[abs(a - b) / max(abs(b), 1e-3) for a, b in zip(test[i], ref[i], strict=True)] for i in range(n)]
    return {
        "steps": n,
        "step1_rel_diff": named(rel[0]),
        "step1_max_rel_diff": max(rel[0]),
        "objective_rel_diff_median": statistics.median(r[0] for r in rel),
        "objective_rel_diff_max": max(r[0] for r in rel),
        "last_step_rel_diff": named(rel[-1]),
        "losses_first_step": {"test": named(test[0]), "ref": named(ref[0])},
    }


def named(row: list[float]) -> dict[str, float]:
    return dict(zip(LOSS_NAMES, row, strict=True))


def compile_phase(cfg: Config, data: Any, device: torch.device, run_dir: Path, steps: int,
                  eager: list[list[float]], backend: str) -> dict[str, Any]:  # cfg: the bf16 config
    """torch.compile of the network in bf16: compile time, timed steps, loss agreement with eager."""
    phase = None
    try:
        import torch._dynamo
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        counters.clear()
        phase = Phase(cfg, data, device, run_dir)
        phase.trainer.net = torch.compile(phase.trainer.model, backend=backend)
        sync(device)
        t0 = time.perf_counter()
        phase.step()  # compiles
        sync(device)
        compile_s = time.perf_counter() - t0
        phase.step()  # untimed: a recompilation, if any, happens here rather than in the timed window
        reset_memory(device)
        row = {"status": "ok", "backend": backend, "first_step_s": compile_s, **phase.timed(steps), **memory(device)}
        row["agreement_with_eager"] = agreement(phase.loss_table(), eager)
        row["graph_breaks"] = sum(counters["graph_break"].values())
        return row
    except Exception as exc:  # compile is an experiment: its failure is a result, reported with its message
        return {"status": "failed", "backend": backend, "error": f"{type(exc).__name__}: {one_line(str(exc))[:500]}"}
    finally:
        if phase is not None:
            phase.close()


def run(args) -> dict[str, Any]:
    from data.dataset import build_data
    from training.setup import resolve_device

    for k, v in (SMOKE_STEPS if args.smoke else STEPS).items():
        if getattr(args, k) is None:  # a flag given on the command line wins over --smoke
            setattr(args, k, v)
    from data.cli import resolve_device as check_device

    device_name = args.device or ("cpu" if args.smoke else "cuda")
    check_device(device_name)  # a missing GPU is named as --device, before any work
    overrides = [f"device={device_name}", *(SMOKE if args.smoke else []), *args.overrides]
    run_root = Path(tempfile.mkdtemp(prefix="abr_gpu_"))
    overrides += [f"logging.log_dir={run_root}", "logging.use_wandb=false", "logging.use_tensorboard=false",
                  *([f"training.batch_size={args.batch}"] if args.batch else [])]
    try:
        cfg = load_config(args.config, [*overrides, "training.precision=bf16"])
        cfg32 = load_config(args.config, [*overrides, "training.precision=fp32"])
        device = resolve_device(cfg.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        compile_wanted = args.compile if args.compile is not None else device.type == "cuda"
        # minutes in all on a GPU: a progress line on stderr as each phase starts and ends; stdout keeps the table
        with progress_lines(PROG, "building the data"):
            data = build_data(cfg.data, cfg.loss.class_weights)
        result: dict[str, Any] = {"machine": machine(device), "setup": {
            "config": str(args.config), "smoke": args.smoke, "device": str(device),
            "batch": cfg.training.batch_size, "steps": args.steps, "warmup": args.warmup,
            "agree_steps": args.agree_steps, "sync_steps": args.sync_steps, "compile_steps": args.compile_steps,
            "overrides": overrides, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        }}

        # 1-2. bf16 eager: timed window, then host syncs per step
        with progress_lines(PROG, f"bf16: {args.warmup} warm-up and {args.steps} timed steps"):
            bf16 = Phase(cfg, data, device, run_root / "bf16")
            result["setup"]["params"] = sum(p.numel() for p in bf16.trainer.model.parameters())
            for _ in range(args.warmup):
                bf16.step()
            reset_memory(device)
            result["bf16"] = {**bf16.timed(args.steps), **memory(device)}
        with progress_lines(PROG, f"host syncs over {args.sync_steps} steps"):
            result["syncs"] = count_syncs(bf16, args.sync_steps)
        eager = bf16.loss_table()  # warm-up steps first: row i is step i + 1 from the same init
        result["bf16"]["final_losses"] = named(eager[-1])
        bf16.close()

        # 3. fp32 on the same batches: loss agreement
        with progress_lines(PROG, f"fp32: {args.agree_steps} steps on the same batches"):
            fp32 = Phase(cfg32, data, device, run_root / "fp32")
            reset_memory(device)
            result["fp32"] = {**fp32.timed(args.agree_steps), **memory(device)}
        result["bf16_vs_fp32"] = agreement(eager, fp32.loss_table())
        fp32.close()

        # 4. torch.compile
        if compile_wanted:
            with progress_lines(PROG, f"torch.compile ({args.compile_backend}): compiling, then {args.compile_steps} "
                                      "timed steps"):
                result["compile"] = compile_phase(cfg, data, device, run_root / "compile", args.compile_steps,
                                                  eager, args.compile_backend)
        else:
            result["compile"] = {"status": "skipped", "error": "not tried on CPU (pass --compile to try)"}
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
    print_table(result)
    write_result(args.out, result)
    return result


def machine(device: torch.device) -> dict[str, Any]:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def print_table(r: dict[str, Any]) -> None:
    s = r["setup"]
    print(f"{r['machine']['device']} | torch {r['machine']['torch']} | {s['config']} | {s['params']:,} parameters | "
          f"batch {s['batch']}")
    print(f"| run | steps | samples/s | step ms (median) | peak allocated MiB | peak reserved MiB |\n|{'---|' * 6}")
    rows = [("bf16 eager", r["bf16"]), ("fp32 eager", r["fp32"])]
    if r["compile"]["status"] == "ok":
        rows.append((f"bf16 compiled ({r['compile']['backend']})", r["compile"]))
    for name, row in rows:
        print(f"| {name} | {row['steps']} | {row['samples_per_s']:.1f} | {row['step_ms_median']:.2f} | "
              f"{_fmt(row['peak_allocated_mib'], '.0f')} | {_fmt(row['peak_reserved_mib'], '.0f')} |")
    y = r["syncs"]
    print(f"host syncs per step (median over {y['steps']}): CUDA sync warnings "
          f"{_fmt(y['cuda_syncs_median_step'], 'g')}, repository tensor-to-host reads "
          f"{y['repo_host_reads_median_step']:g}")
    a = r["bf16_vs_fp32"]
    print(f"bf16 vs fp32 over {a['steps']} steps: step-1 max relative difference {a['step1_max_rel_diff']:.2e}, "
          f"objective median {a['objective_rel_diff_median']:.2e}, max {a['objective_rel_diff_max']:.2e}")
    c = r["compile"]
    if c["status"] == "ok":
        speedup = r["bf16"]["step_ms_median"] / c["step_ms_median"]
        print(f"torch.compile ({c['backend']}): first step {c['first_step_s']:.1f} s, {speedup:.2f}x eager step time, "
              f"graph breaks {c['graph_breaks']}, objective vs eager max relative difference "
              f"{_fmt(c['agreement_with_eager']['objective_rel_diff_max'], '.2e')}")
    else:
        print(f"torch.compile ({c.get('backend', '-')}): {c['status']}: {c['error']}")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python bench/gpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "config.yaml"))
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda; --smoke: cpu)")
    counts = {"steps": "timed bf16 steps", "warmup": "untimed bf16 steps before them",
              "agree_steps": "fp32 steps compared with bf16", "sync_steps": "steps whose host syncs are counted",
              "compile_steps": "timed torch.compile steps"}
    for key, what in counts.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=number(int, ge=0 if key == "warmup" else 1),
                       help=f"{what} (default {STEPS[key]}; --smoke: {SMOKE_STEPS[key]})")
    p.add_argument("--compile", action="store_true", default=None, help="try torch.compile (default: on CUDA)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend: inductor; aot_eager or eager to tell a tracing failure from a "
                        "code-generation one")
    p.add_argument("--batch", type=number(int, ge=1), default=0, help="batch size (default: the config's)")
    p.add_argument("--smoke", action="store_true",
                   help=f"a tiny network, a handful of steps, on the CPU unless --device says otherwise "
                        f"({', '.join(SMOKE)})")
    p.add_argument("--threads", type=number(int, ge=1), default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu.json"))
    p.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_SILENT", "true")

    def body() -> int:
        run(args)
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
