"""Evaluate one checkpoint of a run: metrics.json, figures and report.md under ``logs/EXP/eval/``.

    python -m evaluation.evaluate --run logs/EXP [--checkpoint best|last] [--split test]
        [--single-task class=logs/EXP_class_only ...] [--no-generate] [--gen-n 32]
        [--sampler ddim --steps 50 --eta 0 --guidance 1.0] [--device auto] [--seed 0]

Sampling settings default to the run's own (its ``diffusion`` config section), as in
``evaluation.generate``. The data split is rebuilt from the run's own config (``data.dataset.build_data``), so the split
and the normalization are the ones the run trained with. Trivial baselines are fitted on the train
split. ``--single-task TASK=RUN`` puts the metrics of a run trained on TASK alone (evaluated first,
on the same split) beside the model's.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from data.cli import ArgumentParser, check_number, number, phase, refuse_unsafe_output, resolve_device, run_main
from data.jsonable import to_jsonable
from data.stats import DataStats
from evaluation import plots
from evaluation.calibration import markdown as calibration_markdown
from evaluation.collect import (
    DEFAULT_SNR_LEVELS_DB,
    MODERATE_SNR_DB,
    GenerateFn,
    class_examples,
    collect,
    collect_train_targets,
    generate_conditions,
)
from evaluation.generate import MAX_BATCH_SIZE, MAX_SEED, add_sampling_flags
from evaluation.patient import flags as patient_flags
from evaluation.patient import markdown
from evaluation.report import compute_metrics, write_report
from evaluation.runlog import read_eval_metrics, read_run
from training.components import CLASS_NAMES, COMPONENTS
from training.series import extract, load_series, majority_type, patient_metrics

PROG = "evaluate"  # the name its phase lines on stderr start with


def evaluate(
    model: torch.nn.Module,
    diffusion,
    stats: DataStats,
    train_ds,
    eval_ds,
    out_dir: str | Path,
    *,
    class_names: tuple[str, ...] = CLASS_NAMES,
    generate_fn: GenerateFn | None = None,
    run_dir: str | Path | None = None,
    meta: dict[str, Any] | None = None,
    single_task: dict[str, Any] | None = None,
    snr_levels_db: Sequence[float] = DEFAULT_SNR_LEVELS_DB,
    gen_n: int = 32,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    figures: bool = True,
    series_net: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Collect, score, plot and write. Returns the metrics dict (also in ``out_dir/metrics.json``).

    ``generate_fn`` (``evaluation.generate.generate``) is optional: without it the generation
    metrics and the generated waveforms are left out.
    """
    out_dir = Path(out_dir)
    with phase(PROG, f"scoring {len(eval_ds)} recordings, clean and at {len(snr_levels_db)} noise levels"):
        col = collect(model, diffusion, eval_ds, stats, snr_levels_db=snr_levels_db, batch_size=batch_size,
                      device=device, seed=seed)
    train = collect_train_targets(train_ds)
    gen_kw = {"sampler": sampler, "steps": steps, "guidance": guidance, "seed": seed}
    conditions = None
    if generate_fn is not None:
        with phase(PROG, f"generating {gen_n} signals per condition ({sampler}, {steps} steps, guidance {guidance:g})"):
            conditions = generate_conditions(generate_fn, model, diffusion, stats, col, n=gen_n, **gen_kw)
    m = compute_metrics(col, train, stats, class_names, conditions, single_task)
    m["meta"].update(meta or {})
    m["meta"]["snr_levels_db"] = list(snr_levels_db)
    m["meta"]["generation"] = gen_kw | {"n_per_condition": gen_n} if generate_fn is not None else "not run"
    m["meta"]["sampler"] = describe_sampler(m["meta"]["generation"], m["meta"].get("sampling") or {})
    written: list[str] = []
    if figures:
        written = _figures(m, col, generate_fn, model, diffusion, stats, class_names, run_dir, out_dir, gen_kw)
    title = f"Evaluation report: {Path(run_dir).name}" if run_dir is not None else "Evaluation report"
    patient, ev = _patient_section(m, model, train_ds, eval_ds, class_names, series_net, device=device, seed=seed)
    cal = calibration_section(ev, series_net, run_dir, out_dir if figures else None, seed)
    m["calibration"] = to_jsonable({k: v for k, v in cal.items() if k != "reliability"})
    written += [str(out_dir / "reliability.png")] if figures else []
    write_report(m, out_dir, title, [str(p) for p in written],
                 sections=markdown(patient, class_names) + calibration_markdown(cal))
    return m


