"""Generation quality of DDPM-1000, DDIM-50 and DPM-Solver++-20 against real recordings (issue 16).

    python bench/generation.py --run logs/clinical [--n 256] [--samplers ddpm,ddim:50,dpmpp2m:20]
        [--guidance W] [--eta E] [--split test|val] [--seed 0] [--threads 1] [--n-boot 1000]
        [--out bench/results/generation.json] [--doc docs/results.md | --no-doc]

Condition: normal hearing at >= 70 dB nHL (the split's NORMAL recordings at >= 70 dB nHL). Its
patients are split in two (seed ``--seed``): the *held-out* set H (whole patients, at least --n
recordings) and the *reference* set R (all the other patients). Each sampler generates one signal
per recording of H, with that recording's static vector (age, intensity, rate, FMP): generated and
held-out sets have the same size and the same conditions, and each is compared with R in the same
way. H's own row is the real-data reference: what a perfect generator scores at this size (the
Fréchet distance's noise floor, C2ST AUROC 0.5, the real share of each wave).

Measures of a set X (a sampler's signals, or H), each against R:
- mean-waveform correlation: Pearson r of X's mean waveform with R's (µV);
- waves I, III and V (bench/wave_v.py's picker, the same on every set): share of X with the wave
  inside R's interquartile latency range (about 50 % for real recordings by construction);
- Fréchet distance between Gaussians fitted to the network's own features of X and of R
  (evaluation/distribution.py): mean-pooled shared features h (decoder output) and z (bottleneck)
  of the run's network at t = 0, conditioned on each signal's static vector, as its heads read them;
- classifier two-sample test: cross-validated AUROC of a logistic regression telling X from R on
  the same features (folds keep a patient's recordings together; 0.5 = indistinguishable);
- train on X, test on R (TOGTR): ridge regressions of the stimulus intensity (scored by R²) and of
  "infant" (age 0 years, scored by AUROC) on the raw waveform (µV), fitted on X with X's conditions
  as labels and scored on R's recordings; H's row is the same model trained on real recordings;
- the network's own heads on X: share classified NORMAL, share with wave V present;
- network evaluations per signal (counted) and generation wall-clock and CPU time.

95 % intervals over H's patients (a generated signal goes with the patient whose conditions it was
generated for), R fixed: percentile bootstrap (C2ST reuses the out-of-fold scores), except for the
Fréchet distance and TOGTR, where resampling with replacement biases the value (duplicated rows
shrink the covariance; they fool the ridge's leave-one-out alpha) and the interval is the
delete-one-patient jackknife's, value +- 1.96 SE.
Prints the table, writes bench/results/generation.json and the section between the
``<!-- generation: begin/end -->`` markers of docs/results.md (nothing else in the file changes).
"""

from __future__ import annotations

import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_output_args, machine, progress_bar, write_outputs  # noqa: E402
from bench.wave_v import WAVES, mean_correlation, pick_waves, wave_shares  # noqa: E402
from data.cli import ArgumentParser, number, phase, run_main  # noqa: E402
from evaluation.distribution import (  # noqa: E402
    auroc,
    c2st_scores,
    fit_transfer,
    frechet_distance,
    transfer_score,
)
from evaluation.generate import MAX_GUIDANCE, generate  # noqa: E402
from training.clinical import bootstrap, jackknife  # noqa: E402
from training.diffusion import SAMPLERS  # noqa: E402

MIN_DB = 70.0  # the condition: NORMAL recordings at >= 70 dB nHL (issue 16's acceptance)
CORRELATION_TARGET = 0.9  # issue 16: mean generated waveform vs real mean
SHARE_TOLERANCE = 0.15  # issue 16: each wave's share within 15 points of the real recordings' own
DEFAULT_SAMPLERS = "ddpm,ddim:50,dpmpp2m:20"
DISPLAY = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp2m": "DPM-Solver++"}
DOC_KEY = "generation"
PROG = "bench/generation.py"  # argparse's prog and the start of its progress lines on stderr
TOGTR_TASKS = {"intensity": "regression", "infant": "binary"}


