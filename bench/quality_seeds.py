"""Several seeds of bench/quality.py as one table: mean and 95 % interval per strategy and metric.

    python bench/quality_seeds.py RESULT.json RESULT.json ... [--out bench/results/quality_seeds.json]
        [--doc docs/results.md]

Each RESULT.json is one ``bench/quality.py`` result (one seed). They must describe the same
experiment: the same config, trailing ``key=value`` overrides, off-weight, checkpoint and Δm
metrics, each with a different seed; anything else is refused with the key that differs. For
every run (strategy or single task) and headline metric, and for each strategy's Δm%, the table
gives the mean over seeds and the 95 % Student-t interval of that mean (n seeds, n - 1 degrees of
freedom): the seed-to-seed spread of the whole pipeline (initialisation, data order, noise draws),
not the test-set sampling error. The per-patient rows (threshold MAE and within 10 dB of the
head-mean and rule thresholds, type macro-F1) are read from each run's ``eval/metrics.json``.
The table goes into its own section of ``--doc`` (the rest of the file is kept).
"""

from __future__ import annotations

import datetime
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_doc_section, write_result  # noqa: E402
from data.cli import ArgumentParser, run_main  # noqa: E402
from evaluation.compare import DELTA_M_METRICS, HEADLINE, delta_m_for_run, headline_metrics, patient_metrics  # noqa: E402
from evaluation.seed_groups import mean_interval  # noqa: E402

DOC_KEY = "quality-seeds"
SAME = ("config", "off_weight", "checkpoint", "delta_m_metrics")
# Per-patient metrics shown (eval/metrics.json 'patient' section, flattened by evaluation.compare).
PATIENT = {
    "patient/threshold/head_mean/mae_db": "patient threshold MAE (dB), head mean",
    "patient/threshold/head_mean/within_10db": "patient threshold within 10 dB, head mean",
    "patient/threshold/rule/within_10db": "patient threshold within 10 dB, wave V rule",
    "patient/type/evidence_sum/macro_f1": "patient type macro-F1, evidence sum",
}


def _overrides(command: str) -> list[str]:
    """The trailing key=value overrides of a quality.py command line (seed, paths, output and the strategy specs,
    ``name:key=value``, left out: seeds may compare different strategies)."""
    return sorted(a for a in shlex.split(command) if "=" in a and not a.startswith("-") and ":" not in a)


def succeeded(r: dict[str, Any]) -> bool:
    """Whether bench/quality.py's run ``r`` trained and was evaluated, in its call or (``--reuse``) an earlier one
    (the statuses bench/quality.py writes: "ok", "ok (reused)", or what failed)."""
    return r.get("status") in ("ok", "ok (reused)")


def first_difference(results: list[tuple[str, dict[str, Any]]], keys: tuple[str, ...]
                     ) -> tuple[str, str, Any, Any] | None:
    """The first result after the first whose value of one of ``keys``, or whose training overrides
    ("overrides", :func:`_overrides`), differ from the first's: (its name, the key, the first's value, its own);
    None when every result agrees. One rule for quality_seeds and ``quality.py --merge``; each words its error."""
    first = results[0][1]
    for name, r in results[1:]:
        for key in keys:
            if r.get(key) != first.get(key):
                return name, key, first.get(key), r.get(key)
        if _overrides(r["command"]) != _overrides(first["command"]):
            return name, "overrides", _overrides(first["command"]), _overrides(r["command"])
    return None


def check_same_experiment(results: list[tuple[str, dict[str, Any]]]) -> None:
    diff, first_name = first_difference(results, SAME), results[0][0]
    if diff is not None:
        name, key, want, got = diff
        if key == "overrides":
            raise ValueError(f"'{name}': expected the overrides {want} as in '{first_name}', found {got}")
        raise ValueError(f"'{name}': expected {key} = {want!r} as in '{first_name}', found {got!r}")
    seeds = [r["seed"] for _, r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"expected one result per seed, found seeds {seeds}")


def _run_dir(run: dict[str, Any]) -> Path:
    """Where quality.py trained ``run``: its command's logging.log_dir / its name."""
    cmd = shlex.split(run["cmd"]) if isinstance(run["cmd"], str) else run["cmd"]
    log_dir = next(a.split("=", 1)[1] for a in cmd if a.startswith("logging.log_dir="))
    return (ROOT / log_dir / run["name"]).resolve()


