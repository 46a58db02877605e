"""Shared by the benchmarks: every bench times calls the same way, prints a table and writes its
result as JSON. Progress goes to stderr (``data.cli.phase`` lines, :func:`progress_bar` on a terminal),
so that stdout keeps the tables and ``wrote ...`` lines the docs are made from."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data.jsonable import to_jsonable

ROOT = Path(__file__).resolve().parents[1]


def write_result(out: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` as indented JSON to ``out`` (folders created) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(result), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return out


def strategy_overrides(spec: str) -> list[str]:
    """A balancer strategy ``name`` or ``name:key=value,...`` (keys of that strategy's config block, e.g.
    ``jacobian:aggregator=mgda,engine=autojac``) -> the config overrides that select it:
    ``loss.balancer.strategy=name`` and ``loss.balancer.name.key=value`` for each key (validated by the config)."""
    strategy, _, options = spec.partition(":")
    return [f"loss.balancer.strategy={strategy}", *(f"loss.balancer.{strategy}.{o}" for o in options.split(",") if o)]


def timed(fn: Callable[[], object], repeats: int, *, warmup: int = 0, clock: Callable[[], float] = time.perf_counter,
          sync: Callable[[], object] | None = None) -> list[float]:
    """Seconds that each of ``repeats`` calls of ``fn`` took on ``clock``, after ``warmup`` untimed
    calls. ``sync`` (a CUDA synchronize) runs before each start and stop, so queued device work is
    counted in the call that queued it."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        start = clock()
        fn()
        if sync is not None:
            sync()
        times.append(clock() - start)
    return times


# An absolute path to a run folder of another checkout: /any/where/logs/EXP -> logs/EXP.
_FOREIGN_LOGS = re.compile(r"(?<![\w.~])/(?:[^\s/`'\"()|,;]+/)+?(?=logs/)")


def portable_paths(text: str) -> str:
    """``text`` without the absolute paths of the machine it ran on: this checkout's and the current
    directory's prefix removed, a home directory as ``~``, another checkout's ``.../logs/EXP`` as
    ``logs/EXP``. A doc is read on other machines, where those paths mean nothing."""
    for prefix in sorted({str(ROOT), str(Path.cwd())}, key=len, reverse=True):
        if prefix != "/":
            text = text.replace(prefix + "/", "")
    text = _FOREIGN_LOGS.sub("", text)
    home = str(Path.home())
    return text.replace(home + "/", "~/") if home not in ("", "/") else text


def write_doc_section(path: str | Path, key: str, body: str) -> Path:
    """Put ``body`` between the markers ``<!-- KEY: begin -->`` and ``<!-- KEY: end -->`` of the
    Markdown file ``path``: replaced where the markers are, appended (with them) where they are not,
    the rest of the file kept as it is; the machine's absolute paths are left out
    (:func:`portable_paths`). A file with one marker but not the other, or either twice,
    is refused (it was edited by hand; nothing is guessed)."""
    path = Path(path)
    begin, end = f"<!-- {key}: begin -->", f"<!-- {key}: end -->"
    block = f"{begin}\n{portable_paths(body).strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    counts = (text.count(begin), text.count(end))
    if counts == (0, 0):
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    elif counts == (1, 1) and text.index(begin) < text.index(end):
        head, rest = text.split(begin)
        text = head + block + rest.split(end, 1)[1]
    else:
        raise ValueError(f"'{path}': expected the markers '{begin}' and '{end}' once each, in that order, "
                         f"found {counts[0]} and {counts[1]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote section '{key}' of {path}")
    return path


def progress_bar(total: int, desc: str, unit: str = "step") -> Any:
    """A tqdm bar on stderr for a step that repeats ``total`` times, shown on a terminal only (a log file
    gets the ``data.cli.phase`` lines around it instead) and erased when done: as evaluation/generate.py."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=None)


def machine() -> str:
    """The machine a result was measured on, in words: CPU model, cores, GPU, system, torch."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU used"
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} logical cores, {gpu}; {system}; torch {torch.__version__}"


def add_output_args(p: Any, name: str) -> None:
    """--out (bench/results/NAME.json), --doc (docs/results.md: the bench writes its own section) and
    --no-doc, the same for every bench that writes a result and a table."""
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / f"{name}.json"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "results.md"), help="Markdown file to write the section to")
    p.add_argument("--no-doc", action="store_true", help="write the JSON only")


def write_outputs(args: Any, key: str, result: dict[str, Any], section: str) -> None:
    """What add_output_args declared: the JSON result to --out, ``section`` as the KEY section of
    --doc unless --no-doc."""
    write_result(args.out, result)
    if not args.no_doc:
        write_doc_section(args.doc, key, section)
