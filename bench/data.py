"""Data benchmarks: synthetic generation on one core, native file I/O, and a training epoch's data time.

    python run.py bench/data.py [--patients 4000] [--repeats 3]

Writes bench/results/data.json and prints a table. The process is pinned to one CPU core and
numeric libraries to one thread, so "signals/s" is a one-core figure (issue 3 asks >= 100k).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch are imported
# This file is bench/data.py: run as a script, its folder comes first on sys.path and `import data`
# would find this file instead of the data/ package. Put the repository root first.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from bench.common import timed  # noqa: E402
from data.cli import phase  # noqa: E402
from data.dataset import ABRDataset  # noqa: E402
from data.native import read_native, write_native  # noqa: E402
from data.stats import fit_stats  # noqa: E402
from data.synthetic import generate  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "data.json"
PROG = "bench/data.py"  # the start of its progress lines on stderr


def bench_generation(patients: int, repeats: int) -> dict:
    generate(64, seed=0)  # warm-up: imports, FFT plans
    n = len(generate(patients, seed=0))
    wall = timed(lambda: generate(patients, seed=0), repeats)
    # CPU time of this (single-threaded, pinned) process: the one-core figure even on a busy machine
    cpu = timed(lambda: generate(patients, seed=0), repeats, clock=time.process_time)
    return {"patients": patients, "signals": n, "wall_seconds": wall, "cpu_seconds": cpu,
            "signals_per_s_best": n / min(wall), "signals_per_s_median": n / statistics.median(wall),
            "signals_per_cpu_s_best": n / min(cpu), "load_average_1min": os.getloadavg()[0]}


def bench_native_io(patients: int, repeats: int) -> dict:
    records = generate(patients, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.npz"
        write = timed(lambda: write_native(path, records), repeats)
        read = timed(lambda: read_native(path), repeats)
        size = path.stat().st_size
    n = len(records)
    return {"recordings": n, "file_mb": size / 2**20, "write_recordings_per_s": n / min(write),
            "read_validate_recordings_per_s": n / min(read)}


def bench_epoch(patients: int, repeats: int) -> dict:
    records = generate(patients, seed=0)
    ds = ABRDataset(records, fit_stats(records))
    loader = DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))

    def epoch() -> None:
        for _batch in loader:
            pass

    def direct() -> None:
        for idx in torch.randperm(len(ds)).split(64):
            ds.batch(idx)

    return {"items": len(ds), "batch_size": 64, "dataloader_epoch_s": min(timed(epoch, repeats)),
            "direct_batch_epoch_s": min(timed(direct, repeats))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=4000, help="patients per generation run (~25.5 signals each)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                          "torch": torch.__version__, "cores_used": 1}}
    # on one core each part takes a while: progress lines on stderr, stdout keeps the table
    with phase(PROG, f"synthetic generation of {args.patients} patients, {2 * args.repeats} timed runs"):
        result["generation"] = bench_generation(args.patients, args.repeats)
    with phase(PROG, "native file write and read"):
        result["native_io"] = bench_native_io(min(args.patients, 2000), args.repeats)
    with phase(PROG, "an epoch of the quickstart's data size, DataLoader and dataset.batch"):
        result["epoch"] = bench_epoch(294, args.repeats)  # ~7,500 items: the quickstart's data size
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    g, io, ep = result["generation"], result["native_io"], result["epoch"]
    rows = [
        ("synthetic generation, 1 core",
         f"{g['signals_per_s_best']:,.0f} signals/s wall (median {g['signals_per_s_median']:,.0f})"),
        ("  per CPU-second",
         f"{g['signals_per_cpu_s_best']:,.0f} signals/s (load average {g['load_average_1min']:.1f})"),
        ("  run size", f"{g['signals']:,} signals from {g['patients']:,} patients"),
        ("native write", f"{io['write_recordings_per_s']:,.0f} recordings/s ({io['file_mb']:.1f} MB)"),
        ("native read + validate", f"{io['read_validate_recordings_per_s']:,.0f} recordings/s"),
        (f"epoch of {ep['items']:,} items, DataLoader b=64", f"{ep['dataloader_epoch_s'] * 1e3:.0f} ms"),
        (f"epoch of {ep['items']:,} items, dataset.batch", f"{ep['direct_batch_epoch_s'] * 1e3:.0f} ms"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