def _patient_section(m: dict[str, Any], model: torch.nn.Module, train_ds, eval_ds, class_names: tuple[str, ...],
                     series_net: torch.nn.Module | None, *, device: str | torch.device, seed: int) -> tuple[Any, Any]:
    """Per patient (series): the run's series model beside the rule and the per-recording baselines, into
    ``m["patient"]`` and its flags; returns (patient metrics, the split's evidence)."""
    with phase(PROG, "scoring per patient (series)"):
        ev = extract(model, eval_ds, device=device)
        patient = patient_metrics(model, eval_ds, n_classes=len(class_names), majority_type=majority_type(train_ds),
                                  series_net=series_net, device=device, seed=seed, evidence=ev)
    m["patient"] = to_jsonable(patient)
    m["flags"] += patient_flags(m["patient"], class_names)
    return patient, ev


def calibration_section(ev: Any, series_net: torch.nn.Module | None, run_dir: str | Path | None,
                        figure_dir: Path | None, seed: int) -> dict[str, Any]:
    """ECE and interval coverage, raw and with the run's calibration.json (evaluation/calibration.py), and
    the reliability diagrams (``figure_dir/reliability.png`` unless None)."""
    from evaluation.calibration import Calibration, calibration_metrics, plot_reliability

    cal = Calibration.load(run_dir) if run_dir is not None else None
    with phase(PROG, "measuring calibration" + ("" if cal is not None else " (the run has no calibration.json)")):
        m = calibration_metrics(ev, series_net, cal, seed=seed)
        if figure_dir is not None:
            figure_dir.mkdir(parents=True, exist_ok=True)
            plot_reliability(m["reliability"], figure_dir / "reliability.png")
    return m | {"temperatures": asdict(cal) if cal is not None else "none (python -m evaluation.trust --run RUN)"}


def _figures(m: dict[str, Any], col: Any, generate_fn: GenerateFn | None, model: torch.nn.Module, diffusion: Any,
             stats: DataStats, class_names: tuple[str, ...], run_dir: str | Path | None, out_dir: Path,
             gen_kw: dict[str, Any]) -> list[str]:
    """The report's figures (confusion, scatter, waveforms; loss curves and weights from the run's log)."""
    with phase(PROG, "drawing the figures"):
        moderate = min(range(len(col.levels)), key=lambda i: abs(col.levels[i].snr_db - MODERATE_SNR_DB), default=0)
        examples = class_examples(col, len(class_names), generate_fn, model, diffusion, stats, level_index=moderate,
                                  **gen_kw)
        written = [
            plots.plot_confusion(m["class"]["model"]["confusion_matrix"], class_names, out_dir / "confusion.png"),
            plots.plot_scatter(col, out_dir / "scatter.png"),
            plots.plot_waveforms(examples, class_names, col.units, out_dir / "waveforms.png"),
        ]
        if run_dir is not None and (Path(run_dir) / "metrics.jsonl").is_file():
            log = read_run(run_dir)
            if log.skipped_lines:  # the curves leave them out: say so, as compare does
                print(f"warning: {Path(run_dir) / 'metrics.jsonl'}: {log.skipped_lines} line(s) unreadable and "
                      f"skipped (a run still writing, or a damaged file); the loss curves leave them out",
                      file=sys.stderr)
            written += [plots.plot_loss_curves([log], out_dir / "loss_curves.png"),
                        plots.plot_weights(log, out_dir / "weights.png")]
    return written