def load(paths: list[str]) -> list[tuple[str, dict[str, Any]]]:
    results = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise ValueError(f"'{p}': expected a bench/quality.py result (JSON), found no such file")
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"'{p}': expected JSON, found a parse error at line {exc.lineno}") from None
        missing = [k for k in (*SAME, "seed", "command", "runs") if k not in r]
        if missing:
            raise ValueError(f"'{p}': expected a bench/quality.py result, found no {', '.join(missing)}")
        results.append((p, r))
    if len(results) < 2:
        raise ValueError(f"expected the results of at least 2 seeds for an interval, found {len(results)}")
    check_same_experiment(results)
    return results


def _evaluated(run: dict[str, Any], eval_dir: str) -> dict[str, Any] | None:
    """The run's ``EVAL_DIR/metrics.json`` (an ``evaluation.evaluate --out`` folder), None if absent."""
    path = _run_dir(run) / eval_dir / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def aggregate(results: list[tuple[str, dict[str, Any]]], eval_dir: str = "eval",
              clinical: str = "clinical.json") -> dict[str, Any]:
    """{run name: {"kind", "task", "seeds", "failed", "metrics": {column: mean_interval},
    "delta_m": mean_interval | None, "patient": {key: mean_interval}}}. Metrics are read from each
    run's ``EVAL_DIR/metrics.json`` (``eval``: the test split quality.py evaluated; another folder:
    e.g. the validation split) and Δm% is recomputed per seed against that seed's single-task runs.
    A run that failed or has no metrics there counts in "failed". The benchmark cohort's rows come from each
    run's ``CLINICAL`` file (a ``bench/clinical.py --out``); those files must describe one cohort."""
    names = list(dict.fromkeys(run["name"] for _, r in results for run in r["runs"]))
    per_seed: list[dict[str, tuple[dict[str, Any], dict[str, Any]]]] = []  # name -> (run, metrics.json)
    for _, r in results:
        found = {}
        for run in r["runs"]:
            m = _evaluated(run, eval_dir) if succeeded(run) else None
            if m is not None:
                found[run["name"]] = (run, m)
        per_seed.append(found)
    out: dict[str, Any] = {}
    cohorts: dict[str, Path] = {}  # the benchmark cohort's description -> a file that scored it
    for name in names:
        done = [seed[name] for seed in per_seed if name in seed]
        run0 = done[0][0] if done else {}
        splits = sorted({m.get("meta", {}).get("split", "?") for _, m in done})
        entry: dict[str, Any] = {"kind": run0.get("kind"), "task": run0.get("task"), "split": ", ".join(splits),
                                 "seeds": len(done),
                                 "failed": len(per_seed) - len(done), "metrics": {}, "patient": {}, "delta_m": None}
        headline = [headline_metrics(m) for _, m in done]
        for c, *_ in HEADLINE:
            values = [h[c] for h in headline if math.isfinite(h[c])]
            if values:
                entry["metrics"][c] = mean_interval(values)
        if entry["kind"] == "multi":
            dms = []
            for seed in per_seed:
                single = {run["task"]: headline_metrics(m) for run, m in seed.values() if run["kind"] == "single"}
                if name in seed and single:
                    dms.append(delta_m_for_run(headline_metrics(seed[name][1]), single))
            entry["delta_m"] = mean_interval(dms) if dms else None
        entry["patient"] = _patient_means([m for _, m in done])
        # issue 11's benchmark cohort, where bench/clinical.py scored the run (RUN/CLINICAL)
        scored = [_benchmark(p) for p in (_run_dir(run) / clinical for run, _ in done) if p.is_file()]
        cohorts.update({json.dumps(b, sort_keys=True): p for p, b, _ in scored})
        entry["benchmark"] = _patient_means([{"patient": c} for _, _, c in scored])
        out[name] = entry
    if len(cohorts) > 1:
        (a, pa), (b, pb) = list(cohorts.items())[:2]
        raise ValueError(f"{pb}: its benchmark cohort {b} differs from {pa}'s {a}; score every run on one cohort")
    return out


