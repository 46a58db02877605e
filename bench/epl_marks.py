"""The network's wave I against people's P1 marks on a real recording (issue 25, point 5).

    python bench/epl_marks.py --run RUN --epl PATH/CAP-139-5 \\
        --marks PATH/CAP-139-5-16.0kHz-analyzed.txt PATH/CAP-139-5-16.0kHz-Brad-analyzed.txt \\
        [--names A B] [--also-scale 0.01] [--figure docs/img/epl_marks.png] [--out bench/results/epl_marks.json]
        [--no-doc]

**The data.** The ``abr`` analysis program (Brad Buran, Eaton-Peabody Laboratories) ships one example
compound action potential (CAP) series in the EPL format, ``CAP-139-5`` (13 levels, 0-80 dB SPL, 16 kHz
tone pips, 40/s, 17 ms at 100 kHz), with two analysis files marking P1 and N1 per level (P1, the
auditory-nerve response, is the counterpart of wave I). The files are not in this repository and are not
downloaded at run time: the wheel's METADATA says ``License: UNKNOWN`` (classifier "BSD License") and the
wheel carries no licence text, so whether the recordings may be redistributed is not stated with them.
Get them with the ordinary client::

    pip download abr==0.0.0 --no-deps -d abrpkg && cd abrpkg && unzip ABR-0.0.0-py3-none-any.whl
    # -> abrpkg/abr/data/CAP-139-5, CAP-139-5-16.0kHz-analyzed.txt, CAP-139-5-16.0kHz-Brad-analyzed.txt

(In ABR-0.0.0 the two analysis files are byte-identical; the bench says so where marks files are.)
The tests run this bench on a synthetic EPL file and two analysis files written by
``tests/data/fixtures/make_epl_fixture.py``.

**Reading.** ``data.epl.read_epl`` reads the series unlabelled, as ``evaluation.predict`` does (the
``abr`` program's 300-3000 Hz band-pass, resampled to 20 kHz, first 10 ms, samples taken as µV). The
file lacks static values the network takes; the values used are written into the output:

- age ``--age`` (default 0 years): an animal has no age on the network's scale; 0 is the training data's
  median (mostly infants), the age the network has seen most;
- stimulus rate: the file's header (40/s in CAP-139-5); ``--rate`` only where a header has none;
- FMP: estimated from the record as data/epl.py does (response 2-10 ms over the noise after 12 ms), or ``--fmp``;
- intensity: the file's levels in dB SPL, copied as they are (the network trained on dB nHL).

A CAP is recorded near the nerve: tens of µV (0.8-137 µV peak to peak in CAP-139-5 after the band-pass),
a hundred times a scalp ABR (the training data's wave V: 0.17 µV on average). ``--also-scale 0.01`` runs
the network a second time on the samples times 0.01 and reports it beside the file's µV (a sensitivity
check of the amplitude mismatch, not a calibration: the factor is not fitted to the marks).

**Comparison.** One pass of the network (t = 0); per level its wave I probability and latency beside each
person's P1. For every pair of readers (the network, each person) over the levels where both mark a peak
(the network marks wave I where p >= training.clinical.DETECTION_P; a person's negative latency is no
peak): share within 0.1 / 0.2 ms (training.clinical.LATENCY_TOLERANCES_MS), mean absolute difference, n,
and the levels only one of them marks; for the network also over every level a person marks, whatever its
probability. No target: species, stimulus (tone pips, dB SPL), electrode and sampling differ from the
training data. With one series of 13 levels no interval is given (levels of one animal are not
independent samples).

Writes ``--out`` (JSON), the figure ``--figure`` (the series loudest on top with every reader's marks and
the agreement on the panel) and the section "epl_marks" of docs/results.md.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, add_output_args, machine, write_outputs  # noqa: E402
from data.cli import ArgumentParser, number, run_main  # noqa: E402
from data.records import WAVE_NAMES  # noqa: E402
from training.clinical import DETECTION_P, LATENCY_TOLERANCES_MS  # noqa: E402

WAVE = "I"  # the network's wave compared with the people's P1
PEAK = "P1"
DEFAULT_AGE = 0.0  # years: the training data's median age (see the docstring)
GAP_OF_LOUDEST = 4.0  # see trace_gap
NETWORK_COLORS = ("tab:red", "tab:olive", "tab:cyan")  # --also-scale passes
EPS_MS = 1e-9  # marks are written to 0.01 ms: |1.89 - 1.79| must count as within 0.1 ms
PERSON_STYLE = (("o", "tab:blue", False, 6.0), ("+", "tab:purple", True, 6.0), ("x", "tab:brown", True, 5.0),
                ("s", "tab:gray", False, 5.0))  # marker, colour, filled, size: distinct where marks coincide


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Two readers' latencies (M,) ms, NaN where one marks no peak: over the levels both mark, n, the
    share within each tolerance and the mean absolute difference; the levels only one of them marks."""
    both = np.isfinite(a) & np.isfinite(b)
    d = np.abs(a - b)[both]
    out: dict = {"n": int(both.sum())}
    for tol in LATENCY_TOLERANCES_MS:
        out[f"within_{tol:g}ms"] = float((d <= tol + EPS_MS).mean()) if len(d) else None
        out[f"n_within_{tol:g}ms"] = int((d <= tol + EPS_MS).sum())
    out["mean_abs_diff_ms"] = float(d.mean()) if len(d) else None
    out["n_only_first"] = int((np.isfinite(a) & ~np.isfinite(b)).sum())
    out["n_only_second"] = int((~np.isfinite(a) & np.isfinite(b)).sum())
    return out


