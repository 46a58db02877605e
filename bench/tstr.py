"""Train on generated, test on real (TSTR) against train on real, test on real (TRTR): can virtual patients
stand in for recordings when a series model learns the type and the threshold? (issue 28, point 3)

    python bench/tstr.py --run logs/clinical_lc [--train-patients 1000 --train-seed 24601] [--patients 1000]
        [--fit-seeds 0,1,2] [--sampler S --steps N --guidance W --clip C --lowpass-hz HZ] [--gen-seed 0]
        [--no-microphonic-bank] [--n-boot 1000] [--threads 1] [--out bench/results/tstr.json]
        [--doc docs/results.md | --no-doc]

The run must be trained with ``model.label_conditioning: true``.

1. **A source cohort** of ``--train-patients`` patients (``data.synthetic.generate`` with ``--train-seed``, neither
   the run's seed nor the benchmark's) split by series into training and selection series (SELECTION_SHARE).
   Its real series are TRTR's data; their generated twins (bench/virtual_patients.py's: each recording's static
   values, the series' type and threshold as the label condition, a share of every noise draw common to the
   series, and the microphonic of one training ear of the type where the run has a bank; ``--no-microphonic-bank``:
   not) are TSTR's, the same conditions one for one, so the two sides differ only in where the signals came
   from.
2. **The same series model, fitted twice per seed**: the run's ``series`` config (reads, epochs, selection) on
   the run's network's evidence, its training series built as the run's series stage builds them (thinned and
   noise copies, training.series_stage.SeriesStage.training_parts) but without the stage's extra patients, so
   both sides have the source cohort's size; the epoch chosen on the side's own selection series (real for
   TRTR, generated for TSTR: no real recording reaches the TSTR model). One fit per ``--fit-seeds`` seed.
3. **Tested on real series**: the benchmark cohort (bench/clinical.py's seed, ``--patients``), per-patient type
   macro-F1 and threshold within ±10 dB, 95 % bootstrap intervals over series; per seed the ratio TSTR / TRTR
   with a paired bootstrap interval (the same resampled series for both). Beside them what a trivial answer gets
   (the source's commonest type and median threshold) and the run's own series model (trained on the run's full
   series stage: what more real data buys).
4. **Augmentation** (issue 28, point 4): a third fit per seed on the real training series plus the generated
   twins of those of a rare type (less than RARE_SHARE of the training series), its epoch chosen on the real
   selection series; the recall of each rare type on the real test series beside the real series alone.
"""

from __future__ import annotations

import datetime
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_output_args, machine, write_outputs  # noqa: E402
from bench.virtual_patients import (  # noqa: E402
    BENCHMARK_SEED,
    K,
    add_microphonic_flag,
    guidance_note,
    microphonic_note,
    sample_twins,
)
from bench.virtual_patients import load as load_run_checked  # noqa: E402
from data.cli import ArgumentParser, number, phase, run_main  # noqa: E402
from data.records import CLASS_NAMES, Records  # noqa: E402
from evaluation.generate import (  # noqa: E402
    SAMPLING_KEYS,
    SERIES_SHARE,
    add_sampling_flags,
    add_wave_guidance_flag,
    sampling_settings,
)
from training.clinical import (  # noqa: E402
    bootstrap,
    from_bin,
    series_index,
    series_truth,
    threshold_metrics,
    to_bin,
    type_metrics,
)

PROG = "tstr"
DOC_KEY = "tstr"
SELECTION_SHARE = 0.15  # of the source cohort's series: where each side chooses its series model's epoch
TRAIN_SEED = 24601  # the source cohort's generator seed (neither the benchmark's nor a recipe's)
SIDES = ("TRTR", "TSTR", "augmented")
RARE_SHARE = 0.10  # a type with less than this share of the source's training series is rare (augmented)


def split_series(cohort: Records, seed: int) -> tuple[Records, Records]:
    """The cohort's rows as (training, selection) Records, whole series apart (SELECTION_SHARE of them)."""
    series = series_index(cohort.series_id, cohort.static[:, 1])
    order = np.random.default_rng(seed).permutation(len(series.members))
    n_sel = max(1, int(round(SELECTION_SHARE * len(order))))
    pick = [np.sort(np.concatenate([series.members[s] for s in part])) for part in (order[n_sel:], order[:n_sel])]
    return cohort.subset(pick[0]), cohort.subset(pick[1])


def series_config(loaded: Any) -> Any:
    """The run's series config without the stage's extra patients: both sides learn from the source cohort alone."""
    return replace(loaded.cfg.series, extra_patients=0)