def _benchmark(path: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A bench/clinical.py result: (its path, the cohort's description (patients, seed, domain), its metrics)."""
    r = json.loads(path.read_text(encoding="utf-8"))
    return path, r.get("benchmark", {}), r["cohorts"]["benchmark"]


def _patient_means(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The PATIENT metrics of several metrics.json-shaped dicts (a 'patient' section): mean and interval."""
    values: dict[str, list[float]] = {}
    for m in metrics:
        flat = patient_metrics(m)
        for key in PATIENT:
            if flat.get(key) is not None and flat[key]["value"] is not None:
                values.setdefault(key, []).append(flat[key]["value"])
    return {k: mean_interval(v) for k, v in values.items()}


def _cell(est: dict[str, Any] | None, seeds: int) -> str:
    """mean ± half-width; the number of seeds where fewer than ``seeds`` contributed."""
    if est is None:
        return "—"
    short = f" (n={est['n']})" if est["n"] < seeds else ""
    if est["ci"] is None:
        return f"{est['mean']:.4g}{short}"
    half = (est["ci"][1] - est["ci"][0]) / 2
    return f"{est['mean']:.4g} ± {half:.2g}{short}"


def render(result: dict[str, Any]) -> str:
    runs, seeds = result["runs"], len(result["seeds"])
    columns = [c for c, *_ in HEADLINE if any(c in r["metrics"] for r in runs.values())]
    lines = ["| run | seeds | " + " | ".join(columns) + " | Δm% (↑) |", "|---" * (len(columns) + 3) + "|"]
    for name, r in runs.items():
        own = [DELTA_M_METRICS[r["task"]]] if r["kind"] == "single" else columns  # a single-task run: its task only
        lines.append(f"| {name} | {r['seeds']} | " + " | ".join(_cell(r["metrics"].get(c), seeds) if c in own else "·"
                                                                  for c in columns)
                     + f" | {_cell(r['delta_m'], seeds)} |")
    multi = [n for n, r in runs.items() if r["kind"] == "multi"]
    clinical = result.get("clinical", "clinical.json")
    for section, title in (("patient", f"per patient ({result['eval_dir']}/)"),
                           ("benchmark", f"per patient, benchmark cohort (RUN/{clinical})")):
        rows = [k for k in PATIENT if any(k in runs[n].get(section, {}) for n in multi)]
        if rows:
            lines += ["", f"| {title} | " + " | ".join(multi) + " |", "|---" * (len(multi) + 1) + "|"]
            lines += [f"| {PATIENT[k]} | " + " | ".join(_cell(runs[n][section].get(k), seeds) for n in multi) + " |"
                      for k in rows]
    return "\n".join(lines)


def write_doc(result: dict[str, Any], path: Path, key: str = DOC_KEY) -> None:
    splits = sorted({r["split"] for r in result["runs"].values() if r["seeds"]})
    # the overrides name the scale (e.g. data.synthetic.patients=2000), so tables of two scales differ in title
    overrides = " ".join(_overrides(result["per_seed_commands"][0]))
    body = (f"## Joint training vs single-task, {len(result['seeds'])} seeds, {', '.join(splits)} split"
            + (f" ({overrides})" if overrides else "") + "\n\n"
            f"Command: `{result['command']}`  \n"
            f"Per seed: `{result['per_seed_commands'][0]}` (and the same with each seed)  \n"
            f"Machine: {result['machine']}; date {result['date']}; seeds {result['seeds']}; "
            f"checkpoint `{result['checkpoint']}`; metrics from each run's `{result['eval_dir']}/`.\n\n"
            "Each cell: mean over seeds ± half-width of the 95 % Student-t interval of that mean "
            "(seed-to-seed spread of the whole pipeline, not the test-set sampling error); a single-task "
            "row shows its own task's metric only (the other heads were not trained). Δm% is "
            "higher-is-better (a joint run's mean relative change on each task's own metric against "
            "that task's single-task run of the same seed).\n\n" + render(result) + "\n")
    write_doc_section(path, key, body)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", help="bench/quality.py result JSON files, one per seed")
    p.add_argument("--out", default="bench/results/quality_seeds.json")
    p.add_argument("--eval-dir", default="eval", help="each run's evaluation folder to read (eval: the test split "
                   "quality.py wrote; another: an `evaluation.evaluate --out` folder, e.g. of the val split)")
    p.add_argument("--clinical", default="clinical.json", help="each run's bench/clinical.py result, read for the "
                   "benchmark cohort's rows (one cohort for every run)")
    p.add_argument("--doc", default="docs/results.md", help="Markdown file whose section KEY is written")
    p.add_argument("--doc-key", default=DOC_KEY, help="the section of --doc (default %(default)s)")
    args = p.parse_args(argv)
    return run_main(lambda: _run(args, argv), debug=args.debug)


def _run(args: Any, argv: list[str] | None) -> int:
    results = load(args.results)
    first = results[0][1]
    result = {
        "command": shlex.join(["python", "bench/quality_seeds.py", *(argv if argv is not None else sys.argv[1:])]),
        "per_seed_commands": [r["command"] for _, r in results],
        "machine": first.get("machine"),
        "date": datetime.date.today().isoformat(),
        "seeds": [r["seed"] for _, r in results],
        **{k: first[k] for k in SAME},
        "eval_dir": args.eval_dir,
        "clinical": args.clinical,
        "runs": aggregate(results, args.eval_dir, args.clinical),
    }
    write_result(ROOT / args.out, result)
    print(render(result))
    write_doc(result, ROOT / args.doc, args.doc_key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
