"""Train the ABR hierarchical diffusion model.

Examples:
    python train.py --config configs/quickstart.yaml --experiment first
    python train.py --config configs/config.yaml --experiment big training.epochs=50 training.lr=1e-4
    python train.py --resume logs/first                          # continue an interrupted run
    python train.py --resume logs/first training.epochs=20       # ... for longer (saved in its config.yaml)
    python train.py --config configs/quickstart.yaml --experiment sweep --evaluate \\
        -m loss.balancer.strategy=fixed,uncertainty,dwa           # one run per value, then a comparison
    python train.py --resume logs/sweep                          # finish a sweep that was cut short
    torchrun --nproc_per_node=2 train.py --config configs/quickstart.yaml --experiment ddp

Overrides are `key.path=value` after the options; values are YAML scalars or lists and are checked
against the config schema (`--help-config` lists every key). One process works in a run directory at
a time (a lock; see training/rundir.py), and each run records where it came from in run.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import unicodedata
from pathlib import Path
from typing import Any

from training.rundir import SWEEP_CONFIG, SWEEP_FILE  # one home: compare reads sweeps too

EXIT_USAGE = 2


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="YAML config file (configs/quickstart.yaml, configs/config.yaml, presets)")
    p.add_argument("--experiment", help="run name: the run is written to <logging.log_dir>/<NAME> "
                   "(default: the config file's name)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoints/last.pt "
                   "with its own config.yaml (overrides apply and are saved there, e.g. training.epochs=20; the "
                   "seed and the data cannot change), or the unfinished runs of the sweep in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N (same as device=...)")
    p.add_argument("--seed", type=int, help="one seed for data order, init, noise and dropout (same as seed=...)")
    p.add_argument("-m", "--multirun", action="append", default=[], metavar="KEY=A,B,C",
                   help="sweep: one run per combination of the listed values (cartesian product over "
                   "several -m); runs go to <log_dir>/<NAME>/<key=value...> and share a W&B group")
    p.add_argument("--evaluate", action="store_true", help="evaluate each run when it ends (python -m "
                   "evaluation.evaluate --no-generate: test split, best.pt), so a sweep's comparison has its "
                   "evaluation columns")
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


def sweep_combinations(specs: list[str], overrides: list[str] = ()) -> list[list[str]]:
    """['a=1,2', 'b=x,y'] -> [['a=1','b=x'], ['a=1','b=y'], ['a=2','b=x'], ['a=2','b=y']].

    A key swept twice, or swept and also set by an override, is refused: one of the two would be
    dropped while the run names said otherwise."""
    from data.schema import ConfigError

    set_by = {o.split("=", 1)[0].strip(): o for o in overrides if "=" in o}
    swept: dict[str, str] = {}
    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"-m '{spec}': expected key.path=value1,value2,...")
        key, raw = spec.split("=", 1)
        key = key.strip()
        values = split_values(raw)
        if not key or any(v == "" for v in values):
            raise ConfigError(f"-m '{spec}': expected key.path=value1,value2,... with no empty value")
        if key in swept:
            raise ConfigError(f"-m: '{key}' is swept twice ('{swept[key]}' and '{spec}'): "
                              f"list all its values in one -m")
        if key in set_by:
            raise ConfigError(f"-m: '{key}' is both swept ('{spec}') and set by the override '{set_by[key]}': "
                              f"keep one")
        swept[key] = spec
        axes.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*axes)]


def sweep_dir_name(combo: list[str]) -> str:
    return ",".join(combo).replace("/", "_")


def check_distinct(combos: list[list[str]], configs: list) -> None:
    """Two combinations that resolve to one config (``lr=1e-3,0.001``), or to one directory name,
    are refused before anything runs."""
    from data.schema import ConfigError, to_dict

    seen_cfg: dict[str, int] = {}
    seen_dir: dict[str, int] = {}
    for i, (combo, cfg) in enumerate(zip(combos, configs, strict=True)):
        key = json.dumps(to_dict(cfg), sort_keys=True, default=str)
        for seen, k, what in ((seen_cfg, key, "would train the same config"),
                              (seen_dir, sweep_dir_name(combo), "would share one directory")):
            if k in seen:
                j = seen[k]
                raise ConfigError(f"-m: runs {j + 1} ({' '.join(combos[j])}) and {i + 1} ({' '.join(combo)}) "
                                  f"{what}: remove one")
            seen[k] = i


def experiment_dir(log_dir: str | Path, name: str) -> Path:
    """``log_dir/name``, refused when ``name`` is empty, would lead outside ``log_dir`` ('../x',
    '/tmp/x'), or inside another run or sweep directory ('r/checkpoints')."""
    from data.schema import ConfigError
    from training.rundir import enclosing_run

    root = Path(log_dir)
    hidden = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if hidden:  # a newline splits every log line that names the run; a right-to-left mark shows another name
        held = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, unicodedata.category(c))}" for c in hidden[:3])
        raise ConfigError(f"--experiment: expected a name of visible characters, found {name!r} (it holds {held})")
    run_dir = root / name
    inside = run_dir.resolve().is_relative_to(root.resolve()) and run_dir.resolve() != root.resolve()
    if not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts or not inside:
        raise ConfigError(
            f"--experiment: expected a name inside logging.log_dir ('{root}'), found {name!r}"
        )
    outer = enclosing_run(run_dir, root)
    if outer is not None:
        raise ConfigError(f"--experiment: '{name}' is inside the run directory '{outer}': choose a name outside it")
    return run_dir


def prepare_run_dir(run_dir: Path, overwrite: bool):
    """Create (or replace) ``run_dir`` and lock it for this process: see training/rundir.py."""
    from training.rundir import prepare_run_dir as prepare

    return prepare(Path(run_dir), overwrite)


def resumed_config(run_dir: Path, overrides: list[str]):
    """The run's own config with ``overrides``, and what they change ({key: [old, new]}). A change of
    the seed or of the data (other than where the file lies or how many workers read it) is refused:
    the checkpoint's data order and normalization would no longer hold."""
    from data.schema import ConfigError, flatten_tree, to_dict
    from training.config import load_config

    saved = flatten_tree(to_dict(load_config(run_dir / "config.yaml")))
    cfg = load_config(run_dir / "config.yaml", overrides)
    changes = {k: [saved.get(k), v] for k, v in flatten_tree(to_dict(cfg)).items() if saved.get(k) != v}
    for key, (old, new) in changes.items():
        if key == "seed" or (key.startswith("data.") and key not in RESUMABLE_DATA_KEYS):
            raise ConfigError(
                f"--resume '{run_dir}': '{key}' cannot change on resume (trained with {old!r}, found {new!r}): "
                f"the checkpoint's data and its order would no longer hold; start a new run"
            )
    return cfg, changes