@dataclass(frozen=True)
class SamplerSpec:
    sampler: str
    steps: int
    eta: float

    @property
    def name(self) -> str:
        eta = f", eta={self.eta:g}" if self.sampler == "ddim" else ""
        return f"{DISPLAY[self.sampler]}-{self.steps}{eta}"


def parse_samplers(text: str, T: int, eta: float) -> list[SamplerSpec]:
    """``name[:steps[:eta]]`` comma-separated; ddpm without steps is the full chain (T steps); eta is
    DDIM's only (default ``eta``, the run's)."""
    specs = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        parts = item.split(":")
        name = parts[0]
        if name not in SAMPLERS or len(parts) > 3 or (len(parts) == 3 and name != "ddim"):
            raise ValueError(f"--samplers: expected name[:steps] with name in {list(SAMPLERS)} (ddim:steps:eta for "
                             f"DDIM's eta), found '{item}'")
        if len(parts) == 1 and name != "ddpm":
            raise ValueError(f"--samplers: expected a number of steps for {name} ({name}:STEPS), found '{item}'")
        try:
            steps = T if len(parts) == 1 else int(parts[1])
            e = float(parts[2]) if len(parts) == 3 else eta
        except ValueError:
            raise ValueError(f"--samplers: expected integer steps and a numeric eta, found '{item}'") from None
        if not 1 <= steps <= T or not 0.0 <= e <= 1.0:
            raise ValueError(f"--samplers: expected 1 <= steps <= {T} (the run's diffusion.timesteps) and "
                             f"0 <= eta <= 1, found '{item}'")
        specs.append(SamplerSpec(name, steps, e if name == "ddim" else 0.0))
    if not specs:
        raise ValueError(f"--samplers: expected at least one sampler, found '{text}'")
    return specs


# --------------------------------------------------------------------------------------------
# data: the condition, split by patient


@dataclass
class RealSet:
    signal: Tensor  # (N 1 L) normalized, as the network sees it
    uv: np.ndarray  # (N 1 L) µV
    static: Tensor  # (N 4) physical units
    patient: np.ndarray  # (N) patient id


def condition_sets(tensors: dict[str, Tensor], stats, n: int, seed: int) -> tuple[RealSet, RealSet]:
    """(held-out H, reference R): the condition's recordings split by patient; H holds whole patients,
    drawn in a seeded order until it has at least n recordings; R the rest."""
    cond = ((tensors["label"] == 0) & (tensors["static"][:, 1] >= MIN_DB)).numpy()
    pid = tensors["patient_id"].numpy()
    patients = np.random.default_rng(seed).permutation(np.unique(pid[cond]))
    counts = np.array([(pid[cond] == p).sum() for p in patients])
    k = int(np.searchsorted(np.cumsum(counts), n) + 1)  # first k patients hold >= n recordings
    if k >= len(patients) or counts[k:].sum() < n:
        raise ValueError(f"--n {n}: expected at least {n} held-out and {n} reference NORMAL recordings at >= "
                         f"{MIN_DB:g} dB nHL (whole patients), found {int(cond.sum())} recordings of "
                         f"{len(patients)} patients")
    held = np.isin(pid, patients[:k]) & cond

    def subset(mask: np.ndarray) -> RealSet:
        x = tensors["signal"][mask]
        return RealSet(x, stats.to_uv(x).numpy(), tensors["static"][mask], pid[mask])

    return subset(held), subset(cond & ~held)


# --------------------------------------------------------------------------------------------
# the network: counting evaluations, features at t = 0


