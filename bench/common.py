"""Shared by the benchmarks: every bench prints a table and writes its result as JSON."""

from __future__ import annotations

import json
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
