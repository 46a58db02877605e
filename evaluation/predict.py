"""Predict on a clinic's own recordings: answers per recording, per series, and a waterfall per series.

    python -m evaluation.predict --run logs/EXP INPUT... --out DIR [--checkpoint best|last]
        [--format auto|native|csv|epl|legacy] [--age YEARS] [--rate PER_S] [--fmp VALUE]
        [--patient-id N] [--columns ...] [--no-figures] [--overwrite] [--device auto] [--debug]

INPUT: files in any format the pipeline reads (native .npz, CSV, EPL, legacy pickle; detected from
the name and the first bytes, or ``--format``), or folders of them. Labels are not needed (a
recording without class, threshold or wave V marks is valid input); labels that are there are
checked and otherwise ignored. Static values a format lacks come from ``--age``, ``--rate`` and
``--fmp`` (a file that has them keeps its own); without them the command stops with one line naming
the flag. Every EPL file is one series (its file name is the series id), so the files of a patient's
folder give one waterfall each.

DIR receives:

- ``recordings.csv``: one row per usable recording: source file and sample, patient, series,
  static values, class probabilities, wave V probability, latency (ms) and amplitude (µV), warnings;
- ``patients.csv``: one row per series: threshold (dB or "no response") with its 10-90 % interval,
  type with its probabilities, recordings used, warnings; from the run's series model when the run
  has ``checkpoints/series.pt``, else from the rule (lowest level with a consistent wave V) and the
  summed per-recording evidence; the ``method`` columns say which;
- ``waterfall_<patient>_<series>.png`` per series (loudest level on top);
- ``summary.md``: counts, the run, checkpoint and code used, warnings, and every recording that could
  not be used with its reason.

The per-series answers come from ``training.series.series_answers``, the code ``evaluation.evaluate``
scores in its per-patient section. Existing outputs in DIR are replaced only with ``--overwrite``, and
only those an earlier prediction wrote (``DIR/.outputs.json`` lists them; it also removes the previous
``waterfall_*.png``; other files in DIR are left alone); DIR is never one of the inputs, an input's
folder, or inside another run's directory.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.cli import ArgumentParser, check_number, check_outputs, number, record_outputs, resolve_device, run_main
from data.records import CLASS_NAMES, RANGES, STATIC_NAMES, WAVE_NAMES, DataFormatError, Records, ValidationReport
from evaluation.coherence import coherence
from evaluation.familiarity import UNLIKE, VERDICTS
from training.clinical import DETECTION_P

PROG = "python -m evaluation.predict"
TABLES = ("recordings.csv", "patients.csv", "summary.md")
FIGURE_GLOB = "waterfall_*.png"
FORMATS = ("auto", "native", "csv", "epl", "legacy")
STATIC_FLAGS = ("age", "rate", "fmp")  # the static values a format may lack; intensity must be in the data
NO_RESPONSE = "no response"
ANALYSIS_NOTE = "an abr analysis file (marked peaks and threshold: labels, not needed to predict; not read)"
METHODS = {"series_model": "series model", "rule": "rule"}
TYPE_METHODS = {"series_model": "series model", "rule": "summed evidence"}


# ------------------------------------------------------------------------------------------------
# reading


@dataclass
class Source:
    """One input file: its format and what reading it kept and dropped."""

    path: Path
    fmt: str  # "epl" files give one series each, named after the file
    report: ValidationReport


@dataclass
class Batch:
    """The usable recordings of every input (N rows), grouped into series by an internal key."""

    records: Records  # series_id: the internal key 0..S-1 of (file, series)
    source: np.ndarray  # (N,) index into sources
    sample: np.ndarray  # (N,) the recording's index in its file
    names: list[tuple[str, str]]  # per internal key: (patient, series) as the user knows them
    sources: list[Source]
    not_read: list[tuple[Path, str]] = field(default_factory=list)  # files in input folders, with the reason


def expand_inputs(inputs: Sequence[Path], fmt: str) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(file, format) for every input; a folder gives its files (sorted; hidden files left out, and
    subfolders, which are listed). A file named on the command line must be readable; a file in a
    folder whose format cannot be told is returned with the reason instead (the summary lists it)."""
    from data.convert import detect_format

    files: list[tuple[Path, str]] = []
    not_read: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for given in inputs:
        if not given.exists():
            raise DataFormatError(f"INPUT '{given}': file not found")
        in_folder = given.is_dir()
        if in_folder:
            not_read += [(d, "a folder inside an input folder (not searched; name it to read it)")
                         for d in sorted(given.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        for path in sorted(p for p in given.iterdir() if p.is_file() and not p.name.startswith(".")) \
                if in_folder else [given]:
            if path.resolve() in seen:
                raise ValueError(f"INPUT '{path}': given twice; expected each file once")
            seen.add(path.resolve())
            try:
                files.append((path, detect_format(path) if fmt == "auto" else fmt))
            except DataFormatError:
                if not in_folder:
                    raise DataFormatError(f"INPUT '{path}': cannot tell the format from the name or content; "
                                          f"pass --format {{{','.join(FORMATS[1:])}}}") from None
                not_read.append((path, ANALYSIS_NOTE if path.name.endswith("-analyzed.txt") else
                                 "format not recognised (not read; pass --format to force one)"))
        if in_folder and not any(p.parent == given for p, _ in files):
            raise DataFormatError(f"INPUT '{given}': a folder with no recording file this command reads")
    return files, not_read


def read_inputs(args: argparse.Namespace) -> Batch:
    """Read every input leniently and unlabelled; stop at the first file that cannot be used at all."""
    from data.convert import read_any

    files, not_read = expand_inputs(args.inputs, args.format)
    fill = {k: getattr(args, k) for k in STATIC_FLAGS if getattr(args, k) is not None}
    # EPL files carry no patient id: the records hold 0 unless --patient-id says, the tables leave it blank
    reading = argparse.Namespace(**{**vars(args), "patient_id": args.patient_id or 0})
    parts, sources, names, keys, sample, source = [], [], [], [], [], []
    for i, (path, fmt) in enumerate(files):
        records, report = read_any(path, fmt, reading, labelled=False, fill=fill)
        sources.append(Source(path, fmt, report))
        ids, first, key = np.unique(records.series_id, return_index=True, return_inverse=True)
        if fmt == "epl":  # one series per file, named after it
            names.append(("" if args.patient_id is None else str(args.patient_id), path.name))
        else:
            names += [(str(records.patient_id[j]), str(ids[k])) for k, j in enumerate(first)]
        keys.append(key + sum(len(np.unique(k)) for k in keys))
        parts.append(records)
        sample.append(report.kept)
        source.append(np.full(len(records), i))
    all_records = Records.concatenate(parts, meta={})
    all_records.series_id = np.concatenate(keys).astype(np.int64)
    return Batch(all_records, np.concatenate(source), np.concatenate(sample), names, sources, not_read)


# ------------------------------------------------------------------------------------------------
# answering


@dataclass
class Trust:
    """How far to trust the answers: the input check's verdicts (None when the run has no familiarity.json)
    and whether the probabilities and intervals were temperature-scaled (the run's calibration.json)."""

    verdicts: Any  # evaluation.familiarity.Verdicts or None
    calibrated: bool
    note: str  # one line for summary.md (and stderr when something is missing)

    def recording(self, i: int) -> dict[str, str]:
        if self.verdicts is None:
            return {"input_check": NOT_CHECKED, "input_score": "", "input_reason": ""}
        v = self.verdicts
        return {"input_check": v.verdict[i], "input_score": f"{v.score[i]:.3f}", "input_reason": v.reason[i]}

    def series(self, s: int) -> dict[str, str]:
        if self.verdicts is None:
            return {"input_check": NOT_CHECKED, "input_score": "", "input_reason": ""}
        v = self.verdicts
        return {"input_check": v.series_verdict[s], "input_score": f"{v.series_score[s]:.3f}",
                "input_reason": v.series_reason[s]}


NOT_CHECKED = "not checked"


def calibrate_and_check(args: argparse.Namespace, loaded: Any, series_net: Any, batch: Batch, dataset: Any, ev: Any,
                        answers: Any, device: Any) -> tuple[Any, Any, Trust]:
    """Temperature-scale the answers with the run's calibration.json and judge every recording and series
    against its familiarity.json (evaluation.trust fits both); either file missing is said, not hidden."""
    from evaluation.calibration import Calibration, apply, raw_answers
    from evaluation.familiarity import Familiarity, Inputs, check

    cal = Calibration.load(args.run)
    if cal is not None:
        ev, answers = apply(ev, answers, raw_answers(ev, series_net)[1], cal)
    fam = Familiarity.load(args.run)
    verdicts = None
    if fam is not None:
        inp = Inputs(batch.records.signal, dataset.tensors["signal"], dataset.tensors["static"], ev.evidence)
        verdicts = check(fam, inp, loaded.model, loaded.diffusion, answers.series, device=device,
                         batch_size=args.batch_size)
    missing = [f for f, x in (("familiarity.json", fam), ("calibration.json", cal)) if x is None]
    note = ("input check and calibration fitted on the run's training and validation splits" if not missing else
            f"the run has no {' or '.join(missing)}: "
            + ("inputs not checked against the training data" if fam is None else "input check done")
            + ("; probabilities and intervals uncalibrated" if cal is None else "; calibrated")
            + f" (fit them with: python -m evaluation.trust --run {args.run})")
    return ev, answers, Trust(verdicts, cal is not None, note)


def training_span(stats: Any) -> tuple[dict[str, tuple[float, float]], str]:
    """The static values the run trained on, {name: (low, high)}, and where the span comes from: the
    run's statistics when they record it, else the clinical intensity grid (0-100 dB) only."""
    from training.clinical import MAX_LEVEL_DB

    if stats.static_min is not None and stats.static_max is not None:
        return ({n: (float(lo), float(hi)) for n, lo, hi in zip(STATIC_NAMES, stats.static_min, stats.static_max,
                                                                  strict=True)},
                "the run's training split")
    return {"intensity": (0.0, MAX_LEVEL_DB)}, "the clinical grid 0-100 dB (the run's statistics record no span)"


def recording_warnings(static: np.ndarray, span: dict[str, tuple[float, float]]) -> list[dict[str, str]]:
    """Per recording (N): {static name: warning} for each value outside the training span."""
    out: list[dict[str, str]] = [{} for _ in range(len(static))]
    units = {n: u for n, (_, _, u) in RANGES.items()}
    for name, (low, high) in span.items():
        v = static[:, STATIC_NAMES.index(name)]
        for i in np.flatnonzero((v < low) | (v > high)):
            out[i][name] = f"{name} {v[i]:.4g} {units[name]} outside the training range {low:.4g} to {high:.4g}"
    return out


def series_warnings(batch: Batch, answers: Any, rec_warnings: list[dict[str, str]]) -> list[list[str]]:
    """Per series: how many of its recordings lie outside the training span (per static value), too few
    levels, levels in another unit (EPL)."""
    out = []
    for rows in answers.series.members:
        w = []
        for name in STATIC_NAMES:
            outside = sum(1 for r in rows if name in rec_warnings[r])
            if outside:
                w.append(f"{name}: {outside} of {len(rows)} recordings outside the training range")
        levels = np.unique(batch.records.static[rows, 1])
        if len(levels) < 3:
            w.append(f"only {len(levels)} level(s): the threshold rests on little")
        if batch.sources[batch.source[rows[0]]].fmt == "epl":
            w.append("levels as in the EPL file (dB SPL); the model was trained on dB nHL")
        out.append(w)
    return out


def fmt_db(value: float) -> str:
    from training.clinical import NO_RESPONSE_DB

    return NO_RESPONSE if value >= NO_RESPONSE_DB else f"{value:g}"


def threshold_text(db: float, interval: tuple[float, float] | None) -> str:
    """``35 dB (10-90 %: 30-45 dB)``, ``no response (10-90 %: 100 dB to no response)``."""
    def unit(v: float) -> str:
        return fmt_db(v) + ("" if fmt_db(v) == NO_RESPONSE else " dB")

    if interval is None:
        return unit(db)
    low, high = interval
    span = (unit(low) if fmt_db(low) == fmt_db(high) else f"{unit(low)} to {NO_RESPONSE}"
            if fmt_db(high) == NO_RESPONSE else f"{fmt_db(low)}-{unit(high)}")
    return f"{unit(db)} (10-90 %: {span})"


def recordings_rows(batch: Batch, ev: Any, answers: Any, warnings: list[dict[str, str]], order: np.ndarray,
                    trust: Trust, read: dict[str, np.ndarray] | None, gated: np.ndarray) -> list[dict[str, Any]]:
    """``read``: the waves read down the waterfall (:func:`training.series.waterfall_waves`), or None;
    ``gated`` (N 3): each wave's probability kept only in a series with a response
    (:func:`training.series.gated_waves`'s "prob")."""
    replication, waterfall = replication_cells(ev), waterfall_cells(read, len(ev.static))
    rows = []
    for i in order:
        patient, series = batch.names[batch.records.series_id[i]]
        age, level, rate, fmp = (float(v) for v in ev.static[i])
        rows.append({
            "source": str(batch.sources[batch.source[i]].path), "sample": int(batch.sample[i]),
            "patient": patient, "series": series, "intensity_db": f"{level:g}", "rate_per_s": f"{rate:g}",
            "age_years": f"{age:g}", "fmp": f"{fmp:.4g}",
            "class": CLASS_NAMES[int(ev.proba[i].argmax())],
            **{f"p_{c}": f"{ev.proba[i, k]:.4f}" for k, c in enumerate(CLASS_NAMES)},
            "wave_v_probability": f"{ev.peak_prob[i]:.4f}",
            "wave_v": "present" if ev.peak_prob[i] >= DETECTION_P else "absent",
            "latency_ms": f"{ev.latency[i]:.3f}", "amplitude_uv": f"{ev.amplitude[i]:.4f}",
            **early_wave_cells(ev, i), **waterfall[i], **gated_cells(gated[i]), **replication[i],
            **trust.recording(i),
            "warnings": "; ".join(warnings[i].values()),
        })
    return rows


def early_wave_cells(ev: Any, i: int) -> dict[str, str]:
    """Waves I and III of recording ``i`` and the interpeak intervals (ms) between detected waves; empty
    cells where the network has no wave map head (``model.peak_head: pooled``) or a wave is absent."""
    if ev.waves is None:
        return {}
    prob, lat, amp = (ev.waves[k][i] for k in ("prob", "latency", "amplitude"))  # (3,) each: I, III, V
    found = prob >= DETECTION_P
    cells = {}
    for k, name in enumerate(WAVE_NAMES[:-1]):
        cells |= {f"wave_{name}_probability": f"{prob[k]:.4f}", f"wave_{name}": "present" if found[k] else "absent",
                  f"wave_{name}_latency_ms": f"{lat[k]:.3f}" if found[k] else "",
                  f"wave_{name}_amplitude_uv": f"{amp[k]:.4f}" if found[k] else ""}
    for a, b in INTERPEAKS:
        ka, kb = WAVE_NAMES.index(a), WAVE_NAMES.index(b)
        cells[f"interpeak_{a}_{b}_ms"] = f"{lat[kb] - lat[ka]:.3f}" if found[ka] and found[kb] else ""
    return cells


def waterfall_cells(read: dict[str, np.ndarray] | None, n: int) -> list[dict[str, str]]:
    """Per recording (``n``): each wave read down its series' waterfall (training.series.waterfall_waves:
    presence non-decreasing in level, wave V present from the series' threshold answer up, latency at the peak
    that fits the series' latency-intensity function); none where the network has no wave map head."""
    if read is None:
        return [{} for _ in range(n)]
    found = read["prob"] >= DETECTION_P  # (N 3)
    lat = read["latency"]  # (N 3) ms
    return [{c: cell for k, name in enumerate(WAVE_NAMES)
             for c, cell in ((f"wave_{name}_waterfall", "present" if found[i, k] else "absent"),
                             (f"wave_{name}_waterfall_latency_ms", f"{lat[i, k]:.3f}" if found[i, k] else ""))}
            for i in range(n)]


def gated_cells(prob: np.ndarray) -> dict[str, str]:
    """One recording's waves (``prob`` (3,), NaN where unread) gated by its series' response
    (training.series.gated_waves): present where the recording's own reading says so and its series' threshold
    answer is a response; empty for a wave the network does not read (the pooled head's waves I and III)."""
    return {f"wave_{name}_gated": "" if np.isnan(p) else "present" if p >= DETECTION_P else "absent"
            for name, p in zip(WAVE_NAMES, prob, strict=True)}


INTERPEAKS = (("I", "III"), ("III", "V"), ("I", "V"))  # the clinical interpeak intervals
REPLICATION_COLUMNS = ("correlation_louder", "correlation_quieter", "correlation_loudest")


def replication_cells(ev: Any) -> list[dict[str, str]]:
    """Per recording: its level coherence (models.series.level_coherence, the series model's input with
    series.coherence) as REPLICATION_COLUMNS: the correlation with the next louder and the next quieter
    recording of its series and with the loudest; empty where there is no such recording."""
    from training.clinical import series_index

    n = len(ev.static)
    if ev.coherence is None:
        return [{} for _ in range(n)]
    c = ev.coherence  # (N 3)
    has = np.zeros((n, 3), dtype=bool)  # (N 3): which neighbour exists
    for rows in series_index(ev.series_id, ev.static[:, 1]).members:
        if len(rows) > 1:
            has[rows[:-1], 0] = has[rows[1:], 1] = has[rows, 2] = True
    return [{name: f"{c[i, k]:.3f}" if has[i, k] else "" for k, name in enumerate(REPLICATION_COLUMNS)}
            for i in range(n)]


def patients_rows(batch: Batch, answers: Any, warnings: list[list[str]], figures: list[str], trust: Trust,
                  flags: list[list[str]]) -> list[dict[str, Any]]:
    best = answers.best
    thr, types = answers.thresholds[best], answers.types[best]
    slopes = answers.li_slopes
    rows = []
    for s, members in enumerate(answers.series.members):
        patient, series = batch.names[answers.series.ids[s]]
        levels = batch.records.static[members, 1]
        low, high = (fmt_db(answers.interval[0][s]), fmt_db(answers.interval[1][s])) if answers.interval else ("", "")
        rows.append({
            "source": str(batch.sources[batch.source[members[0]]].path), "patient": patient, "series": series,
            "n_recordings": len(members), "levels_db": f"{levels.min():g}-{levels.max():g}",
            "threshold_db": fmt_db(thr[s]), "threshold_low_db": low, "threshold_high_db": high,
            "threshold_method": METHODS[best], "rule_threshold_db": fmt_db(answers.thresholds["rule"][s]),
            "type": CLASS_NAMES[int(types[s].argmax())],
            **{f"p_{c}": f"{types[s, k]:.4f}" for k, c in enumerate(CLASS_NAMES)},
            "type_method": TYPE_METHODS[best], "li_slope_ms_per_db": _slope_text(slopes[s]), **trust.series(s),
            "coherence": "; ".join(flags[s]), "warnings": "; ".join(warnings[s]), "figure": figures[s],
        })
    return rows


def _slope_text(slope: float) -> str:
    return f"{slope:.4f}" if np.isfinite(slope) else ""


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)


TRUST_COLUMNS = ("input_check", "input_score", "input_reason")
RECORDING_COLUMNS = ("source", "sample", "patient", "series", "intensity_db", "rate_per_s", "age_years", "fmp",
                     "class", *(f"p_{c}" for c in CLASS_NAMES), "wave_v_probability", "wave_v", "latency_ms",
                     "amplitude_uv",
                     *(f"wave_{w}{part}" for w in WAVE_NAMES[:-1]
                       for part in ("_probability", "", "_latency_ms", "_amplitude_uv")),
                     *(f"interpeak_{a}_{b}_ms" for a, b in INTERPEAKS),
                     *(f"wave_{w}_waterfall{part}" for w in WAVE_NAMES for part in ("", "_latency_ms")),
                     *(f"wave_{w}_gated" for w in WAVE_NAMES),
                     *REPLICATION_COLUMNS, *TRUST_COLUMNS,
                     "warnings")
PATIENT_COLUMNS = ("source", "patient", "series", "n_recordings", "levels_db", "threshold_db", "threshold_low_db",
                   "threshold_high_db", "threshold_method", "rule_threshold_db", "type",
                   *(f"p_{c}" for c in CLASS_NAMES), "type_method", "li_slope_ms_per_db", *TRUST_COLUMNS, "coherence",
                   "warnings", "figure")


def figure_names(names: list[tuple[str, str]]) -> list[str]:
    """``waterfall_<patient>_<series>.png`` per series (characters other than letters, digits, ``.-``
    become ``_``; a clash gets ``_2``, ``_3``...)."""
    out, used = [], Counter()
    for patient, series in names:
        stem = "_".join(re.sub(r"[^A-Za-z0-9.-]+", "_", p) for p in (patient, series) if p)
        used[stem] += 1
        out.append(f"waterfall_{stem}{'' if used[stem] == 1 else f'_{used[stem]}'}.png")
    return out


class FigureDrawer:
    """Draws the waterfalls (one :class:`evaluation.plots.Waterfall` per process, reused from series to
    series): here, or in ``workers`` processes forked when the drawer is made. Make it before torch is
    imported, so the forks are small and start importing matplotlib while the network runs (forking
    later copies a process that holds torch and the model, and every reference count touched in the
    fork costs a page)."""

    def __init__(self, workers: int) -> None:
        self.pool = None
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
            for _ in range(workers):
                self.pool.submit(_draw, None)  # each process imports matplotlib and makes its figure now
        self.workers = workers

    def draw(self, jobs: list[dict[str, Any]]) -> None:
        if self.pool is None:
            for job in jobs:
                _draw(job)
        else:
            list(self.pool.map(_draw, jobs, chunksize=max(1, len(jobs) // (4 * self.workers))))

    def __enter__(self) -> FigureDrawer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


_WATERFALL = None  # this process's reused figure


def _draw(job: dict[str, Any] | None) -> None:
    """Draw one waterfall (``None``: only get ready)."""
    global _WATERFALL
    from evaluation.plots import Waterfall

    if _WATERFALL is None:
        _WATERFALL = Waterfall()
    if job is not None:
        _WATERFALL.draw(**job)


def wave_marks(ev: Any, read: dict[str, np.ndarray] | None, members: np.ndarray, threshold_db: float
               ) -> dict[str, Any]:
    """What a series' waterfall marks (Waterfall.draw's ``peak_prob``, ``latency``, ``early_waves``,
    ``wave_label``; rows ``members``). With the waterfall reading (``read``, training.series.waterfall_waves),
    the waves as a clinician traces them: wave V at and above the series' threshold at the latency that fits
    the series' latency-intensity function, waves I and III where read present; below the threshold the
    recording's own wave V detections stay, drawn open (not counted). Without it, each recording's own answers."""
    level = ev.static[members, 1]
    if read is None:
        return {"peak_prob": ev.peak_prob[members], "latency": ev.latency[members],
                "early_waves": None if ev.waves is None else (ev.waves["prob"][members, :2],
                                                              ev.waves["latency"][members, :2])}
    v = WAVE_NAMES.index("V")
    counted = level >= threshold_db  # (n,) where read["prob"][:, V] is 1
    return {"peak_prob": np.where(counted, read["prob"][members, v], ev.peak_prob[members]),
            "latency": np.where(counted, read["latency"][members, v], ev.latency[members]),
            "early_waves": (read["prob"][members, :2], read["latency"][members, :2]),
            "wave_label": "wave V (waterfall)"}


def waterfall_jobs(out: Path, batch: Batch, ev: Any, answers: Any, names: list[str], trust: Trust,
                   read: dict[str, np.ndarray] | None):
    """The arguments of plot_waterfall for each series (plain arrays and strings: they cross processes);
    ``read``: the waves read down the waterfall, or None (:func:`wave_marks`)."""
    best = answers.best
    for s, members in enumerate(answers.series.members):
        patient, series = batch.names[answers.series.ids[s]]
        p = answers.types[best][s]
        k = int(p.argmax())
        thr = float(answers.thresholds[best][s])
        interval = (float(answers.interval[0][s]), float(answers.interval[1][s])) if answers.interval else None
        who = (f"patient {patient}" if patient == series else
               f"patient {patient}, series {series}" if patient else f"series {series}")
        check = trust.series(s)
        flagged = check["input_check"] not in (VERDICTS[0], NOT_CHECKED)
        title = (("INPUT " + check["input_check"].upper() + ": answers below not to be trusted\n" if flagged else "")
                 + f"{who}\n{CLASS_NAMES[k]} (p = {p[k]:.2f}), by the {METHODS[best]}\n"
                 f"threshold: {threshold_text(thr, interval)}")
        epl = batch.sources[batch.source[members[0]]].fmt == "epl"
        yield {"signal": batch.records.signal[members], "intensity": ev.static[members, 1], "threshold_db": thr,
               "path": out / names[s], "title": title, "interval": interval,
               "note": f"input check: {check['input_check']}" + (f" ({check['input_reason']})" if flagged else ""),
               "units": "dB, as in the file" if epl else "dB nHL", **wave_marks(ev, read, members, thr)}


# ------------------------------------------------------------------------------------------------
# summary


def trust_lines(batch: Batch, answers: Any, trust: Trust, flags: list[list[str]]) -> list[str]:
    """The opening of summary.md: verdict counts (series and recordings), then each series not in range
    and each contradictory answer, with its reason."""
    if trust.verdicts is None:
        lines = [f"**Input check: not done.** {trust.note}", ""]
    else:
        c, r = trust.verdicts.counts("series"), trust.verdicts.counts("recordings")
        lines = ["**Input check** (series): " + ", ".join(f"{c[v]} {v}" for v in VERDICTS)
                 + "; recordings: " + ", ".join(f"{r[v]} {v}" for v in VERDICTS) + ".", ""]
        odd = [s for s, v in enumerate(trust.verdicts.series_verdict) if v != VERDICTS[0]]
        lines += [f"- {' / '.join(filter(None, batch.names[answers.series.ids[s]]))}: "
                  f"**{trust.verdicts.series_verdict[s]}** ({trust.verdicts.series_reason[s]}); its answers are "
                  "given, but not to be trusted" for s in odd] + ([""] if odd else [])
    n_flag = sum(1 for f in flags if f)
    lines += [f"**Coherence**: {n_flag} of {len(flags)} series with contradictory answers (patients.csv `coherence`)"
              + ("." if not n_flag else ":"), ""]
    lines += [f"- {' / '.join(filter(None, batch.names[answers.series.ids[s]]))}: {'; '.join(f)}"
              for s, f in enumerate(flags) if f] + ([""] if n_flag else [])
    return lines


def summary_markdown(args: argparse.Namespace, loaded: Any, series_net: Any, batch: Batch, answers: Any,
                     rec_warnings: list[dict[str, str]], span_source: str, written: list[str], timer: Timer,
                     trust: Trust, flags: list[list[str]]) -> str:
    from training.checkpoint import describe_position
    from training.rundir import command_line, git_info, read_run_json

    run_json = read_run_json(Path(args.run)) or {}
    run_git = run_json.get("git") or {}
    code = git_info()
    state = loaded.checkpoint
    n_read = sum(s.report.n_read for s in batch.sources)
    n_used = len(batch.records)
    best = answers.best
    thr = answers.thresholds[best]
    from training.clinical import NO_RESPONSE_DB

    types = Counter(CLASS_NAMES[int(k)] for k in answers.types[best].argmax(1))
    n_patients = len({(batch.source[m[0]], batch.names[k][0]) for k, m in zip(answers.series.ids,
                      answers.series.members, strict=True) if batch.names[k][0]})  # per file: ids are a file's own
    lines = [
        "# Prediction", "", *trust_lines(batch, answers, trust, flags),
        f"- Run: `{args.run}`, checkpoint `{args.checkpoint}` ({describe_position(state)}); "
        f"run trained at commit {_commit(run_git)}",
        "- Per series: " + ("the series model (`checkpoints/series.pt`)" if series_net is not None else
                            "no series model in the run: threshold by the rule (lowest level with a consistent "
                            "wave V; no interval), type by the summed per-recording evidence"),
        f"- Code: commit {_commit(code)}; command `{' '.join(command_line())}`",
        f"- Training range checked against: {span_source}",
        f"- Trust: {trust.note}" + ("; type probabilities and threshold intervals temperature-scaled on the run's "
                                    "validation split" if trust.calibrated else ""),
        f"- Time: {timer.line()}", "",
        "## Counts", "",
        f"- Inputs: {len(batch.sources)} file(s) read"
        + (f", {len(batch.not_read)} not read" if batch.not_read else ""),
        f"- Recordings: {n_read} read, {n_used} used, {n_read - n_used} unusable",
        f"- Series: {len(answers.series)} of {n_patients or 'unnamed'} patient(s); "
        f"{int((thr < NO_RESPONSE_DB).sum())} with a threshold, {int((thr >= NO_RESPONSE_DB).sum())} no response",
        "- Types: " + ", ".join(f"{c} {types[c]}" for c in CLASS_NAMES if types[c]),
        "- Recordings outside the training range: " + (", ".join(
            f"{name} {n}" for name in STATIC_NAMES if (n := sum(name in w for w in rec_warnings))) or "none"), "",
        "## Inputs", "", "| file | format | read | used | unusable | notes |", "|---|---|---|---|---|---|",
    ]
    for s in batch.sources:
        r = s.report
        lines.append(f"| {s.path} | {s.fmt} | {r.n_read} | {r.n_kept} | {r.n_read - r.n_kept} | "
                     f"{'; '.join(r.notes) or ''} |")
    for path, why in batch.not_read:
        lines.append(f"| {path} | - | 0 | 0 | - | {why} |")
    unusable = [(s.path, i, reason) for s in batch.sources for reason, rows in s.report.rows.items() for i in rows]
    lines += ["", f"## Unusable recordings ({len(unusable)})", ""]
    if unusable:
        details = {(s.path, i): d for s in batch.sources for i, d in s.report.details.items()}
        lines += ["| file | sample | reason |", "|---|---|---|"]
        lines += [f"| {p} | {i} | {reason}: {details.get((p, i), '')} |"
                  for p, i, reason in sorted(unusable, key=lambda u: (str(u[0]), u[1]))]
    else:
        lines.append("None: every recording read was used.")
    lines += ["", "## Files", "", *(f"- `{w}`" for w in written), ""]
    return "\n".join(lines)


def _commit(git: dict[str, Any]) -> str:
    if not git.get("commit"):
        return "unknown (not a git checkout)"
    return f"`{git['commit'][:12]}`" + (" (with uncommitted changes)" if git.get("dirty") else "")


# ------------------------------------------------------------------------------------------------
# the command


def check_out(out: Path, args: argparse.Namespace) -> None:
    """DIR must be a folder (made if absent), none of the inputs and in no other run's directory; its
    previous outputs are replaced only with --overwrite, and only those an earlier prediction wrote."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: '{out}' is a file, expected a folder")
    paths = [out / t for t in TABLES] + (sorted(out.glob(FIGURE_GLOB)) if out.is_dir() else [])
    check_outputs(paths, overwrite=args.overwrite, inputs=args.inputs, own_run=args.run, owner=PROG)


class Timer:
    """Seconds per phase, in the order the phases ran: ``with timer("network"): ...``."""

    def __init__(self) -> None:
        self.start, self.phases = time.perf_counter(), {}
        # phase lines on stderr once the inputs and the run are known good: an error in them stays one line
        self.report = False

    def __call__(self, phase: str) -> Timer:
        self.phase = phase
        return self

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        seconds = time.perf_counter() - self.t
        self.phases[self.phase] = self.phases.get(self.phase, 0.0) + seconds
        if exc_type is None and self.report:  # progress on stderr, phase by phase
            print(f"predict: {self.phase}: {seconds:.1f} s", file=sys.stderr, flush=True)

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in self.phases.items())
        return f"{time.perf_counter() - self.start:.1f} s in this process ({parts}; start-up and imports not counted)"


def predict_batch(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_out(out, args)
    with FigureDrawer(0 if args.no_figures else args.workers) as drawer:  # forked now, before torch is imported
        return _predict(args, out, drawer)


def _predict(args: argparse.Namespace, out: Path, drawer: FigureDrawer) -> int:
    device = resolve_device(args.device)

    from data.dataset import ABRDataset
    from training.checkpoint import load_run
    from training.series import extract, gated_waves, load_series, series_answers, waterfall_waves

    timer = Timer()
    with timer("reading"):
        batch = read_inputs(args)  # every input read (and checked) before the model is loaded

    with timer("loading the run"):
        loaded = load_run(args.run, which=args.checkpoint, device=device)
        series_net = load_series(args.run)
        if series_net is not None:
            series_net = series_net.to(device)
    timer.report = True
    with timer("network"):
        dataset = ABRDataset(batch.records, loaded.stats)
        ev = extract(loaded.model, dataset, batch_size=args.batch_size, device=device)
    with timer("series"):
        answers = series_answers(ev, series_net)
        ev, answers, trust = calibrate_and_check(args, loaded, series_net, batch, dataset, ev, answers, device)
    span, span_source = training_span(loaded.stats)
    rec_warn = recording_warnings(ev.static, span)
    ser_warn = series_warnings(batch, answers, rec_warn)
    ser_flags = coherence(answers, ev.static[:, 1], ev.peak_prob)
    names = figure_names([batch.names[k] for k in answers.series.ids]) if not args.no_figures else [""] * len(
        answers.series)

    check_out(out, args)  # again: nothing may have appeared while the model ran
    out.mkdir(parents=True, exist_ok=True)
    for old in sorted(out.glob(FIGURE_GLOB)):  # --overwrite (checked): the previous run's figures
        old.unlink()
    order = np.concatenate([m[::-1] for m in answers.series.members])  # by series, loudest first
    read = waterfall_waves(ev, answers.thresholds[answers.best])  # None without the wave map head
    with timer("tables"):
        gated = gated_waves(ev, answers.thresholds[answers.best])["prob"]  # (N 3)
        write_csv(out / "recordings.csv", recordings_rows(batch, ev, answers, rec_warn, order, trust, read, gated),
                  RECORDING_COLUMNS)
        write_csv(out / "patients.csv", patients_rows(batch, answers, ser_warn, names, trust, ser_flags),
                  PATIENT_COLUMNS)
    if not args.no_figures:
        with timer("figures"):
            drawer.draw(list(waterfall_jobs(out, batch, ev, answers, names, trust, read)))
    written = [str(out / t) for t in TABLES] + [str(out / n) for n in names if n]
    summary = summary_markdown(args, loaded, series_net, batch, answers, rec_warn, span_source, written, timer, trust,
                               ser_flags)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    record_outputs([out / t for t in TABLES] + [out / n for n in names if n], PROG)
    _print_outcome(batch, answers, trust, out)
    return 0


def _print_outcome(batch: Batch, answers: Any, trust: Trust, out: Path) -> None:
    """The prediction's one line on stdout, and a warning on stderr for what was not read or not trusted."""
    n_unusable = sum(s.report.n_read - s.report.n_kept for s in batch.sources)
    print(f"predicted {len(batch.records)} recordings in {len(answers.series)} series "
          f"({n_unusable} unusable, listed in summary.md) -> {out}")
    for s in batch.sources:
        if s.report.n_kept < s.report.n_read:
            print("warning: " + "; ".join(s.report.lines()[:2]).replace("\n", " "), file=sys.stderr)
    for path, why in batch.not_read:
        print(f"warning: {path}: {why}", file=sys.stderr)
    if trust.verdicts is None:
        print(f"warning: {trust.note}", file=sys.stderr)
    elif (n := trust.verdicts.counts()[UNLIKE]):
        print(f"warning: {n} of {len(answers.series)} series unlike the training data (marked in patients.csv, "
              f"summary.md and their waterfalls)", file=sys.stderr)


def static_flag(name: str):
    """argparse type for --age/--rate/--fmp: a number inside data.records.RANGES."""
    low, high, _ = RANGES[name]

    def parse(text: str) -> float:
        try:
            return check_number("", text, float, ge=low, le=high)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None

    return parse


def default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cpus))


def parser() -> ArgumentParser:
    from data.convert import add_epl_signal_flags
    from evaluation.generate import MAX_BATCH_SIZE

    summary, details = __doc__.split("\n\n", 1)
    p = ArgumentParser(prog=PROG, description=summary, epilog=details,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="recording files or folders of them")
    p.add_argument("--run", required=True, help="run directory, e.g. logs/EXP")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--out", required=True, help="output folder (made if absent)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of a previous prediction in --out")
    p.add_argument("--format", default="auto", choices=FORMATS, help="input format (default: detected per file)")
    p.add_argument("--no-figures", action="store_true", help="skip the waterfall figures (tables and summary only)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=number(int, ge=1, le=64), default=default_workers(),
                   help="processes drawing the figures (default: the CPUs this process may use, at most 4)")
    p.add_argument("--batch-size", type=number(int, ge=1, le=MAX_BATCH_SIZE, limit="MAX_BATCH_SIZE"), default=512)
    g = p.add_argument_group("values a format lacks (a file that has them keeps its own)")
    g.add_argument("--age", type=static_flag("age"), help="age in years")
    g.add_argument("--rate", type=static_flag("rate"), help="stimulus rate per second")
    g.add_argument("--fmp", type=static_flag("fmp"), help="FMP (EPL: instead of the estimate from the record)")
    g.add_argument("--patient-id", type=number(int), help="patient id of EPL files (they carry none)")
    g = p.add_argument_group("csv")
    g.add_argument("--columns", default="", help="key=column renames, e.g. age=Age,patient_id=Hasta")
    g.add_argument("--sample-prefix", default="s", help="sample columns are <prefix>0..<prefix>199 (default s)")
    g.add_argument("--delimiter", default=None, help="field separator (default ',' or tab for .tsv)")
    g = p.add_argument_group("epl")
    add_epl_signal_flags(g)
    # read_any's options that only labelled conversion uses
    p.set_defaults(lenient=True, label=None, threshold=None, analysis=None, wave=5)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_main(lambda: predict_batch(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