class CountingNet(nn.Module):
    """The network, counting the signals it is evaluated on (network evaluations = rows / signals)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x_t: Tensor, t: Tensor, static: Tensor, drop_cond: Tensor | None = None, **kw):
        self.rows += x_t.shape[0]
        return self.net(x_t, t, static, drop_cond=drop_cond, **kw)


@torch.no_grad()
def network_features(model: nn.Module, x: Tensor, static: Tensor, batch: int = 256) -> tuple[np.ndarray, dict]:
    """The network at t = 0 on normalized signals x (N 1 L) with their static vectors (N 4):
    features (N C0+Cz), mean-pooled h and z as the heads read them, and the heads' answers
    (``normal``: argmax class is NORMAL, ``wave_v``: wave V logit > 0), bool (N) each."""
    was_training = model.training
    model.eval()
    feats, normal, wave_v = [], [], []
    try:
        for i in range(0, len(x), batch):
            xb, sb = x[i : i + batch], static[i : i + batch]
            out = model(xb, torch.zeros(len(xb), dtype=torch.long, device=xb.device), sb, return_features=True)
            h, z = out["features"]  # (b L C0), (b Lb Cz)
            feats.append(torch.cat([h.float().mean(1), z.float().mean(1)], dim=1))  # (b C0+Cz)
            normal.append(out["class_logits"].argmax(1) == 0)
            wave_v.append(out["peak_logit"] > 0)
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy().astype(np.float64), {"normal": torch.cat(normal).numpy(),
                                                         "wave_v": torch.cat(wave_v).numpy()}


# --------------------------------------------------------------------------------------------
# measures of one set X against the reference R


@dataclass
class Measured:
    uv: np.ndarray  # (N 1 L) µV
    static: np.ndarray  # (N 4)
    features: np.ndarray  # (N F)
    heads: dict[str, np.ndarray]
    waves: dict[str, np.ndarray]  # picked latencies (ms), (N) each


def measure(model: nn.Module, stats, uv: np.ndarray, static: Tensor) -> Measured:
    x = stats.from_uv(torch.as_tensor(uv, dtype=torch.float32))  # (N 1 L)
    feats, heads = network_features(model, x, static)
    return Measured(uv, static.numpy().astype(np.float64), feats, heads, pick_waves(uv))


def togtr_labels(static: np.ndarray) -> dict[str, np.ndarray]:
    """The TOGTR targets read off the conditioning: intensity (dB nHL) and infant (age 0 years)."""
    return {"intensity": static[:, 1], "infant": (static[:, 0] == 0).astype(np.float64)}


def score_set(x: Measured, ref: Measured, unit_rows: list[np.ndarray], ref_groups: np.ndarray, *, seed: int,
              n_boot: int) -> dict:
    """Every measure of X against R, with 95 % intervals over X's units (patients): percentile bootstrap,
    or the delete-one jackknife for the Fréchet distance and TOGTR (see the module docstring)."""
    n_units = len(unit_rows)

    def rows(idx: np.ndarray) -> np.ndarray:
        return np.concatenate([unit_rows[i] for i in idx])

    def est(stat) -> dict:
        return bootstrap(stat, n_units, n_boot=n_boot, seed=seed).to_dict()

    iqr = {w: tuple(np.percentile(ref.waves[w], [25, 75])) for w in WAVES}
    out = {"mean_waveform_correlation": est(lambda i: mean_correlation(x.uv[rows(i)], ref.uv))}
    out["wave_shares_in_reference_iqr"] = {
        w: est(lambda i, w=w: wave_shares({v: x.waves[v][rows(i)] for v in WAVES}, iqr)[w]) for w in (*WAVES, "all")}
    out["frechet"] = jackknife(lambda i: frechet_distance(x.features[rows(i)], ref.features), n_units).to_dict()
    x_groups = np.empty(len(x.uv), dtype=np.int64)
    for u, r in enumerate(unit_rows):
        x_groups[r] = -1 - u  # unit ids never collide with the reference's patient ids (>= 0)
    s_x, s_ref = c2st_scores(x.features, ref.features, x_groups, ref_groups, seed=seed)
    out["c2st_auroc"] = est(lambda i: auroc(s_x[rows(i)], s_ref))
    flat_x, flat_ref = x.uv.reshape(len(x.uv), -1), ref.uv.reshape(len(ref.uv), -1)  # (N L), (M L)
    y_x, y_ref = togtr_labels(x.static), togtr_labels(ref.static)
    out["togtr"] = {}
    for target, task in TOGTR_TASKS.items():

        def togtr(i: np.ndarray, target=target, task=task) -> dict[str, float]:
            r = rows(i)
            return transfer_score(task, fit_transfer(task, flat_x[r], y_x[target][r]), flat_ref, y_ref[target])

        for metric in togtr(np.arange(n_units)):
            out["togtr"][f"{target}_{metric}"] = jackknife(lambda i, f=togtr, m=metric: f(i)[m], n_units).to_dict()
    out["heads"] = {k: est(lambda i, k=k: float(np.mean(x.heads[k][rows(i)]))) for k in ("normal", "wave_v")}
    return out


def acceptance(row: dict, real: dict) -> dict:
    """Issue 16's targets for a generated row: mean-waveform r >= 0.9, each wave's share within 15
    points of the held-out real recordings' share."""
    r = row["mean_waveform_correlation"]["value"]
    gaps = {w: row["wave_shares_in_reference_iqr"][w]["value"] - real["wave_shares_in_reference_iqr"][w]["value"]
            for w in WAVES}
    return {"correlation": bool(r >= CORRELATION_TARGET),
            "share_gap_points": {w: round(100 * g, 1) for w, g in gaps.items()},
            "waves_within_15_points": {w: bool(abs(g) <= SHARE_TOLERANCE) for w, g in gaps.items()}}


