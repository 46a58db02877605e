"""Throughput: samples/s of the Trainer with every monitoring feature on, against a bare PyTorch loop.

    python bench/throughput.py [--config configs/quickstart.yaml] [--steps 40] [--repeats 3] [--threads 1]
                               [--device cpu|cuda] [--precision fp32|bf16] [--batch N] [key.path=value ...]

Three variants train identically initialized networks on the same data and batch size, with the same
forward and losses (``training.objective.Objective``):

- ``bare``: a hand-written loop: the objective, the fixed-weight sum, backward, clip, AdamW, LR
  schedule, EMA. No callbacks, no finiteness check, no host sync at all.
- ``trainer``: the Trainer's optimizer step (``Trainer._optimizer_step``, balancer, one finiteness sync
  per step) with no callbacks.
- ``monitored``: the same with every monitoring feature on: step metrics, epoch summary, the loss
  weight logger, console (tqdm and log lines, written to a null stream), metrics.jsonl, train.log,
  TensorBoard, W&B (offline), the health monitor, waveform figures and checkpoints.

The loop body mirrors ``Trainer._train_epoch`` (next batch, to device, optimizer step, ``on_step_end``
hooks), so the variants can take turns (round robin) and machine-load drifts hit all three alike: on
CPU step by step, on CUDA window by window (a per-step timer would need a per-step sync). A window is
``--steps`` optimizer steps, a multiple of ``training.log_frequency`` that starts right after a log
step, so every window holds the same number of log points. Reported per
variant: the median samples/s over ``--repeats`` windows, and for ``monitored`` the share of the
window spent inside the callbacks' ``on_step_end`` (a direct, load-robust measure of the monitoring
cost). Validation, epoch summaries and checkpoints happen once per epoch and are not in the windows.
One more, untimed window counts the tensor-to-host reads (``.item()``, ``.tolist()``, ``bool()``, ...)
that the repository's code makes per step: each is a device sync on CUDA.

Prints a table and writes bench/results/throughput.json (``--out``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_SILENT", "true")

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import torch  # noqa: E402

from bench.common import progress_bar, write_result  # noqa: E402
from data.cli import phase  # noqa: E402
from training.components import COMPONENTS  # noqa: E402
from training.config import Config, load_config  # noqa: E402
from training.trainer import Trainer  # noqa: E402

VARIANTS = ("bare", "trainer", "monitored")
PROG = "bench/throughput.py"  # the start of its progress lines on stderr


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(trainer: Trainer) -> Iterator[dict[str, torch.Tensor]]:
    """The trainer's own epoch order (sampler, DataLoader, pinned memory on CUDA), epoch after epoch."""
    epoch = 1
    while True:
        trainer.sampler.set_epoch(epoch)
        yield from trainer._loader(trainer.data.train, trainer.sampler)
        epoch += 1


class Variant:
    """One way of training: ``step()`` does one optimizer step and returns seconds spent in callbacks."""

    def __init__(self, name: str, trainer: Trainer) -> None:
        self.name, self.trainer = name, trainer
        self.batches = _batches(trainer)
        self.windows: list[float] = []  # seconds per window
        self.callback_s: list[float] = []  # seconds inside on_step_end per window
        self.step_fn: Callable[[dict[str, torch.Tensor]], float] = (
            self._bare_step if name == "bare" else self._trainer_step
        )
        if name == "bare":
            balancer = trainer.meta_loss.balancer
            self.w = balancer.weights_tensor().detach().to(trainer.device)  # [K] fixed weights
            self.gen = torch.Generator(trainer.device).manual_seed(trainer.cfg.seed + 1)

    def _trainer_step(self, batch: dict[str, torch.Tensor]) -> float:
        t = self.trainer
        out = t._optimizer_step([t.to_device(batch)])
        t0 = time.perf_counter()
        t._call("on_step_end", out)
        return time.perf_counter() - t0

    def _bare_step(self, batch: dict[str, torch.Tensor]) -> float:
        t = self.trainer
        batch = t.to_device(batch)
        losses = t.objective(t.net, batch, self.gen, train=True).losses
        loss = (self.w * torch.stack([losses[k] for k in COMPONENTS])).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(t.clip_params, t.cfg.training.grad_clip or math.inf)
        t.optimizer.step()
        t.optimizer.zero_grad(set_to_none=True)
        t.scheduler.step()
        if t.ema is not None:
            t.ema.update(t.model)
        return 0.0

    def run(self, steps: int, record: bool = True) -> None:
        """One window of ``steps`` steps on its own (round robin by window: the CUDA mode)."""
        device = self.trainer.device
        _sync(device)
        t0 = time.perf_counter()
        in_callbacks = sum(self.step_fn(next(self.batches)) for _ in range(steps))
        _sync(device)
        if record:
            self.windows.append(time.perf_counter() - t0)
            self.callback_s.append(in_callbacks)