def read_series(args: argparse.Namespace, scale: float):
    """The EPL file as unlabelled Records (samples times ``scale``), its report, and the static values used
    with where each came from."""
    from data.convert import epl_filter
    from data.epl import parse_epl, read_epl

    raw = parse_epl(args.epl)
    records, report = read_epl(args.epl, None, args.age, filter_settings=epl_filter(args), scale=scale,
                               fmp=args.fmp, rate=args.rate)
    header_rate = bool(np.isfinite(raw["rate"]))
    static = {
        "age_years": {"value": args.age, "from": "--age" if args.age_given else
                      "default, the training data's median age; an animal has no age on the network's scale"},
        "rate_per_s": {"value": float(records.static[0, 2]), "from": "the file's header" if header_rate else "--rate"},
        "fmp": {"value": records.static[:, 3].tolist(),
                "from": "--fmp" if args.fmp is not None else "estimated from the record as data/epl.py does"},
        "intensity": "the file's levels in dB SPL, as they are; the network trained on dB nHL",
        "scale": scale,
        "peak_to_peak_uv": [float(np.ptp(records.signal, axis=1).min()), float(np.ptp(records.signal, axis=1).max())],
    }
    return records, report, static


def reader_names(args: argparse.Namespace) -> list[str]:
    names = args.names or [chr(ord("A") + i) for i in range(len(args.marks))]
    if len(names) != len(args.marks):
        raise ValueError(f"--names: expected one name per --marks file ({len(args.marks)}), found {len(names)}")
    if len(set(names)) != len(names) or "network" in names or any(" vs " in n for n in names):
        raise ValueError(f"--names: expected distinct names other than 'network' and without ' vs ', found {names}")
    return names


def wave_answers(ev) -> tuple[np.ndarray, np.ndarray]:
    """The network's wave I: probability (M,) and latency (M,) ms."""
    k = WAVE_NAMES.index(WAVE)
    return ev.waves["prob"][:, k].astype(float), ev.waves["latency"][:, k].astype(float)


