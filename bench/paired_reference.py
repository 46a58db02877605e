"""Does pairing each recording with its series' loudest recording help wave V? (issue 14, item 5)

    python bench/paired_reference.py --run logs/clinical

Darahem et al. (2025) feed each recording together with the same session's high-intensity recording.
Measured here on the frozen network's per-recording evidence (models/series.recording_evidence),
not as a second input channel of the network: the same read-out - gradient-boosted trees for wave V
presence and latency - is fitted on the train split's recordings with (a) the recording's own
evidence, (b) that evidence beside the evidence of its series' loudest recording and the level
difference, and scored on the test split (wave V F1; latency within 0.1 / 0.2 ms, where marked).
Both read-outs see the same rows, seeds and hyper-parameters (sklearn defaults); nothing is tuned.
Writes bench/results/paired_reference.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from data.cli import ArgumentParser, phase, run_main  # noqa: E402
from data.dataset import build_data  # noqa: E402
from training.checkpoint import load_run  # noqa: E402
from training.clinical import series_index, wave_v_metrics  # noqa: E402
from training.series import extract  # noqa: E402

PROG = "bench/paired_reference.py"  # argparse's prog and the start of its progress lines on stderr
N_BOOT = 1000  # bootstrap resamples of each interval


def features(ev, paired: bool) -> np.ndarray:
    """(N F) own evidence, or (N 2F+1) with the loudest recording of the same series and the level gap."""
    if not paired:
        return ev.evidence
    level = ev.static[:, 1]
    loudest = np.empty(len(level), dtype=np.int64)
    for rows in series_index(ev.series_id, level).members:  # rows ordered by level: the last is the loudest
        loudest[rows] = rows[-1]
    return np.concatenate([ev.evidence, ev.evidence[loudest], (level[loudest] - level)[:, None]], axis=1)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--out", default="bench/results/paired_reference.json")
    args = p.parse_args(argv)
    return run_main(lambda: _run(args), debug=args.debug)


def _run(args) -> int:
    run = load_run(args.run)
    # progress lines on stderr; stdout keeps the rows
    with phase(PROG, "rebuilding the run's data and split"):
        bundle = build_data(run.cfg.data, run.cfg.loss.class_weights)
    ev = {}
    for split in ("train", "test"):
        with phase(PROG, f"the network on the {split} split ({len(getattr(bundle, split))} recordings)"):
            ev[split] = extract(run.model, getattr(bundle, split))
    result = {"run": args.run, "split": "test", "read_out": "sklearn HistGradientBoosting, defaults, random_state 0"}
    for name, paired in (("single", False), ("paired", True)):
        with phase(PROG, f"{name}: fitting the read-outs, scoring the test split ({N_BOOT} bootstrap resamples)"):
            x = {s: features(e, paired) for s, e in ev.items()}
            mask = {s: e.truth["peak_mask"].astype(bool) for s, e in ev.items()}
            lat = {s: e.truth["peak_latency"] for s, e in ev.items()}
            clf = HistGradientBoostingClassifier(random_state=0).fit(x["train"], mask["train"])
            reg = HistGradientBoostingRegressor(random_state=0).fit(x["train"][mask["train"]],
                                                                    lat["train"][mask["train"]])
            te = ev["test"]
            series = series_index(te.series_id, te.static[:, 1])
            m = wave_v_metrics(series, mask["test"], clf.predict_proba(x["test"])[:, 1], lat["test"],
                               reg.predict(x["test"]), n_boot=N_BOOT)
        result[name] = {k: {"value": v.value, "ci": [v.low, v.high]} for k, v in m.items()}
        print(f"{name:7s} " + "  ".join(f"{k} {v}" for k, v in m.items()))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
