"""Do generated signals show wave V where real ones do? (issue 5's acceptance, on a trained run)

    python bench/wave_v.py --run logs/quickstart [--n 256] [--guidance 1,2,3] [--eta 0,1] [--steps 50]

Condition: normal hearing at high intensity (NORMAL test recordings at >= 70 dB nHL; --split val
for the validation split). The static
vector is the median of those recordings; the expected range is the 5th-95th percentile of their
labelled wave V latencies. The same peak picker (evaluation.metrics.pick_wave_v_latency) is run on
the generated signals, on the real recordings of the condition (what the picker achieves on real
data), and on white noise of the real signals' scale (chance). Sampling settings default to the
run's own (its `diffusion` section); --guidance and --eta take comma-separated lists and every
combination gets a row. With n = 256 a share's standard error is at most 3.1 points.

Waves I, III and V (issue 16): the same picker finds wave V in its window, then waves I and III in
windows anchored on that wave V by the generator's interpeak intervals (data/synthetic.py:
lat_I = lat_V - IPL, lat_III = lat_I + 0.53 IPL, so lat_V - lat_III = 0.47 IPL; IPL = 4.0 +
exp(-months / 10) +- 0.12 ms for a hearing ear: IPL_MS below). Each wave's expected range is the
interquartile range of its picked latencies on the real recordings of the condition, so the real
recordings' own share is about 50 % by construction and a generated share is read against it. Every
row also gives the Pearson correlation of the mean generated waveform with the mean real waveform
(µV), next to the same correlation between the even and the odd real recordings (how far a mean of
that many noisy recordings is from its own expectation). Prints the tables, writes bench/results/wave_v.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import progress_bar, write_result  # noqa: E402
from data.cli import phase  # noqa: E402
from data.dataset import build_data  # noqa: E402
from evaluation.generate import generate, sampling_settings  # noqa: E402
from evaluation.metrics import pick_wave_v_latency  # noqa: E402
from training.checkpoint import load_run  # noqa: E402

PROG = "bench/wave_v.py"  # the start of its progress lines on stderr
BATCH = 256  # signals per generate() batch (its default), named so that the progress bar's total agrees
WAVES = ("I", "III", "V")
IPL_MS = (3.7, 5.3)  # I-V interpeak interval of the generator's hearing ears, +-3 sd over all ages (not
# the 7 % of patients with slowed brainstem conduction, whose wave I falls earlier: real and generated alike)
III_TO_V = 0.47  # lat_V - lat_III = (1 - 0.53) IPL
FIRST_MS = 0.75  # no wave I search before this: the stimulus artefact lives in the first 0.5 ms


def wave_windows(lat_v: float) -> dict[str, tuple[float, float]]:
    """The picker's search windows (ms) for waves I and III of a signal whose wave V is at ``lat_v``."""
    lo, hi = IPL_MS
    return {"I": (max(lat_v - hi, FIRST_MS), lat_v - lo), "III": (lat_v - III_TO_V * hi, lat_v - III_TO_V * lo)}


def pick_waves(signals: np.ndarray) -> dict[str, np.ndarray]:
    """Latencies (ms) of waves I, III and V by the wave V picker (evaluation.metrics.pick_wave_v_latency),
    I and III in windows anchored on each signal's picked wave V. signals: [N, 1, L] or [N, L] µV."""
    x = signals.reshape(len(signals), -1)  # [N, L]
    lat = {"V": pick_wave_v_latency(x)}
    lat["I"], lat["III"] = np.empty(len(x)), np.empty(len(x))
    for v in np.unique(lat["V"]):  # V sits on the sample grid: one picker call per distinct latency
        rows = lat["V"] == v
        for wave, window in wave_windows(float(v)).items():
            lat[wave][rows] = pick_wave_v_latency(x[rows], window_ms=window)
    return {w: lat[w] for w in WAVES}