def compare(levels: np.ndarray, networks: dict[str, tuple[np.ndarray, np.ndarray]], marks: list,
            names: list[str]) -> dict:
    """Per level and per pair of readers: each network pass (label -> wave I probability and latency, (M,)
    each) against each person (their P1), and the people against each other."""
    people = {name: m.at_levels(PEAK, levels) for name, m in zip(names, marks, strict=True)}
    marked = {label: np.where(prob >= DETECTION_P, lat, np.nan) for label, (prob, lat) in networks.items()}
    order = np.argsort(-levels, kind="stable")
    per_level = [{"level": float(levels[i]),
                  "networks": {label: {"prob": float(p[i]), "latency_ms": float(lat[i])}
                               for label, (p, lat) in networks.items()},
                  "people": {name: float(people[name][i]) for name in names}} for i in order]
    pairs = {f"{net} vs {name}": agreement(marked[net], people[name]) for net in networks for name in names}
    pairs |= {f"{a} vs {b}": agreement(people[a], people[b]) for a, b in itertools.combinations(names, 2)}
    pairs |= {f"{net} (any p) vs {name}": agreement(networks[net][1], people[name]) for net in networks
              for name in names}
    return {"per_level": per_level, "pairs": pairs, "people": people}


def file_notes(marks: list, names: list[str], levels: np.ndarray) -> list[str]:
    """What a reader of the numbers must know about the marks files themselves."""
    notes = []
    digests = [hashlib.sha256(m.path.read_bytes()).hexdigest() for m in marks]
    for (i, a), (j, b) in itertools.combinations(enumerate(digests), 2):
        if a == b:
            notes.append(f"the marks files of {names[i]} and {names[j]} are byte-identical: their agreement is "
                         "that of one analysis with itself, not of two independent readers")
    for name, m in zip(names, marks, strict=True):
        if PEAK not in m.latency:
            notes.append(f"{name} ({m.path.name}): no '{PEAK} Latency' column: nothing to compare")
        extra = sorted(set(m.levels.tolist()) - set(levels.tolist()))
        if extra:
            notes.append(f"{name} ({m.path.name}): levels with no waveform in the EPL file: {extra}")
    return notes


def main(argv: list[str] | None = None) -> int:
    from data.convert import add_epl_signal_flags
    from evaluation.predict import static_flag

    p = ArgumentParser(prog="bench/epl_marks.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a run with the wave map head (model.peak_head: map)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--epl", required=True, type=Path, help="the EPL file (e.g. CAP-139-5)")
    p.add_argument("--marks", required=True, nargs="+", type=Path, help="abr analysis files, one per person")
    p.add_argument("--names", nargs="+", help="the people's names in the outputs (default A, B, ...)")
    p.add_argument("--figure", type=Path, default=ROOT / "docs" / "img" / "epl_marks.png")
    p.add_argument("--age", type=static_flag("age"), help=f"age in years (default {DEFAULT_AGE:g}; see above)")
    p.add_argument("--rate", type=static_flag("rate"), help="stimulus rate per second, where the header has none")
    p.add_argument("--fmp", type=static_flag("fmp"), help="FMP instead of the estimate from the record")
    add_epl_signal_flags(p.add_argument_group("epl"))
    p.add_argument("--also-scale", nargs="+", type=number(float, gt=0), default=[], metavar="FACTOR",
                   help="also run the network on the samples times FACTOR (e.g. 0.01: a CAP's tens of µV into the "
                        "ABR range the network trained on); reported beside the --scale pass")
    add_output_args(p, "epl_marks")
    args = p.parse_args(argv)
    args.age_given = args.age is not None
    args.age = DEFAULT_AGE if args.age is None else args.age
    return run_main(lambda: _run(args, argv), debug=args.debug)


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from data.dataset import ABRDataset
    from data.epl import parse_marks
    from training.checkpoint import load_run
    from training.series import extract

    t0 = time.time()
    names = reader_names(args)
    marks = [parse_marks(path) for path in args.marks]
    run = load_run(args.run, which=args.checkpoint)
    if run.cfg.model.peak_head != "map":
        raise ValueError(f"--run '{args.run}': expected a run with the wave map head (model.peak_head: map), "
                         f"found model.peak_head: {run.cfg.model.peak_head} (no wave I answer)")
    records, report, static = read_series(args, args.scale)
    print("; ".join(report.lines()), flush=True)
    ev = extract(run.model, ABRDataset(records, run.stats))
    networks = {"network": wave_answers(ev)}
    for scale in args.also_scale:  # the same series with its samples multiplied by another factor
        networks[f"network x{scale:g}"] = wave_answers(extract(run.model, ABRDataset(read_series(args, scale)[0],
                                                                                     run.stats)))
    found = compare(ev.static[:, 1], networks, marks, names)
    result = {
        "run": args.run, "checkpoint": args.checkpoint, "epl": str(args.epl), "n_levels": len(records),
        "people": {name: {"file": str(m.path), "threshold": m.threshold, "peaks": list(m.latency)}
                   for name, m in zip(names, marks, strict=True)},
        "static": static, "also_scale": args.also_scale, "detection_p": DETECTION_P,
        "per_level": found["per_level"], "pairs": found["pairs"],
        "notes": file_notes(marks, names, ev.static[:, 1]), "machine": machine(),
        "command": "python bench/epl_marks.py " + " ".join(sys.argv[1:] if argv is None else map(str, argv)),
    }
    draw(args, records.signal, ev.static[:, 1], networks, found, names, result)
    result["figure"] = str(args.figure)
    result["seconds"] = round(time.time() - t0, 1)
    section = table(result, os.path.relpath(args.figure, Path(args.doc).resolve().parent))
    print(section)
    write_outputs(args, "epl_marks", result, f"## Wave {WAVE} against people's {PEAK} marks on a real CAP series "
                                              f"(bench/epl_marks.py)\n\n" + section)
    return 0