# --------------------------------------------------------------------------------------------
# report


def _est(e: dict, pct: bool = False, digits: int = 3) -> str:
    v, (lo, hi) = e["value"], e["ci"]
    if not np.isfinite(v):
        return "n/a"
    if pct:
        return f"{100 * v:.1f} % [{100 * lo:.0f}, {100 * hi:.0f}]"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]


def render(result: dict) -> str:
    """Two Markdown tables: waveform and waves; distribution, transfer and the network's heads."""
    waves, dist = [], []
    for row in result["rows"]:
        w, t, h = row["wave_shares_in_reference_iqr"], row["togtr"], row["heads"]
        nfe = f"{row['nfe_per_signal']:g}" if "nfe_per_signal" in row else "—"
        wall = f"{row['wall_s']:.0f} / {row['cpu_s']:.0f}" if "wall_s" in row else "—"
        waves.append([row["name"], nfe, wall, _est(row["mean_waveform_correlation"]),
                      *(_est(w[k], pct=True) for k in (*WAVES, "all"))])
        dist.append([row["name"], _est(row["frechet"], digits=4), _est(row["c2st_auroc"]), _est(t["intensity_r2"]),
                     _est(t["intensity_mae"], digits=1), _est(t["infant_auroc"]), _est(h["normal"], pct=True),
                     _est(h["wave_v"], pct=True)])
    return "\n".join([
        *_table(["signals", "NFE / signal", "wall / CPU s", "mean-waveform r", "wave I in IQR", "wave III in IQR",
                 "wave V in IQR", "all three"], waves), "",
        *_table(["signals", "Fréchet distance", "C2ST AUROC", "TOGTR intensity R²", "TOGTR intensity MAE (dB)",
                 "TOGTR infant AUROC", "heads: NORMAL", "heads: wave V present"], dist)])