RESUMABLE_DATA_KEYS = ("data.path", "data.num_workers")  # the data fingerprint guards data.path's content


def check_same_data(state: dict, data, run_dir: Path) -> None:
    """Refuse to resume a checkpoint on data other than the data it was trained on."""
    from data.schema import ConfigError
    from training.rundir import data_fingerprint

    theirs, ours = state.get("data_fingerprint"), data_fingerprint(data)
    if theirs is not None and ours is not None:
        differ, how = theirs != ours, "another data fingerprint"
    else:  # a checkpoint from before fingerprints: the normalization statistics must match
        differ, how = state["stats"] != data.stats.to_dict(), "other normalization statistics"
    if differ:
        raise ConfigError(f"--resume '{run_dir}': the data differs from the data checkpoints/last.pt was trained on "
                          f"({how}): resume with the same data, or start a new run")


def evaluate_run(run_dir: Path, device, logger: logging.Logger) -> None:
    """``python -m evaluation.evaluate --run RUN_DIR --no-generate`` (test split, best.pt): the
    numbers a comparison shows. Generation metrics: run evaluation.evaluate without --no-generate."""
    from evaluation.evaluate import main as evaluate_main

    logger.info("evaluating %s: python -m evaluation.evaluate --run %s --no-generate", run_dir, run_dir)
    rc = evaluate_main(["--run", str(run_dir), "--no-generate", "--device", str(device)])
    if rc:
        raise RuntimeError(f"--evaluate: evaluation of '{run_dir}' failed (exit status {rc})")