def panel_note(pairs: dict) -> str:
    """The agreement lines on the figure's panel (the pairs over levels both mark)."""
    tols = " / ".join(f"{t:g}" for t in LATENCY_TOLERANCES_MS)
    lines = [f"network: wave {WAVE} filled where p ≥ {DETECTION_P:g}; ×F: the samples times F",
             f"within {tols} ms, mean |Δ| (levels both mark):"]
    for pair, a in pairs.items():
        if "(any p)" in pair:
            continue
        if a["n"] == 0:
            lines.append(f"{pair}: no level both mark")
            continue
        shares = " / ".join(f"{a[f'n_within_{t:g}ms']}/{a['n']}" for t in LATENCY_TOLERANCES_MS)
        mad = "-" if a["mean_abs_diff_ms"] is None else f"{a['mean_abs_diff_ms']:.2f} ms"
        lines.append(f"{pair}: {shares}, {mad}")
    return "\n".join(lines)


def trace_gap(signal: np.ndarray) -> float:
    """The waterfall's trace spacing (µV): the loudest trace spans about GAP_OF_LOUDEST spacings. A CAP series
    grows a hundredfold over its levels (0.8 to 137 µV peak to peak in CAP-139-5): the print-out spacing (0.9
    times the median) stacks the loud traces on top of each other, while this one flattens the quietest."""
    ptp = np.ptp(signal, axis=1)
    return float(max(0.9 * np.median(ptp), ptp.max() / GAP_OF_LOUDEST, 1e-6))


def draw(args: argparse.Namespace, signal: np.ndarray, levels: np.ndarray, networks: dict, found: dict,
         names: list[str], result: dict) -> Path:
    """The waterfall of ``signal`` (M L) µV with every reader's marks and the agreement on the panel."""
    from evaluation.plots import EARLY_WAVE_STYLE, TraceMark, Waterfall

    marks = [TraceMark(f"{PEAK}, {name}", found["people"][name], m, c, filled, size)
             for name, (m, c, filled, size) in zip(names, PERSON_STYLE, strict=False)]
    colors = (EARLY_WAVE_STYLE[0][1], *NETWORK_COLORS)  # the first pass: wave I as evaluation.predict marks it
    for (label, (prob, lat)), color in zip(networks.items(), colors, strict=False):
        short = label.replace("network x", "×")  # legend columns are 1.8 in wide
        marks += [TraceMark(f"{WAVE}, {short}", np.where(prob >= DETECTION_P, lat, np.nan), "v", color, True, 4.5,
                            above=True),
                  TraceMark(f"{WAVE}, {short}, p < {DETECTION_P:g}", np.where(prob < DETECTION_P, lat, np.nan), "v",
                            color, False, 4.5, above=True)]
    title = f"{Path(args.epl).name}: {result['n_levels']} levels; run {Path(args.run).name} ({args.checkpoint}.pt)"
    Waterfall().draw(signal, levels, None, None,
                     float("inf"), args.figure, title=title, units="dB SPL", marks=marks,
                     note=panel_note(result["pairs"]), gap=trace_gap(signal))
    print(f"wrote {args.figure}")
    return args.figure


