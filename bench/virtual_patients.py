"""Virtual patients on the benchmark cohort's conditions: read back by the network, by an independent
real-trained classifier, and told apart from real recordings (issue 28, points 2, 3 in part, and 5).

    python bench/virtual_patients.py --run logs/clinical_lc [--patients 300 --seed 12345] [--sampler S --steps N
        --guidance W --eta E --clip C] [--gen-seed 0] [--n-boot 1000] [--threads 1] [--figures docs/img]
        [--out bench/results/virtual_patients.json] [--doc docs/results.md | --no-doc]

The run must be trained with ``model.label_conditioning: true`` (one error line otherwise).

1. **Conditions.** The benchmark cohort (``data.synthetic.generate(--patients, --seed)``, bench/clinical.py's
   seed; nothing was chosen on it) gives each series its type, threshold and recordings. For each series one
   virtual patient is generated, its *twin*: one signal per real recording with that recording's static values
   (age, level, rate, FMP), the series' type and threshold as the label condition, and a share (``--share``,
   evaluation.generate.SERIES_SHARE) of every noise draw in common across the series (evaluation.generate's
   series mode, ``tied``), the rest each recording's own; series of one length are sampled together.
   Sampler, steps, eta, guidance and clipping: the run's ``diffusion`` section unless given. Where the run has
   a microphonic bank (evaluation/microphonic_bank.py), each twin gets the cochlear microphonic of one training
   ear of its type composed onto it, as evaluation.generate does (``--no-microphonic-bank``: not).
2. **Read back by the network.** The run's network at t = 0 (training.series.extract) reads every generated
   series exactly as it reads a real one: the per-recording heads (type: class evidence summed over the
   series; threshold: the rule over wave V probabilities) and the series model when the run has one. Scored
   against the request: type macro-F1, balanced accuracy, recall per type and the confusion (requested x read
   back), threshold within ±10 dB on the 5 dB grid ("no response" = 105 dB); 95 % percentile bootstrap
   intervals over series. Beside it the same readers on the twins' real series against their truth: what the
   readers achieve on real data, the reference.
3. **Read back independently.** A classifier that never saw the network or a generated signal: sklearn
   HistGradientBoostingClassifier (class_weight balanced, random_state 0) on per-recording features
   (:func:`recording_features`) and the static values, fitted on the REAL recordings of the run's own training
   split; a series' type is the argmax of its recordings' mean log-probability. Scored on the real benchmark
   series (its accuracy on held-out real data) and on the generated ones (its agreement with the request).
4. **Fidelity, per type, with floors.** Discriminative score |balanced accuracy − 0.5| of a classifier telling
   generated from real recordings (evaluation.distribution.c2st_scores: a standardized logistic regression on
   :func:`recording_features` without static values, 5-fold cross-validation, a series' recordings in one
   fold), and its AUROC. The type's series are split in two halves of equal series count (seeded): A's
   generated twins against B's real recordings, and beside it the real-vs-real floor, A's real recordings
   against B's (same sizes, same conditions, same B). Noise level: the RMS of each recording's residual after a
   0.5 ms centred moving average (:func:`residual_rms`: what lies above about 1 kHz, where the waves carry
   little energy), and the whole trace's RMS; generated over real, the twins paired, ratio of means per type
   with a bootstrap interval over series. Neuropathy's signature, its cochlear microphonic: the mean microphonic
   index at 70 dB or more (models.series.microphonic_index, what the series model reads: about 0 without one),
   generated and real.
5. **Per condition** (bench/condition_grid.py): the twins grouped over a grid of age, stated level, rate and FMP;
   per cell and per bin the waves' shares read by the network's wave map on both sides and the mean waveform's
   correlation with the real one, beside its real-vs-real floor. And per type and band of stated level
   (bench/condition_grid.py, type_level_waves): each wave's share and median latency read by the same wave map on
   both sides, and the median I-V interval: whether a type's waves lie where its recordings' do.
6. **Figures** (``--figures DIR``): requested vs read-back type confusion (counts), requested vs read-back
   threshold (±10 dB band), and one generated series' waterfall beside its real twin (same type, threshold,
   levels; evaluation.plots.Waterfall, with the network's wave V marks).

Prints the table, writes the JSON (bench.common.write_result) and the section ``virtual_patients`` of
docs/results.md (unless --no-doc); phase lines on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_output_args, machine, write_outputs  # noqa: E402
from bench.condition_grid import condition_grid, grid_table, type_level_table, type_level_waves  # noqa: E402
from data.cli import ArgumentParser, number, phase, run_main  # noqa: E402
from data.records import CLASS_NAMES, SAMPLE_RATE_HZ, Records  # noqa: E402
from evaluation.distribution import auroc, c2st_scores, frechet_distance  # noqa: E402
from evaluation.generate import (  # noqa: E402
    SAMPLING_KEYS,
    SERIES_SHARE,
    add_sampling_flags,
    add_wave_guidance_flag,
    generate,
    sampling_settings,
    type_flag,
)
from evaluation.microphonic_bank import compose, load_bank  # noqa: E402
from models.series import microphonic_index  # noqa: E402
from models.series import residual_rms as series_residual_rms  # noqa: E402
from training.clinical import (  # noqa: E402
    Estimate,
    Series,
    bootstrap,
    jackknife,
    series_index,
    series_truth,
    threshold_metrics,
    type_metrics,
)

PROG = "virtual_patients"
DOC_KEY = "virtual_patients"
BENCHMARK_SEED = 12345  # bench/clinical.py's benchmark cohort
K = len(CLASS_NAMES)
# Readers of a series (training.series.series_answers' keys): (type answer, threshold answer).
READERS = {"heads": ("evidence_sum", "rule"), "series_model": ("series_model", "series_model")}
READER_NAMES = {"heads": "network heads (summed class evidence; rule over wave V)", "series_model": "series model"}
DOWNSAMPLE = 4  # waveform feature: the mean of each 4 samples (0.2 ms), 50 values
BANDS_HZ = (0, 300, 600, 1000, 1500, 2500, 5000, 10_001)  # log band powers of the 100 Hz rFFT grid
MICROPHONIC_MIN_DB = 70.0  # the microphonic grows with level (data.synthetic: from 50 dB); read it where it is large
MIN_SERIES_PER_HALF = 2  # a type's fidelity needs at least this many series in each half (2-fold C2ST)
WATERFALL_REQUEST = (CLASS_NAMES.index("SNİK"), 60.0)  # the figure's twin: SNİK nearest to 60 dB, issue 28's example


# --------------------------------------------------------------------------------------------
# per-recording features


def residual_rms(uv: np.ndarray) -> np.ndarray:
    """(N L) µV -> (N,) float64 µV: each recording's residual noise level (models.series.residual_rms)."""
    return series_residual_rms(uv).double().numpy()