def nothing_left(state: dict, cfg) -> bool:
    """A checkpoint past the last epoch, its series stage (if any) done: resuming it would train nothing
    (``epoch`` is the next one)."""
    from training.checkpoint import epochs_done
    from training.series_stage import stage_done

    return epochs_done(state) >= cfg.training.epochs and not state.get("epoch_step") and stage_done(state, cfg)


def run_device(cfg, group: str | None):
    """(device, DistInfo) of this process: under torchrun each rank takes its own GPU. A sweep's runs
    share the W&B ``group`` unless the config names one."""
    from training.distributed import init_distributed
    from training.setup import resolve_device

    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    if device.type == "cuda" and dist_info.enabled:
        import torch

        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if group and not cfg.logging.wandb.group:
        cfg.logging.wandb.group = group
    return device, dist_info


def build_run(cfg, run_dir: Path, *, resume: bool, overwrite: bool, device, dist_info):
    """(trainer, the checkpoint's state or None, the run's lock). The data and the network are built
    before a fresh run directory is made; a resumed run is locked first (in use: refused at once)."""
    from training.checkpoint import load_checkpoint
    from training.rundir import RunLock, check_run_dir
    from training.setup import build_trainer

    main, last = dist_info.is_main, run_dir / "checkpoints" / "last.pt"
    lock = RunLock.acquire(run_dir) if resume and main else RunLock(run_dir, None)
    try:
        if not resume and main:
            check_run_dir(run_dir, overwrite)  # before the data is built; repeated under the lock below
        state = load_checkpoint(last, map_location=device) if resume else None
        trainer = build_trainer(cfg, run_dir, device=device, dist_info=dist_info)
        if resume:
            check_same_data(state, trainer.data, run_dir)
            trainer.load_state_dict(state, source=last)
        elif main:
            lock = prepare_run_dir(run_dir, overwrite)
    except BaseException:
        lock.release()
        raise
    return trainer, state, lock


def start_lines(trainer, state, logger, *, resume: bool, changes: dict | None, banner: str | None) -> None:
    """The run's first lines (and, resumed with changes, its config.yaml rewritten; fresh, its run files)."""
    from training.checkpoint import describe_position
    from training.setup import write_config, write_run_files

    run_dir = trainer.run_dir
    if banner:
        logger.info("%s", banner)
    if resume:
        if changes and trainer.is_main:
            write_config(run_dir, trainer.cfg)
            logger.info("resume: config changed: %s (saved in %s)",
                        ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items()), run_dir / "config.yaml")
        logger.info("resumed %s %s of %d", run_dir, describe_position(state), trainer.max_epochs)
    else:
        write_run_files(trainer)


