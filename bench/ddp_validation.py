"""Validation time per rank under DDP: 1 process against N processes (torchrun, gloo on CPU).

    python bench/ddp_validation.py [--ranks 1 2] [--repeats 5] [--patients 400 --batch 64]

For each world size the bench launches ``torchrun --nproc_per_node=N`` on itself; every rank builds the
quickstart Trainer (``configs/quickstart.yaml``, one torch thread, no callbacks) and times
``Trainer.validate("val")`` ``--repeats`` times after one warm-up call: the component losses at fixed noise
and the per-patient (clinical) values, each rank on its block of the split's batches, reduced across ranks.
A call's time is the slowest rank's (the reduction waits for it). Medians over the repeats; the values of
every world size must agree with one process's to 1e-6 (checked and reported).

Writes bench/results/ddp_validation.json and the section "ddp-validation" of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, add_output_args, machine, timed, write_outputs  # noqa: E402
from data.cli import ArgumentParser, number, phase, run_main  # noqa: E402

PROG = "bench/ddp_validation.py"  # argparse's prog and the start of its progress lines on stderr


def worker(out_dir: Path, patients: int, batch: int, repeats: int) -> None:
    """One rank (under torchrun): time validate() and write this rank's times and values."""
    from training.callbacks.base import CallbackList
    from training.config import load_config
    from training.distributed import init_distributed, shutdown
    from training.setup import build_trainer

    torch.set_num_threads(1)
    info = init_distributed(torch.device("cpu"))
    try:
        cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                          [f"data.synthetic.patients={patients}", f"training.batch_size={batch}", "device=cpu",
                           "logging.use_wandb=false", "logging.figures=false", f"logging.log_dir={out_dir}"])
        trainer = build_trainer(cfg, out_dir / "run", device=torch.device("cpu"), dist_info=info)
        trainer.callbacks = CallbackList([])
        values = {}

        def once() -> None:
            values.update(trainer.validate("val"))

        times = timed(once, repeats, warmup=1)
        (out_dir / f"rank{info.rank}.json").write_text(json.dumps(
            {"times": times, "values": values, "recordings": len(trainer.data.val)}))
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(ranks: int, args) -> dict:
    """Launch ``ranks`` processes; per repeat the slowest rank's seconds; the values rank 0 reports."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", __file__, "--worker", tmp, "--patients", str(args.patients),
               "--batch", str(args.batch), "--repeats", str(args.repeats)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"torchrun with {ranks} rank(s) failed: {(proc.stdout + proc.stderr)[-2000:]}")
        per_rank = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(ranks)]
    slowest = [max(r["times"][i] for r in per_rank) for i in range(args.repeats)]
    return {"ranks": ranks, "seconds": slowest, "median_s": statistics.median(slowest),
            "values": per_rank[0]["values"], "recordings": per_rank[0]["recordings"]}


def table(result: dict) -> str:
    base = result["runs"][0]["median_s"]
    lines = [f"{result['recordings']} validation recordings (quickstart network, {result['patients']} synthetic "
             f"patients, batch {result['batch']}, one torch thread per rank, gloo), {result['repeats']} timed "
             f"validate() calls after one warm-up; measured on {result['machine']}, load average "
             f"{result['load_average']} at the start.", "",
             "| ranks | validate() per rank, median s | x 1 rank | ideal (1/N) | max value diff to 1 rank |",
             "|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        lines.append(f"| {r['ranks']} | {r['median_s']:.3f} | {r['median_s'] / base:.2f} | {1 / r['ranks']:.2f} | "
                     f"{r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=number(int, ge=1, le=64), nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=number(int, ge=1, le=1000), default=5)
    p.add_argument("--patients", type=number(int, ge=12, le=100_000), default=400)
    p.add_argument("--batch", type=number(int, ge=1, le=4096), default=64)
    p.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)  # the torchrun workers' entry point
    add_output_args(p, "ddp_validation")
    args = p.parse_args(argv)
    if args.worker:
        worker(Path(args.worker), args.patients, args.batch, args.repeats)
        return 0
    return run_main(lambda: _run(args, argv), debug=args.debug)


def _run(args, argv: list[str] | None) -> int:
    result = {"machine": machine(), "load_average": round(os.getloadavg()[0], 1), "patients": args.patients,
              "batch": args.batch, "repeats": args.repeats,
              "command": "python bench/ddp_validation.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    t0 = time.time()
    runs = []
    for n in sorted(set([1, *args.ranks])):  # a torchrun per world size, its output captured: one line each
        with phase(PROG, f"{n} rank(s): torchrun, {args.repeats} timed validate() calls"):
            runs.append(measure(n, args))
    ref = runs[0]["values"]
    for r in runs:
        r["max_abs_diff"] = max(abs(r["values"][k] - v) for k, v in ref.items())
        if r["values"].keys() != ref.keys() or r["max_abs_diff"] > 1e-6 * max(1.0, *map(abs, ref.values())):
            raise RuntimeError(f"{r['ranks']} ranks: validation values differ from one process's "
                               f"(max difference {r['max_abs_diff']:.3g})")
    result.update(runs=runs, recordings=runs[0]["recordings"], seconds=round(time.time() - t0, 1))
    section = table(result)
    print(section)
    write_outputs(args, "ddp-validation", result,
                  "## Validation time per rank under DDP (bench/ddp_validation.py)\n\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
