"""Quality benchmark: every balancer strategy and the single-task baselines, one dataset, one seed.

    python bench/quality.py [--config configs/quickstart.yaml] [--seed 0] [--strategies fixed,dwa,...]
        [--root logs/quality] [--generate] [--threads 1] [--dry-run] [key=value ...]

For each strategy: ``python train.py --config CFG --experiment quality_<strategy> seed=S
loss.balancer.strategy=<strategy> ...``; for each component a single-task run (strategy "fixed",
the other five weights ``--off-weight``: 1e-8 by default, because ``loss.balancer.weights`` must be
> 0; the shared trunk then sees that task's gradient only, to 1e-8 relative, and Adam still fits
the other heads on its features, which no single-task metric reads); then
``python -m evaluation.evaluate --run ...`` on the test split.
Prints a table of per-task metrics and Δm% (the mean relative change against the single-task
baselines, signed so that HIGHER is better: see ``evaluation.metrics.delta_m_percent``), writes
bench/results/quality.json and its section of docs/results.md (with the command and the machine), and the run
comparison (``evaluation.compare``) under ROOT/comparison. Trailing ``key=value`` arguments are
passed to every training run (e.g. ``training.epochs=5``).

Training runs in subprocesses, one at a time; OMP/MKL threads are limited to ``--threads``.
A run that fails is reported as failed and the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_doc_section  # noqa: E402
from data.cli import phase  # noqa: E402
from data.jsonable import to_jsonable  # noqa: E402
from evaluation.compare import DELTA_M_METRICS, HEADLINE, compare_runs, delta_m_for_run, headline_metrics  # noqa: E402
from training.balancers.config import STRATEGIES  # noqa: E402
from training.components import COMPONENTS  # noqa: E402

PROG = "bench/quality.py"  # the start of its progress lines on stderr


def train_command(args: argparse.Namespace, name: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "train.py", "--config", args.config, "--experiment", name, "--overwrite",
            f"seed={args.seed}", f"logging.log_dir={args.root}", "logging.use_wandb=false", *overrides, *args.overrides]


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs: (name, kind, task or strategy, training command)."""
    runs = []
    for s in args.strategies:
        runs.append({"name": f"quality_{s}", "kind": "multi", "strategy": s,
                     "cmd": train_command(args, f"quality_{s}", [f"loss.balancer.strategy={s}"])})
    if not args.no_single_task:
        for task in COMPONENTS:
            weights = [f"loss.balancer.weights.{c}={1.0 if c == task else args.off_weight:g}" for c in COMPONENTS]
            name = f"quality_single_{task}"
            runs.append({"name": name, "kind": "single", "task": task,
                         "cmd": train_command(args, name, ["loss.balancer.strategy=fixed", *weights])})
    return runs


def _run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0



def _fmt(v: Any) -> str:
    return "—" if v is None or v != v else f"{v:.4g}"


def render(result: dict[str, Any]) -> str:
    cols = [h[0] for h in HEADLINE]
    lines = ["| run | " + " | ".join(cols) + " | Δm% (↑) | train s |", "|---" * (len(cols) + 3) + "|"]
    for r in result["runs"]:
        h = r.get("metrics") or {}
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(h.get(c)) for c in cols) +
                     f" | {_fmt(r.get('delta_m'))} | {_fmt(r.get('train_seconds'))} |")
    return "\n".join(lines)


