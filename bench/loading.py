"""Data loading as a share of the training step, in the Trainer's own loop.

    python bench/loading.py [--config configs/quickstart.yaml] [--steps 40] [--workers 0 2] [--threads 1]
                            [--device cpu|cuda] [key.path=value ...]

For each DataLoader worker count the Trainer (no callbacks) takes ``--steps`` optimizer steps, after a
few warm-up steps; each step is split into

    wait   the host waiting for the next batch (``next()`` on the DataLoader iterator)
    copy   moving it to the device (pinned memory, non-blocking on CUDA)
    step   forward, balancer backward, clip, optimizer step, EMA (``Trainer._optimizer_step``)

and the table reports the medians per step and ``(wait + copy) / total``. A share near zero means the
loader keeps up; raise ``data.num_workers`` when it does not. bench/data.py measures raw synthetic
generation and epoch-iteration speed without a model.

Prints a table and writes bench/results/loading.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from bench.common import write_result  # noqa: E402
from data.cli import phase  # noqa: E402
from training.config import load_config  # noqa: E402

PROG = "bench/loading.py"  # the start of its progress lines on stderr


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_workers(cfg, data, workers: int, steps: int, warmup: int) -> dict:
    from training.setup import build_trainer

    cfg.data.num_workers = workers
    trainer = build_trainer(cfg, tempfile.gettempdir(), callbacks=[], data=data)  # writes nothing
    trainer.model.train()
    device = trainer.device
    trainer.sampler.set_epoch(1)
    it = iter(trainer._loader(trainer.data.train, trainer.sampler))
    wait, copy, step = [], [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        batch = trainer.to_device(batch)
        _sync(device)
        t2 = time.perf_counter()
        trainer._optimizer_step([batch])
        _sync(device)
        t3 = time.perf_counter()
        if i >= warmup:
            wait.append(t1 - t0)
            copy.append(t2 - t1)
            step.append(t3 - t2)
    total = [a + b + c for a, b, c in zip(wait, copy, step, strict=True)]
    return {
        "num_workers": workers, "batch": cfg.training.batch_size, "steps": steps,
        "wait_ms": 1000 * statistics.median(wait), "copy_ms": 1000 * statistics.median(copy),
        "step_ms": 1000 * statistics.median(step), "total_ms": 1000 * statistics.median(total),
        "loading_share": (sum(wait) + sum(copy)) / sum(total),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "loading.json"))
    ap.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from data.dataset import build_data

    cfg = load_config(args.config, [f"device={args.device}", "logging.use_wandb=false", *args.overrides])
    # progress lines on stderr as each stage starts and ends; stdout keeps the table
    with phase(PROG, f"building the data of {Path(args.config).name}"):
        data = build_data(cfg.data, cfg.loss.class_weights)
    rows = []
    for w in args.workers:
        with phase(PROG, f"{w} DataLoader workers: {args.warmup} warm-up and {args.steps} timed steps"):
            rows.append(bench_workers(cfg, data, w, args.steps, args.warmup))

    print(f"{'workers':>8}{'batch':>7}{'wait ms':>10}{'copy ms':>10}{'step ms':>10}{'loading share':>15}")
    for r in rows:
        print(f"{r['num_workers']:>8}{r['batch']:>7}{r['wait_ms']:>10.2f}{r['copy_ms']:>10.2f}{r['step_ms']:>10.1f}"
              f"{100 * r['loading_share']:>14.2f}%")
    result = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                    "device": args.device, "note": "shared, loaded CPU: provisional numbers"},
        "config": Path(args.config).name, "rows": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
