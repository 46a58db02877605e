"""How fast ``evaluation.predict`` answers a clinic's day: 1,000 unlabelled recordings on 2 CPU threads.

    python bench/predict.py --run logs/clinical [--recordings 1000 --cores 2 --torch-threads 1 2 --repeats 3]

The recordings are synthetic patients (their own generator seed), written as one CSV without label,
threshold or peak columns, whole series except the last. Each repeat runs the whole command in a
fresh process (``python -m evaluation.predict``: start-up, imports, reading, the network, the series
level, tables, figures) pinned to ``--cores`` CPUs where the machine has more, figures drawn by that
many processes, with torch using each of ``--torch-threads`` (``OMP_NUM_THREADS``), once with the
waterfall figures and once without (``--no-figures``). Reported: the median wall time over the
repeats, recordings/s and the CPU seconds (the command and its figure processes), beside the phases
predict's own summary.md times. The load average before each repeat is recorded: on a shared machine
the wall times are upper bounds (and a second torch thread that must wait for a busy core can make
the network several times slower than one thread: compare the two).
Writes bench/results/predict.json.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from data.cli import ArgumentParser, number, phase, run_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH_SEED = 2024  # the cohort's generator seed (no run trains on it: the clinical runs use seed 0)
TARGET_S = 10.0  # a clinic's day (1,000 recordings) on 2 CPU cores
PROG = "bench/predict.py"  # argparse's prog and the start of its progress lines on stderr


def write_cohort(path: Path, n: int, seed: int) -> tuple[int, int]:
    """``n`` synthetic recordings as an unlabelled CSV at ``path``; returns (recordings, series)."""
    import numpy as np

    from data.records import LABEL_COLUMNS, unlabelled_columns
    from data.synthetic import generate
    from data.table import write_table

    records = generate(max(4, n // 15), seed)  # about 25 recordings per patient: enough, then cut
    if len(records) < n:
        raise ValueError(f"--recordings {n}: the cohort has only {len(records)}")
    records = records.subset(np.arange(n))
    for k, v in unlabelled_columns(n).items():  # no labels in the file: what a clinic has
        setattr(records, k, v)
    write_table(path, records)
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    keep = [j for j, h in enumerate(header) if h not in LABEL_COLUMNS]
    path.write_text("\n".join(",".join(line.split(",")[j] for j in keep) for line in lines) + "\n", encoding="utf-8")
    return n, len(np.unique(records.series_id))


def run_once(args, csv: Path, out: Path, figures: bool, torch_threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads),
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "evaluation.predict", "--run", args.run, "--checkpoint", args.checkpoint, str(csv),
           "--out", str(out), "--overwrite", "--device", "cpu", "--workers", str(args.cores)]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = None
    if len(cpus) > args.cores:
        def pin() -> None:
            os.sched_setaffinity(0, cpus[: args.cores])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd + ([] if figures else ["--no-figures"]), env=env, cwd=REPO, capture_output=True,
                          text=True, preexec_fn=pin)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and its figure processes
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"predict failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    summary = (out / "summary.md").read_text(encoding="utf-8")
    phases = {}
    m = re.search(r"in this process \((.*?); start-up", summary)
    if m:
        phases = {k.strip(): float(v) for k, v in re.findall(r"([a-z ]+) ([0-9.]+) s", m.group(1))}
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "load_average_before": round(load, 2),
            "phases_s": phases}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a trained run (with checkpoints/series.pt for the series model)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--recordings", type=number(int, ge=10, le=100_000), default=1000)
    p.add_argument("--cores", type=number(int, ge=1, le=64), default=2,
                   help="CPUs the command may use (pinned where the machine has more) and figure processes")
    p.add_argument("--torch-threads", type=number(int, ge=1, le=64), nargs="+", default=[1, 2],
                   help="torch intra-op threads to try (OMP_NUM_THREADS), each within --cores")
    p.add_argument("--repeats", type=number(int, ge=1, le=20), default=3)
    p.add_argument("--seed", type=number(int, ge=0), default=BENCH_SEED)
    p.add_argument("--out", default="bench/results/predict.json")
    args = p.parse_args(argv)
    return run_main(lambda: _run(args), debug=args.debug)


def _run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        csv = Path(tmp) / "clinic_day.csv"
        with phase(PROG, f"writing the cohort ({args.recordings} recordings, seed {args.seed})"):
            n, n_series = write_cohort(csv, args.recordings, args.seed)
        result = {"run": args.run, "checkpoint": args.checkpoint, "recordings": n, "series": n_series,
                  "cores": args.cores, "repeats": args.repeats, "machine": platform.platform(),
                  "cpus_visible": os.cpu_count(), "target_s": TARGET_S, "modes": {}}
        print(f"{n} recordings in {n_series} series, {args.cores} cores, {args.repeats} repeats")
        print("| mode | median wall s | recordings/s | CPU s (median) | repeats (wall s) | phases (median run) |\n"
              "|---|---|---|---|---|---|")
        modes = [(f"{what}, torch threads {t}", figures, t) for t in args.torch_threads
                 for what, figures in (("tables and figures", True), ("tables only", False))]
        for mode, figures, threads in modes:
            # a fresh predict process per repeat, its own output captured: one progress line per mode on stderr
            with phase(PROG, f"{mode}: {args.repeats} runs of python -m evaluation.predict"):
                runs = [run_once(args, csv, Path(tmp) / "out", figures, threads) for _ in range(args.repeats)]
            walls = [r["wall_s"] for r in runs]
            median = statistics.median(walls)
            mid = runs[walls.index(sorted(walls)[len(walls) // 2])]
            cpu = statistics.median(r["cpu_s"] for r in runs)
            result["modes"][mode] = {"median_s": round(median, 3), "recordings_per_s": round(n / median, 1),
                                     "median_cpu_s": round(cpu, 3), "within_target": median < TARGET_S * n / 1000,
                                     "runs": runs}
            phases = ", ".join(f"{k} {v:g}" for k, v in mid["phases_s"].items())
            print(f"| {mode} | {median:.2f} | {n / median:.0f} | {cpu:.1f} | {', '.join(f'{w:.2f}' for w in walls)} "
                  f"| {phases} |")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