def series_sets(loaded: Any, train: Records, select: Records, seed: int, extra: Records | None = None
                ) -> tuple[Any, Any]:
    """SeriesSets of the run's network evidence: the training series as the run's stage builds them (thinned and
    noise copies of ``train``, no extra patients; ``extra``'s series added as they are) and the selection series."""
    from data.dataset import ABRDataset
    from models.series import SeriesNet
    from training.series_stage import SeriesStage, series_set

    cfg = series_config(loaded)
    stage = SeriesStage(cfg, K, seed=seed, grad_clip=loaded.cfg.training.grad_clip)
    parts = stage.training_parts(SimpleNamespace(train=ABRDataset(train, loaded.stats), stats=loaded.stats))
    if extra is not None and len(extra):
        parts.append(ABRDataset(extra, loaded.stats))
    flags = {k: getattr(cfg, k) for k in SeriesNet.READS}
    return (series_set(loaded.model, parts, "cpu", **flags),
            series_set(loaded.model, [ABRDataset(select, loaded.stats)], "cpu", **flags))


def rare_twins(real_train: Records, twins: Records) -> tuple[Records, list[int]]:
    """The generated twins of ``real_train``'s series whose type has less than RARE_SHARE of its series, and
    those types (the augmentation: generated series of the rare classes added to the real ones)."""
    series = series_index(real_train.series_id, real_train.static[:, 1])
    _, types = series_truth(series, real_train.threshold, real_train.label)
    rare = [k for k in range(K) if 0 < (types == k).mean() < RARE_SHARE]
    keep = np.isin(twins.series_id, real_train.series_id) & np.isin(twins.label, rare)
    return twins.subset(np.flatnonzero(keep)), rare


def fit(loaded: Any, sets: tuple[Any, Any], seed: int) -> Any:
    """The run's series model recipe fitted on ``sets`` (training, selection) with ``seed``."""
    from training.series_stage import fit_series

    cfg = series_config(loaded)
    net, _ = fit_series(*sets, cfg, K, seed=seed, grad_clip=loaded.cfg.training.grad_clip)
    return net


def answers(net: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
    """(type (S,), threshold dB (S,)) of a series model on the test SeriesSet."""
    from training.series import predict

    p = predict(net, test)
    return p["type_proba"].argmax(1), p["threshold"]


def scores(truth: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], n_boot: int) -> dict:
    """Type macro-F1 and threshold within ±10 dB of one reader's answers, with intervals over series."""
    t = type_metrics(truth[1], got[0], K, n_boot=n_boot)
    return {"type_macro_f1": t["macro_f1"], "recall": {str(k): e for k, e in t["recall"].items()},
            "threshold_within_10db": threshold_metrics(truth[0], got[1], n_boot=n_boot)["within_10db"]}


def paired_ratio(truth, gen: tuple[np.ndarray, np.ndarray], real: tuple[np.ndarray, np.ndarray], n_boot: int
                 ) -> dict:
    """TSTR / TRTR per metric, each resample of series scoring both sides (95 % interval)."""
    from sklearn.metrics import f1_score

    def f1(i, pred):
        return f1_score(truth[1][i], pred[i], labels=np.unique(truth[1][i]), average="macro", zero_division=0)

    def within(i, pred):  # on the 5 dB grid, as threshold_metrics scores it
        return float(np.mean(np.abs(from_bin(to_bin(pred[i])) - from_bin(to_bin(truth[0][i]))) <= 10.0))

    return {"type_macro_f1": bootstrap(lambda i: f1(i, gen[0]) / max(f1(i, real[0]), 1e-12), len(truth[0]),
                                       n_boot=n_boot),
            "threshold_within_10db": bootstrap(lambda i: within(i, gen[1]) / max(within(i, real[1]), 1e-12),
                                               len(truth[0]), n_boot=n_boot)}


def trivial(source: Records, truth, n_boot: int) -> dict:
    """The source's commonest type and median series threshold, given to every test series."""
    s = series_index(source.series_id, source.static[:, 1])
    src_db, src_type = series_truth(s, source.threshold, source.label)
    n = len(truth[0])
    const = (np.full(n, np.bincount(src_type, minlength=K).argmax()), np.full(n, float(np.median(src_db))))
    return scores(truth, const, n_boot)


# --------------------------------------------------------------------------------------------
# the run


