"""Checkpoints: atomic writes, safe loads, and loading a finished run for evaluation/generation.

A checkpoint is a plain dict of tensors and primitive containers, so it loads with
``torch.load(weights_only=True)``: nothing in it can execute code. It is written to a temporary
file in the same folder, fsynced, then renamed over the target (``os.replace`` is atomic on POSIX),
so a kill -9 or a full disk never leaves a half-written ``last.pt``: the previous file survives.
SIGINT/SIGTERM arriving during a write are handled once the file is in place (a second Ctrl-C never
cuts a checkpoint in half). The writer holds an ``flock`` on its temporary until the rename, so the
clean-up of temporaries left by a kill -9 never removes one that another writer is still writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data.files import new_file_mode, umask  # noqa: F401 (umask: re-exported for tests)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "config", "stats", "step", "epoch")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def epochs_done(state: dict[str, Any]) -> int:
    """Whole epochs a checkpoint has trained: its ``epoch`` is the epoch it trains next (1-based),
    so a finished 5-epoch run holds ``epoch`` 6."""
    return int(state["epoch"]) - 1


def describe_position(state: dict[str, Any]) -> str:
    """Where a checkpoint stands, for a reader: "after epoch 5, step 555", or, saved mid-epoch,
    "in epoch 3 (40 steps into it), step 262"."""
    into = int(state.get("epoch_step") or 0)
    if into:
        return f"in epoch {int(state['epoch'])} ({into} steps into it), step {int(state['step'])}"
    return f"after epoch {epochs_done(state)}, step {int(state['step'])}"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + fsync + rename).

    A failed write (disk full, quota, I/O error) raises ``OSError`` naming the file and leaves the
    previous checkpoint in place; temporaries left by a write that a kill -9 cut short are removed
    after the next successful one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred_signals():
        fd, tmp = _locked_temporary(path)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"format_version": FORMAT_VERSION, **state}, f)
                f.flush()
                os.fchmod(f.fileno(), new_file_mode())  # mkstemp made it 0o600
                os.fsync(f.fileno())
                os.replace(tmp, path)  # still locked: the clean-up below never sees it half-written
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            cause = _os_error(exc)  # torch.save reports a failed write as RuntimeError("unexpected pos ...")
            if cause is not None:
                raise OSError(cause.errno, f"checkpoint '{path}': write failed ({cause.strerror or cause}); "
                              f"the previous {path.name} is intact") from exc
            raise
        _remove_stale_temporaries(path.parent)


def _locked_temporary(path: Path) -> tuple[int, str]:
    """A new temporary next to ``path``, flock-ed by this writer."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits out a clean-up that grabbed it before us
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)  # that clean-up removed it: take another


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove temporaries whose writer is gone (its flock died with it); skip those being written."""
    for stale in folder.glob(".*.pt.*.tmp"):
        try:
            fd = os.open(stale, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(stale).st_ino == os.fstat(fd).st_ino:
                stale.unlink()
        except OSError:  # locked by a live writer, or renamed/removed meanwhile
            pass
        finally:
            os.close(fd)


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver them to the handlers in place (the
    trainer's "stop after this step", Ctrl-C's KeyboardInterrupt, SIGTERM's default exit). Only the
    main thread can install handlers; elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.getsignal(s) for s in signums}
    previous = {s: h for s, h in previous.items() if h is not None}  # None: a handler not set from Python
    for s in previous:
        signal.signal(s, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in pending:
            signal.raise_signal(s)


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc`` (itself, or in its cause/context chain), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    """Load and validate a checkpoint without executing anything (``weights_only=True``);
    ``required``: the keys it must hold (a training checkpoint's by default)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}': not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, disallowed global: all unusable
        if "Weights only load failed" in str(exc):  # torch's advice (weights_only=False) would run its code
            refused = re.search(r"GLOBAL (\S+)", str(exc))
            what = f"'{refused.group(1)}'" if refused else "it"
            raise CheckpointError(
                f"checkpoint '{path}': refusing to load {what} "
                f"(only tensors and plain containers are allowed; nothing in the file was run)"
            ) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint '{path}': unreadable ({reason[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint '{path}': expected a dict, found {type(state).__name__}")
    missing = [k for k in ("format_version", *required) if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint '{path}': missing keys {missing}")
    version = state["format_version"]
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"checkpoint '{path}': key 'format_version': expected an integer >= 1, "
                              f"found {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}': format version {version!r} is newer than this code reads ({FORMAT_VERSION})"
        )
    check_counters(state, path)
    for key in ("model", "ema"):
        if state.get(key) is not None:
            check_weights(state[key], path, key)
    return state


# The training counters a checkpoint carries and their least value: epoch is 1-based (the epoch being trained).
COUNTERS = {"step": 0, "epoch": 1, "epoch_step": 0, "skipped_steps": 0, "ema_updates": 0}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_counters(state: dict[str, Any], path: str | Path) -> None:
    """Each counter present is an integer at or above its least value, like a config value: a text
    epoch or a negative step would otherwise surface later as a traceback or an impossible total."""
    for key, least in COUNTERS.items():
        if key in state and not (_is_int(state[key]) and state[key] >= least):
            raise CheckpointError(f"checkpoint '{path}': key '{key}': expected an integer >= {least}, "
                                  f"found {state[key]!r}")


def check_weights(weights: Any, path: str | Path, key: str) -> None:
    """``weights`` is a mapping of parameter names to finite tensors: a model with a NaN or an infinite
    parameter answers every input with NaN (or a confident nonsense), so no command uses it."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint '{path}': key '{key}': expected the weights as a dict, "
                              f"found {type(weights).__name__}")
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"checkpoint '{path}': key '{key}': parameter '{name}': expected a tensor, "
                                  f"found {type(tensor).__name__}")
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(f"checkpoint '{path}': key '{key}': parameter '{name}' has {bad} non-finite "
                                      f"value(s) of {tensor.numel()}; expected finite weights (the run diverged, "
                                      f"or the file was altered): use another checkpoint")


def load_model_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Strict load with a one-line error: a checkpoint of another architecture is never half-loaded
    (keys and shapes are compared before a single tensor is copied)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mismatched = [k for k, v in weights.items() if k in own and getattr(v, "shape", None) != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            found = tuple(getattr(weights[k], "shape", ()))
            parts.append(f"shape mismatch in {len(mismatched)} (e.g. {k}: expected {tuple(own[k].shape)}, "
                         f"found {found})")
        raise CheckpointError(
            f"checkpoint '{path}': weights do not fit this model config ({'; '.join(parts)})"
        )
    model.load_state_dict(weights, strict=True)


def check_ema(state: dict[str, Any], cfg: Any, path: str | Path) -> None:
    """A run trained with EMA (``training.ema_decay`` > 0) has EMA weights in every checkpoint; without
    them, evaluation would silently use the raw weights and a resume would restart the average."""
    if cfg.training.ema_decay > 0 and state.get("ema") is None:
        raise CheckpointError(f"checkpoint '{path}': key 'ema': expected the EMA weights (the run has "
                              f"training.ema_decay = {cfg.training.ema_decay}), found {state.get('ema')!r}")


@dataclass
class LoadedRun:
    cfg: Any  # training.config.Config
    model: torch.nn.Module  # eval mode, EMA weights when the run has them
    stats: Any  # data.stats.DataStats
    diffusion: Any  # training.diffusion.GaussianDiffusion
    run_dir: Path
    checkpoint: dict[str, Any]


def check_run_dir_given(run_dir: Path) -> None:
    """A folder that is no run (``--run logs``) is named as such, with the runs inside it, rather than
    reported as a missing checkpoint."""
    from training.rundir import looks_like_run

    if looks_like_run(run_dir):
        return
    try:
        runs = sorted(str(p) for p in run_dir.iterdir() if looks_like_run(p))
    except OSError:
        runs = []
    inside = f"; runs in it: {', '.join(runs[:5])}{' ...' if len(runs) > 5 else ''}" if runs else ""
    raise CheckpointError(f"run directory '{run_dir}': not a run directory (expected checkpoints/ and config.yaml "
                          f"from train.py in it){inside}")


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run from its own checkpoint (EMA weights preferred) for inference."""
    from data.schema import from_dict
    from data.stats import DataStats
    from models import build_model
    from training.config import Config
    from training.diffusion import GaussianDiffusion

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory '{run_dir}': not found")
    check_run_dir_given(run_dir)
    if which not in ("best", "last"):
        raise CheckpointError(f"--checkpoint: expected 'best' or 'last', found {which!r}")
    path = run_dir / "checkpoints" / f"{which}.pt"
    if which == "best" and not path.is_file() and (run_dir / "checkpoints" / "last.pt").is_file():
        path = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(path, map_location=device)
    try:
        cfg = from_dict(Config, state["config"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint '{path}': unusable config ({exc})") from None
    try:
        stats = DataStats.from_dict(state["stats"])
    except (TypeError, ValueError) as exc:  # not a dict, missing or unknown fields
        raise CheckpointError(f"checkpoint '{path}': unusable stats ({exc})") from None
    check_ema(state, cfg, path)
    model = build_model(cfg.model, stats).to(device)
    weights = state.get("ema") or state["model"]
    load_model_state(model, weights, path)
    model.eval()
    diffusion = GaussianDiffusion(cfg.diffusion).to(device)
    return LoadedRun(cfg=cfg, model=model, stats=stats, diffusion=diffusion, run_dir=run_dir, checkpoint=state)
