"""The run directory: one process at a time, created only for a run that starts, and ``run.json``.

Lock: ``RUN_DIR/.lock``, held with ``fcntl.flock`` for as long as a process works in the directory.
The OS drops the lock when its holder ends, however it ends (kill -9 included), so a lock file left
behind never blocks anything: the file only names the holder (pid, host, start, command) for the
refusal message. A second ``train.py`` on the same directory (a new run of the same name,
``--resume``, ``--overwrite``) is refused with one line naming that holder.

``run.json`` (provenance): git commit and dirty flag, command line, package versions, device, start
and end time and how the session ended; every ``--resume`` appends an entry to ``resumes``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from data.files import write_atomic
from data.schema import ConfigError

SWEEP_FILE, SWEEP_CONFIG = "sweep.json", "sweep.yaml"  # a -m sweep's root: its runs, and the config they share

LOCK_NAME = ".lock"
RUN_FILE = "run.json"
# What a run (or sweep) directory holds: --overwrite deletes only such a folder, and no experiment
# name may lead inside one.
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "train.log", "checkpoints", RUN_FILE, "sweep.json", LOCK_NAME)
REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "numpy", "scipy", "pyyaml", "tqdm", "tensorboard", "wandb", "torchjd", "matplotlib")


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def looks_like_run(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def enclosing_run(run_dir: Path, log_dir: Path) -> Path | None:
    """The run or sweep directory that ``run_dir`` would sit inside (``log_dir`` included), if any."""
    parts = run_dir.relative_to(log_dir).parts
    for i in range(len(parts) - 1, -1, -1):
        if looks_like_run(log_dir.joinpath(*parts[:i])):
            return log_dir.joinpath(*parts[:i])
    return None


# -- the lock -------------------------------------------------------------------------------------

class RunLock:
    """This process's exclusive hold on a run directory (``prepare_run_dir`` or ``acquire``).

    ``created``/``emptied`` say whether this process made the directory or emptied it, so that
    :meth:`discard` removes what this process wrote and nothing else.
    """

    def __init__(self, run_dir: Path, fd: int | None, created: bool = False) -> None:
        self.run_dir, self.fd, self.created, self.emptied = Path(run_dir), fd, created, False

    @classmethod
    def acquire(cls, run_dir: Path, created: bool = False) -> RunLock:
        """Lock ``run_dir`` (which exists) or raise ``ConfigError`` naming the holder."""
        path = run_dir / LOCK_NAME
        for _ in range(5):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise in_use_error(run_dir) from None
            try:  # the holder may have removed the directory (and its lock file) just before we locked
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                run_dir.mkdir(parents=True, exist_ok=True)
            os.close(fd)
        else:
            raise ConfigError(f"run directory '{run_dir}': could not lock it (it keeps being replaced)")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": now(), "command": command_line()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return cls(run_dir, fd, created)

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def discard(self) -> None:
        """Remove what this process wrote (the directory if it created it, else what it put in the
        directory it emptied), then release the lock."""
        if self.fd is not None and self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        elif self.fd is not None and self.emptied:
            for p in self.run_dir.iterdir():
                if p.name != LOCK_NAME:
                    _remove(p)
        self.release()

    def __del__(self) -> None:
        self.release()


def in_use_error(run_dir: Path) -> ConfigError:
    return ConfigError(f"run directory '{run_dir}' is in use by {_holder(run_dir)}: wait for it to end, "
                       f"or stop it first")


def check_not_in_use(run_dir: Path) -> None:
    """Raise :func:`in_use_error` if a live process holds ``run_dir`` (a probe: nothing is kept)."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no lock file: nobody ever locked it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise in_use_error(run_dir) from None
    finally:
        os.close(fd)