def recording_features(uv: np.ndarray) -> np.ndarray:
    """(N L) µV -> (N F) float64: the waveform averaged over DOWNSAMPLE samples (µV), log10 of the RMS and of
    the residual RMS (µV), and log10 mean power in each BANDS_HZ band. The log powers let a linear classifier
    see a difference in noise level, which no linear read of the waveform can (the noise has mean zero)."""
    x = uv.astype(np.float64)
    N, L = x.shape
    wave = x[:, : L // DOWNSAMPLE * DOWNSAMPLE].reshape(N, -1, DOWNSAMPLE).mean(2)  # (N L/4)
    power = np.abs(np.fft.rfft(x - x.mean(1, keepdims=True), axis=1)) ** 2  # (N L/2+1)
    freq = np.fft.rfftfreq(L, 1.0 / SAMPLE_RATE_HZ)  # (L/2+1) Hz
    bands = [power[:, (freq >= lo) & (freq < hi)].mean(1) for lo, hi in zip(BANDS_HZ[:-1], BANDS_HZ[1:], strict=True)]
    levels = [np.sqrt((x**2).mean(1)), residual_rms(x), *bands]
    return np.concatenate([wave, np.log10(np.stack(levels, 1) + 1e-12)], axis=1)  # (N L/4 + 2 + bands)


# --------------------------------------------------------------------------------------------
# 1. conditions and sampling


def sample_twins(loaded, cohort: Records, series: Series, kw: dict, *, seed: int, batch_size: int) -> np.ndarray:
    """(N L) µV: each recording's generated twin, with its static values and its series' type and threshold,
    every series one tied noise path (evaluation.generate, ``tied``); series of one length go in one call. A
    network with ``model.wave_conditioning`` also gets each series' wave V drawn from the run's wave profile
    (evaluation/wave_profile.py: the requested type and threshold only, never the cohort's own wave V)."""
    lengths = np.array([len(m) for m in series.members])  # (S,)
    out = np.empty(cohort.signal.shape, np.float32)  # (N L)
    generator = torch.Generator().manual_seed(seed)
    wave = profile_waves(loaded, cohort, seed)  # (N 3) or None
    for n_levels in np.unique(lengths):
        rows = np.concatenate([series.members[s] for s in np.flatnonzero(lengths == n_levels)])  # whole series
        x = generate(loaded.model, loaded.diffusion, loaded.stats, torch.from_numpy(cohort.static[rows]), len(rows),
                     kw["sampler"], kw["steps"], kw["guidance"], generator, eta=kw["eta"], clip=kw["clip"],
                     batch_size=batch_size, label=torch.from_numpy(cohort.label[rows]),
                     threshold=torch.from_numpy(cohort.threshold[rows].astype(np.float32)), tied=int(n_levels),
                     share=kw["share"], lowpass_hz=kw["lowpass_hz"],
                     wave=None if wave is None else torch.from_numpy(wave[rows]),
                     wave_guidance=kw.get("wave_guidance") or 1.0, guidance_sigma_min=kw.get("guidance_sigma_min"))
        out[rows] = x[:, 0].numpy()  # (n L)
    bank = None if kw.get("no_microphonic_bank") else load_bank(loaded.run_dir)
    if bank is not None:  # the microphonic the network does not draw (evaluation/microphonic_bank.py)
        extra, kw["microphonic_composed"] = compose(bank, cohort.static[:, 1], cohort.label, cohort.series_id,
                                                    np.random.default_rng([seed, 28]))
        out += extra
    if not np.isfinite(out).all():
        raise ValueError(f"generated {int((~np.isfinite(out)).sum())} non-finite values with {kw}; nothing written")
    return out


def profile_waves(loaded, cohort: Records, seed: int) -> np.ndarray | None:
    """(N 3) wave V conditions for the cohort's series from the run's wave profile ((N 4) with the microphonic
    index), or None for a network without ``model.wave_conditioning``; one line where the run has no profile."""
    from evaluation.wave_profile import draw_waves, require_profile

    if not getattr(loaded.model, "wave_conditioned", False):
        return None
    return draw_waves(require_profile(loaded.run_dir), cohort.static, cohort.threshold, cohort.label, cohort.series_id,
                      np.random.default_rng([seed, 28]), getattr(loaded.model, "microphonic_conditioned", False),
                      getattr(loaded.model, "noise_conditioned", False))


# --------------------------------------------------------------------------------------------
# 2. read back by the network


def read_back(loaded, series_net, records: Records, truth: tuple[np.ndarray, np.ndarray], *, n_boot: int
              ) -> tuple[dict, dict, Any]:
    """Every reader of the run on ``records`` against ``truth`` (threshold dB, type; per series): metrics,
    the answers {reader: (type (S,), threshold dB (S,))} and the network's evidence (training.series.Evidence)."""
    from data.dataset import ABRDataset
    from training.series import extract, series_answers

    ev = extract(loaded.model, ABRDataset(records, loaded.stats))
    answers = series_answers(ev, series_net)
    metrics, out = {}, {}
    for reader, (type_key, threshold_key) in READERS.items():
        if type_key not in answers.types:
            continue
        pred_type, pred_db = answers.types[type_key].argmax(1), answers.thresholds[threshold_key]
        metrics[reader] = {"type": type_scores(truth[1], pred_type, n_boot),
                           "threshold": threshold_metrics(truth[0], pred_db, n_boot=n_boot)}
        out[reader] = (pred_type, pred_db)
    return metrics, out, ev


def type_scores(true: np.ndarray, pred: np.ndarray, n_boot: int) -> dict:
    """training.clinical.type_metrics and the share of series read as ``true`` (accuracy), with intervals."""
    m = type_metrics(true, pred, K, n_boot=n_boot)
    m["accuracy"] = bootstrap(lambda i: float((pred[i] == true[i]).mean()), len(true), n_boot=n_boot)
    return m


# --------------------------------------------------------------------------------------------
# 3. the independent classifier


def fit_type_classifier(uv: np.ndarray, static: np.ndarray, label: np.ndarray):
    """HistGradientBoostingClassifier (class_weight balanced, random_state 0) of the type of each recording on
    :func:`recording_features` and the four static values."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(class_weight="balanced", random_state=0).fit(
        np.concatenate([recording_features(uv), static], 1), label)


def classifier_types(clf, uv: np.ndarray, static: np.ndarray, series: Series) -> np.ndarray:
    """(S,) each series' type: the argmax of its recordings' mean log-probability (a type absent from the
    training split has probability 0)."""
    proba = np.zeros((len(uv), K))  # (N K)
    proba[:, clf.classes_] = clf.predict_proba(np.concatenate([recording_features(uv), static], 1))
    logp = np.log(np.clip(proba, 1e-12, 1.0))
    return np.stack([logp[m].mean(0) for m in series.members]).argmax(1)  # (S,)


def independent(loaded, cohort: Records, gen_uv: np.ndarray, series: Series, truth_type: np.ndarray,
                network_types: np.ndarray | None, n_boot: int) -> dict:
    """Point 3: the classifier fitted on the run's training split, scored on the real and generated series;
    ``network_types``: the series model's (or heads') answers on the generated series, for its agreement."""
    from data.dataset import build_data

    train = build_data(loaded.cfg.data, loaded.cfg.loss.class_weights).train.tensors
    uv = loaded.stats.to_uv(train["signal"][:, 0]).numpy()  # (N L) µV
    clf = fit_type_classifier(uv, train["static"].numpy(), train["label"].numpy())
    real = classifier_types(clf, cohort.signal, cohort.static, series)
    gen = classifier_types(clf, gen_uv, cohort.static, series)
    out = {"classifier": "sklearn HistGradientBoostingClassifier (class_weight balanced) on per-recording features "
                         "and static values; per series the mean log-probability",
           "train_recordings": len(uv), "real": type_scores(truth_type, real, n_boot),
           "generated": type_scores(truth_type, gen, n_boot)}
    if network_types is not None:
        agree = gen == network_types
        out["agreement_with_network"] = bootstrap(lambda i: float(agree[i].mean()), len(agree), n_boot=n_boot)
    return out


# --------------------------------------------------------------------------------------------
# 4. fidelity per type


def discriminative(a: np.ndarray, b: np.ndarray, units_a: list[np.ndarray], units_b: list[np.ndarray], *,
                   seed: int, n_boot: int) -> dict[str, Estimate]:
    """Telling a (N F) from b (M F), each a list of units (series: row indices): |balanced accuracy − 0.5| of the
    out-of-fold answers of evaluation.distribution.c2st_scores (a series in one fold) and their AUROC; 95 %
    bootstrap over the units of both sets, the out-of-fold scores fixed."""
    ga, gb = np.empty(len(a), np.int64), np.empty(len(b), np.int64)
    for u, r in enumerate(units_a):
        ga[r] = u
    for u, r in enumerate(units_b):
        gb[r] = len(units_a) + u
    sa, sb = c2st_scores(a, b, ga, gb, seed=seed)  # (N), (M): P(row is from a)
    units = [(0, r) for r in units_a] + [(1, r) for r in units_b]

    def pick(i: np.ndarray, side: int) -> np.ndarray:
        rows = [units[j][1] for j in i if units[j][0] == side]
        return np.concatenate(rows) if rows else np.empty(0, np.int64)

    def score(i: np.ndarray) -> float:
        ra, rb = pick(i, 0), pick(i, 1)
        if not len(ra) or not len(rb):
            return float("nan")
        return abs(0.5 * ((sa[ra] > 0.5).mean() + (sb[rb] <= 0.5).mean()) - 0.5)

    def area(i: np.ndarray) -> float:
        return auroc(sa[pick(i, 0)], sb[pick(i, 1)])

    return {"score": bootstrap(score, len(units), n_boot=n_boot, seed=seed),
            "auroc": bootstrap(area, len(units), n_boot=n_boot, seed=seed)}


def frechet(a: np.ndarray, b: np.ndarray, units_a: list[np.ndarray], units_b: list[np.ndarray]) -> Estimate:
    """Fréchet distance between Gaussians fitted to the rows of a (N F) and b (M F) (evaluation.distribution),
    each a list of units (series); 95 % interval from the delete-one-series jackknife over the units of both sets
    (training.clinical.jackknife: resampling with replacement shrinks the covariances and biases the value)."""
    units = [(0, r) for r in units_a] + [(1, r) for r in units_b]

    def stat(i: np.ndarray) -> float:
        ra = [units[j][1] for j in i if units[j][0] == 0]
        rb = [units[j][1] for j in i if units[j][0] == 1]
        if not ra or not rb:
            return float("nan")
        return frechet_distance(a[np.concatenate(ra)], b[np.concatenate(rb)])

    return jackknife(stat, len(units))


def ratio(gen: np.ndarray, real: np.ndarray, units: list[np.ndarray], n_boot: int, seed: int) -> Estimate:
    """mean(gen) / mean(real) over the rows of ``units``, bootstrap over units (twins paired: a resample draws both)."""

    def stat(i: np.ndarray) -> float:
        rows = np.concatenate([units[j] for j in i])
        return float(gen[rows].mean() / real[rows].mean())

    if len(units) < 2:  # one series: no interval over series
        return Estimate(stat(np.arange(len(units))), float("nan"), float("nan"))
    return bootstrap(stat, len(units), n_boot=n_boot, seed=seed)


def fidelity(real_uv: np.ndarray, gen_uv: np.ndarray, series: Series, types: np.ndarray, *, seed: int,
             n_boot: int, level_db: np.ndarray | None = None) -> dict[str, dict]:
    """Point 4 per type (module docstring): discriminative score and Fréchet distance, each against its
    real-vs-real floor, noise level; with ``level_db`` (N,) the mean microphonic index of the recordings at
    MICROPHONIC_MIN_DB or more (``microphonic``, generated and real). The Fréchet distance reads the features
    z-scored by the real recordings' spread (every type together), so that each counts alike."""
    microphonic = ({"generated": microphonic_index(gen_uv)[:, 0], "real": microphonic_index(real_uv)[:, 0]}
               if level_db is not None else None)  # (N,) each
    fr, fg = recording_features(real_uv), recording_features(gen_uv)  # (N F) each
    centre, spread = fr.mean(0), fr.std(0) + 1e-12  # (F,) real recordings
    zr, zg = (fr - centre) / spread, (fg - centre) / spread  # (N F) each
    noise = {"generated": residual_rms(gen_uv), "real": residual_rms(real_uv)}  # (N,) µV
    rms = {"generated": np.sqrt((gen_uv.astype(np.float64) ** 2).mean(1)),
           "real": np.sqrt((real_uv.astype(np.float64) ** 2).mean(1))}
    rng = np.random.default_rng(seed)
    out = {}
    for k, name in enumerate(CLASS_NAMES):
        ids = np.flatnonzero(types == k)
        units = [series.members[s] for s in ids]
        row: dict[str, Any] = {"series": len(ids), "recordings": int(sum(len(u) for u in units))}
        if not len(ids):
            out[name] = row
            continue
        rows = np.concatenate(units)
        row["noise_uv"] = {key: float(v[rows].mean()) for key, v in noise.items()}
        row["noise_ratio"] = ratio(noise["generated"], noise["real"], units, n_boot, seed)
        row["rms_uv"] = {key: float(v[rows].mean()) for key, v in rms.items()}
        row["rms_ratio"] = ratio(rms["generated"], rms["real"], units, n_boot, seed)
        loud = rows[level_db[rows] >= MICROPHONIC_MIN_DB] if microphonic is not None else rows[:0]
        if len(loud):
            row["microphonic"] = {key: float(v[loud].mean()) for key, v in microphonic.items()}
            row["microphonic"]["recordings"] = len(loud)
        half = len(ids) // 2
        if half >= MIN_SERIES_PER_HALF:
            order = rng.permutation(len(ids))
            (ra, a), (rb, b) = (stacked([units[j] for j in part]) for part in (order[:half], order[half : 2 * half]))
            kw = {"seed": seed, "n_boot": n_boot}
            row["half_series"] = half
            row["generated_vs_real"] = discriminative(fg[ra], fr[rb], a, b, **kw)
            row["real_vs_real_floor"] = discriminative(fr[ra], fr[rb], a, b, **kw)
            row["frechet"] = {"generated_vs_real": frechet(zg[ra], zr[rb], a, b),
                              "real_vs_real_floor": frechet(zr[ra], zr[rb], a, b)}
        out[name] = row
    return out


