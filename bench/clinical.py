"""The clinical questions per patient, scored on a benchmark cohort and on the run's own test split.

    python bench/clinical.py --run logs/clinical [--patients 5000 --seed 12345] [--n-boot 1000] [--domain wide]

The benchmark cohort is generated with its own generator seed (never the run's), large enough that
the rarest type (neuropathy, 0.8 % of patients) has dozens of series; nothing was chosen on it.
For each cohort: the series model of the run (when it has one) beside the rule and the per-recording
baselines, each metric with a 95 % bootstrap interval over series (evaluation/patient.py), and what the
protocol gives away (evaluation/protocol.py): the threshold from the recorded levels alone, the rule fed
the true wave V marks, and the benchmark cohort again under a sparse clinic protocol
(``benchmark_sparse``: at most one recording at each of 20, 30, 40, 50, 60, 80, 100 dB); and per cohort
the calibration (ECE per recording and per series, threshold interval coverage), raw and with the run's
``calibration.json`` when it has one. ``--domain wide``
adds the same patients through the wide recording chain (docs/data.md 1.6) as ``benchmark_wide``. Prints the
report section and writes bench/results/clinical.json.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from data.cli import ArgumentParser, number, phase, run_main  # noqa: E402
from data.dataset import ABRDataset, build_data  # noqa: E402
from data.records import CLASS_NAMES  # noqa: E402
from data.synthetic import generate  # noqa: E402
from evaluation.calibration import Calibration, calibration_metrics  # noqa: E402
from evaluation.calibration import markdown as calibration_markdown  # noqa: E402
from evaluation.patient import markdown  # noqa: E402
from evaluation.protocol import SPARSE_LEVELS_DB, baseline_thresholds, sparse_rows  # noqa: E402
from training.checkpoint import load_run  # noqa: E402
from training.series import extract, load_series, majority_type, patient_metrics  # noqa: E402

BENCHMARK_SEED = 12345  # the benchmark cohort's generator seed; no run trains on it
PROG = "bench/clinical.py"  # argparse's prog and the start of its progress lines on stderr


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--patients", type=number(int, ge=1, le=200_000), default=5000, help="benchmark cohort size")
    p.add_argument("--seed", type=number(int, ge=0), default=BENCHMARK_SEED, help="benchmark cohort generator seed")
    p.add_argument("--n-boot", type=number(int, ge=0, le=100_000), default=1000)
    p.add_argument("--domain", default="narrow", choices=("narrow", "wide"),
                   help="wide: also score the benchmark patients through the wide recording chain "
                        "(docs/data.md 1.6) as the cohort 'benchmark_wide'")
    p.add_argument("--out", default="bench/results/clinical.json")
    args = p.parse_args(argv)
    return run_main(lambda: _run(p, args), debug=args.debug)


def _run(p: ArgumentParser, args) -> int:
    t0 = time.time()
    run = load_run(args.run, which=args.checkpoint)  # seconds; before any progress line, so a refusal stays one line
    if run.cfg.data.source == "synthetic" and run.cfg.data.synthetic.seed == args.seed:
        p.error(f"--seed {args.seed}: the run trained on that generator seed; the benchmark needs its own")
    series_net = load_series(args.run)
    # Minutes of work at the default 5000 patients: each long step says so on stderr when it starts and
    # how long it took when it ends (stdout keeps the report alone).
    with phase(PROG, "rebuilding the run's data and split"):
        bundle = build_data(run.cfg.data, run.cfg.loss.class_weights)
        majority = majority_type(bundle.train)
    with phase(PROG, f"generating the benchmark cohort ({args.patients} patients, seed {args.seed}, "
                     f"{args.domain} domain)"):
        bench_records = generate(args.patients, args.seed)
        cohorts = {"benchmark": ABRDataset(bench_records, run.stats)}
        if args.domain == "wide":  # the same patients and labels, recorded through randomized chains
            cohorts["benchmark_wide"] = ABRDataset(generate(args.patients, args.seed, domain="wide"), run.stats)
    # the sparse clinic protocol (evaluation/protocol.py): at most 7 levels between 20 and 100 dB, one each
    cohorts["benchmark_sparse"] = ABRDataset(bench_records.subset(sparse_rows(bench_records.series_id,
                                                                              bench_records.static[:, 1])), run.stats)
    cohorts["test"] = bundle.test
    result = {"run": args.run, "checkpoint": args.checkpoint, "series_model": series_net is not None,
              "benchmark": {"patients": args.patients, "seed": args.seed, "domain": args.domain},
              "machine": platform.platform(), "n_boot": args.n_boot, "cohorts": {}}
    cal = Calibration.load(args.run)  # None: the raw numbers only (python -m evaluation.trust --run RUN fits it)
    for name, ds in cohorts.items():
        with phase(PROG, f"{name}: the network on {len(ds)} recordings"):
            ev = extract(run.model, ds)
        with phase(PROG, f"{name}: per-patient metrics and calibration, {args.n_boot} bootstrap resamples"):
            m = patient_metrics(run.model, ds, n_classes=len(CLASS_NAMES), majority_type=majority,
                                series_net=series_net, n_boot=args.n_boot, evidence=ev)
            m["threshold"] |= baseline_thresholds(ds.tensors, n_boot=args.n_boot)  # what the protocol gives away
            m["calibration"] = {k: v for k, v in calibration_metrics(ev, series_net, cal, n_boot=args.n_boot).items()
                                if k != "reliability"}
        result["cohorts"][name] = m  # Estimates: written as {"value", "ci"} by write_result
        where = {"benchmark": f"generator seed {args.seed}", "test": "the run's own test split",
                 "benchmark_wide": f"generator seed {args.seed}, wide domain",
                 "benchmark_sparse": f"generator seed {args.seed}, sparse protocol: at most one recording at each "
                                     f"of {', '.join(f'{v:g}' for v in SPARSE_LEVELS_DB)} dB"}[name]
        print(f"\n# {name} ({where})\n")
        print("\n".join(markdown(m, CLASS_NAMES) + calibration_markdown(m["calibration"])))
    result["seconds"] = round(time.time() - t0, 1)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
