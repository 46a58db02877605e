"""Compare runs: warnings where they were trained or tested on different data, the clinical (per
patient) metrics first, then the per-recording evaluation, the final validation losses, the balancer
weights, and overlaid per-component curves.

    python -m evaluation.compare logs/A logs/B ... --out DIR [--overwrite]
    python -m evaluation.compare logs/sweep --out DIR --group-seeds [--seed-key data.split_seed]

Reads each run's metrics.jsonl (final epoch summary, final weights), config.yaml and
normalization.json (what it was trained on) and, when the run has been evaluated, eval/metrics.json
(test metrics and what they were measured on). Writes DIR/comparison.md, DIR/comparison.json and
DIR/curves.png (``--out`` is required, as for export and predict: a comparison belongs to no one
run, and a shared default folder would collect unrelated comparisons; existing files are replaced
only with --overwrite), prints the table and then where it wrote, and one ``warning:`` line per
difference in data, split or test set. A ``-m`` sweep calls
:func:`compare_runs` at its end.

Clinical metrics are the ``patient/...`` keys of eval/metrics.json (its ``patient`` section,
nested keys joined with ``/``; a leaf is a number or ``{"value": v, "ci": [lo, hi]}``, also
``estimate``/``mean`` with ``lo``/``hi`` or ``ci_low``/``ci_high``) and the ``val/patient/...``
scalars of the last epoch summary. ``val/total`` comes last: it is the balancer's weighted
objective, so it is not comparable across balancers.

A sweep root (``train.py -m``) stands for its runs. ``--group-seeds`` pools runs that differ only in
their seed (:mod:`evaluation.seed_groups`): the curves become each group's mean with a shaded 95 %
Student-t band over seeds, and every table cell the mean ± half-width of that interval with its n.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.cli import ArgumentParser, check_outputs, phase, record_outputs, run_main
from data.jsonable import to_jsonable
from evaluation.metrics import delta_m_percent
from evaluation.plots import CURVE_KEYS, plot_loss_curves
from evaluation.runlog import RunLog, read_run
from evaluation.seed_groups import (
    DATA_SEED_KEYS,
    SEED_KEY,
    SeedGroup,
    expand_sweeps,
    format_value,
    group_runs,
    mean_interval,
    plot_group_curves,
)

PROG = "python -m evaluation.compare"
PHASE = "compare"  # the name its phase lines on stderr start with
OUTPUT_FILES = ("comparison.md", "comparison.json", "curves.png")
# What a run was trained on (config.yaml keys; the synthetic ones only for source=synthetic, the path
# only for source=file) and what it was tested on (eval/metrics.json "meta" keys).
DATA_KEYS = ("data.source", "data.path", "data.synthetic.patients", "data.synthetic.seed")
SPLIT_KEYS = ("data.split", "data.split_seed")
TEST_SET_KEYS = ("split", "n", "n_patients", "cohort", "cohort_seed")
VAL_TOTAL_NOTE = ("val/total is the balancer's weighted objective: it is not comparable across balancers "
                  "(compare the components and the metrics above)")

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


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _estimate(v: Any) -> dict[str, Any] | None:
    """{"value", "ci"} of a metric leaf: a number, or a dict holding a point estimate and maybe an
    interval (see the module docstring); None for anything else."""
    if _number(v) is not None:
        return {"value": _number(v), "ci": None}
    if not isinstance(v, dict):
        return None
    point = next((_number(v[k]) for k in ("value", "estimate", "mean", "point") if _number(v.get(k)) is not None),
                 None)
    if point is None:
        return None
    ci = next((v[k] for k in ("ci", "ci95", "interval") if isinstance(v.get(k), (list, tuple)) and len(v[k]) == 2),
              None)
    for lo, hi in (("lo", "hi"), ("low", "high"), ("ci_low", "ci_high")):
        if ci is None and _number(v.get(lo)) is not None and _number(v.get(hi)) is not None:
            ci = (v[lo], v[hi])
    ci = [_number(c) for c in ci] if ci is not None else None
    return {"value": point, "ci": ci if ci and None not in ci else None}


def patient_metrics(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-patient (clinical) metrics of one eval/metrics.json: ``patient/...`` -> {"value", "ci"}."""
    out: dict[str, dict[str, Any]] = {}

    def walk(prefix: str, v: Any) -> None:
        est = _estimate(v)
        if est is not None:
            out[prefix] = est
        elif isinstance(v, dict):
            for k, sub in v.items():
                walk(f"{prefix}/{k}", sub)

    for k, v in m.items():
        if k.startswith("patient/"):
            walk(k, v)
    if isinstance(m.get("patient"), dict):
        walk("patient", m["patient"])
    return out