def _holder(run_dir: Path) -> str:
    try:
        h = json.loads((run_dir / LOCK_NAME).read_text(encoding="utf-8"))
        return f"pid {h['pid']} on {h['host']} since {h['since']} ({' '.join(h['command'])})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process (it has not written its name yet)"


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def exists_message(run_dir: Path) -> str:
    if (run_dir / "sweep.json").is_file():
        return (f"sweep directory '{run_dir}' already exists: continue it with --resume {run_dir}, "
                f"or replace it with --overwrite")
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return (f"run directory '{run_dir}' already exists: continue it with --resume {run_dir}, "
                f"or replace it with --overwrite")
    return (f"run directory '{run_dir}' already exists (no checkpoint to --resume from): "
            f"replace it with --overwrite")


def check_run_dir(run_dir: Path, overwrite: bool, locked: bool = False) -> None:
    """The checks of :func:`prepare_run_dir`, also run without the lock (so a run is refused before
    it builds its data); ``prepare_run_dir`` repeats them under the lock (``locked``)."""
    if not locked:
        check_not_in_use(run_dir)
    contents = [p for p in run_dir.iterdir() if p.name != LOCK_NAME] if run_dir.is_dir() else []
    if contents and not overwrite:
        raise ConfigError(exists_message(run_dir))
    if contents and not looks_like_run(run_dir):
        raise ConfigError(f"--overwrite: '{run_dir}' holds no run (none of {', '.join(RUN_MARKERS[:-1])}): "
                          f"refusing to delete it")


def prepare_run_dir(run_dir: Path, overwrite: bool) -> RunLock:
    """Create (or, with ``overwrite``, empty) ``run_dir`` and lock it for this process.

    Refused, with one line: a directory another process holds; an existing run without
    ``overwrite``; with ``overwrite``, a folder that holds no run. Under torchrun only rank 0 touches
    the directory (other ranks get a lock that holds nothing).
    """
    from training.distributed import is_main_process

    run_dir = Path(run_dir)
    if not is_main_process():
        return RunLock(run_dir, None)
    try:
        try:
            run_dir.mkdir(parents=True)
            created = True
        except FileExistsError:
            created = False
        lock = RunLock.acquire(run_dir, created)
    except OSError as exc:
        if "created" in locals() and created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise ConfigError(f"run directory '{run_dir}': not writable ({exc.strerror})") from None
    try:
        check_run_dir(run_dir, overwrite, locked=True)
        for p in run_dir.iterdir():
            if p.name != LOCK_NAME:
                _remove(p)
                lock.emptied = True
        probe = run_dir / ".write_test"
        try:
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"run directory '{run_dir}': not writable ({exc.strerror})") from None
    except BaseException:
        if created:
            lock.discard()
        lock.release()
        raise
    return lock


# -- provenance -----------------------------------------------------------------------------------

def command_line() -> list[str]:
    return list(sys.argv)


def git_info(where: Path = REPO) -> dict[str, Any]:
    """{"commit", "dirty"} of the checkout holding ``where``; both None outside a git checkout or
    without git (never an error: provenance must not stop a run)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def device_info(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": str(device)}
    if getattr(device, "type", None) == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def data_fingerprint(data: Any) -> str | None:
    """sha256 over every split's tensors (recordings, labels, patients): the same config on other
    data gives another fingerprint. Cached on ``data``; None for datasets without ``tensors``."""
    cached = getattr(data, "_fingerprint", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        tensors = getattr(getattr(data, split, None), "tensors", None)
        if tensors is None:
            return None
        for key in sorted(tensors):
            h.update(f"{split}/{key}:{tuple(tensors[key].shape)}".encode())
            h.update(tensors[key].contiguous().numpy().tobytes())
    with contextlib.suppress(AttributeError):
        data._fingerprint = h.hexdigest()
    return h.hexdigest()


def read_run_json(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def run_status(run_dir: Path) -> str | None:
    """How the last session of the run ended ("finished", "interrupted", "failed"), "running" while
    one works in it or after one was killed; None without a readable run.json."""
    info = read_run_json(run_dir)
    if info is None:
        return None
    sessions = [info, *(info.get("resumes") or [])]
    return sessions[-1].get("status")


def exit_status(exc: BaseException) -> str:
    from training.step import TrainingInterrupted

    return "interrupted" if isinstance(exc, (TrainingInterrupted, KeyboardInterrupt)) else "failed"


def exit_code(exc: BaseException) -> int:
    """The process's exit status for ``exc``, which W&B records too: 128 + the signal for a stop by
    SIGINT/SIGTERM (130 for Ctrl-C, as a shell reports it), 1 for anything else."""
    from data.cli import EXIT_INTERRUPTED
    from training.step import TrainingInterrupted

    if isinstance(exc, TrainingInterrupted):
        return 128 + exc.signum
    return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1


def elastic_attempt() -> dict[str, Any] | None:
    """{"run_id", "restart"} of this torchrun job and attempt (torchrun sets TORCHELASTIC_RUN_ID and
    TORCHELASTIC_RESTART_COUNT); None outside torchrun."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    return {"run_id": os.environ["TORCHELASTIC_RUN_ID"], "restart": restart}


