"""Does the input check catch what is unlike the training data? (issue 27)

    python bench/ood.py --run RUN [--checkpoint best] [--max-series 200] [--split test|train] [--epl FILE ...]
        [--device auto] [--out bench/results/ood.json]

Needs the run's ``familiarity.json`` (``python -m evaluation.trust --run RUN``; training writes it). The
in-distribution series are the run's own TEST split (held-out patients; the check's thresholds came from
the validation split); at most ``--max-series`` of them, drawn with a fixed seed. ``--split train`` takes
training series instead, less those the check's statistics were fitted on: a development set on which to
choose the check's settings before they are reported on the test split. Each out-of-distribution
set is those same series changed one way (static values kept, so only the signal differs):

- ``x10``: amplitude times 10 (a gain or unit error: mV read as 100 µV, a near-field recording);
- ``resampled``: recorded at 10 kHz and brought to 20 kHz by repeating each sample, with no interpolation
  (anti-imaging) filter; the staircase puts power near 10 kHz;
- ``reversed``: time-reversed (a file written backwards, a sign-of-time error);
- ``noise``: white Gaussian noise with the training split's signal SD (amplitude matches, shape does not);
- ``flat``: a flat line at 0 µV (a disconnected electrode);
- ``epl``: the ``abr`` package's EPL files (an animal lab: tone pips, dB SPL; CAP-139-5 is a compound action
  potential) read as ``evaluation.predict`` reads them, one series per file; found with ``--epl`` or, when
  the package ``abr`` is importable, in its ``data`` folder (bench/epl_marks.py says how to get it).

Reported per set: the share of series judged "unlike training data" (flagged) and not "in range", the
AUROC of the series score against the in-distribution test series, and per recording the same; for the
test series themselves, the false-alarm rates. The target (issue 27): >= 95 % of these series flagged
with <= 5 % false alarms. 95 % bootstrap intervals over series.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from data.cli import ArgumentParser, number, phase, resolve_device, run_main  # noqa: E402

PROG = "bench/ood.py"  # argparse's prog and the start of its progress lines on stderr
TRANSFORMS = ("x10", "resampled", "reversed", "noise", "flat")
TARGET_FLAGGED, TARGET_FALSE_ALARM = 0.95, 0.05


def transform(name: str, x: np.ndarray, signal_std: float, rng: np.random.Generator) -> np.ndarray:
    """Recordings (N L) in µV changed as the module docstring says."""
    if name == "x10":
        return x * 10.0
    if name == "resampled":
        return np.repeat(x[:, ::2], 2, axis=1)[:, : x.shape[1]]
    if name == "reversed":
        return x[:, ::-1].copy()
    if name == "noise":
        return rng.standard_normal(x.shape) * signal_std
    if name == "flat":
        return np.zeros_like(x)
    raise ValueError(f"transform: expected one of {TRANSFORMS}, found {name!r}")


class Recordings:
    """A minimal dataset for training.series.extract: normalized signal, static, series and patient ids."""

    def __init__(self, signal_uv: np.ndarray, static: np.ndarray, series_id: np.ndarray, stats: Any) -> None:
        import torch

        x = (signal_uv - stats.signal_mean) / stats.signal_std
        self.tensors = {"signal": torch.as_tensor(x, dtype=torch.float32)[:, None], "static":
                        torch.as_tensor(static, dtype=torch.float32),
                        "series_id": torch.as_tensor(series_id, dtype=torch.int64),
                        "patient_id": torch.as_tensor(series_id, dtype=torch.int64)}
        self.signal_uv = signal_uv

    def __len__(self) -> int:
        return len(self.tensors["signal"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.tensors.items()}


def verdicts(loaded: Any, fam: Any, data: Recordings, device: Any) -> Any:
    from evaluation.familiarity import Inputs, check
    from training.clinical import series_index
    from training.series import extract

    ev = extract(loaded.model, data, device=device)
    series = series_index(ev.series_id, ev.static[:, 1])
    inp = Inputs(data.signal_uv, data.tensors["signal"], data.tensors["static"], ev.evidence)
    return check(fam, inp, loaded.model, loaded.diffusion, series, device=device)


def test_series(loaded: Any, max_series: int, seed: int = 0, *, split: str = "test", n_fit: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """µV signals (N L), static (N 4), series ids (N,) and marked wave V (N,) of at most ``max_series``
    series of the run's ``split``: "test", or "train" for development, less the series whose ``n_fit``
    recordings the input check's statistics came from (evaluation.trust.subsample)."""
    from data.dataset import build_data
    from data.stats import to_physical
    from evaluation.trust import subsample

    bundle = build_data(loaded.cfg.data, loaded.cfg.loss.class_weights)
    test = getattr(bundle, split)
    sid = test.tensors["series_id"].numpy()
    ids = np.unique(sid)
    if split == "train":
        ids = np.setdiff1d(ids, subsample(test, n_fit).tensors["series_id"].numpy())
    keep = np.sort(np.random.default_rng(seed).permutation(ids)[:max_series])
    rows = np.flatnonzero(np.isin(sid, keep))
    x = to_physical(test.tensors["signal"][rows, 0], loaded.stats)[0].numpy().astype(np.float64)
    return x, test.tensors["static"][rows].numpy(), sid[rows], test.tensors["peak_mask"][rows].numpy()