def summarize_run(run: RunLog, label: str | None = None) -> dict[str, Any]:
    last = run.last_epoch_scalars()
    ev = run.eval_metrics()
    return {
        "run": label or run.name,
        "path": str(run.run_dir),
        "patient": patient_metrics(ev) if ev else {},
        "val_patient": {k: v for k, v in last.items() if k.startswith("val/patient/")},
        "final_epoch": {k: v for k, v in last.items() if k.startswith(("train/", "val/"))},
        "final_weights": {run.weight_labels()[k]: v for k, v in run.final_weights().items()},
        "eval": headline_metrics(ev) if ev else None,
        "flags": ev.get("flags", []) if ev else None,
        "skipped_lines": run.skipped_lines,
    }


# --------------------------------------------------------------------------------------------
# were the runs trained and tested on the same data?


def _dotted(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def run_facts(run: RunLog) -> tuple[dict[str, Any], list[str]]:
    """What ``run`` was trained and tested on (config.yaml data keys, normalization statistics, the
    eval meta), and a warning for each file that could not tell."""
    from data.schema import read_yaml

    facts: dict[str, Any] = {}
    warnings: list[str] = []
    cfg_path, norm_path = run.run_dir / "config.yaml", run.run_dir / "normalization.json"
    if not cfg_path.is_file():
        warnings.append(f"run {run.name}: no config.yaml, so its data and split cannot be compared")
    else:
        try:
            cfg = read_yaml(cfg_path)
        except ValueError as exc:
            warnings.append(f"run {run.name}: {exc}; its data and split cannot be compared")
            cfg = {}
        source = _dotted(cfg, "data.source")
        for key in (*DATA_KEYS, *SPLIT_KEYS):
            irrelevant = ((key.startswith("data.synthetic.") and source != "synthetic")
                          or (key == "data.path" and source != "file"))
            if irrelevant:
                continue
            if (value := _dotted(cfg, key)) is not None:
                facts[key] = value
    if norm_path.is_file():
        try:
            stats = json.loads(norm_path.read_text(encoding="utf-8"))
            # the mode is a choice; the static spans were added later (older runs lack them: no difference to flag)
            facts["normalization"] = {k: v for k, v in stats.items()
                                      if k not in ("normalization", "static_min", "static_max",
                                                   "threshold_min", "threshold_max")}
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            warnings.append(f"run {run.name}: normalization.json is not a JSON object; its training data cannot be "
                            f"compared")
    elif cfg_path.is_file():
        warnings.append(f"run {run.name}: no normalization.json, so its training data cannot be compared")
    meta = (run.eval_metrics() or {}).get("meta") or {}
    for key in TEST_SET_KEYS:
        if key in meta:
            facts[f"eval.{key}"] = meta[key]
    return facts, warnings


def _same(a: Any, b: Any) -> bool:
    if _number(a) is not None and _number(b) is not None:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def data_warnings(names: list[str], facts: list[dict[str, Any]]) -> list[str]:
    """One line per fact on which the runs disagree (runs that lack the fact are left out of it)."""
    lines = []
    for key in dict.fromkeys(k for f in facts for k in f):
        groups: list[tuple[Any, list[str]]] = []
        for name, f in zip(names, facts, strict=True):
            if key not in f:
                continue
            for value, members in groups:
                if _same(value, f[key]):
                    members.append(name)
                    break
            else:
                groups.append((f[key], [name]))
        if len(groups) < 2:
            continue
        if key == "normalization":
            who = "; ".join(", ".join(m) for _v, m in groups)
            lines.append(f"the runs' normalization statistics differ ({who}): they were trained on different "
                         f"recordings")
            continue
        who = "; ".join(f"{json.dumps(v, ensure_ascii=False)} in {', '.join(m)}" for v, m in groups)
        what = ("tested on different test sets" if key.startswith("eval.")
                else "split differently" if key in SPLIT_KEYS else "trained on different data")
        lines.append(f"the runs were {what}: {key} is {who}")
    return lines


# --------------------------------------------------------------------------------------------
# tables


def _f(v: Any) -> str:
    """A number, or a seed group's {"mean", "half_width", "n"} as ``0.3 ± 0.012 (n=3)``."""
    if isinstance(v, dict):
        if v["mean"] is None:
            return "—"
        half = v["half_width"]
        if not half:  # one run (None), or seeds that agree exactly (0)
            return f"{_f(v['mean'])}{'' if half is None else ' ± 0'} (n={v['n']})"
        digits = min(max(1 - math.floor(math.log10(half)), 0), 8)  # the ± to two significant digits, the mean alike
        return f"{v['mean']:.{digits}f} ± {half:.{digits}f} (n={v['n']})"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4g}"