def doc_section(result: dict) -> str:
    r, rec = result, result["recordings"]
    iqr = ", ".join(f"{w} {a:.2f}-{b:.2f} ms" for w, (a, b) in r["reference_iqr_ms"].items())
    verdicts = []
    for row in r["rows"]:
        if "acceptance" not in row:
            continue
        a = row["acceptance"]
        gaps = ", ".join(f"{w} {g:+.1f}" for w, g in a["share_gap_points"].items())
        ok = a["correlation"] and all(a["waves_within_15_points"].values())
        verdicts.append(f"- {row['name']}: r = {row['mean_waveform_correlation']['value']:.3f} "
                        f"({'>=' if a['correlation'] else '<'} {CORRELATION_TARGET}); share gaps to the held-out "
                        f"real recordings {gaps} points: **{'met' if ok else 'not met'}**")
    return f"""## Generation quality: three samplers against real recordings (issue 16)

Command: `{r['command']}`

Machine: {r['machine']}; {r['threads']} thread(s). Date: {r['date']}.
Run `{r['run']}` ({r['checkpoint']} checkpoint, EMA weights when the run has them), classifier-free
guidance w = {r['guidance']:g}, seed {r['seed']} (generation and patient split). 95 % intervals over the
{rec['held_out_patients']} held-out patients, the reference set fixed: percentile bootstrap ({r['n_boot']}
resamples), or for the Fréchet distance and TOGTR (which resampling with replacement biases) the
delete-one-patient jackknife, value +- 1.96 SE.

Condition: {r['condition']}, {rec['condition']} recordings. Held-out set H: {rec['held_out']} recordings
of {rec['held_out_patients']} patients; reference set R: {rec['reference']} recordings of
{rec['reference_patients']} patients. Each sampler generates one signal per recording of H, with its
static vector; every row is measured against R; the last row is H itself (the real-data reference:
the Fréchet noise floor, C2ST 0.5, the real share of each wave). Waves picked by bench/wave_v.py's
picker; R's interquartile ranges: {iqr}. NFE: network evaluations per signal (counted; guidance
costs two per step); wall / CPU: seconds of wall-clock and of process CPU time to generate the
{rec['held_out']} signals (CPU time is the robust one on a shared machine).

{render(r)}

Fréchet distance and C2ST on the network's own features ({r['features']}).
TOGTR: ridge regressions (alpha by leave-one-out) of intensity (dB nHL) and of infant (age 0 years,
0/1, read by AUROC) on the raw waveform, trained on the row's signals labelled with their conditions,
tested on R (a constant prediction scores R² 0 and AUROC 0.5). Heads: the run's own class and wave V
heads on the row's signals.

Against issue 16's targets (r >= {CORRELATION_TARGET}; each wave's share within {100 * SHARE_TOLERANCE:.0f} points
of the held-out real recordings'):

""" + "\n".join(verdicts)



# --------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--n", type=number(int, ge=2, le=100_000), default=256,
                   help="held-out real recordings (whole patients, at least n) = signals per sampler")
    p.add_argument("--samplers", default=DEFAULT_SAMPLERS,
                   help="comma-separated name[:steps[:eta]]; ddpm alone is the full chain")
    p.add_argument("--guidance", type=number(float, ge=0.0, le=MAX_GUIDANCE), help="default: the run's")
    p.add_argument("--eta", type=number(float, ge=0.0, le=1.0), help="DDIM eta; default: the run's")
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--seed", type=number(int, ge=0, le=2**32 - 1), default=0)
    p.add_argument("--threads", type=number(int, ge=1, le=1024), default=1)
    p.add_argument("--batch-size", type=number(int, ge=1, le=65_536), default=256)
    p.add_argument("--n-boot", type=number(int, ge=0, le=100_000), default=1000)
    add_output_args(p, "generation")
    args = p.parse_args(argv)
    return run_main(lambda: run(args, argv), debug=args.debug)


