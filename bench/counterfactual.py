"""Counterfactual checks (issue 33): how much the answers move when only the stated values change.

    python bench/counterfactual.py --run logs/clinical [--patients 240 --seed 24680] [--n-boot 1000]

On a held-out synthetic cohort (its own generator seed, never the run's), every recording goes once
through the network as it was generated and once changed in one way only:

- noise: each recording replaced by pure white or pink (1/f) noise of its own variance, the static
  values kept: the share of recordings with wave V detected, at every stated level, and the share of
  series answered "no response" (a network that reads the waveform detects nothing in noise);
- absent re-stated at 90 dB: the recordings without a wave V, samples untouched, their stated
  intensity changed to 90 dB;
- present re-stated 30 dB lower: the recordings with a wave V, their stated intensity lowered by
  30 dB (clipped at 0 dB);
- levels shuffled: each series' stated levels permuted among its own recordings: how many series
  thresholds and types change, and by how many dB.

A recording counts as detected at ``training.clinical.DETECTION_P`` (wave V probability >= 0.5).
Every number carries a 95 % bootstrap interval over series (training/clinical.py). The network runs
through ``training.series.extract`` (the per-recording evidence pass ``evaluation.predict`` and
``evaluation.evaluate`` use), the series answers through ``training.series.series_answers`` (the
run's series model when it has one, else the rule). Writes bench/results/counterfactual.json and the
``counterfactual`` section of docs/results.md (``--no-doc``: the JSON only).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_output_args, machine, write_outputs  # noqa: E402
from data.cli import ArgumentParser, number, phase, run_main  # noqa: E402
from data.records import Records  # noqa: E402
from training.clinical import DETECTION_P, NO_RESPONSE_DB, Estimate, Series, bootstrap  # noqa: E402

COUNTERFACTUAL_SEED = 24680  # the cohort's generator seed; no run trains on it (bench/clinical.py uses 12345)
LOUD_DB = 90.0  # absent recordings are re-stated at this level
QUIETER_DB = 30.0  # present recordings are re-stated this much lower (clipped at 0 dB)
NOISE_KINDS = ("white", "pink")
PROG = "bench/counterfactual.py"  # argparse's prog and the start of its progress lines on stderr


# ------------------------------------------------------------------------------------------------
# the counterfactual recordings: only one thing changes in each


def noise_like(rng: np.random.Generator, signal: np.ndarray, kind: str) -> np.ndarray:
    """Pure noise (N L), each row rescaled to exactly its recording's sample variance: white (flat
    spectrum to the Nyquist frequency) or pink (power ∝ 1/f from the first FFT bin up, no DC)."""
    from data import waveform as wf

    sigma = signal.std(axis=1).astype(np.float32)  # (N,)
    if kind == "white":
        x = rng.standard_normal(signal.shape, dtype=np.float32)
    elif kind == "pink":
        flat = (wf.FREQS_HZ > 0).astype(np.float32)  # (K,) no DC, no recording filter: pure 1/f
        x = wf.coloured_noise(rng, np.ones_like(sigma), np.ones_like(sigma), band_power=flat)
    else:
        raise ValueError(f"noise kind: expected one of {NOISE_KINDS}, found {kind!r}")
    return (x * (sigma / np.maximum(x.std(axis=1), 1e-12))[:, None]).astype(np.float32)


def with_signal(records: Records, signal: np.ndarray) -> Records:
    return dataclasses.replace(records, signal=signal.astype(np.float32))


def with_levels(records: Records, level: np.ndarray) -> Records:
    """The same recordings (samples, labels, other static values) with the stated intensity ``level`` (N,)."""
    static = records.static.copy()
    static[:, 1] = level
    return dataclasses.replace(records, static=static)


def restated_levels(records: Records, present: bool) -> np.ndarray:
    """(N,) the stated levels with the absent recordings at LOUD_DB (``present`` False) or the present ones
    QUIETER_DB lower (>= 0; ``present`` True), the others as they were. One pass per check: the recording's
    own reading depends on that recording alone, but the series' answers (and so the gated and waterfall
    readings) on all of its recordings, and a series with both moved is neither check."""
    level = records.static[:, 1]
    moved = np.maximum(level - QUIETER_DB, 0.0) if present else np.full_like(level, LOUD_DB)
    return np.where(records.peak_mask == present, moved, level).astype(np.float32)


def shuffled_levels(rng: np.random.Generator, records: Records) -> np.ndarray:
    """(N,) each series' stated levels permuted among its own recordings."""
    level = records.static[:, 1].copy()
    for sid in np.unique(records.series_id):
        rows = np.flatnonzero(records.series_id == sid)
        level[rows] = level[rng.permutation(rows)]
    return level


