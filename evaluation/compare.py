"""Compare runs: a table of final metrics and balancer weights, and overlaid per-component curves.

    python -m evaluation.compare logs/A logs/B ... [--out DIR]

Reads each run's metrics.jsonl (final epoch summary, final weights) and, when the run has been
evaluated, eval/metrics.json (headline test metrics). Writes DIR/comparison.md,
DIR/comparison.json and DIR/curves.png (default DIR: logs/comparison). A ``-m`` sweep calls
:func:`compare_runs` at its end.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.metrics import delta_m_percent
from evaluation.plots import CURVE_KEYS, plot_loss_curves
from evaluation.report import to_jsonable
from evaluation.runlog import RunLog, read_run

# (column, task block, metric key, higher is better): what a comparison and bench/quality.py show
HEADLINE: tuple[tuple[str, str, str, bool], ...] = (
    ("class macro-F1", "class", "macro_f1", True),
    ("class bal. acc.", "class", "balanced_accuracy", True),
    ("wave V F1", "peak_exist", "f1", True),
    ("latency MAE (ms)", "peak_latency", "mae", False),
    ("amplitude MAE (µV)", "peak_amplitude", "mae", False),
    ("threshold MAE (dB)", "threshold", "mae", False),
    ("threshold R²", "threshold", "r2", True),
    ("denoise r @0 dB", "denoising", "pearson_r", True),
)


# One metric per task for Δm% (bench/quality.py): (task, column of HEADLINE)
DELTA_M_METRICS: dict[str, str] = {
    "signal": "denoise r @0 dB",
    "class": "class macro-F1",
    "peak_exist": "wave V F1",
    "peak_latency": "latency MAE (ms)",
    "peak_amplitude": "amplitude MAE (µV)",
    "threshold": "threshold MAE (dB)",
}


def delta_m_for_run(run: dict[str, float], single_task: dict[str, dict[str, float]]) -> float:
    """Δm% (higher is better) of one run's headline metrics against the single-task runs:
    ``single_task[task]`` is the headline dict of the run trained on ``task`` alone; each task is
    compared on its own DELTA_M_METRICS column. Tasks without a single-task run are left out."""
    up = {column: higher for column, _t, _k, higher in HEADLINE}
    tasks = [t for t in DELTA_M_METRICS if t in single_task]
    if not tasks:
        raise ValueError("delta_m_for_run: expected at least one single-task run, found none")
    cols = [DELTA_M_METRICS[t] for t in tasks]
    return delta_m_percent([run[c] for c in cols], [single_task[t][c] for t, c in zip(tasks, cols, strict=True)],
                           [up[c] for c in cols])


def headline_metrics(m: dict[str, Any]) -> dict[str, float]:
    """The HEADLINE numbers of one eval/metrics.json (nan where absent). Denoising: the level whose
    diffusion SNR is closest to 0 dB."""
    out = {}
    for column, task, key, _up in HEADLINE:
        if task == "denoising":
            levels = m.get("denoising") or []
            lv = min(levels, key=lambda lv: abs(lv["snr_db"]), default=None)
            v = lv["model"][key] if lv else None
        else:
            v = (m.get(task) or {}).get("model", {}).get(key)
        out[column] = float("nan") if v is None else float(v)
    return out


def summarize_run(run: RunLog) -> dict[str, Any]:
    last = run.last_epoch_scalars()
    ev = run.eval_metrics()
    return {
        "run": run.name,
        "path": str(run.run_dir),
        "final_epoch": {k: v for k, v in last.items() if k.startswith(("train/", "val/"))},
        "final_weights": {run.weight_labels()[k]: v for k, v in run.final_weights().items()},
        "eval": headline_metrics(ev) if ev else None,
        "flags": ev.get("flags", []) if ev else None,
        "skipped_lines": run.skipped_lines,
    }


def _f(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4g}"


def render_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# Run comparison", "", "## Final validation losses (last epoch summary)", ""]
    keys = [f"val/{k}" for k in CURVE_KEYS]
    lines += ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + r["run"] + " | " + " | ".join(_f(r["final_epoch"].get(k)) for k in keys) + " |" for r in rows]
    names = list(dict.fromkeys(k for r in rows for k in r["final_weights"]))  # weight index order
    lines += ["", "## Final balancer weights", ""]
    if names:
        lines += ["| run | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += ["| " + r["run"] + " | " + " | ".join(_f(r["final_weights"].get(n)) for n in names) + " |"
                  for r in rows]
    else:
        lines.append("No weight records in these runs.")
    lines += ["", "## Evaluation (eval/metrics.json)", ""]
    cols = [h[0] for h in HEADLINE]
    lines += ["| run | " + " | ".join(cols) + " | flags |", "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        ev = r["eval"] or {}
        flags = "not evaluated" if r["flags"] is None else str(len(r["flags"]))
        lines.append("| " + r["run"] + " | " + " | ".join(_f(ev.get(c)) for c in cols) + f" | {flags} |")
    lines += ["", "![curves](curves.png)", ""]
    return "\n".join(lines)


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Write comparison.md, comparison.json and curves.png into ``out_dir``; return the JSON dict."""
    if not run_dirs:
        raise ValueError("compare_runs: expected at least one run directory, found none")
    runs = [read_run(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [summarize_run(r) for r in runs]
    result = {"runs": rows, "headline": [{"column": c, "higher_is_better": up} for c, _t, _k, up in HEADLINE]}
    (out_dir / "comparison.json").write_text(json.dumps(to_jsonable(result), indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    (out_dir / "comparison.md").write_text(render_markdown(rows), encoding="utf-8")
    plot_loss_curves(runs, out_dir / "curves.png")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (logs/EXP)")
    p.add_argument("--out", default="logs/comparison", help="output folder")
    args = p.parse_args(argv)
    compare_runs(args.runs, args.out)
    print((Path(args.out) / "comparison.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
