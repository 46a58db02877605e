"""Quality benchmark: every balancer strategy and the single-task baselines, one dataset, one seed.

    python bench/quality.py [--config configs/quickstart.yaml] [--seed 0] [--strategies fixed,dwa,...]
        [--splits test,val] [--root logs/quality] [--generate] [--threads 1] [--dry-run] [--reuse] [key=value ...]

A strategy is a name or ``name:key=value,...`` with keys of that strategy's config block
(``jacobian:aggregator=mgda``, ``jacobian:update_every=8``); ``--strategies`` takes one such spec or a
comma-separated list of plain names (``fixed,famo``), and may be repeated (``--strategies fixed,famo --strategies
jacobian:update_every=8``). For each strategy: ``python train.py --config
CFG --experiment quality_<strategy> seed=S loss.balancer.strategy=<strategy> ...`` (a spec's keys become
``loss.balancer.<strategy>.<key>=<value>``, its run name ``quality_jacobian-aggregator_mgda``); for each component
a single-task run (strategy "fixed",
the other five weights ``--off-weight``: 1e-8 by default, because ``loss.balancer.weights`` must be
> 0; the shared trunk then sees that task's gradient only, to 1e-8 relative, and Adam still fits
the other heads on its features, which no single-task metric reads); then
``python -m evaluation.evaluate --run ...`` on each of ``--splits`` (test: ``RUN/eval``, the table's; val:
``RUN/eval_val``, where a strategy is chosen before the test split is read; bench/quality_seeds.py
``--eval-dir eval_val`` tabulates it).
Prints a table of per-task metrics and Δm% (the mean relative change against the single-task
baselines, signed so that HIGHER is better: see ``evaluation.metrics.delta_m_percent``), writes
bench/results/quality.json and its section of docs/results.md (with the command and the machine), and the run
comparison (``evaluation.compare``) under ROOT/comparison. Trailing ``key=value`` arguments are
passed to every training run (e.g. ``training.epochs=5``).

Training runs in subprocesses, one at a time; OMP/MKL threads are limited to ``--threads``.
A run that fails is reported as failed and the others go on. A run whose training and evaluations finished
leaves ROOT/NAME.done.json with its commands; ``--reuse`` reads such a run instead of training it again when
the commands are the same, so a bench stopped part-way (a session's end, a reboot) goes on where it stopped.
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

from bench.common import machine, strategy_overrides, write_doc_section  # noqa: E402
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
        name = run_name(s)
        runs.append({"name": name, "kind": "multi", "strategy": s,
                     "cmd": train_command(args, name, strategy_overrides(s))})
    if not args.no_single_task:
        for task in COMPONENTS:
            weights = [f"loss.balancer.weights.{c}={1.0 if c == task else args.off_weight:g}" for c in COMPONENTS]
            name = f"quality_single_{task}"
            runs.append({"name": name, "kind": "single", "task": task,
                         "cmd": train_command(args, name, ["loss.balancer.strategy=fixed", *weights])})
    return runs


def run_name(spec: str) -> str:
    """The run folder of a strategy spec: ``jacobian:aggregator=mgda,engine=autojac`` ->
    ``quality_jacobian-aggregator_mgda-engine_autojac``."""
    return "quality_" + spec.replace(":", "-").replace(",", "-").replace("=", "_")


def strategy_specs(given: list[str]) -> list[str]:
    """``--strategies``' arguments -> one spec each: an argument with ``:`` is one ``name:key=value,...`` spec,
    any other a comma-separated list of names. Names are checked here, keys by loading the config, so a typo
    stops the bench before its first run rather than failing that run."""
    from training.config import load_config

    specs = [s for g in given for s in ([g] if ":" in g else g.split(",")) if s]
    for spec in specs:
        name = spec.partition(":")[0]
        if name not in STRATEGIES:
            raise ValueError(f"--strategies {spec!r}: expected a name from {list(STRATEGIES)}, found {name!r}")
        try:
            load_config(None, strategy_overrides(spec))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--strategies {spec!r}: {exc}") from None
    return specs


EVAL_DIRS = {"test": "eval", "val": "eval_val"}  # split -> the run's evaluation folder


def _run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0



def _fmt(v: Any) -> str:
    return "—" if v is None or v != v else f"{v:.4g}"


def render(result: dict[str, Any]) -> str:
    """The test split's metrics per run, its Δm%, and (when the validation split was evaluated) the
    validation Δm% on which a strategy is chosen."""
    cols = [h[0] for h in HEADLINE]
    val = "val" in result.get("splits", [])
    extra = " Δm% val (↑) |" if val else ""
    lines = ["| run | " + " | ".join(cols) + f" | Δm% (↑) |{extra} train s |", "|---" * (len(cols) + 3 + val) + "|"]
    for r in result["runs"]:
        h = r.get("metrics") or {}
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(h.get(c)) for c in cols) + f" | {_fmt(r.get('delta_m'))} |"
                     + (f" {_fmt(r.get('delta_m_val'))} |" if val else "") + f" {_fmt(r.get('train_seconds'))} |")
    return "\n".join(lines)


def write_doc(result: dict[str, Any], path: Path) -> None:
    """The table as the ``quality`` section of ``path`` (the rest of the file is kept)."""
    val = ("\nΔm% val: the same against the single-task runs on the validation split, where a strategy is chosen "
           "before the test split is read." if "val" in result.get("splits", []) else "")
    merged = ("\nMerged from: " + "; ".join(f"`{c}`" for c in result["merged_from"]) + " (`bench/quality.py "
              "--merge`: a later run of a name replaces an earlier one)." if result.get("merged_from") else "")
    val += merged
    text = f"""## Balancer strategies against single-task baselines, one seed