# ------------------------------------------------------------------------------------------------
# one pass of the network, and the statistics over series


@dataclasses.dataclass
class Pass:
    detected: np.ndarray  # (N,) bool, wave V probability >= DETECTION_P
    thresholds: dict[str, np.ndarray]  # method -> (S,) dB
    types: dict[str, np.ndarray]  # method -> (S,) type index
    series: Series
    flagged: np.ndarray | None = None  # (S,) bool: the run's input check calls the series unlike training data
    # (N,) bool: wave V read down the waterfall (training.series.waterfall_waves: present from the series'
    # threshold answer up); None without the wave map head
    waterfall: np.ndarray | None = None
    # (N,) bool: the recording's own wave V reading kept only where its series holds a response
    # (training.series.gated_waves; the recordings.csv column `wave_V_gated`)
    gated: np.ndarray | None = None


def answer(model: Any, series_net: Any, records: Records, stats: Any, device: str, judge: Any = None) -> Pass:
    """The network's (and series model's) answers on ``records``; ``judge(dataset, evidence, series)``
    -> (S,) bool, when given, says which series the run's input check flags (issue 27)."""
    from data.dataset import ABRDataset
    from data.records import WAVE_NAMES
    from training.series import extract, gated_waves, series_answers, waterfall_waves

    ds = ABRDataset(records, stats)
    ev = extract(model, ds, device=device)
    a = series_answers(ev, series_net)
    types = {k: v.argmax(1) for k, v in a.types.items() if k != "rule"}  # "rule" is evidence_sum again
    flagged = judge(ds, ev, a.series) if judge is not None else None
    read = waterfall_waves(ev, a.thresholds[a.best])
    waterfall = None if read is None else read["prob"][:, WAVE_NAMES.index("V")] >= DETECTION_P
    gated = gated_waves(ev, a.thresholds[a.best])["prob"][:, WAVE_NAMES.index("V")] >= DETECTION_P
    return Pass(ev.peak_prob >= DETECTION_P, a.thresholds, types, a.series, flagged, waterfall, gated)


def unlike_training(run: Any, run_dir: str, device: Any) -> Any:
    """The judge for :func:`answer` from the run's familiarity.json (None without one): a series is
    flagged when evaluation.predict would call it "unlike training data"."""
    from evaluation.familiarity import Familiarity, check
    from evaluation.trust import dataset_inputs

    fam = Familiarity.load(run_dir)
    if fam is None:
        return None

    def judge(ds: Any, ev: Any, series: Series) -> np.ndarray:
        v = check(fam, dataset_inputs(ds, run.stats, ev), run.model, run.diffusion, series, device=device)
        return np.array([s == "unlike training data" for s in v.series_verdict])

    return judge


def rate(series: Series, rows: np.ndarray, detected: np.ndarray, *, n_boot: int, seed: int) -> Estimate:
    """Share of ``rows`` (bool (N,)) detected, resampling series."""
    hits = np.array([detected[m][rows[m]].sum() for m in series.members], dtype=np.float64)  # (S,)
    count = np.array([rows[m].sum() for m in series.members], dtype=np.float64)  # (S,)

    def stat(i: np.ndarray) -> float:
        return float(hits[i].sum() / count[i].sum()) if count[i].sum() else float("nan")

    return bootstrap(stat, len(series), n_boot=n_boot, seed=seed)


def paired_rates(series: Series, rows: np.ndarray, before: np.ndarray, after: np.ndarray, *, n_boot: int,
                 seed: int) -> dict[str, Any]:
    """Detection of ``rows`` as stated and counterfactual, and the difference, on the same resamples."""
    diff = after.astype(np.int64) - before.astype(np.int64)  # (N,) +1 newly detected, -1 lost
    return {"recordings": int(rows.sum()),
            "as_stated": rate(series, rows, before, n_boot=n_boot, seed=seed),
            "counterfactual": rate(series, rows, after, n_boot=n_boot, seed=seed),
            "difference": _mean_over_rows(series, rows, diff, n_boot=n_boot, seed=seed)}