def run(args, argv: list[str] | None) -> int:
    from data.dataset import build_data
    from training.checkpoint import load_run

    torch.set_num_threads(args.threads)
    loaded = load_run(args.run, which=args.checkpoint)
    stats, diffusion = loaded.stats, loaded.diffusion
    if stats.normalization != "global":
        raise ValueError(f"run '{args.run}': expected global signal normalization (µV recoverable from the "
                         f"dataset's tensors), found '{stats.normalization}'")
    kw = diffusion.sampling_kwargs()
    guidance = kw["guidance"] if args.guidance is None else args.guidance
    specs = parse_samplers(args.samplers, diffusion.T, kw["eta"] if args.eta is None else args.eta)
    # Long on a CPU (DDPM's full chain above all): every long step says so on stderr (start, then its seconds),
    # a bar on a terminal counts the sampler's steps; stdout keeps the per-sampler lines and the tables.
    with phase(PROG, f"rebuilding the run's {args.split} split"):
        tensors = getattr(build_data(loaded.cfg.data, loaded.cfg.loss.class_weights), args.split).tensors
    held, ref = condition_sets(tensors, stats, args.n, args.seed)
    model = loaded.model
    with phase(PROG, f"measuring the reference set ({len(ref.uv)} recordings)"):
        ref_m = measure(model, stats, ref.uv, ref.static)
    units = [np.flatnonzero(held.patient == p) for p in np.unique(held.patient)]
    score = {"unit_rows": units, "ref_groups": ref.patient, "seed": args.seed, "n_boot": args.n_boot}
    rows = []
    counter = CountingNet(model).eval()  # generate() restores the mode it finds: eval, as load_run left it
    for spec in specs:
        counter.rows = 0
        gen = torch.Generator().manual_seed(args.seed)
        # generate()'s progress advances once per sampler step of each batch; on a terminal the bar's update costs
        # microseconds against a network evaluation, so the wall and CPU times below stand
        steps = -(-len(held.uv) // args.batch_size) * spec.steps
        with phase(PROG, f"{spec.name}: generating {len(held.uv)} signals"), progress_bar(steps, spec.name) as bar:
            t0, c0 = time.perf_counter(), time.process_time()
            uv = generate(counter, diffusion, stats, held.static, len(held.uv), spec.sampler, spec.steps, guidance,
                          gen, eta=spec.eta, clip=kw["clip"], batch_size=args.batch_size,
                          progress=bar).numpy().astype(np.float64)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if not np.isfinite(uv).all():
            raise ValueError(f"{spec.name}: generated {int((~np.isfinite(uv)).sum())} non-finite values")
        row = {"name": spec.name, "sampler": spec.sampler, "steps": spec.steps, "eta": spec.eta,
               "nfe_per_signal": counter.rows / len(uv), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
               "signals_per_s": round(len(uv) / wall, 3)}
        with phase(PROG, f"{spec.name}: scoring against the reference set ({args.n_boot} bootstrap resamples)"):
            row.update(score_set(measure(model, stats, uv, held.static), ref_m, **score))
        rows.append(row)
        print(f"{spec.name}: {wall:.0f} s, r = {row['mean_waveform_correlation']['value']:.3f}", flush=True)
    real = {"name": "real held-out recordings (H)"}
    with phase(PROG, f"the real held-out recordings: scoring against the reference set ({args.n_boot} bootstrap "
                     "resamples)"):
        real.update(score_set(measure(model, stats, held.uv, held.static), ref_m, **score))
    for row in rows:
        row["acceptance"] = acceptance(row, real)
    rows.append(real)
    command = "python bench/generation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {
        "command": command, "machine": machine(), "threads": args.threads,
        "date": datetime.date.today().isoformat(), "run": str(args.run), "checkpoint": args.checkpoint,
        "split": args.split, "condition": f"NORMAL recordings at >= {MIN_DB:g} dB nHL of the {args.split} split",
        "seed": args.seed, "n_boot": args.n_boot, "guidance": guidance,
        "clip": kw["clip"],
        "features": f"mean-pooled h ({model.cfg.widths()[0]} channels) and z ({model.cfg.head_dim}) of the run's "
                    "network at t = 0, conditioned on each signal's static vector",
        "recordings": {"condition": len(held.uv) + len(ref.uv), "held_out": len(held.uv),
                       "held_out_patients": len(units), "reference": len(ref.uv),
                       "reference_patients": len(np.unique(ref.patient))},
        "reference_iqr_ms": {w: [float(v) for v in np.percentile(ref_m.waves[w], [25, 75])] for w in WAVES},
        "rows": rows,
    }
    print(render(result))
    write_outputs(args, DOC_KEY, result, doc_section(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