def run_interleaved(variants: list[Variant], steps: int) -> None:
    """One window per variant, the variants taking turns step by step (round robin by step: the CPU
    mode, where other processes share the cores and the load drifts within seconds)."""
    spent = [0.0] * len(variants)
    in_callbacks = [0.0] * len(variants)
    for _ in range(steps):
        for i, v in enumerate(variants):
            t0 = time.perf_counter()
            in_callbacks[i] += v.step_fn(next(v.batches))
            spent[i] += time.perf_counter() - t0
    for i, v in enumerate(variants):
        v.windows.append(spent[i])
        v.callback_s.append(in_callbacks[i])


READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")  # tensor -> host value


def count_host_reads(v: Variant, steps: int) -> list[int]:
    """Tensor-to-host reads made by this repository's code during each of ``steps`` steps (reads inside
    torch itself, e.g. AdamW's CPU step counters, are not device syncs and are left out)."""
    counts = [0]
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    repo, venv = str(ROOT), str(ROOT / ".venv")

    def counting(f):
        def read(self, *a, **k):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(repo) and not caller.startswith(venv):
                counts[0] += 1
            return f(self, *a, **k)
        return read

    per_step = []
    try:
        for name, f in originals.items():
            setattr(torch.Tensor, name, counting(f))
        for _ in range(steps):
            counts[0] = 0
            v.step_fn(next(v.batches))
            per_step.append(counts[0])
    finally:
        for name, f in originals.items():
            setattr(torch.Tensor, name, f)
    return per_step


def build_variants(cfg: Config, run_root: Path) -> list[Variant]:
    from data.dataset import build_data
    from training.callbacks import ConsoleCallback, default_callbacks
    from training.callbacks.checkpoint import CheckpointCallback
    from training.setup import build_trainer, resolve_device, setup_logging, write_run_files

    device = resolve_device(cfg.device)
    data = build_data(cfg.data, cfg.loss.class_weights)
    variants = []
    for name in VARIANTS:
        run_dir = run_root / name
        run_dir.mkdir(parents=True)
        callbacks = None if name == "monitored" else []
        if name == "monitored":
            setup_logging(run_dir)  # train.log; the console handler is sent to the null stream below
            callbacks = [*default_callbacks(cfg), CheckpointCallback()]
        trainer = build_trainer(cfg, run_dir, device=device, callbacks=callbacks, data=data)
        if name == "monitored":
            null = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
            for cb in trainer.callbacks:
                if isinstance(cb, ConsoleCallback):
                    cb.file = null
            for h in logging.getLogger("abr").handlers:
                if type(h) is logging.StreamHandler:
                    h.setStream(null)
            write_run_files(trainer)
            trainer.model.train()
            trainer._call("on_train_start")
            trainer._call("on_epoch_start", 1)
        trainer.model.train()
        variants.append(Variant(name, trainer))
    return variants


