"""Reading a run directory's ``metrics.jsonl`` and ``eval/metrics.json`` (DESIGN.md, run directory).

metrics.jsonl holds one JSON object per line: ``kind`` ("step", "epoch", "weights", "alert",
"text", "hparams"), ``step``, ``epoch``, ``scalars`` (name -> number), ``text``, ``data``. A run that
is still writing may end in a partial line: it is skipped, and so is any line that is not UTF-8, not
a JSON object, or whose fields have the wrong type (a ``scalars`` that is not a mapping of numbers,
a ``step`` that is not an integer; a null scalar is a NaN the logger wrote as null), with a count,
so nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHT_KEY = re.compile(r"^train/(weight_\d+|head_\d+_weight_\d+)$")


@dataclass
class RunLog:
    run_dir: Path
    records: list[dict[str, Any]]
    skipped_lines: int = 0

    @property
    def name(self) -> str:
        return self.run_dir.name

    def series(self, key: str, kinds: tuple[str, ...] | None = None) -> tuple[list[int], list[float]]:
        """(steps, values) of scalar ``key`` over the records of the given kinds, in file order."""
        steps, values = [], []
        for r in self.records:
            if kinds is not None and r.get("kind") not in kinds:
                continue
            v = (r.get("scalars") or {}).get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                steps.append(int(r.get("step", 0)))
                values.append(float(v))
        return steps, values

    def scalar_keys(self) -> set[str]:
        return {k for r in self.records for k in (r.get("scalars") or {})}

    def weight_keys(self) -> list[str]:
        return sorted((k for k in self.scalar_keys() if WEIGHT_KEY.match(k)), key=_natural)

    def last_epoch_scalars(self) -> dict[str, float]:
        """Scalars of the last "epoch" record (the final epoch summary); empty when there is none."""
        for r in reversed(self.records):
            if r.get("kind") == "epoch":
                return dict(r.get("scalars") or {})
        return {}

    def final_weights(self) -> dict[str, float]:
        out = {}
        for key in self.weight_keys():
            _steps, values = self.series(key)
            out[key] = values[-1]
        return out

    def weight_labels(self) -> dict[str, str]:
        """Weight key -> component, from the index mapping the weight logger writes as a "text"
        record (any ``data`` entry keyed by a weight name or an index); the key itself otherwise."""
        labels: dict[str, str] = {}
        for r in self.records:
            if r.get("kind") != "text":
                continue
            for mapping in _dicts(r.get("data") or {}):
                for k, v in mapping.items():
                    if not isinstance(v, str):
                        continue
                    k = str(k)
                    if k.isdigit():
                        labels.setdefault(f"train/weight_{k}", v)
                    elif re.search(r"(weight_\d+|head_\d+_weight_\d+)$", k):
                        labels.setdefault("train/" + k.split("/")[-1], v)
        return {k: labels.get(k, k.removeprefix("train/")) for k in self.weight_keys()}

    def eval_metrics(self) -> dict[str, Any] | None:
        """The run's eval/metrics.json; None when the run has not been evaluated."""
        path = self.run_dir / "eval" / "metrics.json"
        return read_eval_metrics(path) if path.is_file() else None


def read_eval_metrics(path: str | Path) -> dict[str, Any]:
    """An evaluation's metrics.json as a dict; ValueError naming the file when it is not one."""
    path = Path(path)
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"evaluation metrics '{path}': not readable as JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"evaluation metrics '{path}': nested too deeply to read") from None
    if not isinstance(m, dict):
        raise ValueError(f"evaluation metrics '{path}': expected a JSON object, found {type(m).__name__}")
    return m


def _natural(key: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def _dicts(obj: Any):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _dicts(v)


def read_run(run_dir: str | Path) -> RunLog:
    """Parse ``run_dir/metrics.jsonl``; ValueError when the directory or the file is missing."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"run '{run_dir}': expected {path.name} in the run directory, found none")
    records, skipped = [], 0
    for raw in path.read_bytes().split(b"\n"):  # bytes: one line of another encoding costs that line only
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            skipped += 1
            continue
        if _well_formed(obj):
            records.append(obj)
        else:
            skipped += 1
    return RunLog(run_dir, records, skipped)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _well_formed(r: Any) -> bool:
    """A record whose fields have the types the readers above rely on (missing fields are fine)."""
    if not isinstance(r, dict):
        return False
    scalars, step = r.get("scalars") or {}, r.get("step", 0)
    return (isinstance(scalars, dict) and all(v is None or _is_number(v) for v in scalars.values())  # None: NaN
            and isinstance(step, int) and not isinstance(step, bool)
            and isinstance(r.get("kind", ""), str) and isinstance(r.get("data", {}), (dict, list)))
