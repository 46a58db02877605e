"""What every command line of the project shares: one error line instead of a traceback, numeric flags
checked against a named limit, a device flag that says why it cannot be used, and outputs that are
never replaced without ``--overwrite``.

    p = ArgumentParser(prog="python -m evaluation.generate", description=...)   # adds --debug
    p.add_argument("--n", type=number(int, ge=1, le=MAX_SIGNALS, limit="MAX_SIGNALS"), default=64)
    args = p.parse_args(argv)
    return run_main(lambda: run(args), debug=args.debug)

Errors the user can fix (``ValueError`` and its subclasses: ``ConfigError``, ``CheckpointError``,
``DataFormatError``) exit 2 with ``error: <message>``; other failures (``OSError``: a disk, a
permission) exit 1, and an exception nobody expected exits 1 with its type (out of memory, nested too
deeply, or the exception's name), the file the command was working on when it says so
(``run_main(..., source=args.input)``) and a pointer to ``--debug``, which lets every exception
through with its traceback. A bad flag is refused by the
parser on one line, ``PROG: error: argument --n: expected ... (see --help)``, exit 2.

It lives in ``data/``, the lowest floor (data <- models <- training <- evaluation), so that
``data.synthetic`` and ``data.convert`` import it as ``train.py`` and ``evaluation.*`` do, without
an upward import. It needs the standard library only (torch for :func:`resolve_device`, lazily).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_FAILURE = 1  # the command could not do its work (disk, permission, an unexpected error)
EXIT_USAGE = 2  # a bad flag, file or value: the message says which and what was expected
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
MAX_MESSAGE_CHARS = 2000  # an error line is cut here: a message quoting a whole file stays one readable line


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``PROG: error: ... (see --help)``, exit 2) and
    which has a ``--debug`` flag (full tracebacks, for :func:`run_main`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show full tracebacks instead of one error line")

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def one_line(text: str) -> str:
    """``text`` on one line (whitespace runs, newlines included, become one space), at most
    MAX_MESSAGE_CHARS characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def error_line(exc: BaseException, source: str | Path | None = None) -> str:
    """The line a CLI prints for ``exc``: the message of an expected error; for any other, what
    happened and a pointer to ``--debug``, after ``source`` (the file the command was working on)
    when given. MemoryError and RecursionError are named in words: their own text is empty or useless."""
    message = one_line(str(exc))
    if isinstance(exc, (ValueError, OSError)) and message:
        return f"error: {message}"
    where = f"{source}: " if source is not None else ""
    debug = "rerun with --debug for the traceback"
    if isinstance(exc, MemoryError):
        detail = f": {message}" if message else ""  # numpy's says how much it could not allocate
        return f"error: {where}out of memory{detail} ({debug})"
    if isinstance(exc, RecursionError):
        return f"error: {where}nested too deeply ({debug})"
    detail = f": {message}" if message else ""
    return f"error: {where}{type(exc).__name__}{detail} (unexpected; {debug})"


def exit_code(exc: BaseException) -> int:
    return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILURE


def run_main(body: Callable[[], int | None], *, debug: bool, source: str | Path | None = None) -> int:
    """Run a CLI's body: its return code, or one ``error: ...`` line on stderr (:func:`error_line`,
    naming ``source`` for an unexpected error) and :func:`exit_code` for any exception (with ``debug``
    the exception goes through, traceback and all)."""
    try:
        return body() or 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        print(error_line(exc, source), file=sys.stderr)
        return exit_code(exc)


# --------------------------------------------------------------------------------------------
# numbers


