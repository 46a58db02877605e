"""Shared by the benchmarks: every bench times calls the same way, prints a table and writes its
result as JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data.jsonable import to_jsonable


def write_result(out: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` as indented JSON to ``out`` (folders created) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(result), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return out


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