def stacked(units: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The rows of ``units`` (lists of row indices) one after another, and each unit's rows in that order."""
    starts = np.cumsum([0, *(len(u) for u in units)])
    return np.concatenate(units), [np.arange(lo, hi) for lo, hi in zip(starts[:-1], starts[1:], strict=True)]


# --------------------------------------------------------------------------------------------
# 5. figures


def plot_confusions(path: Path, result: dict, reader: str) -> Path:
    """Requested (true) type against the read-back type, counts: generated series and, beside, the real ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=120)
    for ax, side in zip(axes, ("generated", "real"), strict=True):
        m = np.array(result["read_back"][side][reader]["type"]["confusion"])  # (K K) rows true, columns read
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9, color="white" if v > m.max() / 2 else "black")
        f1 = result["read_back"][side][reader]["type"]["macro_f1"]
        what = "requested type (generated twin)" if side == "generated" else "true type (real series)"
        ax.set(xticks=range(K), yticks=range(K), xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
               xlabel=f"type read back by the {READER_NAMES[reader].split(' (')[0]}", ylabel=what,
               title=f"{side} series, n = {int(m.sum())}: macro-F1 {f1.value:.2f} [{f1.low:.2f}, {f1.high:.2f}]")
        ax.title.set_fontsize(9)
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_thresholds(path: Path, truth_db: np.ndarray, answers: dict[str, np.ndarray], result: dict, reader: str
                    ) -> Path:
    """Requested (true) threshold against the one read back, per series, with the ±10 dB band; "no response" at 105."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), dpi=120, sharey=True)
    jitter = np.random.default_rng(0).uniform(-1.2, 1.2, (2, len(truth_db)))  # dB: the grid's points apart
    grid = np.array([-5.0, 110.0])
    for ax, side in zip(axes, ("generated", "real"), strict=True):
        ax.fill_between(grid, grid - 10, grid + 10, color="tab:green", alpha=0.15, lw=0, label="within ±10 dB")
        ax.plot(grid, grid, color="tab:green", lw=0.8)
        ax.scatter(truth_db + jitter[0], answers[side] + jitter[1], s=9, alpha=0.5, color="tab:blue", lw=0)
        share = result["read_back"][side][reader]["threshold"]["within_10db"]
        what = "requested threshold (dB nHL)" if side == "generated" else "true threshold (dB nHL)"
        ax.set(xlim=grid, ylim=grid, xlabel=what, title=f"{side} series, n = {len(truth_db)}: within ±10 dB "
               f"{100 * share.value:.0f} % [{100 * share.low:.0f}, {100 * share.high:.0f}]")
        ax.title.set_fontsize(9)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel(f"read back by the {READER_NAMES[reader].split(' (')[0]} (dB nHL)")
    fig.text(0.99, 0.01, "105 dB: no response; points jittered by up to ±1.2 dB", ha="right", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))  # room for the note under the axes
    fig.savefig(path)
    plt.close(fig)
    return path


