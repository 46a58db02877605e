"""The figure of docs/waves.md "What the data allows": wave V misses among clear peaks, with the hidden true
latency the generator knows, the mark and the network's answer.

    python bench/waves_misses.py --run logs/clinical_map6 --checkpoint last --out docs/img/waves_misses.png

Development cohort (400 patients, generator seed 777: neither a training nor the benchmark cohort).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.cli import ArgumentParser, phase, run_main  # noqa: E402
from data.synthetic import generate, true_waves  # noqa: E402
from training.checkpoint import load_run  # noqa: E402

V = 2  # WAVE_NAMES index of wave V
PROG = "bench/waves_misses.py"  # argparse's prog and the start of its progress lines on stderr


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--out", default="docs/img/waves_misses.png")
    args = p.parse_args(argv)
    return run_main(lambda: draw(args), debug=args.debug)


def draw(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = load_run(args.run, which=args.checkpoint)
    with phase(PROG, "generating the development cohort (400 patients, seed 777)"):  # progress on stderr
        rec, w = generate(400, 777), true_waves(400, 777)
    x = ((torch.from_numpy(rec.signal)[:, None] - run.stats.signal_mean) / run.stats.signal_std).float()
    with phase(PROG, f"the network on {len(x)} recordings"), torch.no_grad():
        out = run.model(x, torch.zeros(len(x), dtype=torch.long), torch.from_numpy(rec.static))
    lat, prob = out["wave_latency"][:, V].numpy(), torch.softmax(out["wave_logits"][:, V], -1).numpy()
    clear = rec.peak_mask & (rec.peak_latency < 9.6) & (rec.peak_amplitude > 0.2)
    err = np.abs(lat - rec.peak_latency)
    shown = np.flatnonzero(clear & (err > 0.2))[:6]
    t = np.arange(rec.signal.shape[1]) * 0.05
    fig, ax = plt.subplots(2, 3, figsize=(12, 6.2), sharex=True)
    for a, i in zip(ax.flat, shown, strict=False):
        a.plot(t, rec.signal[i], "k", lw=1, label="recording")
        a.axvline(w.lat[i, V], color="0.6", ls=":", lw=1.5, label="true wave V (hidden)")
        a.axvline(rec.peak_latency[i], color="g", lw=1.5, label="mark (largest sample ±0.25 ms of true)")
        a.axvline(lat[i], color="r", ls="--", lw=1.5, label="network")
        a2 = a.twinx()
        a2.fill_between(t, prob[i], color="r", alpha=0.18, lw=0)
        a2.set_ylim(0, 1.05)
        a2.set_ylabel("map probability", color="r", fontsize=8)
        a2.tick_params(labelsize=8, colors="r")
        a.set_xlim(3, 10)
        a.set_title(f"{rec.static[i, 1]:.0f} dB nHL, SL {rec.static[i, 1] - rec.threshold[i]:+.0f} dB, "
                    f"V {rec.peak_amplitude[i]:.2f} µV", fontsize=10)
    for a in ax[1]:
        a.set_xlabel("latency (ms)")
    for a in ax[:, 0]:
        a.set_ylabel("µV")
    ax[0, 0].legend(loc="lower left", fontsize=7.5, framealpha=0.9)
    fig.suptitle("Wave V misses (> 0.2 ms) among clear peaks (marked amplitude > 0.2 µV): noise makes several peaks\n"
                 "of similar size near the hidden true latency; the mark takes the largest within ±0.25 ms of it\n"
                 f"{int((clear & (err > 0.1)).sum())} of {int(clear.sum())} clear marked peaks missed by > 0.1 ms; "
                 f"run {args.run} ({args.checkpoint}.pt), development cohort (400 patients, seed 777)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