def wave_shares(lat: dict[str, np.ndarray], ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Share of signals with each wave inside its range, and with all three at once ("all")."""
    inside = {w: (lat[w] >= ranges[w][0]) & (lat[w] <= ranges[w][1]) for w in WAVES}
    return {**{w: float(np.mean(inside[w])) for w in WAVES}, "all": float(np.mean(np.all(list(inside.values()), 0)))}


def mean_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the mean waveform of ``a`` with that of ``b`` ([N, 1, L] and [M, 1, L], or 2-D)."""
    ma, mb = a.reshape(len(a), -1).mean(axis=0), b.reshape(len(b), -1).mean(axis=0)  # [L], [L]
    if ma.shape != mb.shape:
        raise ValueError(f"mean_correlation: expected signals of one length, found {ma.shape[0]} and {mb.shape[0]}")
    return float(np.corrcoef(ma, mb)[0, 1])


def share_in(lat: np.ndarray, lo: float, hi: float) -> float:
    return float(np.mean((lat >= lo) & (lat <= hi)))


def floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, found '{text}'") from None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp2m"), help="default: the run's diffusion.sampler")
    p.add_argument("--steps", type=int, help="default: the run's diffusion.sampling_steps")
    p.add_argument("--guidance", type=floats, help="comma-separated w values; default: the run's diffusion.guidance")
    p.add_argument("--eta", type=floats, help="comma-separated DDIM eta values; default: the run's diffusion.eta")
    p.add_argument("--split", choices=("val", "test"), default="test", help="recordings that define the condition")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "wave_v.json"))
    args = p.parse_args(argv)

    run = load_run(args.run, "best")
    kw = sampling_settings(run.diffusion, argparse.Namespace(sampler=args.sampler, steps=args.steps))
    guidances, etas = args.guidance or [kw["guidance"]], args.eta or [kw["eta"]]
    # one generation per guidance and eta, the long steps: progress lines on stderr (and a bar on a terminal),
    # stdout keeps the tables
    with phase(PROG, f"rebuilding the run's {args.split} split"):
        test = getattr(build_data(run.cfg.data, run.cfg.loss.class_weights), args.split).tensors
    s = run.stats
    cond = (test["label"] == 0) & (test["static"][:, 1] >= 70)  # NORMAL, >= 70 dB nHL
    if not cond.any():
        raise ValueError(f"run '{args.run}': no NORMAL {args.split} recordings at >= 70 dB nHL")
    lat_true = test["peak_latency"][cond & test["peak_mask"]].numpy()
    lo, hi = np.percentile(lat_true, [5, 95])
    real_uv = s.to_uv(test["signal"][cond]).numpy()  # [m,1,L] µV
    static = test["static"][cond].median(dim=0).values  # [4]
    real_picked = pick_wave_v_latency(real_uv)  # [m] ms: what the picker finds on real recordings
    noise = np.random.default_rng(args.seed).normal(0, real_uv.std(), size=(args.n, 1, real_uv.shape[-1]))
    real_waves = pick_waves(real_uv)
    iqr = {w: (float(np.percentile(real_waves[w], 25)), float(np.percentile(real_waves[w], 75))) for w in WAVES}
    rows = []
    for w, eta in itertools.product(guidances, etas):
        gen = torch.Generator().manual_seed(args.seed)
        steps = -(-args.n // BATCH) * kw["steps"]  # generate()'s progress: one per sampler step of each batch
        with (phase(PROG, f"generating {args.n} signals, {kw['sampler']}-{kw['steps']}, w={w:g}, eta={eta:g}"),
              progress_bar(steps, f"w={w:g}, eta={eta:g}") as bar):
            fake = generate(run.model, run.diffusion, s, static.expand(args.n, 4).clone(), args.n, kw["sampler"],
                            kw["steps"], w, gen, eta=eta, clip=kw["clip"], batch_size=BATCH, progress=bar).numpy()
        picked = pick_wave_v_latency(fake)
        rows.append({"guidance": w, "eta": eta, "share_in_range": share_in(picked, lo, hi),
                     "median_latency_ms": float(np.median(picked)),
                     "wave_shares_in_real_iqr": wave_shares(pick_waves(fake), iqr),
                     "mean_waveform_correlation": mean_correlation(fake, real_uv)})
    result = {
        "run": str(args.run), "condition": f"NORMAL, >= 70 dB nHL ({args.split} split)", "recordings": int(cond.sum()),
        "static_median": [round(float(v), 3) for v in static], "expected_latency_ms": [float(lo), float(hi)],
        "sampler": kw["sampler"], "steps": kw["steps"], "n": args.n, "seed": args.seed,
        "run_settings": {"guidance": kw["guidance"], "eta": kw["eta"]},
        "generated": rows,
        "share_in_range": {"real": share_in(real_picked, lo, hi),
                           "white_noise": share_in(pick_wave_v_latency(noise), lo, hi)},
        "median_latency_ms": {"real_labelled": float(np.median(lat_true)),
                              "real_picked": float(np.median(real_picked))},
        "wave_real_iqr_ms": iqr,
        # the ceiling a generated mean can reach against a real mean of this many recordings
        "mean_waveform_correlation_real_halves": mean_correlation(real_uv[0::2], real_uv[1::2]),
        "wave_shares_in_real_iqr": {"real": wave_shares(real_waves, iqr),
                                    "white_noise": wave_shares(pick_waves(noise), iqr)},
    }
    print(f"wave V picked in {lo:.2f}-{hi:.2f} ms (NORMAL, >= 70 dB nHL, {args.split} split; "
          f"{kw['sampler']}-{kw['steps']}, n = {args.n}; the run's own setting is w={kw['guidance']:g}, "
          f"eta={kw['eta']:g}):")
    print("| signals | share in range | median picked latency (ms) |\n|---|---|---|")
    for r in rows:
        print(f"| generated, w={r['guidance']:g}, eta={r['eta']:g} | {100 * r['share_in_range']:.1f} % "
              f"| {r['median_latency_ms']:.2f} |")
    print(f"| real recordings ({int(cond.sum())}) | {100 * result['share_in_range']['real']:.1f} % | "
          f"{result['median_latency_ms']['real_picked']:.2f} |")
    print(f"| white noise | {100 * result['share_in_range']['white_noise']:.1f} % | — |")
    print("\nwaves inside the real recordings' interquartile range ("
          + ", ".join(f"{w} {a:.2f}-{b:.2f} ms" for w, (a, b) in iqr.items()) + "):")
    print("| signals | I | III | V | all three | mean-waveform correlation |\n|---|---|---|---|---|---|")
    shares = [(f"generated, w={r['guidance']:g}, eta={r['eta']:g}", r["wave_shares_in_real_iqr"],
               f"{r['mean_waveform_correlation']:.3f}") for r in rows]
    halves = f"{result['mean_waveform_correlation_real_halves']:.3f} (even vs odd recordings)"
    shares += [("real recordings", result["wave_shares_in_real_iqr"]["real"], halves),
               ("white noise", result["wave_shares_in_real_iqr"]["white_noise"], "—")]
    for name, sh, corr in shares:
        print(f"| {name} | " + " | ".join(f"{100 * sh[k]:.1f} %" for k in (*WAVES, "all")) + f" | {corr} |")
    write_result(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