def waterfall_series(types: np.ndarray, truth_db: np.ndarray) -> int:
    """The series the waterfall figure shows: WATERFALL_REQUEST's type nearest its threshold, else any."""
    k, db = WATERFALL_REQUEST
    return int(np.lexsort((np.abs(truth_db - db), types != k))[0])


def plot_twins(path: Path, s: int, series: Series, cohort: Records, gen_uv: np.ndarray, evidence: dict) -> Path:
    """Series ``s``'s generated twin beside the real series (evaluation.plots.Waterfall, the same µV spacing),
    each with the network's wave V marks, side by side in one PNG."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evaluation.plots import Waterfall

    rows = series.members[s]
    level = cohort.static[rows, 1]
    k, db = int(cohort.label[rows[0]]), float(cohort.threshold[rows[0]])
    gap = 0.9 * float(np.median(np.ptp(cohort.signal[rows], axis=1)))  # µV, the real series' print-out spacing
    age, rate = cohort.static[rows[0], 0], np.unique(cohort.static[rows, 2])
    with tempfile.TemporaryDirectory() as tmp:
        pngs = []
        for side, uv in (("generated twin", gen_uv), ("real series", cohort.signal)):
            ev = evidence["generated" if side.startswith("gen") else "real"]
            title = (f"{side}: {CLASS_NAMES[k]}, threshold {db:g} dB (dashed)\nbenchmark series {series.ids[s]}, "
                     f"age {age:g} y, rate {', '.join(f'{r:g}' for r in rate)} /s, {len(rows)} recordings")
            pngs.append(Waterfall().draw(uv[rows], level, ev.peak_prob[rows], ev.latency[rows], db,
                                         Path(tmp) / f"{len(pngs)}.png", title=title, gap=gap))
        images = [plt.imread(p) for p in pngs]
        h = max(im.shape[0] for im in images)
        fig, axes = plt.subplots(1, 2, figsize=(2 * images[0].shape[1] / 150, h / 150), dpi=150)
        for ax, im in zip(axes, images, strict=True):
            ax.imshow(im)
            ax.axis("off")
        fig.subplots_adjust(0, 0, 1, 1, 0.02, 0)
        fig.savefig(path)
        plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# report


def _cell(e: Any, pct: bool = False) -> str:
    if e is None:
        return "—"
    if not np.isfinite(e.value):
        return "n/a"
    if not (np.isfinite(e.low) and np.isfinite(e.high)):
        return f"{100 * e.value:.1f} %" if pct else f"{e.value:.3f}"
    if pct:
        return f"{100 * e.value:.1f} % [{100 * e.low:.0f}, {100 * e.high:.0f}]"
    return f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]"


def _microphonic_cell(r: dict | None) -> str:
    return "—" if r is None else f"{r['generated']:+.2f} / {r['real']:+.2f}"


def table(result: dict) -> str:
    """The read-back table (readers x generated / real) and the per-type fidelity table."""
    rb, ind = result["read_back"], result["independent"]
    lines = ["| reader | type macro-F1, generated (vs request) | type macro-F1, real (vs truth) | "
             "threshold within ±10 dB, generated | threshold within ±10 dB, real |", "|---|---|---|---|---|"]
    for reader in rb["generated"]:
        g, r = rb["generated"][reader], rb["real"][reader]
        lines.append(f"| {READER_NAMES[reader]} | {_cell(g['type']['macro_f1'])} | {_cell(r['type']['macro_f1'])} | "
                     f"{_cell(g['threshold']['within_10db'], True)} | {_cell(r['threshold']['within_10db'], True)} |")
    lines.append(f"| independent classifier (real training recordings) | {_cell(ind['generated']['macro_f1'])} | "
                 f"{_cell(ind['real']['macro_f1'])} | — | — |")
    best = "series_model" if "series_model" in rb["generated"] else "heads"
    lines += ["", f"Per type (recall: the {READER_NAMES[best]}; discriminative score |acc − 0.5|, generated A "
              "vs real B beside real A vs real B; noise: residual RMS after a 0.5 ms moving average, "
              "generated / real):",
              "", "| type | series | recall, generated | recall, real | discriminative, generated | "
              "discriminative, real-vs-real floor | Fréchet, generated | Fréchet, real-vs-real floor | noise ratio | "
              f"RMS ratio | microphonic index at ≥ {MICROPHONIC_MIN_DB:g} dB, generated / real |",
              "|---" * 11 + "|"]
    for k, name in enumerate(CLASS_NAMES):
        f = result["fidelity"][name]
        rec = [rb[side][best]["type"]["recall"].get(k) for side in ("generated", "real")]
        dis = [f.get(key, {}).get("score") for key in ("generated_vs_real", "real_vs_real_floor")]
        fd = [f.get("frechet", {}).get(key) for key in ("generated_vs_real", "real_vs_real_floor")]
        lines.append(f"| {name} | {f['series']} | {_cell(rec[0], True)} | {_cell(rec[1], True)} | {_cell(dis[0])} | "
                     f"{_cell(dis[1])} | {_cell(fd[0])} | {_cell(fd[1])} | {_cell(f.get('noise_ratio'))} | "
                     f"{_cell(f.get('rms_ratio'))} | {_microphonic_cell(f.get('microphonic'))} |")
    return "\n".join(lines)


def doc_section(result: dict, figures: list[Path], doc: Path) -> str:
    s, c = result["sampling"], result["cohort"]
    links = "\n".join(f"![{p.stem}]({os.path.relpath(p, doc.parent)})" for p in figures)
    with_series = "with" if result["series_model"] else "without"
    lowpass = f"{s['lowpass_hz']:g} Hz" if s.get("lowpass_hz") else "none"
    eta = f"eta {s['eta']:g}, " if s["sampler"] == "ddim" else ""  # only DDIM reads eta
    wave = (f"; wave V per ear drawn from the run's wave profile, wave guidance w_v = {s['wave_guidance']:g}"
            if s.get("wave_guidance") is not None else "")
    wave += microphonic_note(s)
    grid = ("\nPer condition (bench/condition_grid.py: the twins grouped by age, stated level, rate and FMP; waves "
            "read by the network's wave map at p >= 0.5 on both sides):\n\n" + grid_table(result["grid"]) + "\n"
            if result.get("grid") else "")
    grid += ("\nPer type and stated level (bench/condition_grid.py, type_level_waves: the same wave map on both sides, "
             "latencies the median over the recordings where the wave is read):\n\n"
             + type_level_table(result["type_waves"]) + "\n" if result.get("type_waves") else "")
    return f"""## Virtual patients: read back and fidelity (issue 28; bench/virtual_patients.py)