def _mean_over_rows(series: Series, rows: np.ndarray, values: np.ndarray, *, n_boot: int, seed: int) -> Estimate:
    total = np.array([values[m][rows[m]].sum() for m in series.members], dtype=np.float64)
    count = np.array([rows[m].sum() for m in series.members], dtype=np.float64)
    return bootstrap(lambda i: float(total[i].sum() / count[i].sum()) if count[i].sum() else float("nan"),
                     len(series), n_boot=n_boot, seed=seed)


def share(flags: np.ndarray, *, n_boot: int, seed: int) -> Estimate:
    """Mean of a per-series quantity (S,), resampling series."""
    flags = np.asarray(flags, dtype=np.float64)
    return bootstrap(lambda i: float(flags[i].mean()), len(flags), n_boot=n_boot, seed=seed)


# ------------------------------------------------------------------------------------------------
# the four checks


def noise_check(base: Pass, noisy: Pass, level: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    everyone = np.ones(len(level), dtype=bool)
    kw = {"n_boot": n_boot, "seed": seed}
    return {
        "detected": rate(noisy.series, everyone, noisy.detected, **kw),
        **({} if noisy.waterfall is None else {
            "detected_down_the_waterfall": rate(noisy.series, everyone, noisy.waterfall, **kw),
            "real_detected_down_the_waterfall": rate(base.series, everyone, base.waterfall, **kw)}),
        "detected_gated": rate(noisy.series, everyone, noisy.gated, **kw),
        "detected_gated_by_level": {f"{v:g}": rate(noisy.series, level == v, noisy.gated, **kw)
                                    for v in np.unique(level)},
        "real_detected_gated": rate(base.series, everyone, base.gated, **kw),
        "detected_by_level": {f"{v:g}": rate(noisy.series, level == v, noisy.detected, **kw)
                              for v in np.unique(level)},
        "no_response": {k: share(v >= NO_RESPONSE_DB, **kw) for k, v in noisy.thresholds.items()},
        "real_no_response": {k: share(v >= NO_RESPONSE_DB, **kw) for k, v in base.thresholds.items()},
        **({} if noisy.flagged is None else {
            "flagged": share(noisy.flagged, **kw), "real_flagged": share(base.flagged, **kw),
            "no_response_or_flagged": {k: share((v >= NO_RESPONSE_DB) | noisy.flagged, **kw)
                                       for k, v in noisy.thresholds.items()}}),
    }


def shuffle_check(base: Pass, shuffled: Pass, *, n_boot: int, seed: int) -> dict[str, Any]:
    kw = {"n_boot": n_boot, "seed": seed}
    assert np.array_equal(base.series.ids, shuffled.series.ids)  # same series, in the same order
    return {
        "threshold": {k: {"changed": share(base.thresholds[k] != shuffled.thresholds[k], **kw),
                          "mean_abs_change_db": share(np.abs(base.thresholds[k] - shuffled.thresholds[k]), **kw)}
                      for k in base.thresholds},
        "type": {k: {"changed": share(base.types[k] != shuffled.types[k], **kw)} for k in base.types},
    }


def counterfactuals(model: Any, series_net: Any, records: Records, stats: Any, *, seed: int, n_boot: int,
                    device: str = "cpu", judge: Any = None) -> dict[str, Any]:
    """Every check on ``records`` (labelled); ``seed`` draws the noise and the shuffles; ``judge``: the
    run's input check (:func:`unlike_training`), applied to the real and the noise series."""
    rng = np.random.default_rng([seed, 33])
    kw = {"n_boot": n_boot, "seed": seed}
    level = records.static[:, 1]
    # six passes of the network over the whole cohort, each with its bootstrap: one progress line each
    n = f"{len(records)} recordings"
    with phase(PROG, f"the recordings as stated: the network on {n}"):
        base = answer(model, series_net, records, stats, device, judge)
    out: dict[str, Any] = {"noise": {}}
    for kind in NOISE_KINDS:
        with phase(PROG, f"{kind} noise: the network on {n}, {n_boot} bootstrap resamples"):
            noisy = answer(model, series_net, with_signal(records, noise_like(rng, records.signal, kind)), stats,
                           device, judge)
            out["noise"][kind] = noise_check(base, noisy, level, **kw)
    present = records.peak_mask.astype(bool)
    out["gated"] = {}
    for key, moved, what in (("absent_at_90db", False, f"absent re-stated at {LOUD_DB:g} dB"),
                             ("present_30db_lower", True, f"present re-stated {QUIETER_DB:g} dB lower")):
        rows = present == moved  # (N,) the recordings this check re-states
        with phase(PROG, f"{what}: the network on {n}, {n_boot} bootstrap resamples"):
            restated = answer(model, series_net, with_levels(records, restated_levels(records, moved)), stats,
                              device)
            out[key] = paired_rates(base.series, rows, base.detected, restated.detected, **kw)
            out["gated"][key] = paired_rates(base.series, rows, base.gated, restated.gated, **kw)
    with phase(PROG, f"levels shuffled within each series: the network on {n}, {n_boot} bootstrap resamples"):
        shuffled = answer(model, series_net, with_levels(records, shuffled_levels(rng, records)), stats, device)
        out["levels_shuffled"] = shuffle_check(base, shuffled, **kw)
    out["real_detected"] = rate(base.series, np.ones(len(level), dtype=bool), base.detected, **kw)
    return out


# ------------------------------------------------------------------------------------------------
# report


def markdown(result: dict[str, Any]) -> str:
    c, cf = result["cohort"], result["checks"]
    lines = ["## Counterfactual checks (issue 33): the answers when only the stated values change", "",
             f"Run `{result['run']}` ({result['checkpoint']}), series answers by "
             f"{'the series model' if result['series_model'] else 'the rule'}; held-out cohort of {c['patients']} "
             f"patients (generator seed {c['seed']}, {c['recordings']} recordings, {c['series']} series); wave V "
             f"detected at p >= {DETECTION_P}; 95 % bootstrap intervals over series ({result['n_boot']} resamples). "
             f"{result['machine']}.", "",
             "| check | recordings | as stated | counterfactual | moved |", "|---|---|---|---|---|"]
    for key, name in (("absent_at_90db", f"no wave V, re-stated at {LOUD_DB:g} dB: detected"),
                      ("present_30db_lower", f"wave V, re-stated {QUIETER_DB:g} dB lower: detected")):
        r = cf[key]
        lines.append(f"| {name} | {r['recordings']} | {r['as_stated']} | {r['counterfactual']} | {r['difference']} |")
    methods = list(cf["noise"]["white"]["no_response"])
    lines += ["", f"Pure noise of each recording's own variance, static values kept (real recordings: "
                  f"{cf['real_detected']} detected):", "",
              "| noise | detected, all levels | lowest level rate | highest level rate | "
              + " | ".join(f"series 'no response' ({k}; real cohort)" for k in methods) + " |",
              "|---|---|---|---|" + "---|" * len(methods)]
    for kind, r in cf["noise"].items():
        by = r["detected_by_level"]
        lo, hi = min(by, key=lambda k: by[k].value), max(by, key=lambda k: by[k].value)
        lines.append(f"| {kind} | {r['detected']} | {lo} dB: {by[lo]} | {hi} dB: {by[hi]} | " +
                     " | ".join(f"{r['no_response'][k]} ({r['real_no_response'][k].value:.3f})"
                                for k in r["no_response"]) + " |")
    if "flagged" in cf["noise"]["white"]:
        lines += ["", "The same noise series through the run's input check (familiarity.json; predict calls them "
                      "'unlike training data'), and 'no response' or flagged, the answer a clinic would act on "
                      "(real cohort's share flagged in brackets):", "",
                  "| noise | flagged | " + " | ".join(f"'no response' or flagged ({k})" for k in methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for kind, r in cf["noise"].items():
            lines.append(f"| {kind} | {r['flagged']} ({r['real_flagged'].value:.3f}) | "
                         + " | ".join(f"{r['no_response_or_flagged'][k]}" for k in methods) + " |")
    if "detected_down_the_waterfall" in cf["noise"]["white"]:
        lines += ["", "The same noise, wave V read down each series' waterfall (training.series.waterfall_waves: "
                      "present from the series' threshold answer up, as a clinician marks it; the recordings.csv "
                      "column `wave_V_waterfall`), real recordings' rate in brackets:", "",
                  "| noise | detected down the waterfall, all levels |", "|---|---|"]
        lines += [f"| {kind} | {r['detected_down_the_waterfall']} ({r['real_detected_down_the_waterfall'].value:.3f}) |"
                  for kind, r in cf["noise"].items()]
    lines += gated_lines(cf)
    s = cf["levels_shuffled"]
    lines += ["", "Each series' levels shuffled among its recordings (share of series whose answer changed):", "",
              "| answer | method | changed | mean change (dB) |", "|---|---|---|---|"]
    lines += [f"| threshold | {k} | {v['changed']} | {v['mean_abs_change_db']} |" for k, v in s["threshold"].items()]
    lines += [f"| type | {k} | {v['changed']} | |" for k, v in s["type"].items()]
    return "\n".join(lines) + "\n"


def gated_lines(cf: dict[str, Any]) -> list[str]:
    """The table of the gated reading (training.series.gated_waves): every check on one reading."""
    if "gated" not in cf:  # a result written before the gated reading
        return []
    g, noise = cf["gated"], cf["noise"]
    rows = []
    for kind, r in noise.items():
        by, own = r["detected_gated_by_level"], r["detected_by_level"]
        hi = max(by, key=lambda k: by[k].value)
        rows += [(f"{kind} noise: detected, all levels", r["detected_gated"], r["detected"]),
                 (f"{kind} noise: detected at its worst level ({hi} dB)", by[hi], own[hi])]
    rows += [(f"no wave V, re-stated at {LOUD_DB:g} dB: moved", g["absent_at_90db"]["difference"],
              cf["absent_at_90db"]["difference"]),
             (f"wave V, re-stated {QUIETER_DB:g} dB lower: moved", g["present_30db_lower"]["difference"],
              cf["present_30db_lower"]["difference"]),
             ("real recordings: detected", noise["white"]["real_detected_gated"], cf["real_detected"])]
    return ["", "Each check on the gated reading (training.series.gated_waves: the recording's own wave V "
                "kept only where its series' threshold answer is a response; the recordings.csv column "
                "`wave_V_gated`), beside the recording's own reading:", "",
            "| check | gated | the recording's own |", "|---|---|---|",
            *(f"| {name} | {gated} | {own} |" for name, gated, own in rows)]


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--patients", type=number(int, ge=1, le=200_000), default=240, help="held-out cohort size")
    p.add_argument("--seed", type=number(int, ge=0), default=COUNTERFACTUAL_SEED, help="cohort generator seed")
    p.add_argument("--domain", default="narrow", choices=("narrow", "wide"), help="the cohort's generator domain")
    p.add_argument("--n-boot", type=number(int, ge=0, le=100_000), default=1000)
    p.add_argument("--device", default="cpu")
    add_output_args(p, "counterfactual")
    args = p.parse_args(argv)
    return run_main(lambda: _run(p, args), debug=args.debug)


def _run(p: ArgumentParser, args: Any) -> int:
    from data.cli import resolve_device
    from data.synthetic import generate
    from training.checkpoint import load_run
    from training.series import load_series

    t0 = time.time()
    device = resolve_device(args.device)
    run = load_run(args.run, which=args.checkpoint, device=device)
    if run.cfg.data.source == "synthetic" and run.cfg.data.synthetic.seed == args.seed:
        p.error(f"--seed {args.seed}: the run trained on that generator seed; the checks need a held-out cohort")
    series_net = load_series(args.run)
    if series_net is not None:
        series_net = series_net.to(device)
    with phase(PROG, f"generating the held-out cohort ({args.patients} patients, seed {args.seed}, "
                     f"{args.domain} domain)"):
        records = generate(args.patients, args.seed, domain=args.domain)
    checks = counterfactuals(run.model, series_net, records, run.stats, seed=args.seed, n_boot=args.n_boot,
                             device=device, judge=unlike_training(run, args.run, device))
    result = {"run": str(args.run), "checkpoint": args.checkpoint, "series_model": series_net is not None,
              "cohort": {"patients": args.patients, "seed": args.seed, "domain": args.domain,
                         "recordings": len(records), "series": len(np.unique(records.series_id))},
              "detection_p": DETECTION_P, "n_boot": args.n_boot, "machine": machine(), "checks": checks,
              "seconds": round(time.time() - t0, 1)}
    section = markdown(result)
    print(section)
    write_outputs(args, "counterfactual", result, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