def train_one(cfg, run_dir: Path, *, resume: bool = False, overwrite: bool = False, changes: dict | None = None,
              group: str | None = None, banner: str | None = None, evaluate: bool = False,
              command: list[str] | None = None) -> dict[str, float]:
    """Train one run in ``run_dir``, fresh or resumed from its last.pt.

    The data and the network are built before the run directory is touched, so an input error
    leaves nothing behind; a fresh run that stops before its first checkpoint removes what it wrote
    (there is nothing to resume), so the corrected command runs as is.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from training.checkpoint import describe_position
    from training.rundir import RunRecord, data_fingerprint, exit_status
    from training.setup import setup_logging

    device, dist_info = run_device(cfg, group)
    main = dist_info.is_main
    logger = setup_logging(None, main)  # console only, until the run directory is this run's
    last = run_dir / "checkpoints" / "last.pt"
    trainer, state, lock = build_run(cfg, run_dir, resume=resume, overwrite=overwrite, device=device,
                                     dist_info=dist_info)
    if resume and nothing_left(state, cfg):
        lock.release()
        logger.info("%s: nothing to train: finished %s of training.epochs=%d (to train longer: "
                    "python train.py --resume %s training.epochs=%d)", run_dir, describe_position(state),
                    trainer.max_epochs, run_dir, trainer.max_epochs + 1)
        if evaluate and main:
            evaluate_run(run_dir, device, logger)
        return {}

    record = RunRecord(run_dir, command=command or sys.argv, device=device, world_size=dist_info.world_size)
    try:
        logger = setup_logging(run_dir if main else None, main)
        start_lines(trainer, state, logger, resume=resume, changes=changes, banner=banner)
        if main:
            recordings = {s: len(getattr(trainer.data, s)) for s in ("train", "val", "test")}
            record.begin(resume=resume, from_step=trainer.step if resume else None, changes=changes,
                         data={"fingerprint": data_fingerprint(trainer.data), "recordings": recordings})
        logger.info("run directory: %s (device %s, %d process(es))", run_dir, device, dist_info.world_size)
        logger.info("%s", trainer.model.parameter_table())
        with logging_redirect_tqdm(loggers=[logger]):
            summary = trainer.fit()  # the network, then the series stage when series.enabled
            if main:
                after_training(run_dir, trainer, cfg, device, logger)
        record.end("finished")
    except BaseException as exc:
        record.end(exit_status(exc), exc)
        if lock.held and not resume and not last.is_file():
            logger.warning("removed '%s': the run stopped before its first checkpoint (nothing to resume); "
                           "the same command starts it again", run_dir)
            lock.discard()
        elif isinstance(exc, KeyboardInterrupt) and last.is_file():
            logger.warning("stopped at once: continue from the last checkpoint with --resume %s", run_dir)
        raise
    finally:
        lock.release()
        setup_logging(None, main)  # later lines (the next sweep run's) stay out of this run's train.log
    if evaluate and main:
        evaluate_run(run_dir, device, logger)
    return summary


def after_training(run_dir: Path, trainer: Any, cfg: Any, device: Any, logger: logging.Logger) -> None:
    """What a finished run fits from its own splits: the input check and calibration (what predict says about
    trust, evaluation/trust.py) and, for a label-conditioned network, the microphonic bank generate composes from
    (and, wave-conditioned, the wave profile it draws from)."""
    if cfg.data.normalization == "global":
        fit_run_trust(run_dir, trainer.data, cfg.data, device, logger)
    if cfg.model.label_conditioning:  # issue 28: the microphonic generate composes for a requested type
        from evaluation.microphonic_bank import fit_run_bank

        logger.info("microphonic bank for generation: %s", fit_run_bank(run_dir, trainer.data.train,
                                                                         trainer.data.stats))
    if cfg.model.wave_conditioning:  # issue 28: what generate asks the network for
        from evaluation.wave_profile import fit_run_profile
        from training.objective import noise_scale

        try:
            logger.info("wave profile for generation: %s", fit_run_profile(
                run_dir, trainer.data.train, cfg.model.microphonic_conditioning,
                noise_scale(cfg.model.noise_conditioning, trainer.data.stats)))
        except ValueError as exc:  # e.g. no marked wave V: the run is fine, generate will say what is missing
            logger.warning("wave profile not fitted (%s); generate draws no wave V per ear without it", exc)


def fit_run_trust(run_dir: Path, data: Any, data_cfg: Any, device: Any, logger: logging.Logger) -> None:
    """The input check and the calibration of a finished run (``data``: its DataBundle, ``data_cfg``: its
    DataConfig), from its best checkpoint and series model."""
    from evaluation.trust import fit_trust, holds_catch_sessions
    from training.checkpoint import load_run
    from training.series import load_series

    loaded = load_run(run_dir, "best", device)
    try:
        fit_trust(run_dir, loaded.model, loaded.diffusion.to(device), data, load_series(run_dir),
                  catch_sessions=holds_catch_sessions(data_cfg), device=device, log=logger)
    except ValueError as exc:  # e.g. an empty validation split: the run itself is fine, predict will say so
        logger.warning("input check and calibration not fitted (%s); predict answers without them", exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.command = [sys.argv[0] if sys.argv and sys.argv[0].endswith("train.py") else "train.py", *argv]
    try:
        return run(args)
    except Exception as exc:  # one line for the user; --debug shows the traceback
        from training.rundir import exit_code
        from training.trainer import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted):
            return exit_code(exc)
        if args.debug:
            raise
        from data.cli import error_line

        # out of memory and nested too deeply have no useful text of their own: error_line says what happened
        print(error_line(exc) if isinstance(exc, (MemoryError, RecursionError)) else f"error: {exc}", file=sys.stderr)
        return 1 if not isinstance(exc, ValueError) else EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        from training.distributed import shutdown

        shutdown()  # once per process: a -m sweep under torchrun keeps one process group for all its runs


def run(args: argparse.Namespace) -> int:
    from data.schema import ConfigError, describe
    from training.config import DEVICE_NAME, Config, load_config

    if args.help_config:
        print("\n".join(describe(Config)))
        return 0
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:  # '' used to mean auto
        if not DEVICE_NAME.fullmatch(args.device):
            raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, found {args.device!r}")
        overrides.append(f"device={args.device}")
    if args.resume:
        return resume(args, overrides)

    if not args.config:
        raise ConfigError("--config: required (or --resume RUN_DIR)")
    base = load_config(args.config, overrides)  # validate before creating anything
    name = Path(args.config).stem if args.experiment is None else args.experiment  # "" is refused, not defaulted
    root = experiment_dir(base.logging.log_dir, name)
    if not args.multirun:
        from training.rundir import restarted_here

        if restarted_here(root, args.command):
            return elastic_restart(root, base, overrides, args)
        train_one(base, root, overwrite=args.overwrite, evaluate=args.evaluate, command=args.command)
        return 0

    combos = sweep_combinations(args.multirun, overrides)
    configs = [load_config(args.config, [*overrides, *combo]) for combo in combos]  # all valid first
    check_distinct(combos, configs)
    from training.distributed import is_main_process

    lock = prepare_run_dir(root, args.overwrite)
    if is_main_process():
        write_sweep(root, base, combos, args)
    return run_sweep(root, lock, evaluate=args.evaluate, command=args.command)


def elastic_restart(root: Path, base, overrides: list[str], args: argparse.Namespace) -> int:
    """torchrun restarted the job (``--max-restarts``, a worker died): continue the run its earlier
    attempt started from checkpoints/last.pt, as ``--resume`` would (W&B and TensorBoard continue the
    same run), or start it over when that attempt died before its first checkpoint.

    Every rank decides from the same files before the process group exists; rank 0 writes run.json
    only after DDP's first broadcast, which every rank reaches after deciding, so all decide alike."""
    if (root / "checkpoints" / "last.pt").is_file():
        logging.getLogger("abr").warning("torchrun restart: resuming %s from its last checkpoint", root)
        cfg, changes = resumed_config(root, overrides)
        train_one(cfg, root, resume=True, changes=changes, evaluate=args.evaluate, command=args.command)
    else:
        train_one(base, root, overwrite=True, evaluate=args.evaluate, command=args.command)
    return 0