def _ms(v: float | None, signed: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def table(result: dict, figure_link: str) -> str:
    """The section: what was read and assumed, the agreement per pair, the per-level rows, the figure."""
    names = list(result["people"])
    st = result["static"]
    fmp = st["fmp"]["value"]
    lines = [f"Series `{Path(result['epl']).name}` ({result['n_levels']} levels), run `{result['run']}` "
             f"({result['checkpoint']}.pt); marks: " + ", ".join(f"{n} = `{Path(v['file']).name}`"
                                                                 for n, v in result["people"].items()) + ".",
             f"Static values: age {st['age_years']['value']:g} y ({st['age_years']['from']}); rate "
             f"{st['rate_per_s']['value']:g}/s ({st['rate_per_s']['from']}); FMP {min(fmp):.3g}-{max(fmp):.3g} "
             f"({st['fmp']['from']}); intensity: {st['intensity']}; peak-to-peak {st['peak_to_peak_uv'][0]:.3g}-"
             f"{st['peak_to_peak_uv'][1]:.3g} µV after the band-pass (x{st['scale']:g}). No target: species, stimulus "
             "and recording differ from the training data.",
             f"Command: `{result['command']}`; {result['machine']}.", ""]
    lines += [f"**{note[0].upper()}{note[1:]}.**" for note in result["notes"]]
    tols = LATENCY_TOLERANCES_MS
    lines += ["", f"| readers ({WAVE} / {PEAK}) | n levels both mark | "
              + " | ".join(f"within {t:g} ms" for t in tols) + " | mean abs. difference (ms) | marked by one only |",
              "|---|---|" + "---|" * len(tols) + "---|---|"]
    for pair, a in result["pairs"].items():
        shares = " | ".join("-" if a[f"within_{t:g}ms"] is None else
                            f"{a[f'within_{t:g}ms']:.0%} ({a[f'n_within_{t:g}ms']}/{a['n']})" for t in tols)
        first, second = pair.split(" vs ")
        lines.append(f"| {pair} | {a['n']} | {shares} | {_ms(a['mean_abs_diff_ms'])} | "
                     f"{first}: {a['n_only_first']}, {second}: {a['n_only_second']} |")
    nets = list(result["per_level"][0]["networks"])
    also = "".join(f"; \"{n}\": the same samples times {n.split(' x')[-1]}" for n in nets[1:])
    lines += ["", f"The network marks wave {WAVE} where its probability is >= {result['detection_p']:g}; "
              f"\"(any p)\": its latency at every level whatever the probability{also}.", "",
              "| level (dB SPL) | " + " | ".join(f"p({WAVE}), {n} | {WAVE} (ms), {n}" for n in nets) + " | "
              + " | ".join(f"{n} {PEAK} (ms)" for n in names) + " | "
              + " | ".join(f"{net} - {n}" for net in nets for n in names) + " |",
              "|---|" + "---|" * (2 * len(nets) + len(names) + len(nets) * len(names))]
    for row in result["per_level"]:
        people = [row["people"][n] for n in names]
        answers = [row["networks"][n] for n in nets]
        lines.append(f"| {row['level']:g} | " + " | ".join(f"{a['prob']:.2f} | {_ms(a['latency_ms'])}" for a in answers)
                     + " | " + " | ".join(_ms(v) for v in people) + " | "
                     + " | ".join(_ms(a["latency_ms"] - v, signed=True) for a in answers for v in people) + " |")
    lines += ["", f"![wave {WAVE} against {PEAK} marks]({figure_link})"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