def table(r: dict) -> str:
    """The Markdown table of a result (Estimates or their JSON form) and the augmentation's recall line."""
    def value(e: Any) -> float:
        return e.value if not isinstance(e, dict) else e["value"]

    def cell(e: Any) -> str:
        return str(e) if not isinstance(e, dict) else f"{e['value']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]"

    def recall(got: dict) -> str:
        return " / ".join(f"{value(got['recall'][k]):.2f}" if k in got["recall"] else "-" for k in map(str, range(K)))

    n_src, n_aug = r["source"]["train_series"], r.get("augmented_series", 0)
    trained = {"TRTR": f"{n_src} real series", "TSTR": f"their {n_src} generated twins",
               "augmented": f"the {n_src} real series and {n_aug} generated twins of the rare types"}
    lines = [f"| reader | trained on | type macro-F1 | threshold within ±10 dB | recall {' / '.join(CLASS_NAMES)} |",
             "|---|---|---|---|---|",
             f"| trivial | every series the source's commonest type and median threshold | "
             f"{cell(r['trivial']['type_macro_f1'])} | {cell(r['trivial']['threshold_within_10db'])} | - |"]
    for seed, got in r["seeds"].items():
        lines += [f"| {side}, seed {seed} | {trained[side]} | {cell(got[side]['type_macro_f1'])} | "
                  f"{cell(got[side]['threshold_within_10db'])} | {recall(got[side])} |"
                  for side in SIDES if side in got]
        lines.append(f"| TSTR / TRTR, seed {seed} | (paired) | {cell(got['ratio']['type_macro_f1'])} | "
                     f"{cell(got['ratio']['threshold_within_10db'])} | |")
    if "run_series_model" in r:
        m = r["run_series_model"]
        lines.append(f"| the run's series model | the run's series stage | {cell(m['type_macro_f1'])} | "
                     f"{cell(m['threshold_within_10db'])} | {recall(m)} |")
    seeds = list(r["seeds"].values())
    rare = ", ".join(f"{CLASS_NAMES[k]} {np.mean([value(g['TRTR']['recall'][str(k)]) for g in seeds]):.2f} -> "
                     f"{np.mean([value(g['augmented']['recall'][str(k)]) for g in seeds]):.2f}"
                     for k in r.get("rare_types", []) if all(str(k) in g["augmented"]["recall"] for g in seeds))
    if rare:
        lines += ["", f"Recall of the rare types on the real test series, mean over {len(seeds)} seeds, real series "
                  f"alone -> with the generated ones: {rare}."]
    return "\n".join(lines)


def doc_section(r: dict) -> str:
    s = r["sampling"]
    wave = (f", wave V per ear from the run's wave profile with wave guidance w_v = {s['wave_guidance']:g}"
            if s.get("wave_guidance") is not None else "") + microphonic_note(s)
    return f"""## Train on generated, test on real (issue 28; bench/tstr.py)

Command: `{r['command']}`

Machine: {r['machine']}; {r['threads']} thread(s); {r['seconds']:.0f} s. Date: {r['date']}.
Run `{r['run']}`. Source cohort: {r['source']['patients']} patients, generator seed {r['source']['seed']}
({r['source']['series']} series, {r['source']['recordings']} recordings), {1 - SELECTION_SHARE:.0%} of its series
for training and {SELECTION_SHARE:.0%} for choosing the epoch; TRTR on its real series, TSTR on their generated
twins ({s['sampler']}, {s['steps']} steps, guidance w = {s['guidance']:g}{guidance_note(s)}{wave},
low-pass {s['lowpass_hz']:g} Hz,
share {s['share']:g}, seed {s['seed']}). Test: the benchmark cohort's real series ({r['test']['patients']} patients,
generator seed {r['test']['seed']}). 95 % bootstrap intervals over test series ({r['n_boot']} resamples); the
ratio's resamples score both sides on the same series. Augmented: the real training series and the generated
twins of those whose type has less than {RARE_SHARE:.0%} of them ({', '.join(CLASS_NAMES[k] for k in r['rare_types'])}),
epoch chosen on the real selection series. Method: the bench's docstring.

{table(r)}
"""


def parse_args(argv: list[str] | None):
    p = ArgumentParser(prog="bench/tstr.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a run trained with model.label_conditioning true")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--train-patients", type=number(int, ge=10, le=100_000), default=1000,
                   help="patients of the source cohort (default 1000)")
    p.add_argument("--train-seed", type=number(int, ge=0), default=TRAIN_SEED,
                   help=f"the source cohort's generator seed (default {TRAIN_SEED})")
    p.add_argument("--patients", type=number(int, ge=10, le=100_000), default=1000,
                   help="patients of the real test cohort (benchmark seed; default 1000)")
    p.add_argument("--seed", type=number(int, ge=0), default=BENCHMARK_SEED, help="the test cohort's generator seed")
    p.add_argument("--fit-seeds", default="0,1,2", help="series model seeds, comma-separated (default 0,1,2)")
    add_sampling_flags(p)
    add_wave_guidance_flag(p)
    add_microphonic_flag(p)
    p.add_argument("--gen-seed", type=number(int, ge=0), default=0, help="sampling seed")
    p.add_argument("--batch-size", type=number(int, ge=1, le=65_536), default=256)
    p.add_argument("--n-boot", type=number(int, ge=0, le=100_000), default=1000)
    p.add_argument("--threads", type=number(int, ge=1, le=1024), default=1, help="torch threads")
    add_output_args(p, "tstr")
    args = p.parse_args(argv)
    try:
        args.fit_seeds = [int(x) for x in args.fit_seeds.split(",")]
    except ValueError:
        p.error(f"argument --fit-seeds: expected integers separated by commas, found {args.fit_seeds!r}")
    if args.train_seed == args.seed:
        p.error(f"--train-seed {args.train_seed}: expected a source cohort apart from the test cohort (--seed)")
    return p, args


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    return run_main(lambda: run(p, args, argv), debug=args.debug)