def summarize(variants: list[Variant], batch: int, steps: int) -> dict:
    rows = {}
    for v in variants:
        med = statistics.median(v.windows)
        rows[v.name] = {
            "samples_per_s": batch * steps / med,
            "step_ms": 1000 * med / steps,
            "window_s": v.windows,
            "callback_share": sum(v.callback_s) / sum(v.windows),
        }
    base = rows["trainer"]["samples_per_s"]
    bare = rows["bare"]["samples_per_s"]
    mon = rows["monitored"]["samples_per_s"]
    return {
        "variants": rows,
        "monitoring_overhead": base / mon - 1.0,  # extra time per sample of monitored vs trainer
        "overhead_vs_bare": bare / mon - 1.0,
        "trainer_vs_bare": bare / base - 1.0,
        "callback_share": rows["monitored"]["callback_share"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps per window (default: log_frequency)")
    ap.add_argument("--repeats", type=int, default=6, help="timed windows per variant (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=0, help="batch size (default: the config's)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput.json"))
    ap.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    run_root = Path(tempfile.mkdtemp(prefix="abr_throughput_"))
    overrides = [f"device={args.device}", f"training.precision={args.precision}", "logging.use_tensorboard=true",
                 "logging.use_wandb=true", "logging.wandb.mode=offline", "logging.figures=true",
                 "logging.health.enabled=true", f"logging.log_dir={run_root}", "loss.balancer.strategy=fixed",
                 *([f"training.batch_size={args.batch}"] if args.batch else []), *args.overrides]
    cfg = load_config(args.config, overrides)
    freq = cfg.training.log_frequency
    steps = args.steps or freq
    if steps % freq:
        raise ValueError(f"--steps: expected a multiple of training.log_frequency ({freq}), found {steps}")
    # progress lines on stderr as each stage starts and ends, a bar on a terminal over the timed windows;
    # stdout keeps the table
    try:
        with phase(PROG, f"building the {len(VARIANTS)} variants ({', '.join(VARIANTS)})"):
            variants = build_variants(cfg, run_root)
        with phase(PROG, f"warm-up: {freq} steps of each variant"):
            for v in variants:  # allocator, autotuning, first TensorBoard/W&B writes; ends at a log step
                v.run(freq, record=False)
        with (phase(PROG, f"{args.repeats} timed windows of {steps} steps of each variant"),
              progress_bar(args.repeats, "windows", unit="window") as bar):
            for _ in range(args.repeats):
                if variants[0].trainer.device.type == "cuda":  # no per-step sync: keep the GPU queue full
                    for v in variants:
                        v.run(steps)
                else:
                    run_interleaved(variants, steps)
                bar.update(1)  # between windows, outside the timed steps
        with phase(PROG, f"counting host reads over one more window of {steps} steps"):
            reads = {v.name: count_host_reads(v, steps) for v in variants}  # untimed
        for v in variants:
            v.trainer._call("on_train_end")
        result = summarize(variants, cfg.training.batch_size, steps)
        for name, r in reads.items():
            row = result["variants"][name]
            row["host_reads_per_window"], row["host_reads_max_step"] = sum(r), max(r)
            row["host_reads_median_step"] = statistics.median(r)
    finally:
        shutil.rmtree(run_root, ignore_errors=True)

    device = variants[0].trainer.device
    result["machine"] = {
        "platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "note": "shared, loaded CPU: provisional numbers" if device.type == "cpu" else "",
    }
    result["setup"] = {"config": Path(args.config).name, "batch": cfg.training.batch_size, "steps": steps,
                       "repeats": args.repeats, "precision": args.precision, "log_frequency": freq,
                       "params": sum(p.numel() for p in variants[0].trainer.model.parameters()),
                       "overrides": args.overrides}

    print(f"{'variant':<11}{'samples/s':>11}{'step ms':>10}{'in callbacks':>14}"
          f"{'host reads: median step / max step / window':>46}")
    for name, row in result["variants"].items():
        reads = f"{row['host_reads_median_step']:g} / {row['host_reads_max_step']} / {row['host_reads_per_window']}"
        print(f"{name:<11}{row['samples_per_s']:>11.1f}{row['step_ms']:>10.1f}{100 * row['callback_share']:>13.2f}%"
              f"{reads:>46}")
    print(f"monitoring overhead (monitored vs trainer): {100 * result['monitoring_overhead']:+.2f} %   "
          f"vs bare loop: {100 * result['overhead_vs_bare']:+.2f} %   "
          f"time inside callbacks: {100 * result['callback_share']:.2f} %")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