def restarted_here(run_dir: Path, command: list[str]) -> bool:
    """Whether this process is torchrun's restart (``--max-restarts``) of a job whose earlier attempt
    started the run in ``run_dir``: its last session ran the same command under the same torchrun run
    id at an earlier restart count. Only then may the restart continue (or start over) that run by
    itself; anything else in ``run_dir`` stays protected by the usual checks."""
    now_ = elastic_attempt()
    info = read_run_json(run_dir)
    if now_ is None or now_["restart"] == 0 or info is None:
        return False
    last = [info, *(info.get("resumes") or [])][-1]
    was = last.get("elastic") or {}
    return (last.get("command") == command and was.get("run_id") == now_["run_id"]
            and int(was.get("restart", now_["restart"])) < now_["restart"])


class RunRecord:
    """``run.json`` of one session (a start or a resume): :meth:`begin` when training starts,
    :meth:`end` when it ends, however it ends (kill -9 aside: that session stays "running", and the
    next resume marks it "died")."""

    def __init__(self, run_dir: Path, *, command: list[str], device: Any, world_size: int = 1) -> None:
        self.path = Path(run_dir) / RUN_FILE
        self.command, self.device, self.world_size = command, device, world_size
        self.info: dict[str, Any] = {}
        self.entry: dict[str, Any] = {}

    def begin(self, *, resume: bool = False, from_step: int | None = None, changes: dict | None = None,
              data: dict | None = None) -> None:
        entry = {"start": now(), "end": None, "status": "running", "command": self.command, "cwd": os.getcwd(),
                 "host": socket.gethostname(), "pid": os.getpid(), "git": git_info(),
                 "versions": package_versions(), **device_info(self.device), "world_size": self.world_size}
        if elastic_attempt() is not None:  # what an elastic restart checks before it resumes this run
            entry["elastic"] = elastic_attempt()
        if resume:
            self.info = read_run_json(self.path.parent) or {"resumes": []}  # a run from before run.json
            for session in [self.info, *self.info.get("resumes", [])]:
                if session.get("status") == "running":  # we hold the lock: that process is gone
                    session["status"] = "died"
            entry.update(from_step=from_step, changes=changes or {})
            self.info.setdefault("resumes", []).append(entry)
        else:
            self.info = {**entry, "data": data, "resumes": []}
            entry = self.info
        self.entry = entry
        self._write()

    def end(self, status: str, error: BaseException | None = None) -> None:
        if not self.entry:
            return
        self.entry.update(end=now(), status=status)
        if error is not None and status == "failed":
            self.entry["error"] = (str(error).strip().splitlines() or [type(error).__name__])[0][:500]
        self._write()

    def _write(self) -> None:
        text = json.dumps(self.info, indent=2, ensure_ascii=False) + "\n"
        write_atomic(self.path, lambda f: f.write(text.encode("utf-8")))