def write_doc(result: dict[str, Any], path: Path) -> None:
    """The table as the ``quality`` section of ``path`` (the rest of the file is kept)."""
    text = f"""## Balancer strategies against single-task baselines, one seed

Command: `{result['command']}`

Machine: {result['machine']}. Date: {result['date']}.

One synthetic dataset (config `{result['config']}`), seed {result['seed']}, test split,
`{result.get('checkpoint', 'best')}` checkpoint of each run. Every metric is the model's on the test split (see
`python -m evaluation.evaluate`); single-task rows are runs with the other five loss weights
at {result['off_weight']:g}.
Δm% is the mean relative change against the single-task run of each task on its own metric
({', '.join(f'{t}: {c}' for t, c in DELTA_M_METRICS.items())}), signed so that higher is better
(the papers' -Δm). A dash: not measured (or the run failed: see bench/results/quality.json).

{render(result)}
"""
    write_doc_section(path, "quality", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated balancer strategies")
    p.add_argument("--no-single-task", action="store_true", help="skip the single-task runs (no Δm%%)")
    p.add_argument("--off-weight", type=float, default=1e-8,
                   help="weight of the other five components in a single-task run (0 where the config allows it)")
    p.add_argument("--root", default="logs/quality", help="where the runs are written")
    p.add_argument("--generate", action="store_true", help="also run the generation metrics (slow on CPU)")
    p.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of each subprocess")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"),
                   help="checkpoint evaluated; 'last' compares every run after the same number of steps "
                        "(a single-task run's best.pt is chosen by a metric of the whole objective)")
    p.add_argument("--out", default="bench/results/quality.json")
    p.add_argument("--doc", default="docs/results.md")
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    p.add_argument("overrides", nargs="*", help="key=value passed to every training run")
    args = p.parse_args(argv)
    args.strategies = [s for s in args.strategies.split(",") if s]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        p.error(f"--strategies: expected names from {list(STRATEGIES)}, found {unknown}")

    runs = plan(args)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               WANDB_MODE="disabled")
    for r in runs:
        r["eval_cmd"] = [sys.executable, "-m", "evaluation.evaluate", "--run", f"{args.root}/{r['name']}",
                         "--checkpoint", args.checkpoint, "--split", "test",
                         *([] if args.generate else ["--no-generate"])]
        if args.dry_run:
            print(shlex.join(r["cmd"]), "&&", shlex.join(r["eval_cmd"]))
    if args.dry_run:
        return 0

    # A training run per strategy and per task: a progress line on stderr as each run's training and evaluation
    # start and end (their own output goes to ROOT/NAME.*.out); stdout keeps each run's status line and the table.
    for k, r in enumerate(runs, 1):
        with phase(PROG, f"[{r['name']}] ({k}/{len(runs)}) training"):
            rc, secs = _run(r["cmd"], env, ROOT / args.root / f"{r['name']}.train.out")
        r["train_seconds"], r["status"] = secs, "ok" if rc == 0 else f"train failed (rc {rc})"
        if rc == 0:
            with phase(PROG, f"[{r['name']}] evaluating on the test split"):
                rc, _ = _run(r["eval_cmd"], env, ROOT / args.root / f"{r['name']}.eval.out")
            if rc != 0:
                r["status"] = f"eval failed (rc {rc})"
        mpath = ROOT / args.root / r["name"] / "eval" / "metrics.json"
        if r["status"] == "ok" and mpath.is_file():
            m = json.loads(mpath.read_text(encoding="utf-8"))
            r["metrics"], r["flags"] = headline_metrics(m), m.get("flags", [])
        print(f"[{r['name']}] {r['status']} in {secs:.0f} s", flush=True)

    single = {r["task"]: r["metrics"] for r in runs if r["kind"] == "single" and r.get("metrics")}
    for r in runs:
        if r["kind"] == "multi" and r.get("metrics") and single:
            try:
                r["delta_m"] = delta_m_for_run(r["metrics"], single)
            except ValueError as exc:  # a metric the run did not produce (nan) or a zero baseline
                r["delta_m_error"] = str(exc)
    result = {
        "command": shlex.join(["python", "bench/quality.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "config": args.config,
        "seed": args.seed,
        "off_weight": args.off_weight,
        "checkpoint": args.checkpoint,
        "delta_m_metrics": DELTA_M_METRICS,
        "runs": [{k: v for k, v in r.items() if k not in ("cmd", "eval_cmd")} | {"cmd": shlex.join(r["cmd"])}
                 for r in runs],
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_doc(result, ROOT / args.doc)
    done = [ROOT / args.root / r["name"] for r in runs if (ROOT / args.root / r["name"] / "metrics.jsonl").is_file()]
    if done:
        with phase(PROG, f"comparing the runs ({len(done)})"):
            compare_runs(done, ROOT / args.root / "comparison")
    print(render(result))
    print(f"wrote {args.out} and {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