def epl_files(given: list[Path] | None) -> tuple[list[Path], str]:
    """The EPL files to read, and where they came from."""
    if given:
        return given, "--epl"
    import importlib.util

    spec = importlib.util.find_spec("abr")
    folder = Path(spec.origin).parent / "data" if spec is not None and spec.origin else None
    if folder is None or not folder.is_dir():
        return [], "not found (the package abr is not importable and --epl was not given)"
    return sorted(p for p in folder.iterdir() if p.is_file() and "-analyzed" not in p.name), str(folder)


def read_epl_series(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every EPL file as one series, read as evaluation.predict reads it (age 0: the training median)."""
    from data.epl import read_epl

    parts = [read_epl(p, None, 0.0, strict=False)[0] for p in paths]
    return (np.concatenate([r.signal for r in parts]).astype(np.float64), np.concatenate([r.static for r in parts]),
            np.concatenate([np.full(len(r), k) for k, r in enumerate(parts)]))


def rates(v: Any, n_boot: int, responsive: np.ndarray | None = None) -> dict[str, Any]:
    """Shares of series flagged (unlike) and not in range, with bootstrap intervals; with ``responsive`` (S,)
    also the flagged share of the series with a marked wave V (pure noise reversed is still pure noise: no
    check can or should flag a reversed noise-only series)."""
    from evaluation.familiarity import IN_RANGE, UNLIKE
    from training.clinical import bootstrap

    unlike = np.array([x == UNLIKE for x in v.series_verdict], dtype=float)
    odd = np.array([x != IN_RANGE for x in v.series_verdict], dtype=float)
    out = {"n_series": len(unlike), "unlike": bootstrap(lambda i: float(unlike[i].mean()), len(unlike), n_boot=n_boot),
           "not_in_range": bootstrap(lambda i: float(odd[i].mean()), len(odd), n_boot=n_boot)}
    if responsive is not None:
        u = unlike[responsive]
        out |= {"n_responsive": int(responsive.sum()),
                "unlike_responsive": bootstrap(lambda i: float(u[i].mean()), len(u), n_boot=n_boot)}
    return out


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from evaluation.familiarity import Familiarity
    from training.checkpoint import load_run
    from training.clinical import series_index

    device = resolve_device(args.device)
    fam = Familiarity.load(args.run)
    if fam is None:
        raise ValueError(f"--run {args.run}: the run has no familiarity.json; fit it first with "
                         f"python -m evaluation.trust --run {args.run}")
    loaded = load_run(args.run, which=args.checkpoint, device=device)
    with phase(PROG, f"rebuilding the run's {args.split} split (at most {args.max_series} series)"):
        x, static, sid, marked = test_series(loaded, args.max_series, split=args.split, n_fit=fam.n_train)
    rng = np.random.default_rng(0)
    sets = {"test (in distribution)": (x, static, sid)}
    sets |= {name: (transform(name, x, loaded.stats.signal_std, rng), static, sid) for name in TRANSFORMS}
    paths, where = epl_files(args.epl)
    if paths:
        with phase(PROG, f"reading {len(paths)} EPL files"):
            sets["epl"] = read_epl_series(paths)
    got = {}
    for name, (signal, *rest) in sets.items():  # the network and the input check per set: one line each
        with phase(PROG, f"{name}: the input check on {len(signal)} recordings"):
            got[name] = verdicts(loaded, fam, Recordings(signal, *rest, loaded.stats), device)
    base = got.pop("test (in distribution)")
    responsive = np.array([marked[m].any() for m in series_index(sid, static[:, 1]).members])  # (S,) in verdict order
    with phase(PROG, f"rates and AUROCs, {args.n_boot} bootstrap resamples"):
        result: dict[str, Any] = {"run": str(args.run), "checkpoint": args.checkpoint, "split": args.split,
                                  "epl": {"files": [str(p) for p in paths], "from": where},
                                  "test": rates(base, args.n_boot), "sets": {}}
        for name, v in got.items():
            result["sets"][name] = rates(v, args.n_boot, responsive if name != "epl" else None) | {
                "auroc_series": auroc(base.series_score, v.series_score),
                "auroc_recordings": auroc(base.score, v.score),
                "reasons": sorted({r.split(";")[0].split(" (")[0] for r in v.series_reason if r})[:5]}
    flagged = np.concatenate([[x == "unlike training data" for x in v.series_verdict] for v in got.values()])
    # reversing in time changes only a series with a response (noise reversed is noise); the rest change every series
    changed = np.concatenate([responsive if name == "reversed" else np.ones(len(v.series_verdict), bool)
                              for name, v in got.items()])
    result["all_ood"] = {"n_series": int(len(flagged)), "unlike": float(flagged.mean()),
                         "n_series_responsive": int(changed.sum()), "unlike_responsive": float(flagged[changed].mean())}
    result["meets_target"] = bool(flagged.mean() >= TARGET_FLAGGED and
                                  result["test"]["unlike"].value <= TARGET_FALSE_ALARM)
    return result


def table(r: dict[str, Any]) -> str:
    lines = [f"Input check on run `{r['run']}` ({r['checkpoint']}.pt); EPL files from {r['epl']['from']}", "",
             "| set | series | flagged (unlike) | not in range | series with a marked wave V: flagged | AUROC series "
             "| AUROC recordings |",
             "|---|---|---|---|---|---|---|",
             f"| {r.get('split', 'test')} split (false alarms) | {r['test']['n_series']} | {r['test']['unlike']} | "
             f"{r['test']['not_in_range']} | - | - | - |"]
    for name, s in r["sets"].items():
        resp = f"{s['unlike_responsive']} (n = {s['n_responsive']})" if "n_responsive" in s else "-"
        lines.append(f"| {name} | {s['n_series']} | {s['unlike']} | {s['not_in_range']} | {resp} | "
                     f"{s['auroc_series']:.3f} | {s['auroc_recordings']:.3f} |")
    a = r["all_ood"]
    lines += ["", f"All out-of-distribution series flagged: {a['unlike']:.3f} of {a['n_series']} "
              f"(target >= {TARGET_FLAGGED:.0%} with <= {TARGET_FALSE_ALARM:.0%} false alarms: "
              f"{'met' if r['meets_target'] else 'NOT met'}); of the {a['n_series_responsive']} the change makes "
              f"unlike a training series (reversed: those with a marked wave V, since noise reversed is noise): "
              f"{a['unlike_responsive']:.3f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--max-series", type=number(int, ge=2), default=200, help="test series used (default 200)")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="in-distribution series: the test split (reporting), or training series the check was not "
                        "fitted on (development: choose settings there, report on test)")
    p.add_argument("--epl", type=Path, nargs="+", help="EPL files (default: the abr package's, when importable)")
    p.add_argument("--n-boot", type=number(int, ge=0), default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="bench/results/ood.json")
    args = p.parse_args(argv)

    def body() -> int:
        result = run_bench(args)
        print(table(result))
        write_result(args.out, result)
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