def check_number(
    where: str,
    value: Any,
    kind: type = float,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    limit: str = "",
    lt: float | None = None,
) -> Any:
    """``value`` as ``kind`` (int or float) when it is finite and within the bounds; ``ValueError``
    naming ``where`` (a flag, a key) and what was expected otherwise. ``limit`` names the constant
    behind the upper bound (``MAX_SIGNALS``), so the message says where the number comes from."""
    expected = _expected(kind, ge, gt, le, limit, lt)
    try:
        number = _parse(kind, value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: expected {expected}, found {value!r}") from None
    if not math.isfinite(number) or any((
        ge is not None and number < ge, gt is not None and number <= gt, le is not None and number > le,
        lt is not None and number >= lt,
    )):
        raise ValueError(f"{where}: expected {expected}, found {value!r}")
    return number


def _parse(kind: type, value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if kind is int:
        if isinstance(value, str):
            return int(value.strip())  # '1e3' and '2.5' are refused: an integer flag takes digits
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("not an integer")
        return int(value)
    return float(value)


def _expected(kind: type, ge: float | None, gt: float | None, le: float | None, limit: str,
              lt: float | None = None) -> str:
    what = "an integer" if kind is int else "a finite number"
    bounds = [f">= {ge:g}" if ge is not None else "", f"> {gt:g}" if gt is not None else "",
              f"<= {le:g}" if le is not None else "", f"< {lt:g}" if lt is not None else ""]
    text = " and ".join(b for b in bounds if b)
    named = f" ({limit})" if limit and (le is not None or lt is not None) else ""
    return f"{what} {text}{named}".rstrip()


def number(
    kind: type = float,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    limit: str = "",
    lt: float | None = None,
) -> Callable[[str], Any]:
    """An argparse ``type=`` for a finite number within bounds; a bad value is refused by the parser
    as ``argument --flag: expected an integer >= 1 and <= 100000 (MAX_SIGNALS), found '0'``."""

    def parse(text: str) -> Any:
        try:
            return check_number("", text, kind, ge=ge, gt=gt, le=le, limit=limit, lt=lt)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None

    parse.__name__ = kind.__name__
    return parse


# --------------------------------------------------------------------------------------------
# devices and outputs


def resolve_device(name: str, where: str = "--device"):
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda`` or ``cuda:N`` as a torch.device;
    ``ValueError`` naming ``where`` when the name is not a device or the device is not there."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{where}: expected auto, cpu, cuda or cuda:N, found {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{where}: expected auto, cpu, cuda or cuda:N, found {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{where}: {name!r} requested but no CUDA device is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"{where}: {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


@contextmanager
def phase(prog: str, what: str) -> Iterator[None]:
    """A long step of a command, on stderr: ``evaluate: scoring the test split ...`` when it starts and
    ``evaluate: scoring the test split: 41.2 s`` when it ends, so a command that works for minutes
    is never silent (a log file shows the same lines as a terminal, unlike a progress bar)."""
    start = time.perf_counter()
    print(f"{prog}: {what} ...", file=sys.stderr, flush=True)
    yield
    print(f"{prog}: {what}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def refuse_overwrite(paths: Iterable[str | Path], *, overwrite: bool, flag: str = "--out") -> None:
    """``ValueError`` when one of ``paths`` exists and ``overwrite`` is False: a CLI replaces no file
    the user did not ask it to replace. A folder where a file is to be written is refused always."""
    paths = [Path(p) for p in paths]
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise ValueError(f"{flag}: '{folders[0]}' is a folder, expected a file name")
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ValueError(
            f"{flag}: '{existing[0]}'{more} already exists: choose another {flag}, or replace it with --overwrite"
        )


# What only training writes into a run (or sweep) directory (training.rundir.RUN_MARKERS less the names
# common elsewhere: config.yaml and train.log in a user's folders, .lock in pytest's); every run holds these.
RUN_EVIDENCE = ("checkpoints", "metrics.jsonl", "run.json", "sweep.json")
OUTPUTS_MANIFEST = ".outputs.json"  # in a command's output folder: {file name: the command that wrote it}


def check_outputs(paths: Iterable[str | Path], *, overwrite: bool, flag: str = "--out",
                  inputs: Iterable[str | Path] = (), own_run: str | Path | None = None,
                  owner: str | None = None) -> None:
    """Every rule an output path obeys, whatever ``overwrite`` says: it is none of the command's
    ``inputs`` (a file, or a direct child of an input folder, which the next call would read back), it
    lies in no run directory but ``own_run``, and, with ``owner`` (a command writing into a folder the
    user named, not a file the user named), an existing file is replaced only if the folder's
    manifest says ``owner`` wrote it. Then :func:`refuse_overwrite`."""
    paths = [Path(p) for p in paths]
    for path in paths:
        refuse_unsafe_output(path, flag, inputs=inputs, own_run=own_run)
        if owner is not None and path.is_file() and written_by(path) != owner:
            raise ValueError(f"{flag}: '{path}' already exists and was not written by {owner} (it is not in "
                             f"'{path.parent / OUTPUTS_MANIFEST}'): --overwrite replaces only files this command "
                             f"wrote; move it away or choose another {flag}")
    refuse_overwrite(paths, overwrite=overwrite, flag=flag)


def refuse_unsafe_output(path: Path, flag: str, *, inputs: Iterable[str | Path] = (),
                         own_run: str | Path | None = None) -> None:
    """``ValueError`` when ``path`` is one of ``inputs`` (or a direct child of an input folder) or lies
    in a run directory other than ``own_run``: refused whatever --overwrite says."""
    target = path.resolve()
    for given in map(Path, inputs):
        if given.resolve() == target or (given.is_dir() and given.resolve() == target.parent):
            what = "is" if given.resolve() == target else "lies in"
            raise ValueError(f"{flag}: '{path}' {what} the input '{given}'; expected an output that is none "
                             f"of the command's inputs, whatever --overwrite says")
    run = enclosing_run(path)
    if run is not None and (own_run is None or run != Path(own_run).resolve()):
        raise ValueError(f"{flag}: '{path}' lies in the run directory '{run}' (it holds "
                         f"{', '.join(m for m in RUN_EVIDENCE if (run / m).exists())}); expected a path outside "
                         f"every run but the command's own, whatever --overwrite says")


def enclosing_run(path: str | Path) -> Path | None:
    """The nearest folder holding ``path`` (``path`` included) that is a training run's directory,
    unless the folder holds an outputs manifest (an export's folder has a run.json, and is no run)."""
    for folder in (Path(path).resolve(), *Path(path).resolve().parents):
        if folder.is_dir() and not (folder / OUTPUTS_MANIFEST).is_file() and \
                any((folder / m).exists() for m in RUN_EVIDENCE):
            return folder
    return None


def written_by(path: Path) -> str | None:
    """The command that the manifest next to ``path`` says wrote it (None: not listed, or no manifest)."""
    return _manifest(path.parent).get(path.name)


def _manifest(folder: Path) -> dict[str, str]:
    try:
        files = json.loads((folder / OUTPUTS_MANIFEST).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):  # missing, damaged or not an object: nothing is ours
        return {}
    return {k: v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}


def record_outputs(paths: Iterable[str | Path], owner: str) -> None:
    """Add ``paths`` (files in one folder) to that folder's manifest as written by ``owner``."""
    paths = [Path(p) for p in paths]
    if paths:
        files = _manifest(paths[0].parent) | {p.name: owner for p in paths}
        (paths[0].parent / OUTPUTS_MANIFEST).write_text(json.dumps({"files": files}, indent=1, ensure_ascii=False)
                                                        + "\n", encoding="utf-8")