def run(p, args, argv: list[str] | None) -> int:
    from data.dataset import ABRDataset
    from data.synthetic import generate as synthetic_cohort
    from models.series import SeriesNet
    from training.series import load_series
    from training.series_stage import series_set

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    loaded = load_run_checked(p, SimpleNamespace(run=args.run, checkpoint=args.checkpoint, seed=args.train_seed))
    if loaded.cfg.data.source == "synthetic" and loaded.cfg.data.synthetic.seed == args.seed:
        p.error(f"--seed {args.seed}: the run trained on that generator seed; the test cohort needs its own")
    kw = sampling_settings(loaded.diffusion, args) | {"share": SERIES_SHARE, "wave_guidance": (
        args.wave_guidance if getattr(loaded.model, "wave_conditioned", False) else None),
        "no_microphonic_bank": args.no_microphonic_bank}
    source = synthetic_cohort(args.train_patients, args.train_seed)
    with phase(PROG, f"sampling the source cohort's twins ({len(source)} signals)"):
        series = series_index(source.series_id, source.static[:, 1])
        twins = replace(source, signal=sample_twins(loaded, source, series, kw, seed=args.gen_seed,
                                                    batch_size=args.batch_size))
    test = synthetic_cohort(args.patients, args.seed)
    test_series = series_index(test.series_id, test.static[:, 1])
    truth = series_truth(test_series, test.threshold, test.label)
    flags = {k: getattr(loaded.cfg.series, k) for k in SeriesNet.READS}
    with phase(PROG, f"the network's evidence on the {len(test_series.members)} test series"):
        test_set = series_set(loaded.model, [ABRDataset(test, loaded.stats)], "cpu", **flags)
    result = {"command": "python bench/tstr.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(), "threads": args.threads, "date": datetime.date.today().isoformat(),
              "run": str(args.run), "source": {"patients": args.train_patients, "seed": args.train_seed,
                                               "series": len(series.members), "recordings": len(source)},
              "test": {"patients": args.patients, "seed": args.seed, "series": len(test_series.members)},
              "sampling": {k: kw.get(k) for k in (*SAMPLING_KEYS, "share", "wave_guidance", "microphonic_composed")}
              | {"seed": args.gen_seed},
              "n_boot": args.n_boot, "trivial": trivial(source, truth, args.n_boot), "seeds": {}}
    own = load_series(args.run)
    if own is not None:
        result["run_series_model"] = scores(truth, answers(own, test_set), args.n_boot)
    (real_train, real_select), sets = split_series(source, args.train_seed), {}
    for side, parts in (("TRTR", (real_train, real_select)), ("TSTR", split_series(twins, args.train_seed))):
        with phase(PROG, f"{side}: the network's evidence on the source cohort's series"):
            sets[side] = series_sets(loaded, *parts, seed=0)
    extra, result["rare_types"] = rare_twins(real_train, twins)
    result["source"]["train_series"] = len(np.unique(real_train.series_id))
    result["augmented_series"] = len(np.unique(extra.series_id))
    with phase(PROG, f"augmented: the real series and {result['augmented_series']} generated ones of the rare types"):
        sets["augmented"] = series_sets(loaded, real_train, real_select, seed=0, extra=extra)
    for seed in args.fit_seeds:
        got = {}
        for side in SIDES:
            with phase(PROG, f"{side}: fitting the series model, seed {seed}"):
                got[side] = answers(fit(loaded, sets[side], seed), test_set)
        result["seeds"][str(seed)] = {side: scores(truth, got[side], args.n_boot) for side in SIDES} | {
            "ratio": paired_ratio(truth, got["TSTR"], got["TRTR"], args.n_boot)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(table(result))
    write_outputs(args, DOC_KEY, result, doc_section(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