def write_sweep(root: Path, base, combos: list[list[str]], args: argparse.Namespace) -> None:
    """What ``--resume SWEEP`` needs: the resolved base config (sweep.yaml) and each run's name and
    overrides (sweep.json)."""
    from training.setup import write_config

    write_config(root, base, SWEEP_CONFIG)
    runs = [{"dir": sweep_dir_name(c), "overrides": c} for c in combos]
    (root / SWEEP_FILE).write_text(json.dumps({"runs": runs, "evaluate": args.evaluate, "command": args.command},
                                              indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def run_sweep(root: Path, lock, *, evaluate: bool, command: list[str]) -> int:
    """Train (or resume) each run of the sweep in ``root`` in turn, skipping finished ones; then
    write the comparison. Each run's lines go to its own train.log."""
    from evaluation.compare import compare_runs
    from training.config import load_config
    from training.distributed import is_main_process
    from training.rundir import run_status
    from training.setup import setup_logging

    runs = json.loads((root / SWEEP_FILE).read_text(encoding="utf-8"))["runs"]
    logger = logging.getLogger("abr")
    run_dirs = [root / r["dir"] for r in runs]
    try:
        for i, (r, run_dir) in enumerate(zip(runs, run_dirs, strict=True), start=1):
            banner = f"sweep run {i}/{len(runs)}: {' '.join(r['overrides'])}"
            if run_status(run_dir) == "finished":
                setup_logging(None, is_main_process())
                logger.info("%s: finished, skipped", banner)
                if evaluate and is_main_process() and not (run_dir / "eval" / "metrics.json").is_file():
                    evaluate_run(run_dir, load_config(run_dir / "config.yaml").device, logger)
                continue
            if (run_dir / "checkpoints" / "last.pt").is_file():
                cfg, _ = resumed_config(run_dir, [])
                train_one(cfg, run_dir, resume=True, group=root.name, banner=banner, evaluate=evaluate,
                          command=command)
            else:  # not started, or stopped before its first checkpoint (a kill -9 leaves its files)
                cfg = load_config(root / SWEEP_CONFIG, r["overrides"])
                train_one(cfg, run_dir, overwrite=True, group=root.name, banner=banner, evaluate=evaluate,
                          command=command)
    except BaseException:
        if lock.created and not any((d / "checkpoints" / "last.pt").is_file() for d in run_dirs):
            print(f"removed '{root}': the sweep stopped before any run's first checkpoint", file=sys.stderr)
            lock.discard()
        raise
    finally:
        lock.release()
    if not is_main_process():
        return 0
    compare_runs(run_dirs, root / "comparison")
    print(f"sweep: {len(run_dirs)} runs in {root}; comparison in {root / 'comparison'}")
    return 0


def resume(args: argparse.Namespace, overrides: list[str]) -> int:
    """``--resume RUN_DIR`` (a run) or ``--resume SWEEP_DIR`` (the unfinished runs of a sweep)."""
    from data.schema import ConfigError
    from training.rundir import RunLock, looks_like_run

    run_dir = Path(args.resume)
    for flag, given in (("--config", args.config), ("--experiment", args.experiment is not None),
                        ("--overwrite", args.overwrite), ("-m", args.multirun)):
        if given:
            raise ConfigError(f"--resume: {flag} cannot be combined with it (the run continues in '{run_dir}' "
                              f"with its own config.yaml; give changes as key=value overrides)")
    if (run_dir / SWEEP_FILE).is_file():
        if overrides:
            raise ConfigError(f"--resume '{run_dir}': a sweep continues with its own configs; found overrides "
                              f"{overrides} (resume one of its runs to change it)")
        sweep = json.loads((run_dir / SWEEP_FILE).read_text(encoding="utf-8"))
        from training.distributed import is_main_process

        lock = RunLock.acquire(run_dir) if is_main_process() else RunLock(run_dir, None)  # rank 0 holds it
        return run_sweep(run_dir, lock, evaluate=args.evaluate or bool(sweep.get("evaluate")), command=args.command)
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        hint = " (the run stopped before its first checkpoint: start it again with --overwrite)" \
            if looks_like_run(run_dir) else ""
        raise ConfigError(f"--resume '{run_dir}': no checkpoints/last.pt in it{hint}")
    cfg, changes = resumed_config(run_dir, overrides)
    train_one(cfg, run_dir, resume=True, changes=changes, evaluate=args.evaluate, command=args.command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
