"""Train the ABR hierarchical diffusion model.

Examples:
    python train.py --config configs/quickstart.yaml --experiment first
    python train.py --config configs/config.yaml --experiment big training.epochs=50 training.lr=1e-4
    python train.py --resume logs/first                          # continue an interrupted run
    python train.py --config configs/quickstart.yaml --experiment sweep \\
        -m loss.balancer.strategy=fixed,uncertainty,dwa           # one run per value, then a comparison
    torchrun --nproc_per_node=2 train.py --config configs/quickstart.yaml --experiment ddp

Overrides are `key.path=value` after the options; values are YAML scalars or lists and are checked
against the config schema (`--help-config` lists every key).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import sys
from pathlib import Path

EXIT_USAGE = 2


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="YAML config file (configs/quickstart.yaml, configs/config.yaml, presets)")
    p.add_argument("--experiment", help="run name: the run is written to <logging.log_dir>/<NAME> "
                   "(default: the config file's name)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoints/last.pt, "
                   "with its own saved config.yaml (overrides still apply, e.g. training.epochs=20)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N (same as device=...)")
    p.add_argument("--seed", type=int, help="one seed for data order, init, noise and dropout (same as seed=...)")
    p.add_argument("-m", "--multirun", action="append", default=[], metavar="KEY=A,B,C",
                   help="sweep: one run per combination of the listed values (cartesian product over "
                   "several -m); runs go to <log_dir>/<NAME>/<key=value...> and share a W&B group")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--help-config", action="store_true", help="list every config key with type and default")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    return p.parse_intermixed_args(argv)  # overrides may follow -m as well as precede it


def split_values(text: str) -> list[str]:
    """'a,[1,2],b' -> ['a', '[1,2]', 'b']: commas inside brackets belong to the value."""
    values, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            values.append(cur)
            cur = ""
        else:
            cur += ch
    values.append(cur)
    return [v.strip() for v in values]


def sweep_combinations(specs: list[str]) -> list[list[str]]:
    """['a=1,2', 'b=x,y'] -> [['a=1','b=x'], ['a=1','b=y'], ['a=2','b=x'], ['a=2','b=y']]."""
    from training.schema import ConfigError

    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"-m '{spec}': expected key.path=value1,value2,...")
        key, raw = spec.split("=", 1)
        values = split_values(raw)
        if not key or any(v == "" for v in values):
            raise ConfigError(f"-m '{spec}': expected key.path=value1,value2,... with no empty value")
        axes.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*axes)]


def experiment_dir(log_dir: str | Path, name: str) -> Path:
    """``log_dir/name``, refused when ``name`` would lead outside ``log_dir`` ('../x', '/tmp/x')."""
    from training.schema import ConfigError

    root = Path(log_dir)
    run_dir = root / name
    inside = run_dir.resolve().is_relative_to(root.resolve()) and run_dir.resolve() != root.resolve()
    if not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts or not inside:
        raise ConfigError(
            f"--experiment: expected a name inside logging.log_dir ('{root}'), found {name!r}"
        )
    return run_dir


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    from training.distributed import is_main_process
    from training.schema import ConfigError

    if not is_main_process():  # under torchrun rank 0 alone creates (or replaces) the run directory
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"run directory '{run_dir}' already exists: continue it with --resume {run_dir}, "
                f"or replace it with --overwrite"
            )
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"run directory '{run_dir}': not writable ({exc.strerror})") from None


def train_one(cfg, run_dir: Path, *, resume: bool, group: str | None = None) -> dict[str, float]:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from training.checkpoint import load_checkpoint
    from training.distributed import init_distributed
    from training.setup import build_trainer, resolve_device, setup_logging, write_run_files

    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    if device.type == "cuda" and dist_info.enabled:
        import torch

        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if group and not cfg.logging.wandb.group:
        cfg.logging.wandb.group = group
    logger = setup_logging(run_dir if dist_info.is_main else None, dist_info.is_main)
    trainer = build_trainer(cfg, run_dir, device=device, dist_info=dist_info)
    if resume:
        path = run_dir / "checkpoints" / "last.pt"
        trainer.load_state_dict(load_checkpoint(path, map_location=device), source=path)
        logger.info("resumed %s at epoch %d, step %d", run_dir, trainer.epoch, trainer.step)
    else:
        write_run_files(trainer)
    logger.info("run directory: %s (device %s, %d process(es))", run_dir, device, dist_info.world_size)
    logger.info("%s", trainer.model.parameter_table())
    with logging_redirect_tqdm(loggers=[logger]):
        return trainer.fit()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except Exception as exc:  # one line for the user; --debug shows the traceback
        from training.trainer import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted):
            return 128 + exc.signum
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1 if not isinstance(exc, ValueError) else EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        from training.distributed import shutdown

        shutdown()  # once per process: a -m sweep under torchrun keeps one process group for all its runs


def run(args: argparse.Namespace) -> int:
    from training.config import Config, load_config
    from training.schema import ConfigError, describe

    if args.help_config:
        print("\n".join(describe(Config)))
        return 0
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device:
        overrides.append(f"device={args.device}")

    if args.resume:
        if args.multirun:
            raise ConfigError("--resume: cannot be combined with -m")
        run_dir = Path(args.resume)
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise ConfigError(f"--resume '{run_dir}': no checkpoints/last.pt in it")
        cfg = load_config(run_dir / "config.yaml", overrides)
        train_one(cfg, run_dir, resume=True)
        return 0

    if not args.config:
        raise ConfigError("--config: required (or --resume RUN_DIR)")
    base = load_config(args.config, overrides)  # validate before creating anything
    root = experiment_dir(base.logging.log_dir, args.experiment or Path(args.config).stem)
    if not args.multirun:
        prepare_run_dir(root, args.overwrite)
        train_one(base, root, resume=False)
        return 0

    combos = sweep_combinations(args.multirun)
    configs = [(combo, load_config(args.config, [*overrides, *combo])) for combo in combos]  # all valid first
    prepare_run_dir(root, args.overwrite)
    run_dirs = []
    for combo, cfg in configs:
        run_dir = root / ",".join(combo).replace("/", "_")
        logging.getLogger("abr").info("sweep run %d/%d: %s", len(run_dirs) + 1, len(configs), " ".join(combo))
        prepare_run_dir(run_dir, overwrite=False)
        train_one(cfg, run_dir, resume=False, group=root.name)
        run_dirs.append(run_dir)
    from evaluation.compare import compare_runs
    from training.distributed import is_main_process

    if not is_main_process():
        return 0
    compare_runs(run_dirs, root / "comparison")
    print(f"sweep: {len(run_dirs)} runs in {root}; comparison in {root / 'comparison'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