def describe_sampler(generation: dict[str, Any] | str, sampling: dict[str, Any]) -> str:
    """"ddim, 50 steps, eta 0, clip 1, guidance 2, seed 0, 32 signals per condition" (or why none ran)."""
    if not isinstance(generation, dict):
        return "generation not run (--no-generate): no sampler used"
    g = generation | sampling
    extra = "".join(f", {k} {g[k]:g}" if isinstance(g[k], (int, float)) else f", {k} {g[k]}"
                    for k in ("eta", "clip") if k in g)
    return (f"{g['sampler']}, {g['steps']} steps{extra}, guidance {g['guidance']:g}, seed {g['seed']}, "
            f"{g['n_per_condition']} signals per condition")


def describe_data(data_cfg: Any) -> str:
    """What the run was trained and is evaluated on, in one line: the generator and its settings, or the file."""
    split = f"patient split {data_cfg.split} (split seed {data_cfg.split_seed})"
    if data_cfg.source == "file":
        return f"file {data_cfg.path}; {split}"
    syn = data_cfg.synthetic
    return (f"synthetic (data/synthetic.py: {syn.patients} patients, generator seed {syn.seed}, domain {syn.domain}); "
            f"{split}")


def evaluation_scalars(m: dict[str, Any], split: str) -> dict[str, float]:
    """The numbers logged back into the run: ``{split}/patient/...`` under the names validation uses
    for val/patient/* (the rule's threshold, the summed evidence's type, wave V, per wave), the series
    model's under ``{split}/patient/series_model/...`` when the run has one, and the per-recording
    headline ``{split}/<task>/<metric>``. Undefined (nan, None) values are left out."""
    p = m.get("patient") or {}
    same_as_val = {"threshold": p.get("threshold", {}).get("rule", {}),
                   "type": {k: v for k, v in p.get("type", {}).get("evidence_sum", {}).items()
                            if k in ("macro_f1", "balanced_accuracy")},
                   "wave_v": p.get("wave_v", {}), "waves": p.get("waves", {}),
                   "series_model": {"threshold": p.get("threshold", {}).get("series_model", {}),
                                    "type": {k: v for k, v in p.get("type", {}).get("series_model", {}).items()
                                             if k in ("macro_f1", "balanced_accuracy")}}}
    out = _point_values(same_as_val, f"{split}/patient")
    for task, key in (("class", "macro_f1"), ("class", "balanced_accuracy"), ("peak_exist", "f1"),
                      ("peak_latency", "mae"), ("peak_amplitude", "mae"), ("threshold", "mae"), ("threshold", "r2")):
        out[f"{split}/{task}/{key}"] = (m.get(task) or {}).get("model", {}).get(key)
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _point_values(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{"a": {"value": 1, "ci": [..]}, "b": {...}} -> {"prefix/a": 1, ...} (metrics.json's estimates)."""
    out: dict[str, Any] = {}
    for key, v in tree.items():
        if isinstance(v, dict) and "value" in v:
            out[f"{prefix}/{key}"] = v["value"]
        elif isinstance(v, dict):
            out.update(_point_values(v, f"{prefix}/{key}"))
    return out


def log_back(run_dir: str | Path, logging_cfg: Any, scalars: dict[str, float], step: int) -> None:
    """The evaluation's scalars into the run's TensorBoard and W&B runs (as the run configured them),
    one line each; a failure there is a warning: metrics.json and report.md are written already."""
    from training.callbacks.tensorboard_logger import log_evaluation as tb_log
    from training.callbacks.wandb_logger import log_evaluation as wandb_log

    if logging_cfg.use_tensorboard:
        try:
            print(f"logged {len(scalars)} metrics to {tb_log(run_dir, scalars, step)} at step {step} "
                  "(TensorBoard: the run's HParams row and scalars)")
        except OSError as exc:
            print(f"warning: TensorBoard: could not log the evaluation into the run ({exc})", file=sys.stderr)
    if logging_cfg.use_wandb:
        try:
            run_id = wandb_log(run_dir, logging_cfg.wandb, scalars, step)
        except Exception as exc:  # noqa: BLE001 (W&B never fails an evaluation that is written)
            print(f"warning: W&B: could not log the evaluation into the run ({exc})", file=sys.stderr)
        else:
            if run_id:
                print(f"logged {len(scalars)} metrics to W&B run {run_id} ({logging_cfg.wandb.mode}) at step {step}")


def summary_line(m: dict[str, Any]) -> str:
    """One line of facts for the console: the numbers the acceptance criteria of issue 8 name."""
    cls = m["class"]["model"]
    recalls = ", ".join(f"{n} {r:.2f}" for n, r, s in zip(m["meta"]["class_names"], cls["recall"], cls["support"],
                                                          strict=True) if s > 0)
    lv = min(m["denoising"], key=lambda lv: abs(lv["snr_db"] - MODERATE_SNR_DB), default=None)
    denoise = f"denoising r at {lv['snr_db']:g} dB {lv['model']['pearson_r']:.3f}" if lv else "no denoising"
    return (f"recall per class: {recalls} | threshold R² {m['threshold']['model']['r2']:.3f} | "
            f"wave V F1 {m['peak_exist']['model']['f1']:.3f} | {denoise} | {len(m['flags'])} flags"
            + patient_line(m))


def patient_line(m: dict[str, Any]) -> str:
    """The per-patient headline: the series model's answers when the run has one, else the rule's."""
    p = m.get("patient")
    if not p:
        return ""
    thr = p["threshold"].get("series_model") or p["threshold"]["rule"]
    typ = p["type"].get("series_model") or p["type"]["evidence_sum"]
    who = "series model" if "series_model" in p["threshold"] else "rule / summed evidence"
    return (f"\nper patient ({who}, {p['n_series']} series): threshold within ±10 dB "
            f"{thr['within_10db']['value']:.3f}, ±5 dB {thr['within_5db']['value']:.3f}; "
            f"type macro-F1 {typ['macro_f1']['value']:.3f}")


def load_single_task(spec: str) -> tuple[str, Any]:
    """``"TASK=RUN_DIR"`` -> (task, that run's metrics block for TASK) from RUN_DIR/eval/metrics.json."""
    task, sep, run = spec.partition("=")
    if not sep or task not in COMPONENTS:
        raise ValueError(f"--single-task: expected TASK=RUN_DIR with TASK one of {list(COMPONENTS)}, found '{spec}'")
    path = Path(run) / "eval" / "metrics.json"
    if not path.is_file():
        raise ValueError(f"--single-task {task}: expected {path} (evaluate that run first), found none")
    m = read_eval_metrics(path)
    block = m.get("denoising") if task == "signal" else (m.get(task) or {}).get("model")
    if not block:
        what = "denoising" if task == "signal" else f"{task}.model"
        raise ValueError(f"--single-task {task}: expected a '{what}' section in {path}, found none")
    return task, block


MAX_GEN_N = 10_000  # signals generated per condition
MAX_SNR_LEVELS = 32
SNR_LIMIT_DB = 60.0  # |diffusion SNR| of a denoising level; beyond it the level is pure signal or pure noise


def parse_snr_levels(text: str) -> list[float]:
    """argparse type of --snr-levels: comma-separated finite dB values within ±SNR_LIMIT_DB."""
    parts = [s for s in text.split(",") if s.strip()]
    if not parts or len(parts) > MAX_SNR_LEVELS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_SNR_LEVELS} comma-separated numbers "
                                          f"(MAX_SNR_LEVELS), found '{text}'")
    try:
        return [check_number("", s, ge=-SNR_LIMIT_DB, le=SNR_LIMIT_DB, limit="SNR_LIMIT_DB") for s in parts]
    except ValueError as exc:
        each = str(exc).removeprefix(": expected ")
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, each {each}") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m evaluation.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory, e.g. logs/EXP")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--single-task", action="append", default=[], metavar="TASK=RUN",
                   help="a run trained on TASK alone, already evaluated (repeatable)")
    p.add_argument("--snr-levels", type=parse_snr_levels, default=list(DEFAULT_SNR_LEVELS_DB),
                   help="denoising noise levels, diffusion SNR in dB, comma-separated")
    p.add_argument("--no-generate", action="store_true", help="skip the generation metrics (faster)")
    p.add_argument("--gen-n", type=number(int, ge=1, le=MAX_GEN_N, limit="MAX_GEN_N"), default=32,
                   help="signals generated per condition")
    add_sampling_flags(p)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=number(int, ge=0, le=MAX_SEED, limit="MAX_SEED"), default=0)
    p.add_argument("--batch-size", type=number(int, ge=1, le=MAX_BATCH_SIZE, limit="MAX_BATCH_SIZE"), default=256)
    p.add_argument("--out", default=None, help="output folder (default: RUN/eval)")
    args = p.parse_args(argv)
    return run_main(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    levels = args.snr_levels
    single_task = dict(load_single_task(s) for s in args.single_task)

    # imported here: the CLI needs the whole stack, evaluate() does not
    from training.checkpoint import describe_position, load_run

    device = resolve_device(args.device)
    if args.out is not None:  # its own run's eval/ is the default; never another run's directory
        refuse_unsafe_output(Path(args.out) / "metrics.json", "--out", own_run=args.run)
    loaded = load_run(args.run, which=args.checkpoint)  # seconds; its errors stay one line
    model = loaded.model.to(device).eval()
    diffusion = loaded.diffusion.to(device) if isinstance(loaded.diffusion, torch.nn.Module) else loaded.diffusion
    from data.dataset import build_data
    from evaluation.generate import generate, sampling_settings

    kw = sampling_settings(loaded.diffusion, args)  # flags checked against the run before the data is built
    with phase(PROG, "rebuilding the run's data and split"):
        bundle = build_data(loaded.cfg.data, loaded.cfg.loss.class_weights)
    if len(getattr(bundle, args.split)) == 0:
        raise ValueError(f"--split {args.split}: the run's {args.split} split has no recordings")
    # generate_fn's positional contract (collect.GenerateFn) has no eta/clip: bind them here
    generate_fn = None if args.no_generate else functools.partial(generate, eta=kw["eta"], clip=kw["clip"],
                                                                  lowpass_hz=kw["lowpass_hz"],
                                                                  guidance_sigma_min=kw["guidance_sigma_min"])
    m = evaluate(
        model, diffusion, loaded.stats, bundle.train, getattr(bundle, args.split), args.out or Path(args.run) / "eval",
        generate_fn=generate_fn, run_dir=args.run, single_task=single_task, snr_levels_db=levels,
        meta={"run": str(args.run), "checkpoint": f"{args.checkpoint} ({describe_position(loaded.checkpoint)})",
              "split": args.split, "data": describe_data(loaded.cfg.data),
              "sampling": {k: kw[k] for k in ("eta", "clip", "lowpass_hz", "guidance_sigma_min")}},
        gen_n=args.gen_n, sampler=kw["sampler"], steps=kw["steps"], guidance=kw["guidance"], seed=args.seed,
        batch_size=args.batch_size, device=device, figures=not args.no_figures,
        series_net=load_series(args.run),
    )
    out = Path(args.out or Path(args.run) / "eval")
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    if args.out is None:  # the run's own evaluation: its TensorBoard (and W&B) run shows it beside training
        log_back(args.run, loaded.cfg.logging, evaluation_scalars(m, args.split), int(loaded.checkpoint["step"]))
    print(summary_line(m))
    for flag in m["flags"]:
        print(f"FLAG: {flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