Command: `{result['command']}`

Machine: {result['machine']}; {result['threads']} thread(s); {result['seconds']['total']:.0f} s. Date: {result['date']}.
Run `{result['run']}` ({result['checkpoint']} checkpoint; {with_series} a series model).
Benchmark cohort: {result['benchmark']['patients']} patients, generator seed {result['benchmark']['seed']}
({c['series']} series, {c['recordings']} recordings). One generated twin per series (the series' type,
threshold and each recording's static values; a share {s['share']:g} of every noise draw common to the series):
{s['sampler']}, {s['steps']} steps,
{eta}guidance w = {s['guidance']:g}{guidance_note(s)}{wave}, clip {s['clip']}, low-pass {lowpass}, seed {s['seed']}.
95 % bootstrap intervals over
series ({result['n_boot']} resamples). Independent classifier: {result['independent']['classifier']}, fitted on
{result['independent']['train_recordings']} real recordings of the run's training split. Method: the bench's docstring.

{table(result)}
{grid}
{links}"""


# --------------------------------------------------------------------------------------------
# command line


def add_microphonic_flag(p) -> None:
    """--no-microphonic-bank, for every bench that samples twins (sample_twins reads ``no_microphonic_bank``)."""
    p.add_argument("--no-microphonic-bank", action="store_true",
                   help="compose no cochlear microphonic from the run's microphonic bank onto the twins")


def guidance_note(sampling: dict) -> str:
    """The doc sections' words for guidance's interval ('' when guidance acts at every step)."""
    sigma = sampling.get("guidance_sigma_min")
    return f" above the noise level σ = {sigma:g} only" if sigma else ""


def microphonic_note(sampling: dict) -> str:
    """The doc sections' words for the composed microphonic ('' when none was)."""
    n = sampling.get("microphonic_composed")
    return ("" if n is None else f"; the cochlear microphonic of one training ear of the series' type composed onto "
            f"{n} twins (evaluation/microphonic_bank.py)")


def _types_flag(text: str) -> list[int]:
    """--types SNIK,ITIK -> their class indices (evaluation.generate's --type rules, each once)."""
    types = [type_flag(name.strip()) for name in text.split(",")]
    if len(set(types)) != len(types):
        raise argparse.ArgumentTypeError(f"expected distinct types, found {text!r}")
    return types


def parse_args(argv: list[str] | None):
    p = ArgumentParser(prog="bench/virtual_patients.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--patients", type=number(int, ge=1, le=200_000), default=300, help="benchmark cohort size")
    p.add_argument("--seed", type=number(int, ge=0), default=BENCHMARK_SEED, help="benchmark cohort generator seed")
    add_sampling_flags(p)
    add_wave_guidance_flag(p)
    p.add_argument("--types", type=_types_flag, metavar="NAME,NAME",
                   help="keep only the cohort's series of these types (a development aid: the rare types' read-back "
                        "for less sampling; macro-F1 is then over these types)")
    add_microphonic_flag(p)
    p.add_argument("--gen-seed", type=number(int, ge=0, le=2**63 - 1), default=0, help="sampling seed")
    p.add_argument("--batch-size", type=number(int, ge=1, le=65_536), default=256)
    p.add_argument("--n-boot", type=number(int, ge=0, le=100_000), default=1000)
    p.add_argument("--threads", type=number(int, ge=1, le=1024), default=1, help="torch and sklearn threads")
    p.add_argument("--figures", help="folder for the three PNGs (e.g. docs/img); none without it")
    p.add_argument("--share", type=number(float, ge=0.0, le=1.0), default=SERIES_SHARE,
                   help=f"share of the noise a virtual patient's recordings have in common (default {SERIES_SHARE}, "
                        f"evaluation.generate's series mode)")
    add_output_args(p, "virtual_patients")
    return p, p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    return run_main(lambda: run(p, args, argv), debug=args.debug)


def load(p, args):
    """The run, checked: label conditioning, global normalization, a benchmark seed it did not train on."""
    from training.checkpoint import load_run

    loaded = load_run(args.run, which=args.checkpoint)
    if not getattr(loaded.model, "label_conditioned", False):
        raise ValueError(f"run '{args.run}': expected a run trained with model.label_conditioning true (virtual "
                         f"patients of a requested type and threshold), found one trained without it")
    if loaded.stats.normalization != "global":
        raise ValueError(f"run '{args.run}': expected global signal normalization (µV recoverable), found "
                         f"'{loaded.stats.normalization}'")
    if loaded.cfg.data.source == "synthetic" and loaded.cfg.data.synthetic.seed == args.seed:
        p.error(f"--seed {args.seed}: the run trained on that generator seed; the benchmark needs its own")
    return loaded


def run(p, args, argv: list[str] | None) -> int:
    from threadpoolctl import threadpool_limits

    from data.synthetic import generate as synthetic_cohort
    from training.series import load_series

    t0, seconds = time.perf_counter(), {}
    torch.set_num_threads(args.threads)
    loaded = load(p, args)
    kw = sampling_settings(loaded.diffusion, args)
    kw["share"] = args.share
    kw["no_microphonic_bank"] = args.no_microphonic_bank
    kw["wave_guidance"] = args.wave_guidance if getattr(loaded.model, "wave_conditioned", False) else None
    series_net = load_series(args.run)
    cohort = synthetic_cohort(args.patients, args.seed)
    if args.types:
        cohort = cohort.subset(np.flatnonzero(np.isin(cohort.label, args.types)))
        if not len(cohort):
            p.error(f"--types: the cohort of {args.patients} patients (seed {args.seed}) has no series of "
                    f"{', '.join(CLASS_NAMES[k] for k in args.types)}")
    series = series_index(cohort.series_id, cohort.static[:, 1])
    truth = series_truth(series, cohort.threshold, cohort.label)  # (S,) dB, (S,) type: the requests
    what = (f"sampling {len(series)} twins, {len(cohort)} signals ({kw['sampler']}, {kw['steps']} steps, "
            f"guidance {kw['guidance']:g})")
    with phase(PROG, what), threadpool_limits(args.threads):
        t = time.perf_counter()
        gen_uv = sample_twins(loaded, cohort, series, kw, seed=args.gen_seed, batch_size=args.batch_size)
        seconds["sampling"] = time.perf_counter() - t
    generated = replace(cohort, signal=gen_uv)
    result: dict[str, Any] = {
        "command": "python bench/virtual_patients.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(), "threads": args.threads, "date": datetime.date.today().isoformat(),
        "run": str(args.run), "checkpoint": args.checkpoint, "series_model": series_net is not None,
        "benchmark": {"patients": args.patients, "seed": args.seed,
                      "types": [CLASS_NAMES[k] for k in args.types] if args.types else "all"},
        "types": list(CLASS_NAMES),
        "sampling": {k: kw.get(k) for k in (*SAMPLING_KEYS, "share", "wave_guidance", "microphonic_composed")}
        | {"seed": args.gen_seed},
        "n_boot": args.n_boot, "cohort": {"series": len(series), "recordings": len(cohort), "series_per_type": {
            name: int((truth[1] == k).sum()) for k, name in enumerate(CLASS_NAMES)}}}
    with threadpool_limits(args.threads):
        answers, evidence = score(loaded, series_net, cohort, generated, series, truth, result, args)
    seconds["total"] = time.perf_counter() - t0
    result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    figures = write_figures(Path(args.figures), result, series, cohort, gen_uv, truth, answers, evidence) \
        if args.figures else []
    print(table(result))
    if result.get("type_waves"):
        print("\n" + type_level_table(result["type_waves"]))
    write_outputs(args, DOC_KEY, result, doc_section(result, figures, Path(args.doc)))
    return 0


def score(loaded, series_net, cohort: Records, generated: Records, series: Series, truth, result: dict, args):
    """Points 2-4 into ``result``; returns the readers' answers and the network's evidence per side (figures)."""
    answers, evidence = {}, {}
    result["read_back"] = {}
    for side, records in (("generated", generated), ("real", cohort)):
        with phase(PROG, f"reading the {side} series back"):
            result["read_back"][side], answers[side], evidence[side] = read_back(loaded, series_net, records, truth,
                                                                                  n_boot=args.n_boot)
    best = "series_model" if "series_model" in answers["generated"] else "heads"
    with phase(PROG, "fitting the independent classifier on the run's real training recordings"):
        result["independent"] = independent(loaded, cohort, generated.signal, series, truth[1],
                                            answers["generated"][best][0], args.n_boot)
    with phase(PROG, "telling generated from real recordings per type"):
        result["fidelity"] = fidelity(cohort.signal, generated.signal, series, truth[1], seed=0, n_boot=args.n_boot,
                                      level_db=cohort.static[:, 1])
    if evidence["real"].waves is not None:  # a network with the wave map head
        with phase(PROG, "scoring the waves and the mean waveform per condition"):
            result["grid"] = condition_grid(cohort.static, cohort.signal, generated.signal,
                                            {side: evidence[side].waves["prob"] for side in ("real", "generated")},
                                            cohort.series_id)
            result["type_waves"] = type_level_waves(cohort.label, cohort.static[:, 1],
                                                    {side: evidence[side].waves for side in ("real", "generated")},
                                                    CLASS_NAMES)
    return answers, evidence


def write_figures(folder: Path, result: dict, series: Series, cohort: Records, gen_uv: np.ndarray, truth,
                  answers: dict, evidence: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    reader = "series_model" if "series_model" in answers["generated"] else "heads"
    with phase(PROG, f"drawing the figures into {folder}"):
        paths = [plot_confusions(folder / "virtual_patients_confusion.png", result, reader),
                 plot_thresholds(folder / "virtual_patients_threshold.png", truth[0],
                                 {side: answers[side][reader][1] for side in answers}, result, reader),
                 plot_twins(folder / "virtual_patients_waterfall.png", waterfall_series(truth[1], truth[0]), series,
                            cohort, gen_uv, evidence)]
    for path in paths:
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    sys.exit(main())
