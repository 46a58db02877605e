"""Export a trained run for use elsewhere: the weights as safetensors, the resolved config, the
normalization statistics and a short model card.

    python -m evaluation.export --run logs/EXP [--checkpoint best|last] --out DIR [--overwrite]

writes

    DIR/model.safetensors    the EMA weights when the run has them, else the model's (state_dict names;
                             the header's metadata says which, and the run, checkpoint, epoch and step)
    DIR/config.yaml          the resolved config (``python train.py --config DIR/config.yaml`` retrains it)
    DIR/normalization.json   the training split's statistics (data.stats.DataStats)
    DIR/MODEL_CARD.md        data, metrics (with intervals where eval/metrics.json has them), intended use, limits
    DIR/run.json             the run's provenance, copied when the run has one

Existing files in DIR are replaced only with ``--overwrite``, and only those an earlier export wrote
(``DIR/.outputs.json`` lists them); DIR is never inside another run's directory. :func:`load_exported` rebuilds the
model from DIR with nothing but these files (no checkpoint, no pickle).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from data.cli import ArgumentParser, check_outputs, record_outputs, run_main

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "MODEL_CARD.md"
FORMAT_NAME = "abr-diffusion-weights"
FORMAT_VERSION = 1
PROG = "python -m evaluation.export"


def export_run(run_dir: str | Path, out_dir: str | Path, which: str = "best", overwrite: bool = False) -> list[Path]:
    """Write the export of ``run_dir`` (its ``which`` checkpoint) into ``out_dir``; return the files."""
    from safetensors.torch import save_file

    from data.files import new_file_mode
    from data.schema import to_dict
    from training.checkpoint import epochs_done, load_run

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: '{out_dir}' is a file, expected a folder")
    if out_dir.resolve() == run_dir.resolve():
        raise ValueError(f"--out: expected a folder other than the run directory '{run_dir}'")
    provenance = run_dir / "run.json"
    names = [WEIGHTS_FILE, "config.yaml", "normalization.json", CARD_FILE] + (["run.json"] if provenance.is_file()
                                                                              else [])
    check_outputs([out_dir / n for n in names], overwrite=overwrite, own_run=run_dir, owner=PROG)
    loaded = load_run(run_dir, which=which)
    state = loaded.checkpoint
    weights = "ema" if state.get("ema") else "model"  # load_run put these into the model
    tensors = {k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "weights": weights, "run": run_dir.name,
            "checkpoint": which, "epochs_done": str(epochs_done(state)),
            "step": str(state["step"])}

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata=meta)
    os.chmod(out_dir / WEIGHTS_FILE, new_file_mode())  # safetensors writes 0o600, whatever the umask
    import yaml

    (out_dir / "config.yaml").write_text(
        f"# Resolved config of run '{run_dir.name}' (exported): `python train.py --config <this file>` retrains it.\n"
        + yaml.safe_dump(to_dict(loaded.cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")
    (out_dir / "normalization.json").write_text(json.dumps(loaded.stats.to_dict(), indent=2) + "\n", encoding="utf-8")
    if provenance.is_file():
        shutil.copyfile(provenance, out_dir / "run.json")
    eval_path = run_dir / "eval" / "metrics.json"
    from evaluation.runlog import read_eval_metrics

    ev = read_eval_metrics(eval_path) if eval_path.is_file() else None
    n_params = sum(t.numel() for t in loaded.model.parameters())
    (out_dir / CARD_FILE).write_text(model_card(run_dir, loaded.cfg, loaded.stats, meta, n_params, ev),
                                     encoding="utf-8")
    record_outputs([out_dir / n for n in names], PROG)
    return [out_dir / n for n in names]


def load_exported(export_dir: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, config, stats) rebuilt from an export folder's files alone."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from data.stats import DataStats
    from models import build_model
    from training.checkpoint import load_model_state
    from training.config import load_config

    export_dir = Path(export_dir)
    path = export_dir / WEIGHTS_FILE
    if not path.is_file():
        raise ValueError(f"export '{export_dir}': expected {WEIGHTS_FILE} in it, found none")
    cfg = load_config(export_dir / "config.yaml")
    norm = export_dir / "normalization.json"
    try:
        stats = DataStats.from_dict(json.loads(norm.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"export '{norm}': expected the normalization statistics ({exc})") from None
    try:
        weights = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"export '{path}': unreadable ({exc})") from None
    model = build_model(cfg.model, stats).to(device)
    load_model_state(model, weights, path)
    return model.eval(), cfg, stats


# --------------------------------------------------------------------------------------------
# the model card


def _fmt(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and v != v) else f"{v:.4g}"


def _metric_rows(ev: dict[str, Any]) -> list[str]:
    """Markdown rows: the per-patient metrics (with intervals) first, then the per-recording headline."""
    from evaluation.compare import HEADLINE, headline_metrics, patient_metrics

    rows = ["| metric | value | 95 % interval |", "|---|---|---|"]
    for key, est in patient_metrics(ev).items():
        ci = est["ci"]
        rows.append(f"| {key} | {_fmt(est['value'])} | {f'{_fmt(ci[0])} – {_fmt(ci[1])}' if ci else '—'} |")
    headline = headline_metrics(ev)
    for column, _task, _key, higher in HEADLINE:
        rows.append(f"| {column} ({'higher' if higher else 'lower'} is better) | {_fmt(headline[column])} | — |")
    return rows


def span_sentence(stats: Any) -> str:
    """The model card's line on the conditions the run trained on (its own training split's span)."""
    from data.records import STATIC_NAMES, STATIC_UNITS

    span = stats.static_span()
    if span is None:
        return ("Conditions outside the training ranges are extrapolation; this run's `normalization.json` does "
                "not record them (a run saved before the span was kept).")
    units = dict(zip(STATIC_NAMES, STATIC_UNITS, strict=True))
    ranges = ", ".join(f"{n} {lo:.4g}-{hi:.4g} {units[n]}" for n, (lo, hi) in span.items())
    return (f"This run trained on {ranges} (its training split, `normalization.json`); conditions outside these "
            "ranges are extrapolation (`evaluation.generate` warns, `evaluation.predict` marks such recordings).")


def model_card(run_dir: Path, cfg: Any, stats: Any, meta: dict[str, str], n_params: int,
               ev: dict[str, Any] | None) -> str:
    """The export's model card (markdown): the model, its training data, the evaluation's metrics (``ev``,
    eval/metrics.json, or None when the run was not evaluated), intended use, how to use it, limits."""
    d = cfg.data
    if d.source == "synthetic":
        data = (f"the project's synthetic ABR generator (`data/synthetic.py`): {d.synthetic.patients} patients "
                f"(about 25 recordings each), generator seed {d.synthetic.seed}")
    else:
        data = f"the native data file `{d.path}`"
    lines = [
        f"# Model card: {run_dir.name}",
        "",
        f"A conditional diffusion model of Auditory Brainstem Responses with five clinical heads (a 1-D U-Net "
        f"with S4D layers in the encoder and Transformer blocks in the decoder; {n_params:,} parameters), "
        f"exported from `{run_dir}` ({meta['checkpoint']} checkpoint: {meta['epochs_done']} epoch(s) done, "
        f"optimizer step {meta['step']}; "
        f"{'EMA' if meta['weights'] == 'ema' else 'model (no EMA)'} weights).",
        "",
        "## Training data",
        "",
        f"- Recordings: {data}.",
        f"- Split by patient (no patient in two splits): train/val/test shares {list(d.split)}, split seed "
        f"{d.split_seed}.",
        f"- Signal normalization: {d.normalization}; training-split signal mean {stats.signal_mean:.4g} µV, "
        f"std {stats.signal_std:.4g} µV (`normalization.json`).",
        f"- Training config: {cfg.training.epochs} epoch(s), batch size {cfg.training.batch_size}, loss balancer "
        f"`{cfg.loss.balancer.strategy}`, seed {cfg.seed}.",
        "",
        "## Metrics",
        "",
    ]
    lines += _card_metrics(run_dir, ev)
    lines += [
        "## Intended use",
        "",
        "Research on ABR signals: generating ABRs for a stimulus and subject condition, denoising, and "
        "estimating wave V presence, latency and amplitude, the hearing threshold and the type of hearing loss, "
        "to be compared with clinicians' readings. **Not a medical device**: it is not validated for diagnosis or "
        "screening, and its outputs must not be used to make decisions about a patient's care.",
        "",
        "## How to use",
        "",
        "`evaluation.export.load_exported(DIR)` rebuilds the model from these files. Inputs: signals of 200 "
        "samples at 20 kHz (10 ms) in µV, standardized with `signal_mean`/`signal_std` of `normalization.json` "
        "(or z-scored per recording under `per_sample` normalization); static parameters in physical units "
        "(age in years, intensity in dB nHL, stimulus rate in 1/s, FMP); head outputs come back in physical "
        "units (ms, µV, dB nHL). The auxiliary heads read a clean signal at t = 0.",
        "",
        "## Limits",
        "",
    ]
    lines += _card_limits(d.source, stats)
    return "\n".join(lines)


def _card_metrics(run_dir: Path, ev: dict[str, Any] | None) -> list[str]:
    """The model card's metrics section: the evaluation's metrics and flags, or how to get them."""
    lines: list[str] = []
    if ev is None:
        lines += [f"This run had not been evaluated when it was exported: run `python -m evaluation.evaluate --run "
                  f"{run_dir}` and export again to have its metrics here.", ""]
    else:
        m = ev.get("meta") or {}
        lines += [f"From `eval/metrics.json`: split `{m.get('split', '?')}`, {m.get('n', '?')} recordings, "
                  f"checkpoint `{m.get('checkpoint', '?')}`. Per-patient (clinical) metrics first, with their 95 % "
                  f"bootstrap interval over patients where the evaluation computed one.", "",
                  *_metric_rows(ev), ""]
        flags = ev.get("flags") or []
        if flags:
            lines += ["Flags raised by the evaluation:", "", *[f"- {f}" for f in flags], ""]
    return lines


def _card_limits(source: str, stats: Any) -> list[str]:
    """The model card's list of limits (the first one only for a run trained on synthetic recordings)."""
    lines: list[str] = []
    if source == "synthetic":
        lines.append("- Trained on synthetic recordings only: how it does on real clinical recordings is unknown "
                     "until it is measured on them.")
    lines += [
        "- One recording holds little information about the hearing threshold (per recording even strong models "
        "stop near R² 0.5); clinicians read the threshold from a patient's intensity series.",
        "- Rare types of hearing loss (neuropathy is under 1 % of recordings in the clinical data) have few "
        "training examples: their recall is uncertain; read the per-class recall of the evaluation.",
        "- " + span_sentence(stats),
        "- Generated signals are samples from the model, not recordings.",
        "",
    ]
    return lines


# --------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory, e.g. logs/EXP")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--out", required=True, help="export folder (created)")
    p.add_argument("--overwrite", action="store_true", help="replace the export's files if DIR already has them")
    args = p.parse_args(argv)
    return run_main(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    files = export_run(args.run, args.out, which=args.checkpoint, overwrite=args.overwrite)
    from data.stats import DataStats

    stats = DataStats.from_dict(json.loads((Path(args.out) / "normalization.json").read_text(encoding="utf-8")))
    if stats.static_span() is None:  # the card cannot quote the run's ranges: say so where it is seen
        print("warning: the run's normalization.json records no training span; the model card cannot quote the "
              "conditions it trained on", file=sys.stderr)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