Command: `{result.get('merge_command', result['command'])}`

Machine: {result['machine']}. Date: {result['date']}.

One synthetic dataset (config `{result['config']}`), seed {result['seed']}, test split,
`{result.get('checkpoint', 'best')}` checkpoint of each run. Every metric is the model's on the test split (see
`python -m evaluation.evaluate`); single-task rows are runs with the other five loss weights
at {result['off_weight']:g}.
Δm% is the mean relative change against the single-task run of each task on its own metric
({', '.join(f'{t}: {c}' for t, c in DELTA_M_METRICS.items())}), signed so that higher is better
(the papers' -Δm). A dash: not measured (or the run failed: see bench/results/quality.json).{val}

{render(result)}
"""
    write_doc_section(path, "quality", text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategies", action="append", default=None,
                   help="comma-separated names, or one name:key=value,... spec; repeat the flag for more")
    p.add_argument("--splits", default="test", help="comma-separated splits to evaluate each run on: test (the "
                   "table's), val (RUN/eval_val, for choosing)")
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
    p.add_argument("--reuse", action="store_true",
                   help="read a run that finished with the same commands (its ROOT/NAME.done.json) instead of "
                        "training it again: a bench stopped part-way goes on where it stopped")
    p.add_argument("overrides", nargs="*", help="key=value passed to every training run")
    args = p.parse_args(argv)
    try:
        args.strategies = strategy_specs(args.strategies or [",".join(STRATEGIES)])
    except ValueError as exc:
        p.error(str(exc))
    args.splits = [s for s in args.splits.split(",") if s]
    if not args.splits or set(args.splits) - set(EVAL_DIRS):
        p.error(f"--splits: expected names from {list(EVAL_DIRS)}, found {args.splits}")
    return args


def eval_command(args: argparse.Namespace, name: str, split: str) -> list[str]:
    run = f"{args.root}/{name}"
    return [sys.executable, "-m", "evaluation.evaluate", "--run", run, "--checkpoint", args.checkpoint,
            "--split", split, "--out", f"{run}/{EVAL_DIRS[split]}", *([] if args.generate else ["--no-generate"])]


def train_and_evaluate(args: argparse.Namespace, runs: list[dict[str, Any]], env: dict[str, str]) -> None:
    """Each run trained, then evaluated on each split; its status, time and metrics (``metrics``: the test
    split's, ``metrics_val``: the validation split's) written into the run's dict. With ``--reuse``, a run whose
    stamp (:func:`stamp`) records the same training and evaluation commands is read, not run again."""
    for k, r in enumerate(runs, 1):
        done = stamp(args, r)
        before = json.loads(done.read_text("utf-8")) if args.reuse and done.is_file() else {}
        if before.get("commands") == _commands(r):
            r["train_seconds"], r["status"] = before["train_seconds"], "ok (reused)"
            read_evaluations(args, r)
            print(f"[{r['name']}] {r['status']}: {done}", flush=True)
            continue
        done.unlink(missing_ok=True)  # a run trained again is finished only when its stamp is written again
        with phase(PROG, f"[{r['name']}] ({k}/{len(runs)}) training"):
            rc, secs = _run(r["cmd"], env, ROOT / args.root / f"{r['name']}.train.out")
        r["train_seconds"], r["status"] = secs, "ok" if rc == 0 else f"train failed (rc {rc})"
        for split in args.splits if rc == 0 else ():
            with phase(PROG, f"[{r['name']}] evaluating on the {split} split"):
                rc, _ = _run(r["eval_cmds"][split], env, ROOT / args.root / f"{r['name']}.eval_{split}.out")
            if rc != 0:
                r["status"] = f"eval on {split} failed (rc {rc})"
                break
        if r["status"] == "ok":
            read_evaluations(args, r)
        if r["status"] == "ok":
            done.write_text(json.dumps({"commands": _commands(r), "train_seconds": secs}) + "\n", encoding="utf-8")
        print(f"[{r['name']}] {r['status']} in {secs:.0f} s", flush=True)


def stamp(args: argparse.Namespace, r: dict[str, Any]) -> Path:
    """ROOT/NAME.done.json: written when a run's training and every evaluation finished (``--reuse`` reads it)."""
    return ROOT / args.root / f"{r['name']}.done.json"


def _commands(r: dict[str, Any]) -> list[list[str]]:
    """A run's training and evaluation commands without the interpreter's path (another venv runs the same)."""
    return [r["cmd"][1:], *(c[1:] for _, c in sorted(r["eval_cmds"].items()))]


def read_evaluations(args: argparse.Namespace, r: dict[str, Any]) -> None:
    """Each split's metrics.json of run ``r`` into ``r`` (``metrics``, ``metrics_val``, ``flags``); a missing
    one sets its status."""
    for split in args.splits:
        path = ROOT / args.root / r["name"] / EVAL_DIRS[split] / "metrics.json"
        if not path.is_file():
            r["status"] = f"eval on {split} wrote no {path.name}"
            return
        m = json.loads(path.read_text("utf-8"))
        r["metrics" if split == "test" else f"metrics_{split}"] = headline_metrics(m)
        if split == "test":
            r["flags"] = m.get("flags", [])


def add_delta_m(runs: list[dict[str, Any]], splits: list[str]) -> None:
    """Each joint run's Δm% against the single-task runs, per split evaluated (``delta_m``: test)."""
    for split in splits:
        key = "metrics" if split == "test" else f"metrics_{split}"
        single = {r["task"]: r[key] for r in runs if r["kind"] == "single" and r.get(key)}
        for r in runs:
            if r["kind"] == "multi" and r.get(key) and single:
                dkey = "delta_m" if split == "test" else f"delta_m_{split}"
                try:
                    r[dkey] = delta_m_for_run(r[key], single)
                except ValueError as exc:  # a metric the run did not produce (nan) or a zero baseline
                    r[f"{dkey}_error"] = str(exc)


def merge(paths: list[str]) -> dict[str, Any]:
    """Several results of one seed and config as one (a rerun of the runs that failed, more strategies later):
    the runs of each file in order, a later run of the same name replacing an earlier one, and Δm% recomputed
    against the merged single-task runs. ValueError naming the file whose seed, config or overrides differ."""
    from bench.quality_seeds import first_difference

    results = [(q, json.loads(Path(q).read_text(encoding="utf-8"))) for q in paths]
    first_path, first = results[0]
    diff = first_difference(results, ("seed", "config", "off_weight", "checkpoint"))
    if diff is not None:
        q, key, want, got = diff
        if key == "overrides":
            raise ValueError(f"--merge {q}: expected the overrides {want} as in {first_path}, found {got}")
        raise ValueError(f"--merge {q}: expected {key} {want!r} as in {first_path}, found {got!r}")
    runs: dict[str, dict[str, Any]] = {}
    for _, r in results:
        runs |= {run["name"]: dict(run) for run in r["runs"]}
    splits = sorted({s for _, r in results for s in r.get("splits", ["test"])}, key=list(EVAL_DIRS).index)
    merged = dict(first, runs=list(runs.values()), splits=splits, merged_from=[r["command"] for _, r in results])
    for run in merged["runs"]:
        for key in [k for k in run if k.startswith("delta_m")]:
            del run[key]
    add_delta_m(merged["runs"], splits)
    return merged


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--merge":
        return merge_main(argv[1:])
    args = parse_args(argv)
    runs = plan(args)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               WANDB_MODE="disabled")
    for r in runs:
        r["eval_cmds"] = {split: eval_command(args, r["name"], split) for split in args.splits}
        if args.dry_run:
            print(shlex.join(r["cmd"]), *("&& " + shlex.join(c) for c in r["eval_cmds"].values()))
    if args.dry_run:
        return 0

    # A training run per strategy and per task: a progress line on stderr as each run's training and evaluation
    # start and end (their own output goes to ROOT/NAME.*.out); stdout keeps each run's status line and the table.
    train_and_evaluate(args, runs, env)
    add_delta_m(runs, args.splits)
    result = {
        "command": shlex.join(["python", "bench/quality.py", *argv]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "config": args.config,
        "seed": args.seed,
        "off_weight": args.off_weight,
        "checkpoint": args.checkpoint,
        "splits": args.splits,
        "delta_m_metrics": DELTA_M_METRICS,
        "runs": [{k: v for k, v in r.items() if k not in ("cmd", "eval_cmds")} | {"cmd": shlex.join(r["cmd"])}
                 for r in runs],
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if "test" in args.splits:
        write_doc(result, ROOT / args.doc)
    done = [ROOT / args.root / r["name"] for r in runs if (ROOT / args.root / r["name"] / "metrics.jsonl").is_file()]
    if done:
        with phase(PROG, f"comparing the runs ({len(done)})"):
            compare_runs(done, ROOT / args.root / "comparison")
    print(render(result))
    print(f"wrote {args.out}" + (f" and {args.doc}" if "test" in args.splits else ""))
    return 0


def merge_main(argv: list[str]) -> int:
    """``python bench/quality.py --merge A.json B.json ... --out C.json [--doc FILE]``."""
    p = argparse.ArgumentParser(prog="bench/quality.py --merge", description=merge.__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", help="bench/quality.py result JSON files of one seed and config")
    p.add_argument("--out", required=True)
    p.add_argument("--doc", default=None, help="write the table as the quality section of this file")
    args = p.parse_args(argv)
    try:
        result = merge(args.results)
    except (OSError, ValueError, KeyError) as exc:
        p.error(str(exc))
    # "command" stays the first result's (bench/quality_seeds.py reads the training overrides from it)
    result["merge_command"] = shlex.join(["python", "bench/quality.py", "--merge", *argv])
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.doc:
        write_doc(result, ROOT / args.doc)
    print(render(result))
    print(f"wrote {args.out}" + (f" and {args.doc}" if args.doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
