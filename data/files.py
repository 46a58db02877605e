"""Writing a file so that a reader never sees half of it: the one atomic write of the project.

    write_atomic(path, lambda f: f.write(data))   # temporary beside path, then renamed over it

metrics.jsonl's truncation on resume, run.json, a native data file and the generated signals all
go through :func:`write_atomic`; checkpoints add a lock and an fsync on top (training/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

T = TypeVar("T")


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it; elsewhere set and put back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file (0o644 under umask 022). Temporary files (``mkstemp``)
    and safetensors get 0o600, which would hide a run's files from the rest of a lab group."""
    return 0o666 & ~umask()


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """``write(file)`` into a temporary file beside ``path`` (binary), then rename it over ``path``
    (``os.replace`` is atomic on POSIX): a failed or killed write leaves the previous file (or none),
    never half of one. The file gets the mode ``open()`` would have given it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            os.fchmod(f.fileno(), new_file_mode())  # mkstemp made it 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_fit(path: str | Path, fields: dict[str, Any], indent: int | None = None) -> Path:
    """A fitted dataclass's fields (``asdict``) as JSON at ``path``, atomically (:func:`write_atomic`)."""
    return write_atomic(path, lambda f: f.write(json.dumps(fields, indent=indent).encode("utf-8")))


def load_fit(cls: type[T], path: str | Path, what: str, refit: str) -> T | None:
    """``cls(**json)`` from ``path``, None when there is no file; a file of another shape is one ValueError
    naming it as ``what`` ("a calibration") and the command ``refit`` that writes it again."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return cls(**json.loads(path.read_text(encoding="utf-8")))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"'{path}': not {what} of this code ({' '.join(str(exc).split())[:160]}); "
                         f"refit it with {refit}") from None