def _fci(est: dict[str, Any] | None) -> str:
    if est is None or "mean" in est:
        return _f(est)
    ci = est.get("ci")
    return _f(est["value"]) + (f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else "")


def render_markdown(rows: list[dict[str, Any]], warnings: Sequence[str] = (),
                    grouping: dict[str, Any] | None = None) -> str:
    """The comparison as markdown; with ``grouping`` (compare_runs' JSON "grouping") ``rows`` are seed
    groups and every cell a mean ± half-width (n)."""
    lines = ["# Run comparison", ""]
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    if grouping is not None:
        lines += _group_section(rows, grouping)
    unit = "group" if grouping is not None else "run"
    runs = [r["run"] for r in rows]
    lines += ["## Clinical metrics (per patient)", ""]
    patient = list(dict.fromkeys(k for r in rows for k in r["patient"]))
    val_patient = list(dict.fromkeys(k for r in rows for k in r["val_patient"]))
    if patient or val_patient:
        lines += ["| metric | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
        lines += [f"| {k} | " + " | ".join(_fci(r["patient"].get(k)) for r in rows) + " |" for k in patient]
        lines += [f"| {k} | " + " | ".join(_f(r["val_patient"].get(k)) for r in rows) + " |" for k in val_patient]
        lines.append("")
        if patient and grouping is not None:
            lines += ["patient/: test metrics from eval/metrics.json, mean over seeds (each run's interval over "
                      "patients is in its own eval/metrics.json); val/patient/: the last validation.", ""]
        elif patient:
            lines += ["patient/: test metrics from eval/metrics.json, [95 % interval] where it has one; "
                      "val/patient/: the last validation.", ""]
    else:
        lines += ["No per-patient metrics in these runs (evaluate them with `python -m evaluation.evaluate`).", ""]
    lines += ["## Evaluation per recording (eval/metrics.json)", ""]
    cols = [h[0] for h in HEADLINE]
    lines += [f"| {unit} | " + " | ".join(cols) + " | flags |", "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        ev = r["eval"] or {}
        flags = "not evaluated" if r["flags"] is None else str(len(r["flags"]))
        lines.append("| " + r["run"] + " | " + " | ".join(_f(ev.get(c)) for c in cols) + f" | {flags} |")
    lines += ["", "## Final validation losses (last epoch summary)", ""]
    keys = [f"val/{k}" for k in CURVE_KEYS if k != "total"] + ["val/total"]
    lines += [f"| {unit} | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + r["run"] + " | " + " | ".join(_f(r["final_epoch"].get(k)) for k in keys) + " |" for r in rows]
    lines += ["", VAL_TOTAL_NOTE + "."]
    names = list(dict.fromkeys(k for r in rows for k in r["final_weights"]))  # weight index order
    lines += ["", "## Final balancer weights", ""]
    if names:
        lines += [f"| {unit} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += ["| " + r["run"] + " | " + " | ".join(_f(r["final_weights"].get(n)) for n in names) + " |"
                  for r in rows]
    else:
        lines.append("No weight records in these runs.")
    lines += ["", "![curves](curves.png)", ""]
    return "\n".join(lines)


def _group_section(rows: list[dict[str, Any]], grouping: dict[str, Any]) -> list[str]:
    differ = ", ".join(grouping["group_keys"]) or "nothing (one group)"
    lines = ["## Seed groups", "",
             f"Runs whose config.yaml differ only in {', '.join(grouping['seed_keys'])} form one group; the groups "
             f"differ in {differ}. Each cell below is the mean over the group's runs ± the half-width of the 95 % "
             f"Student-t interval over seeds, with n (the runs that have the value); n=1 has no interval.", "",
             "| group | settings | n | runs (seeds) |", "|---|---|---|---|"]
    for r in rows:
        settings = "; ".join(f"{k}={format_value(v)}" for k, v in r["settings"].items()) or "—"
        members = ", ".join(f"{name} ({', '.join(f'{k}={v}' for k, v in seed.items())})"
                            for name, seed in zip(r["runs"], r["seeds"], strict=True))
        lines.append(f"| {r['group']} | {settings} | {r['n']} | {members} |")
    return [*lines, ""]


def summarize_group(rows: list[dict[str, Any]], g: SeedGroup) -> dict[str, Any]:
    """One table row for seed group ``g`` from its runs' :func:`summarize_run` rows: every number
    becomes mean_interval over the runs that have it."""
    members = [rows[i] for i in g.members]

    def pooled(section: str, value=lambda v: v) -> dict[str, Any]:
        keys = dict.fromkeys(k for r in members for k in (r[section] or {}))
        return {k: mean_interval([value(r[section][k]) for r in members if k in (r[section] or {})]) for k in keys}

    evaluated = [r for r in members if r["flags"] is not None]
    return {"run": g.legend(), "group": g.label, "settings": g.settings, "n": g.n,
            "runs": [r["run"] for r in members], "seeds": g.seeds,
            "patient": pooled("patient", lambda est: est["value"]), "val_patient": pooled("val_patient"),
            "final_epoch": pooled("final_epoch"), "final_weights": pooled("final_weights"),
            "eval": pooled("eval") if evaluated else None,
            "flags": sorted({f for r in evaluated for f in r["flags"]}) if evaluated else None,
            "skipped_lines": sum(r["skipped_lines"] for r in members)}


def _labels(runs: list[RunLog]) -> list[str]:
    """Each run's name, or its path where two runs share a name (sweeps in different folders)."""
    names = [r.name for r in runs]
    return [r.name if names.count(r.name) == 1 else str(r.run_dir) for r in runs]


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, group_seeds: bool = False,
                 seed_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Write comparison.md, comparison.json and curves.png into ``out_dir``; return the JSON dict
    (its ``warnings`` say where the runs' data, split or test set differ). A sweep root stands for
    its runs. ``group_seeds``: pool runs that differ only in ``seed`` and ``seed_keys`` (JSON
    "grouping"; tables and curves per group)."""
    if not run_dirs:
        raise ValueError("compare_runs: expected at least one run directory, found none")
    run_dirs, warnings = expand_sweeps(run_dirs)
    seen: dict[Path, str] = {}
    for d in run_dirs:
        if Path(d).resolve() in seen:
            raise ValueError(f"runs: '{d}' is given twice (as '{seen[Path(d).resolve()]}' too)")
        seen[Path(d).resolve()] = str(d)
    runs = [read_run(d) for d in run_dirs]
    labels = _labels(runs)
    rows = [summarize_run(r, label) for r, label in zip(runs, labels, strict=True)]
    pooled = [SEED_KEY, *dict.fromkeys(k for k in seed_keys if k != SEED_KEY)] if group_seeds else []
    facts = [run_facts(r) for r in runs]
    warnings += [w for _f, ws in facts for w in ws] + data_warnings(labels, [_unpooled(f, pooled) for f, _w in facts])
    warnings += [f"run {label}: {r.skipped_lines} line(s) of metrics.jsonl unreadable and skipped (a run still "
                 f"writing, or a damaged file)" for r, label in zip(runs, labels, strict=True) if r.skipped_lines]
    if group_seeds:  # before anything is written: a run without config.yaml stops here
        groups, group_keys, group_warnings = group_runs([r.run_dir for r in runs], labels, pooled)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"warnings": warnings, "runs": rows, "val_total_note": VAL_TOTAL_NOTE,
              "headline": [{"column": c, "higher_is_better": up} for c, _t, _k, up in HEADLINE]}
    # progress once every input has been read and checked: a refused input stays one line
    what = f"{len(groups)} seed group(s) of " if group_seeds else ""
    with phase(PHASE, f"drawing the curves of {what}{len(runs)} run(s)"):
        if group_seeds:
            _path, curve_warnings = plot_group_curves(runs, groups, group_keys, out_dir / "curves.png")
            warnings += group_warnings + curve_warnings
            result["grouping"] = {"seed_keys": pooled, "group_keys": group_keys,
                                  "groups": [summarize_group(rows, g) for g in groups]}
        else:
            plot_loss_curves(runs, out_dir / "curves.png")
    (out_dir / "comparison.json").write_text(json.dumps(to_jsonable(result), indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    grouping = result.get("grouping")
    (out_dir / "comparison.md").write_text(render_markdown(grouping["groups"] if grouping else rows, warnings,
                                                           grouping), encoding="utf-8")
    return result


def _unpooled(facts: dict[str, Any], pooled: Sequence[str]) -> dict[str, Any]:
    """The data facts left to compare once ``pooled`` seed keys are meant to vary: a pooled data seed
    changes the recordings, so the normalization statistics are expected to differ too."""
    data_pooled = any(k in DATA_SEED_KEYS for k in pooled)
    return {k: v for k, v in facts.items() if k not in pooled and not (data_pooled and k == "normalization")}


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (logs/EXP), or a sweep root (train.py -m) for its runs")
    p.add_argument("--out", required=True, help="output folder (made if absent), e.g. logs/compare_A_B")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in --out")
    p.add_argument("--group-seeds", action="store_true",
                   help="pool runs whose config.yaml differ only in their seed: per group the mean curve with a "
                   "shaded 95 %% band (Student t over seeds), n in the legend ('famo (n=3 seeds)'), and mean ± "
                   "half-width of that interval with n in the tables; groups are labelled by the config keys that "
                   "differ between them")
    p.add_argument("--seed-key", action="append", default=[], choices=DATA_SEED_KEYS, metavar="KEY",
                   help=f"with --group-seeds: a data seed that also varies within a group "
                   f"({', '.join(DATA_SEED_KEYS)}; repeat for both); '{SEED_KEY}' always does")
    args = p.parse_args(argv)
    if args.seed_key and not args.group_seeds:
        p.error(f"--seed-key {args.seed_key[0]}: only with --group-seeds (it says which keys count as seeds "
                f"within a group)")
    return run_main(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_outputs([out / name for name in OUTPUT_FILES], overwrite=args.overwrite, inputs=args.runs, owner=PROG)
    result = compare_runs(args.runs, out, group_seeds=args.group_seeds, seed_keys=args.seed_key)
    record_outputs([out / name for name in OUTPUT_FILES], PROG)
    print((out / "comparison.md").read_text(encoding="utf-8"))
    print(f"wrote {', '.join(str(out / name) for name in OUTPUT_FILES)}")
    for line in result["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
